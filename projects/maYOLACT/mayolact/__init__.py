"""maYOLACT: mask-aware IoU anchor assignment, YOLACT and maYOLACT for Detectron2.

Importing this package registers everything with Detectron2's registries (meta-architecture,
backbones, anchor generator, datasets). Import it only as ``mayolact``: a second import path would
register the same names twice.
"""
from .config import add_mayolact_config
from .structures import IntegralImages, integral_images
from . import backbone  # noqa: F401  (registers the backbones)

__version__ = "0.1.0"
