"""COCO AP by ground-truth mask-over-box (MOB) ratio, computed as COCO computes APs / APm / APl.

COCO splits AP by object area: for the "small" range [0, 32^2], ground truths whose area lies
outside the range are ignored (neither matched as TPs nor counted as misses), detections matched to
them are ignored too, and an *unmatched* detection counts as a false positive only when its own
area lies inside the range (pycocotools ``COCOeval.evaluateImg``). This module runs exactly that
code with another per-object value in place of the area: :class:`RangeCOCOeval` is pycocotools'
``COCOeval`` whose ground truths and detections carry ``value(ann)`` as their "area", and whose
area ranges are the ranges of that value. With the area itself as the value it gives pycocotools'
APs / APm / APl bit for bit (tested); with the MOB ratio it gives AP by shape.

The MOB ratio (Definition 1 of the paper, :func:`mayolact.structures.maiou.mask_over_box`) is
``|M| / (|B| + 1e-6)``:

* of a ground truth: the pixels of its mask (the annotation rasterised at the image size, as COCO
  evaluates it) over the area of its annotated box ``w * h``, at most 1: the rasterised polygon of
  a tiny object can hold a few more pixels than its float box (1 of the 977 GTs of coco_mini val,
  ratio 1.05), and it fills its box;
* of a detection: the pixels of its mask over the area of the mask's tight box (its own shape,
  for the ``bbox`` task too); an empty mask has ratio 0. Results without masks have no ratio,
  so for them the MOB ranges are not evaluated.

Ranges follow COCO's area ranges to the letter: a range ``[lo, hi]`` includes both ends (a ratio
exactly on a boundary between two ranges counts in both), and the IoU thresholds, the detection
limit and the matching are those of the main evaluation. Only ``"AP"``, ``"AP50"`` and ``"AP75"``
are reported per range, with the number of (non-crowd) ground truths in it.

The ranges are evaluated with pycocotools whichever backend the main evaluation uses (the
identity above is with pycocotools; the two backends give the same numbers, see
``tests/test_evaluation.py``).
"""
import contextlib
import io
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import pycocotools.mask as mask_util
from pycocotools.cocoeval import COCOeval
from tabulate import tabulate

from mayolact.structures.box_ops import EPS

from .coco import _results_for_task, check_tasks

__all__ = [
    "DEFAULT_MOB_EDGES",
    "RangeCOCOeval",
    "RangeResult",
    "evaluate_ranges",
    "format_per_class_range_table",
    "format_range_table",
    "gt_mob_ratios",
    "mob_range_metrics",
    "parse_mob_edges",
    "range_label",
    "range_results_dict",
    "results_have_masks",
]

#: The edges of the default MOB ranges [0, 0.4], [0.4, 0.6], [0.6, 0.8], [0.8, 1].
DEFAULT_MOB_EDGES = (0.0, 0.4, 0.6, 0.8, 1.0)
#: The metrics reported per range.
RANGE_METRICS = ("AP", "AP50", "AP75")


def parse_mob_edges(edges: Sequence[float], what: str = "TEST.YOLACT.MOB_RANGES") -> List[list]:
    """The ranges ``[[e0, e1], [e1, e2], ...]`` of increasing edges.

    Args:
        edges: at least two increasing, finite, non-negative numbers; empty gives no range.
        what: the config key or option, for messages.

    Raises:
        ValueError: naming ``what``, for a single edge, non-numbers, negative, non-finite or
            non-increasing edges.
    """
    edges = list(edges)
    if not edges:
        return []
    try:
        values = [float(e) for e in edges]
    except (TypeError, ValueError):
        raise ValueError(f"{what}: edges must be numbers, got {edges!r}") from None
    if len(values) < 2:
        raise ValueError(
            f"{what}: needs at least two edges (one range), got {edges!r}; "
            f"e.g. {list(DEFAULT_MOB_EDGES)}"
        )
    if not all(np.isfinite(values)) or values[0] < 0:
        raise ValueError(f"{what}: edges must be finite and >= 0, got {edges!r}")
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"{what}: edges must increase strictly, got {edges!r}")
    return [[a, b] for a, b in zip(values, values[1:])]


def range_label(lo: float, hi: float) -> str:
    """``"mob[0,0.4]"``: the name of a range in result keys and tables."""
    return f"mob[{lo:g},{hi:g}]"


def results_have_masks(coco_results: Sequence[dict]) -> bool:
    """Whether every result carries a compressed-RLE "segmentation" (so has a MOB ratio)."""
    return bool(coco_results) and all(
        isinstance(r.get("segmentation"), dict) for r in coco_results
    )


def _rle_areas(rles: list) -> np.ndarray:
    """(N,) float64 pixel counts of RLEs. In chunks: pycocotools' ``area`` builds a uint8 array
    of the list's length first, which numpy 2 refuses for more than 255 masks."""
    chunks = [mask_util.area(rles[i:i + 255]) for i in range(0, len(rles), 255)]
    return np.concatenate(chunks).astype(np.float64) if chunks else np.zeros(0)


def gt_mob_ratios(coco_gt) -> Dict[int, float]:
    """annotation id -> MOB ratio ``min(|M| / (w * h + 1e-6), 1)`` of every ground truth.

    ``|M|`` counts the pixels of the annotation rasterised at its image's size (``annToRLE``, as
    COCO evaluates segm); ``w * h`` is the annotated box. Crowd regions get a ratio too (COCO
    ignores them anyway).
    """
    anns = list(coco_gt.dataset.get("annotations", []))
    if not anns:
        return {}
    areas = _rle_areas([coco_gt.annToRLE(a) for a in anns])
    boxes = np.asarray([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
    ratios = np.minimum(areas / (boxes[:, 2] * boxes[:, 3] + EPS), 1.0)
    return {a["id"]: float(r) for a, r in zip(anns, ratios)}


def _detection_mob(dts: List[dict]) -> np.ndarray:
    """(D,) MOB ratios of detections from their RLE masks: pixels over the mask's tight box."""
    if not dts:
        return np.zeros(0)
    rles = [d["segmentation"] for d in dts]
    areas = _rle_areas(rles)
    boxes = mask_util.toBbox(rles).reshape(-1, 4)
    return areas / (boxes[:, 2] * boxes[:, 3] + EPS)


class RangeCOCOeval(COCOeval):
    """pycocotools' ``COCOeval`` whose "area" of each ground truth and detection is another value.

    The ground-truth and detection dicts are not modified: the evaluation works on copies whose
    "area" is replaced, so the COCO apis stay usable for other evaluations. Set
    ``params.areaRng`` / ``params.areaRngLbl`` to ranges of the value.

    Args:
        coco_gt, coco_dt, iou_type: as ``COCOeval``.
        gt_value: ``ann -> float`` for ground-truth annotations.
        dt_value: ``list[ann] -> (D,) array`` for the detections of one image and category (all
            at once: the MOB ratio is computed vectorised).
    """

    def __init__(self, coco_gt, coco_dt, iou_type: str, *,
                 gt_value: Callable[[dict], float],
                 dt_value: Callable[[List[dict]], np.ndarray]):
        super().__init__(coco_gt, coco_dt, iou_type)
        self._gt_value = gt_value
        self._dt_value = dt_value

    def _prepare(self):
        super()._prepare()
        for key, gts in self._gts.items():
            self._gts[key] = [dict(g, area=float(self._gt_value(g))) for g in gts]
        for key, dts in self._dts.items():
            values = self._dt_value(dts)
            self._dts[key] = [dict(d, area=float(v)) for d, v in zip(dts, values)]


@dataclass
class RangeResult:
    """AP of one task per value range (fractions, NaN where undefined, as COCO's -1).

    Attributes:
        ranges: (A, 2) the ranges, in order.
        ap, ap50, ap75: (A,) AP over IoU 0.5:0.95, at 0.5 and at 0.75.
        per_class_ap: (K, A) AP of each category (sorted dataset ids) per range.
        num_gt: (A,) non-crowd ground truths whose value lies in each range (both ends included).
    """

    ranges: np.ndarray
    ap: np.ndarray
    ap50: np.ndarray
    ap75: np.ndarray
    per_class_ap: np.ndarray
    num_gt: np.ndarray


def _mean_valid(precision: np.ndarray, axis=None):
    """pycocotools' ``_summarize``: the mean of the entries > -1, NaN (COCO's -1) when none."""
    if axis is None:
        valid = precision[precision > -1]
        return float(np.mean(valid)) if len(valid) else float("nan")
    valid = precision > -1
    sums = np.where(valid, precision, 0.0).sum(axis=axis)
    counts = valid.sum(axis=axis)
    return np.divide(sums, counts, out=np.full(sums.shape, np.nan), where=counts > 0)


def evaluate_ranges(
    coco_gt,
    coco_results: Sequence[dict],
    iou_type: str,
    ranges: Sequence[Sequence[float]],
    *,
    gt_value: Callable[[dict], float],
    dt_value: Callable[[List[dict]], np.ndarray],
    max_dets_per_image: int = 100,
    img_ids: Optional[Sequence[int]] = None,
) -> RangeResult:
    """COCO AP per range of a per-object value, with COCO's area-range rules.

    Args:
        coco_gt: pycocotools ``COCO`` with the ground truth.
        coco_results: COCO result dicts (dataset category ids), not empty; not modified.
        iou_type: ``"bbox"`` or ``"segm"``.
        ranges: ``[[lo, hi], ...]`` of the value.
        gt_value, dt_value: see :class:`RangeCOCOeval`.
        max_dets_per_image: COCO's detection limit (the AP is read at it, as pycocotools does).
        img_ids: evaluate only these images (default: all).

    Returns:
        :class:`RangeResult`.

    Raises:
        ValueError: an unsupported ``iou_type``, empty results or no range.
    """
    check_tasks([iou_type])
    if len(coco_results) == 0:
        raise ValueError("evaluate_ranges needs at least one detection")
    if len(ranges) == 0:
        raise ValueError("evaluate_ranges needs at least one range")
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(_results_for_task(coco_results, iou_type))
        E = RangeCOCOeval(coco_gt, coco_dt, iou_type, gt_value=gt_value, dt_value=dt_value)
        p = E.params
        # Only the limit the AP is read at, and only categories with ground truth: the others
        # leave pycocotools' precision at -1, which every mean skips. Same numbers, less work.
        p.maxDets = [int(max_dets_per_image)]
        p.areaRng = [[float(lo), float(hi)] for lo, hi in ranges]
        p.areaRngLbl = [range_label(lo, hi) for lo, hi in p.areaRng]
        if img_ids is not None:
            p.imgIds = list(img_ids)
        all_cats = list(p.catIds)
        with_gt = {a["category_id"] for a in coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=p.imgIds))}
        p.catIds = [c for c in all_cats if c in with_gt]
        E.evaluate()
        E.accumulate()
    precision = np.full((len(p.iouThrs), len(p.recThrs), len(all_cats), len(p.areaRng)), -1.0)
    evaluated = [all_cats.index(c) for c in p.catIds]
    if evaluated:
        precision[:, :, evaluated] = np.asarray(E.eval["precision"])[..., -1]  # (T, R, K', A)
    iou_thrs = np.asarray(p.iouThrs)
    # Exact comparisons, as pycocotools' summarize() selects its AP50 / AP75 thresholds.
    at50 = precision[np.where(iou_thrs == 0.5)[0]]
    at75 = precision[np.where(iou_thrs == 0.75)[0]]
    num_ranges = len(p.areaRng)
    # Non-crowd GTs per range (of the evaluated images and categories), from the prepared copies.
    values = np.asarray(
        [g["area"] for gts in E._gts.values() for g in gts if not g.get("iscrowd", 0)]
    )
    num_gt = np.asarray(
        [int(np.count_nonzero((values >= lo) & (values <= hi))) for lo, hi in p.areaRng]
    )
    return RangeResult(
        ranges=np.asarray(p.areaRng, dtype=np.float64),
        ap=np.asarray([_mean_valid(precision[..., a]) for a in range(num_ranges)]),
        ap50=np.asarray([_mean_valid(at50[..., a]) for a in range(num_ranges)]),
        ap75=np.asarray([_mean_valid(at75[..., a]) for a in range(num_ranges)]),
        per_class_ap=_mean_valid(precision, axis=(0, 1)),  # (K, A)
        num_gt=num_gt,
    )


def mob_range_metrics(
    coco_gt,
    coco_results: Sequence[dict],
    iou_type: str,
    edges: Sequence[float] = DEFAULT_MOB_EDGES,
    *,
    max_dets_per_image: int = 100,
    img_ids: Optional[Sequence[int]] = None,
    gt_ratios: Optional[Dict[int, float]] = None,
) -> RangeResult:
    """COCO AP per GT MOB range (see the module docstring for the rules).

    Args:
        coco_gt: pycocotools ``COCO`` with the ground truth (with masks).
        coco_results: COCO result dicts, every one with an RLE "segmentation" (the detections'
            own ratios come from their masks; for ``"bbox"`` too).
        iou_type: ``"bbox"`` or ``"segm"``.
        edges: range edges, see :func:`parse_mob_edges`.
        max_dets_per_image, img_ids: as :func:`evaluate_ranges`.
        gt_ratios: precomputed :func:`gt_mob_ratios` of ``coco_gt`` (computed when None).

    Raises:
        ValueError: bad edges, or a result without an RLE mask.
    """
    ranges = parse_mob_edges(edges, "MOB range edges")
    if not results_have_masks(coco_results):
        raise ValueError(
            "AP by MOB range needs a mask (an RLE 'segmentation') in every result: a detection's "
            "MOB ratio is its mask's"
        )
    ratios = gt_mob_ratios(coco_gt) if gt_ratios is None else gt_ratios
    return evaluate_ranges(
        coco_gt, coco_results, iou_type, ranges,
        gt_value=lambda g: ratios[g["id"]], dt_value=_detection_mob,
        max_dets_per_image=max_dets_per_image, img_ids=img_ids,
    )


def range_results_dict(result: RangeResult) -> "OrderedDict[str, float]":
    """``{"AP-mob[0,0.4]": ..., "AP50-mob[0,0.4]": ..., "AP75-mob[0,0.4]": ..., ...}``, x100.

    The keys hold a "-", as Detectron2's per-class "AP-<class>" keys, so that Detectron2's
    ``print_csv_format`` leaves them out of its "copypaste" line (whose columns stay COCO's).
    """
    out = OrderedDict()
    for a, (lo, hi) in enumerate(result.ranges):
        label = range_label(lo, hi)
        for name, values in zip(RANGE_METRICS, (result.ap, result.ap50, result.ap75)):
            out[f"{name}-{label}"] = 100.0 * float(values[a])
    return out


def format_range_table(result: RangeResult) -> str:
    """Rows of ranges: #GT, AP, AP50, AP75 (x100), as Detectron2's tables (pipe format)."""
    rows = [
        (range_label(lo, hi), int(n), 100 * ap, 100 * ap50, 100 * ap75)
        for (lo, hi), n, ap, ap50, ap75 in zip(
            result.ranges, result.num_gt, result.ap, result.ap50, result.ap75)
    ]
    return tabulate(rows, headers=["MOB range", "#GT", "AP", "AP50", "AP75"], tablefmt="pipe",
                    floatfmt=".3f", numalign="left")


def format_per_class_range_table(result: RangeResult, class_names: Sequence[str]) -> str:
    """Per-category AP (x100) in each range: one row per class, one column per range."""
    if len(class_names) != result.per_class_ap.shape[0]:
        raise ValueError(
            f"{len(class_names)} class names for {result.per_class_ap.shape[0]} categories"
        )
    rows = [(name, *(100 * result.per_class_ap[k])) for k, name in enumerate(class_names)]
    headers = ["category"] + [range_label(lo, hi) for lo, hi in result.ranges]
    return tabulate(rows, headers=headers, tablefmt="pipe", floatfmt=".3f", numalign="left")
