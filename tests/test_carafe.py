"""CARAFE (docs/REFERENCE.md §4.3): the pure-PyTorch reassembly against a literal
loop of the CUDA kernel."""
import math

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from torch.utils._python_dispatch import TorchDispatchMode

from mayolact.config.config import add_mayolact_config
from mayolact.modeling.backbone.carafe import CARAFEUpsample, carafe

from mmcv_reference import carafe_loop


def _random_kernels(n, g, k, sh, sw, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, g, k * k, sh, sw, generator=gen, dtype=torch.float64).softmax(2)


@pytest.mark.parametrize("g,k,s", [(1, 5, 2), (2, 5, 2), (2, 3, 3)])
def test_carafe_matches_cuda_kernel_loop(g, k, s):
    torch.manual_seed(1)
    n, c, h, w = 2, 4, 3, 4
    x = torch.randn(n, c, h, w, dtype=torch.float64)
    m = _random_kernels(n, g, k, s * h, s * w)
    out = carafe(x, m.reshape(n, g * k * k, s * h, s * w), k, g, s)
    assert out.shape == (n, c, s * h, s * w)
    torch.testing.assert_close(out, carafe_loop(x, m, k, g, s), rtol=1e-12, atol=1e-12)
    # The 5-D kernel layout gives the same result.
    torch.testing.assert_close(carafe(x, m, k, g, s), out, rtol=0, atol=0)


def test_carafe_float32_matches_loop():
    torch.manual_seed(2)
    x = torch.randn(1, 2, 4, 3)
    m = _random_kernels(1, 1, 5, 8, 6).float()
    ref = carafe_loop(x.double(), m.double(), 5, 1, 2)
    torch.testing.assert_close(carafe(x, m, 5, 1, 2).double(), ref, rtol=1e-5, atol=1e-6)


def test_one_hot_centre_kernel_is_nearest_upsampling():
    torch.manual_seed(3)
    n, c, h, w, k, s = 2, 6, 5, 7, 5, 2
    x = torch.randn(n, c, h, w)
    m = torch.zeros(n, 2, k * k, s * h, s * w)
    m[:, :, (k * k) // 2] = 1.0
    out = carafe(x, m, k, 2, s)
    torch.testing.assert_close(out, F.interpolate(x, scale_factor=s, mode="nearest"))


def test_one_hot_corner_kernel_reads_shifted_neighbour_with_zero_outside():
    x = torch.arange(1.0, 13.0).view(1, 1, 3, 4)
    k, s = 5, 2
    m = torch.zeros(1, 1, k * k, 6, 8)
    m[:, :, 0] = 1.0  # (dy, dx) = (-2, -2)
    out = carafe(x, m, k, 1, s)
    shifted = torch.zeros_like(x)
    shifted[:, :, 2:, 2:] = x[:, :, :-2, :-2]
    torch.testing.assert_close(out, F.interpolate(shifted, scale_factor=2, mode="nearest"))


def test_carafe_gradcheck():
    torch.manual_seed(4)
    x = torch.randn(1, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    m = torch.rand(1, 2 * 9, 6, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: carafe(a, b, 3, 2, 2), (x, m))
    x5 = torch.randn(1, 1, 2, 3, dtype=torch.float64, requires_grad=True)
    m5 = torch.rand(1, 25, 4, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: carafe(a, b, 5, 1, 2), (x5, m5))


class _PeakNumel(TorchDispatchMode):
    """Records the largest numel of any tensor produced by an op."""

    def __init__(self):
        super().__init__()
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.peak = max(self.peak, t.numel())
        return out


def test_no_high_resolution_k2_intermediate():
    n, c, h, w, k, s = 2, 16, 10, 12, 5, 2
    x = torch.randn(n, c, h, w)
    m = torch.rand(n, k * k, s * h, s * w)
    with _PeakNumel() as mode:
        carafe(x, m, k, 1, s)
    low_res = n * c * k * k * h * w  # the unfold
    assert mode.peak <= low_res
    assert mode.peak < n * c * k * k * s * h * s * w  # never (N, C, k^2, sH, sW)


def test_carafe_bad_input():
    x = torch.randn(1, 3, 4, 4)
    with pytest.raises(ValueError, match="divisible"):
        carafe(x, torch.rand(1, 50, 8, 8), 5, 2, 2)
    with pytest.raises(ValueError, match="kernels must have shape"):
        carafe(x, torch.rand(1, 25, 4, 4), 5, 1, 2)
    with pytest.raises(ValueError, match="odd"):
        carafe(x, torch.rand(1, 16, 8, 8), 4, 1, 2)
    with pytest.raises(ValueError, match=r"\(N, C, h, w\)"):
        carafe(x[0], torch.rand(1, 25, 8, 8), 5, 1, 2)


# ----------------------------------------------------------------------------- the module


def test_upsample_shapes_and_init():
    up = CARAFEUpsample(channels=8)
    assert up.content_encoder.out_channels == 25 * 4
    assert up.content_encoder.padding == (1, 1) and up.content_encoder.kernel_size == (3, 3)
    assert up.channel_compressor.out_channels == 64
    assert torch.count_nonzero(up.channel_compressor.bias) == 0
    assert torch.count_nonzero(up.content_encoder.bias) == 0
    bound = math.sqrt(6.0 / (8 + 64))  # xavier-uniform, 1x1 kernel
    assert up.channel_compressor.weight.abs().max() <= bound
    assert up.channel_compressor.weight.std() > 0.3 * bound
    assert 0.0005 < up.content_encoder.weight.std() < 0.002
    x = torch.randn(2, 8, 5, 7)
    out = up(x)
    assert out.shape == (2, 8, 10, 14)
    kern = up.kernels(x)
    assert kern.shape == (2, 1, 25, 10, 14)
    torch.testing.assert_close(kern.sum(2), torch.ones(2, 1, 10, 14))
    torch.testing.assert_close(out, carafe(x, kern, 5, 1, 2))


def test_upsample_kernel_normaliser_pixel_shuffle_layout():
    torch.manual_seed(5)
    g, k, s = 2, 3, 2
    up = CARAFEUpsample(channels=4, up_kernel=k, up_group=g, compressed_channels=6)
    torch.nn.init.normal_(up.content_encoder.weight)
    x = torch.randn(1, 4, 3, 2)
    enc = up.content_encoder(up.channel_compressor(x))[0]  # (g * k^2 * s^2, h, w)
    ref = torch.empty(g * k * k, s * 3, s * 2)
    for c_out in range(g * k * k):
        for a in range(s):
            for b in range(s):
                ref[c_out, a::s, b::s] = enc[c_out * s * s + a * s + b]
    ref = ref.view(g, k * k, s * 3, s * 2).softmax(1)
    torch.testing.assert_close(up.kernels(x)[0], ref)


def test_upsample_with_zero_encoder_is_box_filter():
    up = CARAFEUpsample(channels=3)
    torch.nn.init.zeros_(up.content_encoder.weight)
    x = torch.randn(1, 3, 6, 5)
    box = F.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=True)
    torch.testing.assert_close(up(x), F.interpolate(box, scale_factor=2, mode="nearest"))


def test_upsample_from_config_and_bad_args():
    cfg = get_cfg()
    add_mayolact_config(cfg)
    cfg.MODEL.YOLACT.CARAFE.UP_GROUP = 2
    cfg.MODEL.YOLACT.CARAFE.COMPRESSED_CHANNELS = 16
    up = CARAFEUpsample(cfg, 8)
    assert (up.up_group, up.up_kernel, up.channel_compressor.out_channels) == (2, 5, 16)
    assert up.content_encoder.out_channels == 2 * 25 * 4
    assert up(torch.randn(1, 8, 3, 3)).shape == (1, 8, 6, 6)
    with pytest.raises(ValueError, match="divisible"):
        CARAFEUpsample(channels=6, up_group=4)
    with pytest.raises(ValueError, match="odd"):
        CARAFEUpsample(channels=4, up_kernel=4)
    with pytest.raises(ValueError, match=r"\(N, 8, h, w\)"):
        CARAFEUpsample(channels=8)(torch.randn(1, 4, 3, 3))


def test_upsample_backward():
    up = CARAFEUpsample(channels=4)
    x = torch.randn(1, 4, 4, 4, requires_grad=True)
    up(x).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert up.content_encoder.weight.grad.abs().sum() > 0
    assert up.channel_compressor.weight.grad.abs().sum() > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_upsample_cuda_matches_cpu_and_autocast():
    torch.manual_seed(6)
    up = CARAFEUpsample(channels=8, up_group=2)
    torch.nn.init.normal_(up.content_encoder.weight, std=0.1)
    x = torch.randn(2, 8, 9, 10)
    ref = up(x)
    up.cuda()
    torch.testing.assert_close(up(x.cuda()).cpu(), ref, rtol=1e-4, atol=1e-4)
    with torch.autocast("cuda", dtype=torch.float16):
        out = up(x.cuda())
    torch.testing.assert_close(out.float().cpu(), ref, rtol=0.05, atol=0.05)
