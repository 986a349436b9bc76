"""Training and inference around the model: the ``Trainer`` (a ``DefaultTrainer``), its fault-
tolerance hooks, the up-front checks, the ``YOLACTPredictor`` and the drawing ``Demo``."""
from .checks import PreflightError, preflight
from .predictor import YOLACTPredictor
from .trainer import (
    Trainer,
    build_yolact_lr_scheduler,
    build_yolact_optimizer,
    resolve_lr_steps,
)

__all__ = [
    "PreflightError",
    "Trainer",
    "YOLACTPredictor",
    "build_yolact_lr_scheduler",
    "build_yolact_optimizer",
    "preflight",
    "resolve_lr_steps",
]
