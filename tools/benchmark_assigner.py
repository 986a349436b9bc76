#!/usr/bin/env python
"""Cost of anchor assignment per batch, as in the paper's Table 3 (maIoU with and without Alg. 1).

For a COCO-like batch (default 8 images at 550 x 550: GT boxes and masks of the first images of
``coco_mini`` train, masks squash-resized with nearest interpolation, boxes scaled; random shapes
when coco_mini is absent), it times

1. building the integral images (per image, as the data loader does),
2. ``FixedIoUMatcher`` on YOLACT's anchors (19,248 at 550),
3. ``ATSSMatcher`` with IoU on the ATSS anchors (6,416 at 550),
4. ``ATSSMatcher`` with maIoU from the integral images (Alg. 1, candidates only),
   and, for reference, with the official code's full G x R maIoU matrix,
5. ``ATSSMatcher`` with brute-force maIoU (pixel counts from the masks, all pairs with IoU > 0,
   as the official assigner would without Alg. 1),

and prints a markdown table of the median time per batch over the repeats, with each row's ratio
to ATSS w. IoU. It also checks that all maIoU variants give the same assignment.

``--train-iteration`` times whole training iterations instead (the paper's Table 3 column
"training time per iteration"): the model of ``--config-file`` (default the quick ATSS-maIoU
config: slim R-50 at quarter width, 64-channel FPN and protonet; any other config and ``opts``
overrides work) is built once per assigner, switched by the assigner rows of
``configs/rows/assigners.yaml`` (``configs/rows/benchmark_assigner.yaml`` names the rows timed):

* fixed IoU thresholds with YOLACT's anchors (3 per location, sides 24..384, offset 0.5, as
  ``configs/quick_schedules/yolact_R_50_FPN_quick_fixediou.yaml``),
* ATSS with IoU, ATSS with maIoU (Alg. 1, integral images from the mapper),
* ATSS with brute-force maIoU (``MODEL.YOLACT.MAIOU_BRUTEFORCE True``),

and each runs forward, backward and the optimizer step (the project's optimizer, gradient clipping
included) on the SAME batch of ``--batch`` images mapped once at ``--size`` (default 550) by
``YOLACTDatasetMapper(cfg, is_train=True)`` (random augmentations, fixed seed) from
``coco_mini_train``, or from ``mayolact_shapes_train`` (with 8 classes) when coco_mini is absent.
Models start from the same random weights (no checkpoint is loaded). After ``--warmup``
iterations per row, the iterations of all rows are interleaved (so that load changes on a shared
machine hit every row alike) and the median over ``--iters`` (``--bruteforce-iters`` for the slow
brute-force row) is printed with the ratio to ATSS w. IoU, the time spent in the anchor
assignment (``label_anchors``) and the paper's numbers (full R-50 at 550, batch 8, V100).

Examples::

    python tools/benchmark_assigner.py --repeats 20 --device cpu --images 8 --size 550
    python tools/benchmark_assigner.py --train-iteration --iters 5 --bruteforce-iters 2
    python tools/benchmark_assigner.py --train-iteration --device cuda \
        --config-file configs/COCO-InstanceSegmentation/yolact_R_50_FPN_550_atss_maiou.yaml
"""
import argparse
import contextlib
import io
import os
import statistics
import time
from pathlib import Path

import mayolact  # noqa: F401  (first: its filters for known third-party warnings)
from mayolact.config import load_config, load_rows, merge_config_row

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TRAIN_CONFIG = (REPO / "configs" / "quick_schedules"
                        / "yolact_R_50_FPN_quick_atss_maiou.yaml")

ROWS_DIR = REPO / "configs" / "rows"
# --train-iteration rows (label, assigner row, the paper's Table 3 seconds per iteration) are data.
TRAIN_ROWS = load_rows(str(ROWS_DIR / "benchmark_assigner.yaml"))
ASSIGNER_ROWS = str(ROWS_DIR / "assigners.yaml")
# The matcher-cost mode takes its anchors from Base-YOLACT.yaml (ATSS) and its fixed-IoU row.
BASE_CONFIG = REPO / "configs" / "COCO-InstanceSegmentation" / "Base-YOLACT.yaml"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=10, help="timed repeats per row (median)")
    p.add_argument("--bruteforce-repeats", type=int, default=2,
                   help="timed repeats of the (slow) brute-force row")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--images", "--batch", dest="images", type=int, default=8,
                   help="images per batch")
    p.add_argument("--size", type=int, default=550, help="square input size S")
    p.add_argument("--coco-mini", default=None,
                   help="coco_mini folder (default: $MAYOLACT_COCO_MINI, ../shared/data/coco_mini)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: leave as is)")
    t = p.add_argument_group("--train-iteration (Table 3, training time per iteration)")
    t.add_argument("--train-iteration", action="store_true",
                   help="time forward + backward + optimizer step of a model with each assigner")
    t.add_argument("--config-file", default=str(DEFAULT_TRAIN_CONFIG),
                   help="base config (default: the quick ATSS-maIoU config)")
    t.add_argument("--iters", type=int, default=5, help="timed iterations per row (median)")
    t.add_argument("--bruteforce-iters", type=int, default=2,
                   help="timed iterations of the (slow) brute-force row")
    t.add_argument("--warmup", type=int, default=1, help="untimed iterations per row first")
    t.add_argument("--rows", nargs="+", choices=list(TRAIN_ROWS), default=list(TRAIN_ROWS),
                   help="assigners to time (default: all)")
    t.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                   help="config overrides KEY VALUE ... (after the options)")
    args = p.parse_args(argv)
    for name in ("repeats", "bruteforce_repeats", "images", "size", "iters", "bruteforce_iters"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    return args


if __name__ == "__main__":
    parse_args()  # --help and usage errors answer here, before the heavy imports below

import numpy as np  # noqa: E402
import torch  # noqa: E402
from detectron2.structures import Boxes  # noqa: E402

from mayolact.anchor_generator import anchors_for_input  # noqa: E402
from mayolact.matchers import ATSSMatcher, FixedIoUMatcher  # noqa: E402
from mayolact.structures import integral_images  # noqa: E402


def coco_root(path):
    if path:
        return Path(path)
    env = os.environ.get("MAYOLACT_COCO_MINI")
    return Path(env) if env else REPO.parent / "shared" / "data" / "coco_mini"


def load_coco_batch(root, num_images, size):
    """GT boxes (G, 4) and bool masks (G, S, S) of the first images with a usable GT."""
    import cv2
    from pycocotools.coco import COCO

    ann_file = root / "annotations" / "instances_train2017.json"
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools' loading messages
        coco = COCO(str(ann_file))
    batch = []
    for img_id in sorted(coco.getImgIds()):
        info = coco.loadImgs(img_id)[0]
        anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=img_id, iscrowd=False))
                if a["bbox"][2] > 4 and a["bbox"][3] > 4]  # FilterAnnotations (w, h > 4 px)
        if not anns:
            continue
        sx, sy = size / info["width"], size / info["height"]
        boxes, masks = [], []
        for a in anns:
            x, y, w, h = a["bbox"]
            boxes.append([x * sx, y * sy, (x + w) * sx, (y + h) * sy])
            m = coco.annToMask(a)
            masks.append(cv2.resize(m, (size, size), interpolation=cv2.INTER_NEAREST))
        batch.append((torch.tensor(boxes, dtype=torch.float32),
                      torch.from_numpy(np.stack(masks)).bool()))
        if len(batch) == num_images:
            break
    return batch, f"coco_mini train ({ann_file.name})"


def random_batch(num_images, size, seed=0):
    """Random rectangles and ellipses as GT masks, boxes from their extents."""
    gen = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    batch = []
    for _ in range(num_images):
        G = int(torch.randint(2, 15, (1,), generator=gen))
        c = torch.rand(G, 2, generator=gen) * size
        r = (torch.rand(G, 2, generator=gen) * 0.3 + 0.02) * size
        ell = (((xs[None] - c[:, None, None, 0]) / r[:, None, None, 0]) ** 2
               + ((ys[None] - c[:, None, None, 1]) / r[:, None, None, 1]) ** 2) <= 1
        rect = ((xs[None] - c[:, None, None, 0]).abs() <= r[:, None, None, 0]) & \
               ((ys[None] - c[:, None, None, 1]).abs() <= r[:, None, None, 1])
        use_ell = (torch.rand(G, generator=gen) < 0.5)[:, None, None]
        masks = torch.where(use_ell, ell, rect)
        boxes = torch.stack([c[:, 0] - r[:, 0], c[:, 1] - r[:, 1], c[:, 0] + r[:, 0],
                             c[:, 1] + r[:, 1]], 1).clamp(0, size)
        batch.append((boxes, masks))
    return batch, "random shapes (coco_mini not found)"


def time_rows(fns, repeats, device):
    """Median ms of each function; the repeats are interleaved so that load changes hit all."""
    times = [[] for _ in fns]
    for r in range(max(n for _, n in fns)):
        for i, (fn, n) in enumerate(fns):
            if r >= n:
                continue
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) * 1000.0 for t in times]


def main(argv=None):
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.train_iteration:
        return train_iteration_benchmark(args)
    device = torch.device(args.device)

    root = coco_root(args.coco_mini)
    if (root / "annotations" / "instances_train2017.json").is_file():
        batch, source = load_coco_batch(root, args.images, args.size)
    else:
        batch, source = random_batch(args.images, args.size)
    batch = [(b.to(device), m.to(device)) for b, m in batch]
    num_gt = sum(len(b) for b, _ in batch)

    atss_cfg = load_config(str(BASE_CONFIG))
    fixed_cfg = merge_config_row(load_config(str(BASE_CONFIG)), ASSIGNER_ROWS, "fixed_iou")
    atss_anchors = [b.to(device) for b in anchors_for_input(atss_cfg, args.size)]
    yolact_anchors = [b.to(device) for b in anchors_for_input(fixed_cfg, args.size)]
    n_atss = sum(len(a) for a in atss_anchors)
    n_yolact = sum(len(a) for a in yolact_anchors)

    iis = [integral_images(m) for _, m in batch]
    fixed = FixedIoUMatcher()
    atss_iou = ATSSMatcher(quality="iou")
    atss_ma = ATSSMatcher(quality="maiou")
    atss_ma_full = ATSSMatcher(quality="maiou", candidates_only=False)
    atss_bf = ATSSMatcher(quality="maiou", bruteforce=True)

    def run_ii():
        for _, m in batch:
            integral_images(m)

    def run(matcher, anchors, use_ii=False, use_masks=False):
        def fn():
            for i, (boxes, masks) in enumerate(batch):
                matcher(anchors, Boxes(boxes), integral_masks=iis[i] if use_ii else None,
                        gt_masks=masks if use_masks else None)
        return fn

    # Same assignment from every maIoU variant (and a warm-up for each).
    for i, (boxes, masks) in enumerate(batch):
        a = atss_ma(atss_anchors, Boxes(boxes), integral_masks=iis[i])
        b = atss_ma_full(atss_anchors, Boxes(boxes), integral_masks=iis[i])
        c = atss_bf(atss_anchors, Boxes(boxes), gt_masks=masks)
        same = all(torch.equal(x[k], y[k]) for x, y in ((a, b), (a, c)) for k in (0, 1))
        if not same:
            raise RuntimeError(f"maIoU variants disagree on image {i}")
    for fn in (run_ii, run(fixed, yolact_anchors), run(atss_iou, atss_anchors)):
        fn()

    R, B = args.repeats, args.bruteforce_repeats
    names_fns = [
        ("(1) integral images (per image, data loader)", "-", run_ii, R),
        ("(2) Fixed IoU thr. (YOLACT)", f"{n_yolact:,}", run(fixed, yolact_anchors), R),
        ("(3) ATSS w. IoU", f"{n_atss:,}", run(atss_iou, atss_anchors), R),
        ("(4) ATSS w. maIoU, Alg. 1 (candidates only)", f"{n_atss:,}",
         run(atss_ma, atss_anchors, use_ii=True), R),
        ("(4') ATSS w. maIoU, Alg. 1, full G x R matrix (official)", f"{n_atss:,}",
         run(atss_ma_full, atss_anchors, use_ii=True), R),
        ("(5) ATSS w. maIoU, brute force (without Alg. 1)", f"{n_atss:,}",
         run(atss_bf, atss_anchors, use_masks=True), B),
    ]
    ms = time_rows([(fn, n) for _, _, fn, n in names_fns], R, device)
    rows = [(name, n, t) for (name, n, _, _), t in zip(names_fns, ms)]
    ref = rows[2][2]
    print(f"\nAssigner cost per batch: {args.images} images at {args.size}x{args.size}, "
          f"{num_gt} GTs "
          f"({source}); device {device}, {torch.get_num_threads()} CPU thread(s); median of "
          f"{args.repeats} repeats ({args.bruteforce_repeats} for brute force). "
          "All maIoU variants give identical assignments.\n")
    print("| step | anchors | ms / batch | x ATSS w. IoU |")
    print("|---|---:|---:|---:|")
    for name, n, ms in rows:
        print(f"| {name} | {n} | {ms:.2f} | {ms / ref:.2f} |")
    print(f"\nATSS w. maIoU (Alg. 1) / ATSS w. IoU = {rows[3][2] / ref:.3f}; "
          f"brute force / Alg. 1 = {rows[5][2] / rows[3][2]:.1f}x "
          f"(vs the official full matrix: {rows[5][2] / rows[4][2]:.1f}x)")


# ------------------------------------------------------------------- --train-iteration
def _load_cfg(config_file, opts, assigner=None, user=()):
    """``config_file`` with ``opts``, then an assigner row of assigners.yaml (if given), then the
    user's overrides."""
    cfg = load_config(str(config_file), list(opts))
    if assigner is not None:
        merge_config_row(cfg, ASSIGNER_ROWS, assigner)
    cfg.merge_from_list(list(user))
    return cfg


def _train_batch(cfg, num_images, seed=0):
    """``num_images`` training dicts mapped once (fixed seed); returns (batch, source text)."""
    import random

    from detectron2.data import DatasetCatalog

    from mayolact.data import YOLACTDatasetMapper

    dataset = cfg.DATASETS.TRAIN[0]
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    mapper = YOLACTDatasetMapper(cfg, is_train=True)
    batch = []
    for d in DatasetCatalog.get(dataset):
        out = mapper(dict(d))
        if out is not None:
            batch.append(out)
        if len(batch) == num_images:
            break
    if len(batch) < num_images:
        raise RuntimeError(f"{dataset}: only {len(batch)} images with a ground truth, "
                           f"{num_images} asked (--batch)")
    return batch, dataset


def train_iteration_benchmark(args):
    """Median training-iteration time with each assigner; prints and returns the table rows."""
    from detectron2.modeling import build_model
    from detectron2.utils.events import EventStorage

    from mayolact.data.datasets import coco_mini_root, register_coco_mini
    from mayolact.engine import build_yolact_optimizer

    device = torch.device(args.device)
    base = ["MODEL.DEVICE", str(device), "INPUT.YOLACT.SIZE", str(args.size),
            "SOLVER.IMS_PER_BATCH", str(args.images), "INPUT.YOLACT.INTEGRAL_IMAGES", "True"]
    root = Path(args.coco_mini) if args.coco_mini else coco_mini_root()
    if root is not None and (root / "annotations" / "instances_train2017.json").is_file():
        register_coco_mini(root)  # a no-op when the package registered it at import
        data = ["DATASETS.TRAIN", "('coco_mini_train',)"]
    else:  # no ../shared: the built-in shapes dataset
        data = ["DATASETS.TRAIN", "('mayolact_shapes_train',)", "MODEL.YOLACT.NUM_CLASSES", "8"]
    user = list(args.opts or [])
    cfg = _load_cfg(args.config_file, base + data, user=user)
    batch, source = _train_batch(cfg, args.images)
    num_gt = sum(len(x["instances"]) for x in batch)

    rows = []
    for key in args.rows:
        row = TRAIN_ROWS[key]
        name, paper = row["label"], float(row["paper_seconds_per_iter"])
        rcfg = _load_cfg(args.config_file, base + data, assigner=row["assigner"], user=user)
        rcfg.freeze()
        torch.manual_seed(0)
        model = build_model(rcfg)
        model.train()
        optimizer = build_yolact_optimizer(rcfg, model)
        n_anchors = sum(len(b) for b in anchors_for_input(rcfg, args.size))
        assign = []

        def timed_label_anchors(*a, _f=model.label_anchors, _t=assign, **k):
            _sync(device)
            t0 = time.perf_counter()
            out = _f(*a, **k)
            _sync(device)
            _t.append(time.perf_counter() - t0)
            return out

        model.label_anchors = timed_label_anchors  # instance attribute: times the assigner only
        n = args.bruteforce_iters if key == "atss_maiou_bf" else args.iters
        rows.append(dict(key=key, name=name, paper=paper, model=model, optimizer=optimizer,
                         anchors=n_anchors, iters=n, assign=assign, times=[]))

    def step(row):
        model, optimizer = row["model"], row["optimizer"]
        _sync(device)
        t0 = time.perf_counter()
        losses = model(batch)
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        _sync(device)
        if not torch.isfinite(total):
            raise FloatingPointError(f"{row['name']}: non-finite loss {float(total)}")
        return time.perf_counter() - t0

    with EventStorage(0):
        for row in rows:  # warm-up, untimed
            for _ in range(args.warmup):
                step(row)
            row["assign"].clear()
        for r in range(max(row["iters"] for row in rows)):  # interleaved timed iterations
            for row in rows:
                if r < row["iters"]:
                    row["times"].append(step(row))
    for row in rows:
        row["s_iter"] = statistics.median(row["times"])
        row["s_assign"] = statistics.median(row["assign"]) if row["assign"] else float("nan")
    ref = next((row for row in rows if row["key"] == "atss_iou"), None)
    paper_ref = float(TRAIN_ROWS["atss_iou"]["paper_seconds_per_iter"])

    width = cfg.MODEL.YOLACT.RESNET_WIDTH_SCALE
    print(f"\nTraining time per iteration (Table 3): {Path(args.config_file).name} "
          f"(R-{cfg.MODEL.RESNETS.DEPTH} x{width:g} width, FPN {cfg.MODEL.FPN.OUT_CHANNELS} ch, "
          f"backbone {cfg.MODEL.BACKBONE.NAME}), batch {args.images} x {args.size}x{args.size}, "
          f"{num_gt} GTs ({source}, mapped once); device {device}, "
          f"{torch.get_num_threads()} CPU thread(s); forward + backward + optimizer step, median of "
          f"{args.iters} iterations ({args.bruteforce_iters} for brute force) after "
          f"{args.warmup} warm-up. Paper: full R-50, 550, batch 8, one V100.\n")
    print("| assigner | anchors | s / iter | x ATSS w. IoU | assignment s / iter "
          "| paper s / iter | paper x ATSS w. IoU |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        ratio = f"{row['s_iter'] / ref['s_iter']:.3f}" if ref else "-"
        print(f"| {row['name']} | {row['anchors']:,} | {row['s_iter']:.3f} | {ratio} | "
              f"{row['s_assign']:.4f} | {row['paper']:.2f} | {row['paper'] / paper_ref:.2f} |")
    ma = next((row for row in rows if row["key"] == "atss_maiou"), None)
    if ref and ma:
        r = ma["s_iter"] / ref["s_iter"]
        print(f"\nATSS w. maIoU / ATSS w. IoU = {r:.3f} (target <= 1.03; paper 0.59 / 0.57 = "
              f"{0.59 / 0.57:.3f}): {'met' if r <= 1.03 else 'NOT met'}")
    return [{k: row[k] for k in ("key", "name", "anchors", "s_iter", "s_assign", "paper")}
            for row in rows]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


if __name__ == "__main__":
    main()
