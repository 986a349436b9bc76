"""The paper's figures as sub-commands of ``tools/plot_figures.py``: options, tables and drawing.

Each sub-command computes the numbers (:mod:`mayolact.analysis.overlaps`,
:mod:`mayolact.analysis.losses`), prints them, writes a PNG atomically and returns the numbers:

* ``mob-histogram`` (Figure 3a): MOB ratios of the ground truths;
* ``iou-vs-maiou`` (Figure 3c): IoU vs maIoU of every (GT, anchor) pair with IoU > 0;
* ``anchor-disagreement`` (Figure 1): anchors on which IoU and maIoU disagree most;
* ``losses-by-mob`` (Figure 2): a trained model's per-anchor losses by the anchors' MOB ratio.

The options of each sub-command are the tool's.
"""
import argparse
import logging
import os
from typing import Dict, List

import numpy as np

from mayolact.analysis import plots

__all__ = [
    "FIGURES",
    "run_figure",
    "build_trained_model",
    "draw_example",
    "losses_by_mob_figure",
    "print_losses_table",
]

logger = logging.getLogger(__name__)


def _config(args):
    from mayolact.config.config import load_config

    cfg = load_config(args.config_file, args.opts)
    if args.size:
        cfg.INPUT.YOLACT.SIZE = int(args.size)
    return cfg


# ---------------------------------------------------------------------------- Figure 3a
def _mob_histogram(args) -> Dict[str, np.ndarray]:
    from mayolact.analysis.overlaps import gt_mob_ratios

    edges = np.linspace(0.0, 1.0, args.bins + 1)
    ratios = {name: gt_mob_ratios(name, size=args.size, num_images=args.num_images)
              for name in args.dataset}
    print(f"{'dataset':<28}{'GTs':>8}{'MOB<0.5':>10}{'mean':>8}{'median':>8}")
    for name, r in ratios.items():
        below = 100.0 * (r < 0.5).mean() if len(r) else float("nan")
        mean = r.mean() if len(r) else float("nan")
        med = np.median(r) if len(r) else float("nan")
        print(f"{name:<28}{len(r):>8d}{below:>9.1f}%{mean:>8.3f}{med:>8.3f}")
    print("\n% of GTs per MOB bin")
    print(f"{'bin':<12}" + "".join(f"{n[:18]:>20}" for n in ratios))
    hists = {n: np.histogram(np.clip(r, 0.0, 1.0), bins=edges)[0] for n, r in ratios.items()}
    for j in range(args.bins):
        row = f"{edges[j]:.2f}-{edges[j + 1]:.2f}".ljust(12)
        for n, r in ratios.items():
            row += f"{100.0 * hists[n][j] / max(len(r), 1):>19.1f}%"
        print(row)
    print(f"\nwrote {plots.plot_mob_histogram(ratios, edges, args.output)}")
    return ratios


# ---------------------------------------------------------------------------- Figure 3c
def _iou_vs_maiou(args) -> Dict[str, np.ndarray]:
    from mayolact.analysis.overlaps import iou_maiou_pairs

    cfg = _config(args)
    pairs = iou_maiou_pairs(args.dataset, cfg, num_images=args.num_images)
    iou, maiou = pairs["iou"], pairs["maiou"]
    n, t, size = len(iou), args.threshold, cfg.INPUT.YOLACT.SIZE
    print(f"dataset(s): {', '.join(args.dataset)}; input {size}x{size}; "
          f"anchors: {cfg.MODEL.ANCHOR_GENERATOR.NAME} sizes {cfg.MODEL.ANCHOR_GENERATOR.SIZES}")
    print(f"pairs with IoU > 0: {n} ({len(np.unique(pairs['image']))} images)")
    if n:
        r = np.corrcoef(iou, maiou)[0, 1] if n > 1 else float("nan")
        print(f"Pearson r(IoU, maIoU) = {r:.3f}; maIoU > IoU on {100 * (maiou > iou).mean():.1f}% "
              "of the pairs")
        up = ((iou < t) & (maiou >= t)).sum()
        down = ((iou >= t) & (maiou < t)).sum()
        print(f"IoU < {t} <= maIoU: {up} pairs ({100 * up / n:.2f}%);  "
              f"maIoU < {t} <= IoU: {down} pairs ({100 * down / n:.2f}%)")
    edges5 = np.linspace(0, 1, 6)
    grid, _, _ = np.histogram2d(iou, np.clip(maiou, 0, 1), bins=[edges5, edges5])
    print("\ncounts: rows IoU bins, columns maIoU bins")
    print(" " * 12 + "".join(f"{f'{a:.1f}-{b:.1f}':>11}" for a, b in zip(edges5[:-1], edges5[1:])))
    for j in range(5):
        print(f"{edges5[j]:.1f}-{edges5[j + 1]:.1f}".ljust(12)
              + "".join(f"{int(c):>11d}" for c in grid[j]))
    title = f"{', '.join(args.dataset)}: {n} pairs, S={size}"
    print(f"\nwrote {plots.plot_iou_vs_maiou(iou, maiou, args.bins, t, title, args.output)}")
    return pairs


# ----------------------------------------------------------------------------- Figure 1
def draw_example(example: Dict, metadata) -> np.ndarray:
    """The network's input of an example with its GT (mask and box), the anchor and the two
    scores, as an RGB array (enlarged to about 400 px)."""
    from detectron2.utils.visualizer import Visualizer

    from mayolact.analysis.inputs import figure_mapper

    mapped = figure_mapper(example["size"])(example["record"])
    image = mapped["image"].permute(1, 2, 0).numpy().clip(0, 255).astype(np.uint8)  # RGB
    inst = mapped["instances"]
    vis = Visualizer(image, metadata, scale=max(1.0, 400.0 / example["size"]))
    vis.draw_binary_mask(inst.gt_masks.tensor[example["gt"]].numpy(), color="lime", alpha=0.35)
    vis.draw_box(example["gt_box"], alpha=1.0, edge_color="lime")
    vis.draw_box(example["anchor_box"], alpha=1.0, edge_color="red", line_style="--")
    classes = metadata.get("thing_classes", None)
    cls = int(inst.gt_classes[example["gt"]])
    name = classes[cls] if classes and cls < len(classes) else str(cls)
    text = f"{name}: IoU {example['iou']:.2f}  maIoU {example['maiou']:.2f}"
    vis.draw_text(text, (4, 4), color="white", horizontal_alignment="left")
    return vis.output.get_image()


def _anchor_disagreement(args) -> Dict[str, List[Dict]]:
    from mayolact.analysis.overlaps import disagreement_examples
    from mayolact.data.datasets import dataset_metadata

    cfg = _config(args)
    threshold = args.iou_threshold if args.iou_threshold >= 0 else None
    examples = disagreement_examples(args.dataset, cfg, num_images=args.num_images,
                                     iou_threshold=threshold)
    shown = {}
    for kind, _ in plots.FIGURE1_KINDS:
        ex = sorted((e for e in examples if e["kind"] == kind), key=lambda e: -e["gap"])
        shown[kind] = ex[:args.num_show]
    size = cfg.INPUT.YOLACT.SIZE
    print(f"dataset(s): {', '.join(args.dataset)}; input {size}x{size}; anchors "
          f"{cfg.MODEL.ANCHOR_GENERATOR.SIZES}; {len(examples)} candidate examples")
    print(f"{'kind':<14}{'image':>6}{'gt':>4}{'IoU':>7}{'maIoU':>7}{'gap':>7}{'MOB(gt)':>9}"
          f"{'MOB(anc)':>9}  file")
    for kind, _ in plots.FIGURE1_KINDS:
        for e in shown[kind]:
            print(f"{kind:<14}{e['image']:>6d}{e['gt']:>4d}{e['iou']:>7.3f}{e['maiou']:>7.3f}"
                  f"{e['gap']:>7.3f}{e['gt_mob']:>9.3f}{e['anchor_mob']:>9.3f}  "
                  f"{os.path.basename(e['record']['file_name'])}")
    metadata = dataset_metadata(args.dataset[0])  # with class names, loaded or not
    drawings = {(kind, r): draw_example(e, metadata)
                for kind, examples in shown.items() for r, e in enumerate(examples)}
    print(f"\nwrote {plots.plot_anchor_disagreement(shown, drawings, args.output)}")
    return shown


# ----------------------------------------------------------------------------- Figure 2
def build_trained_model(cfg):
    """``build_model(cfg)`` in eval mode with ``cfg.MODEL.WEIGHTS`` loaded (if set) for
    inference: no code runs from the file, and backbone-only weights (random heads) are refused."""
    from detectron2.modeling import build_model

    from mayolact.checkpoint.checkpointer import YOLACTCheckpointer

    model = build_model(cfg)
    if cfg.MODEL.WEIGHTS:
        YOLACTCheckpointer.from_config(cfg, model, inference=True).load(cfg.MODEL.WEIGHTS)
    else:
        logger.warning("MODEL.WEIGHTS is empty: the figure shows a randomly initialised model")
    return model.eval()


def print_losses_table(result: Dict) -> None:
    """Print mean +- std (count) per MOB bin for every panel of Figure 2."""
    bins = result["bins"]
    print(f"{'MOB bin':<12}" + "".join(f"{name:>24}" for name, _ in plots.FIGURE2_PANELS))
    for j in range(len(bins) - 1):
        row = f"{bins[j]:.2f}-{bins[j + 1]:.2f}".ljust(12)
        for name, _ in plots.FIGURE2_PANELS:
            s = result[name]
            cell = (f"{s['mean'][j]:.3f}+-{s['std'][j]:.3f} ({s['count'][j]})"
                    if s["count"][j] else "-")
            row += f"{cell:>24}"
        print(row)
    raw = result["raw"]
    print(f"anchors: {len(raw['neg_cls'])} negatives, {len(raw['pos_cls'])} positives")


def losses_by_mob_figure(model, cfg, args) -> Dict:
    """Compute, print and plot Figure 2 for ``model`` (in eval mode) on ``args.dataset``."""
    from mayolact.analysis.inputs import mapped_batches
    from mayolact.analysis.losses import losses_by_mob

    dataset = args.dataset or [cfg.DATASETS.TEST[0]]
    size = cfg.INPUT.YOLACT.SIZE
    loader = mapped_batches(dataset, size, batch_size=args.batch_size, num_images=args.num_images,
                            image_format=cfg.INPUT.FORMAT, num_classes=model.num_classes)
    bins = np.linspace(0.0, 1.0, args.bins + 1)
    result = losses_by_mob(model, loader, bins=bins, pos_iou=tuple(args.pos_iou),
                           neg_iou=tuple(args.neg_iou))
    print(f"dataset(s): {', '.join(dataset)}; input {size}x{size}; weights: "
          f"{cfg.MODEL.WEIGHTS or '(random init)'}")
    print_losses_table(result)
    plots.plot_losses_by_mob(result, args.output, f"{', '.join(dataset)}, {args.num_images} images")
    print(f"\nwrote {args.output}")
    return result


def _losses_by_mob(args) -> Dict:
    import torch

    cfg = _config(args)
    if not torch.cuda.is_available() and cfg.MODEL.DEVICE != "cpu":
        logger.warning("no GPU: running on the CPU")
        cfg.MODEL.DEVICE = "cpu"
    return losses_by_mob_figure(build_trained_model(cfg), cfg, args)


#: name -> run(args): the sub-commands of ``tools/plot_figures.py`` (which holds their options).
FIGURES = {
    "mob-histogram": _mob_histogram,
    "iou-vs-maiou": _iou_vs_maiou,
    "anchor-disagreement": _anchor_disagreement,
    "losses-by-mob": _losses_by_mob,
}


def run_figure(args: argparse.Namespace):
    """Run the figure ``args.figure`` of parsed arguments; returns its numbers."""
    from mayolact.data.datasets import dataset_arguments

    if args.dataset:
        args.dataset = dataset_arguments(args.dataset, args.image_root)
    return FIGURES[args.figure](args)
