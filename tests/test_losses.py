"""OHEM CE, box, mask and semantic losses against hand computations and oracles of
docs/REFERENCE.md §7 (losses)."""
import math

import pytest
import torch
from detectron2.modeling.box_regression import Box2BoxTransform
from torch.nn import functional as F

from mayolact.modeling.losses import (
    ohem_selection,
    ohem_softmax_cross_entropy,
    positive_normalizer,
    semantic_seg_loss,
    smooth_l1_box_loss,
    yolact_mask_loss,
)
from mayolact.modeling.postprocessing import box_crop_region

K = 2  # foreground classes; background is label 2


def _ohem_oracle(logits, labels, ratio=3):
    """mmdet's loss_single_OHEM per image (negative pool includes ignored anchors, weight 0)."""
    num_classes = logits.shape[-1] - 1
    total, P = 0.0, 0
    for lg, lb in zip(logits, labels):
        weight = (lb >= 0).float()
        tgt = torch.where(lb >= 0, lb, torch.full_like(lb, num_classes))
        loss_all = F.cross_entropy(lg, tgt, reduction="none") * weight
        pos = ((tgt >= 0) & (tgt < num_classes)).nonzero().flatten()
        neg = (tgt == num_classes).nonzero().flatten()
        num_neg = len(neg) if len(pos) == 0 else min(ratio * len(pos), len(neg))
        total = total + loss_all[pos].sum() + loss_all[neg].topk(num_neg).values.sum()
        P += max(len(pos), 1)
    return total / P


def test_ohem_hand_counts_three_to_one():
    # One positive, six negatives with increasing loss, one ignored anchor with a huge loss.
    logits = torch.zeros(8, K + 1)
    labels = torch.tensor([0, 2, 2, 2, 2, 2, 2, -1])
    for j in range(1, 7):
        logits[j, 0] = float(j)  # negative j: CE = log(2 + e^j) - 0, larger for larger j
    logits[7, 0] = 50.0
    sel = ohem_selection(F.cross_entropy(logits, labels.clamp(min=0), reduction="none")[None],
                         labels[None], K)
    assert sel[0].tolist() == [True, False, False, False, True, True, True, False]
    ce = [math.log(3.0)] + [math.log(2 + math.exp(j)) - 0.0 for j in range(1, 7)]
    exp = (ce[0] + ce[4] + ce[5] + ce[6]) / 1  # P = max(1, 1)
    assert ohem_softmax_cross_entropy(logits, labels).item() == pytest.approx(exp, rel=1e-5)


def test_ohem_no_positive_uses_all_negatives_and_normaliser():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 12, K + 1, generator=gen)
    labels = torch.full((2, 12), K)
    labels[0, :2] = torch.tensor([0, 1])  # image 0: 2 positives -> 6 hard negatives of 10
    labels[1, 5] = -1  # image 1: no positive -> all 11 negatives
    ce = F.cross_entropy(logits.flatten(0, 1), labels.clamp(min=0).flatten(), reduction="none")
    ce = ce.view(2, 12)
    exp = (ce[0, :2].sum() + ce[0, 2:].topk(6).values.sum() + ce[1][labels[1] == K].sum()) / (2 + 1)
    got = ohem_softmax_cross_entropy(logits, labels)
    torch.testing.assert_close(got, exp)
    assert positive_normalizer(labels, K).item() == 3.0
    sel = ohem_selection(ce, labels, K)
    assert sel[0].sum() == 8 and sel[1].sum() == 11 and not sel[1, 5]


def test_ohem_fewer_negatives_than_ratio():
    logits = torch.randn(1, 5, K + 1)
    labels = torch.tensor([[0, 1, 0, 2, -1]])  # 3 positives, 1 negative -> that one negative
    sel = ohem_selection(logits.new_ones(1, 5), labels, K)
    assert sel[0].tolist() == [True, True, True, True, False]
    assert ohem_softmax_cross_entropy(logits, labels).item() == pytest.approx(
        _ohem_oracle(logits, labels).item(), rel=1e-6)


def test_ohem_random_batch_matches_mmdet_oracle():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 300, K + 1, generator=gen) * 3
    labels = torch.randint(-1, K + 1, (4, 300), generator=gen)
    labels[labels < K] = torch.where(torch.rand(labels[labels < K].shape, generator=gen) < 0.1,
                                     labels[labels < K], torch.full_like(labels[labels < K], K))
    labels[2] = K  # an image without positives
    labels[3, :5] = -1
    got = ohem_softmax_cross_entropy(logits, labels)
    torch.testing.assert_close(got, _ohem_oracle(logits, labels))
    # Gradient flows only to selected anchors.
    lg = logits.clone().requires_grad_(True)
    ohem_softmax_cross_entropy(lg, labels).backward()
    used = lg.grad.abs().sum(-1) > 0
    ce = F.cross_entropy(logits.flatten(0, 1), labels.clamp(min=0).flatten(), reduction="none")
    assert torch.equal(used, ohem_selection(ce.view(4, 300), labels, K))


def test_ohem_bad_input():
    with pytest.raises(ValueError, match="labels"):
        ohem_softmax_cross_entropy(torch.zeros(2, 5, 3), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[-1, 2\]"):
        ohem_softmax_cross_entropy(torch.zeros(5, 3), torch.tensor([0, 1, 2, 3, 0]))


def test_smooth_l1_box_loss_by_hand():
    b2b = Box2BoxTransform(weights=(10.0, 10.0, 5.0, 5.0))
    anchors = torch.tensor([[0.0, 0, 10, 10], [10, 10, 30, 20]])
    gts = torch.tensor([[1.0, 0, 11, 10], [10, 10, 30, 20]])
    pred = torch.tensor([[0.0, 0, 0, 0], [0.5, -2.0, 0, 0]], requires_grad=True)
    # target deltas: [1, 0, 0, 0] (dx = 10 * 1/10) and zeros.
    # smoothL1(beta=1): |1| -> .5; .5 -> .125; |-2| -> 1.5  => 2.125 * 1.5 / 4
    loss = smooth_l1_box_loss(pred, anchors, gts, b2b, beta=1.0, normalizer=4.0, loss_weight=1.5)
    assert loss.item() == pytest.approx(2.125 * 1.5 / 4)
    loss.backward()
    empty = smooth_l1_box_loss(torch.zeros(0, 4, requires_grad=True), torch.zeros(0, 4),
                               torch.zeros(0, 4), b2b)
    assert empty.item() == 0.0 and empty.requires_grad
    with pytest.raises(ValueError, match="smooth_l1_box_loss"):
        smooth_l1_box_loss(torch.zeros(2, 4), torch.zeros(3, 4), torch.zeros(2, 4), b2b)


def _official_mask_loss(protos, coeffs, gt_idx, masks, boxes, img_hw, weight):
    """docs/REFERENCE.md §7.3 (mask loss) as mmdet computes it: sigmoid, crop with
    relative GT boxes, clamp, BCE."""
    hp, wp = protos.shape[-2:]
    h, w = img_hw
    pred = torch.sigmoid(torch.einsum("khw,nk->nhw", protos, coeffs))
    rel = boxes[gt_idx] / torch.tensor([w, h, w, h])
    region = box_crop_region(rel * torch.tensor([wp, hp, wp, hp]), hp, wp, 1)
    pred = torch.clamp(pred * region.float(), 0, 1)
    tgt = (F.interpolate(masks.float()[None], (hp, wp), mode="bilinear", align_corners=False)[0]
           > 0.5).float()[gt_idx]
    loss = F.binary_cross_entropy(pred, tgt, reduction="none") * weight
    bw = (boxes[gt_idx, 2] - boxes[gt_idx, 0]) / w
    bh = (boxes[gt_idx, 3] - boxes[gt_idx, 1]) / h
    return (loss.mean(dim=(1, 2)) / bw / bh).sum()


def _scene(gen, n_gt=3, size=32):
    masks = torch.zeros(n_gt, size, size, dtype=torch.bool)
    boxes = torch.zeros(n_gt, 4)
    for g in range(n_gt):
        x1, y1 = torch.randint(0, size // 2, (2,), generator=gen).tolist()
        x2, y2 = x1 + 6 + 2 * g, y1 + 8 + g
        masks[g, y1:y2, x1:x2] = True
        boxes[g] = torch.tensor([x1, y1, x2, y2], dtype=torch.float)
    masks[0, 0:4, size - 4:] = True  # mask pixels far outside box 0: loss 100 there
    return masks, boxes


def test_mask_loss_matches_official_formula():
    gen = torch.Generator().manual_seed(2)
    protos = torch.rand(2, 4, 16, 16, generator=gen)
    masks, boxes = _scene(gen)
    coeffs = [torch.randn(5, 4, generator=gen) * 0.5, torch.zeros(0, 4)]
    gt_idx = [torch.tensor([0, 1, 2, 2, 0]), torch.zeros(0, dtype=torch.long)]
    got = yolact_mask_loss(protos, coeffs, gt_idx, [masks, masks[:0]], [boxes, boxes[:0]],
                           (32, 32), loss_weight=8.0)
    exp = _official_mask_loss(protos[0], coeffs[0], gt_idx[0], masks, boxes, (32, 32), 8.0) / 5
    torch.testing.assert_close(got, exp, rtol=1e-5, atol=1e-5)
    # Dropping the outside target-1 pixels only lowers the value (no gradient either way).
    dropped = yolact_mask_loss(protos, coeffs, gt_idx, [masks, masks[:0]], [boxes, boxes[:0]],
                               (32, 32), loss_weight=8.0, outside_positive_loss=0.0)
    assert dropped < got


def test_mask_loss_hand_normalisation():
    # Image 8x8, prototypes 4x4 (one prototype), one GT box [0,0,4,4] (relative area 1/4),
    # logits 0 everywhere -> inside-crop BCE = log 2 per pixel.
    protos = torch.zeros(1, 1, 4, 4)
    masks = torch.zeros(1, 8, 8, dtype=torch.bool)
    masks[0, :4, :4] = True
    boxes = torch.tensor([[0.0, 0, 4, 4]])
    # crop in proto pixels: [0,0,2,2] padded to x in [0, 3) -> 9 of 16 pixels inside, all log 2;
    # the 7 outside have target 0 -> 0.
    loss = yolact_mask_loss(protos, [torch.zeros(1, 1)], [torch.tensor([0])], [masks], [boxes],
                            (8, 8), loss_weight=2.0)
    exp = 2.0 * (9 * math.log(2) / 16) / 0.5 / 0.5
    assert loss.item() == pytest.approx(exp, rel=1e-6)


def test_mask_loss_subset_and_normaliser():
    gen = torch.Generator().manual_seed(3)
    protos = torch.rand(2, 3, 8, 8, generator=gen)
    masks, boxes = _scene(gen, n_gt=2, size=16)
    c0, c1 = torch.randn(5, 3, generator=gen), torch.randn(1, 3, generator=gen)
    i0, i1 = torch.tensor([0, 1, 1, 0, 1]), torch.tensor([1])
    got = yolact_mask_loss(protos, [c0, c1], [i0, i1], [masks, masks], [boxes, boxes], (16, 16),
                           max_masks=2, generator=torch.Generator().manual_seed(7))
    sel = torch.randperm(5, generator=torch.Generator().manual_seed(7))[:2]
    exp = (_official_mask_loss(protos[0], c0[sel], i0[sel], masks, boxes, (16, 16), 1.0)
           + _official_mask_loss(protos[1], c1, i1, masks, boxes, (16, 16), 1.0)) / (2 + 1)
    torch.testing.assert_close(got, exp, rtol=1e-5, atol=1e-5)


def test_mask_loss_no_positives_is_zero_and_differentiable():
    protos = torch.rand(2, 3, 8, 8, requires_grad=True)
    coeffs = [torch.zeros(0, 3, requires_grad=True), torch.zeros(0, 3, requires_grad=True)]
    idx = [torch.zeros(0, dtype=torch.long)] * 2
    masks = [torch.zeros(0, 16, 16, dtype=torch.bool)] * 2
    boxes = [torch.zeros(0, 4)] * 2
    loss = yolact_mask_loss(protos, coeffs, idx, masks, boxes, (16, 16))
    assert loss.item() == 0.0
    loss.backward()
    assert protos.grad is not None and protos.grad.abs().sum() == 0


def test_mask_loss_bad_input():
    with pytest.raises(ValueError, match="prototypes"):
        yolact_mask_loss(torch.zeros(3, 8, 8), [], [], [], [], (16, 16))
    with pytest.raises(ValueError, match="pos_coeffs"):
        yolact_mask_loss(torch.zeros(2, 3, 8, 8), [torch.zeros(0, 3)], [], [], [], (16, 16))
    with pytest.raises(ValueError, match="gt_masks must be"):
        yolact_mask_loss(torch.zeros(1, 3, 8, 8), [torch.zeros(1, 3)], [torch.tensor([0])],
                         [torch.zeros(1, 10, 16)], [torch.zeros(1, 4)], (16, 16))


def _semseg_oracle(logits, masks, classes):
    n, num_classes, hs, ws = logits.shape
    total = 0.0
    for i in range(n):
        if len(classes[i]) == 0:
            continue  # mmdet: zero weights
        small = F.interpolate(masks[i].float()[None], (hs, ws), mode="bilinear",
                              align_corners=False)[0] > 0.5
        tgt = torch.zeros(num_classes, hs, ws)
        for g, c in enumerate(classes[i].tolist()):
            tgt[c] = torch.maximum(tgt[c], small[g].float())
        total = total + F.binary_cross_entropy_with_logits(logits[i], tgt, reduction="sum")
    return total / (n * hs * ws)


def test_semantic_seg_loss_matches_oracle():
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(3, 4, 8, 8, generator=gen)
    m0 = torch.zeros(3, 32, 32, dtype=torch.bool)
    m0[0, :16, :16] = True
    m0[1, 8:24, 8:24] = True  # same class as mask 0: per-class max (union)
    m0[2, 20:, :] = True
    classes = [torch.tensor([1, 1, 3]), torch.zeros(0, dtype=torch.long), torch.tensor([0])]
    masks = [m0, torch.zeros(0, 32, 32, dtype=torch.bool), m0[2:]]
    got = semantic_seg_loss(logits, masks, classes, loss_weight=2.0)
    torch.testing.assert_close(got, 2.0 * _semseg_oracle(logits, masks, classes))
    # Per-class max, channel = label: class 1 target covers both squares.
    with pytest.raises(ValueError, match="labels outside"):
        semantic_seg_loss(logits, masks, [torch.tensor([1, 1, 4]), classes[1], classes[2]])
    lg = torch.randn(2, 4, 8, 8, requires_grad=True)
    empty = semantic_seg_loss(lg, [torch.zeros(0, 32, 32)] * 2,
                              [torch.zeros(0, dtype=torch.long)] * 2)
    assert empty.item() == 0.0
    empty.backward()
    assert lg.grad is not None
