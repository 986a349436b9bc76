#!/usr/bin/env python
"""Figure 2: losses of a trained model's anchors with similar IoUs, by the anchors' MOB ratio.

Negatives: anchors whose best IoU is in [0.3, 0.5) (classification loss against background).
Positives: best IoU in [0.5, 0.7] (classification, box SmoothL1 and mask BCE against that GT).
The MOB ratio of an anchor is |anchor ∩ M| / |anchor| for the mask M of its best-IoU GT. Losses
are per anchor, unweighted and unnormalised. Inputs are squashed to S x S without augmentation.

Example::

    python tools/plot_losses_by_mob.py --config-file configs/shapes/mayolact_shapes_demo.yaml \\
        --dataset mayolact_shapes_val --num-images 100 MODEL.WEIGHTS output/demo/model_final.pth
"""
import argparse
import logging
import sys
from typing import Dict, List, Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import mayolact  # noqa: E402,F401  (registers the project's components)
import mayolact.meta_arch  # noqa: E402,F401  (registers the YOLACT meta-architecture)
from mayolact.analysis import (analysis_cfg, losses_by_mob,  # noqa: E402
                               register_figure_datasets, save_figure, squash_batches)

logger = logging.getLogger("mayolact.plot_losses_by_mob")

PANELS = [
    ("neg_cls", "negatives: classification"),
    ("pos_cls", "positives: classification"),
    ("pos_mask", "positives: segmentation"),
    ("pos_box", "positives: regression"),
]


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config-file", required=True, help="the trained model's config")
    p.add_argument("--dataset", nargs="+", default=None,
                   help="registered dataset name(s) (default: the config's DATASETS.TEST[0])")
    p.add_argument("--num-images", type=int, default=100, help="first N images")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--bins", type=int, default=10, help="MOB bins over [0, 1]")
    p.add_argument("--pos-iou", type=float, nargs=2, default=(0.5, 0.7))
    p.add_argument("--neg-iou", type=float, nargs=2, default=(0.3, 0.5))
    p.add_argument("--output", default="output/figures/losses_by_mob.png", help="PNG path")
    p.add_argument("opts", nargs=argparse.REMAINDER,
                   help="config KEY VALUE pairs, e.g. MODEL.WEIGHTS path/to/model.pth")
    return p.parse_args(argv)


def build_trained_model(cfg):
    """``build_model(cfg)`` in eval mode with ``cfg.MODEL.WEIGHTS`` loaded (if set)."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    model = build_model(cfg)
    if cfg.MODEL.WEIGHTS:
        DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    else:
        logger.warning("MODEL.WEIGHTS is empty: the figure shows a randomly initialised model")
    return model.eval()


def print_table(result: Dict) -> None:
    """Print mean +- std (count) per MOB bin for every panel."""
    bins = result["bins"]
    print(f"{'MOB bin':<12}" + "".join(f"{name:>24}" for name, _ in PANELS))
    for j in range(len(bins) - 1):
        row = f"{bins[j]:.2f}-{bins[j + 1]:.2f}".ljust(12)
        for name, _ in PANELS:
            s = result[name]
            cell = (f"{s['mean'][j]:.3f}+-{s['std'][j]:.3f} ({s['count'][j]})"
                    if s["count"][j] else "-")
            row += f"{cell:>24}"
        print(row)
    raw = result["raw"]
    print(f"anchors: {len(raw['neg_cls'])} negatives, {len(raw['pos_cls'])} positives")


def plot(result: Dict, output: str, title: str = "") -> None:
    """Write the figure: one panel per loss (mean with std bars) and one with the counts."""
    bins = result["bins"]
    centers = 0.5 * (bins[:-1] + bins[1:])
    width = np.diff(bins)
    fig, axes = plt.subplots(1, len(PANELS) + 1, figsize=(3.3 * (len(PANELS) + 1), 3.2))
    for ax, (name, label) in zip(axes, PANELS):
        s = result[name]
        ok = s["count"] > 0
        ax.bar(centers[ok], s["mean"][ok], width=width[ok] * 0.9, color="#4472c4")
        ax.errorbar(centers[ok], s["mean"][ok], yerr=s["std"][ok], fmt="none", ecolor="red",
                    capsize=2)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("MOB ratio of the anchor")
        ax.set_xlim(bins[0], bins[-1])
    axes[0].set_ylabel("loss")
    ax = axes[-1]
    ax.bar(centers - width * 0.2, result["neg_cls"]["count"], width=width * 0.4, label="negatives")
    ax.bar(centers + width * 0.2, result["pos_cls"]["count"], width=width * 0.4, label="positives")
    ax.set_yscale("symlog")
    ax.set_title("number of anchors", fontsize=9)
    ax.set_xlabel("MOB ratio of the anchor")
    ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    save_figure(fig, output, dpi=120)


def run(model, cfg, args: argparse.Namespace) -> Dict:
    """Compute, print and plot the statistics of ``model`` (already in eval mode)."""
    dataset = args.dataset or [cfg.DATASETS.TEST[0]]
    size = cfg.INPUT.YOLACT.SIZE
    loader = squash_batches(dataset, size, batch_size=args.batch_size,
                            num_images=args.num_images, image_format=cfg.INPUT.FORMAT)
    bins = np.linspace(0.0, 1.0, args.bins + 1)
    with torch.no_grad():
        result = losses_by_mob(model, loader, bins=bins, pos_iou=tuple(args.pos_iou),
                               neg_iou=tuple(args.neg_iou))
    print(f"dataset(s): {', '.join(dataset)}; input {size}x{size}; weights: "
          f"{cfg.MODEL.WEIGHTS or '(random init)'}")
    print_table(result)
    plot(result, args.output, f"{', '.join(dataset)}, {args.num_images} images")
    print(f"\nwrote {args.output}")
    return result


def main(argv: Optional[List[str]] = None) -> Dict:
    """Run the tool; returns the result of :func:`mayolact.analysis.losses_by_mob`."""
    args = parse_args(argv)
    register_figure_datasets()
    cfg = analysis_cfg(args.config_file, args.opts)
    if not torch.cuda.is_available() and cfg.MODEL.DEVICE != "cpu":
        logger.warning("no GPU: running on the CPU")
        cfg.MODEL.DEVICE = "cpu"
    return run(build_trained_model(cfg), cfg, args)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main(sys.argv[1:])
