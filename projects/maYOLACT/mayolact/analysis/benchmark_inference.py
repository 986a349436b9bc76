"""The inference benchmark of ``tools/benchmark_inference.py`` (the paper's Table 4): end-to-end
time per image, time per stage, FLOPs against a measured peak, the ResNet stages' arithmetic rate
(dense against deformable), other inference paths and exported models, all timed in ONE
interleaved run.

Interleaving: every model is built and warmed up first; then, image by image, each model runs
once, the order rotating from one image to the next. A machine whose speed drifts (other jobs,
frequency scaling) slows all models alike, so the ratios between rows are what the run measures
best; the absolute times are indicative on a shared machine.
"""
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List

import torch
from detectron2.data import DatasetCatalog
from detectron2.data.detection_utils import read_image
from tqdm import tqdm

from mayolact.analysis.trained_like import trained_like_predictor
from mayolact.config import load_config, load_rows
from mayolact.engine.predictor import YOLACTPredictor
from mayolact.utils.profiling import STAGES, StageTimer, count_flops, measure_peak_flops

__all__ = ["ROWS_FILE", "RESNET_STAGES", "BIT_EXACT", "REWRITTEN", "CLOCKS", "MATCHED_LOAD",
           "ONNX_PARTS", "onnx_time_by_part", "run_benchmark"]

REPO = Path(__file__).resolve().parents[4]
CFG_DIR = REPO / "configs" / "COCO-InstanceSegmentation"
#: The default rows (label, config, the paper's Table 4 fps).
ROWS_FILE = REPO / "configs" / "rows" / "benchmark_inference.yaml"
#: The ResNet stages timed and counted one by one (``backbone.bottom_up.<stage>``).
RESNET_STAGES = ("res2", "res3", "res4", "res5")
#: Overrides of the bit-exact inference path: no rewrites, torchvision's DCN kernel.
BIT_EXACT = ("TEST.YOLACT.OPTIMIZE", "False", "MODEL.YOLACT.DCN_KERNEL", "torchvision")
#: Overrides that ask for the inference rewrites explicitly (the default path has them).
REWRITTEN = ("TEST.YOLACT.OPTIMIZE", "True")
#: ``--clock``: wall-clock seconds, or the CPU seconds of the (single) thread that runs the models,
#: which a machine shared with other jobs inflates far less.
CLOCKS = {"wall": time.perf_counter, "thread": time.thread_time}
#: Label suffix of the ``--matched-load`` rows.
MATCHED_LOAD = "matched load"


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


def _time_resnet_stages(model, timer: StageTimer) -> None:
    """Add the ResNet stages to ``timer`` (names of :data:`RESNET_STAGES`), through hooks, with the
    timer's clock."""
    bottom_up = getattr(model.backbone, "bottom_up", None)
    for name in RESNET_STAGES:
        stage = getattr(bottom_up, name, None)
        if stage is None:
            continue
        starts = []

        def pre(module, args, starts=starts):
            sync(timer.device)
            starts.append(timer.clock())

        def post(module, args, output, starts=starts, name=name):
            sync(timer.device)
            timer.seconds[name] = timer.seconds.get(name, 0.0) + timer.clock() - starts.pop()

        stage.register_forward_pre_hook(pre)
        stage.register_forward_hook(post)


class _Row:
    """One timed model: an eager config (``predictor`` a :class:`YOLACTPredictor`) or an exported
    file (an ``ExportedYOLACTPredictor``)."""

    def __init__(self, label, predictor, clock, config=None, cfg=None):
        self.label, self.predictor, self.config, self.cfg = label, predictor, config, cfg
        self.clock = clock
        self.times: List[float] = []
        self.detections: List[int] = []
        self.eager = config is not None
        self.timer = StageTimer(predictor.model.device, clock) if self.eager else None
        self.flops: Dict[str, float] = {}

    def run(self, batch):
        device = self.predictor.model.device if self.eager else torch.device("cpu")
        sync(device)
        t0 = self.clock()
        outputs = self.predictor(batch)
        sync(device)
        self.times += [(self.clock() - t0) / len(batch)] * len(batch)
        self.detections += [len(o["instances"]) for o in outputs]

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    def stage_seconds(self, name) -> float:
        """Seconds per image in a stage (model stages and ResNet stages alike)."""
        return self.timer.seconds.get(name, 0.0) / len(self.times)


def _eager_row(label, config, overrides, args, images, flops=True, matched=False) -> _Row:
    # Random weights unless the overrides name some: the speed of the network does not depend on
    # them. The same seed for every variant of a config, so that they hold the same weights.
    # matched: the seeded weights rescaled to behave like a trained model's (trained_like), which
    # fixes the number of detections, and so the mask tail's load, at TEST.DETECTIONS_PER_IMAGE.
    cfg = load_config(str(config), ["MODEL.DEVICE", args.device, "MODEL.WEIGHTS", ""]
                      + list(args.opts) + list(overrides))
    cfg.freeze()
    torch.manual_seed(0)
    predictor = trained_like_predictor(cfg, images[0]) if matched else YOLACTPredictor(cfg)
    row = _Row(label, predictor, CLOCKS[args.clock], config, cfg)
    if flops and not args.no_flops:
        stages = [f"backbone.bottom_up.{s}" for s in RESNET_STAGES]
        row.flops = count_flops(row.predictor.model, [row.predictor.preprocess(images[0])],
                                extra_modules=stages)
    _time_resnet_stages(row.predictor.model, row.timer)
    return row


def _exported_row(path, args) -> _Row:
    from mayolact.export.exporter import ExportedYOLACTPredictor

    return _Row(path, ExportedYOLACTPredictor(path), CLOCKS[args.clock])


#: Parts of an exported graph for :func:`onnx_time_by_part`: (name, test on (node name, op type)),
#: the first that matches wins. Node names keep the exporter's module path through onnxruntime's
#: fusions (e.g. ``/model/backbone/bottom_up/res3/res3.0/conv2/DeformConv``).
ONNX_PARTS = (
    ("DCN (DeformConv)", lambda name, op: op == "DeformConv"),
    ("CARAFE", lambda name, op: "/fpn_upsample" in name),
    ("backbone + FPN, the rest", lambda name, op: name.startswith("/model/backbone")),
    ("head + protonet", lambda name, op: name.startswith(("/model/head", "/model/protonet"))),
    ("mask resize", lambda name, op: op == "Resize"),
    ("post-processing, the rest", lambda name, op: True),
)


def onnx_time_by_part(path: str, images, warmup: int = 1) -> Dict[str, float]:
    """Seconds per image spent in each part (:data:`ONNX_PARTS`) of an ONNX model of
    ``tools/export_model.py``, from onnxruntime's profiler (kernel times, one CPU thread per
    torch thread as :class:`ExportedYOLACTPredictor` runs it)."""
    import json
    import os
    import tempfile

    import onnxruntime as ort

    from mayolact.export.exporter import INPUT_NAMES, ExportedYOLACTPredictor, sample_inputs

    predictor = ExportedYOLACTPredictor(path)
    feeds = []
    for image in images:
        x = predictor.preprocess(image)
        flat = sample_inputs(x["image"], x["height"], x["width"])[0]
        feeds.append({name: flat[name].numpy() for name in INPUT_NAMES})
    plain = ort.SessionOptions()
    plain.intra_op_num_threads = torch.get_num_threads()
    warm = ort.InferenceSession(path, sess_options=plain, providers=["CPUExecutionProvider"])
    for feed in feeds[:warmup]:
        warm.run(None, feed)
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tmp, "profile")
        session = ort.InferenceSession(path, sess_options=options,
                                       providers=["CPUExecutionProvider"])
        for feed in feeds:
            session.run(None, feed)
        with open(session.end_profiling()) as f:
            events = json.load(f)
    parts = {name: 0.0 for name, _ in ONNX_PARTS}
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        node, op = e["name"][:-len("_kernel_time")], e.get("args", {}).get("op_name", "")
        part = next(name for name, test in ONNX_PARTS if test(node, op))
        parts[part] += e["dur"] * 1e-6 / len(feeds)
    return parts


def _interleaved(rows: List[_Row], batches, warmup: int) -> None:
    """Warm every row up, then time each batch on every row, the order rotating per batch."""
    for row in rows:
        for _ in tqdm(range(warmup), desc=f"{row.label}: warm-up", unit="batch", file=sys.stderr,
                      leave=False):
            row.predictor(batches[0])
        if row.eager:
            row.predictor.model.stage_timer = row.timer
            row.timer.reset()
    for i, batch in enumerate(tqdm(batches, desc="interleaved", unit="batch", file=sys.stderr,
                                   leave=False)):
        shift = i % len(rows)
        for row in rows[shift:] + rows[:shift]:
            row.run(batch)
    for row in rows:
        if row.eager:
            row.predictor.model.stage_timer = None


def _deviation(rows: List[_Row], images, args) -> List[tuple]:
    """Each config's default path against its bit-exact path on ``images``: the summary of
    :func:`mayolact.export.exporter.compare_instances` per config."""
    from mayolact.export.exporter import compare_instances, summarize_comparisons

    out = []
    for row in rows:
        exact = _eager_row(row.label, row.config, BIT_EXACT, args, images, flops=False).predictor
        with torch.inference_mode():
            diffs = [compare_instances(exact(im)["instances"], row.predictor(im)["instances"])
                     for im in images]
        out.append((row.label, summarize_comparisons(diffs)))
    return out


def _ratio_line(what, value, target):
    print(f"* {what}: **{value:.2f}x** ({target})")


def run_benchmark(args):
    """Time every row of ``args`` (the tool's parsed arguments) and print the tables."""
    rows_data = load_rows(str(ROWS_FILE))
    paper_fps = {row["config"]: row["paper_fps"] for row in rows_data.values()}
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "thread" and (torch.get_num_threads() != 1 or args.device != "cpu"):
        raise ValueError("--clock thread times one CPU thread: use it with --threads 1 on the CPU")
    if args.configs:
        configs = [(Path(c).stem, Path(c)) for c in args.configs]
    else:
        configs = [(row["label"], CFG_DIR / row["config"]) for row in rows_data.values()]
    if args.matched_load:
        for _, path in configs:
            weights = load_config(str(path), ["MODEL.WEIGHTS", ""] + list(args.opts)).MODEL.WEIGHTS
            if weights:
                raise ValueError(f"--matched-load rescales seeded random weights; {path} with the "
                                 f"overrides names MODEL.WEIGHTS {weights} (trained weights set "
                                 f"their own load)")
    dataset = args.dataset or ("coco_mini_val" if "coco_mini_val" in DatasetCatalog.list()
                               else "mayolact_shapes_val")
    images = load_images(dataset, args.images)
    device = torch.device(args.device)
    threads = torch.get_num_threads()
    print(f"  measuring the peak on {args.device} ({threads} threads) ...", file=sys.stderr,
          flush=True)
    rates = measure_peak_flops(device, seconds=args.peak_seconds, clock=CLOCKS[args.clock])
    peak = rates["peak"]

    print("  building the models ...", file=sys.stderr, flush=True)
    rows = [_eager_row(name, path, (), args, images) for name, path in configs]
    matched = []  # --matched-load: every config again, with trained-like weights
    if args.matched_load:
        matched = [_eager_row(f"{name}, {MATCHED_LOAD}", path, (), args, images, matched=True)
                   for name, path in configs]
    paths = []  # (label, row): other inference paths of the first and the last config
    if args.compare_paths:
        first, last = rows[0], rows[-1]
        paths.append(("rewritten", _eager_row(f"{first.label}, rewritten path", first.config,
                                              REWRITTEN, args, images)))
        for row in dict.fromkeys([first, last]):
            paths.append(("bit-exact", _eager_row(f"{row.label}, bit-exact path", row.config,
                                                  BIT_EXACT, args, images)))
    exported = [_exported_row(p, args) for p in args.exported]
    batches = [images[i: i + args.batch] for i in range(0, len(images), args.batch)]
    _interleaved(rows + matched + [r for _, r in paths] + exported, batches, args.warmup)

    dev = args.device if device.type == "cpu" else torch.cuda.get_device_name(device)
    clock = "wall-clock" if args.clock == "wall" else "CPU time of the one thread"
    print(f"\nDevice: {dev}, torch threads: {threads}, {clock}. Measured float32 rate (fvcore "
          f"convention, one multiply-add = one flop): matmul 2048^3 "
          f"{rates['matmul'] / 1e9:.1f} GFLOP/s, conv3x3 256->256 on 69x69 "
          f"{rates['conv3x3'] / 1e9:.1f} GFLOP/s; "
          f"peak = {peak / 1e9:.1f} GFLOP/s.")
    print(f"\nEnd-to-end inference, batch {args.batch}, median per image over {len(images)} "
          f"{dataset} images after {args.warmup} warm-up batches, all rows in one interleaved run; "
          f"FLOP limit = GFLOPs / peak." + (
              f" Rows '{MATCHED_LOAD}': the same seeded weights rescaled on the first image to "
              f"behave like a trained model's (mayolact.analysis.trained_like: class logits of "
              f"standard deviation 2, box deltas of 0.5, DCN offsets of about a pixel), at the "
              f"config's thresholds, so that every model returns its TEST.DETECTIONS_PER_IMAGE "
              f"detections and the mask tail runs at the same load (the detections column "
              f"shows it); random weights set the number of detections arbitrarily."
              if matched else "") + "\n")
    print("| model | anchors | params (M) | GFLOPs | ms / image | fps | time vs first row | "
          "detections | GFLOP/s | of peak | FLOP limit (ms) | time / limit | paper fps (V100) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    base = rows[0].median
    for r in rows + matched + [r for _, r in paths]:
        model = r.predictor.model
        anchors = count_anchors(model, r.cfg.INPUT.YOLACT.SIZE, model.device)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        t = r.median
        total = r.flops.get("")
        if total:
            rate = total / t
            flop_cells = (f"{total / 1e9:.1f} | ", f"{rate / 1e9:.1f} | {rate / peak:.0%} | "
                          f"{1000 * total / peak:.0f} | {peak / rate:.2f}x | ")
        else:
            flop_cells = ("- | ", "- | - | - | - | ")
        print(f"| {r.label} | {anchors:,} | {params:.1f} | {flop_cells[0]}"
              f"{1000 * t:.0f} | {1.0 / t:.2f} | {t / base:.2f}x | "
              f"{statistics.mean(r.detections):.1f} | {flop_cells[1]}"
              f"{paper_fps.get(Path(r.config).name, '')} |")

    print("\nTime per stage (ms per image, mean; share of the end-to-end mean). Other: what no "
          "stage covers (Python, Instances).\n")
    print("| model | " + " | ".join(STAGES) + " | other | end to end |")
    print("|---|" + "---:|" * (len(STAGES) + 2))
    for r in rows + matched + [r for _, r in paths]:
        mean = statistics.mean(r.times)
        cells = [f"{1000 * r.stage_seconds(k):.1f} ({r.stage_seconds(k) / mean:.0%})"
                 for k in STAGES]
        other = mean - sum(r.stage_seconds(k) for k in STAGES)
        print(f"| {r.label} | " + " | ".join(cells) + f" | {1000 * other:.1f} | "
              f"{1000 * mean:.1f} |")

    if not args.no_flops:
        print("\nArithmetic rate of the network stages (GFLOPs per image, GFLOP/s, share of the "
              "peak).\n")
        print("| model | backbone + FPN GFLOPs | GFLOP/s | of peak | head + protonet GFLOPs | "
              "GFLOP/s | of peak |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            cells = []
            for key, parts in (("backbone + FPN", ("backbone",)),
                               ("head + protonet", ("head", "protonet"))):
                gflops = sum(r.flops.get(m, 0.0) for m in parts) / 1e9
                seconds = r.stage_seconds(key)
                rate = gflops / seconds if seconds > 0 else float("nan")
                cells.append(f"{gflops:.1f} | {rate:.1f} | {rate * 1e9 / peak:.0%}")
            print(f"| {r.label} | " + " | ".join(cells) + " |")
        _print_resnet_stages(rows, peak)

    if exported:
        print("\nExported models (onnxruntime on the CPU for .onnx), in the same interleaved run; "
              "time against the first row (eager, same images).\n")
        print("| exported model | ms / image | fps | time vs first row | detections |")
        print("|---|---:|---:|---:|---:|")
        for r in exported:
            print(f"| {r.label} | {1000 * r.median:.0f} | {1.0 / r.median:.2f} | "
                  f"{r.median / base:.2f}x | {statistics.mean(r.detections):.1f} |")
        onnx = [r for r in exported if r.label.endswith(".onnx")]
        if args.profile_exported and onnx:
            print(f"\nWhere the ONNX models spend their time: onnxruntime's profiler, kernel "
                  f"ms per image over the {len(images)} images (wall clock, whatever --clock "
                  f"says: on a busy machine read the shares), by part of the graph.\n")
            print("| exported model | " + " | ".join(n for n, _ in ONNX_PARTS) + " | total |")
            print("|---|" + "---:|" * (len(ONNX_PARTS) + 1))
            for r in onnx:
                parts = onnx_time_by_part(r.label, images, args.warmup)
                total = sum(parts.values())
                print(f"| {r.label} | " + " | ".join(f"{1000 * v:.1f} ({v / total:.0%})"
                                                     for v in parts.values())
                      + f" | {1000 * total:.1f} |")

    deviations = _deviation(rows, images[:args.deviation], args) if args.deviation else []
    if deviations:
        print(f"\nDefault path against the bit-exact path ({' '.join(BIT_EXACT)}), same weights, "
              f"first {args.deviation} images (mayolact.export.exporter.compare_instances).\n")
        print("| model | detections | same detections | reordered | score max diff | "
              "box max diff (px) | mask max pixels | off-contour pixels |")
        print("|---|---:|---|---:|---:|---:|---:|---:|")
        for label, d in deviations:
            same = "yes" if d["same_count"] and d["matched"] else "no"
            print(f"| {label} | {d['detections']:.0f} | {same} | {d['reordered']:.0f} | "
                  f"{d['score_max_diff']:.1g} | {d['box_max_diff']:.2g} | "
                  f"{d['mask_max_pixels']:.0f} | {d['mask_off_contour_pixels']:.0f} |")

    print("\nRatios of this run:\n")
    if len(rows) > 1:
        _ratio_line(f"{rows[-1].label} vs {rows[0].label}, end to end", rows[-1].median / base,
                    "target <= 1.15x")
        network = ("backbone + FPN", "head + protonet")
        _ratio_line(f"{rows[-1].label} vs {rows[0].label}, the network alone ("
                    f"{' and '.join(network)}; the rest grows with the detections)",
                    sum(rows[-1].stage_seconds(k) for k in network)
                    / sum(rows[0].stage_seconds(k) for k in network), "mean times")
        if matched:
            counts = " and ".join(f"{statistics.mean(r.detections):.1f}" for r in
                                  (matched[0], matched[-1]))
            _ratio_line(f"{rows[-1].label} vs {rows[0].label}, end to end at matched load "
                        f"({counts} detections per image)", matched[-1].median / matched[0].median,
                        "target <= 1.15x")
        if not args.no_flops:
            dcn = _dcn_rate_ratio(rows)
            if dcn is not None:
                _ratio_line(*dcn, "target within 1.5x")
    for kind, r in paths:
        if kind == "rewritten":
            _ratio_line(f"{rows[0].label}: default path vs rewritten path",
                        base / r.median, "target within 5%: the same path")
        else:
            own = next(row for row in rows if row.config == r.config)
            _ratio_line(f"{own.label}: bit-exact path vs default path", r.median / own.median,
                        "what the rewrites and the DCN kernel save")
    for r in exported:
        _ratio_line(f"{r.label} vs {rows[0].label} (eager)", r.median / base, "exported")
    return 0


def _dcn_stages(row: _Row):
    """The ResNet stages of ``row`` that hold deformable convolutions."""
    from mayolact.modeling.backbone.resnet import ModulatedDeformConv2d

    bottom_up = getattr(row.predictor.model.backbone, "bottom_up", None)
    return [s for s in RESNET_STAGES if getattr(bottom_up, s, None) is not None
            and any(isinstance(m, ModulatedDeformConv2d) for m in getattr(bottom_up, s).modules())]


def _stage_rate(row: _Row, stages) -> float:
    flops = sum(row.flops.get(f"backbone.bottom_up.{s}", 0.0) for s in stages)
    seconds = sum(row.stage_seconds(s) for s in stages)
    return flops / seconds if seconds > 0 else float("nan")


def _dcn_rate_ratio(rows: List[_Row]):
    """(label, ratio) of the dense stages' rate over the DCN stages' rate: the first row without
    DCN against the last row with DCN, over the same stages; None if there is no such pair."""
    dense = next((r for r in rows if not _dcn_stages(r)), None)
    dcn = next((r for r in reversed(rows) if _dcn_stages(r)), None)
    if dense is None or dcn is None:
        return None
    stages = _dcn_stages(dcn)
    ratio = _stage_rate(dense, stages) / _stage_rate(dcn, stages)
    span = stages[0] if len(stages) == 1 else f"{stages[0]}-{stages[-1]}"
    return (f"{dense.label} ({span}, dense) vs {dcn.label} (the same stages with DCN), "
            f"arithmetic rate"), ratio


def _print_resnet_stages(rows: List[_Row], peak: float) -> None:
    print("\nResNet stages (GFLOPs per image, ms per image, GFLOP/s, share of the peak; * marks a "
          "stage with deformable convolutions, whose FLOPs count the DCN as a dense convolution "
          "of its shape plus its offset convolution).\n")
    print("| model | " + " | ".join(RESNET_STAGES) + " |")
    print("|---|" + "---|" * len(RESNET_STAGES))
    for r in rows:
        dcn = set(_dcn_stages(r))
        cells = []
        for s in RESNET_STAGES:
            gflops = r.flops.get(f"backbone.bottom_up.{s}", 0.0) / 1e9
            seconds = r.stage_seconds(s)
            if seconds <= 0:
                cells.append("-")
                continue
            rate = gflops / seconds
            mark = "*" if s in dcn else ""
            cells.append(f"{gflops:.2f}{mark} / {1000 * seconds:.0f} ms / {rate:.1f} "
                         f"({rate * 1e9 / peak:.0%})")
        print(f"| {r.label} | " + " | ".join(cells) + " |")
