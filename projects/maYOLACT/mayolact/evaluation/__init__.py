"""Evaluation: COCO AP (pycocotools or faster-coco-eval) and optimal LRP, for boxes and masks."""

from collections import OrderedDict
from collections.abc import Mapping

from detectron2.evaluation import DatasetEvaluators
from detectron2.utils.comm import is_main_process

from .coco import (
    COCO_BACKENDS,
    SUPPORTED_TASKS,
    MaYOLACTCOCOEvaluator,
    check_tasks,
    coco_metrics,
    faster_coco_eval_available,
    infer_tasks,
    load_coco_gt,
    read_coco_results,
    resolve_coco_backend,
    run_coco_eval,
    to_dataset_category_ids,
    validate_coco_results,
    write_json_atomic,
)
from .lrp import (
    LRPEvaluator,
    LRPResult,
    compute_olrp,
    format_lrp_table,
    lrp_results_dict,
    olrp_from_matches,
)
from .mob_ranges import (
    DEFAULT_MOB_EDGES,
    RangeCOCOeval,
    RangeResult,
    evaluate_ranges,
    gt_mob_ratios,
    mob_range_metrics,
    parse_mob_edges,
    range_results_dict,
)

__all__ = [
    "COCO_BACKENDS",
    "DEFAULT_MOB_EDGES",
    "RangeCOCOeval",
    "RangeResult",
    "evaluate_ranges",
    "gt_mob_ratios",
    "mob_range_metrics",
    "parse_mob_edges",
    "range_results_dict",
    "SUPPORTED_TASKS",
    "MaYOLACTCOCOEvaluator",
    "LRPEvaluator",
    "LRPResult",
    "MergingDatasetEvaluators",
    "build_mayolact_evaluator",
    "check_tasks",
    "coco_metrics",
    "compute_olrp",
    "faster_coco_eval_available",
    "format_lrp_table",
    "infer_tasks",
    "load_coco_gt",
    "lrp_results_dict",
    "olrp_from_matches",
    "read_coco_results",
    "resolve_coco_backend",
    "run_coco_eval",
    "to_dataset_category_ids",
    "validate_coco_results",
    "write_json_atomic",
]


class MergingDatasetEvaluators(DatasetEvaluators):
    """``DatasetEvaluators`` whose evaluators may report the same task: their metrics are merged.

    Detectron2's ``DatasetEvaluators`` refuses two evaluators returning the same top-level key; here
    COCO AP and LRP both report ``"bbox"`` and ``"segm"``, so ``results["segm"]`` holds "AP", ...,
    "oLRP", .... Only a metric name produced twice for the same task is an error.
    """

    def evaluate(self):
        results = OrderedDict()
        for evaluator in self._evaluators:
            result = evaluator.evaluate()
            if not is_main_process() or result is None:
                continue
            for task, metrics in result.items():
                if task not in results:
                    results[task] = (
                        OrderedDict(metrics) if isinstance(metrics, Mapping) else metrics
                    )
                    continue
                if not (isinstance(results[task], Mapping) and isinstance(metrics, Mapping)):
                    raise ValueError(
                        f"Two evaluators produce results for {task!r} that cannot be merged"
                    )
                clash = sorted(set(results[task]) & set(metrics))
                if clash:
                    raise ValueError(
                        f"Two evaluators produce the same metrics for {task!r}: {clash}"
                    )
                results[task].update(metrics)
        return results


def build_mayolact_evaluator(cfg, dataset_name: str, output_dir=None) -> MergingDatasetEvaluators:
    """COCO AP (+ optimal LRP if ``TEST.YOLACT.LRP``) for boxes, and masks if ``MODEL.MASK_ON``.

    Config keys: ``TEST.YOLACT.COCO_BACKEND`` ("auto", "pycocotools", "faster_coco_eval"),
    ``TEST.YOLACT.LRP``, ``TEST.YOLACT.LRP_TAU``, ``TEST.YOLACT.MOB_RANGES`` (AP by GT
    mask-over-box range), ``TEST.DETECTIONS_PER_IMAGE`` (COCO's limit).

    Args:
        cfg: a config with maYOLACT's keys (``add_mayolact_config``).
        dataset_name: a registered test dataset.
        output_dir: where the predictions and the LRP per-class json are written (optional).

    Returns:
        A :class:`MergingDatasetEvaluators` (a Detectron2 ``DatasetEvaluators``): the COCO
        evaluator, then the LRP evaluator, which reuses the COCO evaluator's ground truth and
        encoded outputs.
    """
    # What both evaluators must agree on.
    common = dict(
        tasks=("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",),
        distributed=True,
        output_dir=output_dir,
        max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
    )
    coco = MaYOLACTCOCOEvaluator(dataset_name, backend=cfg.TEST.YOLACT.COCO_BACKEND,
                                 mob_edges=cfg.TEST.YOLACT.MOB_RANGES, **common)
    evaluators = [coco]
    if cfg.TEST.YOLACT.LRP:
        evaluators.append(
            LRPEvaluator(dataset_name, tau=cfg.TEST.YOLACT.LRP_TAU, coco_evaluator=coco, **common)
        )
    return MergingDatasetEvaluators(evaluators)
