"""maYOLACT: mask-aware IoU anchor assignment, YOLACT and maYOLACT for Detectron2.

Importing this package registers everything with Detectron2's registries: the ``YOLACT``
meta-architecture, the backbones (``build_yolact_resnet_fpn_backbone``,
``build_yolact_resnet_carafe_fpn_backbone``, ``build_mayolact_resnet``), the
``YOLACTAnchorGenerator`` and the datasets (``coco_mini_*`` when present, ``mayolact_shapes_*``).
Import it only as ``mayolact``: a second import path would register the same names twice.
"""
from .config import add_mayolact_config
from .structures import IntegralImages, as_integral_images, integral_images
from .box_ops import pairwise_diou, pairwise_giou
from .maiou import mask_over_box, pairwise_maiou, pairwise_maiou_bruteforce
from .matchers import ATSSMatcher, FixedIoUMatcher, build_anchor_matcher
from .anchor_generator import YOLACTAnchorGenerator
from . import backbone  # noqa: F401  (registers the backbones)
from . import data  # noqa: F401  (registers the datasets)
from .meta_arch import YOLACT
from .evaluation import build_mayolact_evaluator

__version__ = "0.1.0"

__all__ = [
    "add_mayolact_config",
    "IntegralImages",
    "integral_images",
    "as_integral_images",
    "pairwise_maiou",
    "pairwise_maiou_bruteforce",
    "mask_over_box",
    "pairwise_giou",
    "pairwise_diou",
    "ATSSMatcher",
    "FixedIoUMatcher",
    "build_anchor_matcher",
    "YOLACTAnchorGenerator",
    "YOLACT",
    "build_mayolact_evaluator",
]
