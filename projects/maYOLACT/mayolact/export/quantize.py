"""int8 deployment: onnxruntime static quantization of an exported model, and the accuracy of any
exported model on a dataset.

:func:`quantize_int8` turns a float32 ``model.onnx`` of :mod:`mayolact.export.exporter` into an
int8 one with ``onnxruntime.quantization.quantize_static``:

* **Calibration** on N images of the config's test set, fed to the float32 graph exactly as the
  deployed model receives them (:class:`ExportedYOLACTPredictor
  <mayolact.export.exporter.ExportedYOLACTPredictor>`'s pre-processing); MinMax ranges.
* **What is quantized**: every dense convolution (``Conv``: backbone, offset branches, FPN,
  CARAFE's compressor and encoder, head, protonet), QDQ format, int8 weights per output channel,
  uint8 activations. onnxruntime fuses each ``DequantizeLinear -> Conv -> QuantizeLinear`` into an
  integer convolution. ``reduce_range`` (7-bit weights) is on: without VNNI (AVX2 CPUs such as
  the development machine) the uint8 x int8 products are summed in saturating int16 pairs, which
  8-bit weights can overflow. Leaving the head's last convolutions (class scores, box deltas,
  mask coefficients) in float32 (``float_nodes``) gained no accuracy on the shapes demo model.
* **What stays float32**: the deformable convolutions (ONNX ``DeformConv`` has no integer form),
  CARAFE's reassembly (an ``Einsum`` of gathered neighbours), the mask tail (prototypes x
  coefficients, sigmoid, crop, resize) and the rest of the post-processing.

The written file keeps the export description (``metadata_props``), with a ``quantization`` entry
added, so :class:`ExportedYOLACTPredictor` and ``tools/demo.py --exported`` run it unchanged.

:func:`evaluate` and :func:`evaluate_exported` run a model, eager or exported (float32 or int8),
over the config's test sets with the project's evaluators (COCO AP of boxes and masks, oLRP),
through the same test loader as ``tools/train_net.py --eval-only``.
"""
import json
import logging
import os
import re
import tempfile
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

from mayolact.utils.file_io import atomic_open

from .exporter import INPUT_NAMES, METADATA_KEY, ExportedYOLACTPredictor, sample_inputs

__all__ = ["QUANTIZE_MODES", "quantize_int8", "evaluate", "evaluate_exported"]

logger = logging.getLogger(__name__)

QUANTIZE_MODES = ("int8",)
"""Values of ``tools/export_model.py --quantize``."""

def _feeds(predictor: ExportedYOLACTPredictor, images: Iterable[np.ndarray]):
    """The graph inputs of each BGR image, as the deployed model receives them."""
    for image in images:
        x = predictor.preprocess(image)
        flat = sample_inputs(x["image"], x["height"], x["width"])[0]
        yield {name: flat[name].numpy() for name in INPUT_NAMES}


def _float_nodes(model, patterns: Sequence[str]) -> List[str]:
    return [n.name for n in model.graph.node
            if n.op_type == "Conv" and any(re.search(p, n.name) for p in patterns)]


def quantize_int8(src: str, dst: str, images: Sequence[np.ndarray],
                  float_nodes: Sequence[str] = ()) -> str:
    """Write an int8 (QDQ, static) copy of the float32 ONNX model ``src`` to ``dst``.

    Args:
        src (str): a ``.onnx`` written by :func:`mayolact.export.exporter.export_model`.
        dst (str): the int8 model's path (written atomically).
        images (list[ndarray]): calibration images, (H, W, 3) uint8 BGR; at least one.
        float_nodes (list[str]): regular expressions of ``Conv`` node names (as the exporter
            traces them, e.g. ``/model/head/cls_score/Conv``) to leave in float32.

    Returns:
        str: ``dst``.

    Raises:
        ValueError: no calibration image, or ``src`` is not an exported model.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not len(images):
        raise ValueError("quantize_int8: no calibration images")
    predictor = ExportedYOLACTPredictor(src)  # checks the file and reads its description

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = _feeds(predictor, images)

        def get_next(self) -> Optional[Dict[str, np.ndarray]]:
            return next(self.feeds, None)

    model = onnx.load(src)
    excluded = _float_nodes(model, float_nodes)
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(dst))) as tmp:
        # onnxruntime's recommended pre-processing: graph optimisation and shapes for the
        # quantizer (symbolic shape inference cannot follow the data-dependent post-processing).
        pre = os.path.join(tmp, "pre.onnx")
        quant_pre_process(src, pre, skip_symbolic_shape=True)
        out = os.path.join(tmp, "int8.onnx")
        quantize_static(
            pre, out, Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"],
            per_channel=True, reduce_range=True, activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8, nodes_to_exclude=excluded,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"CalibTensorRangeSymmetric": False},
        )
        quantized = onnx.load(out)
    entry = next(p for p in quantized.metadata_props if p.key == METADATA_KEY)
    description = json.loads(entry.value)
    description["quantization"] = {
        "mode": "int8", "format": "QDQ", "calibration_images": len(images),
        "weights": "int8 per channel, 7-bit range", "activations": "uint8",
        "float_nodes": excluded,
    }
    entry.value = json.dumps(description)
    with atomic_open(dst, "wb") as f:
        f.write(quantized.SerializeToString())
    logger.info("int8 model %s: %d Conv nodes quantized, %d left in float32, %d calibration "
                "images", dst, sum(n.op_type == "Conv" for n in model.graph.node) - len(excluded),
                len(excluded), len(images))
    return dst


def evaluate(cfg, model, output_dir: str) -> Dict:
    """COCO AP (boxes, masks) and oLRP of ``model`` on ``cfg.DATASETS.TEST``.

    The test loader and evaluators of ``tools/train_net.py --eval-only``
    (:class:`mayolact.engine.Trainer`).

    Args:
        cfg (CfgNode): the config whose test sets to evaluate on.
        model: an eager model, or any callable with its interface (list of the test loader's
            dicts -> list of ``{"instances": Instances}``), e.g.
            :meth:`ExportedYOLACTPredictor.run_inputs`.
        output_dir (str): where the evaluators write (their ``inference/<dataset>`` folders).

    Returns:
        dict: Detectron2's results, ``{"bbox": {...}, "segm": {...}}`` for one test set, else per
        test set.
    """
    from mayolact.engine import Trainer

    cfg = cfg.clone()
    cfg.defrost()
    cfg.OUTPUT_DIR = output_dir
    cfg.freeze()
    return Trainer.test(cfg, model)


def evaluate_exported(cfg, path: str, output_dir: str) -> Dict:
    """:func:`evaluate` of an exported model (``.onnx``, float32 or int8, or ``.ts``): the graph
    replaces the model behind the same test loader."""
    return evaluate(cfg, ExportedYOLACTPredictor(path).run_inputs, output_dir)
