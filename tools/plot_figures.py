#!/usr/bin/env python
"""The paper's figures, one sub-command each; every one prints its numbers and writes a PNG.

    python tools/plot_figures.py mob-histogram --dataset coco_mini_train mayolact_shapes_train
    python tools/plot_figures.py iou-vs-maiou --dataset coco_mini_val
    python tools/plot_figures.py anchor-disagreement --dataset coco_mini_val --num-images 50
    python tools/plot_figures.py losses-by-mob \\
        --config-file configs/shapes/mayolact_shapes_demo.yaml --dataset mayolact_shapes_val \\
        MODEL.WEIGHTS output/demo/model_final.pth

``python tools/plot_figures.py FIGURE --help`` lists a figure's options. The anchors of Figures 1
and 3c come from ``--config-file`` (default ``Base-YOLACT.yaml``: one square anchor per location,
550 x 550); Figure 2 needs the trained model's config.
"""
import argparse
import os
import sys
from typing import List, Optional

# mayolact, torch, Detectron2 and matplotlib are imported in main(): --help needs none of them.

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "configs", "COCO-InstanceSegmentation", "Base-YOLACT.yaml")


def add_figure_arguments(parser: argparse.ArgumentParser, *, dataset: Optional[List[str]],
                         output: str, num_images: Optional[int], config_file: Optional[str],
                         config_help: str = "config with the anchors and the input size") -> None:
    """The options every figure shares: ``--dataset``, ``--num-images``, ``--output`` and, with a
    ``config_file`` default ("" = required), ``--config-file``, ``--size`` and config overrides."""
    parser.add_argument("--dataset", nargs="+", default=dataset,
                        help="registered dataset name(s) or COCO-format json file(s)" + (
                            "" if dataset else "; None: the config's DATASETS.TEST[0]"))
    parser.add_argument("--image-root", default=None,
                        help="folder of the images of a json given to --dataset; None: the "
                             "json's folder")
    parser.add_argument("--num-images", type=int, default=num_images,
                        help="use the first N images of each dataset")
    parser.add_argument("--output", default=output, help="PNG path")
    if config_file is not None:
        parser.add_argument("--config-file", default=config_file or None,
                            required=not config_file, help=config_help)
        parser.add_argument("--size", type=int, default=None,
                            help="input size S; None: the config's INPUT.YOLACT.SIZE")
        parser.add_argument("opts", nargs=argparse.REMAINDER,
                            help="config overrides as KEY VALUE pairs")



def mob_histogram_arguments(p, default_config):
    add_figure_arguments(p, dataset=["coco_mini_train", "mayolact_shapes_train"],
                         output="output/figures/mob_histogram.png", num_images=None,
                         config_file=None)
    p.add_argument("--size", type=int, default=None,
                   help="squash the GTs to SIZE x SIZE first, as the network sees them")
    p.add_argument("--bins", type=int, default=10, help="histogram bins over [0, 1]")



def iou_vs_maiou_arguments(p, default_config):
    add_figure_arguments(p, dataset=["coco_mini_val"], output="output/figures/iou_vs_maiou.png",
                         num_images=None, config_file=default_config)
    p.add_argument("--bins", type=int, default=50, help="bins per axis")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="threshold used to count disagreements (IoU < t <= maIoU and vice versa)")



def anchor_disagreement_arguments(p, default_config):
    add_figure_arguments(p, dataset=["coco_mini_val"],
                         output="output/figures/anchor_disagreement.png", num_images=50,
                         config_file=default_config)
    p.add_argument("--num-show", type=int, default=3, help="examples shown per direction")
    p.add_argument("--iou-threshold", type=float, default=0.5,
                   help="left column: IoU < t; right column: IoU >= t (negative: no condition)")



def losses_by_mob_arguments(p, default_config):
    add_figure_arguments(p, dataset=None, output="output/figures/losses_by_mob.png",
                         num_images=100, config_file="",
                         config_help="the trained model's config (MODEL.WEIGHTS: its weights)")
    p.add_argument("--batch-size", type=int, default=4, help="images per forward pass")
    p.add_argument("--bins", type=int, default=10, help="MOB bins over [0, 1]")
    p.add_argument("--pos-iou", type=float, nargs=2, default=(0.5, 0.7),
                   help="positives: best IoU in [a, b]")
    p.add_argument("--neg-iou", type=float, nargs=2, default=(0.3, 0.5),
                   help="negatives: best IoU in [a, b)")


#: name -> (help, add_arguments(parser, default_config)); the figures are
#: ``mayolact.analysis.figures.FIGURES``.
FIGURE_OPTIONS = {
    "mob-histogram": ("Figure 3a: MOB ratios |M| / |B| of the ground truths",
                      mob_histogram_arguments),
    "iou-vs-maiou": ("Figure 3c: IoU vs maIoU of every (GT, anchor) pair with IoU > 0",
                     iou_vs_maiou_arguments),
    "anchor-disagreement": ("Figure 1: the anchors on which IoU and maIoU disagree most",
                            anchor_disagreement_arguments),
    "losses-by-mob": ("Figure 2: a trained model's per-anchor losses by the anchors' MOB ratio",
                      losses_by_mob_arguments),
}


def build_parser(default_config: str, description: str = "") -> argparse.ArgumentParser:
    """One sub-command per figure; ``default_config`` gives the anchors of the figures without a
    model (e.g. ``configs/COCO-InstanceSegmentation/Base-YOLACT.yaml``)."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = parser.add_subparsers(dest="figure", required=True, metavar="FIGURE")
    for name, (text, add_arguments) in FIGURE_OPTIONS.items():
        figure = sub.add_parser(name, help=text, description=text,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        add_arguments(figure, default_config)
    return parser


def main(argv=None):
    """Run one figure; returns its numbers (see ``mayolact.analysis.figures``)."""
    # Parsed before torch, Detectron2 or matplotlib is imported: --help answers at once.
    args = build_parser(DEFAULT_CONFIG, __doc__.split("\n")[0]).parse_args(argv)
    import matplotlib

    from mayolact.analysis.figures import run_figure
    from mayolact.utils.logger import setup_logging

    matplotlib.use("Agg")  # files only, no display
    setup_logging(with_detectron2=True)  # Detectron2's and the project's lines in one format
    return run_figure(args)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (ValueError, FileNotFoundError) as e:  # ConfigError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
