"""ATSS (IoU / GIoU / DIoU / maIoU) and fixed-IoU matchers: hand-built cases and loop references."""
import math
import statistics

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.structures import Boxes

from mayolact.config.config import add_mayolact_config
from mayolact.modeling.matchers import (
    ANCHOR_MATCHER_REGISTRY,
    AnchorMatcher,
    ATSSMatcher,
    FixedIoUMatcher,
    build_anchor_matcher,
)
from mayolact.structures.integral_image import integral_images

from common import load_tool


# ------------------------------------------------------------------ python references
def py_quality(kind, g, a, mask=None):
    """IoU / GIoU / DIoU / maIoU of two (x1, y1, x2, y2) tuples, straight from
    docs/REFERENCE.md §6.3 (ATSS) / §6.4 (maIoU)."""
    eps = 1e-6
    iw = max(0.0, min(g[2], a[2]) - max(g[0], a[0]))
    ih = max(0.0, min(g[3], a[3]) - max(g[1], a[1]))
    inter = iw * ih
    area_g = (g[2] - g[0]) * (g[3] - g[1])
    union = max(area_g + (a[2] - a[0]) * (a[3] - a[1]) - inter, eps)
    iou = inter / union
    ew, eh = max(g[2], a[2]) - min(g[0], a[0]), max(g[3], a[3]) - min(g[1], a[1])
    if kind == "iou":
        return iou
    if kind == "giou":
        enclose = max(ew * eh, eps)
        return iou - (enclose - union) / enclose
    if kind == "diou":
        d2 = (((g[0] + g[2]) / 2 - (a[0] + a[2]) / 2) ** 2
              + ((g[1] + g[3]) / 2 - (a[1] + a[3]) / 2) ** 2)
        return iou - d2 / max(ew * ew + eh * eh, eps)
    # maIoU: count the mask pixels of the rounded (half to even), clipped anchor.
    H, W = len(mask), len(mask[0])
    area_m = sum(map(sum, mask))
    if inter <= 0 or area_m == 0:
        return 0.0
    x1, y1, x2, y2 = (round(v) for v in a)
    x1, x2 = min(max(x1, 0), W), min(max(x2, 0), W)
    y1, y2 = min(max(y1, 0), H), min(max(y2, 0), H)
    cnt = sum(mask[r][c] for r in range(y1, y2) for c in range(x1, x2))
    return cnt / (area_m / (area_g + eps)) / union


def reference_atss(levels, gts, kind="iou", masks=None, topk=9, eps=0.01):
    """Plain-loop ATSS (docs/REFERENCE.md §6.3): (matches, labels) as Python lists."""
    anchors = [a for lvl in levels for a in lvl]
    R, G = len(anchors), len(gts)
    matches, labels = [0] * R, [0] * R
    if G == 0:
        return matches, labels
    ctr = [((a[0] + a[2]) / 2, (a[1] + a[3]) / 2) for a in anchors]
    positives = {}  # anchor -> list of (quality, gt)
    for gi, g in enumerate(gts):
        if masks is not None and sum(map(sum, masks[gi])) == 0:
            continue  # empty mask: no positives (the official NaN threshold)
        gc = ((g[0] + g[2]) / 2, (g[1] + g[3]) / 2)
        cand, start = [], 0
        for lvl in levels:
            order = sorted(range(len(lvl)), key=lambda i: math.hypot(
                ctr[start + i][0] - gc[0], ctr[start + i][1] - gc[1]))
            cand += [start + i for i in order[:min(topk, len(lvl))]]
            start += len(lvl)
        mask = masks[gi] if masks is not None else None
        qs = [py_quality(kind, g, anchors[a], mask) for a in cand]
        if len(qs) < 2:
            continue
        thr = statistics.mean(qs) + statistics.stdev(qs)
        for a, q in zip(cand, qs):
            cx, cy = ctr[a]
            if q >= thr and min(cx - g[0], cy - g[1], g[2] - cx, g[3] - cy) > eps:
                positives.setdefault(a, []).append((q, gi))
    for a, lst in positives.items():
        best = max(q for q, _ in lst)
        matches[a] = min(gi for q, gi in lst if q == best)
        labels[a] = 1
    return matches, labels


def random_levels(gen, dtype=torch.float64):
    """Three levels of random (jittered) anchors; some levels have fewer than 9 anchors."""
    levels = []
    for n_max, smin, smax in ((30, 6, 16), (14, 14, 32), (6, 30, 60)):
        n = int(torch.randint(1, n_max + 1, (1,), generator=gen))
        c = torch.rand(n, 2, generator=gen, dtype=dtype) * 75 - 5
        wh = torch.rand(n, 2, generator=gen, dtype=dtype) * (smax - smin) + smin
        levels.append(torch.cat([c - wh / 2, c + wh / 2], 1))
    return levels


def random_gts(gen, H=64, W=64, dtype=torch.float64):
    G = int(torch.randint(0, 5, (1,), generator=gen))
    xy = torch.rand(G, 2, generator=gen, dtype=dtype) * 50
    wh = torch.rand(G, 2, generator=gen, dtype=dtype) * 30 + 4
    gt = torch.cat([xy, torch.minimum(xy + wh, torch.tensor([W, H], dtype=dtype))], 1)
    masks = torch.zeros(G, H, W, dtype=torch.bool)
    for g in range(G):
        if torch.rand(1, generator=gen) < 0.2:
            continue  # empty mask
        x1, y1, x2, y2 = gt[g].floor().long().tolist()
        x2, y2 = min(x2 + 1, W), min(y2 + 1, H)
        masks[g, y1:y2, x1:x2] = torch.rand(y2 - y1, x2 - x1, generator=gen) < 0.5
    return gt, masks


def as_lists(matches, labels):
    assert matches.dtype == torch.int64 and labels.dtype == torch.int8
    return matches.tolist(), labels.tolist()


# ------------------------------------------------------------------------ ATSS: by hand
def test_atss_threshold_and_short_levels_by_hand():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    # Level 0 has 2 anchors, level 1 has 3 (both fewer than topk = 9): C = 5 candidates.
    l0 = torch.tensor([[0.0, 0.0, 10.0, 10.0], [40.0, 40.0, 50.0, 50.0]])
    l1 = torch.tensor([[0.0, 0.0, 10.0, 10.0], [60.0, 0.0, 70.0, 10.0], [0.0, 60.0, 10.0, 70.0]])
    # Qualities (IoU) [1, 0, 1, 0, 0]: mean 0.4, unbiased std sqrt(1.2 / 4) = 0.5477, thr 0.9477.
    matches, labels = ATSSMatcher(topk=9)([Boxes(l0), Boxes(l1)], Boxes(gt))
    assert as_lists(matches, labels) == ([0] * 5, [1, 0, 1, 0, 0])
    # Qualities [1, 0.5, 0.25, 0, 0] (level 1 gets the partial anchors): mean 0.35,
    # std sqrt((0.4225 + 0.0225 + 0.01 + 2 * 0.1225) / 4) = 0.41833, thr 0.76833: only IoU 1 passes.
    l1 = torch.tensor([[0.0, 0.0, 10.0, 5.0], [0.0, 0.0, 5.0, 5.0], [60.0, 60.0, 70.0, 70.0]])
    l0 = torch.tensor([[0.0, 0.0, 10.0, 10.0], [40.0, 40.0, 50.0, 50.0]])
    _, labels = ATSSMatcher(topk=9)([l0, l1], gt)
    assert labels.tolist() == [1, 0, 0, 0, 0]
    # Lower the bar: with the IoU-1 anchor far away (IoU 0), qualities [0, 0, 0.5, 0.25, 0]:
    # mean 0.15, std sqrt((3 * 0.0225 + 0.1225 + 0.01) / 4) = 0.22360, thr 0.37360: 0.5 passes.
    l0 = torch.tensor([[80.0, 80.0, 90.0, 90.0], [40.0, 40.0, 50.0, 50.0]])
    _, labels = ATSSMatcher(topk=9)([l0, l1], gt)
    assert labels.tolist() == [0, 0, 1, 0, 0]


def test_atss_takes_topk_nearest_per_level():
    gt = torch.tensor([[0.0, 0.0, 20.0, 20.0]])
    # One level, 4 anchors; with topk = 2 only the two nearest centres are candidates.
    lvl = torch.tensor([[0.0, 0.0, 20.0, 20.0],      # IoU 1, distance 0
                        [2.0, 2.0, 22.0, 22.0],      # IoU 324/476, distance 2.83
                        [1.0, 1.0, 19.0, 19.0],      # IoU 0.81, distance 0  (nearest tie)
                        [30.0, 30.0, 50.0, 50.0]])   # far away
    # topk = 2: candidates 0 and 2 (distance 0), qualities [1, 0.81]: with two candidates
    # thr = mean + |diff| / sqrt(2) = 0.905 + 0.1344 = 1.039 exceeds both: no positive.
    assert ATSSMatcher(topk=2)([lvl], gt)[1].tolist() == [0, 0, 0, 0]
    # topk = 3 adds anchor 1: qualities [1, 0.6807, 0.81], thr 0.8302 + 0.1606 = 0.9908.
    assert ATSSMatcher(topk=3)([lvl], gt)[1].tolist() == [1, 0, 0, 0]
    # topk = 4 adds the far anchor (quality 0): thr 0.6227 + 0.4353 = 1.058, no positive.
    assert ATSSMatcher(topk=4)([lvl], gt)[1].tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_atss_centre_margin_is_strict(dtype):
    # The first anchor is centred at x = 0; the GT's left edge is 0.01 (then 0.011) to its left.
    lvl = torch.tensor([[-5.0, -5.0, 5.0, 5.0], [100.0, 100.0, 110.0, 110.0],
                        [200.0, 200.0, 210.0, 210.0]], dtype=dtype)
    for x1, expected in ((-0.01, 0), (-0.011, 1), (-0.009, 0)):
        gt = torch.tensor([[x1, -10.0, 10.0, 10.0]], dtype=dtype)
        _, labels = ATSSMatcher(topk=3)([lvl], gt)
        assert labels.tolist() == [expected, 0, 0], x1
    # A centre outside the box is never positive even at top quality; center_eps is a parameter.
    gt = torch.tensor([[-0.3, -10.0, 10.0, 10.0]], dtype=dtype)
    assert ATSSMatcher(topk=3, center_eps=0.25)([lvl], gt)[1].tolist() == [1, 0, 0]
    assert ATSSMatcher(topk=3, center_eps=0.5)([lvl], gt)[1].tolist() == [0, 0, 0]


def test_atss_highest_quality_wins():
    far = torch.tensor([[100.0, 100.0, 110.0, 110.0], [200.0, 200.0, 210.0, 210.0]])
    lvl = torch.cat([torch.tensor([[0.0, 0.0, 10.0, 10.0]]), far])
    small, big = [0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 12.0, 12.0]
    # The anchor is positive for both GTs (IoU 1 and 100/144, each above its own threshold).
    for gts, winner in (([small, big], 0), ([big, small], 1)):
        matches, labels = ATSSMatcher(topk=3)([lvl], torch.tensor(gts))
        assert labels.tolist() == [1, 0, 0] and matches.tolist() == [winner, 0, 0]
    # Exact tie (two identical GTs): the lower GT index wins.
    matches, labels = ATSSMatcher(topk=3)([lvl], torch.tensor([small, small]))
    assert labels.tolist() == [1, 0, 0] and matches.tolist() == [0, 0, 0]


def test_atss_maiou_tie_break_follows_maiou():
    # Two GTs with the same box; GT 0's mask fills it, GT 1's mask is its left half. The anchor
    # is the left half: IoU 0.5 for both (tie -> GT 0), maIoU 0.5 vs 1.0 (-> GT 1).
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]])
    masks = torch.zeros(2, 20, 20, dtype=torch.bool)
    masks[0, 0:10, 0:10] = True
    masks[1, 0:10, 0:5] = True
    lvl = torch.tensor([[0.0, 0.0, 5.0, 10.0], [100.0, 100.0, 110.0, 110.0],
                        [200.0, 200.0, 210.0, 210.0]])
    m_iou, l_iou = ATSSMatcher(topk=3, quality="iou")([lvl], gt)
    ii = integral_images(masks)
    m_ma, l_ma = ATSSMatcher(topk=3, quality="maiou")([lvl], gt, integral_masks=ii)
    m_bf, l_bf = ATSSMatcher(topk=3, quality="maiou", bruteforce=True)([lvl], gt, gt_masks=masks)
    assert l_iou.tolist() == l_ma.tolist() == l_bf.tolist() == [1, 0, 0]
    assert m_iou.tolist() == [0, 0, 0]
    assert m_ma.tolist() == m_bf.tolist() == [1, 0, 0]


def test_atss_no_gt_no_anchor_single_candidate():
    lvl = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 15.0, 15.0]])
    matches, labels = ATSSMatcher()([lvl], torch.zeros(0, 4))
    assert as_lists(matches, labels) == ([0, 0], [0, 0])
    no_masks = integral_images(torch.zeros(0, 20, 20, dtype=torch.bool))
    matches, labels = ATSSMatcher(quality="maiou")([lvl], torch.zeros(0, 4),
                                                   integral_masks=no_masks)
    assert as_lists(matches, labels) == ([0, 0], [0, 0])
    matches, labels = ATSSMatcher()([torch.zeros(0, 4)], torch.tensor([[0.0, 0.0, 10.0, 10.0]]))
    assert matches.shape == labels.shape == (0,)
    # A single anchor overall: one candidate, std undefined (NaN officially) -> no positive.
    matches, labels = ATSSMatcher()([lvl[:1]], torch.tensor([[0.0, 0.0, 10.0, 10.0]]))
    assert as_lists(matches, labels) == ([0], [0])
    # ... while three one-anchor levels give 3 candidates, [1, 0, 0], and thr 0.911.
    far = [torch.tensor([[50.0, 50.0, 60.0, 60.0]]), torch.tensor([[80.0, 0.0, 90.0, 10.0]])]
    _, labels = ATSSMatcher()([lvl[:1]] + far, torch.tensor([[0.0, 0.0, 10.0, 10.0]]))
    assert labels.tolist() == [1, 0, 0]


def test_atss_empty_mask_gets_no_positives():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    lvl = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0],
                        [100.0, 100.0, 110.0, 110.0], [200.0, 200.0, 210.0, 210.0]])
    masks = torch.zeros(2, 40, 40, dtype=torch.bool)
    masks[1, 20:30, 20:30] = True  # GT 0's mask is empty
    ii = integral_images(masks)
    matches, labels = ATSSMatcher(topk=4, quality="maiou")([lvl], gt, integral_masks=ii)
    assert as_lists(matches, labels) == ([0, 1, 0, 0], [0, 1, 0, 0])
    brute = ATSSMatcher(topk=4, quality="maiou", bruteforce=True)
    matches, labels = brute([lvl], gt, gt_masks=masks)
    assert as_lists(matches, labels) == ([0, 1, 0, 0], [0, 1, 0, 0])
    # With IoU both GTs get their anchor.
    assert ATSSMatcher(topk=4)([lvl], gt)[1].tolist() == [1, 1, 0, 0]


def test_atss_needs_masks_and_bad_input():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    lvl = [torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 15.0, 15.0]])]
    assert ATSSMatcher(quality="maiou").needs_masks and not ATSSMatcher(quality="giou").needs_masks
    with pytest.raises(ValueError, match="needs integral_masks"):
        ATSSMatcher(quality="maiou")(lvl, gt)
    with pytest.raises(ValueError, match="needs gt_masks"):
        ATSSMatcher(quality="maiou", bruteforce=True)(lvl, gt, integral_masks=torch.zeros(1, 3, 3))
    two = integral_images(torch.ones(2, 20, 20, dtype=torch.bool))
    with pytest.raises(ValueError, match="2 integral images but there are 1 GT"):
        ATSSMatcher(quality="maiou")(lvl, gt, integral_masks=two)
    with pytest.raises(ValueError, match="gt_boxes has a box with x2 < x1"):
        ATSSMatcher()(lvl, torch.tensor([[10.0, 0.0, 0.0, 10.0]]))
    with pytest.raises(ValueError, match=r"anchors_per_level\[0\] must have shape"):
        ATSSMatcher()([torch.zeros(3, 5)], gt)
    with pytest.raises(ValueError, match="non-empty list"):
        ATSSMatcher()([], gt)
    with pytest.raises(ValueError, match="quality must be one of"):
        ATSSMatcher(quality="ciou")
    with pytest.raises(ValueError, match="topk"):
        ATSSMatcher(topk=0)
    with pytest.raises(ValueError, match="bruteforce"):
        ATSSMatcher(quality="iou", bruteforce=True)


# ------------------------------------------------------------ ATSS: loop reference
@pytest.mark.parametrize("kind", ["iou", "giou", "diou", "maiou"])
def test_atss_equals_loop_reference(kind):
    gen = torch.Generator().manual_seed(10)
    n_pos = 0
    for scene in range(60):
        levels = random_levels(gen)
        gt, masks = random_gts(gen)
        kwargs = {}
        if kind == "maiou":
            kwargs = dict(integral_masks=integral_images(masks))
        got = ATSSMatcher(topk=9, quality=kind)([Boxes(lv) for lv in levels], Boxes(gt), **kwargs)
        ref = reference_atss([lv.tolist() for lv in levels], gt.tolist(), kind,
                             masks.int().tolist() if kind == "maiou" else None)
        assert as_lists(*got) == ref, f"{kind} scene {scene}"
        if kind == "maiou":  # brute force and the full-matrix path give the same assignment
            bf = ATSSMatcher(quality=kind, bruteforce=True)(levels, gt, gt_masks=masks)
            full = ATSSMatcher(quality=kind, candidates_only=False)(levels, gt, **kwargs)
            assert as_lists(*bf) == ref and as_lists(*full) == ref
        n_pos += sum(ref[1])
    assert n_pos > 30  # the scenes do produce positives


def test_atss_float32_matches_float64_on_random_scenes():
    gen = torch.Generator().manual_seed(11)
    for _ in range(30):
        levels = random_levels(gen)
        gt, masks = random_gts(gen)
        ii = integral_images(masks)
        m = ATSSMatcher(quality="maiou")
        a = m([lv.float() for lv in levels], gt.float(), integral_masks=ii)
        b = m(levels, gt, integral_masks=ii)
        assert as_lists(*a) == as_lists(*b)


# -------------------------------------------------------------------------- fixed IoU
def test_fixed_iou_bands():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    anchors = torch.tensor([
        [0.0, 0.0, 10.0, 10.0],   # IoU 1       -> positive
        [0.0, 0.0, 10.0, 5.5],    # IoU 0.55    -> positive
        [0.0, 0.0, 10.0, 4.5],    # IoU 0.45    -> ignored
        [0.0, 0.0, 10.0, 3.5],    # IoU 0.35    -> negative
        [0.0, 0.0, 10.0, 5.0],    # IoU 0.5     -> positive (>= 0.5)
        [0.0, 0.0, 10.0, 4.0],    # IoU 0.4     -> ignored (>= 0.4)
        [50.0, 50.0, 60.0, 60.0],  # IoU 0      -> negative
    ])
    matches, labels = FixedIoUMatcher()([Boxes(anchors[:3]), Boxes(anchors[3:])], Boxes(gt))
    assert as_lists(matches, labels) == ([0] * 7, [1, 1, -1, 0, 1, -1, 0])


def test_fixed_iou_low_quality_rules():
    anchors = torch.tensor([
        [0.0, 0.0, 10.0, 10.0],     # 0: IoU 1 with GT 0
        [100.0, 100.0, 110.0, 110.0],  # 1
        [20.0, 0.0, 30.0, 10.0],    # 2: IoU 0.3 with GT 1 = its best
        [200.0, 0.0, 210.0, 10.0],  # 3
    ])
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 0.0, 30.0, 3.0],
                       [500.0, 500.0, 510.0, 510.0]])
    matches, labels = FixedIoUMatcher()([anchors], gt)
    # GT 1 takes anchor 2 (IoU 0.3 < 0.4 would be negative); GT 2 overlaps nothing and takes
    # the first anchor tied at IoU 0 -- anchor 0 -- overriding GT 0's positive match (last wins).
    assert as_lists(matches, labels) == ([2, 0, 1, 0], [1, 0, 1, 0])
    matches, labels = FixedIoUMatcher(allow_low_quality_matches=False)([anchors], gt)
    assert as_lists(matches, labels) == ([0, 0, 0, 0], [1, 0, 0, 0])
    # min_low_quality (mmdet's min_pos_iou) skips GTs whose best IoU is below it.
    matches, labels = FixedIoUMatcher(min_low_quality=0.2)([anchors], gt)
    assert as_lists(matches, labels) == ([0, 0, 1, 0], [1, 0, 1, 0])


def test_fixed_iou_best_anchor_overrides_positive_of_other_gt():
    # Anchor 0 is positive for GT 0 (IoU 0.8) but is GT 1's best anchor (IoU 0.36): GT 1 wins.
    anchors = torch.tensor([[0.0, 0.0, 8.0, 10.0], [40.0, 40.0, 50.0, 50.0]])
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 8.0, 3.6]])
    matches, labels = FixedIoUMatcher()([anchors], gt)
    assert as_lists(matches, labels) == ([1, 0], [1, 0])


def test_fixed_iou_no_gt_and_config_labels():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 15.0, 15.0]])
    assert as_lists(*FixedIoUMatcher()([anchors], torch.zeros(0, 4))) == ([0, 0], [0, 0])
    m = FixedIoUMatcher(thresholds=[0.3], labels=[-1, 1])
    assert m([anchors], torch.zeros(0, 4))[1].tolist() == [-1, -1]
    assert not FixedIoUMatcher().needs_masks
    # Extra arguments (masks) are accepted and ignored.
    out = FixedIoUMatcher()([anchors], anchors[:1], integral_masks=object(), gt_masks=object())
    assert as_lists(*out) == ([0, 0], [1, 0])


def test_fixed_iou_bad_input():
    with pytest.raises(ValueError, match="len\\(labels\\)"):
        FixedIoUMatcher(thresholds=(0.4, 0.5), labels=(0, 1))
    with pytest.raises(ValueError, match="increasing"):
        FixedIoUMatcher(thresholds=(0.5, 0.4))
    with pytest.raises(ValueError, match="labels must be in"):
        FixedIoUMatcher(labels=(0, 2, 1))
    with pytest.raises(ValueError, match="gt_boxes must have shape"):
        FixedIoUMatcher()([torch.zeros(2, 4)], torch.zeros(3))


# ---------------------------------------------------------------------------- config
def test_build_anchor_matcher_from_config():
    cfg = get_cfg()
    add_mayolact_config(cfg)
    m = build_anchor_matcher(cfg)
    assert isinstance(m, ATSSMatcher) and m.quality == "maiou" and m.topk == 9 and m.needs_masks
    cfg.MODEL.YOLACT.ATSS_QUALITY = "giou"
    cfg.MODEL.YOLACT.ATSS_TOPK = 5
    m = build_anchor_matcher(cfg)
    assert m.quality == "giou" and m.topk == 5 and not m.needs_masks
    cfg.MODEL.YOLACT.MATCHER = "FixedIoU"
    m = build_anchor_matcher(cfg)
    assert isinstance(m, FixedIoUMatcher) and m.thresholds == [0.4, 0.5] and m.labels == [0, -1, 1]
    cfg.MODEL.YOLACT.MATCHER = "MaxIoU"
    with pytest.raises(ValueError, match=r"valid: \['ATSS', 'FixedIoU'\]"):
        build_anchor_matcher(cfg)


def test_registry_holds_the_matchers_and_their_contract():
    assert ANCHOR_MATCHER_REGISTRY.get("ATSSMatcher") is ATSSMatcher
    assert ANCHOR_MATCHER_REGISTRY.get("FixedIoUMatcher") is FixedIoUMatcher
    assert "call contract" in ANCHOR_MATCHER_REGISTRY.__doc__.lower()
    # needs_masks is part of the contract: declared by the base class, overridden where needed.
    assert AnchorMatcher.needs_masks is False and FixedIoUMatcher.needs_masks is False
    assert ATSSMatcher(quality="maiou").needs_masks and not ATSSMatcher().needs_masks
    with pytest.raises(NotImplementedError):
        AnchorMatcher()([torch.zeros(1, 4)], torch.zeros(0, 4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    gen = torch.Generator().manual_seed(12)
    for _ in range(10):
        levels = [lv.float() for lv in random_levels(gen)]
        gt, masks = random_gts(gen)
        gt = gt.float()
        ii = integral_images(masks)
        for m, kw, kw_cuda in (
            (ATSSMatcher(quality="maiou"), dict(integral_masks=ii),
             dict(integral_masks=ii.to("cuda"))),
            (ATSSMatcher(quality="iou"), {}, {}),
            (FixedIoUMatcher(), {}, {}),
        ):
            a = m(levels, gt, **kw)
            b = m([lv.cuda() for lv in levels], gt.cuda(), **kw_cuda)
            assert as_lists(*a) == as_lists(b[0].cpu(), b[1].cpu())


# ------------------------------------------------------------- tools/benchmark_assigner.py
def _benchmark_tool():
    return load_tool("benchmark_assigner")


def test_benchmark_train_iteration_prints_table(coco_mini, capsys):
    tool = _benchmark_tool()
    rows = tool.main(["--train-iteration", "--size", "128", "--batch", "2", "--iters", "1",
                      "--bruteforce-iters", "1", "--warmup", "0",
                      "--coco-mini", str(coco_mini)])
    out = capsys.readouterr().out
    assert "| assigner | anchors | s / iter | x ATSS w. IoU |" in out
    assert "batch 2 x 128x128" in out and "coco_mini_train" in out
    names = ["Fixed IoU thr.", "ATSS w. IoU", "ATSS w. maIoU (Alg. 1)", "brute force"]
    assert all(n in out for n in names) and "ATSS w. maIoU / ATSS w. IoU = " in out
    assert [r["key"] for r in rows] == ["fixed", "atss_iou", "atss_maiou", "atss_maiou_bf"]
    assert [r["paper"] for r in rows] == [0.51, 0.57, 0.59, 41.89]
    # 128 px: P3..P7 of 16, 8, 4, 2, 1 -> 341 locations; YOLACT has 3 anchors per location.
    assert [r["anchors"] for r in rows] == [3 * 341, 341, 341, 341]
    assert all(r["s_iter"] > 0 and r["s_assign"] > 0 for r in rows)


def test_benchmark_assigner_cost_table(coco_mini, capsys):
    tool = _benchmark_tool()
    tool.main(["--images", "2", "--size", "128", "--repeats", "1", "--bruteforce-repeats", "1",
               "--coco-mini", str(coco_mini)])
    out = capsys.readouterr().out
    assert "| step | anchors | ms / batch | x ATSS w. IoU |" in out
    assert "All maIoU variants give identical assignments" in out


def test_benchmark_bad_arguments():
    tool = _benchmark_tool()
    with pytest.raises(SystemExit):
        tool.parse_args(["--train-iteration", "--iters", "0"])
    with pytest.raises(ValueError, match="--rows \\['nope'\\]: not in"):
        tool.main(["--train-iteration", "--rows", "nope"])
