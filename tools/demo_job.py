#!/usr/bin/env python
"""The main job (``make demo``): train, evaluate and draw maYOLACT on the built-in shapes set.

1. trains ``configs/shapes/mayolact_shapes_demo.yaml`` (a CPU-sized maYOLACT: ATSS w. maIoU, CARAFE
   FPN, DCNv2, two anchors per location, cosine schedule) from scratch on ``mayolact_shapes_train``,
   logging losses, speed and ETA;
2. evaluates on ``mayolact_shapes_val`` with COCOEvaluator (bbox and segm AP) and oLRP, logging the
   tables (console and ``log.txt``) and writing ``demo_summary.json`` beside Detectron2's
   per-iteration ``metrics.json``;
3. draws the validation predictions with Detectron2's Visualizer into ``<output>/vis/``.

Everything lands in ``--output``. Extra arguments are config overrides. The job trains afresh each
time (a stopped run is not resumed: run it again).
"""
import argparse
import os
import sys

# mayolact, torch and Detectron2 are imported in main(): --help needs none of them.

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(REPO, "configs", "shapes", "mayolact_shapes_demo.yaml")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config-file", default=DEFAULT_CONFIG, help="config to train")
    p.add_argument("--output", default="output/demo", help="output folder")
    p.add_argument("--num-vis", type=int, default=12, help="validation images to draw")
    p.add_argument("--confidence-threshold", type=float, default=0.3,
                   help="minimum score of the drawn instances")
    p.add_argument("--eval-only", action="store_true",
                   help="skip training; use MODEL.WEIGHTS or the last run's model_final.pth")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides (KEY VALUE ...)")
    args = p.parse_args(argv)
    from mayolact.engine.demo_job import run_demo_job

    return run_demo_job(args)


if __name__ == "__main__":
    sys.exit(main())
