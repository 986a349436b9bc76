"""CARAFE (content-aware reassembly of features) in pure PyTorch.

Re-implements the upsampler of ``mmdet/ops/carafe`` (docs/REFERENCE.md §4.3,
"CARAFE upsampler") without compiled kernels:

1. a 1x1 channel compressor (C -> 64, bias);
2. a content encoder ``Conv2d(64, k_up^2 * g * s^2, k_enc, padding=(k_enc - 1) * dil // 2,
   dilation=dil)``;
3. the kernel normaliser: ``F.pixel_shuffle(enc, s)`` -> (N, g * k^2, sH, sW), viewed as
   (N, g, k^2, sH, sW) with a softmax over the k^2 axis;
4. the reassembly (:func:`carafe`): output pixel (ph, pw) of channel c (group ``c // (C / g)``) is
   ``sum_{dy, dx} x[c, ph // s + dy, pw // s + dx] * m[group, (dy + r) * k + (dx + r), ph, pw]``
   with ``r = (k - 1) // 2``; neighbours outside the input count as zero.

The reassembly works on the low-resolution grid, channels last: for each of the k^2 neighbours
(dy, dx), one fused multiply-add accumulates the shifted input (N, h, 1, w, 1, g, C/g) times that
neighbour's kernel weights (N, h, s, w, s, g, 1) into the output (N, h, s, w, s, g, C/g). Every
operand is read with the channels contiguous, so each of the k^2 steps is one vectorised pass over
the output; no unfolded (N, C, k^2, h, w) tensor is built (the largest intermediate is the output
itself), and the result is the sum of the k^2 products in neighbour order, as the CUDA kernel
adds them. An ``einsum`` over the unfolded input, the earlier form, took 13 times longer on a CPU
at maYOLACT-550's P4 -> P3 (``tools/benchmark_deform_conv.py``).

Shapes: N images, C channels, (h, w) input size, s scale factor, k reassembly kernel, g groups.
"""
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from torch import nn

__all__ = ["carafe", "CARAFEUpsample"]


def carafe(
    x: torch.Tensor, kernels: torch.Tensor, kernel_size: int, group: int, scale: int
) -> torch.Tensor:
    """Reassemble ``x`` with per-output-pixel kernels (CARAFE's reassembly step, no softmax).

    Args:
        x (Tensor): features, shape (N, C, h, w); ``C`` divisible by ``group``.
        kernels (Tensor): reassembly kernels, already normalised, of shape
            (N, group * kernel_size^2, scale * h, scale * w) or (N, group, kernel_size^2, scale * h,
            scale * w). Channel ``gi * k^2 + (dy + r) * k + (dx + r)`` weights the neighbour at
            offset (dy, dx), r = (k - 1) // 2, for channel group ``gi``.
        kernel_size (int): odd reassembly kernel size k.
        group (int): number of channel groups g sharing one kernel.
        scale (int): integer upsampling factor s.

    Returns:
        Tensor: shape (N, C, scale * h, scale * w), dtype of ``x`` and ``kernels`` promoted.

    Raises:
        ValueError: on inconsistent shapes or arguments.
    """
    if x.dim() != 4:
        raise ValueError(f"carafe: x must have shape (N, C, h, w), got {tuple(x.shape)}")
    k, g, s = int(kernel_size), int(group), int(scale)
    if k < 1 or k % 2 == 0:
        raise ValueError(f"carafe: kernel_size must be a positive odd integer, got {kernel_size}")
    if g < 1 or s < 1:
        raise ValueError(f"carafe: group and scale must be >= 1, got group={group}, scale={scale}")
    n, c, h, w = x.shape
    if c % g != 0:
        raise ValueError(f"carafe: channels ({c}) must be divisible by group ({g})")
    expected = (n, g, k * k, s * h, s * w)
    if kernels.dim() == 4:
        if tuple(kernels.shape) != (n, g * k * k, s * h, s * w):
            raise ValueError(
                f"carafe: kernels must have shape {(n, g * k * k, s * h, s * w)} for x of shape "
                f"{tuple(x.shape)}, got {tuple(kernels.shape)}"
            )
    elif kernels.dim() != 5 or tuple(kernels.shape) != expected:
        raise ValueError(
            f"carafe: kernels must have shape {expected[:1] + (g * k * k,) + expected[3:]} or "
            f"{expected}, got {tuple(kernels.shape)}"
        )
    dtype = torch.promote_types(x.dtype, kernels.dtype)
    r = (k - 1) // 2
    # Input: NHWC with a zero border of r; kernels: (N, h, s, w, s, g, k^2), neighbours fastest.
    xp = F.pad(x.to(dtype), (r, r, r, r)).permute(0, 2, 3, 1).reshape(n, h + 2 * r, w + 2 * r, g,
                                                                      c // g)
    m = kernels.to(dtype).reshape(n, g, k * k, h, s, w, s).permute(0, 3, 4, 5, 6, 1, 2)
    m = m.contiguous()
    out = xp.new_zeros(n, h, s, w, s, g, c // g)
    for i in range(k * k):  # the k^2 neighbours (dy, dx), row-major
        dy, dx = divmod(i, k)
        shifted = xp[:, dy:dy + h, None, dx:dx + w, None]  # (N, h, 1, w, 1, g, C/g)
        out.addcmul_(shifted, m[..., i:i + 1])
    out = out.view(n, h * s, w * s, c).permute(0, 3, 1, 2)  # NCHW view, channels-last memory
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return out
    return out.contiguous()


class CARAFEUpsample(nn.Module):
    """CARAFE upsampler: compressor, content encoder, kernel normaliser and reassembly.

    The official module: docs/REFERENCE.md §4.3 (CARAFE upsampler).

    Attributes ``channel_compressor`` and ``content_encoder`` are the two convolutions (mmdet's
    names).
    Initialisation (docs/REFERENCE.md §11, "Initialisation"): compressor
    xavier-uniform, encoder normal(0, 0.001), biases 0.
    """

    @configurable
    def __init__(
        self,
        *,
        channels: int,
        scale_factor: int = 2,
        up_kernel: int = 5,
        up_group: int = 1,
        encoder_kernel: int = 3,
        encoder_dilation: int = 1,
        compressed_channels: int = 64,
    ):
        """
        Args:
            channels (int): channels C of the input (and output).
            scale_factor (int): upsampling factor s.
            up_kernel (int): odd reassembly kernel size k_up.
            up_group (int): channel groups g sharing one reassembly kernel (divides ``channels``).
            encoder_kernel (int): odd kernel size of the content encoder k_enc.
            encoder_dilation (int): dilation of the content encoder.
            compressed_channels (int): channels after the 1x1 compressor.
        """
        super().__init__()
        for name, value in (
            ("channels", channels),
            ("scale_factor", scale_factor),
            ("up_kernel", up_kernel),
            ("up_group", up_group),
            ("encoder_kernel", encoder_kernel),
            ("encoder_dilation", encoder_dilation),
            ("compressed_channels", compressed_channels),
        ):
            if int(value) != value or value < 1:
                raise ValueError(f"CARAFEUpsample: {name} must be a positive integer, got {value}")
        if up_kernel % 2 == 0 or encoder_kernel % 2 == 0:
            raise ValueError(
                f"CARAFEUpsample: up_kernel ({up_kernel}) and encoder_kernel ({encoder_kernel}) "
                "must be odd"
            )
        if channels % up_group != 0:
            raise ValueError(
                f"CARAFEUpsample: channels ({channels}) must be divisible by up_group ({up_group})"
            )
        self.channels = int(channels)
        self.scale_factor = int(scale_factor)
        self.up_kernel = int(up_kernel)
        self.up_group = int(up_group)
        self.channel_compressor = nn.Conv2d(channels, compressed_channels, 1)
        self.content_encoder = nn.Conv2d(
            compressed_channels,
            up_kernel * up_kernel * up_group * scale_factor * scale_factor,
            encoder_kernel,
            padding=(encoder_kernel - 1) * encoder_dilation // 2,
            dilation=encoder_dilation,
        )
        self.init_weights()

    @classmethod
    def from_config(cls, cfg, channels):
        """Kwargs from ``MODEL.YOLACT.CARAFE.*``; ``channels`` is given by the caller (the FPN)."""
        c = cfg.MODEL.YOLACT.CARAFE
        return {
            "channels": channels,
            "scale_factor": 2,
            "up_kernel": c.UP_KERNEL,
            "up_group": c.UP_GROUP,
            "encoder_kernel": c.ENCODER_KERNEL,
            "encoder_dilation": c.ENCODER_DILATION,
            "compressed_channels": c.COMPRESSED_CHANNELS,
        }

    def init_weights(self):
        """Compressor xavier-uniform, content encoder normal(0, 0.001); biases 0.

        As docs/REFERENCE.md §11 (initialisation).
        """
        nn.init.xavier_uniform_(self.channel_compressor.weight)
        nn.init.zeros_(self.channel_compressor.bias)
        nn.init.normal_(self.content_encoder.weight, mean=0.0, std=0.001)
        nn.init.zeros_(self.content_encoder.bias)

    def kernels(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised reassembly kernels predicted from ``x``.

        Args:
            x (Tensor): shape (N, C, h, w).

        Returns:
            Tensor: shape (N, g, k_up^2, s * h, s * w), summing to 1 over dim 2.
        """
        enc = self.content_encoder(self.channel_compressor(x))  # (N, g * k^2 * s^2, h, w)
        m = F.pixel_shuffle(enc, self.scale_factor)  # (N, g * k^2, s * h, s * w)
        n, _, sh, sw = m.shape
        m = m.view(n, self.up_group, self.up_kernel * self.up_kernel, sh, sw)
        return F.softmax(m, dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x (Tensor): shape (N, C, h, w), C == ``channels``.

        Returns:
            Tensor: shape (N, C, s * h, s * w).
        """
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f"CARAFEUpsample: expected input of shape (N, {self.channels}, h, w), "
                f"got {tuple(x.shape)}"
            )
        return carafe(x, self.kernels(x), self.up_kernel, self.up_group, self.scale_factor)

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, scale_factor={self.scale_factor}, "
            f"up_kernel={self.up_kernel}, up_group={self.up_group}"
        )
