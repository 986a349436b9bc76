"""YOLACT's dataset mapper: Detectron2 dataset dicts -> model inputs.

The official data path: docs/REFERENCE.md §2.1-2.3 (data), §13.3 (masks for the
assigner), §13.4 (augmentations).

Training, per image:

1. read the image (``INPUT.FORMAT``, RGB in our configs) and check its size;
2. parse the annotations as mmdet's ``CocoDataset`` does (skip ``ignore``, boxes that miss the
   image, ``area <= 0``, ``w < 1`` or ``h < 1``); crowd annotations become crowd boxes;
3. ``FilterAnnotations``: keep GTs with ``w > MIN_GT_SIZE and h > MIN_GT_SIZE`` (original pixels);
4. decode the kept GT masks once, at the original resolution (polygons, uncompressed and
   compressed RLE) into a (G, H, W) uint8 stack;
5. augment (photometric, Expand, min-IoU crop, S x S resize, flip) the float32 image, boxes,
   crowd boxes and masks together (see :mod:`mayolact.data.augmentation`);
6. drop GTs whose mask became empty (see below) and emit ``Instances`` of size (S, S) with
   ``gt_boxes`` (the transformed annotation boxes, not recomputed from the masks), ``gt_classes``,
   ``gt_masks`` (``BitMasks``, bool) and, when ``INPUT.YOLACT.INTEGRAL_IMAGES``,
   ``gt_integral_images`` (:func:`mayolact.structures.integral_image.integral_images` of the final
   masks).

Empty masks: the official code keeps GTs whose mask vanished (under the nearest down-scaling or
the crop); maIoU then gives them no positive anchors (docs/REFERENCE.md §6.4,
"maIoU"). We drop them instead, so every
GT that reaches the model has pixels.

Resampling: when no GT is left (after step 3 or 6) the mapper returns ``None``, and the training
dataset (:class:`mayolact.data.common.YOLACTMapDataset`, Detectron2's ``MapDataset`` with a seed
per draw) maps another, randomly chosen image instead, as mmdet's pipeline does when it returns
None; ``INPUT.YOLACT.MAX_RESAMPLE`` draws in a row without a training input are an error there.
The official crop may keep only crowd-box centres (docs/REFERENCE.md §2.2): such a
draw ends with no GT and is re-drawn the same way.

Test: read the image, resize it bilinearly to S x S, and emit a uint8 CHW tensor; annotations are
dropped. ``height`` / ``width`` keep the original size, so outputs can be rescaled to it.
"""

import logging
import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, Boxes, BoxMode, Instances

from mayolact.config.config import resolved_num_classes
from mayolact.data.augmentation import (
    YOLACTAugInput,
    build_yolact_test_augmentation,
    build_yolact_train_augmentation,
    filter_small_gts,
)
from mayolact.data.validation import segmentation_problem
from mayolact.structures.integral_image import integral_images

__all__ = [
    "YOLACTDatasetMapper",
    "check_trainable",
    "decode_segmentations",
    "parse_annotations",
]

logger = logging.getLogger(__name__)


def _ann_name(ann: Dict, index: int) -> str:
    ann_id = ann.get("id") if isinstance(ann, dict) else None
    return (
        f"annotation #{index} (id {ann_id})"
        if ann_id is not None
        else f"annotation #{index} (no id)"
    )


def _bad(file_name: str, ann: Dict, index: int, field: str, what: str) -> ValueError:
    return ValueError(f"{file_name}: {_ann_name(ann, index)}: field '{field}': {what}")


def _check_segmentation(segm, file_name: str, ann: Dict, index: int, hw: Tuple[int, int]):
    """Validate one COCO segmentation before pycocotools sees it
    (:func:`mayolact.data.validation.segmentation_problem`: finite polygon coordinates within one
    image size of the image, RLE counts that decode and sum to H x W); returns it with the
    polygons of fewer than 3 points removed, as Detectron2's ``load_coco_json`` does."""
    reason, drop = segmentation_problem(segm, hw)
    if reason is not None:
        raise _bad(file_name, ann, index, "segmentation", reason)
    if isinstance(segm, dict):
        return segm
    return [[float(v) for v in poly] for k, poly in enumerate(segm) if k not in drop]


def parse_annotations(
    annos: Sequence[Dict],
    file_name: str,
    image_hw: Tuple[int, int],
    num_classes: int,
    need_masks: bool = True,
):
    """Validate and split Detectron2 annotations as mmdet's ``CocoDataset._parse_ann_info``.

    Skipped (silently, as the official code): ``ignore`` set, a box that does not intersect the
    image, ``area <= 0`` (when the field is present), ``w < 1`` or ``h < 1``.

    Args:
        annos: Detectron2 annotation dicts (``bbox``, ``bbox_mode``, ``category_id``
            (contiguous), ``iscrowd``, ``segmentation``; ``id`` and ``area`` are optional).
        file_name: image path, for error messages.
        image_hw: (H, W) of the image.
        num_classes: valid ``category_id`` are 0 .. num_classes-1.
        need_masks: require a ``segmentation`` on every non-crowd annotation.

    Returns:
        tuple: ``boxes`` float32 (N, 4) XYXY, ``classes`` int64 (N,), ``segms`` list of N
        validated segmentations (empty when not ``need_masks``), ``crowd_boxes`` float32 (M, 4).

    Raises:
        ValueError: naming the file, the annotation and the field, on a malformed annotation
            (bbox not 4 finite numbers, negative size, unknown bbox_mode, category id out of range,
            missing or malformed segmentation).
    """
    H, W = image_hw
    boxes, classes, segms, crowd = [], [], [], []
    for i, ann in enumerate(annos):
        if not isinstance(ann, dict):
            raise ValueError(
                f"{file_name}: annotation #{i} must be a dict, got {type(ann).__name__}"
            )
        if ann.get("ignore", False):
            continue
        bbox = ann.get("bbox")
        if bbox is None:
            raise _bad(file_name, ann, i, "bbox", "missing")
        try:
            bbox = [float(v) for v in bbox]
        except (TypeError, ValueError):
            raise _bad(file_name, ann, i, "bbox", f"expected 4 numbers, got {bbox!r}") from None
        if len(bbox) != 4 or not all(math.isfinite(v) for v in bbox):
            raise _bad(file_name, ann, i, "bbox", f"expected 4 finite numbers, got {bbox}")
        mode = ann.get("bbox_mode", BoxMode.XYWH_ABS)
        if mode not in (BoxMode.XYWH_ABS, BoxMode.XYXY_ABS):
            raise _bad(
                file_name, ann, i, "bbox_mode", f"expected XYWH_ABS or XYXY_ABS, got {mode!r}"
            )
        # float64 numpy: the conversion keeps the coordinates' precision (a list would be float32).
        x1, y1, w, h = BoxMode.convert(np.asarray([bbox]), mode, BoxMode.XYWH_ABS)[0].tolist()
        if w < 0 or h < 0:
            raise _bad(file_name, ann, i, "bbox", f"negative width or height ({w}, {h})")
        iscrowd = ann.get("iscrowd", 0)
        if iscrowd not in (0, 1, False, True):
            raise _bad(file_name, ann, i, "iscrowd", f"expected 0 or 1, got {iscrowd!r}")
        cat = ann.get("category_id")
        if (
            isinstance(cat, bool)
            or not isinstance(cat, (int, np.integer))
            or not 0 <= cat < num_classes
        ):
            raise _bad(
                file_name,
                ann,
                i,
                "category_id",
                f"{cat!r} is not a contiguous class id in [0, {num_classes}) (is it in the "
                "dataset's thing_dataset_id_to_contiguous_id mapping?)",
            )
        # mmdet's CocoDataset filters (silent skips).
        inter_w = max(0.0, min(x1 + w, W) - max(x1, 0.0))
        inter_h = max(0.0, min(y1 + h, H) - max(y1, 0.0))
        if inter_w * inter_h == 0 or w < 1 or h < 1:
            continue
        if "area" in ann and ann["area"] is not None and float(ann["area"]) <= 0:
            continue
        xyxy = [x1, y1, x1 + w, y1 + h]
        if iscrowd:
            crowd.append(xyxy)
            continue
        if need_masks:
            if "segmentation" not in ann:
                raise _bad(
                    file_name, ann, i, "segmentation", "missing (instance masks are required)"
                )
            segms.append(_check_segmentation(ann["segmentation"], file_name, ann, i, (H, W)))
        boxes.append(xyxy)
        classes.append(int(cat))
    return (
        np.asarray(boxes, np.float32).reshape(-1, 4),
        np.asarray(classes, np.int64),
        segms,
        np.asarray(crowd, np.float32).reshape(-1, 4),
    )


def decode_segmentations(segms: Sequence, height: int, width: int) -> np.ndarray:
    """Rasterise COCO segmentations at (height, width) with pycocotools (as mmdet's ``_poly2mask``).

    Args:
        segms: polygons (list of flat coordinate lists; the parts are merged), uncompressed RLE
            (dict with list ``counts``) or compressed RLE (dict with str / bytes ``counts``).
        height, width: the image size.

    Returns:
        ndarray: uint8 (G, height, width), values 0 / 1.
    """
    if len(segms) == 0:
        return np.zeros((0, height, width), np.uint8)
    rles = []
    for s in segms:
        if isinstance(s, dict):
            counts = s["counts"]
            if isinstance(counts, list):
                rles.append(mask_util.frPyObjects(s, height, width))
            else:
                rles.append(
                    {
                        "size": list(s["size"]),
                        "counts": counts.encode() if isinstance(counts, str) else counts,
                    }
                )
        else:
            rles.append(mask_util.merge(mask_util.frPyObjects(s, height, width)))
    masks = mask_util.decode(rles)  # (H, W, G), Fortran order
    return np.ascontiguousarray(masks.transpose(2, 0, 1))


def check_trainable(dataset_dicts: Sequence[Dict], names: Sequence[str], min_gt_size: float,
                    num_classes: int) -> None:
    """Some image of the training set has a GT the mapper keeps (before augmentation).

    When none has, every image gives None and Detectron2's ``MapDataset`` runs out of images to
    draw instead ("Sample larger than population"). The scan stops at the first usable image, so
    it costs next to nothing on a usable dataset.

    Args:
        dataset_dicts: the training set (Detectron2 dataset dicts, with ``height`` / ``width``).
        names: the datasets it was read from (``DATASETS.TRAIN``), for the message.
        min_gt_size: ``INPUT.YOLACT.MIN_GT_SIZE``.
        num_classes: ``MODEL.YOLACT.NUM_CLASSES``.

    Raises:
        ValueError: naming the datasets and ``INPUT.YOLACT.MIN_GT_SIZE``; or, from
            :func:`parse_annotations`, naming a malformed annotation met on the way.
    """
    for d in dataset_dicts:
        hw = (d.get("height", float("inf")), d.get("width", float("inf")))
        boxes, _, _, _ = parse_annotations(
            d.get("annotations") or [], d.get("file_name", "?"), hw, num_classes, need_masks=False
        )
        if filter_small_gts(boxes, min_gt_size).any():
            return
    raise ValueError(
        f"DATASETS.TRAIN {tuple(names)}: none of its {len(dataset_dicts)} images has a ground "
        f"truth wider and taller than INPUT.YOLACT.MIN_GT_SIZE = {min_gt_size} px (crowd regions "
        "and annotations outside the image do not count), so no training input can be made; "
        "lower INPUT.YOLACT.MIN_GT_SIZE or check the annotations"
    )


class YOLACTDatasetMapper:
    """Map a Detectron2 dataset dict to YOLACT's inputs (see the module docstring).

    Train output: ``{"image": float32 (3, S, S) tensor (unclipped, INPUT.FORMAT order), "height",
    "width", "file_name", "image_id", "instances": Instances((S, S))}`` with ``gt_boxes``
    (Boxes), ``gt_classes`` (int64), ``gt_masks`` (BitMasks (G, S, S) bool) and optionally
    ``gt_integral_images`` (IntegralImages). Returns None when the image has no GT left.

    Test output: ``{"image": uint8 (3, S, S) tensor, "height", "width", "file_name", "image_id"}``.
    """

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: List,
        image_format: str,
        num_classes: int,
        min_gt_size: float = 4.0,
        integral_images: bool = True,
    ):
        """
        Args:
            is_train: training (annotations, random augmentation) or test mapping.
            augmentations: Augmentations / Transforms applied in order (see
                :func:`build_yolact_train_augmentation`).
            image_format: ``INPUT.FORMAT`` of :func:`detectron2.data.detection_utils.read_image`.
            num_classes: number of foreground classes; category ids must lie in [0, num_classes).
            min_gt_size: FilterAnnotations threshold (strict), in original pixels.
            integral_images: emit ``gt_integral_images``.
        """
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.num_classes = int(num_classes)
        self.min_gt_size = float(min_gt_size)
        self.integral_images = bool(integral_images)
        mode = "training" if is_train else "inference"
        logger.info(f"[YOLACTDatasetMapper] Augmentations used in {mode}: {augmentations}")

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        augs = (
            build_yolact_train_augmentation(cfg)
            if is_train
            else build_yolact_test_augmentation(cfg)
        )
        return {
            "is_train": is_train,
            "augmentations": augs,
            "image_format": cfg.INPUT.FORMAT,
            "num_classes": resolved_num_classes(cfg),
            "min_gt_size": cfg.INPUT.YOLACT.MIN_GT_SIZE,
            "integral_images": cfg.INPUT.YOLACT.INTEGRAL_IMAGES,
        }

    # ------------------------------------------------------------------------------ helpers
    def _read_image(self, dataset_dict: Dict) -> np.ndarray:
        if "file_name" not in dataset_dict:
            raise ValueError(
                f"YOLACTDatasetMapper: dataset dict has no 'file_name': {sorted(dataset_dict)}"
            )
        file_name = dataset_dict["file_name"]
        try:
            image = utils.read_image(file_name, format=self.image_format)
        except FileNotFoundError as e:
            raise FileNotFoundError(
                f"YOLACTDatasetMapper: image file not found: {file_name}"
            ) from e
        except (OSError, ValueError, SyntaxError) as e:
            raise OSError(f"YOLACTDatasetMapper: cannot read image file {file_name}: {e}") from e
        utils.check_image_size(dataset_dict, image)
        return image

    @staticmethod
    def _no_gt(dataset_dict: Dict, why: str) -> None:
        logger.debug("YOLACTDatasetMapper: %s: %s; another image is drawn",
                     dataset_dict.get("file_name"), why)
        return None

    # ------------------------------------------------------------------------------- mapping
    def __call__(self, dataset_dict: Dict) -> Optional[Dict]:
        """
        Args:
            dataset_dict (dict): one image in Detectron2's dataset format.

        Returns:
            dict or None: the model input (see the class docstring); None (train only) when no
            GT is left, so that ``MapDataset`` draws another image.
        """
        dataset_dict = dict(dataset_dict)  # shallow: the annotations are read, never modified
        image = self._read_image(dataset_dict)
        annos = dataset_dict.pop("annotations", None)
        dataset_dict.pop("sem_seg_file_name", None)

        if not self.is_train:
            aug_input = T.AugInput(image)
            self.augmentations(aug_input)
            dataset_dict["image"] = torch.as_tensor(
                np.ascontiguousarray(aug_input.image.transpose(2, 0, 1))
            )
            return dataset_dict

        file_name = dataset_dict["file_name"]
        H, W = image.shape[:2]
        boxes, classes, segms, crowd = parse_annotations(
            annos or [], file_name, (H, W), self.num_classes
        )
        keep = filter_small_gts(boxes, self.min_gt_size)
        if not keep.any():
            return self._no_gt(dataset_dict, "no ground truth larger than INPUT.YOLACT.MIN_GT_SIZE")
        keep_idx = np.flatnonzero(keep)
        masks = decode_segmentations([segms[i] for i in keep_idx], H, W)

        aug_input = YOLACTAugInput(
            image.astype(np.float32),
            boxes=boxes[keep_idx],
            crowd_boxes=crowd,
            masks=masks,
            classes=classes[keep_idx],
        )
        self.augmentations(aug_input)

        masks = aug_input.masks
        # (G, S, S) with G = 0 when the crop kept only crowd centres: no reshape(0, -1) here.
        nonempty = masks.any(axis=(1, 2))
        if not nonempty.any():
            return self._no_gt(dataset_dict, "no ground truth left after augmentation")

        image = aug_input.image
        S_h, S_w = image.shape[:2]
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        instances = Instances((S_h, S_w))
        instances.gt_boxes = Boxes(torch.as_tensor(aug_input.boxes[nonempty], dtype=torch.float32))
        instances.gt_classes = torch.as_tensor(aug_input.classes[nonempty], dtype=torch.int64)
        gt_masks = torch.from_numpy(np.ascontiguousarray(masks[nonempty])).bool()
        instances.gt_masks = BitMasks(gt_masks)
        if self.integral_images:
            instances.gt_integral_images = integral_images(gt_masks)
        dataset_dict["instances"] = instances
        return dataset_dict
