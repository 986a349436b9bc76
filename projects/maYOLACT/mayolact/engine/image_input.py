"""The image contract of the predictors and the demo: what they take, what they refuse, and how
large an image they work on.

The predictors (:class:`mayolact.engine.predictor.YOLACTPredictor` and its exported twin) take
what ``cv2.imread`` gives, as Detectron2's ``DefaultPredictor`` does: a uint8 (H, W, 3) array in
BGR order (the demo's ``Demo.draw`` takes the config's ``INPUT.FORMAT``). Anything else is a
``ValueError`` that names its type, dtype and shape and says how to convert it, never a silent
misreading: a float image in [0, 1] would be read as nearly black, a uint16 one as 256 times too
bright, a bool one as two grey levels.

Memory: the outputs are at the image's own size (``pred_masks`` (N, H, W), computed from float
masks of that size), so a 10000 x 10000 photograph would cost gigabytes per detection. An image
of more than ``TEST.YOLACT.MAX_IMAGE_PIXELS`` pixels is therefore shrunk first (OpenCV's area
interpolation, aspect ratio kept) to at most that many pixels, and the outputs are at the shrunk
size (their ``image_size`` says which); :func:`fit_image` does it.
"""
import logging
import math
from typing import Tuple

import cv2
import numpy as np

__all__ = ["DEFAULT_MAX_IMAGE_PIXELS", "check_image", "fit_image"]

logger = logging.getLogger(__name__)

#: ``TEST.YOLACT.MAX_IMAGE_PIXELS`` of configs written before the key existed (exported models).
DEFAULT_MAX_IMAGE_PIXELS = 2048 * 2048

_HINTS = {
    "f": "a float image: convert it with (np.clip(image, 0, 1) * 255).round().astype(np.uint8) "
         "if its values are in [0, 1], or np.clip(image, 0, 255).astype(np.uint8) if in [0, 255]",
    "u": "an unsigned integer image of more than 8 bits: scale it to 8 bits, e.g. "
         "(image >> 8).astype(np.uint8) for 16-bit data",
    "i": "a signed integer image: np.clip(image, 0, 255).astype(np.uint8)",
    "b": "a boolean mask, not an image: image.astype(np.uint8) * 255, then to 3 channels",
}


def check_image(image, what: str = "image") -> np.ndarray:
    """The contract of a predictor's input: a uint8 (H, W, 3) numpy array, H and W >= 1.

    Args:
        image: what was passed.
        what: its name in the message (e.g. ``"image 3 of the batch"``).

    Returns:
        ndarray: ``image`` itself.

    Raises:
        ValueError: naming the type, dtype and shape found and how to convert it.
    """
    if image is None:
        raise ValueError(
            f"YOLACTPredictor: {what} is None (cv2.imread returns None for a file it cannot read:"
            " check the path)")
    if not isinstance(image, np.ndarray):
        raise ValueError(
            f"YOLACTPredictor: {what} must be a numpy uint8 (H, W, 3) array, got "
            f"{type(image).__name__}" + (" (convert a tensor with .cpu().numpy(), a PIL image "
                                         "with np.asarray, both then to BGR)"
                                         if hasattr(image, "shape") or hasattr(image, "size")
                                         else ""))
    shape = tuple(image.shape)
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 4)):
        hint = ("a grayscale image: cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)" if image.ndim == 2
                or image.shape[2] == 1 else "a 4-channel image: cv2.cvtColor(image, "
                "cv2.COLOR_BGRA2BGR)")
        raise ValueError(f"YOLACTPredictor: {what} has shape {shape} (dtype {image.dtype}); an "
                         f"(H, W, 3) image is expected. For {hint}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"YOLACTPredictor: {what} has shape {shape} (dtype {image.dtype}); an "
                         "(H, W, 3) uint8 BGR image is expected")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"YOLACTPredictor: {what} is empty (shape {shape})")
    if image.dtype != np.uint8:
        hint = _HINTS.get(image.dtype.kind, "convert it to uint8 in [0, 255]")
        raise ValueError(f"YOLACTPredictor: {what} has dtype {image.dtype} (shape {shape}); uint8 "
                         f"in [0, 255] is expected. For {hint}")
    return image


def fit_image(image: np.ndarray, max_pixels: int) -> Tuple[np.ndarray, float]:
    """Shrink an image of more than ``max_pixels`` pixels to at most that many, aspect kept.

    Args:
        image: (H, W, C) array.
        max_pixels: the bound (``TEST.YOLACT.MAX_IMAGE_PIXELS``); 0 disables it.

    Returns:
        tuple: the image (itself when within the bound) and the scale applied (1.0 or less).
    """
    h, w = image.shape[:2]
    if max_pixels <= 0 or h * w <= max_pixels:
        return image, 1.0
    scale = math.sqrt(max_pixels / (h * w))
    new_w, new_h = max(1, int(w * scale)), max(1, int(h * scale))
    logger.warning(
        "An image of %dx%d (%.1f Mpx) is shrunk to %dx%d before prediction "
        "(TEST.YOLACT.MAX_IMAGE_PIXELS = %d); its outputs are at that size", w, h, h * w / 1e6,
        new_w, new_h, max_pixels)
    return cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA), new_w / w
