"""The paper's measures and the structures behind them.

* :mod:`~mayolact.structures.integral_image`: compact per-instance integral images (Alg. 1);
* :mod:`~mayolact.structures.maiou`: mask-aware IoU, exact through those integral images, and the
  mask-over-box (MOB) ratio;
* :mod:`~mayolact.structures.box_ops`: IoU, GIoU and DIoU, pairwise and paired.
"""
from .box_ops import (
    batched_box_iou,
    box_area,
    paired_diou,
    paired_giou,
    paired_iou,
    pairwise_diou,
    pairwise_giou,
)
from .integral_image import IntegralImages, as_integral_images, integral_images
from .maiou import (
    mask_fraction_in_boxes,
    mask_over_box,
    paired_maiou,
    pairwise_maiou,
    pairwise_maiou_bruteforce,
)

__all__ = [
    "IntegralImages",
    "as_integral_images",
    "integral_images",
    "batched_box_iou",
    "box_area",
    "paired_diou",
    "paired_giou",
    "paired_iou",
    "pairwise_diou",
    "pairwise_giou",
    "mask_fraction_in_boxes",
    "mask_over_box",
    "paired_maiou",
    "pairwise_maiou",
    "pairwise_maiou_bruteforce",
]
