#!/usr/bin/env python
"""Cost of anchor assignment per batch, as in the paper's Table 3 (maIoU with and without Alg. 1).

For a COCO-like batch (default 8 images at 550 x 550: GT boxes and masks of the first images of
``coco_mini`` train, masks squash-resized with nearest interpolation, boxes scaled; random shapes
when coco_mini is absent), it times

1. building the integral images (per image, as the data loader does),
2. ``FixedIoUMatcher`` on YOLACT's anchors (19,248 at 550),
3. ``ATSSMatcher`` with IoU on the ATSS anchors (6,416 at 550),
4. ``ATSSMatcher`` with maIoU from the integral images (Alg. 1, candidates only),
   and, for reference, with the official code's full G x R maIoU matrix,
5. ``ATSSMatcher`` with brute-force maIoU (pixel counts from the masks, all pairs with IoU > 0,
   as the official assigner would without Alg. 1),

and prints a markdown table of the median time per batch over the repeats, with each row's ratio
to ATSS w. IoU. It also checks that all maIoU variants give the same assignment.

``--train-iteration`` times whole training iterations instead (the paper's Table 3 column
"training time per iteration"): the model of ``--config-file`` (default the quick ATSS-maIoU
config: slim R-50 at quarter width, 64-channel FPN and protonet; any other config and ``opts``
overrides work) is built once per assigner, switched by the assigner rows of
``configs/rows/assigners.yaml`` (``configs/rows/benchmark_assigner.yaml`` names the rows timed):

* fixed IoU thresholds with YOLACT's anchors (3 per location, sides 24..384, offset 0.5, as
  ``configs/quick_schedules/yolact_R_50_FPN_quick_fixediou.yaml``),
* ATSS with IoU, ATSS with maIoU (Alg. 1, integral images from the mapper),
* ATSS with brute-force maIoU (``MODEL.YOLACT.MAIOU_BRUTEFORCE True``),

and each runs forward, backward and the optimizer step (the project's optimizer, gradient clipping
included) on the SAME batch of ``--batch`` images mapped once at ``--size`` (default 550) by
``YOLACTDatasetMapper(cfg, is_train=True)`` (random augmentations, fixed seed) from
``coco_mini_train``, or from ``mayolact_shapes_train`` (with 8 classes) when coco_mini is absent.
Models start from the same random weights (no checkpoint is loaded). After ``--warmup``
iterations per row, the iterations of all rows are interleaved (so that load changes on a shared
machine hit every row alike) and the median over ``--iters`` (``--bruteforce-iters`` for the slow
brute-force row) is printed with the ratio to ATSS w. IoU, the time spent in the anchor
assignment (``label_anchors``) and the paper's numbers (full R-50 at 550, batch 8, V100).

Examples::

    python tools/benchmark_assigner.py --repeats 20 --device cpu --images 8 --size 550
    python tools/benchmark_assigner.py --train-iteration --iters 5 --bruteforce-iters 2
    python tools/benchmark_assigner.py --train-iteration --device cuda \
        --config-file configs/COCO-InstanceSegmentation/yolact_R_50_FPN_550_atss_maiou.yaml
"""

import argparse
from pathlib import Path

# mayolact, torch and Detectron2 are imported in main(): --help needs none of them.

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TRAIN_CONFIG = (REPO / "configs" / "quick_schedules"
                        / "yolact_R_50_FPN_quick_atss_maiou.yaml")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--repeats", type=int, default=10, help="timed repeats per row (median)")
    p.add_argument("--bruteforce-repeats", type=int, default=2,
                   help="timed repeats of the (slow) brute-force row")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--images", "--batch", dest="images", type=int, default=8,
                   help="images per batch")
    p.add_argument("--size", type=int, default=550, help="square input size S")
    p.add_argument("--coco-mini", default=None,
                   help="coco_mini folder; None: the package's (mayolact.data.datasets."
                        "coco_mini_root)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: leave as is)")
    t = p.add_argument_group("--train-iteration (Table 3, training time per iteration)")
    t.add_argument("--train-iteration", action="store_true",
                   help="time forward + backward + optimizer step of a model with each assigner")
    t.add_argument("--config-file", default=str(DEFAULT_TRAIN_CONFIG),
                   help="base config: the quick ATSS-maIoU config by default")
    t.add_argument("--iters", type=int, default=5, help="timed iterations per row (median)")
    t.add_argument("--bruteforce-iters", type=int, default=2,
                   help="timed iterations of the (slow) brute-force row")
    t.add_argument("--warmup", type=int, default=1, help="untimed iterations per row first")
    t.add_argument("--rows", nargs="+", default=None,
                   help="assigners to time, rows of configs/rows/benchmark_assigner.yaml; "
                        "None: all")
    t.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                   help="config overrides KEY VALUE ... (after the options)")
    args = p.parse_args(argv)
    for name in ("repeats", "bruteforce_repeats", "images", "size", "iters", "bruteforce_iters"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    return args


def main(argv=None):
    args = parse_args(argv)
    import torch

    from mayolact.analysis.benchmark_assigner import (
        matcher_cost_benchmark,
        train_iteration_benchmark,
    )

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.train_iteration:
        return train_iteration_benchmark(args)
    return matcher_cost_benchmark(args)


if __name__ == "__main__":
    main()
