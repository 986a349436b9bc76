#!/usr/bin/env python
"""Assigner study (Table 2 on your data): train every assigner with one schedule, several seeds.

Trains YOLACT with the fixed IoU assigner and ATSS with IoU, GIoU, DIoU and maIoU, each for
``--seeds`` seeds, with the same model, data and schedule (a base config, by default the CPU-sized
shapes config), evaluates each on the test set with COCO AP (bbox and segm) and oLRP, and writes:

* ``<output>/results.csv``: one row per run;
* ``<output>/summary.md`` and ``summary.csv``: mean and standard deviation of mask AP, AP50, AP75,
  APs, APm, APl and oLRP per assigner;
* ``<output>/mask_ap.png``: a bar chart of mask AP (mean +- std).

The rows are data: ``configs/rows/compare_assigners.yaml`` lists them and each is an assigner row of
``configs/rows/assigners.yaml`` merged over the base config (ATSS: the base's anchors, mask-loss
weight 8; fixed IoU: YOLACT's 3 anchors per location with the 550 geometry at every input size, as
every fixed-IoU config, and weight 6.125).

Example::

    python tools/compare_assigners.py --seeds 3 --output output/assigners SOLVER.MAX_ITER 600
"""
import argparse
import os
import sys

# mayolact, torch, Detectron2 and matplotlib are imported in main(): --help needs none of them.

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_BASE = os.path.join(REPO, "configs", "shapes", "yolact_shapes_study.yaml")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config-file", default=DEFAULT_BASE, help="base config (any assigner)")
    p.add_argument("--assigners", nargs="+", default=None,
                   help="rows of configs/rows/compare_assigners.yaml to run (default: all)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per assigner")
    p.add_argument("--output", default="output/compare_assigners",
                   help="folder of the runs, the tables and the chart")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides for every run")
    args = p.parse_args(argv)
    from mayolact.analysis.assigner_study import run_study

    return run_study(args)


if __name__ == "__main__":
    sys.exit(main())
