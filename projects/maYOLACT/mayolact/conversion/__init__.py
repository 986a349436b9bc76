"""Foreign weights in maYOLACT's parameter names.

* :mod:`mayolact.conversion.torchvision`: torchvision's ImageNet ResNets (the paper's
  initialisation) and the ``torchvision://`` paths of ``MODEL.WEIGHTS``;
* :mod:`mayolact.conversion.mmdet` (when present): mmdetection YOLACT / maYOLACT checkpoints,
  ``convert_mmdet_checkpoint(state_dict, model) -> dict``.

:class:`mayolact.checkpoint.YOLACTCheckpointer` recognises these formats and converts them on load;
``tools/convert_weights.py`` writes the converted files
(:func:`mayolact.checkpoint.save_converted_checkpoint`).
"""
from .torchvision import (
    BOTTOM_UP_PREFIX,
    TORCHVISION_PREFIX,
    TORCHVISION_RESNETS,
    convert_torchvision_resnet,
    is_torchvision_resnet,
    resolve_torchvision_path,
    torchvision_cache_path,
    torchvision_weights,
)

__all__ = [
    "BOTTOM_UP_PREFIX",
    "TORCHVISION_PREFIX",
    "TORCHVISION_RESNETS",
    "convert_torchvision_resnet",
    "is_torchvision_resnet",
    "resolve_torchvision_path",
    "torchvision_cache_path",
    "torchvision_weights",
]

