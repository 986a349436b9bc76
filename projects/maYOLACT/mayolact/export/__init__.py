"""Deployment: TorchScript / ONNX export of the whole model, int8 quantization, and the inference
rewrites (in :mod:`mayolact.modeling.optimize`: the predictor applies them by default)."""
from mayolact.modeling.optimize import fold_batch_norms, optimize_for_inference

from .exporter import EXPORT_FORMATS, ExportedYOLACTPredictor, export_model, load_exported

__all__ = [
    "EXPORT_FORMATS",
    "ExportedYOLACTPredictor",
    "export_model",
    "fold_batch_norms",
    "load_exported",
    "optimize_for_inference",
]
