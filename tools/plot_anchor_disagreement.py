#!/usr/bin/env python
"""Figure 1: anchors on which IoU and maIoU disagree most.

Left column: anchors with IoU below the threshold (negatives for a fixed-IoU assigner) that cover
much of the object, so maIoU is much higher. Right column: anchors with IoU at or above the
threshold that cover little of the object, so maIoU is much lower. Green: GT box and mask; red:
the anchor (real anchors of the config, squashed back to the original image).

Example::

    python tools/plot_anchor_disagreement.py --dataset coco_mini_val --num-images 50 \\
        --output output/figures/anchor_disagreement.png
"""
import argparse
import logging
import os
import sys
from typing import Dict, List, Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from detectron2.data import MetadataCatalog  # noqa: E402
from detectron2.data.detection_utils import read_image  # noqa: E402
from detectron2.utils.visualizer import Visualizer  # noqa: E402

import mayolact  # noqa: E402,F401  (registers the project's components)
from mayolact.analysis import (analysis_cfg, disagreement_examples,  # noqa: E402
                               gt_instances, register_figure_datasets, save_figure)

logger = logging.getLogger("mayolact.plot_anchor_disagreement")

KINDS = [("maiou_higher", "IoU low, maIoU high"), ("iou_higher", "IoU high, maIoU low")]


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", nargs="+", default=["coco_mini_val"],
                   help="registered dataset name(s), concatenated")
    p.add_argument("--config-file", default="", help="config with the anchors (default: ATSS)")
    p.add_argument("--size", type=int, default=None, help="input size S (default: config's)")
    p.add_argument("--num-images", type=int, default=50, help="images searched (first N)")
    p.add_argument("--num-show", type=int, default=3, help="examples shown per direction")
    p.add_argument("--iou-threshold", type=float, default=0.5,
                   help="left column: IoU < t; right column: IoU >= t (negative: no condition)")
    p.add_argument("--output", default="output/figures/anchor_disagreement.png", help="PNG path")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config KEY VALUE pairs")
    return p.parse_args(argv)


def draw_example(example: Dict, metadata) -> np.ndarray:
    """The example's image with its GT (mask and box), the anchor and the two scores (RGB)."""
    record = example["record"]
    image = read_image(record["file_name"], format="RGB")
    scale = max(1.0, 400.0 / max(image.shape[:2]))
    vis = Visualizer(image, metadata, scale=scale)
    gts = gt_instances(record)
    mask = gts.gt_masks[example["gt"]].numpy()
    vis.draw_binary_mask(mask, color="lime", alpha=0.35)
    vis.draw_box(example["gt_box"], alpha=1.0, edge_color="lime")
    vis.draw_box(example["anchor_box"], alpha=1.0, edge_color="red", line_style="--")
    classes = metadata.get("thing_classes", None)
    cls = int(gts.gt_classes[example["gt"]])
    name = classes[cls] if classes and cls < len(classes) else str(cls)
    text = f"{name}: IoU {example['iou']:.2f}  maIoU {example['maiou']:.2f}"
    vis.draw_text(text, (4, 4), color="white", horizontal_alignment="left")
    return vis.output.get_image()


def main(argv: Optional[List[str]] = None) -> Dict[str, List[Dict]]:
    """Run the tool; returns the examples shown, per kind."""
    args = parse_args(argv)
    register_figure_datasets()
    cfg = analysis_cfg(args.config_file or None, args.opts, args.size)
    threshold = args.iou_threshold if args.iou_threshold >= 0 else None
    examples = disagreement_examples(args.dataset, cfg, num_images=args.num_images,
                                     iou_threshold=threshold)
    shown = {}
    for kind, _ in KINDS:
        ex = sorted((e for e in examples if e["kind"] == kind), key=lambda e: -e["gap"])
        shown[kind] = ex[:args.num_show]

    size = cfg.INPUT.YOLACT.SIZE
    print(f"dataset(s): {', '.join(args.dataset)}; input {size}x{size}; anchors "
          f"{cfg.MODEL.ANCHOR_GENERATOR.SIZES}; {len(examples)} candidate examples")
    print(f"{'kind':<14}{'image':>6}{'gt':>4}{'IoU':>7}{'maIoU':>7}{'gap':>7}{'MOB(gt)':>9}"
          f"{'MOB(anc)':>9}  file")
    for kind, _ in KINDS:
        for e in shown[kind]:
            print(f"{kind:<14}{e['image']:>6d}{e['gt']:>4d}{e['iou']:>7.3f}{e['maiou']:>7.3f}"
                  f"{e['gap']:>7.3f}{e['gt_mob']:>9.3f}{e['anchor_mob']:>9.3f}  "
                  f"{os.path.basename(e['record']['file_name'])}")

    metadata = MetadataCatalog.get(args.dataset[0])
    rows = max(1, max(len(v) for v in shown.values()))
    fig, axes = plt.subplots(rows, len(KINDS), figsize=(5 * len(KINDS), 4 * rows), squeeze=False)
    for c, (kind, title) in enumerate(KINDS):
        axes[0, c].set_title(title, fontsize=10)
        for r in range(rows):
            ax = axes[r, c]
            ax.axis("off")
            if r < len(shown[kind]):
                ax.imshow(draw_example(shown[kind][r], metadata))
    print(f"\nwrote {save_figure(fig, args.output, dpi=110)}")
    return shown


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main(sys.argv[1:])
