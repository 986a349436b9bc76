"""The model: importing this package registers the ``YOLACT`` meta-architecture, the backbones
and the ``YOLACTAnchorGenerator`` with Detectron2, and the anchor matchers in
``ANCHOR_MATCHER_REGISTRY``.

* :mod:`~mayolact.modeling.matchers`: the assigners of Table 2 (fixed IoU; ATSS with IoU, GIoU,
  DIoU or maIoU);
* :mod:`~mayolact.modeling.meta_arch.yolact`: YOLACT as a Detectron2 ``DenseDetector``;
* :mod:`~mayolact.modeling.backbone`: ResNet with DCNv2, YOLACT's FPN and the CARAFE FPN;
* the head, the protonet, the losses and the post-processing, one module each.
"""
from .anchor_generator import YOLACTAnchorGenerator, anchors_for_input, feature_sizes
from .backbone import (
    build_mayolact_resnet,
    build_yolact_resnet_carafe_fpn_backbone,
    build_yolact_resnet_fpn_backbone,
)
from .matchers import (
    ANCHOR_MATCHER_REGISTRY,
    AnchorMatcher,
    ATSSMatcher,
    FixedIoUMatcher,
    build_anchor_matcher,
)
from .meta_arch import YOLACT

__all__ = [
    "ANCHOR_MATCHER_REGISTRY",
    "ATSSMatcher",
    "AnchorMatcher",
    "FixedIoUMatcher",
    "YOLACT",
    "YOLACTAnchorGenerator",
    "anchors_for_input",
    "build_anchor_matcher",
    "build_mayolact_resnet",
    "build_yolact_resnet_carafe_fpn_backbone",
    "build_yolact_resnet_fpn_backbone",
    "feature_sizes",
]
