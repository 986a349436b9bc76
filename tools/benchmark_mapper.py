#!/usr/bin/env python
"""Cost of the integral images in the training data pipeline.

Runs ``YOLACTDatasetMapper`` (training mode, full YOLACT augmentation, S x S output) on the same
images with the same random augmentation, once with ``INPUT.YOLACT.INTEGRAL_IMAGES`` off and once
on, and prints the median time per image of each, the overhead in percent, and the median time of
``integral_images`` alone. Images come from ``coco_mini_train`` (or the procedural shapes set when
coco_mini is absent). The mapper runs with one thread, as in a DataLoader worker.

Example::

    python tools/benchmark_mapper.py --images 100 --size 550
"""

import argparse
import statistics
import time

import numpy as np

import mayolact  # noqa: F401  (registers the datasets once Detectron2 is imported)
from mayolact.config import load_config

# torch, OpenCV and Detectron2 are imported where they are used: --help needs none of them.


def pick_dataset(name):
    from detectron2.data import DatasetCatalog

    if name:
        return name
    if "coco_mini_train" in DatasetCatalog.list():
        return "coco_mini_train"
    return "mayolact_shapes_val"


def make_mapper(size, with_ii, dataset):
    from mayolact.data.dataset_mapper import YOLACTDatasetMapper

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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--dataset", default=None, help="registered dataset (default: coco_mini_train)"
    )
    parser.add_argument("--images", type=int, default=100, help="images to time")
    parser.add_argument("--size", type=int, default=550, help="INPUT.YOLACT.SIZE")
    parser.add_argument("--threads", type=int, default=1, help="torch / OpenCV threads")
    args = parser.parse_args(argv)
    import cv2
    import torch
    from detectron2.data import DatasetCatalog

    from mayolact.structures import integral_images

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


if __name__ == "__main__":
    main()
