#!/usr/bin/env python
"""Assigner study (Table 2 on your data): every assigner trained with one schedule and the same
seeds, compared in pairs.

Trains YOLACT with the fixed IoU assigner and ATSS with IoU, GIoU, DIoU and maIoU, each for the
seeds 0 .. ``--seeds``-1, with the same model, data and schedule (a base config, by default the
CPU-sized shapes config), evaluates each on the test set (COCO AP, oLRP and AP by GT
mask-over-box range, bbox and segm) and writes into ``--output``:

* ``<assigner>_seed<s>/``: the run (log, checkpoint) and its ``result.json``, written last;
* ``results.csv``: one row per completed run;
* ``summary.md``, ``summary.csv``, ``summary.json``: mean and standard deviation per assigner,
  mask AP by MOB range, and the paired differences (maIoU - IoU, IoU - fixed IoU, ...) with 95%
  confidence intervals over the seeds and the seeds a +1 AP difference would need
  (``paired.csv``);
* ``mask_ap.png``: mask AP by MOB range per assigner, and the paired differences.

Paired: for one seed every assigner starts from the same initial weights (the tensors the models
share) and sees the same images in the same order with the same augmentations (deterministic mode,
``SOLVER.YOLACT.DETERMINISTIC``). Resumable: run the same command again after a kill (or with
more ``--seeds``); completed runs (those with ``result.json``) are never run again, a run that was
cut short starts afresh. The rows are data: ``configs/rows/compare_assigners.yaml`` (with each
row's baseline) over ``configs/rows/assigners.yaml``.

Example::

    python tools/compare_assigners.py --seeds 5 --assigners atss_iou atss_maiou \\
        --output output/assigners
    python tools/compare_assigners.py --seeds 5 --output output/assigners   # then the other rows

Exit status: 0 when done; 2 for a bad config or option, or a folder holding another study's runs.
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
    p.add_argument("--seeds", type=int, default=3, help="seeds per assigner: 0 .. SEEDS-1")
    p.add_argument("--output", default="output/compare_assigners",
                   help="folder of the runs, the tables and the figure")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: write the tables and the figure of the completed runs")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides for every run")
    args = p.parse_args(argv)
    from mayolact.analysis.assigner_study import run_study

    return run_study(args)


if __name__ == "__main__":
    sys.exit(main())
