#!/usr/bin/env python
"""Peak memory of ``YOLACTPredictor`` on large images, with and without
``TEST.YOLACT.MAX_IMAGE_PIXELS`` (the bound on the size the outputs are computed at).

Each row runs in a fresh process: the model of ``--config-file`` (default the quick config, a
quarter-width R-50, random weights) with the score
threshold at 0 so that every image gets the full ``TEST.DETECTIONS_PER_IMAGE`` detections, one
random uint8 image; it prints the peak resident memory (``VmHWM``) above the process's level
after a warm-up on a small image, and the time. The masks dominate: ``pred_masks`` (N, H, W)
bool plus the float (N, H, W) masks they are thresholded from.

Usage::

    OMP_NUM_THREADS=1 python tools/benchmark_predictor_memory.py
"""
import argparse
import os

# mayolact is imported in main(): --help needs nothing heavy.

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config-file", default=os.path.join(
        REPO, "configs", "quick_schedules", "yolact_R_50_FPN_quick_atss_maiou.yaml"),
        help="the model (random weights) whose predictor is measured")
    args = parser.parse_args(argv)
    from mayolact.analysis.benchmark_predictor_memory import run_benchmark

    run_benchmark(args.config_file)


if __name__ == "__main__":
    main()
