"""YOLACTHead, ProtoNet and SemanticSegHead: shapes, ranges, init and config wiring."""
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec

from mayolact.config.config import add_mayolact_config
from mayolact.modeling.protonet import ProtoNet, SemanticSegHead
from mayolact.modeling.yolact_head import YOLACTHead


def _cfg(num_classes=3, ratios=(1.0,), sizes=((32,), (64,), (128,)), head_convs=1):
    cfg = get_cfg()
    add_mayolact_config(cfg)
    cfg.MODEL.YOLACT.NUM_CLASSES = num_classes
    cfg.MODEL.YOLACT.NUM_PROTOTYPES = 8
    cfg.MODEL.YOLACT.HEAD_NUM_CONVS = head_convs
    cfg.MODEL.YOLACT.PROTO_CHANNELS = 16
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [list(s) for s in sizes]
    cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [list(ratios)]
    cfg.MODEL.ANCHOR_GENERATOR.OFFSET = 0.0
    return cfg


SHAPES = [ShapeSpec(channels=16, stride=s) for s in (8, 16, 32)]


@pytest.mark.parametrize("ratios,num_anchors,head_convs", [((1.0,), 1, 1), ((0.5, 1.0, 2.0), 3, 2)])
def test_head_shapes_and_ranges(ratios, num_anchors, head_convs):
    torch.manual_seed(0)
    head = YOLACTHead(_cfg(ratios=ratios, head_convs=head_convs), SHAPES)
    assert head.num_anchors == num_anchors
    assert len([m for m in head.tower if isinstance(m, torch.nn.Conv2d)]) == head_convs
    feats = [torch.randn(2, 16, s, s) * 10 for s in (9, 5, 3)]
    logits, deltas, coeffs = head(feats)
    for x, lg, dl, cf in zip(feats, logits, deltas, coeffs):
        hw = x.shape[-2:]
        assert lg.shape == (2, num_anchors * 4, *hw)  # K + 1 = 4 classes with background
        assert dl.shape == (2, num_anchors * 4, *hw)
        assert cf.shape == (2, num_anchors * 8, *hw)
        assert cf.abs().max() <= 1.0
    assert coeffs[0].abs().max() > 0.5  # tanh is not squashing everything to 0


def test_head_init_xavier_zero_bias_and_shared():
    head = YOLACTHead(_cfg(), SHAPES)
    convs = [m for m in head.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 4
    for c in convs:
        assert torch.count_nonzero(c.bias) == 0
        fan_in, fan_out = c.in_channels * 9, c.out_channels * 9
        bound = (6.0 / (fan_in + fan_out)) ** 0.5
        assert c.weight.abs().max() <= bound + 1e-6
    # One set of weights for all levels: the same input gives the same output on any level.
    x = torch.randn(1, 16, 4, 4)
    out = head([x, x])
    assert torch.equal(out[0][0], out[0][1])


def test_head_bad_input():
    with pytest.raises(ValueError, match="same channels"):
        shapes = [ShapeSpec(channels=c, stride=s) for c, s in ((16, 8), (32, 16), (16, 32))]
        YOLACTHead(_cfg(), shapes)
    with pytest.raises(ValueError, match="num_classes"):
        YOLACTHead(input_shape=SHAPES, num_classes=0, num_anchors=1, num_prototypes=4)


def test_protonet_shapes_stride_and_nonnegative():
    torch.manual_seed(0)
    cfg = _cfg()
    proto = ProtoNet(cfg, ShapeSpec(channels=16, stride=8))
    assert proto.num_prototypes == 8
    for size in (9, 69 // 4):  # odd sizes too (69 at 550)
        x = torch.randn(2, 16, size, size + 1)
        out = proto(x)
        assert out.shape == (2, 8, 2 * size, 2 * (size + 1))  # stride 4 for a stride-8 P3
        assert out.min() >= 0
    convs = [m for m in proto.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(3, 3)] * 4 + [(1, 1)]
    assert all(torch.count_nonzero(c.bias) == 0 for c in convs)


def test_semseg_head():
    head = SemanticSegHead(_cfg(num_classes=5), ShapeSpec(channels=16, stride=8))
    out = head(torch.randn(2, 16, 9, 9))
    assert out.shape == (2, 5, 9, 9)
    assert head.conv.kernel_size == (1, 1)
    with pytest.raises(ValueError, match="SemanticSegHead"):
        SemanticSegHead(in_channels=0, num_classes=3)
