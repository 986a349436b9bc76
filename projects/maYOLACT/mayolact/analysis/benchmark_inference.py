"""The inference benchmark of ``tools/benchmark_inference.py`` (the paper's Table 4): end-to-end
time per image, time per stage, FLOPs against a measured peak, and exported models."""
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from detectron2.data import DatasetCatalog
from detectron2.data.detection_utils import read_image
from tqdm import tqdm

from mayolact.config import load_config, load_rows
from mayolact.engine.predictor import YOLACTPredictor
from mayolact.utils.profiling import STAGES, StageTimer, count_flops, measure_peak_flops

__all__ = ["ROWS_FILE", "run_benchmark"]

REPO = Path(__file__).resolve().parents[4]
CFG_DIR = REPO / "configs" / "COCO-InstanceSegmentation"
#: The default rows (label, config, the paper's Table 4 fps).
ROWS_FILE = REPO / "configs" / "rows" / "benchmark_inference.yaml"


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
    from mayolact.export.exporter import ExportedYOLACTPredictor

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


def run_benchmark(args):
    """Time every row of ``args`` (the tool's parsed arguments) and print the tables."""
    rows_data = load_rows(str(ROWS_FILE))
    paper_fps = {row["config"]: row["paper_fps"] for row in rows_data.values()}
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.configs:
        rows = [(Path(c).stem, Path(c)) for c in args.configs]
    else:
        rows = [(row["label"], CFG_DIR / row["config"]) for row in rows_data.values()]
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
        paper = paper_fps.get(Path(path).name, "")
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
