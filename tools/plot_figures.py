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
import os
import sys

from mayolact.analysis.figures import build_parser, run_figure

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "configs", "COCO-InstanceSegmentation", "Base-YOLACT.yaml")


def main(argv=None):
    """Run one figure; returns its numbers (see ``mayolact.analysis.figures``)."""
    # Parsed before torch, Detectron2 or matplotlib is imported: --help answers at once.
    args = build_parser(DEFAULT_CONFIG, __doc__.split("\n")[0]).parse_args(argv)
    import matplotlib

    from mayolact.logger import setup_logging

    matplotlib.use("Agg")  # files only, no display
    setup_logging(with_detectron2=True)  # Detectron2's and the project's lines in one format
    return run_figure(args)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (ValueError, FileNotFoundError) as e:  # ConfigError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
