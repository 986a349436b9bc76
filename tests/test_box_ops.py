"""Box measures of mayolact.structures.box_ops: GIoU / DIoU by hand, IoU against Detectron2's
pairwise_iou."""
import numpy as np
import pytest
import torch
from detectron2.structures import Boxes, pairwise_iou

from mayolact.structures.box_ops import (
    batched_box_iou,
    box_inter_union,
    box_iou_numpy,
    paired_iou,
    pairwise_diou,
    pairwise_giou,
)


def _random_boxes(gen, n, size=50.0, max_side=30.0):
    xy = torch.rand(n, 2, generator=gen, dtype=torch.float64) * size
    wh = 1 + torch.rand(n, 2, generator=gen, dtype=torch.float64) * max_side
    return torch.cat([xy, xy + wh], 1)


def test_giou_diou_by_hand():
    gt = torch.tensor([[5.0, 5.0, 15.0, 15.0], [0.0, 0.0, 2.0, 2.0]])
    anchors = torch.tensor([[5.0, 5.0, 15.0, 15.0], [5.0, 5.0, 10.0, 15.0], [0.0, 0.0, 10.0, 10.0],
                            [3.0, 0.0, 5.0, 2.0]])
    giou = pairwise_giou(gt, anchors)
    diou = pairwise_diou(Boxes(gt), Boxes(anchors))
    # GT 0: identical; left half (enclose = box, centres 2.5 apart, diagonal^2 200);
    # [0,0,10,10] (IoU 25/175, enclose 15x15 = 225, centres (5,5)-(10,10), diagonal^2 450).
    assert giou[0, 0] == pytest.approx(1.0) and diou[0, 0] == pytest.approx(1.0)
    assert giou[0, 1] == pytest.approx(0.5) and diou[0, 1] == pytest.approx(0.5 - 6.25 / 200)
    assert giou[0, 2] == pytest.approx(25 / 175 - 50 / 225, abs=1e-6)
    assert diou[0, 2] == pytest.approx(25 / 175 - 50 / 450, abs=1e-6)
    # GT 1 vs a disjoint neighbour: IoU 0, enclose 5x2 = 10, union 8; centres 3 apart, diag^2 29.
    assert giou[1, 3] == pytest.approx(-0.2, abs=1e-6)
    assert diou[1, 3] == pytest.approx(-9 / 29, abs=1e-6)
    # Far apart: GIoU tends to -1, DIoU to -1.
    far = pairwise_giou(torch.tensor([[0.0, 0, 1, 1]]), torch.tensor([[1000.0, 1000, 1001, 1001]]))
    assert -1 < float(far) < -0.99
    # Degenerate boxes: eps clamps, no NaN.
    pts = torch.tensor([[3.0, 3.0, 3.0, 3.0]])
    assert torch.isfinite(pairwise_giou(pts, pts)).all()
    assert torch.isfinite(pairwise_diou(pts, pts)).all()


def test_paired_iou_matches_detectron2_pairwise_iou():
    gen = torch.Generator().manual_seed(4)
    a = torch.rand(30, 2, generator=gen) * 50
    b = torch.rand(40, 2, generator=gen) * 50
    boxes1 = torch.cat([a, a + 1 + torch.rand(30, 2, generator=gen) * 30], 1)
    boxes2 = torch.cat([b, b + 1 + torch.rand(40, 2, generator=gen) * 30], 1)
    torch.testing.assert_close(paired_iou(boxes1[:, None], boxes2[None]),
                               pairwise_iou(Boxes(boxes1), Boxes(boxes2)))


def test_pairwise_measures_bad_input():
    gt = torch.tensor([[5.0, 5.0, 15.0, 15.0]])
    with pytest.raises(ValueError, match="boxes2 must have shape"):
        pairwise_giou(gt, gt[:, :2])
    with pytest.raises(ValueError, match="boxes1 has a box with x2 < x1"):
        pairwise_diou(torch.tensor([[5.0, 0, 1, 1]]), gt)
    with pytest.raises(ValueError, match="boxes1 contains non-finite"):
        pairwise_giou(torch.tensor([[0.0, 0, float("nan"), 1]]), gt)
    with pytest.raises(ValueError, match="must be detectron2 Boxes"):
        pairwise_giou([[0.0, 0, 1, 1]], gt)


def test_batched_box_iou_is_paired_iou_per_batch():
    gen = torch.Generator().manual_seed(5)
    a = _random_boxes(gen, 3 * 7).float().view(3, 7, 4)
    b = _random_boxes(gen, 3 * 5).float().view(3, 5, 4)
    got = batched_box_iou(a, b)
    assert got.shape == (3, 7, 5)
    for i in range(3):
        assert torch.equal(got[i], paired_iou(a[i][:, None], b[i][None]))
    # Degenerate boxes: the union is clamped at 1e-6, so no NaN.
    pts = torch.tensor([[[3.0, 3.0, 3.0, 3.0]]])
    assert torch.equal(batched_box_iou(pts, pts), torch.zeros(1, 1, 1))


def test_inter_union_by_hand():
    inter, union = box_inter_union(torch.tensor([0.0, 0, 10, 10]), torch.tensor([5.0, 5, 15, 20]))
    assert float(inter) == 25.0 and float(union) == 100 + 150 - 25


def test_box_iou_numpy_equals_detectron2_in_float64():
    gen = torch.Generator().manual_seed(6)
    boxes = _random_boxes(gen, 40)
    boxes[:5, 2:] = boxes[:5, :2]  # zero-area boxes: IoU 0
    for patch in ([0, 0, 30, 30], [10, 5, 60, 45], [49, 49, 50, 50], [200, 200, 210, 210]):
        got = box_iou_numpy(tuple(patch), boxes.numpy())
        assert got.dtype == np.float64 and got.shape == (40,)
        # Detectron2's Boxes are float32: compare its formula on float64 tensors.
        b = torch.tensor([patch], dtype=torch.float64)
        lt = torch.maximum(b[:, None, :2], boxes[None, :, :2])
        rb = torch.minimum(b[:, None, 2:], boxes[None, :, 2:])
        wh = (rb - lt).clamp(min=0)
        inter = wh[..., 0] * wh[..., 1]
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        ref = torch.where(inter > 0, inter / ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) + area
                                               - inter), torch.zeros(()))[0]
        np.testing.assert_allclose(got, ref.numpy(), rtol=1e-15, atol=0)
        np.testing.assert_allclose(got, pairwise_iou(Boxes(b), Boxes(boxes))[0].numpy(),
                                   rtol=0, atol=1e-6)
