"""Data: YOLACT's augmentations, its dataset mapper, and dataset registration.

Importing this package registers the datasets (``coco_mini_train`` / ``coco_mini_val`` when the
folder exists; see :mod:`mayolact.data.datasets`).
"""

from . import (
    datasets,  # noqa: F401  (registration)
    shapes,  # noqa: F401  (registers mayolact_shapes_train / _val)
)
from .augmentation import build_yolact_test_augmentation, build_yolact_train_augmentation
from .dataset_mapper import YOLACTDatasetMapper

__all__ = [
    "build_yolact_test_augmentation",
    "build_yolact_train_augmentation",
    "YOLACTDatasetMapper",
]
