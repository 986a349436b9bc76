"""Loading and saving weights: the ``YOLACTCheckpointer`` (a ``DetectionCheckpointer``) and the
conversions it applies on load.

* :mod:`~mayolact.checkpoint.weights_file`: reading any weights file without running code from
  it, with its integrity checked (the one reader of every path);
* :mod:`~mayolact.checkpoint.checkpointer`: Detectron2 checkpoints, atomic saves, format detection;
* :mod:`~mayolact.checkpoint.torchvision`: torchvision's ImageNet ResNets (the paper's
  initialisation) and the ``torchvision://`` paths of ``MODEL.WEIGHTS`` (registered with
  Detectron2's ``PathManager`` on import);
* :mod:`~mayolact.checkpoint.mmdet`: mmdetection YOLACT / maYOLACT checkpoints.
"""
from .checkpointer import (
    CheckpointError,
    YOLACTCheckpointer,
    find_checkpoints,
    save_converted_checkpoint,
)
from .torchvision import TORCHVISION_PREFIX, convert_torchvision_resnet, resolve_torchvision_path
from .weights_file import TRUST_PICKLE_ENV, load_weights_file

__all__ = [
    "CheckpointError",
    "TORCHVISION_PREFIX",
    "TRUST_PICKLE_ENV",
    "YOLACTCheckpointer",
    "convert_torchvision_resnet",
    "find_checkpoints",
    "load_weights_file",
    "resolve_torchvision_path",
    "save_converted_checkpoint",
]
