"""The assigner benchmarks of ``tools/benchmark_assigner.py`` (the paper's Table 3): the cost of
anchor assignment per batch (:func:`matcher_cost_benchmark`) and whole training iterations with
each assigner (:func:`train_iteration_benchmark`). The tool's docstring says what each measures."""
import contextlib
import io
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from detectron2.structures import Boxes

from mayolact.config import load_config, load_rows, merge_config_row
from mayolact.data.datasets import coco_mini_root, register_coco_mini
from mayolact.modeling.anchor_generator import anchors_for_input
from mayolact.modeling.matchers import ATSSMatcher, FixedIoUMatcher
from mayolact.structures.integral_image import integral_images

__all__ = ["TRAIN_ROWS_FILE", "matcher_cost_benchmark", "train_iteration_benchmark"]

REPO = Path(__file__).resolve().parents[4]
ROWS_DIR = REPO / "configs" / "rows"
#: --train-iteration rows (label, assigner row, the paper's Table 3 seconds per iteration).
TRAIN_ROWS_FILE = ROWS_DIR / "benchmark_assigner.yaml"
ASSIGNER_ROWS = str(ROWS_DIR / "assigners.yaml")
# The matcher-cost mode takes its anchors from Base-YOLACT.yaml (ATSS) and its fixed-IoU row.
BASE_CONFIG = REPO / "configs" / "COCO-InstanceSegmentation" / "Base-YOLACT.yaml"


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


def matcher_cost_benchmark(args):
    """Median time per batch of each assignment step; prints the table (see the tool)."""
    device = torch.device(args.device)
    root = Path(args.coco_mini) if args.coco_mini else coco_mini_root()
    if root is not None and (root / "annotations" / "instances_train2017.json").is_file():
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

    from mayolact.engine import build_yolact_optimizer

    train_rows = load_rows(str(TRAIN_ROWS_FILE))
    unknown = sorted(set(args.rows or ()) - set(train_rows))
    if unknown:
        raise ValueError(f"--rows {unknown}: not in {TRAIN_ROWS_FILE} ({sorted(train_rows)})")
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
    for key in args.rows or list(train_rows):
        row = train_rows[key]
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
    paper_ref = float(train_rows["atss_iou"]["paper_seconds_per_iter"])

    width = cfg.MODEL.YOLACT.RESNET_WIDTH_SCALE
    print(f"\nTraining time per iteration (Table 3): {Path(args.config_file).name} "
          f"(R-{cfg.MODEL.RESNETS.DEPTH} x{width:g} width, FPN {cfg.MODEL.FPN.OUT_CHANNELS} ch, "
          f"backbone {cfg.MODEL.BACKBONE.NAME}), batch {args.images} x {args.size}x{args.size}, "
          f"{num_gt} GTs ({source}, mapped once); device {device}, "
          f"{torch.get_num_threads()} CPU thread(s); forward + backward + optimizer step, "
          f"median of {args.iters} iterations ({args.bruteforce_iters} for brute force) after "
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
