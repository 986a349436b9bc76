"""YOLACT inference tail: Fast NMS, prototype-mask assembly and cropping, full-image masks.

Shape shorthand:
    n: candidate detections of one image (after the per-level top-k).
    K: foreground classes (scores exclude the background column).
    k: prototypes (coefficients per detection).
    T: candidates kept per class by Fast NMS (``top_k``, 200).
    Hp, Wp: prototype resolution (2x P3).
    S: the (square) network input; boxes before post-processing are in its pixels.

Full-image masks never go through Detectron2's ``detector_postprocess`` ROI-mask path: they are
carried under ``pred_global_masks`` (prototype resolution), which ``detector_postprocess`` filters
along with the boxes, then resized straight to the output size and thresholded here.
"""
from typing import Optional, Tuple

import torch
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances
from torch import Tensor
from torch.nn import functional as F

from mayolact.structures.box_ops import paired_iou

__all__ = [
    "fast_nms",
    "box_crop_region",
    "crop_masks",
    "assemble_masks",
    "yolact_postprocess",
]


def fast_nms(
    boxes: Tensor,
    scores: Tensor,
    coeffs: Optional[Tensor] = None,
    iou_threshold: float = 0.5,
    score_threshold: float = 0.05,
    top_k: int = 200,
    max_num: int = 100,
) -> Tuple[Tensor, Tensor, Tensor, Optional[Tensor]]:
    """YOLACT's Fast NMS, class-wise in parallel (mmdet ``fast_nms``).

    The official algorithm: docs/REFERENCE.md §9.2 (Fast NMS).

    Per class, the ``top_k`` candidates by score are kept; a candidate is suppressed when its IoU
    with any higher-scoring candidate of the same class (suppressed or not) exceeds
    ``iou_threshold``; survivors also need ``score > score_threshold``. The survivors of all
    classes are sorted by score and the first ``max_num`` kept (all when ``max_num <= 0``). Ties
    rank by anchor index within a class; equal final scores keep class-major order.

    Cost: IoUs are computed only among the P class scores above ``score_threshold`` (a few
    hundred for a trained model, against K * top_k), each against the band of at most
    ``min(top_k, n)`` candidates ranked just above it: P * min(top_k, n) IoUs instead of
    K * top_k**2, with the same detections, bit for bit, as the dense (K, top_k, top_k) form.

    Args:
        boxes (Tensor): (n, 4) decoded boxes.
        scores (Tensor): (n, K) foreground class scores (no background column).
        coeffs (Tensor or None): (n, k) mask coefficients, gathered along with the boxes.
        iou_threshold (float): suppress when IoU > this.
        score_threshold (float): keep when score > this.
        top_k (int): candidates per class.
        max_num (int): detections kept in all.

    Returns:
        boxes (Tensor): (m, 4).
        scores (Tensor): (m,), descending.
        classes (Tensor): int64 (m,), 0-based labels.
        coeffs (Tensor or None): (m, k).
    """
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"fast_nms: boxes must be (n, 4), got {tuple(boxes.shape)}")
    if scores.dim() != 2 or scores.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"fast_nms: scores must be (n, K) with n = {boxes.shape[0]}, got {tuple(scores.shape)}"
        )
    if coeffs is not None and (coeffs.dim() != 2 or coeffs.shape[0] != boxes.shape[0]):
        raise ValueError(
            f"fast_nms: coeffs must be (n, k) with n = {boxes.shape[0]}, got {tuple(coeffs.shape)}"
        )
    num_classes = scores.shape[1]
    if boxes.shape[0] == 0 or num_classes == 0 or top_k <= 0:
        empty_coeffs = None if coeffs is None else coeffs[:0]
        return boxes[:0], scores.new_zeros((0,)), torch.zeros(
            (0,), dtype=torch.int64, device=boxes.device), empty_coeffs

    # Only candidates that can matter. A candidate is kept only if its score > score_threshold,
    # and only candidates ranked above it in its class (score >= its score) can suppress it, so
    # every class score <= score_threshold is dropped before any IoU is computed. NaN scores rank
    # first in a descending sort, so they stay as (never kept) suppressors, as in the dense form.
    cls_idx, anchor_idx = (~(scores.t() <= score_threshold)).nonzero(as_tuple=True)  # (P,)
    cand_scores = scores[anchor_idx, cls_idx]
    # Class-major, then descending score, ties by anchor index: the order of a stable descending
    # sort of each class's scores (two stable sorts; nonzero gives anchors ascending per class).
    order = cand_scores.sort(descending=True, stable=True).indices
    order = order[cls_idx[order].sort(stable=True).indices]
    cls_idx, anchor_idx, cand_scores = cls_idx[order], anchor_idx[order], cand_scores[order]
    counts = torch.bincount(cls_idx, minlength=num_classes)
    first = (counts.cumsum(0) - counts)[cls_idx]  # position of the class's best candidate
    rank = torch.arange(cls_idx.shape[0], device=boxes.device) - first
    top = (rank < top_k).nonzero().squeeze(1)  # each class's top_k, still class-major
    cls_idx, anchor_idx, cand_scores, rank = (
        x[top] for x in (cls_idx, anchor_idx, cand_scores, rank))

    # The candidates above candidate p in its class are the rank[p] positions just before p, at
    # most top_k - 1 of them: IoUs with a band of width W = min(top_k, n) instead of all top_k**2
    # pairs of every class. IoU(higher, lower) as in the dense form, so the values are identical.
    # Column j of row p holds candidate p - W + j, at distance W - j above p. Both operands are
    # coordinate-major, so that the elementwise ops run along W with unit stride; index_select
    # (not unfold, which ONNX cannot export with a data-dependent P) gathers the window.
    cand_boxes = boxes[anchor_idx]  # (P, 4)
    width = min(top_k, boxes.shape[0])
    coords = F.pad(cand_boxes.t(), (width, 0))  # (4, W + P), W leading zero boxes
    band = torch.arange(width, device=boxes.device)  # (W,)
    window_idx = (torch.arange(cls_idx.shape[0], device=boxes.device)[:, None] + band).flatten()
    window = coords.index_select(1, window_idx).view(4, cls_idx.shape[0], width).permute(1, 2, 0)
    iou = paired_iou(window, coords[:, width:].t()[:, None, :])  # (P, W)
    distance = width - band  # (W,)
    iou = torch.where(distance[None, :] <= rank[:, None], iou, iou.new_zeros(()))
    iou_max = iou.max(dim=1).values  # (P,): max IoU with any higher-scoring candidate, 0 if none
    keep = ((iou_max <= iou_threshold) & (cand_scores > score_threshold)).nonzero().squeeze(1)

    out_scores, order = cand_scores[keep].sort(dim=0, descending=True, stable=True)
    if max_num > 0:
        order = order[:max_num]
        out_scores = out_scores[:max_num]
    keep = keep[order]
    out_coeffs = None if coeffs is None else coeffs[anchor_idx[keep]]
    return cand_boxes[keep], out_scores, cls_idx[keep], out_coeffs


def box_crop_region(boxes: Tensor, height: int, width: int, padding: int = 1) -> Tensor:
    """The pixels YOLACT's ``crop`` keeps for each box (``sanitize_coordinates``;
    docs/REFERENCE.md §8, "Protonet and mask assembly").

    With ``x1 = min(x1, x2)``, ``x2 = max(new x1, x2)`` (the official order: a reversed box keeps
    only its padding), then ``x1 = max(x1 - padding, 0)`` and
    ``x2 = min(x2 + padding, width)``, pixel column ``c`` is kept iff ``x1 <= c < x2``; rows alike.
    Coordinates stay float (no rounding).

    Args:
        boxes (Tensor): (N, 4) boxes in absolute pixels of the (height, width) mask grid.
        height, width (int): the mask grid.
        padding (int or float): pixels added on each side.

    Returns:
        Tensor: bool (N, height, width).
    """
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"box_crop_region: boxes must be (N, 4), got {tuple(boxes.shape)}")
    boxes = boxes.float()
    x1 = torch.minimum(boxes[:, 0], boxes[:, 2])
    x2 = torch.maximum(x1, boxes[:, 2])
    y1 = torch.minimum(boxes[:, 1], boxes[:, 3])
    y2 = torch.maximum(y1, boxes[:, 3])
    x1 = (x1 - padding).clamp(min=0)
    x2 = (x2 + padding).clamp(max=width)
    y1 = (y1 - padding).clamp(min=0)
    y2 = (y2 + padding).clamp(max=height)
    cols = torch.arange(width, device=boxes.device, dtype=boxes.dtype)
    rows = torch.arange(height, device=boxes.device, dtype=boxes.dtype)
    keep_cols = (cols[None, :] >= x1[:, None]) & (cols[None, :] < x2[:, None])  # (N, W)
    keep_rows = (rows[None, :] >= y1[:, None]) & (rows[None, :] < y2[:, None])  # (N, H)
    return keep_rows[:, :, None] & keep_cols[:, None, :]


def crop_masks(masks: Tensor, boxes: Tensor, padding: int = 1) -> Tensor:
    """Zero every pixel of mask i outside box i (padded), as YOLACT's ``crop``.

    Args:
        masks (Tensor): (N, H, W) masks (probabilities or any values).
        boxes (Tensor): (N, 4) boxes in absolute pixels of the mask grid.
        padding (int or float): see :func:`box_crop_region`.

    Returns:
        Tensor: (N, H, W), same dtype as ``masks``.
    """
    if masks.dim() != 3 or boxes.shape[:1] != masks.shape[:1]:
        raise ValueError(
            "crop_masks: expected masks (N, H, W) and boxes (N, 4), got "
            f"{tuple(masks.shape)} and {tuple(boxes.shape)}"
        )
    region = box_crop_region(boxes, masks.shape[1], masks.shape[2], padding)
    return masks * region.to(masks.dtype)


def assemble_masks(prototypes: Tensor, coeffs: Tensor, boxes: Tensor, padding: int = 1) -> Tensor:
    """Instance masks ``crop(sigmoid(prototypes . coeffs))`` at prototype resolution.

    As the official assembly: docs/REFERENCE.md §8 (protonet and mask assembly).

    Args:
        prototypes (Tensor): (k, Hp, Wp).
        coeffs (Tensor): (n, k).
        boxes (Tensor): (n, 4) crop boxes in prototype pixels.
        padding (int): crop padding.

    Returns:
        Tensor: float32 (n, Hp, Wp) probabilities, zero outside the crops.
    """
    if prototypes.dim() != 3 or coeffs.dim() != 2 or coeffs.shape[1] != prototypes.shape[0]:
        raise ValueError(
            "assemble_masks: expected prototypes (k, Hp, Wp) and coeffs (n, k), got "
            f"{tuple(prototypes.shape)} and {tuple(coeffs.shape)}"
        )
    logits = torch.einsum("khw,nk->nhw", prototypes.float(), coeffs.float())
    return crop_masks(logits.sigmoid(), boxes, padding)


def yolact_postprocess(
    results: Instances,
    prototypes: Tensor,
    output_height: int,
    output_width: int,
    mask_threshold: float = 0.5,
    crop_padding: int = 1,
) -> Instances:
    """Scale detections of one image to the output size and build full-image masks.

    As the official inference: docs/REFERENCE.md §9.3 (rescaling), §9.4 (masks).

    Boxes are scaled per axis from the network input (``results.image_size``) to
    (output_height, output_width), clipped, and empty ones dropped (Detectron2's
    ``detector_postprocess``). Masks: ``sigmoid(prototypes . coeffs)`` cropped by the predicted
    boxes (scaled to prototype resolution) with ``crop_padding``, resized bilinearly
    (align_corners False) straight to the output size, and thresholded with ``> mask_threshold``.

    Args:
        results (Instances): image_size (S_h, S_w), with ``pred_boxes`` (in input pixels),
            ``scores``, ``pred_classes`` and ``pred_coeffs`` (n, k).
        prototypes (Tensor): (k, Hp, Wp) prototypes of this image.
        output_height, output_width (int): the requested output size.
        mask_threshold (float): threshold on the resized probabilities.
        crop_padding (int): crop padding in prototype pixels.

    Returns:
        Instances: image_size (output_height, output_width), with ``pred_boxes``, ``scores``,
        ``pred_classes`` and ``pred_masks`` bool (n', output_height, output_width).
    """
    for field in ("pred_boxes", "scores", "pred_classes", "pred_coeffs"):
        if not results.has(field):
            raise ValueError(f"yolact_postprocess: results lack the field '{field}'")
    in_h, in_w = results.image_size
    hp, wp = prototypes.shape[-2:]
    boxes = results.pred_boxes.tensor
    scale = boxes.new_tensor([wp / in_w, hp / in_h, wp / in_w, hp / in_h])
    fields = dict(results.get_fields())
    coeffs = fields.pop("pred_coeffs")
    fields["pred_boxes"] = Boxes(boxes.clone())  # detector_postprocess scales boxes in place
    masks = assemble_masks(prototypes, coeffs, boxes * scale, crop_padding)
    out = detector_postprocess(
        Instances(results.image_size, pred_global_masks=masks, **fields),
        output_height,
        output_width,
    )
    global_masks = out.get("pred_global_masks")
    out.remove("pred_global_masks")
    # One path for any number of detections (an (n, 1, Hp, Wp) batch resizes even when n = 0),
    # and tensor output sizes passed on as they are: when the model is traced for export
    # (mayolact.export.exporter) a branch on len(out) or an int() would be frozen into the graph.
    size = [s if isinstance(s, Tensor) else int(s) for s in (output_height, output_width)]
    resized = F.interpolate(
        global_masks[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    out.pred_masks = resized > mask_threshold
    return out
