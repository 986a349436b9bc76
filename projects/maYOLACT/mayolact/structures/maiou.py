"""Mask-aware IoU (maIoU, Alg. 1 of the paper): one kernel, its checked wrappers and the oracle.

maIoU between a ground truth (box B, mask M) and an anchor Â
(docs/REFERENCE.md §6.4, "maIoU"):

    MOB  = |M| / (|B| + 1e-6)                          mask-over-box ratio (Definition 1)
    I_ma = |round(Â) ∩ M| / MOB = |round(Â) ∩ M| |B| / |M|   mask-aware intersection (Eq. 3)
    maIoU = I_ma / max(|Â ∪ B|, 1e-6)                   box union of the *unrounded* boxes

and maIoU = 0 wherever the ordinary box IoU is 0. The mask count uses the anchor rounded half to
even (``torch.round``) and clipped to the image; a pixel (r, c) covers [c, c+1) x [r, r+1), so an
integer box (x1, y1, x2, y2) covers columns x1..x2-1 and rows y1..y2-1. Counts come from integral
images (:meth:`mayolact.structures.integral_image.IntegralImages.box_counts`, whose lookup constants
are built with the structure, in the data loader), four reads per pair, with no loop over GTs or
anchors.

One kernel, :func:`paired_maiou`, computes maIoU everywhere: :func:`pairwise_maiou` (all pairs,
in chunks), the ATSS matcher (its G x C candidates) and, through :func:`pairwise_maiou`, the
figures. :func:`pairwise_maiou_bruteforce` is the independent oracle (and the "without Alg. 1"
row of Table 3): it counts mask pixels directly and shares only the definition with the kernel.

**Empty masks.** maIoU is 0 for a GT whose mask is empty (MOB = 0), never NaN. The official code
divides 0 by MOB = 0 and gets NaN, whose NaN ATSS threshold gives such a GT no positives; the
matcher states that rule explicitly (:class:`mayolact.modeling.matchers.ATSSMatcher`), so
assignments are the official ones.

Box measures (IoU, GIoU, DIoU, the eps-clamped union) live in :mod:`mayolact.structures.box_ops`.

Shape shorthand:
    G: number of ground truths (masks) of one image.
    A: number of anchors (all levels).
    H, W: image (mask) height and width.
"""
from typing import Optional, Union

import torch
from detectron2.structures import BitMasks, Boxes

from mayolact.structures.box_ops import EPS, as_box_tensor, box_area, box_inter_union
from mayolact.structures.integral_image import IntegralImages, as_integral_images

__all__ = [
    "paired_maiou",
    "pairwise_maiou",
    "pairwise_maiou_bruteforce",
    "mask_over_box",
    "mask_fraction_in_boxes",
    "check_integral_masks",
    "check_gt_masks",
]

# pairwise_maiou processes at most this many (GT, anchor) pairs at once (bounded memory).
_MAX_PAIRS_PER_CHUNK = 1 << 20

BoxesLike = Union[Boxes, torch.Tensor]
IntegralLike = Union[IntegralImages, torch.Tensor]


# ----------------------------------------------------------------------------- validation
def check_integral_masks(integral_masks: IntegralLike, num_gt: int, device: torch.device,
                         name: str = "integral_masks") -> IntegralImages:
    """The integral images of ``num_gt`` masks as :class:`IntegralImages`, checked.

    Args:
        integral_masks (IntegralImages or Tensor): integral images, or dense int (G, H+1, W+1)
            ones (zero first row and column).
        num_gt (int): the number of GT boxes they must match.
        device (torch.device): the device of the boxes.
        name (str): the argument's name, for error messages.

    Raises:
        ValueError: naming ``name``: malformed integral images, a count other than ``num_gt``, or
            another device.
    """
    try:
        ii = as_integral_images(integral_masks)
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None
    if len(ii) != num_gt:
        raise ValueError(f"{name} holds {len(ii)} integral images but there are {num_gt} GT boxes")
    if ii.device != device:
        raise ValueError(f"{name} is on {ii.device} but the boxes are on {device}")
    return ii


def check_gt_masks(masks, num_gt: int, device: torch.device,
                   name: str = "gt_masks") -> torch.Tensor:
    """(G, H, W) bool masks from a tensor or ``BitMasks``, checked.

    Args:
        masks (Tensor or BitMasks): (G, H, W) masks, any dtype (non-zero is foreground).
        num_gt (int): the number of GT boxes they must match.
        device (torch.device): the device of the boxes.
        name (str): the argument's name, for error messages.

    Raises:
        ValueError: naming ``name``: not (G, H, W), a count other than ``num_gt``, or another
            device.
    """
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


# -------------------------------------------------------------------------------- maIoU
def _mob(gt: torch.Tensor, ii: IntegralImages) -> torch.Tensor:
    """MOB of (G, ..., 4) GT boxes -> (G, ...); the mask areas are precomputed in ``ii``."""
    areas = ii.areas().to(gt.dtype).view((len(ii),) + (1,) * (gt.dim() - 2))
    return areas / (box_area(gt) + EPS)


def paired_maiou(gt_boxes: torch.Tensor, anchors: torch.Tensor,
                 integral_masks: IntegralImages) -> torch.Tensor:
    """The maIoU kernel: maIoU of broadcastable (GT, anchor) pairs, row g for GT g (no checks).

    ``(|round(anchor) ∩ M| / MOB) / max(|anchor ∪ B|, 1e-6)`` in the official operation order;
    0 where the box IoU is 0 and on the rows of empty masks.

    Args:
        gt_boxes (Tensor): (G, 1, ..., 4) XYXY GT boxes (one row per GT; the trailing dims
            broadcast against ``anchors``).
        anchors (Tensor): (G, ..., 4) or (1, ..., 4) XYXY anchors with x2 >= x1 and y2 >= y1
            (checked by the caller), same dtype as ``gt_boxes``.
        integral_masks (IntegralImages): the G masks' integral images, on the same device.

    Returns:
        Tensor: (G, ...) maIoU, e.g. (G, C) for ATSS candidates (G, C, 4) or (G, A) for
        (1, A, 4) anchors.
    """
    inter, union = box_inter_union(gt_boxes, anchors)
    mob = _mob(gt_boxes, integral_masks)
    # Rounding keeps x2 >= x1 and y2 >= y1: ordered boxes for box_counts.
    cnt = integral_masks.box_counts(torch.round(anchors).long(), ordered=True)
    valid = (inter > 0) & (mob > 0)
    # Same operation order as the official code: (count / MOB) / union.
    maiou = cnt.to(union.dtype) / torch.where(valid, mob, torch.ones_like(mob)) / union
    return torch.where(valid, maiou, torch.zeros_like(maiou))


def mask_over_box(gt_boxes: BoxesLike, integral_masks: IntegralLike) -> torch.Tensor:
    """MOB ratio of Definition 1: ``|M| / (|B| + 1e-6)`` per ground truth.

    Every mask pixel counts, also those outside the box (they exist after nearest resizing).

    Args:
        gt_boxes (Boxes or Tensor): (G, 4) XYXY GT boxes.
        integral_masks (IntegralImages or Tensor): G integral images, or dense int (G, H+1, W+1).

    Returns:
        Tensor: float (G,), 0 for empty masks.
    """
    gt = as_box_tensor(gt_boxes, "gt_boxes")
    ii = check_integral_masks(integral_masks, gt.shape[0], gt.device)
    return _mob(gt, ii)


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
    b = as_box_tensor(boxes, "boxes")
    try:
        ii = as_integral_images(integral_masks)
    except ValueError as e:
        raise ValueError(f"integral_masks: {e}") from None
    if ii.device != b.device:
        raise ValueError(f"integral_masks is on {ii.device} but the boxes are on {b.device}")
    index = _check_index(index, b.shape[:1], len(ii), b.device)
    # Rounding keeps the checked boxes' x2 >= x1 and y2 >= y1: ordered boxes.
    cnt = ii.box_counts(torch.round(b).long(), index, ordered=True).to(b.dtype)
    return cnt / (box_area(b) + EPS)


def _check_index(index, shape, num_gt: int, device, name: str = "index") -> torch.Tensor:
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


def pairwise_maiou(gt_boxes: BoxesLike, anchors: BoxesLike, integral_masks: IntegralLike,
                   chunk_size: Optional[int] = None) -> torch.Tensor:
    """Mask-aware IoU of every (GT, anchor) pair, with the kernel :func:`paired_maiou`.

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
    gt = as_box_tensor(gt_boxes, "gt_boxes")
    anc = as_box_tensor(anchors, "anchors")
    if anc.device != gt.device:
        raise ValueError(f"anchors are on {anc.device} but gt_boxes are on {gt.device}")
    ii = check_integral_masks(integral_masks, gt.shape[0], gt.device)
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
    for s in range(0, A, chunk_size):  # chunks of anchors, for bounded memory
        e = min(A, s + chunk_size)
        out[:, s:e] = paired_maiou(gt[:, None, :], anc[None, s:e], ii)
    return out


def pairwise_maiou_bruteforce(gt_boxes: BoxesLike, anchors: BoxesLike, masks) -> torch.Tensor:
    """maIoU of every (GT, anchor) pair by counting mask pixels directly (no integral images).

    The independent oracle of the kernel :func:`paired_maiou` (it shares only the definition:
    its box terms, MOB and counts are computed here, GT by GT) and the "without Alg. 1" row of the
    paper's Table 3. For each GT, every anchor with a positive box intersection counts the mask
    pixels in rows y1..y2-1 and columns x1..x2-1 of its rounded, clipped box (a sum over all
    H x W pixels of row-in-box x column-in-box x mask, done as a matrix product).

    Args:
        gt_boxes (Boxes or Tensor): (G, 4) XYXY GT boxes.
        anchors (Boxes or Tensor): (A, 4) XYXY anchors.
        masks (Tensor or BitMasks): bool / uint8 (G, H, W) GT masks.

    Returns:
        Tensor: float (G, A), equal to :func:`pairwise_maiou` (to float rounding); 0 where the
        boxes do not intersect and on the rows of empty masks.
    """
    gt = as_box_tensor(gt_boxes, "gt_boxes")
    anc = as_box_tensor(anchors, "anchors")
    if anc.device != gt.device:
        raise ValueError(f"anchors are on {anc.device} but gt_boxes are on {gt.device}")
    masks = check_gt_masks(masks, gt.shape[0], gt.device, "masks")
    dtype = torch.promote_types(gt.dtype, anc.dtype)
    gt, anc = gt.to(dtype), anc.to(dtype)
    G, A = gt.shape[0], anc.shape[0]
    H, W = masks.shape[1:]
    out = gt.new_zeros((G, A))
    if G == 0 or A == 0:
        return out
    mask_area = masks.flatten(1).sum(1).to(dtype)
    anc_area = (anc[:, 2] - anc[:, 0]) * (anc[:, 3] - anc[:, 1])
    r = torch.round(anc).long()
    x1, x2 = r[:, 0].clamp(0, W), r[:, 2].clamp(0, W)
    y1, y2 = r[:, 1].clamp(0, H), r[:, 3].clamp(0, H)
    ys = torch.arange(H, device=gt.device)
    xs = torch.arange(W, device=gt.device)
    # float32 sums of 0/1 products are exact below 2^24 pixels.
    cdt = torch.float32 if H * W < (1 << 24) else torch.float64
    step = max(1, (1 << 24) // max(1, H + W) // 4)
    for g in range(G):
        if mask_area[g] == 0:
            continue
        gx1, gy1, gx2, gy2 = gt[g]
        iw = (torch.minimum(anc[:, 2], gx2) - torch.maximum(anc[:, 0], gx1)).clamp(min=0)
        ih = (torch.minimum(anc[:, 3], gy2) - torch.maximum(anc[:, 1], gy1)).clamp(min=0)
        inter = iw * ih
        gt_area = (gx2 - gx1) * (gy2 - gy1)
        union = (gt_area + anc_area - inter).clamp(min=1e-6)
        mob = mask_area[g] / (gt_area + 1e-6)
        m = masks[g].to(cdt)
        sel = torch.nonzero(inter > 0).flatten()
        for s in range(0, sel.numel(), step):
            idx = sel[s:s + step]
            rows = ((ys >= y1[idx, None]) & (ys < y2[idx, None])).to(cdt)  # (P, H)
            cols = ((xs >= x1[idx, None]) & (xs < x2[idx, None])).to(cdt)  # (P, W)
            cnt = ((rows @ m) * cols).sum(1).to(dtype)
            out[g, idx] = cnt / mob / union[idx]
    return out
