"""maYOLACT backbones: ResNet with DCNv2 (torchvision), YOLACT's FPN, CARAFE and the CARAFE FPN.

Importing this package registers ``build_mayolact_resnet``, ``build_yolact_resnet_fpn_backbone``
and ``build_yolact_resnet_carafe_fpn_backbone`` in Detectron2's ``BACKBONE_REGISTRY``.
"""
from .carafe import CARAFEUpsample, carafe
from .carafe_fpn import CARAFEFPN, build_yolact_resnet_carafe_fpn_backbone
from .fpn import YOLACTFPN, LastLevelP6P7NoReLU, build_yolact_resnet_fpn_backbone
from .resnet import ModulatedDeformBottleneck, ModulatedDeformConv2d, build_mayolact_resnet

__all__ = [
    "CARAFEUpsample",
    "carafe",
    "CARAFEFPN",
    "build_yolact_resnet_carafe_fpn_backbone",
    "LastLevelP6P7NoReLU",
    "YOLACTFPN",
    "build_yolact_resnet_fpn_backbone",
    "ModulatedDeformBottleneck",
    "ModulatedDeformConv2d",
    "build_mayolact_resnet",
]
