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

Exit status: 0 on success, 2 when an input is missing or malformed (the message names the file and
what is wrong).
"""

import argparse
import logging
import math
import os
import sys
import tempfile


# The evaluation modules (torch, Detectron2) are imported after parsing: --help needs none.

logger = logging.getLogger("mayolact.evaluate")


class InputError(ValueError):
    """A missing or malformed input; reported as ``error: <message>`` with exit status 2."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="COCO AP and optimal LRP of a saved COCO results json, without a model."
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
    parser.add_argument("--output", help="write the metrics here as json (atomically)")
    parser.add_argument(
        "--quiet", action="store_true", help="no per-class tables, no COCO printout"
    )
    args = parser.parse_args(argv)
    from mayolact.evaluation import COCO_BACKENDS, SUPPORTED_TASKS

    for option, values, allowed in (("--tasks", args.tasks or (), SUPPORTED_TASKS),
                                    ("--backend", [args.backend], COCO_BACKENDS)):
        bad = [v for v in values if v not in allowed]
        if bad:
            parser.error(f"argument {option}: invalid choice {bad[0]!r} (choose from "
                         f"{', '.join(allowed)})")
    return args


def gt_json_of_dataset(name: str, work_dir: str) -> str:
    """The COCO json of a registered dataset (converted into ``work_dir`` when it has none)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets.coco import convert_to_coco_json

    if name not in DatasetCatalog.list():
        close = [n for n in DatasetCatalog.list() if name.split("_")[0] in n][:10]
        raise InputError(
            f"dataset {name!r} is not registered" + (f" (similar: {close})" if close else "")
        )
    meta = MetadataCatalog.get(name)
    json_file = getattr(meta, "json_file", None)
    if json_file:
        return json_file
    path = os.path.join(work_dir, f"{name}_coco_format.json")
    convert_to_coco_json(name, path, allow_cached=False)
    return path


def _finite_or_none(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    return obj


def evaluate(args) -> dict:
    """Run the evaluation described by ``args``; returns ``{task: {metric: value}}`` (x100)."""
    from detectron2.utils.logger import create_small_table

    from mayolact.evaluation import (
        coco_metrics,
        compute_olrp,
        format_lrp_table,
        load_coco_gt,
        lrp_results_dict,
        read_coco_results,
        resolve_coco_backend,
        run_coco_eval,
        validate_coco_results,
        write_json_atomic,
    )

    with tempfile.TemporaryDirectory() as work_dir:
        gt_json = args.gt if args.gt else gt_json_of_dataset(args.dataset, work_dir)
        try:
            coco_gt = load_coco_gt(gt_json, "pycocotools")
            backend = resolve_coco_backend(args.backend)
            ap_gt = coco_gt if backend == "pycocotools" else load_coco_gt(gt_json, backend)
        except FileNotFoundError as e:
            raise InputError(str(e)) from e
        except ValueError as e:
            raise InputError(str(e)) from e
    if "annotations" not in coco_gt.dataset:
        raise InputError(f"{gt_json}: has no 'annotations' (a test-set json cannot be evaluated)")
    try:
        results = read_coco_results(args.results)
        tasks = validate_coco_results(results, coco_gt, args.tasks, source=args.results)
    except (FileNotFoundError, ValueError) as e:
        raise InputError(str(e)) from e
    if not results:
        logger.warning(
            f"{args.results} holds no detections: AP is NaN and oLRP is 100 for every class"
        )

    class_names = [c["name"] for c in coco_gt.loadCats(sorted(coco_gt.getCatIds()))]
    verbose = not args.quiet
    metrics = {}
    for task in tasks:
        if verbose:
            print(f"\n========== {task}: COCO AP ({backend}) ==========")
        coco_eval = (
            run_coco_eval(ap_gt, results, task, max_dets_per_image=args.max_dets, verbose=verbose)
            if results
            else None
        )
        res = coco_metrics(coco_eval, task, class_names)
        if not args.no_lrp:
            lrp = compute_olrp(
                coco_gt, results, task, tau=args.tau, max_dets_per_image=args.max_dets
            )
            if verbose:
                print(f"\n========== {task}: optimal LRP (tau={args.tau}, x100, lower is better)")
                print(format_lrp_table(lrp, class_names))
            res.update(lrp_results_dict(lrp, class_names))
        metrics[task] = res
        summary = {k: v for k, v in res.items() if "-" not in k}
        print(f"\n{task} ({args.results}):\n" + create_small_table(summary))
    if args.output:
        # NaN (e.g. AP of a class without GT) is written as null: strict json.
        write_json_atomic(args.output, _finite_or_none(metrics), indent=2)
        print(f"\nmetrics written to {args.output}")
    return metrics


def main(argv=None) -> int:
    args = parse_args(argv)
    from mayolact.utils.logger import setup_logging

    setup_logging(with_detectron2=True)
    try:
        evaluate(args)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
