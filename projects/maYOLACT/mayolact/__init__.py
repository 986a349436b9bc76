"""maYOLACT: mask-aware IoU anchor assignment, YOLACT and maYOLACT for Detectron2.

Importing the package registers everything with Detectron2, by plain imports: the ``YOLACT``
meta-architecture, the backbones, the ``YOLACTAnchorGenerator`` and the anchor matchers
(:mod:`mayolact.modeling`), the datasets (:mod:`mayolact.data`), the evaluators
(:mod:`mayolact.evaluation`) and the ``torchvision://`` paths of ``MODEL.WEIGHTS``
(:mod:`mayolact.checkpoint`). Import it only as ``mayolact``: a second import path would register
the same names twice.

The paper's ideas, one module each:

* mask-aware IoU and the MOB ratio: :mod:`mayolact.structures.maiou`;
* exact maIoU through compact integral images (Alg. 1): :mod:`mayolact.structures.integral_image`;
* the maIoU-based ATSS assigner (and the other assigners of Table 2):
  :mod:`mayolact.modeling.matchers`.
"""
from .utils.logger import filter_known_warnings

# First: narrow filters for the deprecation warnings Detectron2 and fvcore trigger with this torch.
filter_known_warnings()

from . import data, evaluation  # noqa: E402  (registration: datasets)
from .checkpoint import YOLACTCheckpointer  # noqa: E402  (registration: torchvision:// paths)
from .config import add_mayolact_config, load_config  # noqa: E402
from .engine import Trainer, YOLACTPredictor  # noqa: E402
from .modeling import (  # noqa: E402  (registration: meta-architecture, backbones, anchors)
    YOLACT,
    ATSSMatcher,
    FixedIoUMatcher,
    YOLACTAnchorGenerator,
    build_anchor_matcher,
)
from .structures import (  # noqa: E402
    IntegralImages,
    integral_images,
    mask_over_box,
    pairwise_maiou,
)

__version__ = "0.1.0"

__all__ = [
    "ATSSMatcher",
    "FixedIoUMatcher",
    "IntegralImages",
    "Trainer",
    "YOLACT",
    "YOLACTAnchorGenerator",
    "YOLACTCheckpointer",
    "YOLACTPredictor",
    "add_mayolact_config",
    "build_anchor_matcher",
    "data",
    "evaluation",
    "integral_images",
    "load_config",
    "mask_over_box",
    "pairwise_maiou",
]
