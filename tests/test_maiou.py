"""maIoU (Alg. 1): the kernel against brute force, a pure-Python oracle and the worked example of
docs/REFERENCE.md §14."""
import numpy as np
import pytest
import torch
from detectron2.structures import BitMasks, Boxes, pairwise_iou

from mayolact.structures.integral_image import integral_images
from mayolact.structures.maiou import (
    mask_fraction_in_boxes,
    mask_over_box,
    paired_maiou,
    pairwise_maiou,
    pairwise_maiou_bruteforce,
)


# ----------------------------------------------------------------------------- helpers
def worked_example():
    """docs/REFERENCE.md §14: 20x20 image, mask rows 5-14 x cols 5-9 (50 px), GT box
    [5,5,15,15]."""
    masks = torch.zeros(1, 20, 20, dtype=torch.bool)
    masks[0, 5:15, 5:10] = True
    gt = torch.tensor([[5.0, 5.0, 15.0, 15.0]])
    anchors = torch.tensor([
        [5, 5, 15, 15], [5, 5, 10, 15], [10, 5, 15, 15], [0, 0, 10, 10], [7.5, 7.5, 12.5, 12.5],
    ], dtype=torch.float32)
    iou = [1.0, 0.5, 0.5, 25 / 175, 0.25]
    maiou = [1.0, 1.0, 0.0, 50 / 175, 0.16]
    return gt, anchors, masks, iou, maiou


def naive_maiou(gt, anchors, masks):
    """Independent oracle: Python floats, Python's round (half to even), numpy slicing per pair."""
    gt, anchors = gt.double().tolist(), anchors.double().tolist()
    masks = masks.numpy().astype(bool)
    H, W = masks.shape[1:]
    out = np.zeros((len(gt), len(anchors)))
    for g, (gx1, gy1, gx2, gy2) in enumerate(gt):
        area_m = int(masks[g].sum())
        area_b = (gx2 - gx1) * (gy2 - gy1)
        for a, (ax1, ay1, ax2, ay2) in enumerate(anchors):
            iw = max(0.0, min(gx2, ax2) - max(gx1, ax1))
            ih = max(0.0, min(gy2, ay2) - max(gy1, ay1))
            inter = iw * ih
            union = max(area_b + (ax2 - ax1) * (ay2 - ay1) - inter, 1e-6)
            if inter <= 0 or area_m == 0:
                continue
            x1, y1, x2, y2 = (round(v) for v in (ax1, ay1, ax2, ay2))
            x1, y1 = min(max(x1, 0), W), min(max(y1, 0), H)
            x2, y2 = min(max(x2, 0), W), min(max(y2, 0), H)
            cnt = int(masks[g, y1:y2, x1:x2].sum())
            mob = area_m / (area_b + 1e-6)
            out[g, a] = cnt / mob / union
    return torch.from_numpy(out)


def random_scene(gen, H=None, W=None, max_gt=5, max_anchors=40):
    """GT boxes + masks + anchors with every edge case of docs/REFERENCE.md §6.4."""
    H = H or int(torch.randint(8, 41, (1,), generator=gen))
    W = W or int(torch.randint(8, 51, (1,), generator=gen))
    G = int(torch.randint(0, max_gt + 1, (1,), generator=gen))
    A = int(torch.randint(1, max_anchors + 1, (1,), generator=gen))

    def rand_boxes(n, lo, hi, smin, smax):
        xy = torch.rand(n, 2, generator=gen) * (hi - lo) + lo
        wh = torch.rand(n, 2, generator=gen) * (smax - smin) + smin
        b = torch.cat([xy, xy + wh], 1)
        # Snap about a third of the coordinates to exact halves and a third to integers.
        mode = torch.randint(0, 3, b.shape, generator=gen)
        b = torch.where(mode == 0, torch.floor(b) + 0.5, torch.where(mode == 1, torch.round(b), b))
        return torch.stack([torch.minimum(b[:, 0], b[:, 2]), torch.minimum(b[:, 1], b[:, 3]),
                            torch.maximum(b[:, 0], b[:, 2]), torch.maximum(b[:, 1], b[:, 3])], 1)

    gt = rand_boxes(G, 0, min(H, W) * 0.8, 1, max(H, W) * 0.7)
    masks = torch.zeros(G, H, W, dtype=torch.bool)
    for g in range(G):
        kind = int(torch.randint(0, 5, (1,), generator=gen))
        if kind == 0:
            continue  # empty mask
        x1, y1, x2, y2 = gt[g].floor().long().tolist()
        noise = torch.rand(H, W, generator=gen) < 0.6
        inside = torch.zeros(H, W, dtype=torch.bool)
        inside[max(y1, 0):max(y2, 0), max(x1, 0):max(x2, 0)] = True
        masks[g] = inside & noise
        if kind == 1:  # a few pixels outside the box (nearest resizing can do that)
            masks[g] |= torch.rand(H, W, generator=gen) < 0.03
    # Anchors: ordinary, tiny (< 1 px), huge (> image) and partly or fully outside the image.
    parts = [
        rand_boxes(A, -10, max(H, W) + 5, 2, max(H, W) * 0.6),
        rand_boxes(max(1, A // 4), -2, max(H, W), 0.05, 1.2),
        rand_boxes(max(1, A // 8), -60, 0, max(H, W) * 1.5, max(H, W) * 3),
    ]
    anchors = torch.cat(parts, 0)
    return gt, anchors, masks


# ------------------------------------------------------------------------------- tests
def test_worked_example_spec14():
    gt, anchors, masks, iou, maiou = worked_example()
    ii = integral_images(masks)
    got = pairwise_maiou(gt, anchors, ii)
    assert got.shape == (1, 5)
    torch.testing.assert_close(got[0], torch.tensor(maiou), atol=1e-5, rtol=0)
    torch.testing.assert_close(pairwise_iou(Boxes(gt), Boxes(anchors))[0], torch.tensor(iou),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(pairwise_maiou_bruteforce(gt, anchors, masks)[0],
                               torch.tensor(maiou), atol=1e-5, rtol=0)
    torch.testing.assert_close(naive_maiou(gt, anchors, masks)[0].float(), torch.tensor(maiou),
                               atol=1e-5, rtol=0)
    # MOB = 50 / 100; the last anchor rounds half to even to [8,8,12,12] and covers 8 px.
    torch.testing.assert_close(mask_over_box(gt, ii), torch.tensor([0.5]), atol=1e-6, rtol=0)
    frac = mask_fraction_in_boxes(anchors, ii, torch.zeros(5, dtype=torch.long))
    torch.testing.assert_close(frac, torch.tensor([0.5, 1.0, 0.0, 0.25, 8 / 25]), atol=1e-5, rtol=0)
    # Boxes objects, dense integral images and BitMasks are accepted too.
    torch.testing.assert_close(pairwise_maiou(Boxes(gt), Boxes(anchors), ii.dense()), got)
    torch.testing.assert_close(pairwise_maiou_bruteforce(Boxes(gt), anchors, BitMasks(masks)), got)


def test_alg1_equals_bruteforce_on_random_scenes():
    gen = torch.Generator().manual_seed(0)
    n_pairs = n_nonzero = 0
    for scene in range(220):
        gt, anchors, masks = random_scene(gen)
        ii = integral_images(masks)
        fast = pairwise_maiou(gt, anchors, ii)
        brute = pairwise_maiou_bruteforce(gt, anchors, masks)
        assert fast.shape == brute.shape == (len(gt), len(anchors))
        assert not torch.isnan(fast).any(), scene
        if fast.numel():
            assert float(fast.min()) >= 0 and float(fast.max()) <= 1 + 1e-5, scene
        torch.testing.assert_close(fast, brute, atol=1e-5, rtol=0, msg=f"scene {scene}")
        if scene < 60:  # the slower pure-Python oracle on a subset
            torch.testing.assert_close(fast.double(), naive_maiou(gt, anchors, masks),
                                       atol=1e-5, rtol=0, msg=f"scene {scene}")
        # Rows of empty masks are exactly 0.
        empty = ~masks.flatten(1).any(1)
        assert (fast[empty] == 0).all()
        n_pairs += fast.numel()
        n_nonzero += int((fast > 0).sum())
    assert n_nonzero > 0.05 * n_pairs  # the scenes do exercise non-trivial pairs


def test_maiou_equals_iou_when_masks_fill_integer_boxes():
    gen = torch.Generator().manual_seed(1)
    H, W = 40, 50
    for _ in range(20):
        xy = torch.randint(0, 30, (4, 2), generator=gen)
        wh = torch.randint(1, 20, (4, 2), generator=gen)
        gt = torch.cat([xy, torch.minimum(xy + wh, torch.tensor([W, H]))], 1).float()
        masks = torch.zeros(4, H, W, dtype=torch.bool)
        for g, (x1, y1, x2, y2) in enumerate(gt.long().tolist()):
            masks[g, y1:y2, x1:x2] = True
        a_xy = torch.randint(-10, 50, (30, 2), generator=gen)
        anchors = torch.cat([a_xy, a_xy + torch.randint(1, 30, (30, 2), generator=gen)], 1).float()
        got = pairwise_maiou(gt, anchors, integral_images(masks))
        torch.testing.assert_close(got, pairwise_iou(Boxes(gt), Boxes(anchors)), atol=1e-5, rtol=0)


def test_dense_compact_and_chunking_agree_exactly():
    gen = torch.Generator().manual_seed(2)
    for _ in range(10):
        gt, anchors, masks = random_scene(gen, max_gt=6, max_anchors=60)
        ii = integral_images(masks)
        ref = pairwise_maiou(gt, anchors, ii)
        assert torch.equal(pairwise_maiou(gt, anchors, ii.dense()), ref)
        assert torch.equal(pairwise_maiou(gt, anchors, ii.dense().long()), ref)
        for chunk in (1, 3, 7, 1000):
            assert torch.equal(pairwise_maiou(gt, anchors, ii, chunk_size=chunk), ref)


def test_box_counts_both_layouts_equal_pixel_counts():
    """The one lookup path (IntegralImages.box_counts) on maIoU's rounded anchors."""
    gen = torch.Generator().manual_seed(6)
    for _ in range(30):
        gt, anchors, masks = random_scene(gen, max_gt=6)
        G = len(gt)
        if G == 0:
            continue
        H, W = masks.shape[1:]
        ii = integral_images(masks)
        r = torch.round(anchors).long()
        x1, x2 = r[:, 0].clamp(0, W), r[:, 2].clamp(0, W)
        y1, y2 = r[:, 1].clamp(0, H), r[:, 3].clamp(0, H)
        ref = torch.tensor([[int(masks[g, y1[a]:y2[a], x1[a]:x2[a]].sum()) for a in range(len(r))]
                            for g in range(G)])
        assert torch.equal(ii.areas(), masks.flatten(1).sum(1))
        idx = torch.randint(0, G, (len(anchors),), generator=gen)
        got = ii.box_counts(r, idx)
        assert got.dtype == torch.int64
        assert torch.equal(got, ref[idx, torch.arange(len(r))])
        assert torch.equal(ii.box_counts(r[None]), ref)  # (1, A) broadcast over the G rows
        assert torch.equal(ii.box_counts(r[None].expand(G, -1, -1)), ref)
        assert torch.equal(ii.box_counts(r, torch.arange(G)[:, None]), ref)
        # A table view (indexing shares the data) keeps working.
        assert torch.equal(ii[1:].box_counts(r[None]), ref[1:])


def test_kernel_on_candidate_layout_equals_pairwise_entries():
    """The matcher's (G, C) candidate layout gives the entries of pairwise_maiou bit for bit."""
    gen = torch.Generator().manual_seed(3)
    for _ in range(10):
        gt, anchors, masks = random_scene(gen, max_gt=5)
        if len(gt) == 0:
            continue
        ii = integral_images(masks)
        full = pairwise_maiou(gt, anchors, ii)
        cand = torch.randint(0, len(anchors), (len(gt), 7), generator=gen)  # (G, C)
        got = paired_maiou(gt[:, None, :], anchors[cand], ii)
        assert torch.equal(got, full.gather(1, cand))
        # Every anchor for every GT: (G, A, 4) anchors give the whole matrix.
        grid = paired_maiou(gt[:, None, :], anchors[None].expand(len(gt), -1, -1), ii)
        assert torch.equal(grid, full)


def test_empty_inputs_and_empty_masks():
    masks = torch.zeros(2, 10, 10, dtype=torch.bool)
    masks[1, 2:5, 2:5] = True
    gt = torch.tensor([[1.0, 1.0, 6.0, 6.0], [1.0, 1.0, 6.0, 6.0]])
    anchors = torch.tensor([[0.0, 0.0, 5.0, 5.0], [2.0, 2.0, 4.0, 4.0]])
    ii = integral_images(masks)
    out = pairwise_maiou(gt, anchors, ii)
    assert torch.equal(out[0], torch.zeros(2)) and (out[1] > 0).all()
    assert torch.equal(mask_over_box(gt, ii), torch.tensor([0.0, 9 / (25 + 1e-6)]))
    assert pairwise_maiou(gt, anchors[:0], ii).shape == (2, 0)
    no_gt = integral_images(torch.zeros(0, 10, 10, dtype=torch.bool))
    assert pairwise_maiou(torch.zeros(0, 4), anchors, no_gt).shape == (0, 2)
    assert pairwise_maiou_bruteforce(torch.zeros(0, 4), anchors,
                                     torch.zeros(0, 10, 10, dtype=torch.bool)).shape == (0, 2)


def test_float64_inputs_keep_float64():
    gt, anchors, masks, _, maiou = worked_example()
    out = pairwise_maiou(gt.double(), anchors.double(), integral_images(masks))
    assert out.dtype == torch.float64
    torch.testing.assert_close(out[0], torch.tensor(maiou, dtype=torch.float64), atol=1e-7, rtol=0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(gt=torch.zeros(4)), "gt_boxes must have shape"),
    (dict(gt=torch.zeros(2, 5)), "gt_boxes must have shape"),
    (dict(gt=torch.tensor([[5.0, 0, 1, 1]])), "gt_boxes has a box with x2 < x1"),
    (dict(anchors=torch.tensor([[0.0, 5, 1, 1]])), "anchors has a box with x2 < x1"),
    (dict(anchors=torch.tensor([[0.0, 0, float("nan"), 1]])), "anchors contains non-finite"),
    (dict(gt=torch.tensor([[0.0, 0, float("inf"), 1]])), "gt_boxes contains non-finite"),
    (dict(ii=integral_images(torch.zeros(2, 10, 10, dtype=torch.bool))), "2 integral images"),
    (dict(ii=torch.zeros(1, 11, 11)), "integer"),
    (dict(ii=torch.ones(1, 11, 11, dtype=torch.int32)), "zero first row"),
    (dict(ii="masks"), "expected IntegralImages"),
    (dict(chunk_size=0), "chunk_size"),
])
def test_pairwise_maiou_bad_input(kwargs, match):
    gt, anchors, masks, _, _ = worked_example()
    args = dict(gt=gt, anchors=anchors, ii=integral_images(masks))
    chunk = kwargs.pop("chunk_size", None)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        pairwise_maiou(args["gt"], args["anchors"], args["ii"], chunk_size=chunk)


def test_bruteforce_mask_fraction_and_box_measures_bad_input():
    gt, anchors, masks, _, _ = worked_example()
    ii = integral_images(masks)
    with pytest.raises(ValueError, match=r"index must lie in \[0, 1\)"):
        mask_fraction_in_boxes(anchors, ii, torch.tensor([0, 0, 0, 0, 1]))
    with pytest.raises(ValueError, match="index must be an integer tensor"):
        mask_fraction_in_boxes(anchors, ii, torch.zeros(5))
    with pytest.raises(ValueError, match="does not broadcast"):
        mask_fraction_in_boxes(anchors, ii, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="masks holds 2 masks"):
        pairwise_maiou_bruteforce(gt, anchors, masks.repeat(2, 1, 1))
    with pytest.raises(ValueError, match="masks must be a"):
        pairwise_maiou_bruteforce(gt, anchors, masks[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    gen = torch.Generator().manual_seed(5)
    for _ in range(5):
        gt, anchors, masks = random_scene(gen)
        ii = integral_images(masks)
        cpu = pairwise_maiou(gt, anchors, ii)
        gpu = pairwise_maiou(gt.cuda(), anchors.cuda(), ii.to("cuda"))
        torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-6, rtol=0)
        brute = pairwise_maiou_bruteforce(gt.cuda(), anchors.cuda(), masks.cuda())
        torch.testing.assert_close(brute.cpu(), cpu, atol=1e-5, rtol=0)
