"""The vectorised DCNv2 kernel (``mayolact.modeling.backbone.deform_conv``): equal to
``torchvision.ops.deform_conv2d`` and to a literal loop, forward and backward; its edge cases; the
kernel switch of ``ModulatedDeformConv2d`` (``MODEL.YOLACT.DCN_KERNEL``)."""
import pytest
import torch
from detectron2.layers import ShapeSpec
from torchvision.ops import deform_conv2d

from mayolact.modeling.backbone import resnet
from mayolact.modeling.backbone.deform_conv import (
    DCN_KERNELS,
    modulated_deform_conv2d,
    resolve_dcn_kernel,
)
from mayolact.modeling.backbone.resnet import ModulatedDeformConv2d, build_mayolact_resnet

from common import QUICK, get_config
from mmcv_reference import modulated_deform_conv_loop

# (N, C_in, C_out, H, W, k, stride, padding, dilation, groups, offset groups)
CASES = [
    (2, 8, 6, 11, 9, 3, 1, 1, 1, 1, 1),
    (2, 8, 6, 11, 9, 3, 2, 2, 2, 2, 2),  # stride, dilation, conv and offset groups
    (1, 12, 8, 7, 10, 3, 1, 0, 1, 4, 4),  # no padding, 4 groups of each kind
    (2, 8, 4, 6, 6, 1, 1, 0, 1, 1, 2),  # 1x1 kernel
    (1, 4, 6, 9, 8, 5, 3, 2, 1, 2, 1),  # 5x5 kernel, stride 3
    (1, 16, 8, 13, 13, 3, 2, 1, 1, 1, 4),  # maYOLACT's strided first block, 4 offset groups
    (3, 6, 3, 5, 12, 3, (1, 2), (1, 0), (2, 1), 3, 3),  # (h, w) pairs differing
]


def _pair(v):
    return v if isinstance(v, tuple) else (v, v)


def _inputs(case, dtype=torch.float64, offset_scale=3.0, seed=0):
    n, c, c_out, h, w, k, stride, padding, dilation, groups, og = case
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    ho = (h + 2 * ph - dh * (k - 1) - 1) // sh + 1
    wo = (w + 2 * pw - dw * (k - 1) - 1) // sw + 1
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g, dtype=dtype)
    # Offsets of several pixels: many sample points leave the image, some entirely.
    offset = offset_scale * torch.randn(n, 2 * og * k * k, ho, wo, generator=g, dtype=dtype)
    mask = torch.rand(n, og * k * k, ho, wo, generator=g, dtype=dtype)
    weight = torch.randn(c_out, c // groups, k, k, generator=g, dtype=dtype)
    bias = torch.randn(c_out, generator=g, dtype=dtype)
    return x, offset, mask, weight, bias, dict(stride=stride, padding=padding, dilation=dilation)


def _torchvision(x, offset, mask, weight, bias, kw):
    return deform_conv2d(x, offset, weight, bias, mask=mask, **kw)


def _ours(x, offset, mask, weight, bias, kw, sampler="bag"):
    return modulated_deform_conv2d(x, offset, mask, weight, bias, sampler=sampler, **kw)


@pytest.mark.parametrize("sampler", ["bag", "gather"])
@pytest.mark.parametrize("case", CASES)
def test_equals_torchvision_forward_and_backward_float64(case, sampler):
    x, offset, mask, weight, bias, kw = _inputs(case)
    tensors = [t.requires_grad_() for t in (x, offset, mask, weight, bias)]
    expected = _torchvision(*tensors, kw)
    got = _ours(*tensors, kw, sampler=sampler)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    grad_out = torch.randn_like(expected)
    expected_grads = torch.autograd.grad(expected, tensors, grad_out)
    got_grads = torch.autograd.grad(got, tensors, grad_out)
    for name, e, o in zip(("input", "offset", "mask", "weight", "bias"), expected_grads, got_grads):
        torch.testing.assert_close(o, e, rtol=1e-12, atol=1e-12, msg=name)


@pytest.mark.parametrize("case", CASES[:3])
def test_equals_torchvision_float32(case):
    """float32: equal up to the rounding of a different summation order."""
    x, offset, mask, weight, bias, kw = _inputs(case, dtype=torch.float32)
    expected = _torchvision(x, offset, mask, weight, bias, kw)
    scale = expected.abs().max().item()
    torch.testing.assert_close(_ours(x, offset, mask, weight, bias, kw), expected,
                               rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("stride,dilation,groups", [(1, 1, 1), (2, 1, 2), (1, 2, 4)])
def test_equals_literal_loop(stride, dilation, groups):
    """mmcv's im2col kernel transcribed as plain loops (tests/mmcv_reference.py), offset groups."""
    case = (2, 8, 5, 7, 6, 3, stride, 1, dilation, 1, groups)
    x, offset, mask, weight, bias, kw = _inputs(case, offset_scale=2.5, seed=1)
    expected = modulated_deform_conv_loop(x, offset, mask, weight, bias, stride, 1, dilation,
                                          deformable_groups=groups)
    assert offset.abs().max() > 5  # points move by several pixels, some out of the image
    torch.testing.assert_close(_ours(x, offset, mask, weight, bias, kw), expected,
                               rtol=1e-12, atol=1e-12)


def test_points_on_and_beyond_the_border():
    """Integer and half-integer positions on, just inside and beyond the image border (y = -1,
    0, H - 1, H, ... torchvision's own cut-offs), and offsets far outside."""
    x, offset, mask, weight, bias, kw = _inputs((1, 4, 3, 5, 6, 3, 1, 1, 1, 1, 1))
    values = torch.tensor([-1e6, -7.0, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 4.0, 4.5, 5.0,
                           5.5, 6.0, 1e6], dtype=torch.float64)
    pick = torch.randint(0, len(values), offset.shape, generator=torch.Generator().manual_seed(2))
    offset = values[pick]
    expected = _torchvision(x, offset, mask, weight, bias, kw)
    torch.testing.assert_close(_ours(x, offset, mask, weight, bias, kw), expected,
                               rtol=1e-12, atol=1e-12)
    # Every point outside: only the bias is left.
    far = torch.full_like(offset, -1e6)
    torch.testing.assert_close(_ours(x, far, mask, weight, bias, kw),
                               bias.view(1, -1, 1, 1).expand_as(expected))


def test_nan_offset_gives_nan_at_its_pixel_only():
    """A NaN offset (a diverged offset conv) makes its output pixel NaN, never a silent value or
    an out-of-range read; the other pixels are unaffected."""
    x, offset, mask, weight, bias, kw = _inputs((1, 4, 3, 6, 6, 3, 1, 1, 1, 1, 2))
    expected = _ours(x, offset, mask, weight, bias, kw)
    offset[0, 5, 2, 3] = float("nan")
    got = _ours(x, offset, mask, weight, bias, kw)
    assert torch.isnan(got[0, :, 2, 3]).all()
    keep = torch.ones_like(got, dtype=torch.bool)
    keep[0, :, 2, 3] = False
    torch.testing.assert_close(got[keep], expected[keep])


def test_gradcheck():
    """Analytic gradients against finite differences (float64, offsets away from integers, where
    the bilinear weights have kinks)."""
    x, offset, mask, weight, bias, kw = _inputs((1, 4, 2, 5, 4, 3, 2, 1, 1, 2, 2), offset_scale=1.0)
    offset = offset.round() + 0.25 + 0.5 * torch.rand_like(offset)
    tensors = [t.requires_grad_() for t in (x, offset, mask, weight, bias)]
    assert torch.autograd.gradcheck(
        lambda *t: modulated_deform_conv2d(*t[:3], t[3], t[4], **kw), tensors)


def test_memory_format_and_empty_batch():
    x, offset, mask, weight, bias, kw = _inputs(CASES[0], dtype=torch.float32)
    out = _ours(x, offset, mask, weight, bias, kw)
    assert out.is_contiguous()
    cl = torch.channels_last
    out_cl = _ours(x.contiguous(memory_format=cl), offset, mask,
                   weight.contiguous(memory_format=cl), bias, kw)
    assert out_cl.is_contiguous(memory_format=cl)
    torch.testing.assert_close(out_cl, out)
    empty = _ours(x[:0], offset[:0], mask[:0], weight, bias, kw)
    assert empty.shape == (0,) + out.shape[1:]


def test_bad_shapes():
    x, offset, mask, weight, bias, kw = _inputs(CASES[0], dtype=torch.float32)
    with pytest.raises(ValueError, match="inconsistent shapes"):
        _ours(x, offset[:, :-2], mask, weight, bias, kw)
    with pytest.raises(ValueError, match="inconsistent shapes"):
        _ours(x[:, :7], offset, mask, weight, bias, kw)
    with pytest.raises(ValueError, match="sampler"):
        _ours(x, offset, mask, weight, bias, kw, sampler="loop")


# ------------------------------------------------------------------------- the kernel switch
def test_kernel_resolution():
    assert resolve_dcn_kernel("auto", "cpu") == "aten"
    assert resolve_dcn_kernel("auto", "cuda") == "torchvision"
    for name in ("aten", "torchvision"):
        assert resolve_dcn_kernel(name, "cpu") == resolve_dcn_kernel(name, "cuda") == name
    with pytest.raises(ValueError, match="MODEL.YOLACT.DCN_KERNEL.*'cuda'"):
        resolve_dcn_kernel("cuda", "cpu")
    assert set(DCN_KERNELS) == {"auto", "aten", "torchvision"}


@pytest.mark.parametrize("kernel,calls_torchvision", [
    ("auto", False), ("aten", False), ("torchvision", True)])
def test_module_runs_the_configured_kernel(monkeypatch, kernel, calls_torchvision):
    calls = []

    def spy(*args, **kwargs):
        calls.append(1)
        return deform_conv2d(*args, **kwargs)

    monkeypatch.setattr(resnet, "deform_conv2d", spy)
    conv = ModulatedDeformConv2d(8, 6, 3, padding=1, deformable_groups=2, kernel=kernel)
    x, offset, mask, _, _, _ = _inputs((1, 8, 6, 7, 7, 3, 1, 1, 1, 1, 2), dtype=torch.float32)
    out = conv(x, offset, mask)
    assert bool(calls) == calls_torchvision
    expected = deform_conv2d(x, offset, conv.weight, mask=mask, padding=1)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


def test_config_key_reaches_every_deformable_conv():
    cfg = get_config(QUICK / "mayolact_R_50_FPN_quick.yaml", ["MODEL.YOLACT.NUM_CLASSES", 8])
    assert cfg.MODEL.YOLACT.DCN_KERNEL == "auto"
    cfg.MODEL.YOLACT.DCN_KERNEL = "torchvision"
    model = build_mayolact_resnet(cfg, ShapeSpec(channels=3))
    kernels = {m.kernel for m in model.modules() if isinstance(m, ModulatedDeformConv2d)}
    assert kernels == {"torchvision"}
    cfg.MODEL.YOLACT.DCN_KERNEL = "fast"
    with pytest.raises(ValueError, match="MODEL.YOLACT.DCN_KERNEL"):
        build_mayolact_resnet(cfg, ShapeSpec(channels=3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("case", CASES[:3])
def test_cuda_aten_kernel_equals_torchvision_cuda(case):
    x, offset, mask, weight, bias, kw = _inputs(case, dtype=torch.float64)
    tensors = [t.cuda().requires_grad_() for t in (x, offset, mask, weight, bias)]
    expected = _torchvision(*tensors, kw)
    got = _ours(*tensors, kw)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    grad_out = torch.randn_like(expected)
    for e, o in zip(torch.autograd.grad(expected, tensors, grad_out),
                    torch.autograd.grad(got, tensors, grad_out)):
        torch.testing.assert_close(o, e, rtol=1e-10, atol=1e-10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_auto_runs_torchvision(monkeypatch):
    calls = []

    def spy(*args, **kwargs):
        calls.append(1)
        return deform_conv2d(*args, **kwargs)

    monkeypatch.setattr(resnet, "deform_conv2d", spy)
    conv = ModulatedDeformConv2d(8, 6, 3, padding=1, deformable_groups=2).cuda()
    x, offset, mask, _, _, _ = _inputs((1, 8, 6, 7, 7, 3, 1, 1, 1, 1, 2), dtype=torch.float32)
    conv(x.cuda(), offset.cuda(), mask.cuda())
    assert calls
