#!/usr/bin/env python
"""Table 4 speed study: end-to-end inference time of YOLACT / maYOLACT configs.

For each config: randomly initialised weights, batch 1, a few warm-up images, then the median time
per image over real images (``coco_mini_val`` when present, else the shapes set), measured from the
uint8 input to the final ``Instances`` with full-resolution masks (pre-processing, network, Fast NMS,
mask assembly and resizing included). On CUDA the timer synchronises the device. Also reports the
anchor count at the config's input size, the parameter count and fvcore's GFLOPs of the network.

Example::

    python tools/benchmark_inference.py --images 20 --device cpu
    python tools/benchmark_inference.py --configs configs/COCO-InstanceSegmentation/mayolact_R_50_FPN_550.yaml
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from detectron2.data import DatasetCatalog
from detectron2.data import transforms as T
from detectron2.data.detection_utils import read_image
from detectron2.modeling import build_model
from detectron2.utils.analysis import FlopCountAnalysis

import mayolact  # noqa: F401
from mayolact.config import load_config, load_rows
from mayolact.data.augmentation import build_yolact_test_augmentation

REPO = Path(__file__).resolve().parents[1]
CFG_DIR = REPO / "configs" / "COCO-InstanceSegmentation"
# The default rows (label, config, the paper's Table 4 fps) are data.
ROWS = load_rows(str(REPO / "configs" / "rows" / "benchmark_inference.yaml"))
DEFAULT_CONFIGS = [(row["label"], row["config"]) for row in ROWS.values()]
PAPER_FPS = {row["config"]: row["paper_fps"] for row in ROWS.values()}


def load_images(dataset, n, image_format):
    """The first ``n`` images of a registered dataset, in the config's format."""
    dicts = DatasetCatalog.get(dataset)
    if not dicts:
        raise RuntimeError(f"dataset {dataset} is empty")
    return [read_image(d["file_name"], format=image_format) for d in dicts[:n]]


def model_inputs(image, aug):
    h, w = image.shape[:2]
    inp = T.AugInput(image)
    aug(inp)
    resized = inp.image
    tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)))
    return [{"image": tensor, "height": h, "width": w}]


def count_anchors(model, size, device):
    with torch.no_grad():
        feats = model.backbone(torch.zeros(1, 3, size, size, device=device))
        feats = [feats[f] for f in model.head_in_features]
        return sum(len(b) for b in model.anchor_generator(feats))


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def benchmark(config_path, images, args):
    cfg = load_config(str(config_path), ["MODEL.DEVICE", args.device] + list(args.opts))
    cfg.freeze()
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    device = torch.device(cfg.MODEL.DEVICE)
    aug = T.AugmentationList(build_yolact_test_augmentation(cfg))
    size = cfg.INPUT.YOLACT.SIZE
    params = sum(p.numel() for p in model.parameters())
    anchors = count_anchors(model, size, device)
    gflops = float("nan")
    if not args.no_flops:
        with torch.no_grad():
            flops = FlopCountAnalysis(model, model_inputs(images[0], aug))
            flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            gflops = flops.total() / 1e9
    times, num_det = [], []
    with torch.no_grad():
        for i, img in enumerate(images[: args.warmup] + images):
            sync(device)
            t0 = time.perf_counter()
            out = model(model_inputs(img, aug))[0]["instances"]
            sync(device)
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
                num_det.append(len(out))
    return {
        "median_s": statistics.median(times),
        "anchors": anchors,
        "params_m": params / 1e6,
        "gflops": gflops,
        "detections": statistics.mean(num_det),
    }


def benchmark_exported(path, images, image_format, warmup):
    """(median seconds per image, mean detections) of a model written by tools/export_model.py,
    from the uint8 image to full-size Instances like the rows above (ONNX: onnxruntime, CPU)."""
    from mayolact.export import ExportedYOLACTPredictor

    predictor = ExportedYOLACTPredictor(path)
    bgr = [np.ascontiguousarray(im[:, :, ::-1]) if image_format == "RGB" else im for im in images]
    times, num_det = [], []
    for i, img in enumerate(bgr[:warmup] + bgr):
        t0 = time.perf_counter()
        num = len(predictor(img)["instances"])
        if i >= warmup:
            times += [time.perf_counter() - t0]
            num_det += [num]
    return statistics.median(times), statistics.mean(num_det)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", nargs="+", help="config files (default: the Table 4 rows at 550)")
    p.add_argument("--images", type=int, default=20, help="timed images")
    p.add_argument("--warmup", type=int, default=3, help="warm-up images (not timed)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dataset", default=None, help="default: coco_mini_val, else mayolact_shapes_val")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-flops", action="store_true", help="skip the fvcore GFLOPs count")
    p.add_argument("--exported", action="append", default=[], metavar="MODEL",
                   help="also time an exported model (.onnx, .ts of tools/export_model.py); repeatable")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides for every config")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.configs:
        rows = [(Path(c).stem, Path(c)) for c in args.configs]
    else:
        rows = [(name, CFG_DIR / f) for name, f in DEFAULT_CONFIGS]
    dataset = args.dataset or ("coco_mini_val" if "coco_mini_val" in DatasetCatalog.list()
                               else "mayolact_shapes_val")
    first_cfg = load_config(str(rows[0][1]))
    images = load_images(dataset, args.images, first_cfg.INPUT.FORMAT)

    results = []
    for name, path in rows:
        r = benchmark(path, images, args)
        results.append((name, path, r))
        print(f"  {name}: {1.0 / r['median_s']:.2f} fps", file=sys.stderr, flush=True)

    base = results[0][2]["median_s"]
    dev = args.device if args.device == "cpu" else torch.cuda.get_device_name(0)
    print(f"\nEnd-to-end inference, batch 1, random weights, median of {len(images)} {dataset} images "
          f"after {args.warmup} warm-up; device: {dev}, torch threads: {torch.get_num_threads()}\n")
    print("| model | anchors | params (M) | GFLOPs | ms / image | fps | time vs first row | paper fps (V100) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, path, r in results:
        paper = PAPER_FPS.get(Path(path).name, "")
        gflops = "-" if r["gflops"] != r["gflops"] else f"{r['gflops']:.1f}"
        print(f"| {name} | {r['anchors']:,} | {r['params_m']:.1f} | {gflops} | "
              f"{1000 * r['median_s']:.0f} | {1.0 / r['median_s']:.2f} | "
              f"{r['median_s'] / base:.2f}x | {paper} |")
    if args.exported:
        print("\n| exported model | ms / image | fps | time vs first row | detections |")
        print("|---|---:|---:|---:|---:|")
        for path in args.exported:
            median, dets = benchmark_exported(path, images, first_cfg.INPUT.FORMAT, args.warmup)
            print(f"| {path} | {1000 * median:.0f} | {1.0 / median:.2f} | {median / base:.2f}x | "
                  f"{dets:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
