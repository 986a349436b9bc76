"""Mask-aware IoU (maIoU, Alg. 1 of the paper) and the box proximity measures ATSS can use.

maIoU between a ground truth (box B, mask M) and an anchor Â (SPEC 6.4):

    MOB  = |M| / (|B| + 1e-6)                          mask-over-box ratio (Definition 1)
    I_ma = |round(Â) ∩ M| / MOB = |round(Â) ∩ M| |B| / |M|   mask-aware intersection (Eq. 3)
    maIoU = I_ma / max(|Â ∪ B|, 1e-6)                   box union of the *unrounded* boxes

and maIoU = 0 wherever the ordinary box IoU is 0. The mask count uses the anchor rounded half to
even (``torch.round``) and clipped to the image; a pixel (r, c) covers [c, c+1) x [r, r+1), so an
integer box (x1, y1, x2, y2) covers columns x1..x2-1 and rows y1..y2-1. Counts come from integral
images (:meth:`mayolact.structures.IntegralImages.box_counts`, whose lookup constants are built
with the structure, in the data loader), four reads per pair, with no loop over GTs or anchors.

**Empty masks.** The official code divides 0 by MOB = 0 and gets NaN, which silently leaves such a
GT without positives in ATSS. Here the rows of empty-mask GTs are 0 (never NaN); the matcher gives
those GTs no positives too (see :class:`mayolact.matchers.ATSSMatcher`).

**IoU conventions.** mmdet (and this module) divides by ``max(union, 1e-6)``; Detectron2's
``pairwise_iou`` divides by the raw union where the intersection is positive and returns 0
elsewhere. The two differ only when both boxes have an area below 1e-6 px².

Shape shorthand:
    G: number of ground truths (masks) of one image.
    A: number of anchors (all levels).
    P: number of explicit (GT, anchor) pairs.
    H, W: image (mask) height and width.
"""
import logging
from typing import Optional, Union

import torch
from detectron2.structures import BitMasks, Boxes

from mayolact.structures import IntegralImages, as_integral_images

__all__ = [
    "pairwise_maiou",
    "pairwise_maiou_pairs",
    "pairwise_maiou_bruteforce",
    "mask_over_box",
    "mask_fraction_in_boxes",
    "pairwise_giou",
    "pairwise_diou",
    "paired_iou",
    "paired_giou",
    "paired_diou",
]

logger = logging.getLogger(__name__)

EPS = 1e-6
# pairwise_maiou processes at most this many (GT, anchor) pairs at once (bounded memory).
_MAX_PAIRS_PER_CHUNK = 1 << 20

BoxesLike = Union[Boxes, torch.Tensor]
IntegralLike = Union[IntegralImages, torch.Tensor]


# ----------------------------------------------------------------------------- validation
def _as_box_tensor(boxes: BoxesLike, name: str) -> torch.Tensor:
    """Return the (N, 4) XYXY float tensor of ``boxes``; raise ValueError naming ``name``."""
    if isinstance(boxes, Boxes):
        boxes = boxes.tensor
    if not isinstance(boxes, torch.Tensor):
        raise ValueError(f"{name} must be detectron2 Boxes or an (N, 4) tensor, "
                         f"got {type(boxes).__name__}")
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name} must have shape (N, 4) (XYXY), got {tuple(boxes.shape)}")
    if not boxes.dtype.is_floating_point:
        boxes = boxes.float()
    _check_box_values(boxes, name)
    return boxes


def _check_box_values(boxes: torch.Tensor, name: str) -> None:
    """Finite coordinates and x2 >= x1, y2 >= y1 for (..., 4) boxes (one host sync)."""
    if boxes.numel() == 0:
        return
    ok = torch.isfinite(boxes).all() & (boxes[..., 2:] >= boxes[..., :2]).all()
    if bool(ok):
        return
    flat = boxes.reshape(-1, 4)
    if not bool(torch.isfinite(flat).all()):
        raise ValueError(f"{name} contains non-finite coordinates (NaN or inf)")
    bad = torch.nonzero((flat[:, 2:] < flat[:, :2]).any(1))[0, 0]
    raise ValueError(f"{name} has a box with x2 < x1 or y2 < y1 (XYXY expected): index {int(bad)}, "
                     f"{flat[bad].tolist()}")


def _as_integral(integral_masks: IntegralLike, num_gt: int, device: torch.device,
                 name: str = "integral_masks") -> IntegralImages:
    """Convert to :class:`IntegralImages` and check the count and the device."""
    try:
        ii = as_integral_images(integral_masks)
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None
    if len(ii) != num_gt:
        raise ValueError(f"{name} holds {len(ii)} integral images but there are {num_gt} GT boxes")
    if ii.device != device:
        raise ValueError(f"{name} is on {ii.device} but the boxes are on {device}")
    return ii


def _as_masks(masks, num_gt: int, device: torch.device, name: str = "gt_masks") -> torch.Tensor:
    """Return (G, H, W) bool masks from a tensor or BitMasks; check the count and the device."""
    if isinstance(masks, BitMasks):
        masks = masks.tensor
    if not isinstance(masks, torch.Tensor) or masks.dim() != 3:
        shape = tuple(masks.shape) if hasattr(masks, "shape") else type(masks).__name__
        raise ValueError(f"{name} must be a (G, H, W) tensor or BitMasks, got {shape}")
    if masks.shape[0] != num_gt:
        raise ValueError(f"{name} holds {masks.shape[0]} masks but there are {num_gt} GT boxes")
    if masks.device != device:
        raise ValueError(f"{name} is on {masks.device} but the boxes are on {device}")
    return masks != 0


# ------------------------------------------------------------------------- box measures
def _areas(b: torch.Tensor) -> torch.Tensor:
    return (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])


def _inter_union(b1: torch.Tensor, b2: torch.Tensor, area1: Optional[torch.Tensor] = None):
    """Intersection and eps-clamped union of broadcastable (..., 4) boxes.

    ``area1``, when given, is ``_areas(b1)`` computed by the caller (shared with MOB).
    """
    lt = torch.maximum(b1[..., :2], b2[..., :2])
    rb = torch.minimum(b1[..., 2:], b2[..., 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    if area1 is None:
        area1 = _areas(b1)
    union = (area1 + _areas(b2) - inter).clamp(min=EPS)
    return inter, union


def _enclosing_wh(b1: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
    lt = torch.minimum(b1[..., :2], b2[..., :2])
    rb = torch.maximum(b1[..., 2:], b2[..., 2:])
    return (rb - lt).clamp(min=0)


def paired_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """IoU of broadcastable (..., 4) XYXY boxes, element by element (mmdet's eps union).

    No input checks (internal fast path); use the ``pairwise_*`` functions for checked input.

    Returns:
        Tensor: (...) IoU, ``inter / max(union, 1e-6)``.
    """
    inter, union = _inter_union(boxes1, boxes2)
    return inter / union


def paired_giou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """GIoU of broadcastable (..., 4) boxes, element by element (SPEC 6.3).

    ``giou = iou - (enclose - union) / enclose`` with ``enclose = max(area of the smallest
    enclosing box, 1e-6)`` and ``union = max(|A| + |B| - |A∩B|, 1e-6)``.
    """
    inter, union = _inter_union(boxes1, boxes2)
    ewh = _enclosing_wh(boxes1, boxes2)
    enclose = (ewh[..., 0] * ewh[..., 1]).clamp(min=EPS)
    return inter / union - (enclose - union) / enclose


def paired_diou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """DIoU of broadcastable (..., 4) boxes, element by element (SPEC 6.3).

    ``diou = iou - ((cx2-cx1)^2 + (cy2-cy1)^2) / max(enclose_w^2 + enclose_h^2, 1e-6)``.
    """
    inter, union = _inter_union(boxes1, boxes2)
    ewh = _enclosing_wh(boxes1, boxes2)
    diag = (ewh[..., 0] ** 2 + ewh[..., 1] ** 2).clamp(min=EPS)
    c1 = (boxes1[..., :2] + boxes1[..., 2:]) / 2
    c2 = (boxes2[..., :2] + boxes2[..., 2:]) / 2
    dist = ((c2 - c1) ** 2).sum(-1)
    return inter / union - dist / diag


def _pairwise(paired_fn, boxes1: BoxesLike, boxes2: BoxesLike) -> torch.Tensor:
    b1 = _as_box_tensor(boxes1, "boxes1")
    b2 = _as_box_tensor(boxes2, "boxes2")
    return paired_fn(b1[:, None, :], b2[None, :, :])


def pairwise_giou(boxes1: BoxesLike, boxes2: BoxesLike) -> torch.Tensor:
    """GIoU of all pairs: (N, 4) and (M, 4) XYXY boxes (``Boxes`` or tensors) -> float (N, M)
    in (-1, 1]."""
    return _pairwise(paired_giou, boxes1, boxes2)


def pairwise_diou(boxes1: BoxesLike, boxes2: BoxesLike) -> torch.Tensor:
    """DIoU of all pairs: (N, 4) and (M, 4) XYXY boxes (``Boxes`` or tensors) -> float (N, M)
    in (-1, 1]."""
    return _pairwise(paired_diou, boxes1, boxes2)


# -------------------------------------------------------------------------------- maIoU
def mask_over_box(gt_boxes: BoxesLike, integral_masks: IntegralLike) -> torch.Tensor:
    """MOB ratio of Definition 1: ``|M| / (|B| + 1e-6)`` per ground truth.

    Every mask pixel counts, also those outside the box (they exist after nearest resizing).

    Args:
        gt_boxes (Boxes or Tensor): (G, 4) XYXY GT boxes.
        integral_masks (IntegralImages or Tensor): G integral images, or dense int (G, H+1, W+1).

    Returns:
        Tensor: float (G,), 0 for empty masks.
    """
    gt = _as_box_tensor(gt_boxes, "gt_boxes")
    ii = _as_integral(integral_masks, gt.shape[0], gt.device)
    return _mob(gt, ii)


def _mob(gt: torch.Tensor, ii: IntegralImages) -> torch.Tensor:
    """float (G,) MOB of (G, 4) GT boxes; the mask areas are precomputed in ``ii``."""
    return ii.areas().to(gt.dtype) / (_areas(gt) + EPS)


def mask_fraction_in_boxes(boxes: BoxesLike, integral_masks: IntegralLike,
                           index: torch.Tensor) -> torch.Tensor:
    """Fraction of each box covered by a mask: ``|round(box) ∩ M| / (|box| + 1e-6)``.

    The general form of the MOB ratio for arbitrary boxes (e.g. for figures); for a GT box that
    holds its whole mask it equals :func:`mask_over_box`.

    Args:
        boxes (Boxes or Tensor): (N, 4) XYXY boxes.
        integral_masks (IntegralImages or Tensor): integral images of G masks.
        index (Tensor): int64 (N,), the mask of each box, in [0, G).

    Returns:
        Tensor: float (N,).
    """
    b = _as_box_tensor(boxes, "boxes")
    try:
        ii = as_integral_images(integral_masks)
    except ValueError as e:
        raise ValueError(f"integral_masks: {e}") from None
    if ii.device != b.device:
        raise ValueError(f"integral_masks is on {ii.device} but the boxes are on {b.device}")
    index = _check_index(index, b.shape[:1], len(ii), b.device)
    # Rounding keeps the checked boxes' x2 >= x1 and y2 >= y1: ordered boxes.
    cnt = ii.box_counts(torch.round(b).long(), index, ordered=True).to(b.dtype)
    return cnt / (_areas(b) + EPS)


def _check_index(index, shape, num_gt: int, device, name: str = "gt_index") -> torch.Tensor:
    if not isinstance(index, torch.Tensor):
        index = torch.as_tensor(index, device=device)
    if index.dtype.is_floating_point or index.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor, got {index.dtype}")
    if index.device != device:
        raise ValueError(f"{name} is on {index.device} but the boxes are on {device}")
    try:
        torch.broadcast_shapes(index.shape, tuple(shape))
    except RuntimeError:
        raise ValueError(f"{name} of shape {tuple(index.shape)} does not broadcast against "
                         f"the boxes' {tuple(shape)}") from None
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= num_gt):
        raise ValueError(f"{name} must lie in [0, {num_gt}), got values in "
                         f"[{int(index.min())}, {int(index.max())}]")
    return index.long()


def _maiou_from_terms(inter: torch.Tensor, union: torch.Tensor, cnt: torch.Tensor,
                      mob: torch.Tensor) -> torch.Tensor:
    """maIoU from the box terms, the mask counts and MOB (broadcastable), 0 where IoU is 0."""
    valid = (inter > 0) & (mob > 0)
    # Same operation order as the official code: (count / MOB) / union.
    maiou = cnt.to(union.dtype) / torch.where(valid, mob, torch.ones_like(mob)) / union
    return torch.where(valid, maiou, torch.zeros_like(maiou))


def _maiou_core(gt_b: torch.Tensor, anc_b: torch.Tensor, anc_rounded: torch.Tensor,
                index: Optional[torch.Tensor], ii: IntegralImages,
                mob: torch.Tensor) -> torch.Tensor:
    """maIoU of broadcastable pairs: GT boxes, anchors (float and rounded), mask index, MOB.

    ``index`` None: the pairs are laid out (G, ...), row g for GT g (see ``box_counts``).
    The anchors are checked boxes (x2 >= x1, y2 >= y1), so their rounding is ordered.
    """
    inter, union = _inter_union(gt_b, anc_b)
    cnt = ii.box_counts(anc_rounded, index, ordered=True)
    return _maiou_from_terms(inter, union, cnt, mob)


def pairwise_maiou(gt_boxes: BoxesLike, anchors: BoxesLike, integral_masks: IntegralLike,
                   chunk_size: Optional[int] = None) -> torch.Tensor:
    """Mask-aware IoU of every (GT, anchor) pair, exactly as SPEC 6.4 (Alg. 1).

    Args:
        gt_boxes (Boxes or Tensor): (G, 4) XYXY GT boxes, in input-image pixels.
        anchors (Boxes or Tensor): (A, 4) XYXY anchors (not clipped; may leave the image).
        integral_masks (IntegralImages or Tensor): integral images of the G GT masks, or dense
            int (G, H+1, W+1) ones (zero first row and column).
        chunk_size (int, optional): anchors processed at once; default keeps G * chunk_size
            near 1M pairs. Results do not depend on it.

    Returns:
        Tensor: float (G, A) in [0, 1] (up to the 1e-6 of the MOB ratio); 0 where the box IoU
        is 0 and on the rows of empty masks.

    Raises:
        ValueError: malformed boxes (shape, x2 < x1, non-finite), a number of integral images
            different from G, or a device mismatch.
    """
    gt = _as_box_tensor(gt_boxes, "gt_boxes")
    anc = _as_box_tensor(anchors, "anchors")
    if anc.device != gt.device:
        raise ValueError(f"anchors are on {anc.device} but gt_boxes are on {gt.device}")
    ii = _as_integral(integral_masks, gt.shape[0], gt.device)
    dtype = torch.promote_types(gt.dtype, anc.dtype)
    gt, anc = gt.to(dtype), anc.to(dtype)
    G, A = gt.shape[0], anc.shape[0]
    out = gt.new_zeros((G, A))
    if G == 0 or A == 0:
        return out
    if chunk_size is None:
        chunk_size = max(1, _MAX_PAIRS_PER_CHUNK // G)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    mob = _mob(gt, ii)[:, None]  # (G, 1)
    rounded = torch.round(anc).long()
    for s in range(0, A, chunk_size):  # chunks of anchors, for bounded memory
        e = min(A, s + chunk_size)
        out[:, s:e] = _maiou_core(gt[:, None, :], anc[None, s:e], rounded[None, s:e], None, ii, mob)
    return out


def pairwise_maiou_pairs(gt_boxes: BoxesLike, anchors: torch.Tensor, gt_index: torch.Tensor,
                         integral_masks: IntegralLike) -> torch.Tensor:
    """maIoU of explicit pairs: anchor ``anchors[...]`` against GT ``gt_index[...]``.

    ATSS evaluates only its candidates in the same way (``ATSSMatcher`` runs the same lookups
    inline, in the (G, C) layout), so ATSS with maIoU costs about as much as ATSS with IoU.
    Values equal the corresponding entries of :func:`pairwise_maiou`.

    Args:
        gt_boxes (Boxes or Tensor): (G, 4) XYXY GT boxes.
        anchors (Boxes or Tensor): (..., 4) XYXY anchors, e.g. (P, 4) or (G, C, 4).
        gt_index (Tensor): int64 (...), the GT of each anchor, broadcastable against
            ``anchors[..., 0]`` (e.g. (P,) or (G, 1)).
        integral_masks (IntegralImages or Tensor): integral images of the G GT masks.

    Returns:
        Tensor: float, the broadcast shape of ``anchors[..., 0]`` and ``gt_index``.
    """
    gt = _as_box_tensor(gt_boxes, "gt_boxes")
    if isinstance(anchors, Boxes):
        anchors = anchors.tensor
    if not isinstance(anchors, torch.Tensor) or anchors.dim() < 1 or anchors.shape[-1] != 4:
        shape = tuple(anchors.shape) if hasattr(anchors, "shape") else type(anchors).__name__
        raise ValueError(f"anchors must have shape (..., 4), got {shape}")
    if not anchors.dtype.is_floating_point:
        anchors = anchors.float()
    _check_box_values(anchors, "anchors")
    if anchors.device != gt.device:
        raise ValueError(f"anchors are on {anchors.device} but gt_boxes are on {gt.device}")
    ii = _as_integral(integral_masks, gt.shape[0], gt.device)
    index = _check_index(gt_index, anchors.shape[:-1], gt.shape[0], gt.device)
    return _maiou_pairs_unchecked(gt, anchors, index, ii)


def _maiou_pairs_unchecked(gt: torch.Tensor, anchors: torch.Tensor, index: torch.Tensor,
                           ii: IntegralImages, mob: Optional[torch.Tensor] = None) -> torch.Tensor:
    dtype = torch.promote_types(gt.dtype, anchors.dtype)
    gt, anchors = gt.to(dtype), anchors.to(dtype)
    if gt.shape[0] == 0 or anchors.numel() == 0 or index.numel() == 0:
        shape = torch.broadcast_shapes(anchors.shape[:-1], index.shape)
        return gt.new_zeros(shape)
    if mob is None:
        mob = _mob(gt, ii)
    return _maiou_core(gt[index], anchors, torch.round(anchors).long(), index, ii, mob[index])


def pairwise_maiou_bruteforce(gt_boxes: BoxesLike, anchors: BoxesLike, masks) -> torch.Tensor:
    """maIoU of every (GT, anchor) pair by counting mask pixels directly (no integral images).

    The oracle of :func:`pairwise_maiou` and the "without Alg. 1" row of the paper's Table 3.
    It loops over the GTs; for each, every anchor with a positive box IoU counts the mask pixels
    in rows y1..y2-1 and columns x1..x2-1 of its rounded, clipped box (a sum over all H x W
    pixels of row-in-box x column-in-box x mask, done as a matrix product).

    Args:
        gt_boxes (Boxes or Tensor): (G, 4) XYXY GT boxes.
        anchors (Boxes or Tensor): (A, 4) XYXY anchors.
        masks (Tensor or BitMasks): bool / uint8 (G, H, W) GT masks.

    Returns:
        Tensor: float (G, A), equal to :func:`pairwise_maiou` (to float rounding).
    """
    gt = _as_box_tensor(gt_boxes, "gt_boxes")
    anc = _as_box_tensor(anchors, "anchors")
    if anc.device != gt.device:
        raise ValueError(f"anchors are on {anc.device} but gt_boxes are on {gt.device}")
    masks = _as_masks(masks, gt.shape[0], gt.device, "masks")
    dtype = torch.promote_types(gt.dtype, anc.dtype)
    gt, anc = gt.to(dtype), anc.to(dtype)
    G, A = gt.shape[0], anc.shape[0]
    H, W = masks.shape[1:]
    out = gt.new_zeros((G, A))
    if G == 0 or A == 0:
        return out
    inter, union = _inter_union(gt[:, None, :], anc[None, :, :])
    mask_area = masks.flatten(1).sum(1).to(dtype)
    mob = mask_area / (_areas(gt) + EPS)
    r = torch.round(anc).long()
    x1, x2 = r[:, 0].clamp(0, W), r[:, 2].clamp(0, W)
    y1, y2 = r[:, 1].clamp(0, H), r[:, 3].clamp(0, H)
    ys = torch.arange(H, device=gt.device)
    xs = torch.arange(W, device=gt.device)
    # float32 sums of 0/1 products are exact below 2^24 pixels.
    cdt = torch.float32 if H * W < (1 << 24) else torch.float64
    for g in range(G):
        if mask_area[g] == 0:
            continue
        m = masks[g].to(cdt)
        sel = torch.nonzero(inter[g] > 0).flatten()
        step = max(1, (1 << 24) // max(1, H + W) // 4)
        for s in range(0, sel.numel(), step):
            idx = sel[s:s + step]
            rows = ((ys >= y1[idx, None]) & (ys < y2[idx, None])).to(cdt)  # (P, H)
            cols = ((xs >= x1[idx, None]) & (xs < x2[idx, None])).to(cdt)  # (P, W)
            cnt = ((rows @ m) * cols).sum(1).to(dtype)
            out[g, idx] = cnt / mob[g] / union[g, idx]
    return out
