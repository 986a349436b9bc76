"""Backbones: DCNv2 on torchvision, the ResNet builder, YOLACT's FPN and the CARAFE FPN, as
docs/REFERENCE.md §3 (backbone), §4.1 (FPN), §4.2 (CARAFE FPN), §11 (init)."""
import math

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, build_backbone
from detectron2.modeling.backbone.resnet import BottleneckBlock, build_resnet_backbone

from mayolact.config.config import add_mayolact_config
from mayolact.modeling.backbone.carafe import CARAFEUpsample
from mayolact.modeling.backbone.carafe_fpn import CARAFEFPN
from mayolact.modeling.backbone.fpn import YOLACTFPN
from mayolact.modeling.backbone.resnet import (
    ModulatedDeformBottleneck,
    ModulatedDeformConv2d,
    build_mayolact_resnet,
)

FPN_NAMES = ["build_yolact_resnet_fpn_backbone", "build_yolact_resnet_carafe_fpn_backbone"]


def make_cfg(depth=50, scale=0.125, deform=(False, True, True, True), interval=1, fpn=32):
    cfg = get_cfg()
    add_mayolact_config(cfg)
    r = cfg.MODEL.RESNETS
    r.DEPTH = depth
    r.NORM = "BN"
    r.STRIDE_IN_1X1 = False
    r.OUT_FEATURES = ["res3", "res4", "res5"]
    r.DEFORM_ON_PER_STAGE = list(deform)
    r.DEFORM_MODULATED = True
    r.DEFORM_NUM_GROUPS = 4
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.FPN.IN_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.FPN.OUT_CHANNELS = fpn
    cfg.MODEL.YOLACT.DEFORM_INTERVAL = interval
    cfg.MODEL.YOLACT.RESNET_WIDTH_SCALE = scale
    return cfg


def _build(name, cfg):
    cfg.MODEL.BACKBONE.NAME = name
    torch.manual_seed(0)
    return build_backbone(cfg).eval()


@pytest.fixture(scope="module")
def fpns():
    return {name: _build(name, make_cfg()) for name in FPN_NAMES}


@pytest.fixture(scope="module")
def plain_fpns():
    """The FPNs without DCN stages: the geometry does not depend on them (and DCN is slow)."""
    return {name: _build(name, make_cfg(deform=(False,) * 4)) for name in FPN_NAMES}


# ---------------------------------------------------------------------------- deformable conv


@pytest.mark.parametrize("stride", [1, 2])
def test_deform_conv_zero_offset_unit_mask_is_conv(stride):
    torch.manual_seed(0)
    conv = ModulatedDeformConv2d(8, 6, 3, stride=stride, padding=1, deformable_groups=2)
    x = torch.randn(2, 8, 9, 10)
    ref = F.conv2d(x, conv.weight, stride=stride, padding=1)
    offset = torch.zeros(2, 2 * 2 * 9, *ref.shape[-2:])
    mask = torch.ones(2, 2 * 9, *ref.shape[-2:])
    torch.testing.assert_close(conv(x, offset, mask), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(conv(x, offset, mask * 0.5), ref * 0.5, rtol=1e-5, atol=1e-5)


def test_deform_conv_integer_offset_shifts_sampling():
    torch.manual_seed(1)
    conv = ModulatedDeformConv2d(3, 4, 3, padding=1, deformable_groups=1).double()
    x = torch.randn(1, 3, 6, 7, dtype=torch.float64)
    offset = torch.zeros(1, 18, 6, 7, dtype=torch.float64)
    offset[:, 1::2] = 1.0  # every kernel point samples one pixel to the right (dx = +1)
    mask = torch.ones(1, 9, 6, 7, dtype=torch.float64)
    # Output column j, kernel column kx in {-1, 0, 1} reads x[..., j + kx + 1] (zero outside).
    ref = F.conv2d(F.pad(x, (0, 2, 1, 1)), conv.weight)
    torch.testing.assert_close(conv(x, offset, mask), ref)


def test_deform_conv_bad_offsets():
    conv = ModulatedDeformConv2d(4, 4, 3, deformable_groups=2)
    x = torch.randn(1, 4, 5, 5)
    with pytest.raises(ValueError, match="offset"):
        conv(x, torch.zeros(1, 18, 5, 5), torch.ones(1, 18, 5, 5))
    with pytest.raises(ValueError, match="divisible"):
        ModulatedDeformConv2d(6, 6, 3, deformable_groups=4)


def _plain_and_deform(stride, norm=""):
    kw = dict(bottleneck_channels=8, stride=stride, norm=norm, stride_in_1x1=False)
    torch.manual_seed(0)
    dcn = ModulatedDeformBottleneck(16, 32, deform_num_groups=4, **kw)
    plain = BottleneckBlock(16, 32, **kw)
    missing, unexpected = plain.load_state_dict(dcn.state_dict(), strict=False)
    assert not missing and all(k.startswith("conv2_offset.") for k in unexpected)
    return dcn, plain


@pytest.mark.parametrize("stride", [1, 2])
def test_deform_bottleneck_at_init_is_half_conv2(stride):
    dcn, plain = _plain_and_deform(stride)
    assert dcn.conv2_offset.out_channels == 4 * 27
    assert torch.count_nonzero(dcn.conv2_offset.weight) == 0
    assert torch.count_nonzero(dcn.conv2_offset.bias) == 0
    assert dcn.conv2.stride == (stride, stride) and dcn.conv1.stride == (1, 1)
    x = torch.randn(2, 16, 11, 12)
    # sigmoid(0) = 0.5: the DCN at init is half the plain conv with the same weights.
    with torch.no_grad():
        plain.conv2.weight.mul_(0.5)
    out = dcn(x)
    assert out.shape == (2, 32, (11 - 1) // stride + 1, (12 - 1) // stride + 1)
    torch.testing.assert_close(out, plain(x), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        plain.conv2.weight.mul_(2.0)
    assert not torch.allclose(dcn(x), plain(x), atol=1e-3)


def test_deform_bottleneck_gradients_reach_offset_conv():
    dcn, _ = _plain_and_deform(2, norm="BN")
    dcn.train()
    x = torch.randn(2, 16, 9, 9)
    dcn(x).square().sum().backward()
    g = dcn.conv2_offset.weight.grad
    assert g is not None
    assert g[: 2 * 4 * 9].abs().sum() > 0  # offset channels
    assert g[2 * 4 * 9:].abs().sum() > 0  # mask channels
    assert dcn.conv2_offset.bias.grad.abs().sum() > 0
    assert dcn.conv2.weight.grad.abs().sum() > 0


def test_deform_bottleneck_autocast_and_float64():
    dcn, _ = _plain_and_deform(1, norm="BN")
    dcn.eval()
    torch.nn.init.normal_(dcn.conv2_offset.weight, std=0.05)
    x = torch.randn(1, 16, 8, 8)
    ref = dcn(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = dcn(x)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), ref, rtol=0.1, atol=0.1)
    out64 = dcn.double()(x.double())
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64.float(), ref, rtol=1e-4, atol=1e-4)


# -------------------------------------------------------------------------------- ResNet


def _count_dcn(model):
    return sum(isinstance(m, ModulatedDeformBottleneck) for m in model.modules())


def test_resnet_deform_interval_counts():
    shape = ShapeSpec(channels=3)
    r50 = build_mayolact_resnet(make_cfg(), shape)
    assert _count_dcn(r50) == 4 + 6 + 3
    assert not any(isinstance(b, ModulatedDeformBottleneck) for b in r50.res2)
    assert all(isinstance(b, ModulatedDeformBottleneck) for b in r50.res5)
    r50_i3 = build_mayolact_resnet(make_cfg(interval=3), shape)
    # blocks 0 and 3 of res3, 0 and 3 of res4, 0 of res5.
    assert _count_dcn(r50_i3) == 2 + 2 + 1
    assert [isinstance(b, ModulatedDeformBottleneck) for b in r50_i3.res4] == [
        True, False, False, True, False, False
    ]
    r101_i3 = build_mayolact_resnet(make_cfg(depth=101, scale=0.0625, interval=3), shape)
    assert _count_dcn(r101_i3) == 2 + 8 + 1
    plain = build_mayolact_resnet(make_cfg(deform=(False,) * 4), shape)
    assert _count_dcn(plain) == 0


def test_resnet_strided_dcn_block_and_torchvision_style():
    r50 = build_mayolact_resnet(make_cfg(), ShapeSpec(channels=3))
    first = r50.res3[0]
    assert isinstance(first, ModulatedDeformBottleneck)
    assert first.conv1.stride == (1, 1) and first.conv2.stride == (2, 2)
    assert first.conv2_offset.stride == (2, 2)
    assert first.conv2.deformable_groups == 4


def test_resnet_parameter_names_match_detectron2_resnet():
    """Deformable blocks keep Detectron2's names, so converted torchvision weights load."""
    cfg = make_cfg(scale=1.0 / 16)
    ours = build_mayolact_resnet(cfg, ShapeSpec(channels=3))
    cfg_plain = make_cfg(scale=1.0 / 16, deform=(False,) * 4)
    cfg_plain.MODEL.RESNETS.STEM_OUT_CHANNELS = 4
    cfg_plain.MODEL.RESNETS.RES2_OUT_CHANNELS = 16
    cfg_plain.MODEL.RESNETS.WIDTH_PER_GROUP = 4
    d2 = build_resnet_backbone(cfg_plain, ShapeSpec(channels=3))
    ours_keys = {k for k in ours.state_dict() if "conv2_offset" not in k}
    assert ours_keys == set(d2.state_dict())
    missing, unexpected = ours.load_state_dict(d2.state_dict(), strict=False)
    assert not unexpected and all("conv2_offset" in k for k in missing)


def test_resnet_width_scale_and_depths():
    shape = ShapeSpec(channels=3)
    full = build_mayolact_resnet(make_cfg(scale=1.0, deform=(False,) * 4), shape)
    assert {k: v.channels for k, v in full.output_shape().items()} == {
        "res3": 512, "res4": 1024, "res5": 2048
    }
    assert full.stem.out_channels == 64 and full.res2[0].conv2.out_channels == 64
    slim = build_mayolact_resnet(make_cfg(scale=0.25), shape)
    assert {k: v.channels for k, v in slim.output_shape().items()} == {
        "res3": 128, "res4": 256, "res5": 512
    }
    assert slim.stem.out_channels == 16 and slim.res5[0].conv2.out_channels == 128
    assert {k: v.stride for k, v in slim.output_shape().items()} == {
        "res3": 8, "res4": 16, "res5": 32
    }
    cfg18 = make_cfg(depth=18, scale=0.25, deform=(False,) * 4)
    cfg18.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    r18 = build_mayolact_resnet(cfg18, shape)
    out = r18(torch.randn(1, 3, 64, 64))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "res3": (1, 32, 8, 8), "res4": (1, 64, 4, 4), "res5": (1, 128, 2, 2)
    }


def test_resnet_freeze_at():
    model = build_mayolact_resnet(make_cfg(), ShapeSpec(channels=3))
    assert all(p.requires_grad for p in model.parameters())
    assert not any("FrozenBatchNorm" in type(m).__name__ for m in model.modules())
    cfg = make_cfg()
    cfg.MODEL.BACKBONE.FREEZE_AT = 2
    frozen = build_mayolact_resnet(cfg, ShapeSpec(channels=3))
    assert not any(p.requires_grad for p in frozen.stem.parameters())
    assert not any(p.requires_grad for p in frozen.res2.parameters())
    assert all(p.requires_grad for p in frozen.res3.parameters())


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda c: setattr(c.MODEL.RESNETS, "DEFORM_MODULATED", False), "DEFORM_MODULATED"),
        (lambda c: setattr(c.MODEL.RESNETS, "RES5_DILATION", 2), "RES5_DILATION"),
        (lambda c: setattr(c.MODEL.RESNETS, "DEPTH", 18), "RES2_OUT_CHANNELS must be 64"),
        (
            lambda c: (
                setattr(c.MODEL.RESNETS, "DEPTH", 34),
                setattr(c.MODEL.RESNETS, "RES2_OUT_CHANNELS", 64),
            ),
            "DEFORM_ON_PER_STAGE is not supported",
        ),
        (lambda c: setattr(c.MODEL.RESNETS, "DEPTH", 42), "DEPTH"),
        (lambda c: setattr(c.MODEL.YOLACT, "DEFORM_INTERVAL", 0), "DEFORM_INTERVAL"),
        (lambda c: setattr(c.MODEL.YOLACT, "RESNET_WIDTH_SCALE", 0.0), "RESNET_WIDTH_SCALE"),
        (lambda c: setattr(c.MODEL.RESNETS, "DEFORM_ON_PER_STAGE", [True]), "4 entries"),
    ],
)
def test_resnet_bad_config(edit, match):
    cfg = make_cfg()
    edit(cfg)
    with pytest.raises(ValueError, match=match):
        build_mayolact_resnet(cfg, ShapeSpec(channels=3))


# ----------------------------------------------------------------------------------- FPNs


@pytest.mark.parametrize("name", FPN_NAMES)
def test_fpn_geometry(plain_fpns, name):
    model = plain_fpns[name]
    assert model.size_divisibility == 0
    assert model.padding_constraints == {}
    shapes = model.output_shape()
    assert list(shapes) == ["p3", "p4", "p5", "p6", "p7"]
    assert [s.stride for s in shapes.values()] == [8, 16, 32, 64, 128]
    assert all(s.channels == 32 for s in shapes.values())
    expected = {550: [69, 35, 18, 9, 5], 400: [50, 25, 13, 7, 4], 700: [88, 44, 22, 11, 6]}
    with torch.no_grad():
        for size, sides in expected.items():
            out = model(torch.randn(1, 3, size, size))
            assert list(out) == list(shapes)
            assert [tuple(v.shape) for v in out.values()] == [(1, 32, s, s) for s in sides]


def test_fpn_channels_from_config():
    cfg = make_cfg(fpn=256)
    for name in FPN_NAMES:
        model = _build(name, cfg)
        assert all(s.channels == 256 for s in model.output_shape().values())
        assert isinstance(model, YOLACTFPN if "carafe" not in name else CARAFEFPN)
    assert set(FPN_NAMES + ["build_mayolact_resnet"]) <= set(BACKBONE_REGISTRY._obj_map)


def _xavier_ok(conv):
    fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
    fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    w = conv.weight
    return (
        w.abs().max() <= bound
        and abs(w.std().item() - bound / math.sqrt(3)) < 0.15 * bound
        and torch.count_nonzero(conv.bias) == 0
    )


def test_yolact_fpn_structure_and_init(fpns):
    model = fpns["build_yolact_resnet_fpn_backbone"]
    names = dict(model.named_modules())
    for s in (3, 4, 5):
        assert names[f"fpn_lateral{s}"].kernel_size == (1, 1)
        assert names[f"fpn_output{s}"].kernel_size == (3, 3)
        assert names[f"fpn_lateral{s}"].norm is None and names[f"fpn_output{s}"].norm is None
    p6, p7 = model.top_block.p6, model.top_block.p7
    assert p6.in_channels == model.bottom_up.output_shape()["res5"].channels
    assert p6.stride == (2, 2) and p7.stride == (2, 2)
    for s in (3, 4, 5):
        assert _xavier_ok(names[f"fpn_lateral{s}"]) and _xavier_ok(names[f"fpn_output{s}"])
    assert _xavier_ok(p6) and _xavier_ok(p7)
    # The bottom-up network keeps its own init (DCN offsets still zero).
    assert torch.count_nonzero(model.bottom_up.res3[0].conv2_offset.weight) == 0


def test_yolact_fpn_forward_oracle(fpns):
    model = fpns["build_yolact_resnet_fpn_backbone"]
    x = torch.randn(1, 3, 200, 200)
    with torch.no_grad():
        out = model(x)
        c = model.bottom_up(x)
        lat5 = model.fpn_lateral5(c["res5"])
        lat4 = model.fpn_lateral4(c["res4"]) + F.interpolate(
            lat5, size=c["res4"].shape[-2:], mode="bilinear", align_corners=False
        )
        lat3 = model.fpn_lateral3(c["res3"]) + F.interpolate(
            lat4, size=c["res3"].shape[-2:], mode="bilinear", align_corners=False
        )
        p6 = model.top_block.p6(c["res5"])  # from the input C5
        p7 = model.top_block.p7(p6)  # no ReLU
        p7_relu = model.top_block.p7(F.relu(p6))
    ref = {
        "p3": model.fpn_output3(lat3), "p4": model.fpn_output4(lat4),
        "p5": model.fpn_output5(lat5), "p6": p6, "p7": p7,
    }
    for k, v in ref.items():
        torch.testing.assert_close(out[k], v, rtol=1e-5, atol=1e-5)
    assert (out["p6"] < 0).any() and (out["p7"] < 0).any()
    assert not torch.allclose(out["p7"], p7_relu, atol=1e-4)


def test_yolact_fpn_p6_comes_from_c5_not_p5():
    model = _build("build_yolact_resnet_fpn_backbone", make_cfg())
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        before = model(x)
        model.fpn_output5.weight.mul_(-3.0)
        model.fpn_lateral5.weight.mul_(2.0)
        after = model(x)
    assert not torch.allclose(before["p5"], after["p5"])
    torch.testing.assert_close(before["p6"], after["p6"], rtol=0, atol=0)
    torch.testing.assert_close(before["p7"], after["p7"], rtol=0, atol=0)


def test_carafe_fpn_structure_and_init(fpns):
    model = fpns["build_yolact_resnet_carafe_fpn_backbone"]
    names = dict(model.named_modules())
    c5 = model.bottom_up.output_shape()["res5"].channels
    assert names["fpn_lateral6"].in_channels == c5 and names["fpn_lateral6"].stride == (2, 2)
    assert names["fpn_lateral7"].in_channels == 32 and names["fpn_lateral7"].stride == (2, 2)
    for s in (3, 4, 5, 6, 7):
        assert names[f"fpn_output{s}"].kernel_size == (3, 3)
        assert _xavier_ok(names[f"fpn_lateral{s}"]) and _xavier_ok(names[f"fpn_output{s}"])
    for s in (3, 4, 5, 6):
        up = names[f"fpn_upsample{s}"]
        assert isinstance(up, CARAFEUpsample)
        assert up.up_kernel == 5 and up.up_group == 1 and up.scale_factor == 2
        assert up.content_encoder.weight.std() < 0.002  # CARAFE's own init, not xavier
    assert "fpn_upsample7" not in names and model.top_block is None


def test_carafe_fpn_forward_oracle_with_top_left_slicing(fpns):
    model = fpns["build_yolact_resnet_carafe_fpn_backbone"]
    x = torch.randn(1, 3, 550, 550)
    with torch.no_grad():
        out = model(x)
        c = model.bottom_up(x)
        lat = [model.fpn_lateral3(c["res3"]), model.fpn_lateral4(c["res4"]),
               model.fpn_lateral5(c["res5"])]
        lat.append(model.fpn_lateral6(c["res5"]))
        lat.append(model.fpn_lateral7(lat[3]))  # from the P6 lateral
        ups = [model.fpn_upsample3, model.fpn_upsample4, model.fpn_upsample5,
               model.fpn_upsample6]
        sliced = []
        for i in (4, 3, 2, 1):
            up = ups[i - 1](lat[i])
            h, w = lat[i - 1].shape[-2:]
            sliced.append(up.shape[-1] != w)
            lat[i - 1] = lat[i - 1] + up[:, :, :h, :w]
        outs = [getattr(model, f"fpn_output{s}")(lat[s - 3]) for s in (3, 4, 5, 6, 7)]
    # 550: P7 5 -> 10 sliced to 9, P6 9 -> 18 fits, P5 18 -> 36 sliced to 35, P4 35 -> 70 to 69.
    assert sliced == [True, False, True, True]
    for s, ref in zip((3, 4, 5, 6, 7), outs):
        torch.testing.assert_close(out[f"p{s}"], ref, rtol=1e-5, atol=1e-5)


def test_fpn_missing_in_features():
    cfg = make_cfg()
    for out_features in (["res4", "res5"], ["res3", "res4"]):
        cfg.MODEL.RESNETS.OUT_FEATURES = out_features
        for name in FPN_NAMES:
            with pytest.raises(ValueError, match="OUT_FEATURES"):
                _build(name, cfg)


def test_fpn_backward_reaches_everything():
    model = _build("build_yolact_resnet_carafe_fpn_backbone", make_cfg(scale=1.0 / 16, fpn=8))
    model.train()
    out = model(torch.randn(2, 3, 96, 96))
    sum(v.square().mean() for v in out.values()).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, no_grad


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_deform_bottleneck_cuda_matches_cpu_and_autocast():
    dcn, _ = _plain_and_deform(2, norm="BN")
    dcn.eval()
    torch.nn.init.normal_(dcn.conv2_offset.weight, std=0.05)
    x = torch.randn(2, 16, 13, 13)
    ref = dcn(x)
    dcn.cuda()
    torch.testing.assert_close(dcn(x.cuda()).cpu(), ref, rtol=1e-4, atol=1e-4)
    with torch.autocast("cuda", dtype=torch.float16):
        out = dcn(x.cuda())
    torch.testing.assert_close(out.float().cpu(), ref, rtol=0.05, atol=0.05)
