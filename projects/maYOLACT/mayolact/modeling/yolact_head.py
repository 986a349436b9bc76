"""YOLACT's shared box head: class logits, box deltas and prototype coefficients.

The official head: docs/REFERENCE.md §5.1 (head).

Shape shorthand:
    N: images in the batch.
    L: feature levels the head runs on (P3..P7).
    Hi, Wi: height and width of level i.
    A: anchors per location (3 fixed IoU, 1 ATSS, 2 maYOLACT).
    K: foreground classes; the softmax classifier has K + 1 outputs, background LAST.
    k: prototypes (coefficients per anchor).
"""
from typing import List, Tuple

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.anchor_generator import build_anchor_generator
from torch import Tensor, nn

from mayolact.modeling.weight_init import xavier_init_convs

__all__ = ["YOLACTHead"]


class YOLACTHead(nn.Module):
    """The head shared by all levels: ``num_convs`` 3x3 conv+ReLU, then three 3x3 predictors.

    ``cls``: A*(K+1) logits (softmax over K+1, background last); ``box``: A*4 deltas;
    ``coeff``: A*k prototype coefficients through ``tanh``. All convs are xavier-uniform with zero
    bias; there is no prior-probability bias (docs/REFERENCE.md §5.1, §11).
    """

    @configurable
    def __init__(
        self,
        *,
        input_shape: List[ShapeSpec],
        num_classes: int,
        num_anchors: int,
        num_prototypes: int,
        num_convs: int = 1,
    ):
        """
        Args:
            input_shape (list[ShapeSpec]): shapes of the input levels; all must have the same
                number of channels (the FPN's 256).
            num_classes (int): K, foreground classes.
            num_anchors (int): A, anchors per location (same on every level).
            num_prototypes (int): k, coefficients per anchor.
            num_convs (int): shared 3x3 conv+ReLU layers before the predictors (>= 0).
        """
        super().__init__()
        channels = {s.channels for s in input_shape}
        if len(channels) != 1:
            raise ValueError(f"YOLACTHead: all input levels need the same channels, got {channels}")
        if num_classes < 1 or num_anchors < 1 or num_prototypes < 1 or num_convs < 0:
            raise ValueError(
                "YOLACTHead: need num_classes, num_anchors, num_prototypes >= 1 and "
                "num_convs >= 0, "
                f"got {num_classes}, {num_anchors}, {num_prototypes}, {num_convs}"
            )
        in_channels = channels.pop()
        self.num_classes = num_classes
        self.num_anchors = num_anchors
        self.num_prototypes = num_prototypes

        tower = []
        for _ in range(num_convs):
            tower += [nn.Conv2d(in_channels, in_channels, 3, padding=1), nn.ReLU(inplace=True)]
        self.tower = nn.Sequential(*tower)
        self.cls_score = nn.Conv2d(in_channels, num_anchors * (num_classes + 1), 3, padding=1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, 3, padding=1)
        self.coeff_pred = nn.Conv2d(in_channels, num_anchors * num_prototypes, 3, padding=1)
        xavier_init_convs(self)

    @classmethod
    def from_config(cls, cfg, input_shape: List[ShapeSpec]):
        num_anchors = build_anchor_generator(cfg, input_shape).num_cell_anchors
        if len(set(num_anchors)) != 1:
            raise ValueError(
                f"YOLACTHead: every level needs the same number of anchors, got {num_anchors}"
            )
        return {
            "input_shape": input_shape,
            "num_classes": cfg.MODEL.YOLACT.NUM_CLASSES,
            "num_anchors": num_anchors[0],
            "num_prototypes": cfg.MODEL.YOLACT.NUM_PROTOTYPES,
            "num_convs": cfg.MODEL.YOLACT.HEAD_NUM_CONVS,
        }

    def forward(self, features: List[Tensor]) -> Tuple[List[Tensor], List[Tensor], List[Tensor]]:
        """
        Args:
            features (list[Tensor]): L maps, each (N, C, Hi, Wi).

        Returns:
            logits (list[Tensor]): L tensors (N, A*(K+1), Hi, Wi).
            deltas (list[Tensor]): L tensors (N, A*4, Hi, Wi).
            coeffs (list[Tensor]): L tensors (N, A*k, Hi, Wi), in [-1, 1].
        """
        logits, deltas, coeffs = [], [], []
        for x in features:
            x = self.tower(x)
            logits.append(self.cls_score(x))
            deltas.append(self.bbox_pred(x))
            coeffs.append(torch.tanh(self.coeff_pred(x)))
        return logits, deltas, coeffs
