#!/usr/bin/env python
"""Table 4 speed study: where inference time goes, per stage, against the machine's arithmetic peak.

For each config: randomly initialised weights (unless ``MODEL.WEIGHTS`` is given among the
overrides), a few warm-up batches, then the time per image over real images (``coco_mini_val`` when
present, else the shapes set) through :class:`mayolact.predictor.YOLACTPredictor`, from the uint8
BGR image to the final ``Instances`` with full-resolution masks. ``--batch N`` runs N images per
forward pass. On CUDA the timers synchronise the device.

Reported per config: anchors, parameters, fvcore's FLOPs of one image (one multiply-add is one flop;
torchvision's deformable convs counted as convs), end-to-end time and fps against the first row, the
achieved GFLOP/s against the peak that the tool measures first on the same device and threads
(a large matmul and a 3x3 convolution), and the time of each stage, measured by the model's own
stage hooks (:mod:`mayolact.profiling`): pre-process, backbone + FPN, head + protonet, top-k +
decode, NMS, masks. ``TEST.YOLACT.OPTIMIZE True`` times the folded-batch-norm, channels-last model.

Example::

    python tools/benchmark_inference.py --images 20 --device cpu
    python tools/benchmark_inference.py --images 20 TEST.YOLACT.OPTIMIZE True
    python tools/benchmark_inference.py --batch 4 \
        --configs configs/COCO-InstanceSegmentation/mayolact_R_50_FPN_550.yaml
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import mayolact  # noqa: F401  (first: its filters for known third-party warnings)
from mayolact.config import load_config, load_rows

REPO = Path(__file__).resolve().parents[1]
CFG_DIR = REPO / "configs" / "COCO-InstanceSegmentation"
# The default rows (label, config, the paper's Table 4 fps) are data.
ROWS = load_rows(str(REPO / "configs" / "rows" / "benchmark_inference.yaml"))
DEFAULT_CONFIGS = [(row["label"], row["config"]) for row in ROWS.values()]
PAPER_FPS = {row["config"]: row["paper_fps"] for row in ROWS.values()}


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", nargs="+", help="config files (default: the Table 4 rows at 550)")
    p.add_argument("--images", type=int, default=20, help="timed images")
    p.add_argument("--warmup", type=int, default=3, help="warm-up batches (not timed)")
    p.add_argument("--device", default=None,
                   help="torch device, e.g. cpu or cuda (default: cuda when available, else cpu)")
    p.add_argument("--dataset", default=None, help="default: coco_mini_val, else mayolact_shapes_val")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--batch", type=int, default=1, help="images per forward pass")
    p.add_argument("--peak-seconds", type=float, default=1.0,
                   help="time budget of each peak micro-benchmark")
    p.add_argument("--no-flops", action="store_true", help="skip the fvcore GFLOPs count")
    p.add_argument("--exported", action="append", default=[], metavar="MODEL",
                   help="also time an exported model (.onnx, .ts of tools/export_model.py); "
                        "repeatable")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides for every config")
    return p


if __name__ == "__main__":
    get_parser().parse_args()  # --help and usage errors answer here, before the heavy imports below

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from detectron2.data import DatasetCatalog  # noqa: E402
from detectron2.data.detection_utils import read_image  # noqa: E402

from mayolact.predictor import YOLACTPredictor  # noqa: E402
from mayolact.profiling import STAGES, StageTimer, count_flops, measure_peak_flops  # noqa: E402


def load_images(dataset, n):
    """The first ``n`` images of a registered dataset, BGR (the predictor's input)."""
    dicts = DatasetCatalog.get(dataset)
    if not dicts:
        raise RuntimeError(f"dataset {dataset} is empty")
    return [read_image(d["file_name"], format="BGR") for d in dicts[:n]]


def count_anchors(model, size, device):
    with torch.no_grad():
        feats = model.backbone(torch.zeros(1, 3, size, size, device=device))
        feats = [feats[f] for f in model.head_in_features]
        return sum(len(b) for b in model.anchor_generator(feats))


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def benchmark(name, config_path, images, args):
    """Time one config: end to end per image, and per stage through the model's stage hooks."""
    # Random weights unless the overrides name some: the speed does not depend on them.
    cfg = load_config(str(config_path),
                      ["MODEL.DEVICE", args.device, "MODEL.WEIGHTS", ""] + list(args.opts))
    cfg.freeze()
    torch.manual_seed(0)
    predictor = YOLACTPredictor(cfg)
    model = predictor.model
    device = model.device
    flops = {} if args.no_flops else count_flops(model, [predictor.preprocess(images[0])])
    timer = StageTimer(device)
    model.stage_timer = timer
    batches = [images[i: i + args.batch] for i in range(0, len(images), args.batch)]
    for _ in tqdm(range(args.warmup), desc=f"{name}: warm-up", unit="batch", file=sys.stderr,
                  leave=False):
        predictor(batches[0])
    timer.reset()
    per_image, num_det = [], []
    for batch in tqdm(batches, desc=name, unit="batch", file=sys.stderr, leave=False):
        sync(device)
        t0 = time.perf_counter()
        outputs = predictor(batch)
        sync(device)
        per_image += [(time.perf_counter() - t0) / len(batch)] * len(batch)
        num_det += [len(o["instances"]) for o in outputs]
    model.stage_timer = None
    return {
        "median_s": statistics.median(per_image),
        "mean_s": statistics.mean(per_image),
        "stages": {k: timer.seconds.get(k, 0.0) / len(images) for k in STAGES},
        "anchors": count_anchors(model, cfg.INPUT.YOLACT.SIZE, device),
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "flops": flops,
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
    p = get_parser()
    args = p.parse_args(argv)
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.batch < 1:
        p.error(f"--batch must be >= 1, got {args.batch}")
    if args.configs:
        rows = [(Path(c).stem, Path(c)) for c in args.configs]
    else:
        rows = [(name, CFG_DIR / f) for name, f in DEFAULT_CONFIGS]
    dataset = args.dataset or ("coco_mini_val" if "coco_mini_val" in DatasetCatalog.list()
                               else "mayolact_shapes_val")
    images = load_images(dataset, args.images)
    device = torch.device(args.device)
    threads = torch.get_num_threads()
    print(f"  measuring the peak on {args.device} ({threads} threads) ...", file=sys.stderr,
          flush=True)
    rates = measure_peak_flops(device, seconds=args.peak_seconds)
    peak = rates["peak"]

    results = []
    for name, path in rows:
        r = benchmark(name, path, images, args)
        results.append((name, path, r))
        print(f"  {name}: {1.0 / r['median_s']:.2f} fps", file=sys.stderr, flush=True)

    dev = args.device if device.type == "cpu" else torch.cuda.get_device_name(device)
    print(f"\nDevice: {dev}, torch threads: {threads}. Measured float32 rate (fvcore convention, "
          f"one multiply-add = one flop): matmul 2048^3 {rates['matmul'] / 1e9:.1f} GFLOP/s, "
          f"conv3x3 256->256 on 69x69 {rates['conv3x3'] / 1e9:.1f} GFLOP/s; "
          f"peak = {peak / 1e9:.1f} GFLOP/s.")
    print(f"\nEnd-to-end inference, batch {args.batch}, median per image over {len(images)} "
          f"{dataset} images after {args.warmup} warm-up batches; FLOP limit = GFLOPs / peak.\n")
    print("| model | anchors | params (M) | GFLOPs | ms / image | fps | time vs first row | "
          "detections | GFLOP/s | of peak | FLOP limit (ms) | time / limit | paper fps (V100) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    base = results[0][2]["median_s"]
    for name, path, r in results:
        paper = PAPER_FPS.get(Path(path).name, "")
        t = r["median_s"]
        total = r["flops"].get("")
        if total:
            rate = total / t
            flop_cells = (f"{total / 1e9:.1f} | ", f"{rate / 1e9:.1f} | {rate / peak:.0%} | "
                          f"{1000 * total / peak:.0f} | {peak / rate:.2f}x | ")
        else:
            flop_cells = ("- | ", "- | - | - | - | ")
        print(f"| {name} | {r['anchors']:,} | {r['params_m']:.1f} | {flop_cells[0]}"
              f"{1000 * t:.0f} | {1.0 / t:.2f} | {t / base:.2f}x | {r['detections']:.1f} | "
              f"{flop_cells[1]}{paper} |")

    print("\nTime per stage (ms per image, mean; share of the end-to-end mean). Other: what no "
          "stage covers (Python, Instances).\n")
    print("| model | " + " | ".join(STAGES) + " | other | end to end |")
    print("|---|" + "---:|" * (len(STAGES) + 2))
    for name, _, r in results:
        mean = r["mean_s"]
        cells = [f"{1000 * r['stages'][k]:.1f} ({r['stages'][k] / mean:.0%})" for k in STAGES]
        other = mean - sum(r["stages"].values())
        print(f"| {name} | " + " | ".join(cells) + f" | {1000 * other:.1f} | {1000 * mean:.1f} |")

    if not args.no_flops:
        print("\nArithmetic rate of the network stages (GFLOPs per image, GFLOP/s, share of the "
              "peak).\n")
        print("| model | backbone + FPN GFLOPs | GFLOP/s | of peak | head + protonet GFLOPs | "
              "GFLOP/s | of peak |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name, _, r in results:
            cells = []
            for key, parts in (("backbone + FPN", ("backbone",)),
                               ("head + protonet", ("head", "protonet"))):
                gflops = sum(r["flops"].get(m, 0.0) for m in parts) / 1e9
                rate = gflops / r["stages"][key] if r["stages"][key] > 0 else float("nan")
                cells.append(f"{gflops:.1f} | {rate:.1f} | {rate * 1e9 / peak:.0%}")
            print(f"| {name} | " + " | ".join(cells) + " |")
    if args.exported:
        print("\n| exported model | ms / image | fps | time vs first row | detections |")
        print("|---|---:|---:|---:|---:|")
        for path in args.exported:
            median, dets = benchmark_exported(path, images, "BGR", args.warmup)
            print(f"| {path} | {1000 * median:.0f} | {1.0 / median:.2f} | {median / base:.2f}x | "
                  f"{dets:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
