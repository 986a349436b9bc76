"""YOLACT's prototype network and its training-only semantic segmentation head.

The official modules: docs/REFERENCE.md §8 (protonet), §7.4 (semantic loss).

Shape shorthand:
    N: images in the batch.
    C: channels of the input level (P3, 256).
    H3, W3: size of P3.
    k: prototypes (32).
    K: foreground classes.
"""
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from torch import Tensor, nn
from torch.nn import functional as F

from mayolact.modeling.weight_init import xavier_init_convs

__all__ = ["ProtoNet", "SemanticSegHead"]


class ProtoNet(nn.Module):
    """Prototype masks from P3 at twice its resolution (stride 4 for a stride-8 P3).

    conv3x3+ReLU x3 -> bilinear x2 (align_corners False) + ReLU -> conv3x3+ReLU -> conv1x1 to k
    + ReLU, so the prototypes are non-negative. Xavier-uniform init, zero bias
    (docs/REFERENCE.md §8, "Protonet and mask assembly").
    """

    @configurable
    def __init__(self, *, in_channels: int, hidden_channels: int = 256, num_prototypes: int = 32):
        """
        Args:
            in_channels (int): C, channels of the input level.
            hidden_channels (int): channels of the hidden convs.
            num_prototypes (int): k, output channels.
        """
        super().__init__()
        if min(in_channels, hidden_channels, num_prototypes) < 1:
            raise ValueError(
                "ProtoNet: channels must be positive, got "
                f"in={in_channels}, hidden={hidden_channels}, prototypes={num_prototypes}"
            )
        self.num_prototypes = num_prototypes
        c = hidden_channels
        self.convs = nn.Sequential(
            nn.Conv2d(in_channels, c, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, padding=1), nn.ReLU(inplace=True),
        )
        self.post_upsample = nn.Sequential(
            nn.Conv2d(c, c, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c, num_prototypes, 1), nn.ReLU(inplace=True),
        )
        xavier_init_convs(self)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        return {
            "in_channels": input_shape.channels,
            "hidden_channels": cfg.MODEL.YOLACT.PROTO_CHANNELS,
            "num_prototypes": cfg.MODEL.YOLACT.NUM_PROTOTYPES,
        }

    def forward(self, x: Tensor) -> Tensor:
        """
        Args:
            x (Tensor): (N, C, H3, W3), the P3 features.

        Returns:
            Tensor: (N, k, 2*H3, 2*W3), non-negative prototypes.
        """
        x = self.convs(x)
        x = F.relu(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
        return self.post_upsample(x)


class SemanticSegHead(nn.Module):
    """A 1x1 conv from P3 to K class logits; training only. Channel c is class c.

    The official head: docs/REFERENCE.md §7.4 (semantic segmentation).
    """

    @configurable
    def __init__(self, *, in_channels: int, num_classes: int):
        """
        Args:
            in_channels (int): C, channels of the input level.
            num_classes (int): K, foreground classes.
        """
        super().__init__()
        if in_channels < 1 or num_classes < 1:
            raise ValueError(
                "SemanticSegHead: need positive channels and classes, got "
                f"{in_channels}, {num_classes}"
            )
        self.num_classes = num_classes
        self.conv = nn.Conv2d(in_channels, num_classes, 1)
        xavier_init_convs(self)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        return {"in_channels": input_shape.channels, "num_classes": cfg.MODEL.YOLACT.NUM_CLASSES}

    def forward(self, x: Tensor) -> Tensor:
        """
        Args:
            x (Tensor): (N, C, H3, W3).

        Returns:
            Tensor: (N, K, H3, W3) logits.
        """
        return self.conv(x)
