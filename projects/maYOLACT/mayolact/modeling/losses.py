"""YOLACT's training losses: OHEM softmax CE, SmoothL1 boxes, prototype masks, semantics.

The official losses: docs/REFERENCE.md §7 (losses).

Shape shorthand:
    N: images in the batch.
    R: anchors of one image, all levels concatenated (sum of Hi*Wi*A).
    K: foreground classes; class logits have K + 1 columns, background LAST (index K).
    M: positive anchors selected in the whole batch.
    k: prototypes.
    Hp, Wp: prototype resolution (2x P3); Hs, Ws: semantic-head resolution (P3).
    G_i: ground truths of image i; H, W: input image (and GT mask) size.

Naming convention:
    labels: per-anchor targets in {-1 ignore, 0..K-1 foreground, K background}.
    normalizer P: ``sum_i max(num_pos_i, 1)`` over the images of THIS process (mmdet normalises
        per GPU, without an all-reduce; we do the same, so each process's losses equal mmdet's).

All losses are computed in float32 from logits (BCE / CE with logits), so they are safe under
autocast, and each one stays finite and connected to its inputs when there are no positives or no
ground truths at all (``0 * sum(inputs)``), so DDP sees every parameter used.
"""
from typing import List, Optional, Sequence, Tuple

import torch
from detectron2.modeling.box_regression import Box2BoxTransform
from fvcore.nn import smooth_l1_loss
from torch import Tensor
from torch.nn import functional as F

from mayolact.modeling.postprocessing import box_crop_region

__all__ = [
    "ohem_softmax_cross_entropy",
    "ohem_selection",
    "smooth_l1_box_loss",
    "yolact_mask_loss",
    "semantic_seg_loss",
    "positive_normalizer",
]


def positive_normalizer(labels: Tensor, num_classes: int) -> Tensor:
    """P = sum over images of max(num_pos_i, 1) (docs/REFERENCE.md §7), as a float32
    scalar tensor.

    Args:
        labels (Tensor): (N, R) or (R,) anchor labels in {-1, 0..K}.
        num_classes (int): K.
    """
    if labels.dim() == 1:
        labels = labels[None]
    num_pos = ((labels >= 0) & (labels < num_classes)).sum(dim=1)
    return num_pos.clamp(min=1).sum().float()


@torch.no_grad()
def ohem_selection(
    losses: Tensor, labels: Tensor, num_classes: int, neg_pos_ratio: float = 3
) -> Tensor:
    """The anchors that train the classifier under OHEM, per image.

    docs/REFERENCE.md §7.1 (classification).

    All positives; of the negatives (label K), the ``min(neg_pos_ratio * num_pos, num_neg)`` with
    the largest loss, or all of them when the image has no positive. Ignored anchors (-1) never.

    Args:
        losses (Tensor): (N, R) per-anchor losses (used only to rank the negatives).
        labels (Tensor): (N, R) labels in {-1, 0..K}.
        num_classes (int): K.
        neg_pos_ratio (float): negatives per positive.

    Returns:
        Tensor: bool (N, R).
    """
    pos = (labels >= 0) & (labels < num_classes)
    neg = labels == num_classes
    num_pos = pos.sum(dim=1)
    num_neg = neg.sum(dim=1)
    num_hard = torch.where(
        num_pos > 0,
        torch.minimum((num_pos.float() * neg_pos_ratio).long(), num_neg),
        num_neg,
    )
    # Rank the negatives of each image by loss, descending; other anchors go last (loss >= 0).
    ranked = torch.where(neg, losses.float(), losses.new_full((), -1.0, dtype=torch.float32))
    order = ranked.argsort(dim=1, descending=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    hard_neg = neg & (rank < num_hard[:, None])
    return pos | hard_neg


def ohem_softmax_cross_entropy(
    logits: Tensor,
    labels: Tensor,
    *,
    neg_pos_ratio: float = 3,
    normalizer: Optional[Tensor] = None,
    reduction: str = "sum",
) -> Tensor:
    """Softmax cross entropy with online hard negative mining, as mmdet's YOLACT.

    docs/REFERENCE.md §7.1 (classification).

    Per image: the CE of all positives plus the ``min(neg_pos_ratio*num_pos, num_neg)`` hardest
    negatives (all negatives when the image has no positive); ignored anchors (-1) excluded. The
    sum over the batch is divided by ``normalizer`` (default P = sum_i max(num_pos_i, 1)).

    Args:
        logits (Tensor): (N, R, K+1) or (R, K+1) class logits, background last.
        labels (Tensor): (N, R) or (R,) int labels in {-1, 0..K}.
        neg_pos_ratio (float): hard negatives per positive.
        normalizer (Tensor or float or None): the divisor; P by default.
        reduction (str): "sum" (the loss above) or "none": the CE of every anchor, (N, R) or (R,)
            as ``labels``, 0 where ignored, before the selection; the "sum" loss is
            ``sum(ce * ohem_selection(ce, labels, K, neg_pos_ratio)) / normalizer``.

    Returns:
        Tensor: float32 scalar ("sum") or per-anchor CE ("none").
    """
    if reduction not in ("sum", "none"):
        raise ValueError(f"ohem_softmax_cross_entropy: reduction must be 'sum' or 'none', got "
                         f"{reduction!r}")
    per_anchor = reduction == "none"
    if per_anchor and logits.dim() == 2:
        return ohem_softmax_cross_entropy(logits[None], labels[None], reduction="none")[0]
    if logits.dim() == 2:
        logits, labels = logits[None], labels[None]
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(
            "ohem_softmax_cross_entropy: expected logits (N, R, K+1) and labels (N, R), got "
            f"{tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    num_classes = logits.shape[2] - 1
    if num_classes < 1:
        raise ValueError(f"ohem_softmax_cross_entropy: need K+1 >= 2 logits, got {logits.shape[2]}")
    if labels.numel() and (int(labels.min()) < -1 or int(labels.max()) > num_classes):
        raise ValueError(
            f"ohem_softmax_cross_entropy: labels must be in [-1, {num_classes}], got "
            f"[{int(labels.min())}, {int(labels.max())}]"
        )
    labels = labels.long()
    ce = F.cross_entropy(
        logits.float().flatten(0, 1), labels.clamp(min=0).flatten(), reduction="none"
    ).view(labels.shape)
    if per_anchor:
        return torch.where(labels >= 0, ce, ce.new_zeros(()))
    selected = ohem_selection(ce.detach(), labels, num_classes, neg_pos_ratio)
    if normalizer is None:
        normalizer = positive_normalizer(labels, num_classes)
    return torch.where(selected, ce, ce.new_zeros(())).sum() / normalizer


def smooth_l1_box_loss(
    pred_deltas: Tensor,
    anchors: Tensor,
    target_boxes: Tensor,
    box2box_transform: Box2BoxTransform,
    *,
    beta: float = 1.0,
    normalizer=1.0,
    loss_weight: float = 1.0,
    reduction: str = "sum",
) -> Tensor:
    """SmoothL1 on encoded deltas of the positive anchors, summed, divided by ``normalizer``.

    ``loss_weight * sum_{pos, 4 coords} smoothL1(pred - encode(anchor, gt)) / normalizer``
    (docs/REFERENCE.md §7.2, "Box regression": beta 1, weight 1.5, normaliser P).

    Args:
        pred_deltas (Tensor): (M, 4) predicted deltas of the positive anchors.
        anchors (Tensor): (M, 4) those anchors.
        target_boxes (Tensor): (M, 4) their matched GT boxes.
        box2box_transform (Box2BoxTransform): the coder (weights (10, 10, 5, 5)).
        beta (float): SmoothL1 beta.
        normalizer (Tensor or float): the divisor (P).
        loss_weight (float): multiplier.
        reduction (str): "sum" (the loss above) or "none": ``loss_weight * sum_{4 coords}
            smoothL1`` of each anchor, (M,), not normalised (their sum / ``normalizer`` is "sum").

    Returns:
        Tensor: float32 scalar ("sum"; ``0 * sum(pred_deltas)`` when M = 0) or (M,) ("none").
    """
    if reduction not in ("sum", "none"):
        raise ValueError(
            f"smooth_l1_box_loss: reduction must be 'sum' or 'none', got {reduction!r}")
    if pred_deltas.shape != anchors.shape or pred_deltas.shape != target_boxes.shape or (
        pred_deltas.dim() != 2 or pred_deltas.shape[1] != 4
    ):
        raise ValueError(
            "smooth_l1_box_loss: expected (M, 4) deltas, anchors and targets, got "
            f"{tuple(pred_deltas.shape)}, {tuple(anchors.shape)}, {tuple(target_boxes.shape)}"
        )
    pred_deltas = pred_deltas.float()
    if reduction == "none":
        if pred_deltas.shape[0] == 0:
            return pred_deltas.sum(dim=1)
        targets = box2box_transform.get_deltas(anchors.float(), target_boxes.float())
        return smooth_l1_loss(pred_deltas, targets, beta=beta, reduction="none").sum(dim=1) * (
            loss_weight)
    if pred_deltas.shape[0] == 0:
        return pred_deltas.sum() * 0.0
    targets = box2box_transform.get_deltas(anchors.float(), target_boxes.float())
    loss = smooth_l1_loss(pred_deltas, targets, beta=beta, reduction="sum")
    return loss * loss_weight / normalizer


def _check_per_image(name: str, items: Sequence, num_images: int) -> None:
    if len(items) != num_images:
        raise ValueError(
            f"yolact_mask_loss: {name} has {len(items)} entries for {num_images} images")


def yolact_mask_loss(
    prototypes: Tensor,
    pos_coeffs: List[Tensor],
    pos_gt_indices: List[Tensor],
    gt_masks: List[Tensor],
    gt_boxes: List[Tensor],
    image_size: Tuple[int, int],
    *,
    max_masks: int = 100,
    loss_weight: float = 1.0,
    crop_padding: int = 1,
    outside_positive_loss: float = 100.0,
    generator: Optional[torch.Generator] = None,
    reduction: str = "mean",
):
    """YOLACT's prototype mask loss, with BCE on logits (AMP-safe).

    The official loss: docs/REFERENCE.md §7.3 (mask loss).

    For image i, at most ``max_masks`` positives (a random subset otherwise) each give
    ``l = loss_weight * mean_{Hp,Wp}(bce) / (gt_w / W) / (gt_h / H)``, where the target is its
    GT mask bilinearly resized to (Hp, Wp) and thresholded at 0.5, and ``bce`` is, per pixel:

    * inside the GT-box crop (padding ``crop_padding`` proto pixels, see ``box_crop_region``):
      ``BCEWithLogits(protos . coeff, target)``;
    * outside it: the official prediction there is exactly 0 (sigmoid, then crop), so the loss is
      BCE(0, target): 0 for a background target and PyTorch's log clamp, 100, for a mask pixel
      outside its own box (rare, e.g. after nearest resizing). ``outside_positive_loss`` keeps
      that constant (100, faithful); it has no gradient. Set it to 0 to drop those pixels.

    The loss is ``sum over instances / T`` with ``T = sum_i min(num_pos_i, max_masks)`` (1 if 0).
    Deviation: ``gt_w / W`` and ``gt_h / H`` are clamped at one input pixel (``1/W``, ``1/H``), so
    a degenerate GT box cannot give inf; the official code divides by them as they are.

    Args:
        prototypes (Tensor): (N, k, Hp, Wp).
        pos_coeffs (list[Tensor]): N tensors (n_i, k), coefficients of the positive anchors.
        pos_gt_indices (list[Tensor]): N int64 tensors (n_i,), the GT each positive matched.
        gt_masks (list[Tensor]): N bool/uint8/float tensors (G_i, H, W) at input resolution.
        gt_boxes (list[Tensor]): N tensors (G_i, 4), GT boxes in input pixels.
        image_size (tuple[int, int]): (H, W) of the input.
        max_masks (int): positives per image that train masks (<= 0: all).
        loss_weight (float): the mask loss weight (8 ATSS, 6.125 fixed IoU).
        crop_padding (int): crop padding in prototype pixels.
        outside_positive_loss (float): loss of a target-1 pixel outside the crop.
        generator (torch.Generator or None): for the random subset.
        reduction (str): "mean" (the loss above) or "none": the loss ``l`` of EVERY positive (no
            random subset), N float32 tensors (n_i,); when no image has more than ``max_masks``
            positives, "mean" is their sum / T.

    Returns:
        Tensor: float32 scalar ("mean") or list[Tensor] ("none").
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"yolact_mask_loss: reduction must be 'mean' or 'none', got {reduction!r}")
    per_positive = []  # reduction "none"
    if prototypes.dim() != 4:
        raise ValueError(
            f"yolact_mask_loss: prototypes must be (N, k, Hp, Wp), got {tuple(prototypes.shape)}")
    num_images, num_protos, hp, wp = prototypes.shape
    for name, items in (("pos_coeffs", pos_coeffs), ("pos_gt_indices", pos_gt_indices),
                        ("gt_masks", gt_masks), ("gt_boxes", gt_boxes)):
        _check_per_image(name, items, num_images)
    img_h, img_w = int(image_size[0]), int(image_size[1])

    total = prototypes.float().sum() * 0.0
    num_total = 0
    for i in range(num_images):
        coeffs, gt_idx = pos_coeffs[i], pos_gt_indices[i]
        if coeffs.dim() != 2 or coeffs.shape[1] != num_protos or gt_idx.shape != coeffs.shape[:1]:
            raise ValueError(
                f"yolact_mask_loss: image {i}: expected coeffs (n, {num_protos}) and indices (n,), "
                f"got {tuple(coeffs.shape)} and {tuple(gt_idx.shape)}"
            )
        total = total + coeffs.float().sum() * 0.0
        n = coeffs.shape[0]
        if n == 0:
            per_positive.append(coeffs.float().sum(dim=1))
            continue
        masks, boxes = gt_masks[i], gt_boxes[i]
        if masks.dim() != 3 or tuple(masks.shape[1:]) != (img_h, img_w):
            raise ValueError(
                f"yolact_mask_loss: image {i}: gt_masks must be (G, {img_h}, {img_w}), "
                f"got {tuple(masks.shape)}"
            )
        if max_masks > 0 and n > max_masks and reduction == "mean":
            select = torch.randperm(n, generator=generator)[:max_masks].to(coeffs.device)
            coeffs, gt_idx = coeffs[select], gt_idx[select]
            n = max_masks
        num_total += n

        with torch.no_grad():
            targets = F.interpolate(
                masks.float()[None], size=(hp, wp), mode="bilinear", align_corners=False
            )[0]
            targets = (targets > 0.5)[gt_idx].float()  # (n, Hp, Wp)
            inst_boxes = boxes[gt_idx].float()
            scale = inst_boxes.new_tensor([wp / img_w, hp / img_h, wp / img_w, hp / img_h])
            inside = box_crop_region(inst_boxes * scale, hp, wp, crop_padding)
            rel_w = ((inst_boxes[:, 2] - inst_boxes[:, 0]) / img_w).clamp(min=1.0 / img_w)
            rel_h = ((inst_boxes[:, 3] - inst_boxes[:, 1]) / img_h).clamp(min=1.0 / img_h)

        logits = torch.einsum("khw,nk->nhw", prototypes[i].float(), coeffs.float())
        bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        pix = torch.where(inside, bce, targets * outside_positive_loss)
        per_inst = pix.mean(dim=(1, 2)) * loss_weight / rel_w / rel_h
        per_positive.append(per_inst)
        total = total + per_inst.sum()
    if reduction == "none":
        return per_positive
    return total / max(num_total, 1)


def semantic_seg_loss(
    logits: Tensor,
    gt_masks: List[Tensor],
    gt_classes: List[Tensor],
    *,
    loss_weight: float = 1.0,
) -> Tensor:
    """The auxiliary semantic segmentation loss, channel = class (no -1 quirk).

    The official loss: docs/REFERENCE.md §7.4 (semantic segmentation).

    Targets: GT masks bilinearly resized to (Hs, Ws), thresholded at 0.5, max over the instances
    of each class. ``loss = loss_weight * sum_images sum_{c,h,w} BCEWithLogits / (N*Hs*Ws)``.
    As in mmdet, an image without GT contributes 0 (its loss weights are zero there).

    Args:
        logits (Tensor): (N, K, Hs, Ws).
        gt_masks (list[Tensor]): N tensors (G_i, H, W).
        gt_classes (list[Tensor]): N int64 tensors (G_i,) in [0, K).
        loss_weight (float): multiplier.

    Returns:
        Tensor: float32 scalar.
    """
    if logits.dim() != 4:
        raise ValueError(
            f"semantic_seg_loss: logits must be (N, K, Hs, Ws), got {tuple(logits.shape)}")
    num_images, num_classes, hs, ws = logits.shape
    if len(gt_masks) != num_images or len(gt_classes) != num_images:
        raise ValueError(
            f"semantic_seg_loss: {len(gt_masks)} mask sets and {len(gt_classes)} label sets "
            f"for {num_images} images"
        )
    total = logits.float().sum() * 0.0
    for i in range(num_images):
        masks, classes = gt_masks[i], gt_classes[i]
        if masks.shape[0] != classes.shape[0]:
            raise ValueError(
                f"semantic_seg_loss: image {i} has {masks.shape[0]} masks and "
                f"{classes.shape[0]} labels")
        if masks.shape[0] == 0:
            continue
        if int(classes.min()) < 0 or int(classes.max()) >= num_classes:
            raise ValueError(f"semantic_seg_loss: image {i} has labels outside [0, {num_classes})")
        with torch.no_grad():
            small = F.interpolate(
                masks.float()[None], size=(hs, ws), mode="bilinear", align_corners=False
            )[0]
            small = (small > 0.5).float().flatten(1)  # (G, Hs*Ws)
            target = small.new_zeros((num_classes, hs * ws))
            target.scatter_reduce_(
                0, classes.long()[:, None].expand_as(small), small, reduce="amax", include_self=True
            )
        total = total + F.binary_cross_entropy_with_logits(
            logits[i].float().flatten(1), target, reduction="sum"
        )
    return total * loss_weight / (num_images * hs * ws)
