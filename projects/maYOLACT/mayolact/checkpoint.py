"""Checkpoints of maYOLACT: reading foreign weights and writing runs that survive faults.

:class:`YOLACTCheckpointer` is Detectron2's ``DetectionCheckpointer`` with two concerns added, each in
its own methods:

* loading: recognises the format of ``MODEL.WEIGHTS`` (a Detectron2 checkpoint, a torchvision
  ImageNet ResNet, an mmdetection YOLACT checkpoint) and converts its names on load, refusing
  silent partial loads;
* saving: writes checkpoints atomically and resumes from the newest readable one.
"""
import logging

from detectron2.checkpoint import DetectionCheckpointer

__all__ = ["YOLACTCheckpointer"]

logger = logging.getLogger(__name__)


class YOLACTCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` for YOLACT / maYOLACT models (see the module docstring)."""
