"""Anchor matchers of the paper: ATSS (IoU / GIoU / DIoU / maIoU) and YOLACT's fixed IoU thresholds.

Matchers live in :data:`ANCHOR_MATCHER_REGISTRY` and follow the call contract of
:class:`AnchorMatcher` (Detectron2's ``Matcher`` outputs). ``MODEL.YOLACT.MATCHER`` names one by
its registered class name without the ``Matcher`` suffix: "ATSS" (:class:`ATSSMatcher`) or
"FixedIoU" (:class:`FixedIoUMatcher`).

Shape shorthand:
    R: number of anchors over all levels (P3..P7, concatenated in level order).
    G: number of ground truths of the image.
    C: ATSS candidates per GT, ``sum_l min(topk, R_l)`` (45 with 5 levels and topk 9).
"""
import logging
from typing import List, Sequence, Union

import torch
from detectron2.config import configurable
from detectron2.structures import Boxes, pairwise_iou
from fvcore.common.registry import Registry

from mayolact.structures.box_ops import (
    as_box_tensor,
    check_box_values,
    paired_diou,
    paired_giou,
    paired_iou,
)
from mayolact.structures.maiou import (
    check_gt_masks,
    check_integral_masks,
    paired_maiou,
    pairwise_maiou,
    pairwise_maiou_bruteforce,
)

__all__ = [
    "ANCHOR_MATCHER_REGISTRY",
    "AnchorMatcher",
    "ATSSMatcher",
    "FixedIoUMatcher",
    "build_anchor_matcher",
]

logger = logging.getLogger(__name__)

AnchorsLike = Union[Boxes, torch.Tensor, Sequence[Union[Boxes, torch.Tensor]]]

# ATSS's box qualities, element by element on broadcastable (..., 4) boxes.
_PAIRED_BOX_QUALITY = {"iou": paired_iou, "giou": paired_giou, "diou": paired_diou}


def _anchors_per_level(anchors: AnchorsLike) -> List[torch.Tensor]:
    """A list of (R_l, 4) float tensors from list[Boxes] / list[Tensor] / one Boxes / one Tensor.

    Only shapes are checked here; the values are checked once on the concatenation.
    """
    if isinstance(anchors, (Boxes, torch.Tensor)):
        anchors = [anchors]
    if not isinstance(anchors, (list, tuple)) or len(anchors) == 0:
        raise ValueError("anchors_per_level must be a non-empty list of Boxes (one per level), "
                         f"got {type(anchors).__name__}")
    out = []
    for i, a in enumerate(anchors):
        t = a.tensor if isinstance(a, Boxes) else a
        if not isinstance(t, torch.Tensor) or t.dim() != 2 or t.shape[1] != 4:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"anchors_per_level[{i}] must have shape (R_l, 4) (XYXY), got {shape}")
        out.append(t if t.dtype.is_floating_point else t.float())
    return out


def _cat_anchors(levels: List[torch.Tensor]) -> torch.Tensor:
    anchors = torch.cat(levels, dim=0) if len(levels) > 1 else levels[0]
    check_box_values(anchors, "anchors_per_level")
    return anchors


def _empty_result(num_anchors: int, device: torch.device):
    return (torch.zeros(num_anchors, dtype=torch.int64, device=device),
            torch.zeros(num_anchors, dtype=torch.int8, device=device))


ANCHOR_MATCHER_REGISTRY = Registry("ANCHOR_MATCHER")
ANCHOR_MATCHER_REGISTRY.__doc__ = """
Registry for anchor matchers: subclasses of :class:`AnchorMatcher` named ``<Name>Matcher``, built
from a config as ``cls(cfg)`` (``@configurable``) and selected by
``MODEL.YOLACT.MATCHER = "<Name>"``.

Call contract (see :class:`AnchorMatcher`), for the anchors of one image:

    matches, match_labels = matcher(anchors_per_level, gt_boxes,
                                    integral_masks=None, gt_masks=None)

* ``anchors_per_level``: list[Boxes], (R_l, 4) XYXY anchors per level, in level order.
* ``gt_boxes``: Boxes or (G, 4) tensor of the image's GT boxes.
* ``integral_masks``, ``gt_masks``: the GT masks as integral images and as (G, H, W) bitmaps; the
  model passes both when ``matcher.needs_masks`` is True and neither otherwise.
* ``matches``: int64 (R,), the GT of each anchor; meaningful only where the label is 1 (0
  elsewhere).
* ``match_labels``: int8 (R,), 1 positive, 0 negative, -1 ignored.
"""


class AnchorMatcher:
    """Base of the anchor matchers: the call contract of :data:`ANCHOR_MATCHER_REGISTRY`.

    Attributes:
        needs_masks (bool): whether the call needs the GT masks (``integral_masks`` / ``gt_masks``);
            the model rasterises and passes them only then. A class attribute, or a property where
            it depends on the options (:class:`ATSSMatcher` with ``quality="maiou"``).
    """

    needs_masks: bool = False

    def __call__(self, anchors_per_level: AnchorsLike, gt_boxes: Union[Boxes, torch.Tensor],
                 integral_masks=None, gt_masks=None):
        """Label the anchors of one image.

        Args:
            anchors_per_level (list[Boxes]): (R_l, 4) XYXY anchors per level, in level order.
            gt_boxes (Boxes or Tensor): (G, 4) XYXY GT boxes.
            integral_masks (IntegralImages or Tensor, optional): the G masks' integral images.
            gt_masks (Tensor or BitMasks, optional): (G, H, W) masks.

        Returns:
            matches (Tensor): int64 (R,), the GT of each positive anchor (0 elsewhere).
            match_labels (Tensor): int8 (R,) in {-1, 0, 1}.
        """
        raise NotImplementedError


@ANCHOR_MATCHER_REGISTRY.register()
class ATSSMatcher(AnchorMatcher):
    """Adaptive Training Sample Selection, with IoU, GIoU, DIoU or maIoU as quality.

    The official algorithm is docs/REFERENCE.md §6.3 (ATSS), maIoU §6.4 (maIoU).

    For every GT: on each level take the ``min(topk, R_l)`` anchors whose centres are nearest the
    GT box centre (L2); over these C candidates set ``thr = mean + std`` (unbiased) of the
    quality; a candidate is positive iff ``quality >= thr`` and its centre lies inside the GT box
    by more than ``center_eps`` on every side. An anchor positive for several GTs goes to the one
    with the highest quality (the lowest GT index on exact ties). Anchors are never clipped.

    Only the G x C candidate pairs are evaluated, vectorised over GTs and levels (the official
    code evaluates all G x R pairs first; ``candidates_only=False`` does that, for comparison).

    Edge cases:
        * no GT or no anchor: everything negative.
        * a GT with a single candidate overall (one anchor in total): the unbiased std of one
          value is NaN in the official code, so its threshold is NaN and it gets no positives.
          Here the threshold is +inf, with the same result and no warning.
        * ``quality="maiou"``: a GT with an empty mask gets no positives. Its maIoU row is 0
          (:mod:`mayolact.structures.maiou`'s convention), which alone would make every candidate
          reach the threshold 0; the official code gets NaN maIoU, a NaN threshold and so no
          positives, and this rule gives the same assignment.
        * ties in centre distance (e.g. the two anchors of one location in maYOLACT) are broken
          by ``torch.topk``, as in the official code.
    """

    QUALITIES = ("iou", "giou", "diou", "maiou")

    @configurable
    def __init__(self, *, topk: int = 9, quality: str = "iou", center_eps: float = 0.01,
                 bruteforce: bool = False, candidates_only: bool = True):
        """
        Args:
            topk (int): candidates per level and per GT.
            quality (str): "iou", "giou", "diou" or "maiou".
            center_eps (float): the centre margin, in pixels (strict inequality).
            bruteforce (bool): maIoU only: count mask pixels directly from ``gt_masks``
                (:func:`pairwise_maiou_bruteforce`, for all pairs as the official assigner does)
                instead of the integral images; the "without Alg. 1" row of Table 3.
            candidates_only (bool): evaluate the quality on the candidates only (default) or on
                all G x R pairs first, as the official code does. Results are identical.
        """
        if quality not in self.QUALITIES:
            raise ValueError(
                f"ATSSMatcher: quality must be one of {self.QUALITIES}, got {quality!r}")
        if int(topk) < 1:
            raise ValueError(f"ATSSMatcher: topk must be >= 1, got {topk}")
        if bruteforce and quality != "maiou":
            raise ValueError("ATSSMatcher: bruteforce=True only applies to quality='maiou'")
        self.topk = int(topk)
        self.quality = quality
        self.center_eps = float(center_eps)
        self.bruteforce = bool(bruteforce)
        self.candidates_only = bool(candidates_only)

    @classmethod
    def from_config(cls, cfg):
        y = cfg.MODEL.YOLACT
        return {
            "topk": y.ATSS_TOPK,
            "quality": y.ATSS_QUALITY,
            "center_eps": y.ATSS_CENTER_EPS,
            "bruteforce": y.MAIOU_BRUTEFORCE,
        }

    @property
    def needs_masks(self) -> bool:
        """True when the call needs ``integral_masks`` (or ``gt_masks`` with brute force)."""
        return self.quality == "maiou"

    def __repr__(self) -> str:
        return (f"ATSSMatcher(topk={self.topk}, quality={self.quality!r}, "
                f"center_eps={self.center_eps}, bruteforce={self.bruteforce})")

    # ------------------------------------------------------------------------------------
    def _full_quality(self, gt, anchors, ii, masks) -> torch.Tensor:
        """(G, R) quality of all pairs (brute force, or candidates_only=False)."""
        if self.quality != "maiou":
            return _PAIRED_BOX_QUALITY[self.quality](gt[:, None, :], anchors[None, :, :])
        if self.bruteforce:
            return pairwise_maiou_bruteforce(gt, anchors, masks)
        return pairwise_maiou(gt, anchors, ii)

    def _candidate_quality(self, gt, cand_boxes, ii) -> torch.Tensor:
        """(G, C) quality of the candidates, ``cand_boxes`` (G, C, 4).

        maIoU runs the kernel on the G x C pairs only: four integral-image reads per candidate,
        with the lookup constants precomputed in ``ii`` (by the data loader).
        """
        if self.quality == "maiou":
            return paired_maiou(gt[:, None, :], cand_boxes, ii)
        return _PAIRED_BOX_QUALITY[self.quality](gt[:, None, :], cand_boxes)

    @torch.no_grad()
    def __call__(self, anchors_per_level: AnchorsLike, gt_boxes: Union[Boxes, torch.Tensor],
                 integral_masks=None, gt_masks=None):
        """Assign the anchors of one image.

        Args:
            anchors_per_level (list[Boxes]): anchors of each level, (R_l, 4) XYXY, in level order.
            gt_boxes (Boxes or Tensor): (G, 4) XYXY GT boxes.
            integral_masks (IntegralImages or Tensor, optional): integral images of the G masks
                (or dense (G, H+1, W+1)); required for ``quality="maiou"``.
            gt_masks (Tensor or BitMasks, optional): (G, H, W) masks; required instead of the
                integral images when ``bruteforce=True``.

        Returns:
            matches (Tensor): int64 (R,), the GT of each anchor (0 for negatives).
            match_labels (Tensor): int8 (R,), 1 for positives, 0 for negatives.
        """
        levels = _anchors_per_level(anchors_per_level)
        gt = as_box_tensor(gt_boxes, "gt_boxes")
        device = levels[0].device
        if gt.device != device or any(a.device != device for a in levels):
            raise ValueError("ATSSMatcher: gt_boxes and all anchors must be on the same device")
        anchors = _cat_anchors(levels)
        dtype = torch.promote_types(gt.dtype, anchors.dtype)
        gt, anchors = gt.to(dtype), anchors.to(dtype)
        R, G = anchors.shape[0], gt.shape[0]

        ii = masks = None
        if self.quality == "maiou":
            if self.bruteforce:
                if gt_masks is None:
                    raise ValueError("ATSSMatcher(quality='maiou', bruteforce=True) needs gt_masks "
                                     "(G, H, W)")
                masks = check_gt_masks(gt_masks, G, device)
            else:
                if integral_masks is None:
                    raise ValueError("ATSSMatcher(quality='maiou') needs integral_masks (one "
                                     "integral image per GT); got None")
                ii = check_integral_masks(integral_masks, G, device)

        matches, labels = _empty_result(R, device)
        if G == 0 or R == 0:
            return matches, labels

        # 1. Candidates: per level, the min(topk, R_l) anchors nearest to each GT centre.
        anc_ctr = (anchors[:, :2] + anchors[:, 2:]) / 2  # (R, 2)
        gt_ctr = (gt[:, :2] + gt[:, 2:]) / 2  # (G, 2)
        dx = anc_ctr[None, :, 0] - gt_ctr[:, None, 0]
        dy = anc_ctr[None, :, 1] - gt_ctr[:, None, 1]
        dist = (dx * dx + dy * dy).sqrt()  # (G, R), L2 as the official code
        cands, start = [], 0
        for lvl in levels:  # a handful of levels: one top-k each, vectorised over GTs
            n = lvl.shape[0]
            if n > 0:
                idx = dist[:, start:start + n].topk(min(self.topk, n), dim=1, largest=False).indices
                cands.append(idx + start if start else idx)
            start += n
        cand = torch.cat(cands, dim=1) if len(cands) > 1 else cands[0]  # (G, C)
        C = cand.shape[1]

        # 2. Quality of the candidates and the adaptive threshold mean + std (unbiased).
        candidate_path = self.candidates_only and not self.bruteforce
        if candidate_path:
            q = self._candidate_quality(gt, anchors[cand], ii)  # (G, C)
        else:
            q = self._full_quality(gt, anchors, ii, masks).gather(1, cand)
        if C > 1:
            thr = q.mean(dim=1) + q.std(dim=1, correction=1)
        else:  # std of a single value is undefined (NaN officially): no positives
            thr = torch.full((G,), float("inf"), dtype=q.dtype, device=device)
        is_pos = q >= thr[:, None]

        # 3. Candidate centres strictly inside the GT box by more than center_eps.
        c = anc_ctr[cand]  # (G, C, 2)
        margin = torch.minimum(c - gt[:, None, :2], gt[:, None, 2:] - c).amin(dim=-1)  # (G, C)
        is_pos &= margin > self.center_eps
        if self.quality == "maiou":  # a GT with an empty mask gets no positives (maIoU rows of 0)
            is_pos &= (ii.areas() > 0 if masks is None else masks.flatten(1).any(1))[:, None]

        # 4. Anchors positive for several GTs go to the highest quality (lowest GT on ties).
        gi, ci = torch.nonzero(is_pos, as_tuple=True)
        if gi.numel() == 0:
            return matches, labels
        a_idx = cand[gi, ci]
        qv = q[gi, ci]
        best = torch.full((R,), float("-inf"), dtype=q.dtype, device=device)
        best = best.scatter_reduce(0, a_idx, qv, reduce="amax")
        win = qv == best[a_idx]
        owner = torch.full((R,), G, dtype=torch.int64, device=device)
        owner = owner.scatter_reduce(0, a_idx[win], gi[win], reduce="amin")
        pos = owner < G
        matches = torch.where(pos, owner, torch.zeros_like(owner))
        labels = pos.to(torch.int8)
        return matches, labels


@ANCHOR_MATCHER_REGISTRY.register()
class FixedIoUMatcher(AnchorMatcher):
    """YOLACT's fixed IoU thresholds (mmdet ``MaxIoUAssigner``).

    The official rules are docs/REFERENCE.md §6.2 (fixed IoU).

    Each anchor takes its best GT (the first on ties) and is labelled by the interval of that IoU:
    with ``thresholds=(0.4, 0.5)`` and ``labels=(0, -1, 1)``, negative below 0.4, ignored in
    [0.4, 0.5), positive from 0.5. Then, with ``allow_low_quality_matches``, every GT also takes
    its single best anchor (the first on ties), **even at IoU 0** (``min_pos_iou=0``), overriding
    the previous label and match; when several GTs pick the same anchor, the last GT wins (the
    official loop order). This differs from Detectron2's ``Matcher``, which keeps every anchor
    tied at a GT's maximum and never changes the matched index, so it is not reused here.

    IoU comes from Detectron2's ``pairwise_iou`` (raw union where the boxes intersect, else 0);
    it equals mmdet's eps-clamped union except for boxes smaller than 1e-6 px².
    """

    @configurable
    def __init__(self, *, thresholds: Sequence[float] = (0.4, 0.5),
                 labels: Sequence[int] = (0, -1, 1), allow_low_quality_matches: bool = True,
                 min_low_quality: float = 0.0):
        """
        Args:
            thresholds (list[float]): increasing IoU thresholds splitting [-inf, inf) in intervals.
            labels (list[int]): one label in {-1, 0, 1} per interval (``len(thresholds) + 1``).
            allow_low_quality_matches (bool): each GT also takes its best anchor.
            min_low_quality (float): the best anchor is taken only when its IoU is at least this
                (mmdet's ``min_pos_iou``; 0 in YOLACT).
        """
        thresholds = [float(t) for t in thresholds]
        labels = [int(v) for v in labels]
        if len(labels) != len(thresholds) + 1:
            raise ValueError(f"FixedIoUMatcher: need len(labels) == len(thresholds) + 1, got "
                             f"{len(labels)} labels for {len(thresholds)} thresholds")
        if any(a > b for a, b in zip(thresholds[:-1], thresholds[1:])):
            raise ValueError(f"FixedIoUMatcher: thresholds must be increasing, got {thresholds}")
        if any(v not in (-1, 0, 1) for v in labels):
            raise ValueError(f"FixedIoUMatcher: labels must be in {{-1, 0, 1}}, got {labels}")
        self.thresholds = thresholds
        self.labels = labels
        self.allow_low_quality_matches = bool(allow_low_quality_matches)
        self.min_low_quality = float(min_low_quality)

    @classmethod
    def from_config(cls, cfg):
        y = cfg.MODEL.YOLACT
        return {
            "thresholds": list(y.IOU_THRESHOLDS),
            "labels": list(y.IOU_LABELS),
            "allow_low_quality_matches": y.ALLOW_LOW_QUALITY_MATCHES,
        }

    def __repr__(self) -> str:
        return (f"FixedIoUMatcher(thresholds={self.thresholds}, labels={self.labels}, "
                f"allow_low_quality_matches={self.allow_low_quality_matches})")

    @torch.no_grad()
    def __call__(self, anchors_per_level: AnchorsLike, gt_boxes: Union[Boxes, torch.Tensor],
                 integral_masks=None, gt_masks=None):
        """Assign the anchors of one image (``integral_masks`` and ``gt_masks`` are ignored).

        Args:
            anchors_per_level (list[Boxes] or Boxes): (R_l, 4) anchors per level.
            gt_boxes (Boxes or Tensor): (G, 4) XYXY GT boxes.

        Returns:
            matches (Tensor): int64 (R,), the GT of each positive anchor (0 elsewhere).
            match_labels (Tensor): int8 (R,), in {-1, 0, 1}.
        """
        levels = _anchors_per_level(anchors_per_level)
        gt = as_box_tensor(gt_boxes, "gt_boxes")
        anchors = _cat_anchors(levels)
        if gt.device != anchors.device:
            raise ValueError("FixedIoUMatcher: gt_boxes and the anchors must be on the same device")
        R, G = anchors.shape[0], gt.shape[0]
        device = anchors.device
        if G == 0 or R == 0:  # no GT: every anchor takes the label of IoU 0
            matches, labels = _empty_result(R, device)
            return matches, labels.fill_(self._label_of(0.0))
        dtype = torch.promote_types(gt.dtype, anchors.dtype)
        iou = pairwise_iou(Boxes(gt.to(dtype)), Boxes(anchors.to(dtype)))  # (G, R)

        max_iou, argmax = iou.max(dim=0)  # best GT of each anchor (first on ties)
        labels = torch.empty(R, dtype=torch.int8, device=device)
        bounds = [float("-inf")] + self.thresholds + [float("inf")]
        for lab, lo, hi in zip(self.labels, bounds[:-1], bounds[1:]):  # a few intervals
            labels[(max_iou >= lo) & (max_iou < hi)] = lab
        matches = argmax

        if self.allow_low_quality_matches:
            gt_best, gt_best_anchor = iou.max(dim=1)  # best anchor of each GT (first on ties)
            ok = gt_best >= self.min_low_quality
            gt_idx = torch.arange(G, device=device)
            owner = torch.full((R,), -1, dtype=torch.int64, device=device)
            owner = owner.scatter_reduce(0, gt_best_anchor[ok], gt_idx[ok], reduce="amax")
            forced = owner >= 0
            matches = torch.where(forced, owner, matches)
            labels[forced] = 1
        matches = torch.where(labels == 1, matches, torch.zeros_like(matches))
        return matches, labels

    def _label_of(self, value: float) -> int:
        bounds = [float("-inf")] + self.thresholds + [float("inf")]
        for lab, lo, hi in zip(self.labels, bounds[:-1], bounds[1:]):
            if lo <= value < hi:
                return lab
        return self.labels[-1]


def build_anchor_matcher(cfg) -> AnchorMatcher:
    """Build the matcher ``<MODEL.YOLACT.MATCHER>Matcher`` of :data:`ANCHOR_MATCHER_REGISTRY`.

    Raises:
        ValueError: for an unknown name (the message lists the valid ones).
    """
    name = cfg.MODEL.YOLACT.MATCHER
    suffix = "Matcher"
    valid = sorted(k[: -len(suffix)] for k, _ in ANCHOR_MATCHER_REGISTRY if k.endswith(suffix))
    if name not in valid:
        raise ValueError(f"Unknown MODEL.YOLACT.MATCHER {name!r}; valid: {valid}")
    matcher = ANCHOR_MATCHER_REGISTRY.get(name + suffix)(cfg)
    logger.info("Anchor matcher: %s", matcher)
    return matcher
