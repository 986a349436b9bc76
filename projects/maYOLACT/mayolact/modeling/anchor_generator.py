"""YOLACT's anchor geometry for the fixed-IoU baseline (docs/REFERENCE.md §5.2).

YOLACT keeps the geometry of a 550 x 550 input at every scale: float strides
``550 / [69, 35, 18, 9, 5]`` = 7.971, 15.714, 30.556, 61.111, 110.0, anchor centres at the
middle of each cell (``OFFSET = 0.5``), sides 24..384 and aspect ratios (0.5, 1, 2), area
preserving with h / w = ratio. The number of anchors per level follows the real feature sizes, so a
400 input gets 10,077 anchors, 550 gets 19,248 and 700 gets 30,963.

The ATSS variants use Detectron2's own ``DefaultAnchorGenerator`` (integer strides 8..128,
``OFFSET = 0``), selected with ``MODEL.ANCHOR_GENERATOR.NAME: "DefaultAnchorGenerator"``.
"""
import re
from typing import List, Optional, Sequence

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.anchor_generator import (
    ANCHOR_GENERATOR_REGISTRY,
    DefaultAnchorGenerator,
    build_anchor_generator,
)
from detectron2.structures import Boxes

__all__ = ["YOLACTAnchorGenerator", "feature_sizes", "feature_level", "anchors_for_input"]


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


def feature_sizes(size: int, levels: Sequence[int] = (3, 4, 5, 6, 7)) -> List[int]:
    """Side of each level's feature map for an S x S input (the one formula of the repository).

    Every stride-2 layer of the backbone (conv1 7/2/3, the max pool 3/2/1, the 3x3/2/1 convs of
    res3-res5 and of P6/P7) maps a side n to ``(n - 1) // 2 + 1``, so level l (stride ``2**l``)
    has that map applied l times: 550 gives 69, 35, 18, 9, 5 for levels 3-7 (the default
    ``MODEL.YOLACT.ANCHOR_REFERENCE_GRID``), 400 gives 50, 25, 13, 7, 4.

    Args:
        size: S.
        levels: pyramid levels l (``'p3'`` is level 3).

    Returns:
        list[int]: one side per level.
    """
    out = []
    for level in levels:
        n = int(size)
        for _ in range(int(level)):
            n = (n - 1) // 2 + 1
        out.append(n)
    return out


def feature_level(name: str) -> int:
    """The level l (stride ``2**l``) of a feature named like ``'p3'``.

    Raises:
        ValueError: naming the feature when its name does not end in its level.
    """
    m = re.search(r"(\d+)$", name)
    if m is None:
        raise ValueError(f"cannot tell the level (stride 2**l) of feature '{name}'; expected a "
                         "name ending in its level, e.g. 'p3'")
    return int(m.group(1))


def anchors_for_input(cfg, size: Optional[int] = None) -> List[Boxes]:
    """The anchors a config gives an S x S input, per level, without building the model.

    The config's anchor generator (``build_anchor_generator``) runs on empty feature maps of
    :func:`feature_sizes` for the levels ``MODEL.YOLACT.IN_FEATURES``, exactly as the model's
    forward runs it on the backbone's maps.

    Args:
        cfg: a config with ``add_mayolact_config`` applied.
        size: S; default ``cfg.INPUT.YOLACT.SIZE``.

    Returns:
        list[Boxes]: one (H_l * W_l * A, 4) Boxes per level, in the head's order.
    """
    size = int(size or cfg.INPUT.YOLACT.SIZE)
    levels = [feature_level(f) for f in cfg.MODEL.YOLACT.IN_FEATURES]
    shapes = [ShapeSpec(channels=1, stride=2 ** lv) for lv in levels]
    generator = build_anchor_generator(cfg, shapes)
    feats = [torch.zeros((1, 0, n, n)) for n in feature_sizes(size, levels)]
    return generator(feats)
