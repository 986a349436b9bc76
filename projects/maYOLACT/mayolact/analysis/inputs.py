"""What the figures read: dataset dicts, and ground truths and model inputs through YOLACT's mapper.

At the network's input (S x S), every figure takes its ground truths and images from
:class:`~mayolact.data.dataset_mapper.YOLACTDatasetMapper` in training mode with the random
augmentations left out (:func:`figure_mapper`): the annotations are parsed, filtered, rasterised
and squashed exactly as for training, and the integral images are the mapper's. At the original
resolution (Figure 3a without a size) the mapper's own parsing and rasterising functions are used.

Shape shorthand: G: ground truths of one image; H, W: original image size; S: input side.
"""
import sys
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
from detectron2.data import DatasetCatalog

from mayolact.data.augmentation import SquareResize, filter_small_gts
from mayolact.data.dataset_mapper import (
    YOLACTDatasetMapper,
    decode_segmentations,
    parse_annotations,
)
from mayolact.data.datasets import unregistered_message

__all__ = [
    "DatasetLike",
    "get_dataset_dicts",
    "figure_mapper",
    "mapped_inputs",
    "mapped_batches",
    "original_gts",
]

DatasetLike = Union[str, Sequence[str], List[Dict]]

#: Class ids are not checked against a class count where no model is involved (Figures 1, 3).
ANY_CLASS = sys.maxsize


def get_dataset_dicts(dataset: DatasetLike, num_images: Optional[int] = None) -> List[Dict]:
    """Dataset dicts of a registered dataset name, several names, or a list of dicts.

    Args:
        dataset: a name registered in ``DatasetCatalog``, a list/tuple of names (concatenated),
            or a list of dataset dicts.
        num_images: keep only the first ``num_images`` dicts (None: all).

    Raises:
        ValueError: unknown dataset name, or ``num_images`` < 0.
    """
    if isinstance(dataset, str):
        dataset = [dataset]
    if len(dataset) and all(isinstance(d, str) for d in dataset):
        dicts = []
        for name in dataset:
            if name not in DatasetCatalog.list():
                raise ValueError(unregistered_message(
                    name, "a COCO-format json file also works as --dataset"))
            dicts.extend(DatasetCatalog.get(name))
    elif all(isinstance(d, dict) for d in dataset):
        dicts = list(dataset)
    else:
        raise ValueError("dataset must be a registered name, a list of names or a list of dicts")
    if num_images is not None:
        if num_images < 0:
            raise ValueError(f"num_images must be >= 0, got {num_images}")
        dicts = dicts[:num_images]
    return dicts


def figure_mapper(size: int, image_format: str = "RGB", num_classes: int = ANY_CLASS,
                  min_size: float = 0.0) -> YOLACTDatasetMapper:
    """YOLACT's training mapper with only the deterministic S x S squash of its augmentations.

    The photometric distortion, Expand, the min-IoU crop and the flip are left out, so every call
    on a dataset dict gives the same input: the test-time view of an image with its ground
    truths as training sees them (``gt_boxes``, ``gt_classes``, ``gt_masks`` and
    ``gt_integral_images`` at S x S; GTs whose mask vanished dropped); it returns None for an
    image without GT.

    Args:
        size: S.
        image_format: ``INPUT.FORMAT`` of the model the inputs are for.
        num_classes: class ids must lie in [0, num_classes).
        min_size: GTs need box width and height > this (original pixels); 0 keeps all (the
            training filter, ``INPUT.YOLACT.MIN_GT_SIZE``, is 4).
    """
    return YOLACTDatasetMapper(
        is_train=True, augmentations=[SquareResize(size)], image_format=image_format,
        num_classes=num_classes, min_gt_size=min_size, integral_images=True,
    )


def mapped_inputs(dataset: DatasetLike, size: int, num_images: Optional[int] = None,
                  min_size: float = 0.0, image_format: str = "RGB",
                  num_classes: int = ANY_CLASS) -> Iterator[Tuple[int, Dict, Dict]]:
    """``(index, dataset dict, mapped input)`` of every image that keeps a ground truth.

    Args:
        dataset, num_images: see :func:`get_dataset_dicts`; ``index`` counts in that list.
        size, min_size, image_format, num_classes: see :func:`figure_mapper`.
    """
    mapper = figure_mapper(size, image_format, num_classes, min_size)
    for i, record in enumerate(get_dataset_dicts(dataset, num_images)):
        mapped = mapper(record)
        if mapped is not None:
            yield i, record, mapped


def mapped_batches(dataset: DatasetLike, size: int, batch_size: int = 1,
                   num_images: Optional[int] = None, min_size: float = 0.0,
                   image_format: str = "RGB", num_classes: int = ANY_CLASS
                   ) -> Iterator[List[Dict]]:
    """Training-format model inputs (``image`` float (3, S, S), ``instances``) in batches.

    Images without a ground truth left are skipped. See :func:`mapped_inputs`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    batch = []
    for _, _, mapped in mapped_inputs(dataset, size, num_images, min_size, image_format,
                                      num_classes):
        batch.append(mapped)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def original_gts(record: Dict, min_size: float = 0.0
                 ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Non-crowd ground truths of one dataset dict at its original resolution.

    Parsed (:func:`~mayolact.data.dataset_mapper.parse_annotations`: the mapper's validation and
    skips) and rasterised (:func:`~mayolact.data.dataset_mapper.decode_segmentations`) as the
    mapper does; no image is read.

    Args:
        record: a Detectron2 dataset dict with ``height``, ``width`` and ``annotations``.
        min_size: keep only GTs whose box width and height are > ``min_size`` (the mapper's
            ``filter_small_gts``); 0 keeps all.

    Returns:
        tuple: ``boxes`` float32 (G, 4) XYXY, ``classes`` int64 (G,), ``masks`` bool (G, H, W).

    Raises:
        ValueError: a record without height / width, or a malformed annotation (named).
    """
    for key in ("height", "width"):
        if key not in record:
            raise ValueError(f"dataset dict {record.get('file_name', '?')} has no '{key}'")
    h, w = int(record["height"]), int(record["width"])
    boxes, classes, segms, _ = parse_annotations(
        record.get("annotations") or [], record.get("file_name", "?"), (h, w), ANY_CLASS)
    masks = decode_segmentations(segms, h, w).astype(bool)
    if min_size > 0:
        keep = filter_small_gts(boxes, min_size)
        boxes, classes, masks = boxes[keep], classes[keep], masks[keep]
    return boxes, classes, masks
