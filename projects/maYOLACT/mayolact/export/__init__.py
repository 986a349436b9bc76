"""Deployment: TorchScript / ONNX export of the whole model and the inference rewrites."""
from .exporter import EXPORT_FORMATS, ExportedYOLACTPredictor, export_model, load_exported
from .optimize import fold_batch_norms, optimize_for_inference

__all__ = [
    "EXPORT_FORMATS",
    "ExportedYOLACTPredictor",
    "export_model",
    "fold_batch_norms",
    "load_exported",
    "optimize_for_inference",
]
