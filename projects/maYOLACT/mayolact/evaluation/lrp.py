"""Optimal Localisation Recall Precision (oLRP) for boxes and masks, as a Detectron2 evaluator.

LRP (Oksuz et al., "One Metric to Measure them All: Localisation Recall Precision (LRP) for
Evaluating Visual Detection Tasks", TPAMI 2022, arXiv 2011.10772) of the detections that score at
least ``s``, at IoU threshold ``tau`` (0.5):

    LRP(s) = (sum_TP (1 - IoU) / (1 - tau) + N_FP + N_FN) / (N_TP + N_FP + N_FN)

Per class, oLRP is the minimum of LRP(s) over the detections' scores ``s``, reported with its
components at that threshold: localisation ``mean_TP(1 - IoU)``, FP rate ``N_FP / (N_TP + N_FP)``,
FN rate ``N_FN / N_GT``, and the threshold itself. moLRP and the mean components average over the
classes that have ground truth. Lower is better; values are reported x100, like COCO AP.

Matching is COCO's, done by pycocotools' ``COCOeval`` with ``iouThrs=[tau]``, one area range ("all")
and ``maxDets=[100]``: greedy by score, a detection is a TP when its IoU with a free ground truth is
``>= tau``, a detection matched to a crowd region is ignored (neither TP nor FP), crowd regions are
not ground truth (they are never FNs), and at most 100 detections per image and class are kept
(pycocotools applies its limit per image and category).

Edge cases (the same as the official LRP toolkit):

* a class without ground truth is excluded from every mean; its per-class values are NaN;
* a class with ground truth but no TP at any threshold (no detection at all, or only FPs) has
  oLRP = 1 (100), FN rate = 1, and NaN localisation, FP rate and threshold;
* at any threshold where N_TP = 0, LRP = (N_FP + N_GT) / (N_FP + N_GT) = 1; the localisation
  component is then undefined (NaN) and left out of the mean, like the other NaN components.

One deliberate difference from the official toolkit: detections with equal scores are one
threshold (a score threshold keeps all of them or none), where the toolkit also evaluates the
positions inside a run of equal scores. Both agree whenever the scores are distinct.
"""

import contextlib
import io
import itertools
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import detectron2.utils.comm as comm
import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.data.datasets.coco import convert_to_coco_json
from detectron2.evaluation import DatasetEvaluator
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.utils.logger import create_small_table
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tabulate import tabulate

from .coco import (
    _results_for_task,
    check_tasks,
    infer_tasks,
    load_coco_gt,
    to_dataset_category_ids,
    write_json_atomic,
)

__all__ = [
    "LRPResult",
    "olrp_from_matches",
    "compute_olrp",
    "lrp_results_dict",
    "format_lrp_table",
    "LRPEvaluator",
]

logger = logging.getLogger(__name__)

# Names of the summary metrics in the result dict (values x100).
_SUMMARY_KEYS = ("oLRP", "oLRP_loc", "oLRP_FP", "oLRP_FN")
# IoUs this close to 1 are 1 computed in floating point (pycocotools gives 1 + 4e-16 or
# 1 - 2e-16 for a box equal to its ground truth); further above 1 is a bug upstream.
_IOU_ROUNDING = 1e-12


def _check_tau(tau: float) -> float:
    tau = float(tau)
    if not 0.0 < tau < 1.0:
        raise ValueError(f"LRP's IoU threshold tau must lie in (0, 1), got {tau}")
    return tau


def olrp_from_matches(scores, is_tp, ious, num_gt: int, tau: float = 0.5) -> Dict[str, float]:
    """Optimal LRP of one class from its matched detections (all images pooled).

    Vectorised: one sort and cumulative sums give LRP at every score threshold at once.

    Args:
        scores: (D,) detection scores (ignored detections already removed).
        is_tp: (D,) bool, True for true positives; the other detections are false positives.
        ious: (D,) IoU of each TP with its ground truth (read only where ``is_tp``).
        num_gt: number of (non-crowd) ground truths of the class.
        tau: the IoU threshold of a TP, in (0, 1).

    Returns:
        dict with ``olrp``, ``loc``, ``fp``, ``fn`` (fractions in [0, 1]), ``threshold`` (the lowest
        score kept), ``num_tp`` and ``num_fp`` at the optimum. All NaN (counts 0) when
        ``num_gt == 0``; see the module docstring for the other edge cases.

    Raises:
        ValueError: on mismatched shapes, a negative ``num_gt``, more TPs than ground truths, TP
            IoUs outside [tau, 1] (IoUs within a rounding error of 1 count as 1) or a ``tau``
            outside (0, 1).
    """
    tau = _check_tau(tau)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    is_tp = np.asarray(is_tp, dtype=bool).reshape(-1)
    ious = np.asarray(ious, dtype=np.float64).reshape(-1)
    if not (scores.shape == is_tp.shape == ious.shape):
        raise ValueError(
            f"scores, is_tp and ious must have the same length, got {scores.shape}, {is_tp.shape}, "
            f"{ious.shape}"
        )
    num_gt = int(num_gt)
    if num_gt < 0:
        raise ValueError(f"num_gt must be >= 0, got {num_gt}")
    total_tp = int(is_tp.sum())
    if total_tp > num_gt:
        raise ValueError(f"{total_tp} true positives for only {num_gt} ground truths")
    if total_tp and (np.any(ious[is_tp] < tau) or np.any(ious[is_tp] > 1 + _IOU_ROUNDING)):
        raise ValueError(f"IoUs of true positives must lie in [tau, 1] = [{tau}, 1]")
    ious = np.where(np.abs(ious - 1.0) <= _IOU_ROUNDING, 1.0, ious)

    nan = float("nan")
    if num_gt == 0:
        return dict(olrp=nan, loc=nan, fp=nan, fn=nan, threshold=nan, num_tp=0, num_fp=0)
    if total_tp == 0:
        # No TP at any threshold: LRP(s) = 1 everywhere (and for the empty detection set).
        return dict(olrp=1.0, loc=nan, fp=nan, fn=1.0, threshold=nan, num_tp=0, num_fp=0)

    order = np.argsort(-scores, kind="mergesort")
    s, tp = scores[order], is_tp[order]
    n_tp = np.cumsum(tp)
    n_fp = np.cumsum(~tp)
    loc = np.cumsum(np.where(tp, 1.0 - ious[order], 0.0))
    n_fn = num_gt - n_tp
    lrp = (loc / (1.0 - tau) + n_fp + n_fn) / (n_tp + n_fp + n_fn)
    # A score threshold keeps a whole run of equal scores: only the last position of a run counts.
    run_end = np.ones(len(s), dtype=bool)
    run_end[:-1] = s[1:] != s[:-1]
    lrp = np.where(run_end, lrp, np.inf)
    k = int(np.argmin(lrp))  # the first minimum: the highest such threshold
    tp_k, fp_k = int(n_tp[k]), int(n_fp[k])
    return dict(
        olrp=float(lrp[k]),
        loc=float(loc[k] / tp_k) if tp_k > 0 else nan,
        fp=float(fp_k / (tp_k + fp_k)),
        fn=float(n_fn[k] / num_gt),
        threshold=float(s[k]),
        num_tp=tp_k,
        num_fp=fp_k,
    )


@dataclass
class LRPResult:
    """Per-class oLRP of one task. Arrays have one entry per ground-truth category (K,), in
    ``category_ids`` order (sorted dataset ids); rates are fractions, NaN where undefined."""

    iou_type: str
    tau: float
    category_ids: np.ndarray  # (K,) int, dataset category ids
    num_gt: np.ndarray  # (K,) int, non-crowd ground truths
    olrp: np.ndarray  # (K,) float
    loc: np.ndarray  # (K,) float, mean 1 - IoU of the TPs at the optimum
    fp: np.ndarray  # (K,) float, N_FP / (N_TP + N_FP) at the optimum
    fn: np.ndarray  # (K,) float, N_FN / N_GT at the optimum
    threshold: np.ndarray  # (K,) float, LRP-optimal score threshold
    num_tp: np.ndarray  # (K,) int, at the optimum
    num_fp: np.ndarray  # (K,) int, at the optimum

    @property
    def valid(self) -> np.ndarray:
        """(K,) bool: classes with ground truth (the ones that are averaged)."""
        return self.num_gt > 0

    def summary(self) -> "OrderedDict[str, float]":
        """moLRP and its mean components (fractions): means over the classes with ground truth,
        each component over those where it is defined (not NaN). NaN when there is none."""

        def mean(x):
            x = x[self.valid]
            x = x[~np.isnan(x)]
            return float(x.mean()) if x.size else float("nan")

        return OrderedDict(
            zip(_SUMMARY_KEYS, (mean(self.olrp), mean(self.loc), mean(self.fp), mean(self.fn)))
        )

    def per_class(self, class_names: Optional[Sequence[str]] = None) -> List[dict]:
        """One json-friendly dict per class (fractions; NaN as None)."""
        names = _names(self, class_names)

        def f(x):
            return None if np.isnan(x) else float(x)

        return [
            dict(
                category_id=int(self.category_ids[k]),
                name=names[k],
                num_gt=int(self.num_gt[k]),
                oLRP=f(self.olrp[k]),
                oLRP_loc=f(self.loc[k]),
                oLRP_FP=f(self.fp[k]),
                oLRP_FN=f(self.fn[k]),
                threshold=f(self.threshold[k]),
                num_tp=int(self.num_tp[k]),
                num_fp=int(self.num_fp[k]),
            )
            for k in range(len(self.category_ids))
        ]


def _names(result: LRPResult, class_names: Optional[Sequence[str]]) -> List[str]:
    if class_names is not None and len(class_names) == len(result.category_ids):
        return [str(n) for n in class_names]
    return [str(int(c)) for c in result.category_ids]


class _MatchingCOCOeval(COCOeval):
    """pycocotools' COCOeval whose per-image records also hold the IoU of each matched pair.

    ``evaluateImg`` adds ``dtIoUs`` (T, D): the IoU of each detection with the ground truth it was
    matched to (0 when unmatched), read from ``self.ious`` (rows: detections by score, as in
    ``evaluateImg``; columns: ground truths in ``self._gts`` order).
    """

    def evaluateImg(self, imgId, catId, aRng, maxDet):
        record = super().evaluateImg(imgId, catId, aRng, maxDet)
        if record is None:
            return None
        dtm = np.asarray(record["dtMatches"])  # (T, D) matched gt id, 0 if none
        ious = self.ious[imgId, catId]
        if dtm.size == 0 or len(ious) == 0:
            record["dtIoUs"] = np.zeros(dtm.shape)
            return record
        gt_ids = np.asarray([g["id"] for g in self._gts[imgId, catId]])  # (G,) columns of ious
        ious = np.asarray(ious)[: dtm.shape[1]]  # (D, G)
        hit = dtm[:, :, None] == gt_ids[None, None, :]  # (T, D, G), at most one hit per row
        record["dtIoUs"] = np.where(hit, ious[None], 0.0).sum(axis=2)
        return record


def _empty_results_api(coco_gt: COCO) -> COCO:
    """A detection COCO api with no detections (pycocotools' loadRes refuses an empty list)."""
    api = COCO()
    api.dataset = {
        "images": list(coco_gt.dataset.get("images", [])),
        "categories": list(coco_gt.dataset.get("categories", [])),
        "annotations": [],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        api.createIndex()
    return api


def compute_olrp(
    coco_gt: COCO,
    coco_results: Sequence[dict],
    iou_type: str,
    *,
    tau: float = 0.5,
    max_dets_per_image: int = 100,
    img_ids: Optional[Sequence[int]] = None,
) -> LRPResult:
    """Per-class optimal LRP of COCO-format results.

    Args:
        coco_gt: pycocotools ``COCO`` with the ground truth.
        coco_results: result dicts with dataset "category_id"s (may be empty); not modified.
        iou_type: ``"bbox"`` or ``"segm"``.
        tau: the IoU threshold of a TP.
        max_dets_per_image: detections kept per image and class (highest scores), as COCO.
        img_ids: evaluate only these images (default: all images of ``coco_gt``).

    Returns:
        :class:`LRPResult` over every category of ``coco_gt``.
    """
    check_tasks([iou_type], "LRP")
    tau = _check_tau(tau)
    with contextlib.redirect_stdout(io.StringIO()):
        if len(coco_results):
            coco_dt = coco_gt.loadRes(_results_for_task(coco_results, iou_type))
        else:
            coco_dt = _empty_results_api(coco_gt)
        E = _MatchingCOCOeval(coco_gt, coco_dt, iou_type)
        p = E.params
        p.iouThrs = np.array([tau])
        p.maxDets = [int(max_dets_per_image)]
        p.areaRng = [[0.0, 1e5**2]]
        p.areaRngLbl = ["all"]
        if img_ids is not None:
            p.imgIds = list(img_ids)
        E.evaluate()

    cat_ids = np.asarray(E.params.catIds, dtype=np.int64)
    num_images = len(E.params.imgIds)
    stats = []
    num_gt = np.zeros(len(cat_ids), dtype=np.int64)
    for k in range(len(cat_ids)):
        records = [r for r in E.evalImgs[k * num_images : (k + 1) * num_images] if r is not None]
        if not records:
            stats.append(olrp_from_matches([], [], [], 0, tau))
            continue
        gt_ignore = np.concatenate([np.asarray(r["gtIgnore"]).reshape(-1) for r in records])
        num_gt[k] = int(np.count_nonzero(gt_ignore == 0))
        scores = np.concatenate([np.asarray(r["dtScores"], dtype=np.float64) for r in records])
        matched = np.concatenate([r["dtMatches"][0] for r in records]) > 0
        ignored = np.concatenate([r["dtIgnore"][0] for r in records]).astype(bool)
        ious = np.concatenate([r["dtIoUs"][0] for r in records])
        keep = ~ignored  # detections on crowd regions are neither TP nor FP
        stats.append(olrp_from_matches(scores[keep], matched[keep], ious[keep], num_gt[k], tau))

    def column(key, dtype=np.float64):
        return np.asarray([s[key] for s in stats], dtype=dtype)

    return LRPResult(
        iou_type=iou_type,
        tau=tau,
        category_ids=cat_ids,
        num_gt=num_gt,
        olrp=column("olrp"),
        loc=column("loc"),
        fp=column("fp"),
        fn=column("fn"),
        threshold=column("threshold"),
        num_tp=column("num_tp", np.int64),
        num_fp=column("num_fp", np.int64),
    )


def lrp_results_dict(result: LRPResult, class_names: Optional[Sequence[str]] = None):
    """The result dict of one task, x100 like COCO AP.

    Returns:
        OrderedDict: "oLRP" (moLRP), "oLRP_loc", "oLRP_FP", "oLRP_FN", then "oLRP-<class>" for every
        class (NaN for classes without ground truth).
    """
    out = OrderedDict((k, 100.0 * v) for k, v in result.summary().items())
    for name, value in zip(_names(result, class_names), result.olrp):
        out[f"oLRP-{name}"] = 100.0 * float(value)
    return out


def format_lrp_table(result: LRPResult, class_names: Optional[Sequence[str]] = None) -> str:
    """A per-class table (x100, but the threshold is a score): #GT, oLRP, components, threshold.

    Classes without ground truth are left out.
    """
    names = _names(result, class_names)
    rows = [
        (
            names[k],
            int(result.num_gt[k]),
            100 * result.olrp[k],
            100 * result.loc[k],
            100 * result.fp[k],
            100 * result.fn[k],
            result.threshold[k],
        )
        for k in np.flatnonzero(result.valid)
    ]
    return tabulate(
        rows,
        headers=["category", "#GT", "oLRP", "oLRP_loc", "oLRP_FP", "oLRP_FN", "threshold"],
        tablefmt="pipe",
        floatfmt=".3f",
        numalign="left",
    )


class LRPEvaluator(DatasetEvaluator):
    """Optimal LRP (oLRP, moLRP and components) of boxes and masks, at IoU threshold ``tau``.

    Its result dict has the form of ``COCOEvaluator``'s: ``{"bbox": {"oLRP", "oLRP_loc", "oLRP_FP",
    "oLRP_FN", "oLRP-<class>"...}, "segm": {...}}`` (x100, lower is better). Combine it with a COCO
    evaluator through :class:`mayolact.evaluation.MergingDatasetEvaluators`, which merges the two
    dicts per task. Predictions are gathered from every rank and evaluated on the main process.
    """

    def __init__(
        self,
        dataset_name: str,
        tasks: Optional[Sequence[str]] = None,
        distributed: bool = True,
        output_dir: Optional[str] = None,
        *,
        tau: float = 0.5,
        max_dets_per_image: int = 100,
        coco_evaluator=None,
        allow_cached_coco: bool = True,
    ):
        """
        Args:
            dataset_name: a registered dataset with a COCO ``json_file`` in its metadata, or one
                that Detectron2 can convert (then ``output_dir`` is needed, as for
                ``COCOEvaluator``).
            tasks: a subset of ``("bbox", "segm")``; ``None`` infers them from the predictions.
            distributed: gather predictions from all ranks and evaluate on the main one.
            output_dir: if set, the per-class results are written to ``lrp_results.json`` there.
            tau: the IoU threshold of a TP, in (0, 1).
            max_dets_per_image: detections kept per image (and class), as COCO.
            coco_evaluator: optional Detectron2 ``COCOEvaluator`` processing the same outputs just
                before this one (same ``DatasetEvaluators``): its ground truth and its encoded
                predictions (mask RLEs) are reused instead of being built a second time.
            allow_cached_coco: reuse a converted COCO json from an earlier run.
        """
        self._logger = logging.getLogger(__name__)
        self._tasks = check_tasks(tasks, "LRP") if tasks is not None else None
        self._tau = _check_tau(tau)
        if int(max_dets_per_image) < 1:
            raise ValueError(f"max_dets_per_image must be >= 1, got {max_dets_per_image}")
        self._max_dets = int(max_dets_per_image)
        self._distributed = distributed
        self._output_dir = output_dir
        self._source = coco_evaluator
        self._cpu_device = torch.device("cpu")
        self._metadata = MetadataCatalog.get(dataset_name)

        source_api = getattr(coco_evaluator, "_coco_api", None)
        if isinstance(source_api, COCO):
            self._coco_api = source_api
        else:
            if not hasattr(self._metadata, "json_file"):
                if output_dir is None:
                    raise ValueError(
                        f"LRPEvaluator: dataset '{dataset_name}' has no COCO json_file; give an "
                        "output_dir to convert it to COCO format"
                    )
                cache_path = os.path.join(output_dir, f"{dataset_name}_coco_format.json")
                self._metadata.json_file = cache_path
                convert_to_coco_json(dataset_name, cache_path, allow_cached=allow_cached_coco)
            self._coco_api = load_coco_gt(self._metadata.json_file, "pycocotools")
        self._do_evaluation = "annotations" in self._coco_api.dataset
        self._predictions = []
        self.last_results: Dict[str, LRPResult] = {}

    @property
    def tau(self) -> float:
        return self._tau

    def reset(self):
        self._predictions = []
        self.last_results = {}

    def _shared_predictions(self, expected_ids: List) -> Optional[List[dict]]:
        """The coco evaluator's entries for these inputs, if it has just processed them."""
        source = getattr(self._source, "_predictions", None)
        n = len(expected_ids)
        if source is None or n == 0 or len(source) < n:
            return None
        tail = source[len(source) - n :]
        if [p.get("image_id") for p in tail] != expected_ids or not all(
            "instances" in p for p in tail
        ):
            return None
        # Copies: the COCO evaluator rewrites its own dicts in place when it evaluates.
        return [
            {"image_id": p["image_id"], "instances": [dict(r) for r in p["instances"]]}
            for p in tail
        ]

    def process(self, inputs, outputs):
        """
        Args:
            inputs: the model inputs, dicts with "image_id".
            outputs: the model outputs, dicts with "instances" (``pred_boxes``, ``scores``,
                ``pred_classes`` and optionally ``pred_masks``).
        """
        pairs = [(i, o) for i, o in zip(inputs, outputs) if "instances" in o]
        shared = self._shared_predictions([i["image_id"] for i, _ in pairs])
        if shared is not None:
            self._predictions.extend(shared)
            return
        for inp, out in pairs:
            instances = out["instances"].to(self._cpu_device)
            self._predictions.append(
                {
                    "image_id": inp["image_id"],
                    "instances": instances_to_coco_json(instances, inp["image_id"]),
                }
            )

    def evaluate(self, img_ids=None):
        """
        Args:
            img_ids: evaluate only these images (default: the whole dataset).

        Returns:
            OrderedDict task -> metrics (see the class docstring); ``{}`` on non-main ranks.
        """
        if self._distributed:
            comm.synchronize()
            predictions = list(itertools.chain(*comm.gather(self._predictions, dst=0)))
            if not comm.is_main_process():
                return {}
        else:
            predictions = self._predictions
        if len(predictions) == 0:
            self._logger.warning("[LRPEvaluator] Did not receive valid predictions.")
            return {}
        if not self._do_evaluation:
            self._logger.info("Annotations are not available for LRP evaluation.")
            return {}

        coco_results = list(itertools.chain(*[p["instances"] for p in predictions]))
        coco_results = to_dataset_category_ids(coco_results, self._metadata)
        tasks = self._tasks or infer_tasks(coco_results)
        class_names = self._metadata.get("thing_classes")

        results = OrderedDict()
        for task in tasks:
            lrp = compute_olrp(
                self._coco_api,
                coco_results,
                task,
                tau=self._tau,
                max_dets_per_image=self._max_dets,
                img_ids=img_ids,
            )
            self.last_results[task] = lrp
            res = lrp_results_dict(lrp, class_names)
            summary = OrderedDict((k, res[k]) for k in _SUMMARY_KEYS)
            self._logger.info(
                f"Optimal LRP (tau={self._tau}) for {task} (x100, lower is better): \n"
                + create_small_table(summary)
            )
            self._logger.info(f"Per-category {task} oLRP: \n" + format_lrp_table(lrp, class_names))
            results[task] = res

        if self._output_dir:
            payload = {
                task: {
                    "tau": self._tau,
                    "summary": _json_floats(lrp.summary()),
                    "per_class": lrp.per_class(class_names),
                }
                for task, lrp in self.last_results.items()
            }
            write_json_atomic(os.path.join(self._output_dir, "lrp_results.json"), payload)
        return results


def _json_floats(d: Dict[str, float]) -> Dict[str, Optional[float]]:
    return {k: (None if v != v else float(v)) for k, v in d.items()}
