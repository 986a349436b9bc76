"""Box operations Detectron2 does not provide: the eps-clamped IoU family of mmdet, batched IoU,
GIoU, DIoU, input checks, and the float64 numpy IoU of the data loader's crop.

Detectron2's ``pairwise_iou`` (used where its convention fits, e.g. by the fixed-IoU matcher and
the figures) divides by the raw union where the intersection is positive and returns 0 elsewhere.
The official implementation (mmdet's ``bbox_overlaps``) divides by ``max(union, 1e-6)`` and so
does everything here; the two differ only when both boxes have an area below 1e-6 px².

Naming: ``paired_*`` functions work element by element on broadcastable (..., 4) tensors and do
not check their input (the fast paths of the matchers and of Fast NMS); ``pairwise_*`` functions
take (N, 4) and (M, 4) boxes (``Boxes`` or tensors), check them and return (N, M).

All boxes are XYXY (x1, y1, x2, y2) in pixels.
"""
from typing import Sequence, Tuple, Union

import numpy as np
import torch
from detectron2.structures import Boxes

__all__ = [
    "EPS",
    "as_box_tensor",
    "check_box_values",
    "box_area",
    "box_inter_union",
    "paired_iou",
    "paired_giou",
    "paired_diou",
    "pairwise_giou",
    "pairwise_diou",
    "batched_box_iou",
    "box_iou_numpy",
]

EPS = 1e-6  # lower bound of unions, enclosing areas and diagonals (mmdet's eps)

BoxesLike = Union[Boxes, torch.Tensor]


# ----------------------------------------------------------------------------- checks
def check_box_values(boxes: torch.Tensor, name: str) -> None:
    """Check finite coordinates and x2 >= x1, y2 >= y1 for (..., 4) boxes (one host sync).

    Raises:
        ValueError: naming ``name`` and, for a reversed box, its index and coordinates.
    """
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


def as_box_tensor(boxes: BoxesLike, name: str) -> torch.Tensor:
    """The (N, 4) XYXY float tensor of ``boxes`` (integer input becomes float32), checked.

    Args:
        boxes (Boxes or Tensor): (N, 4) XYXY boxes.
        name (str): the argument's name, for error messages.

    Raises:
        ValueError: naming ``name``: not ``Boxes`` or a tensor, a shape other than (N, 4),
            non-finite coordinates or a box with x2 < x1 or y2 < y1.
    """
    if isinstance(boxes, Boxes):
        boxes = boxes.tensor
    if not isinstance(boxes, torch.Tensor):
        raise ValueError(f"{name} must be detectron2 Boxes or an (N, 4) tensor, "
                         f"got {type(boxes).__name__}")
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name} must have shape (N, 4) (XYXY), got {tuple(boxes.shape)}")
    if not boxes.dtype.is_floating_point:
        boxes = boxes.float()
    check_box_values(boxes, name)
    return boxes


# --------------------------------------------------------------------------- measures
def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Areas of (..., 4) boxes -> (...)."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_inter_union(boxes1: torch.Tensor,
                    boxes2: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Intersection area and eps-clamped union of broadcastable (..., 4) boxes.

    Returns:
        inter (Tensor): (...) ``|A ∩ B|``.
        union (Tensor): (...) ``max(|A| + |B| - |A ∩ B|, 1e-6)``.
    """
    lt = torch.maximum(boxes1[..., :2], boxes2[..., :2])
    rb = torch.minimum(boxes1[..., 2:], boxes2[..., 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = (box_area(boxes1) + box_area(boxes2) - inter).clamp(min=EPS)
    return inter, union


def _enclosing_wh(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """(..., 2) width and height of the smallest box enclosing both boxes."""
    lt = torch.minimum(boxes1[..., :2], boxes2[..., :2])
    rb = torch.maximum(boxes1[..., 2:], boxes2[..., 2:])
    return (rb - lt).clamp(min=0)


def paired_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """IoU of broadcastable (..., 4) boxes, element by element: ``inter / max(union, 1e-6)``.

    No input checks (fast path).

    Returns:
        Tensor: (...) IoU in [0, 1].
    """
    inter, union = box_inter_union(boxes1, boxes2)
    return inter / union


def paired_giou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """GIoU of broadcastable (..., 4) boxes, element by element (no input checks).

    ``giou = iou - (enclose - union) / enclose`` with ``enclose = max(area of the smallest
    enclosing box, 1e-6)`` and ``union = max(|A| + |B| - |A ∩ B|, 1e-6)``.

    Returns:
        Tensor: (...) GIoU in (-1, 1].
    """
    inter, union = box_inter_union(boxes1, boxes2)
    ewh = _enclosing_wh(boxes1, boxes2)
    enclose = (ewh[..., 0] * ewh[..., 1]).clamp(min=EPS)
    return inter / union - (enclose - union) / enclose


def paired_diou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """DIoU of broadcastable (..., 4) boxes, element by element (no input checks).

    ``diou = iou - ((cx2 - cx1)^2 + (cy2 - cy1)^2) / max(enclose_w^2 + enclose_h^2, 1e-6)``.

    Returns:
        Tensor: (...) DIoU in (-1, 1].
    """
    inter, union = box_inter_union(boxes1, boxes2)
    ewh = _enclosing_wh(boxes1, boxes2)
    diag = (ewh[..., 0] ** 2 + ewh[..., 1] ** 2).clamp(min=EPS)
    c1 = (boxes1[..., :2] + boxes1[..., 2:]) / 2
    c2 = (boxes2[..., :2] + boxes2[..., 2:]) / 2
    dist = ((c2 - c1) ** 2).sum(-1)
    return inter / union - dist / diag


def _pairwise(paired_fn, boxes1: BoxesLike, boxes2: BoxesLike) -> torch.Tensor:
    b1 = as_box_tensor(boxes1, "boxes1")
    b2 = as_box_tensor(boxes2, "boxes2")
    return paired_fn(b1[:, None, :], b2[None, :, :])


def pairwise_giou(boxes1: BoxesLike, boxes2: BoxesLike) -> torch.Tensor:
    """GIoU of all pairs (see :func:`paired_giou`).

    Args:
        boxes1 (Boxes or Tensor): (N, 4) XYXY boxes.
        boxes2 (Boxes or Tensor): (M, 4) XYXY boxes.

    Returns:
        Tensor: float (N, M) in (-1, 1].

    Raises:
        ValueError: malformed boxes (see :func:`as_box_tensor`).
    """
    return _pairwise(paired_giou, boxes1, boxes2)


def pairwise_diou(boxes1: BoxesLike, boxes2: BoxesLike) -> torch.Tensor:
    """DIoU of all pairs (see :func:`paired_diou`); arguments and errors as :func:`pairwise_giou`.

    Returns:
        Tensor: float (N, M) in (-1, 1].
    """
    return _pairwise(paired_diou, boxes1, boxes2)


def batched_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """IoU of every pair within each batch entry (mmdet's eps-clamped union; no input checks).

    Args:
        boxes1 (Tensor): (B, m, 4) XYXY boxes.
        boxes2 (Tensor): (B, n, 4) XYXY boxes.

    Returns:
        Tensor: (B, m, n) IoU.
    """
    return paired_iou(boxes1[..., :, None, :], boxes2[..., None, :, :])


def box_iou_numpy(box: Sequence[float], boxes: np.ndarray) -> np.ndarray:
    """IoU of one box with each of N boxes, in Detectron2's ``pairwise_iou`` convention, in numpy.

    ``inter / (|box| + |boxes[i]| - inter)`` where the intersection is positive, 0 elsewhere.
    For the data loader: the SSD crop evaluates it about a hundred times per image on a handful
    of float64 boxes, where numpy's per-call cost is a fraction of torch's, and float64 keeps its
    comparisons with the IoU thresholds exact.

    Args:
        box: (x1, y1, x2, y2), e.g. Python ints.
        boxes (ndarray): float64 (N, 4) XYXY boxes.

    Returns:
        ndarray: float64 (N,).
    """
    x1, y1, x2, y2 = box
    iw = np.minimum(boxes[:, 2], x2) - np.maximum(boxes[:, 0], x1)
    ih = np.minimum(boxes[:, 3], y2) - np.maximum(boxes[:, 1], y1)
    inter = np.maximum(iw, 0.0) * np.maximum(ih, 0.0)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + (x2 - x1) * (y2 - y1) - inter
    return np.where(inter > 0, inter / np.where(inter > 0, union, 1.0), 0.0)
