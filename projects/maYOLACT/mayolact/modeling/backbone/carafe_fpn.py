"""FPN with CARAFE upsampling (mmdet ``FPN_CARAFE``), maYOLACT's neck.

The official neck: docs/REFERENCE.md §4.2 (CARAFE FPN).

Built on Detectron2's FPN (which makes the 1x1 laterals ``fpn_lateral{3,4,5}`` and the 3x3 outputs
``fpn_output{3,4,5}``), plus:

* extra laterals ``fpn_lateral6`` = conv3x3/s2 on the input C5 and ``fpn_lateral7`` = conv3x3/s2 on
  the P6 lateral (not on an output), with outputs ``fpn_output6`` and ``fpn_output7``;
* CARAFE upsamplers ``fpn_upsample{s}`` (level s+1 -> s, for s = 3..6);
* a top-down pass over all five levels: ``lat[i-1] += up_i(lat[i])[:, :, :H(i-1), :W(i-1)]``
  (top-left slice when the x2 map is one pixel larger);
* every output is ``fpn_output{s}(lat[s])``. All convs have bias; there is no norm and no
  activation.

Initialisation (docs/REFERENCE.md §11, "Initialisation"): convs xavier-uniform
with zero bias, CARAFE modules their own init.
"""
import math
from typing import Dict, List, Optional

import torch
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec
from detectron2.modeling.backbone import BACKBONE_REGISTRY, FPN, Backbone

from mayolact.modeling.weight_init import xavier_init_convs

from .carafe import CARAFEUpsample
from .fpn import NoPaddingMixin, check_in_features
from .resnet import build_mayolact_resnet

__all__ = ["CARAFEFPN", "build_yolact_resnet_carafe_fpn_backbone"]

class CARAFEFPN(NoPaddingMixin, FPN):
    """FPN_CARAFE: Detectron2's FPN laterals/outputs, two extra levels from the input's last
    feature, CARAFE x2 upsampling in a top-down pass over every level, no size divisibility
    (docs/REFERENCE.md §4.2, "CARAFE FPN")."""

    @configurable
    def __init__(
        self,
        *,
        bottom_up: Backbone,
        in_features: List[str],
        out_channels: int,
        num_extra_levels: int = 2,
        carafe_kwargs: Optional[dict] = None,
    ):
        """
        Args:
            bottom_up (Backbone): the ResNet; it must output every name in ``in_features``.
            in_features (list[str]): bottom-up levels, high to low resolution (e.g. res3..res5).
            out_channels (int): channels of every output level.
            num_extra_levels (int): levels above the last input (P6, P7: 2), each a conv3x3/s2
                lateral on the previous lateral (the first on the last input feature).
            carafe_kwargs (dict or None): keyword arguments of :class:`CARAFEUpsample` other than
                ``channels`` and ``scale_factor`` (``up_kernel``, ``up_group``, ...).
        """
        check_in_features("CARAFEFPN", bottom_up, in_features)
        if num_extra_levels < 0:
            raise ValueError(f"CARAFEFPN: num_extra_levels must be >= 0, got {num_extra_levels}")
        super().__init__(
            bottom_up=bottom_up, in_features=in_features, out_channels=out_channels, norm=""
        )
        carafe_kwargs = dict(carafe_kwargs or {})

        shapes = bottom_up.output_shape()
        last = shapes[in_features[-1]]
        stage = int(math.log2(last.stride))
        extra_laterals, extra_outputs = [], []
        in_channels = last.channels
        for i in range(num_extra_levels):
            s = stage + i + 1
            lateral = Conv2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1)
            output = Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1)
            self.add_module(f"fpn_lateral{s}", lateral)
            self.add_module(f"fpn_output{s}", output)
            extra_laterals.append(lateral)
            extra_outputs.append(output)
            self._out_feature_strides[f"p{s}"] = 2**s
            in_channels = out_channels
        self._out_features = list(self._out_feature_strides.keys())
        self._out_feature_channels = {k: out_channels for k in self._out_features}

        # Every level in high-to-low resolution order (FPN keeps its lists top-down).
        self.level_lateral_convs = self.lateral_convs[::-1] + extra_laterals
        self.level_output_convs = self.output_convs[::-1] + extra_outputs
        self.upsamplers = []
        first = int(math.log2(shapes[in_features[0]].stride))
        for s in range(first, first + len(self._out_features) - 1):
            up = CARAFEUpsample(channels=out_channels, scale_factor=2, **carafe_kwargs)
            self.add_module(f"fpn_upsample{s}", up)
            self.upsamplers.append(up)
        # Bottom-up keeps its own init; the upsamplers keep CARAFE's
        # (docs/REFERENCE.md §11, "Initialisation").
        xavier_init_convs(*self.level_lateral_convs, *self.level_output_convs)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        carafe_kwargs = CARAFEUpsample.from_config(cfg, cfg.MODEL.FPN.OUT_CHANNELS)
        del carafe_kwargs["channels"], carafe_kwargs["scale_factor"]
        return {
            "bottom_up": build_mayolact_resnet(cfg, input_shape),
            "in_features": cfg.MODEL.FPN.IN_FEATURES,
            "out_channels": cfg.MODEL.FPN.OUT_CHANNELS,
            "num_extra_levels": 2,
            "carafe_kwargs": carafe_kwargs,
        }

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Same contract as :meth:`mayolact.modeling.backbone.fpn.YOLACTFPN.forward`: images
        (N, C, H, W) of any size in, ``p3``..``p7`` of shape (N, out_channels, h, w) out."""
        feats = self.bottom_up(x)
        n_in = len(self.in_features)
        lats = [conv(feats[f]) for conv, f in zip(self.level_lateral_convs, self.in_features)]
        top = feats[self.in_features[-1]]
        for conv in self.level_lateral_convs[n_in:]:
            top = conv(top)
            lats.append(top)
        for i in range(len(lats) - 1, 0, -1):
            up = self.upsamplers[i - 1](lats[i])
            h, w = lats[i - 1].shape[-2:]
            lats[i - 1] = lats[i - 1] + up[:, :, :h, :w]
        return {
            name: conv(lat)
            for name, conv, lat in zip(self._out_features, self.level_output_convs, lats)
        }


@BACKBONE_REGISTRY.register()
def build_yolact_resnet_carafe_fpn_backbone(cfg, input_shape: ShapeSpec) -> CARAFEFPN:
    """maYOLACT's FPN_CARAFE (docs/REFERENCE.md §4.2) on
    :func:`build_mayolact_resnet`.

    Reads ``MODEL.FPN.{IN_FEATURES, OUT_CHANNELS}``, ``MODEL.YOLACT.CARAFE.*`` and the ResNet keys
    (``MODEL.FPN.NORM`` / ``FUSE_TYPE`` are not used: FPN_CARAFE has no norm and sums).

    Returns:
        CARAFEFPN: outputs ``p3``..``p7`` with strides 8..128 for res3..res5 inputs.
    """
    return CARAFEFPN(cfg, input_shape)
