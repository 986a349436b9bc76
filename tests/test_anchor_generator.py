"""Anchor geometry: counts of docs/REFERENCE.md §3 / §5.2 and first anchors by hand
(YOLACT, ATSS, maYOLACT)."""
import math

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator, build_anchor_generator

from mayolact.config.config import add_mayolact_config
from mayolact.modeling.anchor_generator import YOLACTAnchorGenerator

# P3..P7 feature sizes of a square input (docs/REFERENCE.md §3, "Backbone").
FEATURE_SIZES = {400: (50, 25, 13, 7, 4), 550: (69, 35, 18, 9, 5), 700: (88, 44, 22, 11, 6)}
SHAPES = [ShapeSpec(channels=256, stride=s) for s in (8, 16, 32, 64, 128)]


def feats(size):
    return [torch.zeros(1, 1, s, s) for s in FEATURE_SIZES[size]]


def yolact_cfg():
    cfg = get_cfg()
    add_mayolact_config(cfg)
    cfg.MODEL.ANCHOR_GENERATOR.NAME = "YOLACTAnchorGenerator"
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[24], [48], [96], [192], [384]]
    cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [[0.5, 1.0, 2.0]]
    cfg.MODEL.ANCHOR_GENERATOR.OFFSET = 0.5
    return cfg


def atss_generator(two_scales=False):
    sizes = [[32], [64], [128], [256], [512]]
    if two_scales:  # maYOLACT: octave scales {4, 4 * sqrt(2)}
        sizes = [[s[0], s[0] * math.sqrt(2)] for s in sizes]
    return DefaultAnchorGenerator(sizes=sizes, aspect_ratios=[[1.0]], strides=[8, 16, 32, 64, 128],
                                  offset=0.0)


@pytest.mark.parametrize("size, fixed, atss, two", [
    (400, 10077, 3359, 6718), (550, 19248, 6416, 12832), (700, 30963, 10321, 20642)])
def test_anchor_counts(size, fixed, atss, two):
    gen = build_anchor_generator(yolact_cfg(), SHAPES)
    assert isinstance(gen, YOLACTAnchorGenerator) and gen.num_anchors == [3] * 5
    per_level = gen(feats(size))
    assert [len(b) for b in per_level] == [3 * s * s for s in FEATURE_SIZES[size]]
    assert sum(len(b) for b in per_level) == fixed
    assert sum(len(b) for b in atss_generator()(feats(size))) == atss
    assert sum(len(b) for b in atss_generator(True)(feats(size))) == two


def test_yolact_strides_and_first_anchors_by_hand():
    gen = build_anchor_generator(yolact_cfg(), SHAPES)
    strides = [550 / 69, 550 / 35, 550 / 18, 550 / 9, 550 / 5]
    assert gen.strides == pytest.approx(strides)
    anchors = [b.tensor for b in gen(feats(700))]  # the 550 geometry is kept at 700
    s = strides[0]
    c = s / 2  # 3.9855: the first cell centre
    w05, h05 = math.sqrt(24 * 24 / 0.5), math.sqrt(24 * 24 * 0.5)  # ratio 0.5: h / w = 0.5
    expected = torch.tensor([
        [c - w05 / 2, c - h05 / 2, c + w05 / 2, c + h05 / 2],  # (y=0, x=0), ratio 0.5
        [c - 12, c - 12, c + 12, c + 12],                      # ratio 1
        [c - h05 / 2, c - w05 / 2, c + h05 / 2, c + w05 / 2],  # ratio 2
        [c + s - w05 / 2, c - h05 / 2, c + s + w05 / 2, c + h05 / 2],  # (y=0, x=1), ratio 0.5
    ])
    torch.testing.assert_close(anchors[0][:4], expected, atol=1e-4, rtol=0)
    # Index (y * W + x) * A + a: the last location of P3 at 700 is (87, 87), centred 87.5 strides.
    W = FEATURE_SIZES[700][0]
    last = anchors[0][((87 * W) + 87) * 3 + 1]
    cl = 87.5 * s
    torch.testing.assert_close(last, torch.tensor([cl - 12, cl - 12, cl + 12, cl + 12]),
                               atol=1e-3, rtol=0)
    # P7: stride 110, first centre 55, side 384 at ratio 1.
    torch.testing.assert_close(anchors[4][1],
                               torch.tensor([55 - 192.0, 55 - 192, 55 + 192, 55 + 192]),
                               atol=1e-4, rtol=0)
    # Every centre of a level lies on the grid (j + 0.5) * stride; no extra or missing cell.
    for lvl, (b, n) in enumerate(zip(anchors, FEATURE_SIZES[700])):
        ctr = (b[:, :2] + b[:, 2:]) / 2
        grid = (torch.arange(n) + 0.5) * strides[lvl]
        torch.testing.assert_close(ctr[::3, 0].reshape(n, n), grid[None].expand(n, n),
                                   atol=1e-3, rtol=0)
        torch.testing.assert_close(ctr[::3, 1].reshape(n, n), grid[:, None].expand(n, n),
                                   atol=1e-3, rtol=0)


def test_atss_first_anchors_by_hand():
    a = atss_generator()(feats(550))
    torch.testing.assert_close(a[0].tensor[:2],
                               torch.tensor([[-16.0, -16, 16, 16], [-8, -16, 24, 16]]))
    torch.testing.assert_close(a[4].tensor[0], torch.tensor([-256.0, -256, 256, 256]))
    two = atss_generator(True)(feats(550))
    h = 16 * math.sqrt(2)
    torch.testing.assert_close(two[0].tensor[:3], torch.tensor(
        [[-16.0, -16, 16, 16], [-h, -h, h, h], [-8, -16, 24, 16]]), atol=1e-4, rtol=0)


def test_non_square_and_awkward_feature_sizes():
    gen = YOLACTAnchorGenerator(sizes=[[24]], aspect_ratios=[[1.0]], strides=[550 / 69], offset=0.5)
    for h, w in ((1, 1), (69, 70), (7, 123)):
        (b,) = gen([torch.zeros(1, 1, h, w)])
        assert len(b) == h * w
        ctr = (b.tensor[:, :2] + b.tensor[:, 2:]) / 2
        torch.testing.assert_close(ctr[-1], torch.tensor([(w - 0.5), (h - 0.5)]) * (550 / 69),
                                   atol=1e-3, rtol=0)


def test_bad_config():
    cfg = yolact_cfg()
    cfg.MODEL.YOLACT.ANCHOR_REFERENCE_GRID = [69, 35, 18]
    with pytest.raises(ValueError, match="ANCHOR_REFERENCE_GRID has 3 entries"):
        build_anchor_generator(cfg, SHAPES)
    with pytest.raises(ValueError, match="strides must be positive"):
        YOLACTAnchorGenerator(sizes=[[24]], aspect_ratios=[[1.0]], strides=[0.0])
    with pytest.raises(ValueError, match="offset"):
        YOLACTAnchorGenerator(sizes=[[24]], aspect_ratios=[[1.0]], strides=[8.0], offset=1.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda():
    gen = build_anchor_generator(yolact_cfg(), SHAPES)
    cpu = gen(feats(550))
    gpu = gen.to("cuda")([f.cuda() for f in feats(550)])
    for a, b in zip(cpu, gpu):
        assert b.tensor.device.type == "cuda"
        torch.testing.assert_close(b.tensor.cpu(), a.tensor, atol=1e-4, rtol=0)


def test_feature_sizes_and_anchors_for_input():
    """The one feature-size formula against the hand-computed sides, and the anchors a config
    gives an input without a model: ATSS (1 or 2 per location) and the fixed-IoU row."""
    from mayolact.config.config import merge_config_row
    from mayolact.modeling.anchor_generator import anchors_for_input, feature_level, feature_sizes

    from common import BASE_CONFIG, CONFIGS, get_config

    for size, sides in FEATURE_SIZES.items():
        assert feature_sizes(size) == list(sides)
    assert feature_sizes(128, [3, 7]) == [16, 1]
    assert feature_level("p5") == 5
    with pytest.raises(ValueError, match="res_last"):
        feature_level("res_last")
    atss = get_config(BASE_CONFIG)
    levels = anchors_for_input(atss)
    assert [len(b) for b in levels] == [s * s for s in FEATURE_SIZES[550]]
    assert sum(len(b) for b in levels) == 6416
    assert levels[0].tensor[0].tolist() == [-16.0, -16.0, 16.0, 16.0]
    assert sum(len(b) for b in anchors_for_input(atss, 700)) == 10321
    two = get_config(CONFIGS / "COCO-InstanceSegmentation" / "mayolact_R_50_FPN_550.yaml")
    assert sum(len(b) for b in anchors_for_input(two)) == 12832
    fixed = merge_config_row(get_config(BASE_CONFIG), str(CONFIGS / "rows" / "assigners.yaml"),
                             "fixed_iou")
    assert sum(len(b) for b in anchors_for_input(fixed)) == 19248
    assert sum(len(b) for b in anchors_for_input(fixed, 400)) == 10077
    # The 550 geometry at 400: the same float strides as at 550.
    built = build_anchor_generator(fixed, SHAPES)(feats(400))
    for a, b in zip(anchors_for_input(fixed, 400), built):
        torch.testing.assert_close(a.tensor, b.tensor, atol=0, rtol=0)
