"""The mapper benchmark of ``tools/benchmark_mapper.py``: the cost of the integral images in the
training data pipeline (the same images and augmentation draws with and without them)."""
import statistics
import time

import cv2
import numpy as np
import torch
from detectron2.data import DatasetCatalog

from mayolact.config import load_config
from mayolact.data.dataset_mapper import YOLACTDatasetMapper
from mayolact.structures.integral_image import integral_images

__all__ = ["run_benchmark"]


def pick_dataset(name):
    if name:
        return name
    if "coco_mini_train" in DatasetCatalog.list():
        return "coco_mini_train"
    return "mayolact_shapes_val"


def make_mapper(size, with_ii, dataset):
    cfg = load_config("", ["DATASETS.TRAIN", (dataset,)])  # NUM_CLASSES 0: the dataset's classes
    cfg.INPUT.FORMAT = "RGB"
    cfg.MODEL.PIXEL_MEAN = [123.68, 116.78, 103.94]
    cfg.INPUT.YOLACT.SIZE = size
    cfg.INPUT.YOLACT.INTEGRAL_IMAGES = with_ii
    return YOLACTDatasetMapper(cfg, is_train=True)


def timed(mapper, d, seed):
    np.random.seed(seed)
    t0 = time.perf_counter()
    out = mapper(d)
    return time.perf_counter() - t0, out


def run_benchmark(args):
    """Time the mapper with and without integral images; print the table (see the tool)."""
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)

    name = pick_dataset(args.dataset)
    dicts = [
        d
        for d in DatasetCatalog.get(name)
        if any(not a.get("iscrowd", 0) for a in d["annotations"])
    ]
    dicts = dicts[: args.images]
    plain, with_ii = make_mapper(args.size, False, name), make_mapper(args.size, True, name)
    for d in dicts[:3]:  # warm-up (caches, lazy imports)
        timed(plain, d, 0)
        timed(with_ii, d, 0)

    t_plain, t_ii, t_only, gts = [], [], [], []
    for i, d in enumerate(dicts):
        # Same seed -> same augmentation for both; alternate the order to cancel cache effects.
        order = (
            [(plain, t_plain), (with_ii, t_ii)]
            if i % 2 == 0
            else [(with_ii, t_ii), (plain, t_plain)]
        )
        outs = {}
        for mapper, acc in order:
            dt, out = timed(mapper, d, 1000 + i)
            acc.append(dt)
            outs[id(mapper)] = out
        out = outs[id(with_ii)]
        if out is not None:
            masks = out["instances"].gt_masks.tensor
            t0 = time.perf_counter()
            integral_images(masks)
            t_only.append(time.perf_counter() - t0)
            gts.append(len(masks))

    med_plain, med_ii = statistics.median(t_plain), statistics.median(t_ii)
    overhead = 100.0 * (med_ii - med_plain) / med_plain
    total = 100.0 * (sum(t_ii) - sum(t_plain)) / sum(t_plain)
    print(
        f"dataset {name}, {len(dicts)} images, S = {args.size}, {args.threads} thread(s), "
        f"median {statistics.median(gts) if gts else 0:.0f} GTs per image after augmentation"
    )
    print(f"| {'mapper':32s} | median ms/image | mean ms/image |")
    print(f"|{'-' * 34}|-----------------|---------------|")
    print(
        f"| {'without integral images':32s} | {1e3 * med_plain:15.2f} "
        f"| {1e3 * np.mean(t_plain):13.2f} |"
    )
    print(f"| {'with integral images':32s} | {1e3 * med_ii:15.2f} | {1e3 * np.mean(t_ii):13.2f} |")
    if t_only:
        print(
            f"| {'integral_images() alone':32s} | {1e3 * statistics.median(t_only):15.2f} | "
            f"{1e3 * np.mean(t_only):13.2f} |"
        )
    print(f"overhead: {overhead:+.1f} % (medians), {total:+.1f} % (totals); target <= 15 %")
