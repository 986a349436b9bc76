"""Fast NMS, crop semantics, mask assembly and full-image post-processing, as
docs/REFERENCE.md §8 (mask assembly) and §9 (inference)."""
import pytest
import torch
from detectron2.layers import batched_nms
from detectron2.structures import Boxes, Instances
from torch.nn import functional as F

from mayolact.analysis.benchmark_fast_nms import fast_nms_dense as _fast_nms_dense_reference
from mayolact.modeling.postprocessing import (
    assemble_masks,
    box_crop_region,
    crop_masks,
    fast_nms,
    yolact_postprocess,
)
from mayolact.structures.box_ops import batched_box_iou


def _random_boxes(n, size=100.0, gen=None):
    xy = torch.rand(n, 2, generator=gen) * size
    wh = torch.rand(n, 2, generator=gen) * size / 3 + 1
    return torch.cat([xy, xy + wh], dim=1)


def _iou(a, b, eps=1e-6):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / max(union, eps)


def _fast_nms_oracle(boxes, scores, coeffs, iou_thr, score_thr, top_k, max_num):
    """Plain-loop transcription of docs/REFERENCE.md §9.2 (Fast NMS)."""
    boxes_l, scores_l, coeffs_l = boxes.tolist(), scores.tolist(), coeffs.tolist()
    n, num_classes = scores.shape
    dets = []  # (score, class, anchor)
    for c in range(num_classes):
        order = sorted(range(n), key=lambda i: -scores_l[i][c])[:top_k]
        for j, aj in enumerate(order):
            iou_max = 0.0
            for ai in order[:j]:  # every higher-scoring candidate, suppressed or not
                iou_max = max(iou_max, _iou(boxes_l[ai], boxes_l[aj]))
            s = scores_l[aj][c]
            if iou_max <= iou_thr and s > score_thr:
                dets.append((s, c, aj))
    dets = sorted(dets, key=lambda d: -d[0])
    if max_num > 0:
        dets = dets[:max_num]
    return (
        torch.tensor([boxes_l[a] for _, _, a in dets]).reshape(-1, 4),
        torch.tensor([s for s, _, _ in dets]),
        torch.tensor([c for _, c, _ in dets], dtype=torch.int64),
        torch.tensor([coeffs_l[a] for _, _, a in dets]).reshape(-1, coeffs.shape[1]),
    )


@pytest.mark.parametrize("n,num_classes,top_k,max_num", [
    (230, 3, 200, 100),  # n > top_k
    (60, 4, 200, 100),  # n < top_k
    (40, 2, 10, 7),  # small top_k and max_num
    (35, 3, 200, -1),  # keep all
])
def test_fast_nms_matches_loop_oracle(n, num_classes, top_k, max_num):
    gen = torch.Generator().manual_seed(n + num_classes)
    boxes = _random_boxes(n, gen=gen)
    scores = torch.rand(n, num_classes, generator=gen)
    coeffs = torch.randn(n, 5, generator=gen)
    got = fast_nms(boxes, scores, coeffs, 0.5, 0.05, top_k, max_num)
    exp = _fast_nms_oracle(boxes, scores, coeffs, 0.5, 0.05, top_k, max_num)
    assert got[0].shape[0] == exp[0].shape[0] > 0
    torch.testing.assert_close(got[0], exp[0])
    torch.testing.assert_close(got[1], exp[1])
    assert torch.equal(got[2], exp[2])
    torch.testing.assert_close(got[3], exp[3])
    assert bool((got[1][:-1] >= got[1][1:]).all())


def _tied_candidates(n, num_classes, gen):
    """Clustered boxes with exact duplicates and scores on a coarse grid (many exact ties).

    Integer coordinates and scores in sixteenths are exact in float32 as in the loop oracle's
    float64, so IoUs of exactly 0.5 and scores of exactly the threshold (1/16) compare alike.
    """
    centres = torch.randint(0, 80, (max(n // 8, 1), 2), generator=gen).float()
    pick = torch.randint(len(centres), (n,), generator=gen)
    xy = centres[pick] + torch.randint(0, 6, (n, 2), generator=gen).float()
    wh = torch.randint(4, 30, (n, 2), generator=gen).float()
    boxes = torch.cat([xy, xy + wh], dim=1)
    dup = torch.randint(n, (n // 4,), generator=gen)
    boxes[torch.randint(n, (n // 4,), generator=gen)] = boxes[dup]  # exact duplicate boxes
    scores = torch.randint(0, 10, (n, num_classes), generator=gen).float() / 16  # 0 .. 0.5625
    scores[torch.rand(n, num_classes, generator=gen) < 0.6] = 0.0
    return boxes, scores


@pytest.mark.parametrize("seed", range(6))
def test_fast_nms_ties_and_duplicates_match_oracles(seed):
    gen = torch.Generator().manual_seed(100 + seed)
    n, num_classes = (60, 4) if seed % 2 else (90, 3)
    boxes, scores = _tied_candidates(n, num_classes, gen)
    coeffs = torch.randn(n, 3, generator=gen)
    top_k, max_num = [(200, 100), (7, 20), (25, -1)][seed % 3]
    got = fast_nms(boxes, scores, coeffs, 0.5, 1 / 16, top_k, max_num)
    dense = _fast_nms_dense_reference(boxes, scores, coeffs, 0.5, 1 / 16, top_k, max_num)
    loop = _fast_nms_oracle(boxes, scores, coeffs, 0.5, 1 / 16, top_k, max_num)
    assert len(got[1]) > 0
    for g, d, lo in zip(got, dense, loop):
        assert torch.equal(g, d)  # bit for bit, order of ties included
        assert torch.equal(g, lo.to(g.dtype))


@pytest.mark.parametrize("n,num_classes,thr", [
    (1000, 80, 0.05),  # the COCO case: a few hundred class scores above the threshold
    (300, 5, 0.0),  # every class score competes: top_k truncation in every class
    (50, 3, -1.0),  # below-zero threshold: every candidate, zero scores included
])
def test_fast_nms_equals_dense_implementation(n, num_classes, thr):
    gen = torch.Generator().manual_seed(n)
    boxes = _random_boxes(n, gen=gen)
    logits = torch.randn(n, num_classes + 1, generator=gen) * 2
    logits[:, -1] += 2.5  # a dominant background, as a trained model's softmax
    scores = logits.softmax(dim=1)[:, :-1]
    scores[:5] = 0.0
    coeffs = torch.randn(n, 4, generator=gen)
    for iou_thr in (0.5, 0.0, -0.1):
        got = fast_nms(boxes, scores, coeffs, iou_thr, thr, 200, 100)
        dense = _fast_nms_dense_reference(boxes, scores, coeffs, iou_thr, thr, 200, 100)
        for g, d in zip(got, dense):
            assert torch.equal(g, d)


def test_fast_nms_nan_scores_suppress_like_the_dense_form():
    # A NaN score ranks first in a descending sort: never kept, but it still suppresses.
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]])
    scores = torch.tensor([[0.9], [float("nan")], [0.3]])
    got = fast_nms(boxes, scores, torch.eye(3))
    dense = _fast_nms_dense_reference(boxes, scores, torch.eye(3), 0.5, 0.05, 200, 100)
    for g, d in zip(got, dense):
        assert torch.equal(g, d)
    assert got[1].tolist() == pytest.approx([0.3])


def test_fast_nms_suppressed_box_still_suppresses():
    # A > B > C; IoU(A,B) > .5 and IoU(B,C) > .5 but IoU(A,C) < .5: Fast NMS drops both B and C.
    boxes = torch.tensor([[0.0, 0, 10, 10], [3, 0, 13, 10], [6, 0, 16, 10]])
    scores = torch.tensor([[0.9], [0.8], [0.7]])
    assert _iou(boxes[0].tolist(), boxes[2].tolist()) < 0.5
    b, s, c, co = fast_nms(boxes, scores, None)
    assert co is None
    assert b.tolist() == [[0.0, 0, 10, 10]]
    assert s.tolist() == pytest.approx([0.9])


def test_fast_nms_empty_and_threshold():
    b, s, c, co = fast_nms(torch.zeros(0, 4), torch.zeros(0, 3), torch.zeros(0, 2))
    assert b.shape == (0, 4) and s.shape == (0,) and c.shape == (0,) and co.shape == (0, 2)
    assert c.dtype == torch.int64
    # No class score above the threshold: nothing, with the dtypes of a detection.
    b, s, c, co = fast_nms(torch.rand(6, 4), torch.full((6, 3), 0.05), torch.zeros(6, 2))
    assert b.shape == (0, 4) and s.shape == (0,) and c.dtype == torch.int64 and co.shape == (0, 2)
    # Scores must be strictly above the threshold.
    b, s, c, _ = fast_nms(torch.tensor([[0.0, 0, 5, 5]]), torch.tensor([[0.05, 0.06]]), None)
    assert c.tolist() == [1]


def test_fast_nms_equals_batched_nms_on_separated_boxes():
    gen = torch.Generator().manual_seed(0)
    # Boxes on a grid, no overlaps: both NMS keep everything above the threshold.
    xs = torch.arange(6).float() * 20
    grid = torch.stack(torch.meshgrid(xs, xs, indexing="ij"), -1).reshape(-1, 2)
    boxes = torch.cat([grid, grid + 10], 1)
    scores = torch.rand(len(boxes), 3, generator=gen)
    b, s, c, _ = fast_nms(boxes, scores, None, max_num=-1)
    a_idx, cls = (scores > 0.05).nonzero(as_tuple=True)
    keep = batched_nms(boxes[a_idx], scores[a_idx, cls], cls, 0.5)
    assert len(keep) == len(s)
    torch.testing.assert_close(s, scores[a_idx, cls][keep])


def test_fast_nms_bad_input():
    with pytest.raises(ValueError, match="boxes"):
        fast_nms(torch.zeros(3, 5), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="scores"):
        fast_nms(torch.zeros(3, 4), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="coeffs"):
        fast_nms(torch.zeros(3, 4), torch.zeros(3, 2), torch.zeros(2, 4))


def test_batched_box_iou_matches_scalar():
    gen = torch.Generator().manual_seed(1)
    a, b = _random_boxes(7, gen=gen), _random_boxes(5, gen=gen)
    iou = batched_box_iou(a[None], b[None])[0]
    for i in range(7):
        for j in range(5):
            assert iou[i, j].item() == pytest.approx(_iou(a[i].tolist(), b[j].tolist()), abs=1e-6)


def test_box_crop_region_padding_semantics():
    # x1 = 2.5 - 1 = 1.5, x2 = 5 + 1 = 6 -> columns 2..5;
    # y1 = max(1.2 - 1, 0) = .2, y2 = 4 -> rows 1..3
    region = box_crop_region(torch.tensor([[2.5, 1.2, 5.0, 3.0]]), 8, 10, padding=1)[0]
    assert region.shape == (8, 10)
    assert region.any(0).nonzero().flatten().tolist() == [2, 3, 4, 5]
    assert region.any(1).nonzero().flatten().tolist() == [1, 2, 3]
    assert int(region.sum()) == 12
    # Integer edges: column x1 - 1 kept (>=), column x2 + 1 not (<).
    region = box_crop_region(torch.tensor([[3.0, 3.0, 5.0, 5.0]]), 10, 10, padding=1)[0]
    assert region.any(0).nonzero().flatten().tolist() == [2, 3, 4, 5]
    region = box_crop_region(torch.tensor([[3.0, 3.0, 5.0, 5.0]]), 10, 10, padding=0)[0]
    assert region.any(0).nonzero().flatten().tolist() == [3, 4]
    # Clamping to the grid.
    assert bool(box_crop_region(torch.tensor([[-4.0, -4, 30, 30]]), 6, 7)[0].all())
    # Reversed corners, as the official code: x1 = min(x1, x2) = 2.5, x2 = max(new x1, x2) = 2.5,
    # so only the padding is left: columns [1.5, 3.5) -> 2, 3.
    region = box_crop_region(torch.tensor([[5.0, 3, 2.5, 1.2]]), 8, 10)[0]
    assert region.any(0).nonzero().flatten().tolist() == [2, 3]
    assert region.any(1).nonzero().flatten().tolist() == [1, 2]


def test_box_crop_region_matches_pixel_loop():
    gen = torch.Generator().manual_seed(2)
    boxes = torch.rand(20, 4, generator=gen) * 24 - 2
    region = box_crop_region(boxes, 16, 20, padding=1)
    for b, r in zip(boxes.tolist(), region):
        x1 = min(b[0], b[2])
        x2 = max(x1, b[2])
        y1 = min(b[1], b[3])
        y2 = max(y1, b[3])
        x1, x2, y1, y2 = max(x1 - 1, 0), min(x2 + 1, 20), max(y1 - 1, 0), min(y2 + 1, 16)
        exp = torch.tensor([[x1 <= c < x2 and y1 <= rr < y2 for c in range(20)]
                            for rr in range(16)])
        assert torch.equal(r, exp)


def test_crop_masks_and_assemble():
    masks = torch.ones(2, 6, 6)
    boxes = torch.tensor([[2.0, 2, 3, 3], [0, 0, 6, 6]])
    out = crop_masks(masks, boxes, padding=1)
    assert out[0].sum() == 9 and out[1].sum() == 36
    with pytest.raises(ValueError, match="crop_masks"):
        crop_masks(masks, boxes[:1])
    protos = torch.randn(3, 6, 6)
    coeffs = torch.randn(2, 3)
    got = assemble_masks(protos, coeffs, boxes)
    exp = torch.sigmoid(torch.einsum("khw,nk->nhw", protos, coeffs)) * box_crop_region(boxes, 6, 6)
    torch.testing.assert_close(got, exp)
    with pytest.raises(ValueError, match="assemble_masks"):
        assemble_masks(protos, torch.randn(2, 4), boxes)


def _raw_results(image_size, boxes, k=4, gen=None):
    n = len(boxes)
    return Instances(
        image_size, pred_boxes=Boxes(boxes), scores=torch.linspace(0.9, 0.5, n),
        pred_classes=torch.arange(n) % 3, pred_coeffs=torch.randn(n, k, generator=gen),
    )


def test_yolact_postprocess_sizes_boxes_and_masks():
    gen = torch.Generator().manual_seed(3)
    boxes = torch.tensor([[4.0, 8, 40, 60], [10, 10, 64, 30], [70, 5, 90, 20]])  # last: outside
    results = _raw_results((64, 64), boxes, gen=gen)
    protos = torch.randn(4, 32, 32, generator=gen).relu()
    out = yolact_postprocess(results, protos, 200, 249)
    assert out.image_size == (200, 249)
    assert len(out) == 2  # the box clipped to zero width is removed
    assert not out.has("pred_coeffs") and not out.has("pred_global_masks")
    assert out.pred_masks.shape == (2, 200, 249) and out.pred_masks.dtype == torch.bool
    sx, sy = 249 / 64, 200 / 64
    torch.testing.assert_close(out.pred_boxes.tensor,
                               boxes[:2] * torch.tensor([sx, sy, sx, sy]))
    probs = assemble_masks(protos, results.pred_coeffs[:2], boxes[:2] / 2)
    exp = F.interpolate(probs[None], (200, 249), mode="bilinear", align_corners=False)[0] > 0.5
    assert torch.equal(out.pred_masks, exp)
    # Mask pixels live only near their (scaled) box: nothing far outside the crop.
    assert not out.pred_masks[0, :, 200:].any()


def test_yolact_postprocess_empty_and_bad_input():
    results = _raw_results((32, 32), torch.zeros(0, 4))
    out = yolact_postprocess(results, torch.rand(4, 16, 16), 50, 70)
    assert len(out) == 0 and out.pred_masks.shape == (0, 50, 70)
    bad = Instances((32, 32), pred_boxes=Boxes(torch.zeros(1, 4)), scores=torch.ones(1),
                    pred_classes=torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match="pred_coeffs"):
        yolact_postprocess(bad, torch.rand(4, 16, 16), 32, 32)
