#!/usr/bin/env python
"""Figure 3(c): anchor count distribution (log scale) over IoU vs maIoU of (GT, anchor) pairs.

Every pair of a ground truth and an anchor with IoU > 0 counts; GTs are squashed to S x S and the
anchors come from the config (default: the ATSS anchors of Table 2 at 550).

Example::

    python tools/plot_iou_vs_maiou.py --dataset coco_mini_val --output output/figures/iou_maiou.png
    python tools/plot_iou_vs_maiou.py --config-file \\
        configs/COCO-InstanceSegmentation/yolact_R_50_FPN_550_fixediou.yaml --dataset coco_mini_val
"""
import argparse
import logging
import sys
from typing import Dict, List, Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

import mayolact  # noqa: E402,F401  (registers the project's components)
from mayolact.analysis import (analysis_cfg, iou_maiou_pairs,  # noqa: E402
                               register_figure_datasets, save_figure)

logger = logging.getLogger("mayolact.plot_iou_vs_maiou")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", nargs="+", default=["coco_mini_val"],
                   help="registered dataset name(s), concatenated")
    p.add_argument("--config-file", default="", help="config with the anchors (default: ATSS)")
    p.add_argument("--size", type=int, default=None, help="input size S (default: config's)")
    p.add_argument("--num-images", type=int, default=None, help="first N images")
    p.add_argument("--bins", type=int, default=50, help="bins per axis")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="threshold used to count disagreements (IoU < t <= maIoU and vice versa)")
    p.add_argument("--output", default="output/figures/iou_vs_maiou.png", help="PNG path")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config KEY VALUE pairs")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> Dict[str, np.ndarray]:
    """Run the tool; returns the pairs of :func:`mayolact.analysis.iou_maiou_pairs`."""
    args = parse_args(argv)
    register_figure_datasets()
    cfg = analysis_cfg(args.config_file or None, args.opts, args.size)
    pairs = iou_maiou_pairs(args.dataset, cfg, num_images=args.num_images)
    iou, maiou = pairs["iou"], pairs["maiou"]
    n = len(iou)
    t = args.threshold
    size = cfg.INPUT.YOLACT.SIZE
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

    edges = np.linspace(0, 1, args.bins + 1)
    hist, _, _ = np.histogram2d(iou, np.clip(maiou, 0, 1), bins=[edges, edges])
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    masked = np.ma.masked_equal(hist.T, 0)
    vmax = max(float(hist.max()), 1.0)
    im = ax.pcolormesh(edges, edges, masked, norm=LogNorm(vmin=1, vmax=max(vmax, 1.0 + 1e-6)),
                       cmap="viridis")
    fig.colorbar(im, ax=ax, label="number of (GT, anchor) pairs")
    ax.plot([0, 1], [0, 1], color="white", linewidth=0.8, linestyle="--")
    ax.axvline(t, color="red", linewidth=0.8)
    ax.axhline(t, color="red", linewidth=0.8)
    ax.set_xlabel("IoU")
    ax.set_ylabel("maIoU")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(f"{', '.join(args.dataset)}: {n} pairs, S={size}", fontsize=9)
    print(f"\nwrote {save_figure(fig, args.output, dpi=120)}")
    return pairs


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main(sys.argv[1:])
