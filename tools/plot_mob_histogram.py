#!/usr/bin/env python
"""Figure 3(a): distribution of the mask-over-box (MOB) ratios |M| / |B| of the ground truths.

Example::

    python tools/plot_mob_histogram.py --dataset coco_mini_train mayolact_shapes_train \\
        --output output/figures/mob_histogram.png

Prints, per dataset, the number of non-crowd GTs, the share with MOB < 0.5 (the paper: about 30 %
on COCO train2017) and the histogram in per cent.
"""
import argparse
import logging
import sys
from typing import Dict, List, Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import mayolact  # noqa: E402,F401  (registers the project's components)
from mayolact.analysis import (gt_mob_ratios, register_figure_datasets,  # noqa: E402
                               save_figure)

logger = logging.getLogger("mayolact.plot_mob_histogram")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", nargs="+", default=["coco_mini_train", "mayolact_shapes_train"],
                   help="registered dataset name(s); one panel each")
    p.add_argument("--num-images", type=int, default=None, help="first N images of each dataset")
    p.add_argument("--size", type=int, default=None,
                   help="squash GTs to SIZE x SIZE first, as the network sees them")
    p.add_argument("--bins", type=int, default=10, help="histogram bins over [0, 1]")
    p.add_argument("--output", default="output/figures/mob_histogram.png", help="PNG path")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> Dict[str, np.ndarray]:
    """Run the tool; returns the MOB ratios of each dataset."""
    args = parse_args(argv)
    register_figure_datasets()
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

    fig, axes = plt.subplots(1, len(ratios), figsize=(4.5 * len(ratios), 3.6), squeeze=False)
    for ax, (name, r) in zip(axes[0], ratios.items()):
        pct = 100.0 * hists[name] / max(len(r), 1)
        ax.bar(edges[:-1], pct, width=np.diff(edges), align="edge", color="#4472c4",
               edgecolor="black")
        ax.axvline(0.5, color="red", linestyle="--", linewidth=1)
        below = 100.0 * (r < 0.5).mean() if len(r) else float("nan")
        ax.set_title(f"{name}\n{len(r)} GTs, {below:.1f}% with MOB < 0.5", fontsize=9)
        ax.set_xlabel("MOB ratio |M| / |B|")
        ax.set_ylabel("% of ground truths")
        ax.set_xlim(0, 1)
    print(f"\nwrote {save_figure(fig, args.output, dpi=120)}")
    return ratios


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main(sys.argv[1:])
