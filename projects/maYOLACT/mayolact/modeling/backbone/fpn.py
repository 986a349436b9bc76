"""YOLACT's FPN as used by the official maIoU code (mmdet ``FPN``), on Detectron2's FPN.

The official neck: docs/REFERENCE.md §4.1 (FPN).

Differences from Detectron2's RetinaNet FPN, and nothing else:

* the top-down path resizes with ``F.interpolate(size=lateral.shape[-2:], mode="bilinear",
  align_corners=False)`` instead of a x2 nearest upsampling, so no input padding is needed;
* P6 = conv3x3/s2 on the input C5 and P7 = conv3x3/s2 on P6 **without** a ReLU in between;
* ``size_divisibility`` is 0 and there are no padding constraints: a 550x550 input gives P3..P7 of
  69, 35, 18, 9 and 5;
* every conv is xavier-uniform with zero bias (docs/REFERENCE.md §11,
  "Initialisation").

Module names stay Detectron2's (``fpn_lateral{s}``, ``fpn_output{s}``, ``top_block.p6/p7``).
"""
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import BACKBONE_REGISTRY, FPN, Backbone
from detectron2.modeling.backbone.fpn import LastLevelP6P7
from torch import nn

from mayolact.modeling.weight_init import xavier_init_convs

from .resnet import build_mayolact_resnet

__all__ = [
    "LastLevelP6P7NoReLU",
    "NoPaddingMixin",
    "YOLACTFPN",
    "check_in_features",
    "build_yolact_resnet_fpn_backbone",
]


def check_in_features(owner: str, bottom_up: Backbone, in_features: List[str]) -> None:
    """Raise a ``ValueError`` naming ``owner`` when ``bottom_up`` lacks one of ``in_features``."""
    shapes = bottom_up.output_shape()
    missing = [f for f in in_features if f not in shapes]
    if missing:
        raise ValueError(
            f"{owner}: in_features {missing} are not outputs of the bottom-up network "
            f"({list(shapes)}); check MODEL.RESNETS.OUT_FEATURES"
        )


class NoPaddingMixin:
    """For FPNs whose top-down path resizes to each lateral's size (project decision 1): any input
    size works, so there is no size divisibility and no padding constraint. List it before ``FPN``
    in the bases so that these properties override Detectron2's."""

    @property
    def size_divisibility(self) -> int:
        return 0

    @property
    def padding_constraints(self) -> Dict[str, int]:
        return {}


class LastLevelP6P7NoReLU(LastLevelP6P7):
    """Detectron2's P6/P7 block without the ReLU before P7 (mmdet
    ``relu_before_extra_convs=False``).

    ``p6`` = conv3x3/s2 (pad 1) on ``in_feature`` (C5 for YOLACT), ``p7`` = conv3x3/s2 on P6.
    """

    def forward(self, c5: torch.Tensor) -> List[torch.Tensor]:
        """
        Args:
            c5 (Tensor): shape (N, C_in, H, W).

        Returns:
            list[Tensor]: P6 of shape (N, C, ceil(H/2), ceil(W/2)) and P7 (halved again).
        """
        p6 = self.p6(c5)
        return [p6, self.p7(p6)]


class YOLACTFPN(NoPaddingMixin, FPN):
    """FPN of YOLACT / maYOLACT's Table 2 models: Detectron2's FPN, bilinear top-down, P6/P7 from
    C5 without ReLU, no size divisibility (docs/REFERENCE.md §4.1, "FPN")."""

    @configurable
    def __init__(
        self,
        *,
        bottom_up: Backbone,
        in_features: List[str],
        out_channels: int,
        norm: str = "",
        top_block: Optional[nn.Module] = None,
        fuse_type: str = "sum",
    ):
        """
        Args:
            bottom_up (Backbone): the ResNet; it must output every name in ``in_features`` (and the
                top block's ``in_feature`` when that is a bottom-up name).
            in_features (list[str]): bottom-up levels, high to low resolution (e.g. res3..res5).
            out_channels (int): channels of every output level.
            norm (str): norm of the lateral/output convs ("" = none, with bias: YOLACT's choice).
            top_block (nn.Module or None): extra levels, e.g. :class:`LastLevelP6P7NoReLU`.
            fuse_type (str): "sum" or "avg".
        """
        check_in_features("YOLACTFPN", bottom_up, in_features)
        super().__init__(
            bottom_up=bottom_up,
            in_features=in_features,
            out_channels=out_channels,
            norm=norm,
            top_block=top_block,
            fuse_type=fuse_type,
        )
        # The bottom-up network keeps its own (ImageNet / MSRA, zero DCN offsets) initialisation.
        xavier_init_convs(*self.lateral_convs, *self.output_convs, self.top_block)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        bottom_up = build_mayolact_resnet(cfg, input_shape)
        shapes = bottom_up.output_shape()
        top_in = cfg.MODEL.FPN.IN_FEATURES[-1]  # P6 from the last input (C5): mmdet "on_input"
        if top_in not in shapes:
            raise ValueError(
                f"YOLACTFPN: MODEL.FPN.IN_FEATURES[-1] = {top_in!r} is not an output of the "
                f"ResNet ({list(shapes)}); check MODEL.RESNETS.OUT_FEATURES"
            )
        out_channels = cfg.MODEL.FPN.OUT_CHANNELS
        return {
            "bottom_up": bottom_up,
            "in_features": cfg.MODEL.FPN.IN_FEATURES,
            "out_channels": out_channels,
            "norm": cfg.MODEL.FPN.NORM,
            "top_block": LastLevelP6P7NoReLU(shapes[top_in].channels, out_channels, top_in),
            "fuse_type": cfg.MODEL.FPN.FUSE_TYPE,
        }

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """
        Args:
            x (Tensor): images, shape (N, C, H, W); any H, W (no padding needed).

        Returns:
            dict[str, Tensor]: ``p3``..``p7`` (for res3..res5 inputs), each (N, out_channels, h, w)
                with h, w the bottom-up sizes for p3..p5 and ceil-halvings for p6, p7.
        """
        bottom_up_features = self.bottom_up(x)
        prev = self.lateral_convs[0](bottom_up_features[self.in_features[-1]])
        results = [self.output_convs[0](prev)]
        for idx in range(1, len(self.lateral_convs)):
            lateral = self.lateral_convs[idx](bottom_up_features[self.in_features[-idx - 1]])
            top_down = F.interpolate(
                prev, size=lateral.shape[-2:], mode="bilinear", align_corners=False
            )
            prev = lateral + top_down
            if self._fuse_type == "avg":
                prev = prev / 2
            results.insert(0, self.output_convs[idx](prev))
        if self.top_block is not None:
            name = self.top_block.in_feature
            if name in bottom_up_features:
                top_in = bottom_up_features[name]
            else:
                top_in = results[self._out_features.index(name)]
            results.extend(self.top_block(top_in))
        return dict(zip(self._out_features, results))


@BACKBONE_REGISTRY.register()
def build_yolact_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> YOLACTFPN:
    """YOLACT's FPN (docs/REFERENCE.md §4.1, "FPN") on :func:`build_mayolact_resnet`.

    Reads ``MODEL.FPN.{IN_FEATURES, OUT_CHANNELS, NORM, FUSE_TYPE}`` plus the ResNet keys.

    Returns:
        YOLACTFPN: outputs ``p3``..``p7`` with strides 8..128 for res3..res5 inputs.
    """
    return YOLACTFPN(cfg, input_shape)
