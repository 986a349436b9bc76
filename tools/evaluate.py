#!/usr/bin/env python
"""Evaluate a saved COCO results json (COCO AP and optimal LRP) without building a model.

The results file is what ``COCOEvaluator`` writes (``coco_instances_results.json``): a json list of
``{"image_id", "category_id" (dataset id), "score", "bbox" [x, y, w, h], "segmentation" (RLE)}``.
The ground truth is a registered dataset (``--dataset``; importing ``mayolact`` registers the
project's datasets) or a COCO instances json (``--gt``).

Examples::

    python tools/evaluate.py output/inference/coco_2017_val/coco_instances_results.json \\
        --dataset coco_2017_val
    python tools/evaluate.py results.json --gt annotations/instances_val2017.json \\
        --tasks segm --backend pycocotools --output metrics.json
    python tools/evaluate.py results.json --dataset coco_2017_val --mob-ranges   # AP by shape

Exit status: 0 on success, 2 when an input is missing or malformed (the message names the file and
what is wrong).
"""

import argparse
import sys

# mayolact, torch and Detectron2 are imported in main(): --help needs none of them.


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="COCO AP and optimal LRP of a saved COCO results json, without a model.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("results", help="COCO results json (e.g. coco_instances_results.json)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--dataset", help="registered dataset name (e.g. coco_2017_val, coco_mini_val)"
    )
    source.add_argument("--gt", help="COCO ground-truth instances json")
    parser.add_argument(
        "--tasks",
        nargs="+",
        metavar="TASK",
        help="bbox and/or segm; default: bbox, and segm if any result has a mask (then all must)",
    )
    parser.add_argument(
        "--backend", default="auto",
        help="COCO AP backend: auto (faster_coco_eval when installed), pycocotools or "
             "faster_coco_eval",
    )
    parser.add_argument(
        "--tau", type=float, default=0.5, help="IoU threshold of LRP's true positives"
    )
    parser.add_argument("--no-lrp", action="store_true", help="report COCO AP only")
    parser.add_argument(
        "--max-dets", type=int, default=100, help="detections per image (COCO: 100)"
    )
    parser.add_argument(
        "--mob-ranges", nargs="*", type=float, metavar="EDGE",
        help="also AP / AP50 / AP75 per GT mask-over-box ratio range, as COCO's APs/APm/APl; "
             "edges (default 0 0.4 0.6 0.8 1: [0, 0.4], ..., [0.8, 1]); needs masks in the results",
    )
    parser.add_argument("--output", help="write the metrics here as json (atomically)")
    parser.add_argument(
        "--quiet", action="store_true", help="no per-class tables, no COCO printout"
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from mayolact.evaluation.mob_ranges import DEFAULT_MOB_EDGES
    from mayolact.evaluation.results_file import InputError, evaluate_results_file
    from mayolact.utils.logger import setup_logging

    setup_logging(with_detectron2=True)
    mob_edges = () if args.mob_ranges is None else (args.mob_ranges or DEFAULT_MOB_EDGES)
    try:
        evaluate_results_file(
            args.results, dataset=args.dataset, gt=args.gt, tasks=args.tasks,
            backend=args.backend, tau=args.tau, lrp=not args.no_lrp, max_dets=args.max_dets,
            mob_edges=mob_edges, output=args.output, verbose=not args.quiet)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
