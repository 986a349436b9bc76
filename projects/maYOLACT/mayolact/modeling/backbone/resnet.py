"""ResNet for maYOLACT: Detectron2's ResNet with a DCNv2 bottleneck that runs on any device.

The detectron2 installed here has no compiled ops, so its ``ModulatedDeformConv`` cannot run. This
module builds the same network (docs/REFERENCE.md §3, "Backbone") from
Detectron2's ``ResNet``, ``BasicStem``,
``BottleneckBlock`` and ``BasicBlock``, and swaps the 3x3 conv of deformable blocks for
:class:`ModulatedDeformConv2d`, a modulated deformable convolution (DCNv2) on
``torchvision.ops.deform_conv2d`` (CUDA) or on :mod:`mayolact.modeling.backbone.deform_conv`'s
vectorised ATen kernel (CPU), ``MODEL.YOLACT.DCN_KERNEL``.

Parameter names follow Detectron2's ``DeformBottleneckBlock`` (``conv2`` with ``conv2.weight`` and
``conv2.norm``, the offset/mask conv as ``conv2_offset``), so converted torchvision ImageNet weights
load into ``conv2`` of both plain and deformable blocks.
"""
import logging
import math

import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec, get_norm
from detectron2.modeling.backbone import BACKBONE_REGISTRY, ResNet
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem, BottleneckBlock
from fvcore.nn import weight_init
from torch import nn
from torchvision.ops import deform_conv2d

from .deform_conv import modulated_deform_conv2d, resolve_dcn_kernel

__all__ = [
    "ModulatedDeformConv2d",
    "ModulatedDeformBottleneck",
    "build_mayolact_resnet",
]

logger = logging.getLogger(__name__)

_BLOCKS_PER_STAGE = {
    18: [2, 2, 2, 2],
    34: [3, 4, 6, 3],
    50: [3, 4, 6, 3],
    101: [3, 4, 23, 3],
    152: [3, 8, 36, 3],
}


class ModulatedDeformConv2d(nn.Module):
    """Modulated deformable convolution (DCNv2), plus a norm.

    The offsets and modulation masks are inputs (predicted by the caller's offset conv). Like
    Detectron2's ``Conv2d`` it applies ``norm`` after the convolution when given.

    Kernel (``kernel``, from ``MODEL.YOLACT.DCN_KERNEL``): ``torchvision.ops.deform_conv2d`` or
    :func:`mayolact.modeling.backbone.deform_conv.modulated_deform_conv2d`, equal up to float
    rounding; ``auto`` takes torchvision's on CUDA and the ATen one elsewhere. In an ONNX export
    the convolution is torchvision's op, exported as ONNX ``DeformConv``
    (:mod:`mayolact.export.exporter`).

    Precision: float32 and float64 run as they are. Under autocast, or for a reduced-precision input
    on a non-CUDA device (torchvision has no such CPU kernel), the convolution runs in float32 with
    autocast disabled and the result is cast back to the input's dtype.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        stride: int = 1,
        padding: int = 1,
        dilation: int = 1,
        groups: int = 1,
        deformable_groups: int = 1,
        bias: bool = False,
        norm: nn.Module = None,
        kernel: str = "auto",
    ):
        """
        Args:
            in_channels (int): input channels, divisible by ``groups`` and ``deformable_groups``.
            out_channels (int): output channels, divisible by ``groups``.
            kernel_size (int): square kernel size.
            stride, padding, dilation (int): as ``nn.Conv2d``.
            groups (int): convolution groups.
            deformable_groups (int): offset groups (each has its own offsets and masks).
            bias (bool): learn an additive bias.
            norm (nn.Module or None): normalisation applied to the output.
            kernel (str): "auto", "aten" or "torchvision" (``MODEL.YOLACT.DCN_KERNEL``).
        """
        super().__init__()
        resolve_dcn_kernel(kernel, "cpu")  # checks the name
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"ModulatedDeformConv2d: channels ({in_channels} -> {out_channels}) must be "
                f"divisible by groups ({groups})"
            )
        if in_channels % deformable_groups:
            raise ValueError(
                f"ModulatedDeformConv2d: in_channels ({in_channels}) must be divisible by "
                f"deformable_groups ({deformable_groups})"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = (kernel_size, kernel_size)
        self.stride = (stride, stride)
        self.padding = (padding, padding)
        self.dilation = (dilation, dilation)
        self.groups = groups
        self.deformable_groups = deformable_groups
        self.weight = nn.Parameter(
            torch.empty(out_channels, in_channels // groups, kernel_size, kernel_size)
        )
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.norm = norm
        self.kernel = kernel
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x (Tensor): shape (N, C_in, H, W).
            offset (Tensor): shape (N, 2 * G * kh * kw, H_out, W_out), (y, x) pairs per kernel
                point, grouped by deformable group G (torchvision's layout).
            mask (Tensor): shape (N, G * kh * kw, H_out, W_out), modulation in [0, 1].

        Returns:
            Tensor: shape (N, C_out, H_out, W_out).
        """
        kh, kw = self.kernel_size
        n_points = self.deformable_groups * kh * kw
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"ModulatedDeformConv2d: expected input (N, {self.in_channels}, H, W), "
                f"got {tuple(x.shape)}"
            )
        if offset.shape[1] != 2 * n_points or mask.shape[1] != n_points:
            raise ValueError(
                f"ModulatedDeformConv2d: expected offset with {2 * n_points} and mask with "
                f"{n_points} channels, got {tuple(offset.shape)} and {tuple(mask.shape)}"
            )
        device_type = x.device.type
        dtype = x.dtype
        autocast_on = torch.is_autocast_enabled(device_type) if device_type != "meta" else False
        if autocast_on or (device_type != "cuda" and dtype not in (torch.float32, torch.float64)):
            dtype = torch.float32
        kernel = resolve_dcn_kernel(self.kernel, device_type)
        if torch.onnx.is_in_onnx_export():
            kernel = "torchvision"  # exported as ONNX DeformConv (mayolact.export.exporter)
        conv = deform_conv2d if kernel == "torchvision" else _aten_deform_conv2d
        with torch.autocast(device_type=device_type, enabled=False):
            out = conv(
                x.to(dtype),
                offset.to(dtype),
                self.weight.to(dtype),
                None if self.bias is None else self.bias.to(dtype),
                stride=self.stride,
                padding=self.padding,
                dilation=self.dilation,
                mask=mask.to(dtype),
            )
        out = out.to(x.dtype)
        if self.norm is not None:
            out = self.norm(out)
        return out

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, groups={self.groups}, "
            f"deformable_groups={self.deformable_groups}, bias={self.bias is not None}, "
            f"kernel={self.kernel}"
        )


def _aten_deform_conv2d(x, offset, weight, bias, *, stride, padding, dilation, mask):
    """:func:`modulated_deform_conv2d` with ``torchvision.ops.deform_conv2d``'s signature."""
    return modulated_deform_conv2d(x, offset, mask, weight, bias, stride, padding, dilation)


class ModulatedDeformBottleneck(BottleneckBlock):
    """Bottleneck block whose 3x3 conv is a DCNv2 (mmdet's ``stage_with_dcn``).

    The official DCNv2 placement: docs/REFERENCE.md §3 (backbone).

    ``conv2`` (carrying the stride when ``stride_in_1x1`` is False, as in torchvision) becomes a
    :class:`ModulatedDeformConv2d` with ``deform_num_groups`` offset groups; ``conv2_offset`` is a
    3x3 conv with ``deform_num_groups * 3 * 9`` outputs (same stride, padding and dilation),
    zero-initialised (weight and bias). Its output is chunked as (o1, o2, mask):
    ``offset = cat(o1, o2)``, ``mask = sigmoid(mask)``. At initialisation the offsets are 0 and the
    masks 0.5, so ``conv2`` starts as half the plain convolution. The strided first block of a stage
    is deformable too (mmdet's ``fallback_on_stride=False``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        bottleneck_channels: int,
        stride: int = 1,
        num_groups: int = 1,
        norm="BN",
        stride_in_1x1: bool = False,
        dilation: int = 1,
        deform_num_groups: int = 1,
        deform_kernel: str = "auto",
    ):
        """
        Args:
            in_channels, out_channels, bottleneck_channels, stride, num_groups, norm,
                stride_in_1x1, dilation: as Detectron2's ``BottleneckBlock``.
            deform_num_groups (int): offset groups of the deformable 3x3 conv; divides
                ``bottleneck_channels``.
            deform_kernel (str): the DCN kernel (:class:`ModulatedDeformConv2d`'s ``kernel``).
        """
        super().__init__(
            in_channels,
            out_channels,
            bottleneck_channels=bottleneck_channels,
            stride=stride,
            num_groups=num_groups,
            norm=norm,
            stride_in_1x1=stride_in_1x1,
            dilation=dilation,
        )
        if bottleneck_channels % deform_num_groups:
            raise ValueError(
                f"ModulatedDeformBottleneck: bottleneck_channels ({bottleneck_channels}) must be "
                f"divisible by deform_num_groups ({deform_num_groups})"
            )
        stride_3x3 = 1 if stride_in_1x1 else stride
        self.conv2_offset = nn.Conv2d(
            bottleneck_channels,
            deform_num_groups * 3 * 3 * 3,
            kernel_size=3,
            stride=stride_3x3,
            padding=dilation,
            dilation=dilation,
        )
        self.conv2 = ModulatedDeformConv2d(
            bottleneck_channels,
            bottleneck_channels,
            kernel_size=3,
            stride=stride_3x3,
            padding=dilation,
            dilation=dilation,
            groups=num_groups,
            deformable_groups=deform_num_groups,
            bias=False,
            norm=get_norm(norm, bottleneck_channels),
            kernel=deform_kernel,
        )
        weight_init.c2_msra_fill(self.conv2)
        nn.init.zeros_(self.conv2_offset.weight)
        nn.init.zeros_(self.conv2_offset.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x (Tensor): shape (N, in_channels, H, W).

        Returns:
            Tensor: shape (N, out_channels, H / stride, W / stride) (rounded as a 3x3/pad-1 conv).
        """
        out = F.relu_(self.conv1(x))
        o1, o2, m = torch.chunk(self.conv2_offset(out), 3, dim=1)
        offset = torch.cat((o1, o2), dim=1)
        out = F.relu_(self.conv2(out, offset, m.sigmoid()))
        out = self.conv3(out)
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return F.relu_(out + shortcut)


def _make_bottleneck(*, deform: bool, deform_num_groups: int, deform_kernel: str, **kwargs):
    """Block factory for ``ResNet.make_stage``: a deformable or a plain bottleneck."""
    if deform:
        return ModulatedDeformBottleneck(deform_num_groups=deform_num_groups,
                                         deform_kernel=deform_kernel, **kwargs)
    return BottleneckBlock(**kwargs)


def _scaled(channels: int, scale: float, multiple: int = 1) -> int:
    """``channels * scale`` rounded to the nearest positive multiple of ``multiple``."""
    return max(multiple, int(round(channels * scale / multiple)) * multiple)


@BACKBONE_REGISTRY.register()
def build_mayolact_resnet(cfg, input_shape: ShapeSpec) -> ResNet:
    """Build Detectron2's ``ResNet`` from ``MODEL.RESNETS.*``, with DCNv2 on torchvision.

    Reads ``MODEL.RESNETS.{DEPTH, NORM, STRIDE_IN_1X1, OUT_FEATURES, RES5_DILATION,
    DEFORM_ON_PER_STAGE, DEFORM_MODULATED, DEFORM_NUM_GROUPS, STEM_OUT_CHANNELS,
    RES2_OUT_CHANNELS, WIDTH_PER_GROUP, NUM_GROUPS}``, ``MODEL.BACKBONE.FREEZE_AT`` (Detectron2's
    meaning: 0 freezes nothing, 1 the stem, k the stem and res2..res{k}) and
    ``MODEL.YOLACT.{DEFORM_INTERVAL, RESNET_WIDTH_SCALE, DCN_KERNEL}``.

    In a stage with ``DEFORM_ON_PER_STAGE`` set, block ``i`` (0-based within the stage) is
    deformable when ``i % DEFORM_INTERVAL == 0``: interval 1 makes every block deformable,
    interval 3 blocks 0, 3, 6, ... (the first, strided block is always deformable).

    ``RESNET_WIDTH_SCALE`` multiplies the stem, bottleneck and output widths (1.0 = standard).
    Scaled bottleneck widths are rounded to a multiple of ``NUM_GROUPS`` (and of
    ``DEFORM_NUM_GROUPS`` when a stage is deformable), the others to integers, all at least 1.

    Args:
        cfg (CfgNode): config with ``add_mayolact_config`` applied.
        input_shape (ShapeSpec): the input's channels.

    Returns:
        ResNet: Detectron2's ResNet with outputs ``MODEL.RESNETS.OUT_FEATURES``.

    Raises:
        ValueError: unsupported depth, RES5_DILATION != 1, non-modulated or R18/R34 deformable
            stages, bad interval or width scale, or other invalid combinations.
    """
    r = cfg.MODEL.RESNETS
    depth = r.DEPTH
    if depth not in _BLOCKS_PER_STAGE:
        raise ValueError(f"MODEL.RESNETS.DEPTH must be one of 18, 34, 50, 101, 152, got {depth}")
    if r.RES5_DILATION != 1:
        raise ValueError(
            f"MODEL.RESNETS.RES5_DILATION must be 1 for maYOLACT, got {r.RES5_DILATION}"
        )
    deform_on = list(r.DEFORM_ON_PER_STAGE)
    if len(deform_on) != 4:
        raise ValueError(
            f"MODEL.RESNETS.DEFORM_ON_PER_STAGE must have 4 entries (res2..res5), got {deform_on}"
        )
    if any(deform_on) and not r.DEFORM_MODULATED:
        raise ValueError(
            "MODEL.RESNETS.DEFORM_MODULATED must be True when a stage is deformable "
            "(maYOLACT implements DCNv2 only)"
        )
    interval = cfg.MODEL.YOLACT.DEFORM_INTERVAL
    if int(interval) != interval or interval < 1:
        raise ValueError(f"MODEL.YOLACT.DEFORM_INTERVAL must be an integer >= 1, got {interval}")
    scale = float(cfg.MODEL.YOLACT.RESNET_WIDTH_SCALE)
    if not scale > 0:
        raise ValueError(f"MODEL.YOLACT.RESNET_WIDTH_SCALE must be > 0, got {scale}")
    num_groups = r.NUM_GROUPS
    deform_groups = r.DEFORM_NUM_GROUPS
    if deform_groups < 1:
        raise ValueError(f"MODEL.RESNETS.DEFORM_NUM_GROUPS must be >= 1, got {deform_groups}")
    resolve_dcn_kernel(cfg.MODEL.YOLACT.DCN_KERNEL, "cpu")  # an unknown name fails here
    norm = r.NORM

    stem_channels = _scaled(r.STEM_OUT_CHANNELS, scale)
    stem = BasicStem(in_channels=input_shape.channels, out_channels=stem_channels, norm=norm)
    out_channels = _scaled(r.RES2_OUT_CHANNELS, scale)
    if depth in (18, 34):
        if r.RES2_OUT_CHANNELS != 64:
            raise ValueError("MODEL.RESNETS.RES2_OUT_CHANNELS must be 64 for R-18/R-34")
        if any(deform_on):
            raise ValueError("MODEL.RESNETS.DEFORM_ON_PER_STAGE is not supported for R-18/R-34")
        if num_groups != 1:
            raise ValueError("MODEL.RESNETS.NUM_GROUPS must be 1 for R-18/R-34")

    in_channels = stem_channels
    bottleneck_base = num_groups * r.WIDTH_PER_GROUP
    stages = []
    for idx, num_blocks in enumerate(_BLOCKS_PER_STAGE[depth]):
        stride = 1 if idx == 0 else 2
        kwargs = {
            "num_blocks": num_blocks,
            "stride_per_block": [stride] + [1] * (num_blocks - 1),
            "in_channels": in_channels,
            "out_channels": out_channels,
            "norm": norm,
        }
        if depth in (18, 34):
            kwargs["block_class"] = BasicBlock
        else:
            multiple = math.lcm(num_groups, deform_groups) if deform_on[idx] else num_groups
            kwargs.update(
                block_class=_make_bottleneck,
                bottleneck_channels=_scaled(bottleneck_base * 2**idx, scale, multiple),
                stride_in_1x1=r.STRIDE_IN_1X1,
                dilation=1,
                num_groups=num_groups,
                deform_per_block=[bool(deform_on[idx]) and i % interval == 0
                                  for i in range(num_blocks)],
                deform_num_groups=deform_groups,
                deform_kernel=cfg.MODEL.YOLACT.DCN_KERNEL,
            )
        stages.append(ResNet.make_stage(**kwargs))
        in_channels = out_channels
        out_channels *= 2
    n_deform = sum(isinstance(b, ModulatedDeformBottleneck) for s in stages for b in s)
    logger.info(
        "maYOLACT ResNet-%d: width scale %g, %d deformable (DCNv2) blocks", depth, scale, n_deform
    )
    return ResNet(stem, stages, out_features=r.OUT_FEATURES, freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT)
