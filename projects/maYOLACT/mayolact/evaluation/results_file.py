"""COCO AP and optimal LRP of a saved COCO results json, without a model (``tools/evaluate.py``)."""
import itertools
import logging
import os
import tempfile
from typing import Dict, Optional, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.coco import convert_to_coco_json
from detectron2.utils.logger import create_small_table
from tabulate import tabulate

from mayolact.data.datasets import unregistered_message
from mayolact.data.validation import check_coco_json
from mayolact.utils.events import finite_or_none
from mayolact.utils.file_io import write_json_atomic

from .coco import (
    COCO_BACKENDS,
    SUPPORTED_TASKS,
    coco_metrics,
    load_coco_gt,
    read_coco_results,
    resolve_coco_backend,
    run_coco_eval,
    validate_coco_results,
)
from .lrp import compute_olrp, format_lrp_table, lrp_results_dict
from .mob_ranges import (
    format_per_class_range_table,
    format_range_table,
    gt_mob_ratios,
    mob_range_metrics,
    parse_mob_edges,
    range_results_dict,
    results_have_masks,
)

__all__ = ["InputError", "evaluate_results_file", "format_per_category_ap", "gt_json_of_dataset"]

logger = logging.getLogger(__name__)


class InputError(ValueError):
    """A missing or malformed input of :func:`evaluate_results_file`."""


def gt_json_of_dataset(name: str, work_dir: str) -> str:
    """The COCO json of a registered dataset (converted into ``work_dir`` when it has none)."""
    if name not in DatasetCatalog.list():
        raise InputError(unregistered_message(
            name, "for a dataset of your own, give its COCO json with --gt instead of --dataset"))
    meta = MetadataCatalog.get(name)
    json_file = getattr(meta, "json_file", None)
    if json_file:
        return json_file
    path = os.path.join(work_dir, f"{name}_coco_format.json")
    convert_to_coco_json(name, path, allow_cached=False)
    return path


def format_per_category_ap(metrics: Dict[str, float], task: str) -> str:
    """The per-category AP table Detectron2's ``COCOEvaluator`` logs (3 pairs of columns), from
    the "AP-<class>" entries of a task's metrics."""
    pairs = [(k[len("AP-"):], v) for k, v in metrics.items()
             if k.startswith("AP-") and not k.startswith("AP-mob[")]
    n_cols = min(6, len(pairs) * 2)
    flat = list(itertools.chain(*pairs))
    table = tabulate(
        itertools.zip_longest(*[flat[i::n_cols] for i in range(n_cols)]),
        tablefmt="pipe", floatfmt=".3f", headers=["category", "AP"] * (n_cols // 2),
        numalign="left",
    )
    return f"Per-category {task} AP: \n{table}"


def evaluate_results_file(
    results_file: str,
    *,
    dataset: Optional[str] = None,
    gt: Optional[str] = None,
    tasks: Optional[Sequence[str]] = None,
    backend: str = "auto",
    tau: float = 0.5,
    lrp: bool = True,
    max_dets: int = 100,
    mob_edges: Sequence[float] = (),
    output: Optional[str] = None,
    verbose: bool = True,
) -> Dict[str, Dict[str, float]]:
    """COCO AP (and oLRP) of a saved COCO results json against a dataset's ground truth.

    Args:
        results_file: a json list of COCO results (what ``COCOEvaluator`` writes).
        dataset: a registered dataset name; or
        gt: a COCO instances json.
        tasks: "bbox" and/or "segm" (default: bbox, and segm when the results have masks).
        backend: COCO AP backend (:data:`COCO_BACKENDS`).
        tau: IoU threshold of LRP's true positives.
        lrp: also compute optimal LRP.
        max_dets: detections per image (COCO: 100).
        mob_edges: edges of GT mask-over-box ranges; non-empty adds AP / AP50 / AP75 per range
            (:mod:`mayolact.evaluation.mob_ranges`; needs masks in the results).
        output: write the metrics here as strict json (NaN as null), atomically.
        verbose: print the COCO printout and the per-class tables.

    Returns:
        ``{task: {metric: value}}``, x100.

    Raises:
        InputError: a missing or malformed input, naming the file and what is wrong.
    """
    if (dataset is None) == (gt is None):
        raise InputError("give exactly one ground truth: a dataset name or a COCO json")
    for option, values, allowed in (("tasks", tasks or (), SUPPORTED_TASKS),
                                    ("backend", [backend], COCO_BACKENDS)):
        bad = [v for v in values if v not in allowed]
        if bad:
            raise InputError(f"{option}: invalid choice {bad[0]!r} (choose from "
                             f"{', '.join(allowed)})")
    try:
        parse_mob_edges(mob_edges, "--mob-ranges")
    except ValueError as e:
        raise InputError(str(e)) from e
    with tempfile.TemporaryDirectory() as work_dir:
        gt_json = gt if gt else gt_json_of_dataset(dataset, work_dir)
        try:
            # The ground truth too, before either backend sees it (a bad RLE hangs mask.iou).
            check_coco_json(gt_json, for_evaluation=True)
            coco_gt = load_coco_gt(gt_json, "pycocotools")
            backend = resolve_coco_backend(backend)
            ap_gt = coco_gt if backend == "pycocotools" else load_coco_gt(gt_json, backend)
        except FileNotFoundError as e:
            raise InputError(str(e)) from e
        except ValueError as e:
            raise InputError(str(e)) from e
    if "annotations" not in coco_gt.dataset:
        raise InputError(f"{gt_json}: has no 'annotations' (a test-set json cannot be evaluated)")
    try:
        results = read_coco_results(results_file)
        tasks = validate_coco_results(results, coco_gt, tasks, source=results_file)
    except (FileNotFoundError, ValueError) as e:
        raise InputError(str(e)) from e
    if not results:
        logger.warning(
            f"{results_file} holds no detections: AP is NaN and oLRP is 100 for every class"
        )
    if mob_edges and results and not results_have_masks(results):
        raise InputError(
            f"{results_file}: AP by MOB range (--mob-ranges) needs a mask ('segmentation') in "
            "every entry: a detection's mask-over-box ratio is its mask's"
        )
    gt_mob = gt_mob_ratios(coco_gt) if mob_edges and results else None

    class_names = [c["name"] for c in coco_gt.loadCats(sorted(coco_gt.getCatIds()))]
    metrics = {}
    for task in tasks:
        if verbose:
            print(f"\n========== {task}: COCO AP ({backend}) ==========")
        coco_eval = (
            run_coco_eval(ap_gt, results, task, max_dets_per_image=max_dets, verbose=verbose)
            if results
            else None
        )
        res = coco_metrics(coco_eval, task, class_names)
        if verbose:
            print(format_per_category_ap(res, task))
        if gt_mob is not None:
            by_mob = mob_range_metrics(coco_gt, results, task, mob_edges,
                                       max_dets_per_image=max_dets, gt_ratios=gt_mob)
            print(f"\n{task}: AP by GT mask-over-box ratio (COCO's area-range rules)\n"
                  + format_range_table(by_mob))
            if verbose:
                print(f"Per-category {task} AP by MOB range: \n"
                      + format_per_class_range_table(by_mob, class_names))
            res.update(range_results_dict(by_mob))
        if lrp:
            olrp = compute_olrp(
                coco_gt, results, task, tau=tau, max_dets_per_image=max_dets
            )
            if verbose:
                print(f"\n========== {task}: optimal LRP (tau={tau}, x100, lower is better)")
                print(format_lrp_table(olrp, class_names))
            res.update(lrp_results_dict(olrp, class_names))
        metrics[task] = res
        summary = {k: v for k, v in res.items() if "-" not in k}  # per class / range: above
        print(f"\n{task} ({results_file}):\n" + create_small_table(summary))
    if output:
        # NaN (e.g. AP of a class without GT) is written as null: strict json.
        write_json_atomic(output, finite_or_none(metrics), indent=2)
        print(f"\nmetrics written to {output}")
    return metrics
