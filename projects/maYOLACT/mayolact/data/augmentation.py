"""YOLACT's training and test augmentations on Detectron2's transform API.

The official pipelines: docs/REFERENCE.md §2.2 (training pipeline), §2.3 (test
pipeline).

The official pipeline (mmdetection 2.1.0) is, in order::

    FilterAnnotations -> PhotoMetricDistortion -> Expand -> MinIoURandomCrop -> Resize(S x S)
    -> Normalize -> RandomFlip

Each random step is an :class:`~detectron2.data.transforms.Augmentation` that draws its parameters
with ``np.random`` (so ``np.random.seed`` makes it reproducible) and returns a deterministic
:class:`~fvcore.transforms.Transform`. Normalisation is left to the model
(``MODEL.PIXEL_MEAN/STD``).

Why not Detectron2's own transforms (checked against §2.2 line by line):

- ``T.MinIoURandomCrop`` crops ``(int(left), int(top), int(new_w), int(new_h))`` while it tests
  the IoU on the patch ``(int(left), int(top), int(left+new_w), int(top+new_h))`` (the two can
  differ by a pixel), does not drop the boxes whose centre falls outside the patch (it only
  clips them), cannot see crowd boxes, rejects line patches and gives up after 1000 modes.
- ``T.RandomExtent`` fills with zeros, not the pixel mean, and parameterises scale and shift
  differently from SSD's Expand.
- ``T.ResizeTransform`` resizes uint8 images with PIL (anti-aliased when shrinking) and does not
  clip boxes; mmdet uses ``cv2.resize`` (bilinear, no anti-aliasing) and clips boxes to [0, S].

``T.RandomFlip`` (horizontal) is reused as is: ``HFlipTransform`` maps ``x1' = W - x2``.

Instance masks travel as one uint8 / bool array of shape (G, H, W). ``apply_masks`` is
registered on fvcore's ``Transform`` (``Transform.register_type``) so every transform, including
``NoOpTransform``, ``HFlipTransform`` and ``TransformList``, can map such a stack. Crowd boxes
travel separately (``YOLACTAugInput.crowd_boxes``): they take part in the crop's IoU test only.

Channel order: the photometric distortion works on RGB or BGR float images alike; it uses the
matching OpenCV HSV conversion, so every step has the same meaning as the official BGR code (the
random channel permutation is uniform over the 6 orders either way). Expand fills with the pixel
mean given in the image's own channel order (``MODEL.PIXEL_MEAN`` follows ``INPUT.FORMAT``).
"""

import functools
import logging
from typing import List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
from detectron2.data import transforms as T
from fvcore.transforms.transform import (
    CropTransform,
    HFlipTransform,
    NoOpTransform,
    Transform,
    TransformList,
    VFlipTransform,
)

from mayolact.structures.box_ops import box_iou_numpy

__all__ = [
    "filter_small_gts",
    "PhotometricDistortion",
    "PhotometricTransform",
    "Expand",
    "ExpandTransform",
    "MinIoURandomCrop",
    "MinIoUCropTransform",
    "SquareResize",
    "SquareResizeTransform",
    "YOLACTAugInput",
    "build_yolact_train_augmentation",
    "build_yolact_test_augmentation",
]

logger = logging.getLogger(__name__)

_HSV_CODES = {
    "RGB": (cv2.COLOR_RGB2HSV, cv2.COLOR_HSV2RGB),
    "BGR": (cv2.COLOR_BGR2HSV, cv2.COLOR_HSV2BGR),
}


# --------------------------------------------------------------------------- masks on transforms
def _apply_masks_default(tfm: Transform, masks: np.ndarray) -> np.ndarray:
    """Map a (G, H, W) mask stack through a transform that has no ``apply_masks`` of its own."""
    if isinstance(tfm, NoOpTransform):
        return masks
    if isinstance(tfm, HFlipTransform):
        return masks[:, :, ::-1]
    if isinstance(tfm, VFlipTransform):
        return masks[:, ::-1, :]
    if isinstance(tfm, CropTransform):
        return masks[:, tfm.y0 : tfm.y0 + tfm.h, tfm.x0 : tfm.x0 + tfm.w]
    # Generic fallback (not used by the YOLACT pipeline): one apply_segmentation per mask.
    if masks.shape[0] == 0:
        probe = tfm.apply_segmentation(np.zeros(masks.shape[1:], dtype=masks.dtype))
        return np.zeros((0,) + probe.shape, dtype=masks.dtype)
    return np.stack([tfm.apply_segmentation(m) for m in masks], axis=0)


if not hasattr(Transform, "apply_masks"):
    Transform.register_type("masks", _apply_masks_default)


def _check_masks(masks: np.ndarray, hw: Tuple[int, int], who: str) -> None:
    if masks.ndim != 3 or tuple(masks.shape[1:]) != tuple(hw):
        raise ValueError(f"{who}: masks must be (G, {hw[0]}, {hw[1]}), got {tuple(masks.shape)}")


# ----------------------------------------------------------------------------- FilterAnnotations
def filter_small_gts(
    boxes: np.ndarray, min_size: Union[float, Sequence[float]] = 4.0
) -> np.ndarray:
    """``FilterAnnotations``: which GTs are wide and tall enough (strictly).

    Args:
        boxes (ndarray): float (N, 4) XYXY boxes in original-image pixels.
        min_size (float or (float, float)): minimum (width, height); a GT is kept only if
            ``w > min_w and h > min_h`` (so a 4-pixel-wide box is dropped for 4.0).

    Returns:
        ndarray: bool (N,), True for the GTs to keep.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if np.isscalar(min_size):
        min_w = min_h = float(min_size)
    else:
        min_w, min_h = (float(v) for v in min_size)
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    return (w > min_w) & (h > min_h)


# ------------------------------------------------------------------------ photometric distortion
class PhotometricTransform(Transform):
    """SSD / mmdet ``PhotoMetricDistortion`` with fixed parameters.

    docs/REFERENCE.md §2.2 (training pipeline), step 4.

    Steps (each one only if its parameter is not None): brightness ``+delta``; contrast ``*alpha``
    first if ``contrast_first``; colour -> HSV (float, H in degrees); ``S *= saturation``;
    ``H += hue`` wrapped by +-360 when above 360 or below 0; HSV -> colour; contrast last if not
    ``contrast_first``; channel permutation. The HSV round trip always runs, as in the official
    code (it is not the identity for pixels pushed below 0). There is no clipping.

    Geometry is unchanged: boxes, coordinates and masks pass through.
    """

    def __init__(
        self,
        brightness: Optional[float],
        contrast: Optional[float],
        contrast_first: bool,
        saturation: Optional[float],
        hue: Optional[float],
        permutation: Optional[Sequence[int]],
        image_format: str = "RGB",
    ):
        super().__init__()
        if image_format not in _HSV_CODES:
            raise ValueError(
                f"PhotometricTransform: image_format must be RGB or BGR, got {image_format!r}"
            )
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        """float (H, W, 3) image in ``image_format`` order -> float32 (H, W, 3), unclipped."""
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"PhotometricTransform: expected an (H, W, 3) image, got {img.shape}")
        to_hsv, from_hsv = _HSV_CODES[self.image_format]
        img = img.astype(np.float32, copy=True)
        if self.brightness is not None:
            img += np.float32(self.brightness)
        if self.contrast is not None and self.contrast_first:
            img *= np.float32(self.contrast)
        img = cv2.cvtColor(img, to_hsv)
        if self.saturation is not None:
            img[..., 1] *= np.float32(self.saturation)
        if self.hue is not None:
            hue = img[..., 0]
            hue += np.float32(self.hue)
            hue[hue > 360] -= 360
            hue[hue < 0] += 360
        img = cv2.cvtColor(img, from_hsv)
        if self.contrast is not None and not self.contrast_first:
            img *= np.float32(self.contrast)
        if self.permutation is not None:
            img = img[..., list(self.permutation)]
        return img

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return segmentation

    def apply_masks(self, masks: np.ndarray) -> np.ndarray:
        return masks

    def inverse(self) -> Transform:
        return NoOpTransform()


class PhotometricDistortion(T.Augmentation):
    """Random photometric distortion; every step fires with probability 0.5.

    docs/REFERENCE.md §2.2 (training pipeline), step 4.

    The random draws follow the official order: brightness coin (+ delta), contrast-mode coin,
    [contrast coin (+ alpha) when contrast comes first], saturation coin (+ factor), hue coin
    (+ shift), [contrast coin (+ alpha) when it comes last], permutation coin (+ permutation).

    Args:
        brightness_delta (float): brightness shift ~ U(-delta, delta).
        contrast_range (tuple): contrast factor range.
        saturation_range (tuple): saturation factor range.
        hue_delta (float): hue shift ~ U(-delta, delta) degrees.
        image_format (str): "RGB" or "BGR", the channel order of the images it will see.
    """

    def __init__(
        self,
        brightness_delta: float = 32,
        contrast_range: Tuple[float, float] = (0.5, 1.5),
        saturation_range: Tuple[float, float] = (0.5, 1.5),
        hue_delta: float = 18,
        image_format: str = "RGB",
    ):
        super().__init__()
        if image_format not in _HSV_CODES:
            raise ValueError(
                f"PhotometricDistortion: image_format must be RGB or BGR, got {image_format!r}"
            )
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        rand = np.random
        brightness = contrast = saturation = hue = permutation = None
        if rand.randint(2):
            brightness = rand.uniform(-self.brightness_delta, self.brightness_delta)
        contrast_first = bool(rand.randint(2))
        if contrast_first and rand.randint(2):
            contrast = rand.uniform(*self.contrast_range)
        if rand.randint(2):
            saturation = rand.uniform(*self.saturation_range)
        if rand.randint(2):
            hue = rand.uniform(-self.hue_delta, self.hue_delta)
        if not contrast_first and rand.randint(2):
            contrast = rand.uniform(*self.contrast_range)
        if rand.randint(2):
            permutation = tuple(int(i) for i in rand.permutation(3))
        return PhotometricTransform(
            brightness, contrast, contrast_first, saturation, hue, permutation, self.image_format
        )


# -------------------------------------------------------------------------------------- Expand
class ExpandTransform(Transform):
    """Paste an (h, w) image at (left, top) of an (new_h, new_w) canvas filled with ``fill``.

    Boxes shift by (left, top); masks are zero-padded (``BitmapMasks.expand``).
    """

    def __init__(
        self, h: int, w: int, new_h: int, new_w: int, left: int, top: int, fill: Sequence[float]
    ):
        super().__init__()
        if not (0 <= left and left + w <= new_w and 0 <= top and top + h <= new_h):
            raise ValueError(
                f"ExpandTransform: a {h}x{w} image at (left={left}, top={top}) does not "
                f"fit a {new_h}x{new_w} canvas"
            )
        self._set_attributes(locals())

    def _paste(self, img: np.ndarray, fill) -> np.ndarray:
        """Paste ``img`` (h, w[, C]) on a canvas filled with ``fill`` (one value or C values)."""
        if img.shape[:2] != (self.h, self.w):
            raise ValueError(
                f"ExpandTransform: expected a {self.h}x{self.w} input, got {img.shape}"
            )
        fill = np.asarray(fill, dtype=np.float64).reshape(-1)
        channels = img.shape[2] if img.ndim == 3 else 1
        if fill.size not in (1, channels):
            raise ValueError(
                f"ExpandTransform: fill has {fill.size} values for a {channels}-channel image"
            )
        if channels <= 4 and img.ndim in (2, 3) and img.dtype in (np.uint8, np.float32, np.float64):
            # One OpenCV pass (border = fill, cast like numpy's assignment) instead of a numpy fill.
            value = np.broadcast_to(fill, (channels,)).astype(img.dtype).astype(np.float64).tolist()
            out = cv2.copyMakeBorder(
                img,
                self.top,
                self.new_h - self.top - self.h,
                self.left,
                self.new_w - self.left - self.w,
                cv2.BORDER_CONSTANT,
                value=value + [0.0] * (4 - channels),
            )
            return out[:, :, None] if img.ndim == 3 and out.ndim == 2 else out
        canvas = np.empty((self.new_h, self.new_w) + img.shape[2:], dtype=img.dtype)
        canvas[...] = fill.astype(img.dtype) if img.ndim == 3 else fill[0].astype(img.dtype)
        canvas[self.top : self.top + self.h, self.left : self.left + self.w] = img
        return canvas

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return self._paste(img, self.fill)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        coords[:, 0] += self.left
        coords[:, 1] += self.top
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return self._paste(segmentation, 0.0)

    def apply_masks(self, masks: np.ndarray) -> np.ndarray:
        """(G, h, w) -> (G, new_h, new_w), zero-padded."""
        _check_masks(masks, (self.h, self.w), "ExpandTransform")
        out = np.zeros((masks.shape[0], self.new_h, self.new_w), dtype=masks.dtype)
        out[:, self.top : self.top + self.h, self.left : self.left + self.w] = masks
        return out

    def inverse(self) -> Transform:
        return CropTransform(self.left, self.top, self.w, self.h, self.new_w, self.new_h)


class Expand(T.Augmentation):
    """SSD zoom-out: with probability ``prob``, put the image on a larger canvas.

    docs/REFERENCE.md §2.2 (training pipeline), step 5.

    ``r ~ U(ratio_range)``; canvas ``(int(h r), int(w r))`` filled with ``fill`` (the pixel mean in
    the image's channel order); ``left = int(U(0, w r - w))``, ``top = int(U(0, h r - h))``.
    """

    def __init__(
        self,
        prob: float = 0.5,
        ratio_range: Tuple[float, float] = (1.0, 4.0),
        fill: Sequence[float] = (123.68, 116.78, 103.94),
    ):
        super().__init__()
        if not (ratio_range[0] >= 1.0 and ratio_range[1] >= ratio_range[0]):
            raise ValueError(f"Expand: ratio_range must satisfy 1 <= min <= max, got {ratio_range}")
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        rand = np.random
        if rand.uniform(0, 1) > self.prob:
            return NoOpTransform()
        h, w = image.shape[:2]
        ratio = rand.uniform(*self.ratio_range)
        new_h, new_w = int(h * ratio), int(w * ratio)
        left = int(rand.uniform(0, w * ratio - w))
        top = int(rand.uniform(0, h * ratio - h))
        return ExpandTransform(h, w, new_h, new_w, left, top, tuple(float(v) for v in self.fill))


# --------------------------------------------------------------------------- MinIoURandomCrop
class MinIoUCropTransform(CropTransform):
    """Crop to the patch ``[x0, x0+w) x [y0, y0+h)``; boxes are clipped to it and shifted.

    ``box_keep(boxes)`` tells which boxes (in pre-crop coordinates) have their centre strictly
    inside the patch: :class:`YOLACTAugInput` drops the others, with their masks and classes,
    before cropping (``apply_box`` itself keeps the number of boxes).
    """

    def box_keep(self, boxes: np.ndarray) -> np.ndarray:
        """bool (N,): centre strictly inside the patch, for (N, 4) XYXY boxes before the crop."""
        boxes = np.asarray(boxes).reshape(-1, 4)
        cx = (boxes[:, 0] + boxes[:, 2]) / 2
        cy = (boxes[:, 1] + boxes[:, 3]) / 2
        return (cx > self.x0) & (cy > self.y0) & (cx < self.x0 + self.w) & (cy < self.y0 + self.h)

    def apply_box(self, box: np.ndarray) -> np.ndarray:
        box = np.asarray(box, dtype=np.float32).reshape(-1, 4).copy()
        box[:, 0::2] = np.clip(box[:, 0::2] - self.x0, 0, self.w)
        box[:, 1::2] = np.clip(box[:, 1::2] - self.y0, 0, self.h)
        return box

    def apply_masks(self, masks: np.ndarray) -> np.ndarray:
        return masks[:, self.y0 : self.y0 + self.h, self.x0 : self.x0 + self.w]


class MinIoURandomCrop(T.Augmentation):
    """SSD min-IoU random crop, exactly docs/REFERENCE.md §2.2 (training pipeline),
    step 6.

    Loop: draw ``mode`` from ``(1, *min_ious, 0)`` (1 = keep the image). Otherwise up to
    ``max_trials`` tries: ``new_w ~ U(min_crop_size w, w)``, ``new_h ~ U(min_crop_size h, h)``,
    reject ``new_h / new_w`` outside [0.5, 2]; ``left ~ U(0, w - new_w)``,
    ``top ~ U(0, h - new_h)``;
    ``patch = (int(left), int(top), int(left + new_w), int(top + new_h))``; reject when the IoU
    of the patch with any box (GT or crowd) is below ``mode``, or when no box (GT or crowd) has
    its centre strictly inside. When all tries fail, draw a new mode. As a safeguard (the official
    loop has none; it ends almost surely since mode 1 has probability 1/7) the image is kept
    after ``max_modes`` modes.

    ``get_transform(image, boxes, crowd_boxes)`` reads ``boxes`` and ``crowd_boxes`` from a
    :class:`YOLACTAugInput`; with a plain ``AugInput`` there are no crowd boxes.
    """

    def __init__(
        self,
        min_ious: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9),
        min_crop_size: float = 0.3,
        max_trials: int = 50,
        max_modes: int = 1000,
    ):
        super().__init__()
        self._init(locals())
        self.sample_mode = (1, *min_ious, 0)

    def __call__(self, aug_input) -> Transform:
        tfm = self.get_transform(
            aug_input.image, aug_input.boxes, getattr(aug_input, "crowd_boxes", None)
        )
        aug_input.transform(tfm)
        return tfm

    def get_transform(
        self,
        image: np.ndarray,
        boxes: Optional[np.ndarray],
        crowd_boxes: Optional[np.ndarray] = None,
    ) -> Transform:
        parts = [
            np.asarray(b, dtype=np.float64).reshape(-1, 4)
            for b in (boxes, crowd_boxes)
            if b is not None
        ]
        all_boxes = np.concatenate(parts, axis=0) if parts else np.zeros((0, 4))
        if len(all_boxes) == 0:
            return NoOpTransform()
        h, w = image.shape[:2]
        cx = (all_boxes[:, 0] + all_boxes[:, 2]) / 2
        cy = (all_boxes[:, 1] + all_boxes[:, 3]) / 2
        rand = np.random
        for _ in range(self.max_modes):
            mode = rand.choice(self.sample_mode)
            if mode == 1:
                return NoOpTransform()
            for _ in range(self.max_trials):
                new_w = rand.uniform(self.min_crop_size * w, w)
                new_h = rand.uniform(self.min_crop_size * h, h)
                if new_h / new_w < 0.5 or new_h / new_w > 2:
                    continue
                left = rand.uniform(0, w - new_w)
                top = rand.uniform(0, h - new_h)
                x1, y1 = int(left), int(top)
                x2, y2 = int(left + new_w), int(top + new_h)
                if x2 <= x1 or y2 <= y1:  # only possible for images under 4 px; never a 0-size crop
                    continue
                # IoU of the patch with every box (numpy: this loop runs ~100 times per image).
                iou = box_iou_numpy((x1, y1, x2, y2), all_boxes)
                if iou.min() < mode:
                    continue
                inside = (cx > x1) & (cy > y1) & (cx < x2) & (cy < y2)
                if not inside.any():
                    continue
                return MinIoUCropTransform(x1, y1, x2 - x1, y2 - y1, w, h)
        logger.warning("MinIoURandomCrop: no crop found after %d modes; image kept", self.max_modes)
        return NoOpTransform()


# -------------------------------------------------------------------------------------- Resize
@functools.lru_cache(maxsize=64)
def _nearest_index(src: int, dst: int) -> np.ndarray:
    """Source index of each of ``dst`` outputs under ``cv2.INTER_NEAREST`` (read off OpenCV)."""
    probe = np.arange(src, dtype=np.float32)[None, :]
    idx = cv2.resize(probe, (dst, 1), interpolation=cv2.INTER_NEAREST)[0]
    out = idx.astype(np.int64)
    out.setflags(write=False)
    return out


class SquareResizeTransform(T.ResizeTransform):
    """Resize (h, w) -> (new_h, new_w) without keeping the aspect ratio, as ``mmcv.imresize``.

    Images: ``cv2.resize`` bilinear (uint8 or float, no anti-aliasing, no clipping of floats).
    Masks and segmentations: nearest, with exactly OpenCV's ``INTER_NEAREST`` sampling.
    Boxes: scaled by (new_w / w, new_h / h) and clipped to [0, new_w] x [0, new_h].
    """

    def __init__(self, h: int, w: int, new_h: int, new_w: int):
        super().__init__(h, w, new_h, new_w)

    def apply_image(self, img: np.ndarray, interp=None) -> np.ndarray:
        if img.shape[:2] != (self.h, self.w):
            raise ValueError(
                f"SquareResizeTransform: expected a {self.h}x{self.w} image, got {img.shape}"
            )
        out = cv2.resize(img, (self.new_w, self.new_h), interpolation=cv2.INTER_LINEAR)
        if img.ndim == 3 and out.ndim == 2:  # cv2 drops a trailing channel of 1
            out = out[:, :, None]
        return out

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return self.apply_masks(segmentation[None])[0]

    def apply_masks(self, masks: np.ndarray) -> np.ndarray:
        """(G, h, w) -> (G, new_h, new_w), nearest (a row gather, then a column gather)."""
        _check_masks(masks, (self.h, self.w), "SquareResizeTransform")
        ys = _nearest_index(self.h, self.new_h)
        xs = _nearest_index(self.w, self.new_w)
        return np.take(np.take(masks, ys, axis=1), xs, axis=2)

    def apply_box(self, box: np.ndarray) -> np.ndarray:
        box = np.asarray(box, dtype=np.float32).reshape(-1, 4).copy()
        box[:, 0::2] = np.clip(box[:, 0::2] * np.float32(self.new_w / self.w), 0, self.new_w)
        box[:, 1::2] = np.clip(box[:, 1::2] * np.float32(self.new_h / self.h), 0, self.new_h)
        return box

    def inverse(self) -> Transform:
        return SquareResizeTransform(self.new_h, self.new_w, self.h, self.w)


class SquareResize(T.Augmentation):
    """Squash any image to ``size`` x ``size``.

    docs/REFERENCE.md §2.2 (training pipeline) step 7, §2.3 (test pipeline) step 2.
    """

    def __init__(self, size: int):
        super().__init__()
        if int(size) <= 0:
            raise ValueError(f"SquareResize: size must be positive, got {size}")
        self.size = int(size)

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = image.shape[:2]
        return SquareResizeTransform(h, w, self.size, self.size)


# ----------------------------------------------------------------------------------- AugInput
class YOLACTAugInput(T.AugInput):
    """``AugInput`` that also carries crowd boxes, an instance-mask stack and per-GT classes.

    A transform with a ``box_keep`` method (the min-IoU crop) first drops the GTs (boxes, masks,
    classes) and crowd boxes whose centre is not strictly inside its patch; then image, boxes,
    crowd boxes and masks are mapped.

    Attributes:
        image (ndarray): (H, W, C) image.
        boxes (ndarray): float32 (N, 4) XYXY GT boxes.
        crowd_boxes (ndarray): float32 (M, 4) XYXY crowd boxes.
        masks (ndarray or None): (N, H, W) uint8 / bool masks of the GTs.
        classes (ndarray or None): (N,) GT classes.
    """

    def __init__(
        self,
        image: np.ndarray,
        *,
        boxes: Optional[np.ndarray] = None,
        crowd_boxes: Optional[np.ndarray] = None,
        masks: Optional[np.ndarray] = None,
        classes: Optional[np.ndarray] = None,
    ):
        boxes = np.zeros((0, 4), np.float32) if boxes is None else np.asarray(boxes, np.float32)
        crowd = (
            np.zeros((0, 4), np.float32)
            if crowd_boxes is None
            else np.asarray(crowd_boxes, np.float32)
        )
        if boxes.ndim != 2 or boxes.shape[1] != 4 or crowd.ndim != 2 or crowd.shape[1] != 4:
            raise ValueError(
                f"YOLACTAugInput: boxes must be (N, 4) and crowd_boxes (M, 4), got "
                f"{boxes.shape} and {crowd.shape}"
            )
        if masks is not None:
            _check_masks(masks, image.shape[:2], "YOLACTAugInput")
            if masks.shape[0] != boxes.shape[0]:
                raise ValueError(
                    f"YOLACTAugInput: {masks.shape[0]} masks for {boxes.shape[0]} boxes"
                )
        if classes is not None and len(classes) != boxes.shape[0]:
            raise ValueError(f"YOLACTAugInput: {len(classes)} classes for {boxes.shape[0]} boxes")
        super().__init__(image, boxes=boxes)
        self.crowd_boxes = crowd
        self.masks = masks
        self.classes = classes

    def transform(self, tfm: Transform) -> None:
        if isinstance(tfm, TransformList):
            for t in tfm.transforms:
                self.transform(t)
            return
        box_keep = getattr(tfm, "box_keep", None)
        if box_keep is not None:
            keep = box_keep(self.boxes)
            self.boxes = self.boxes[keep]
            if self.masks is not None:
                self.masks = self.masks[keep]
            if self.classes is not None:
                self.classes = self.classes[keep]
            self.crowd_boxes = self.crowd_boxes[box_keep(self.crowd_boxes)]
        self.image = tfm.apply_image(self.image)
        self.boxes = np.asarray(tfm.apply_box(self.boxes), np.float32).reshape(-1, 4)
        self.crowd_boxes = np.asarray(tfm.apply_box(self.crowd_boxes), np.float32).reshape(-1, 4)
        if self.masks is not None:
            self.masks = tfm.apply_masks(self.masks)


# ------------------------------------------------------------------------------------- builders
def build_yolact_train_augmentation(cfg) -> List[T.Augmentation]:
    """YOLACT's training augmentations, without normalisation.

    docs/REFERENCE.md §2.2 (training pipeline), steps 4-9.

    Photometric distortion (``INPUT.YOLACT.PHOTOMETRIC``), Expand (``EXPAND_PROB``, filled with
    ``MODEL.PIXEL_MEAN``), min-IoU crop (``MIN_IOU_CROP``), resize to ``SIZE`` x ``SIZE``, and a
    horizontal flip (``FLIP_PROB``). FilterAnnotations runs in the mapper, before these.

    Returns:
        list[Augmentation]: to wrap in ``T.AugmentationList`` and apply to a
        :class:`YOLACTAugInput` holding a float32 image.
    """
    y = cfg.INPUT.YOLACT
    if cfg.INPUT.FORMAT not in _HSV_CODES:
        raise ValueError(
            f"YOLACT augmentations need INPUT.FORMAT 'RGB' or 'BGR', got {cfg.INPUT.FORMAT!r}"
        )
    augs: List[T.Augmentation] = []
    if y.PHOTOMETRIC:
        augs.append(
            PhotometricDistortion(
                y.BRIGHTNESS_DELTA,
                tuple(y.CONTRAST_RANGE),
                tuple(y.SATURATION_RANGE),
                y.HUE_DELTA,
                cfg.INPUT.FORMAT,
            )
        )
    if y.EXPAND_PROB > 0:
        augs.append(Expand(y.EXPAND_PROB, tuple(y.EXPAND_RATIO), tuple(cfg.MODEL.PIXEL_MEAN)))
    if y.MIN_IOU_CROP:
        augs.append(MinIoURandomCrop(tuple(y.MIN_IOUS), y.MIN_CROP_SIZE))
    augs.append(SquareResize(y.SIZE))
    if y.FLIP_PROB > 0:
        augs.append(T.RandomFlip(prob=y.FLIP_PROB, horizontal=True, vertical=False))
    return augs


def build_yolact_test_augmentation(cfg) -> List[T.Augmentation]:
    """YOLACT's test augmentation: a bilinear resize to ``INPUT.YOLACT.SIZE`` squared.

    docs/REFERENCE.md §2.3 (test pipeline).
    """
    return [SquareResize(cfg.INPUT.YOLACT.SIZE)]
