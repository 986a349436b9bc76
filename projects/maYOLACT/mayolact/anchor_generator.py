"""YOLACT's anchor geometry for the fixed-IoU baseline (SPEC 5.2).

YOLACT keeps the geometry of a 550 x 550 input at every scale: float strides
``550 / [69, 35, 18, 9, 5]`` = 7.971, 15.714, 30.556, 61.111, 110.0, anchor centres at the
middle of each cell (``OFFSET = 0.5``), sides 24..384 and aspect ratios (0.5, 1, 2), area
preserving with h / w = ratio. The number of anchors per level follows the real feature sizes, so a
400 input gets 10,077 anchors, 550 gets 19,248 and 700 gets 30,963.

The ATSS variants use Detectron2's own ``DefaultAnchorGenerator`` (integer strides 8..128,
``OFFSET = 0``), selected with ``MODEL.ANCHOR_GENERATOR.NAME: "DefaultAnchorGenerator"``.
"""
import logging
from typing import List

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.anchor_generator import ANCHOR_GENERATOR_REGISTRY, DefaultAnchorGenerator

__all__ = ["YOLACTAnchorGenerator"]

logger = logging.getLogger(__name__)


@ANCHOR_GENERATOR_REGISTRY.register()
class YOLACTAnchorGenerator(DefaultAnchorGenerator):
    """``DefaultAnchorGenerator`` with float strides and exactly ``H_l * W_l`` cells per level.

    Detectron2's grid is ``arange(offset * stride, W * stride, stride)``, which can yield one cell
    too many or too few with a non-integer stride; here cell (i, j) of level l is centred at
    ``((j + offset) * stride_l, (i + offset) * stride_l)`` for i < H_l, j < W_l. Anchors are
    ordered ``(y * W_l + x) * A + a`` per level (Detectron2's and the head's order), with
    ``a = size_index * len(ratios) + ratio_index``.
    """

    @configurable
    def __init__(self, *, sizes, aspect_ratios, strides, offset: float = 0.5):
        """
        Args:
            sizes (list[list[float]] or list[float]): anchor sides (sqrt of the area) per level.
            aspect_ratios (list[list[float]] or list[float]): h / w ratios per level.
            strides (list[float]): float stride of each level.
            offset (float): cell-relative centre of the first anchor, in [0, 1).
        """
        strides = [float(s) for s in strides]
        if any(not (s > 0) for s in strides):
            raise ValueError(f"YOLACTAnchorGenerator: strides must be positive, got {strides}")
        if not 0.0 <= float(offset) < 1.0:
            raise ValueError(f"YOLACTAnchorGenerator: offset must be in [0, 1), got {offset}")
        super().__init__(sizes=sizes, aspect_ratios=aspect_ratios, strides=strides,
                         offset=float(offset))

    @classmethod
    def from_config(cls, cfg, input_shape: List[ShapeSpec]):
        ref = float(cfg.MODEL.YOLACT.ANCHOR_REFERENCE_SIZE)
        grid = list(cfg.MODEL.YOLACT.ANCHOR_REFERENCE_GRID)
        if len(grid) != len(input_shape):
            raise ValueError(
                f"MODEL.YOLACT.ANCHOR_REFERENCE_GRID has {len(grid)} entries but the anchor "
                f"generator gets {len(input_shape)} feature maps")
        return {
            "sizes": cfg.MODEL.ANCHOR_GENERATOR.SIZES,
            "aspect_ratios": cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS,
            "strides": [ref / g for g in grid],
            "offset": cfg.MODEL.ANCHOR_GENERATOR.OFFSET,
        }

    def _grid_anchors(self, grid_sizes: List[List[int]]) -> List[torch.Tensor]:
        """Anchors of every level: list of ((H_l * W_l * A), 4) tensors."""
        anchors = []
        buffers = [b for _, b in self.cell_anchors.named_buffers()]
        for (h, w), stride, base in zip(grid_sizes, self.strides, buffers):
            h, w = int(h), int(w)
            ys = (torch.arange(h, device=base.device, dtype=base.dtype) + self.offset) * stride
            xs = (torch.arange(w, device=base.device, dtype=base.dtype) + self.offset) * stride
            shift_y, shift_x = torch.meshgrid(ys, xs, indexing="ij")
            shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
            shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
            anchors.append((shifts[:, None, :] + base[None, :, :]).reshape(-1, 4))
        return anchors
