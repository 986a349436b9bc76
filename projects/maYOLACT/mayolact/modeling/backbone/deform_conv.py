"""Modulated deformable convolution (DCNv2) from vectorised ATen ops: maYOLACT's CPU kernel.

``torchvision.ops.deform_conv2d`` fills its im2col buffer on the CPU in one scalar,
single-threaded loop (a bilinear interpolation per channel, kernel point and output pixel), so
maYOLACT's 13 DCN blocks ran at a third of the rate of the dense convolutions around them.
:func:`modulated_deform_conv2d` computes the same function with multi-threaded ATen kernels:

1. **The image as a table of rows.** ``x`` padded with :data:`_BORDER` = 2 zero pixels on every
   side, laid out NHWC and viewed as a table whose rows are the ``C / G`` channels of one offset
   group at one pixel (free for a channels-last input but for the padding).
2. **Where each kernel point samples** (small tensors: one value per output pixel, kernel point
   and offset group): ``y = (oy * stride - pad + ky * dilation) + offset_y``, the same sum as
   torchvision's kernel, then ``y0 = floor(y)``, ``ly = y - y0`` (x alike), the same numbers as
   torchvision's. The four corners are rows ``y0, y0 + 1`` and columns ``x0, x0 + 1``, zero
   outside the image as torchvision's corners are. torchvision reads a point with ``y <= -1`` or
   ``y >= H`` as zero: with ``y0`` clamped to [-2, H] its corners fall in the zero border (at
   ``y = -1`` all its weight is on row -1), and so do a NaN offset's, whose NaN weights then make
   the output NaN. The bilinear weights ``(1 - ly)(1 - lx), (1 - ly) lx, ly (1 - lx), ly lx``
   carry the modulation mask.
3. **Bilinear sampling of every kernel point at once** as ``F.embedding_bag(mode="sum")``: one bag
   of four table rows with their four weights per (output pixel, kernel point, offset group); its
   output IS the im2col matrix, (N * H_out * W_out, kh * kw * C) with channels fastest, written
   once (FBGEMM's kernel on the CPU).
4. **One matrix product**, run as a convolution: the im2col matrix read as an NHWC image of
   width ``W_out * kh * kw``, convolved with the weight viewed as (C_out, C_in, 1, kh * kw) at
   stride (1, kh * kw). oneDNN runs it with the kernels of the dense convolutions (faster than the
   BLAS GEMM here), conv groups included. The result is in the input's memory format.

Every step is differentiable by autograd (the floor has a zero derivative, as in torchvision's
backward). The result equals torchvision's up to float rounding: the coordinates and their
fractional parts are the same numbers, only the order of the products and sums differs
(``tests/test_deform_conv.py``: against torchvision and against a literal loop, forward and
backward; in float64 they agree to 1e-12). One difference: an infinite offset gives NaN here
(inf - inf in ``ly``) and 0 in torchvision.

``sampler="gather"`` replaces the embedding bag by four ``index_select`` (ONNX ``Gather``) and a
weighted sum: the standard-op form. Exported to ONNX it ran 2.4x slower in onnxruntime than ONNX
``DeformConv`` on a res3 layer of maYOLACT-550 (one thread, ``tools/benchmark_deform_conv.py
--onnx``), so exports use ``DeformConv``
(:class:`~mayolact.modeling.backbone.resnet.ModulatedDeformConv2d`).
"""
import functools
from typing import Optional, Tuple

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["DCN_KERNELS", "modulated_deform_conv2d", "resolve_dcn_kernel"]

_BORDER = 2
"""Zero rows and columns around the image in the sampling table: every corner of a point that
torchvision reads as zero falls in them once its coordinates are clamped to [-2, H]."""

DCN_KERNELS = ("auto", "aten", "torchvision")
"""Values of ``MODEL.YOLACT.DCN_KERNEL``: ``aten`` is :func:`modulated_deform_conv2d`,
``torchvision`` is ``torchvision.ops.deform_conv2d`` (the bit-exact reference), ``auto`` picks
the faster one for the device: torchvision's on CUDA, ``aten`` elsewhere."""


def resolve_dcn_kernel(kernel: str, device_type: str) -> str:
    """The kernel that ``kernel`` (one of :data:`DCN_KERNELS`) means on ``device_type``.

    Args:
        kernel (str): ``auto``, ``aten`` or ``torchvision``.
        device_type (str): ``torch.device.type`` of the input, e.g. "cpu" or "cuda".

    Returns:
        str: ``aten`` or ``torchvision``.
    """
    if kernel not in DCN_KERNELS:
        raise ValueError(f"MODEL.YOLACT.DCN_KERNEL must be one of {DCN_KERNELS}, got {kernel!r}")
    if kernel == "auto":
        # torchvision's CUDA kernel runs one thread per im2col element: the fast one there.
        return "torchvision" if device_type == "cuda" else "aten"
    return kernel


def _pair(v) -> Tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


@functools.lru_cache(maxsize=64)
def _sampling_grid(k_hw, out_hw, stride, padding, dilation, device, dtype) -> Tensor:
    """The sample positions without offsets, (K, 1, 2, H_out * W_out): (y, x) of kernel point
    (ky, kx) at output (oy, ox) is ``(oy * stride - pad + ky * dilation, ...)``, as torchvision
    forms them (small integers, exact in any float type). Cached: the same few shapes recur."""
    with torch.inference_mode(False):  # a plain tensor, usable by autograd afterwards
        (kh, kw), (h_out, w_out) = k_hw, out_hw
        ky = (torch.arange(kh, device=device) * dilation[0]).repeat_interleave(kw)  # (K,)
        kx = (torch.arange(kw, device=device) * dilation[1]).repeat(kh)
        oy = torch.arange(h_out, device=device) * stride[0] - padding[0]
        ox = torch.arange(w_out, device=device) * stride[1] - padding[1]
        shape = (kh * kw, h_out, w_out)
        grid = torch.stack(((ky[:, None, None] + oy[None, :, None]).expand(shape),
                            (kx[:, None, None] + ox[None, None, :]).expand(shape)), dim=1)
        return grid.reshape(kh * kw, 1, 2, h_out * w_out).to(dtype)


def _to_im2col_order(t: Tensor) -> Tensor:
    """(N, A, P) -> (N, P, A) contiguous, one 2-D transpose per image (PyTorch's blocked transpose;
    a strided copy with a small inner dimension would be ten times slower)."""
    if t.shape[0] == 1:
        return t[0].t().contiguous()[None]
    if t.shape[0] == 0:
        return t.transpose(1, 2).contiguous()
    return torch.stack([s.t().contiguous() for s in t])


def _sample_points(offset: Tensor, mask: Tensor, in_hw: Tuple[int, int], kernel_hw, stride,
                   padding, dilation) -> Tuple[Tensor, Tensor]:
    """The table rows and bilinear weights of every sample, in im2col order.

    Args:
        offset (Tensor): (N, 2 * G * K, H_out, W_out), (y, x) per kernel point, by offset group.
        mask (Tensor): (N, G * K, H_out, W_out).
        in_hw: the input's (H, W); kernel_hw, stride, padding, dilation: (h, w) pairs.

    Returns:
        (Tensor, Tensor): the rows of the four corners in the table of :func:`_table` (int32, or
        int64 for a table of 2**31 rows or more) and their weights (offset's dtype), both
        (N * H_out * W_out * K * G, 4): im2col order (image, output pixel, kernel point, offset
        group), corners (top-left, top-right, bottom-left, bottom-right).
    """
    n, _, h_out, w_out = offset.shape
    h, w = in_hw
    k = kernel_hw[0] * kernel_hw[1]
    g = mask.shape[1] // k
    p = h_out * w_out
    hp, wp = h + 2 * _BORDER, w + 2 * _BORDER
    dev = offset.device
    # Laid out (N, K, G, [2,] P), P = H_out * W_out fastest, y before x: elementwise ops on rows
    # of P values; the im2col order comes from one transpose at the end.
    grid = _sampling_grid(kernel_hw, (h_out, w_out), stride, padding, dilation, dev, offset.dtype)
    # (An op on the transposed view would keep its (G, K) memory order: copy it out first.)
    yx = offset.view(n, g, k, 2, p).transpose(1, 2).clone(memory_format=torch.contiguous_format)
    yx0 = yx.add_(grid).floor()  # (N, K, G, 2, P)
    frac = yx.sub_(yx0)  # (ly, lx), torchvision's ``h - h_low``
    # Corner rows: padded y0 + 2 and y0 + 3 (x alike). torchvision reads 0 for y <= -1 or y >= H;
    # clamped to [-2, H], such a point reads only rows of the zero border (y = -1 puts all its
    # weight on row -1), and so does a NaN offset, whose NaN weights make the output NaN.
    if h == w:
        yx0.clamp_(-2, h)
    else:
        yx0 = torch.minimum(yx0.clamp_(min=-2), torch.tensor([[h], [w]], device=dev,
                                                             dtype=yx0.dtype))
    index_dtype = torch.int32 if n * hp * wp * g < 2**31 else torch.int64
    yx0 = yx0.nan_to_num_(nan=-2.0).to(index_dtype)
    base = (torch.arange(n, device=dev, dtype=index_dtype).view(n, 1, 1, 1) * (hp * wp * g)
            + torch.arange(g, device=dev, dtype=index_dtype).view(1, 1, g, 1)
            + (wp + 1) * _BORDER * g)
    top_left = torch.add(base, yx0[:, :, :, 0], alpha=wp * g).add_(yx0[:, :, :, 1], alpha=g)
    corners = torch.tensor([0, g, wp * g, wp * g + g], device=dev, dtype=index_dtype)
    rows = top_left[:, :, :, None, :] + corners[:, None]  # (N, K, G, 4, P)
    # Bilinear weights (1 - ly, ly) x (1 - lx, lx), the mask on the y factor.
    lo_hi = torch.stack((1 - frac, frac), dim=3)  # (N, K, G, 2 lo/hi, 2 y/x, P)
    wy = lo_hi[:, :, :, :, 0] * mask.view(n, g, k, 1, p).transpose(1, 2)  # (N, K, G, 2, P)
    weights = wy[:, :, :, :, None] * lo_hi[:, :, :, None, :, 1]  # (N, K, G, 2, 2, P)
    rows = _to_im2col_order(rows.view(n, k * g * 4, p))
    weights = _to_im2col_order(weights.view(n, k * g * 4, p))
    return rows.view(-1, 4), weights.view(-1, 4)


def _table(x: Tensor, offset_groups: int) -> Tensor:
    """``x`` (N, C, H, W) as the rows of :func:`_sample_points`: NHWC with a zero border of
    :data:`_BORDER` pixels, viewed (N * (H + 4) * (W + 4) * G, C / G)."""
    b = _BORDER
    # Free for a channels-last input (the padded copy is NHWC already), one more copy otherwise.
    table = F.pad(x, (b, b, b, b)).permute(0, 2, 3, 1).contiguous()
    return table.view(-1, x.shape[1] // offset_groups)


def modulated_deform_conv2d(
    x: Tensor,
    offset: Tensor,
    mask: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    stride=1,
    padding=0,
    dilation=1,
    sampler: str = "bag",
) -> Tensor:
    """DCNv2 with torchvision's arguments and layout, on vectorised ATen ops (module docstring).

    ``torchvision.ops.deform_conv2d(x, offset, weight, bias, stride, padding, dilation, mask)`` up
    to float rounding; conv groups and offset groups are read from the shapes, as torchvision does.

    Args:
        x (Tensor): (N, C_in, H, W), float.
        offset (Tensor): (N, 2 * G * kh * kw, H_out, W_out), (y, x) pairs per kernel point,
            grouped by offset group G.
        mask (Tensor): (N, G * kh * kw, H_out, W_out), the modulation.
        weight (Tensor): (C_out, C_in / groups, kh, kw).
        bias (Tensor or None): (C_out,).
        stride, padding, dilation (int or (int, int)): as ``nn.Conv2d``.
        sampler (str): "bag" (``F.embedding_bag``, the fast one) or "gather" (``index_select``
            and a weighted sum: standard ONNX ops).

    Returns:
        Tensor: (N, C_out, H_out, W_out), in ``x``'s memory format (channels-last stays so).
    """
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    n, c_in, h, w = x.shape
    c_out, c_group, kh, kw = weight.shape
    k = kh * kw
    h_out = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    w_out = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    g = mask.shape[1] // k if k else 0
    if (c_group == 0 or c_in % c_group or c_out % (c_in // c_group) or g == 0 or c_in % g
            or tuple(offset.shape) != (n, 2 * g * k, h_out, w_out)
            or tuple(mask.shape) != (n, g * k, h_out, w_out)):
        raise ValueError(
            f"modulated_deform_conv2d: inconsistent shapes: input {tuple(x.shape)}, offset "
            f"{tuple(offset.shape)}, mask {tuple(mask.shape)}, weight {tuple(weight.shape)} "
            f"(expected offset (N, 2*G*{k}, {h_out}, {w_out}) and mask (N, G*{k}, ...))")
    if sampler not in ("bag", "gather"):
        raise ValueError(f"modulated_deform_conv2d: sampler must be 'bag' or 'gather', got "
                         f"{sampler!r}")
    groups = c_in // c_group
    table = _table(x, g)
    rows, weights = _sample_points(offset, mask.to(offset.dtype), (h, w), (kh, kw), stride,
                                   padding, dilation)
    weights = weights.to(x.dtype)
    if sampler == "bag":
        cols = F.embedding_bag(rows, table, per_sample_weights=weights, mode="sum")
    else:
        picked = table.index_select(0, rows.reshape(-1)).view(-1, 4, c_in // g)
        cols = (picked * weights[:, :, None]).sum(dim=1)
    # The im2col matrix, (N, H_out, W_out, kh * kw, C_in), read as an NHWC image of width
    # W_out * kh * kw: the convolution with the (C_out, C_in / groups, 1, kh * kw) view of the
    # weight and stride (1, kh * kw) is the matrix product, run by the same oneDNN kernels as the
    # dense convolutions (faster than the BLAS GEMM on this machine), conv groups included.
    image = cols.view(n, h_out, w_out * k, c_in).permute(0, 3, 1, 2)
    out = F.conv2d(image, weight.reshape(c_out, c_group, 1, k), bias, stride=(1, k),
                   groups=groups)
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return out.contiguous(memory_format=torch.channels_last)
    return out.contiguous()
