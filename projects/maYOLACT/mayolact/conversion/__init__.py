"""Foreign weights in maYOLACT's parameter names.

* :mod:`mayolact.conversion.torchvision`: torchvision's ImageNet ResNets (the paper's
  initialisation) and the ``torchvision://`` paths of ``MODEL.WEIGHTS``;
* :mod:`mayolact.conversion.mmdet` (when present): mmdetection YOLACT / maYOLACT checkpoints,
  ``convert_mmdet_checkpoint(state_dict, model) -> dict``.

:class:`mayolact.checkpoint.YOLACTCheckpointer` recognises these formats and converts them on load;
``tools/convert_weights.py`` writes the converted files with :func:`save_converted_checkpoint`.
"""
import os
import tempfile
from typing import Dict

import torch

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
    "save_converted_checkpoint",
]


def save_converted_checkpoint(model: Dict[str, torch.Tensor], path: str, author: str) -> None:
    """Write ``{"model": model, "__author__": author}`` (a Detectron2 checkpoint) to ``path``.

    The file is written next to ``path`` under a temporary name and renamed over it, so an
    interrupted conversion never leaves a truncated checkpoint behind.

    Args:
        model (dict[str, Tensor]): state dict in maYOLACT's parameter names.
        path (str): destination file; its folder is created if needed.
        author (str): the source format ("torchvision", "mmdetection"): the checkpointer reads it
            back to apply that format's rules (e.g. a torchvision backbone leaves the heads fresh).
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"model": model, "__author__": author}, f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
