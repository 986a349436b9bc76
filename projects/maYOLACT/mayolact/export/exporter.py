"""Export YOLACT / maYOLACT for deployment: TorchScript (tracing) and ONNX, network AND
post-processing.

Follows Detectron2's deployment conventions (``tools/deploy/export_model.py``): the model is wrapped
in :class:`detectron2.export.TracingAdapter`, which flattens its rich inputs and outputs into
tuples of tensors, and traced on one sample input. The exported graph covers everything from the
resized uint8 image to the final full-resolution instances: normalisation, backbone, FPN, head,
protonet, per-level top-k, box decoding, Fast NMS, mask assembly (crop, sigmoid), box scaling to
the output size and the bilinear mask resize with its threshold. Only the square resize of the
original image (``cv2.resize``, as the eager predictor does) stays outside, in
:class:`ExportedYOLACTPredictor`.

Graph interface (batch 1, the input size fixed at export time):

* inputs: ``height`` int64 (), ``image`` uint8 (3, S, S) in the config's ``INPUT.FORMAT``,
  ``width`` int64 (); ``height`` and ``width`` are the output size (the original image's).
* outputs: ``pred_boxes`` float32 (n, 4) XYXY in output pixels, ``pred_classes`` int64 (n,),
  ``pred_masks`` bool (n, height, width), ``scores`` float32 (n,), n data-dependent.

Ops that the ONNX exporter cannot translate on its own get a symbolic here, registered only
while :func:`export_onnx` runs:

* ``aten::sort`` with ``stable=True``: torch's symbolic refuses the overload ("Out parameter is
  not supported"). ONNX ``TopK`` breaks ties by the lower index, which is exactly a stable sort.
* ``aten::bincount``: counts by a one-hot comparison and a sum (integers, so exact).
* ``torchvision::deform_conv2d`` (DCNv2): ONNX ``DeformConv`` (opset 19), same layout of offsets
  ((y, x) pairs per kernel point, grouped by offset group) and masks.

The export description (input size and format, input and output names, the config) travels in
the file: ONNX ``metadata_props`` and a TorchScript extra file, both under :data:`METADATA_KEY`.
"""
import contextlib
import json
import os
import warnings
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import transforms as T
from detectron2.export import TracingAdapter
from detectron2.structures import Boxes, Instances
from torch import Tensor, nn
from torch.nn import functional as F
from torch.onnx.symbolic_helper import parse_args

from mayolact.data.augmentation import build_yolact_test_augmentation
from mayolact.engine.predictor import YOLACTPredictor
from mayolact.utils.file_io import atomic_open

__all__ = [
    "EXPORT_FORMATS",
    "ONNX_OPSET",
    "METADATA_KEY",
    "sample_inputs",
    "export_adapter",
    "export_torchscript",
    "export_onnx",
    "onnx_symbolics",
    "export_model",
    "compare_instances",
    "summarize_comparisons",
    "load_exported",
    "ExportedYOLACTPredictor",
]

EXPORT_FORMATS = {"torchscript": ".ts", "onnx": ".onnx"}
"""Format name -> file extension."""

ONNX_OPSET = 19
"""The ONNX opset: 19 is the first with ``DeformConv`` (DCNv2)."""

METADATA_KEY = "mayolact_export"
"""Key of the export description: ONNX metadata_props entry and TorchScript extra file name."""

INPUT_NAMES = ("height", "image", "width")
"""Graph inputs, in the order TracingAdapter flattens the input dict (sorted keys)."""

OUTPUT_NAMES = ("pred_boxes", "pred_classes", "pred_masks", "scores")
"""Graph outputs, in the order TracingAdapter flattens the output fields (sorted keys)."""


def sample_inputs(image: Tensor, height: int, width: int) -> List[Dict[str, Tensor]]:
    """The model input of one resized image, with the output size as tensors (traced, not baked).

    Args:
        image (Tensor): uint8 (3, S, S), the resized image in ``INPUT.FORMAT`` order.
        height, width (int): the output size (the original image's).

    Returns:
        list[dict]: ``[{"image", "height", "width"}]`` with int64 0-dim ``height`` and ``width``.
    """
    return [{
        "image": image,
        "height": torch.as_tensor(height, dtype=torch.int64),
        "width": torch.as_tensor(width, dtype=torch.int64),
    }]


def _instance_fields(model: nn.Module, inputs: List[Dict[str, Tensor]]) -> Dict[str, object]:
    """The fields of the first image's ``Instances`` (its size: the height / width input)."""
    return model(inputs)[0]["instances"].get_fields()


def export_adapter(model: nn.Module, inputs: List[Dict[str, Tensor]]) -> TracingAdapter:
    """Wrap a YOLACT model for tracing: flattened tensors in, flattened instance fields out.

    Args:
        model (nn.Module): a YOLACT in eval mode.
        inputs (list[dict]): from :func:`sample_inputs`.

    Returns:
        TracingAdapter: ``adapter(*adapter.flattened_inputs)`` is the tuple of
        :data:`OUTPUT_NAMES` tensors; ``adapter.flattened_inputs`` follow :data:`INPUT_NAMES`.
    """
    if model.training:
        raise ValueError("export: the model must be in eval mode (call model.eval())")
    if len(inputs) != 1 or sorted(inputs[0]) != list(INPUT_NAMES):
        raise ValueError(
            f"export: expected one input dict with keys {list(INPUT_NAMES)}, got "
            f"{[sorted(x) for x in inputs]}")
    # eval(): a new module is in training mode, and exporters restore it, model included.
    return TracingAdapter(model, inputs, _instance_fields).eval()


def _description(cfg, image: Tensor) -> Dict[str, object]:
    """The export description stored in the file (what the predictor needs, plus the config)."""
    return {
        "version": 1,
        "meta_architecture": cfg.MODEL.META_ARCHITECTURE,
        "input_size": int(image.shape[-1]),
        "input_format": cfg.INPUT.FORMAT,
        "input_names": list(INPUT_NAMES),
        "output_names": list(OUTPUT_NAMES),
        "config": cfg.dump(),
    }


@contextlib.contextmanager
def _quiet_tracing():
    """Silence the tracer's warnings: the shapes and Python values they flag are the fixed input
    size and config values, which the exported graph is meant to keep as constants."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        _ignore_jit_deprecation()
        yield


def _ignore_jit_deprecation():
    """torch 2.14 flags every ``torch.jit`` call as deprecated; tracing is still what
    Detectron2's deployment (``TracingAdapter``) and the ONNX exporter used here rely on."""
    warnings.filterwarnings("ignore", message=r".*`torch\.jit\.", category=FutureWarning)


def _check_schema(adapter: TracingAdapter) -> None:
    """The traced outputs must be exactly the fields of :data:`OUTPUT_NAMES`, in that order."""
    keys = getattr(adapter.outputs_schema, "keys", None)
    if keys != list(OUTPUT_NAMES):
        raise RuntimeError(
            f"export: the model's instances have fields {keys}, expected {list(OUTPUT_NAMES)}")


def export_torchscript(cfg, model: nn.Module, inputs: List[Dict[str, Tensor]], path: str) -> str:
    """Trace ``model`` on ``inputs`` (``torch.jit.trace``) and save it with its description.

    Args:
        cfg (CfgNode): the model's config (stored in the file).
        model (nn.Module): a YOLACT in eval mode.
        inputs (list[dict]): from :func:`sample_inputs`.
        path (str): output file (``.ts``).

    Returns:
        str: ``path``.
    """
    adapter = export_adapter(model, inputs)
    with torch.no_grad(), _quiet_tracing():
        traced = torch.jit.trace(adapter, adapter.flattened_inputs, check_trace=False)
    _check_schema(adapter)
    meta = json.dumps(_description(cfg, inputs[0]["image"]))
    with atomic_open(path, "wb") as f:
        torch.jit.save(traced, f, _extra_files={METADATA_KEY: meta})
    return path


# ---------------------------------------------------------------------------- ONNX symbolics
# Symbolic functions of torch's TorchScript-based ONNX exporter: ``g.op`` adds an ONNX node;
# ``parse_args`` turns constant inputs into Python values ("i" int, "b" bool, "v" a graph value).
def _const(g, value):
    """An int64 constant node."""
    return g.op("Constant", value_t=torch.tensor(value, dtype=torch.int64))


@parse_args("v", "i", "b")
def _topk_sort(g, self, dim: int, descending: bool):
    """A sort along ``dim`` as ONNX TopK with k = the axis length.

    ONNX TopK orders equal values by their index, lower first: the order of a stable sort.
    """
    size = g.op("Gather", g.op("Shape", self), _const(g, [dim]))
    return g.op("TopK", self, size, axis_i=dim, largest_i=int(descending), sorted_i=1, outputs=2)


def _sort_symbolic(g, self, *args):
    """``aten::sort(self, dim, descending)``, ``aten::sort.stable(self, stable, dim, descending)``.

    torch's own symbolic reads ``stable`` as an out-parameter and gives up.
    """
    if len(args) == 3:  # sort.stable: the flag does not matter, TopK is stable
        args = args[1:]
    return _topk_sort(g, self, *args[:2])


def _bincount_symbolic(g, self, weights, minlength):
    """``aten::bincount`` (no weights): ``out[b] = sum_i (x_i == b)``,
    b < max(minlength, max x + 1).

    ``minlength`` may be a traced value (fast_nms passes a tensor's length).
    """
    if not weights.node().mustBeNone():
        raise RuntimeError("export: bincount with weights has no ONNX translation here")
    # ReduceMax of an empty input is the dtype's lowest value, so the size is then minlength.
    top = g.op("Add", g.op("ReduceMax", self, keepdims_i=0), _const(g, 1))
    size = g.op("Max", top, g.op("Cast", minlength, to_i=7))  # 7: int64
    bins = g.op("Range", _const(g, 0), size, _const(g, 1))
    hits = g.op("Equal", g.op("Unsqueeze", self, _const(g, [1])), bins)  # (n, bins)
    return g.op("ReduceSum", g.op("Cast", hits, to_i=7), _const(g, [0]), keepdims_i=0)


@parse_args("v", "v", "v", "v", "v", "i", "i", "i", "i", "i", "i", "i", "i", "b")
def _deform_conv2d_symbolic(g, input, weight, offset, mask, bias, stride_h, stride_w, pad_h,
                            pad_w, dil_h, dil_w, groups, offset_groups, use_mask):
    """``torchvision::deform_conv2d`` -> ONNX DeformConv (opset 19).

    Both lay the offsets out as (y, x) pairs per kernel point, grouped by offset group, and the
    modulation masks per kernel point and group; DCNv1 (``use_mask`` False) has no mask input.
    """
    inputs = [input, weight, offset, bias] + ([mask] if use_mask else [])
    return g.op(
        "DeformConv", *inputs, strides_i=[stride_h, stride_w],
        pads_i=[pad_h, pad_w, pad_h, pad_w], dilations_i=[dil_h, dil_w], group_i=groups,
        offset_group_i=offset_groups,
    )


_SYMBOLICS = (
    ("aten::sort", _sort_symbolic),
    ("aten::bincount", _bincount_symbolic),
    ("torchvision::deform_conv2d", _deform_conv2d_symbolic),
)


@contextlib.contextmanager
def onnx_symbolics(opset: int):
    """Register this module's symbolics for the duration of one export."""
    for name, fn in _SYMBOLICS:
        torch.onnx.register_custom_op_symbolic(name, fn, opset)
    try:
        yield
    finally:
        for name, _ in _SYMBOLICS:
            torch.onnx.unregister_custom_op_symbolic(name, opset)


def export_onnx(cfg, model: nn.Module, inputs: List[Dict[str, Tensor]], path: str,
                opset: int = ONNX_OPSET) -> str:
    """Export ``model`` to ONNX through tracing (``torch.onnx.export(..., dynamo=False)``).

    Args:
        cfg (CfgNode): the model's config (stored in the file).
        model (nn.Module): a YOLACT in eval mode.
        inputs (list[dict]): from :func:`sample_inputs`.
        path (str): output file (``.onnx``).
        opset (int): ONNX opset (>= 19 for DCNv2).

    Returns:
        str: ``path``.
    """
    import io

    import onnx

    if opset < ONNX_OPSET:
        raise ValueError(f"export: ONNX opset {opset} < {ONNX_OPSET}, the first with DeformConv")
    adapter = export_adapter(model, inputs)
    dynamic_axes = {
        "pred_boxes": {0: "detections"},
        "pred_classes": {0: "detections"},
        "pred_masks": {0: "detections", 1: "height", 2: "width"},
        "scores": {0: "detections"},
    }
    buffer = io.BytesIO()
    with torch.no_grad(), onnx_symbolics(opset), _quiet_tracing():
        torch.onnx.export(
            adapter, adapter.flattened_inputs, buffer, dynamo=False, opset_version=opset,
            input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
            dynamic_axes=dynamic_axes,
        )
    _check_schema(adapter)
    proto = onnx.load_from_string(buffer.getvalue())
    entry = proto.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = json.dumps(_description(cfg, inputs[0]["image"]))
    with atomic_open(path, "wb") as f:
        f.write(proto.SerializeToString())
    return path


def export_model(cfg, model: nn.Module, inputs: List[Dict[str, Tensor]], output_dir: str,
                 formats: Sequence[str] = tuple(EXPORT_FORMATS)) -> Dict[str, str]:
    """Write ``model.<ext>`` in ``output_dir`` for each of ``formats``.

    Returns:
        dict[str, str]: format -> written path.
    """
    unknown = [f for f in formats if f not in EXPORT_FORMATS]
    if unknown:
        raise ValueError(f"export: unknown formats {unknown}; choose from {list(EXPORT_FORMATS)}")
    writers = {"torchscript": export_torchscript, "onnx": export_onnx}
    return {
        fmt: writers[fmt](
            cfg, model, inputs, os.path.join(output_dir, "model" + EXPORT_FORMATS[fmt]))
        for fmt in formats
    }


def compare_instances(expected: Instances, actual: Instances,
                      score_tol: float = 1e-5) -> Dict[str, float]:
    """How far an exported model's instances are from the eager model's, on one image.

    Each expected detection is matched, in order, to the unmatched actual one of the same class
    whose score is within ``score_tol`` and whose box is nearest. Rounding can reorder detections
    whose scores differ by less than it; ``score_max_diff`` compares the score lists position by
    position, so a small value also says that any reordering was among such near-ties.

    Args:
        expected (Instances): the eager model's, with pred_boxes, scores, pred_classes, pred_masks.
        actual (Instances): the exported model's, same fields.
        score_tol (float): the score difference allowed in a match.

    Returns:
        dict: ``detections`` (expected count), ``same_count`` and ``matched`` (1.0 or 0.0: every
        detection has its counterpart), ``reordered`` (detections matched at another position),
        ``score_max_diff`` (position by position), and over the matched pairs ``box_max_diff``
        (px), ``mask_max_pixels`` (the most pixels in which one pair's masks differ) and
        ``mask_off_contour_pixels`` (differing pixels whose 3 x 3 neighbourhood in the expected
        mask is uniform, i.e. not on its contour). NaN where the counts differ.
    """
    n = len(expected)
    out = {"detections": float(n), "same_count": float(n == len(actual))}
    if n != len(actual):
        nan = float("nan")
        out.update(matched=0.0, reordered=nan, score_max_diff=nan, box_max_diff=nan,
                   mask_max_pixels=nan, mask_off_contour_pixels=nan)
        return out
    if tuple(expected.pred_masks.shape) != tuple(actual.pred_masks.shape):
        raise ValueError(
            f"compare_instances: mask shapes differ, {tuple(expected.pred_masks.shape)} vs "
            f"{tuple(actual.pred_masks.shape)}")
    expected, actual = expected.to("cpu"), actual.to("cpu")
    boxes_e, boxes_a = expected.pred_boxes.tensor, actual.pred_boxes.tensor
    candidate = ((expected.pred_classes[:, None] == actual.pred_classes[None, :])
                 & ((expected.scores[:, None] - actual.scores[None, :]).abs() <= score_tol))
    distance = (boxes_e[:, None, :] - boxes_a[None, :, :]).abs().amax(dim=2)  # (n, n)
    distance = distance.masked_fill(~candidate, float("inf"))
    match = torch.full((n,), -1, dtype=torch.int64)
    for i in range(n):
        j = int(distance[i].argmin()) if n else -1
        if torch.isfinite(distance[i, j]):
            match[i] = j
            distance[:, j] = float("inf")
    ok = match >= 0
    pairs_e, pairs_a = ok.nonzero().squeeze(1), match[ok]

    def max_or_zero(x: Tensor) -> float:
        return float(x.max()) if x.numel() else 0.0

    out["matched"] = float(bool(ok.all()))
    out["reordered"] = float((pairs_e != pairs_a).sum())
    out["score_max_diff"] = max_or_zero((expected.scores - actual.scores).abs())
    out["box_max_diff"] = max_or_zero((boxes_e[pairs_e] - boxes_a[pairs_a]).abs())
    masks = expected.pred_masks[pairs_e]
    differ = masks != actual.pred_masks[pairs_a]
    m = masks[:, None].float()
    contour = (F.max_pool2d(m, 3, 1, 1) != -F.max_pool2d(-m, 3, 1, 1))[:, 0]  # dilation != erosion
    out["mask_max_pixels"] = max_or_zero(differ.flatten(1).sum(1))
    out["mask_off_contour_pixels"] = float((differ & ~contour).sum())
    return out


def summarize_comparisons(diffs: Sequence[Dict[str, float]]) -> Dict[str, float]:
    """Several images' :func:`compare_instances` in one: the detections and reorderings summed,
    ``same_count`` and ``matched`` 1.0 only if they hold on every image, the differences' worst
    (NaN if an image has one)."""
    if not diffs:
        raise ValueError("summarize_comparisons: no comparisons")
    out = {}
    for key in diffs[0]:
        values = [d[key] for d in diffs]
        if key in ("detections", "reordered"):
            out[key] = float(sum(values))
        elif key in ("same_count", "matched"):
            out[key] = float(min(values))
        else:
            out[key] = float("nan") if any(v != v for v in values) else float(max(values))
    return out


# ---------------------------------------------------------------------------- running exports
class _OnnxRunner:
    """An onnxruntime CPU session behind the traced model's call convention."""

    def __init__(self, path: str):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # the same CPU budget as torch
        self.session = ort.InferenceSession(
            path, sess_options=options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, *inputs: Tensor) -> Tuple[Tensor, ...]:
        feeds = {name: x.cpu().numpy() for name, x in zip(self.input_names, inputs)}
        outputs = self.session.run(None, feeds)
        return tuple(torch.from_numpy(np.ascontiguousarray(y)) for y in outputs)


def load_exported(path: str):
    """Load an exported model and its description.

    Args:
        path (str): a ``.onnx`` (run with onnxruntime on CPU) or ``.ts`` (TorchScript) file.

    Returns:
        (callable, dict): ``run(height, image, width) -> (pred_boxes, pred_classes, pred_masks,
        scores)`` and the export description.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unknown extension, or the file lacks the export description.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such exported model")
    ext = os.path.splitext(path)[1].lower()
    if ext == EXPORT_FORMATS["onnx"]:
        import onnx

        proto = onnx.load(path, load_external_data=False)
        props = {p.key: p.value for p in proto.metadata_props}
        runner = _OnnxRunner(path)
    elif ext == EXPORT_FORMATS["torchscript"]:
        props = {METADATA_KEY: ""}
        with warnings.catch_warnings():
            _ignore_jit_deprecation()
            runner = torch.jit.load(path, map_location="cpu", _extra_files=props)
        runner.eval()
    else:
        raise ValueError(
            f"{path}: unknown exported model type {ext!r}; expected one of "
            f"{sorted(EXPORT_FORMATS.values())}")
    if not props.get(METADATA_KEY):
        raise ValueError(
            f"{path}: no '{METADATA_KEY}' description (not written by mayolact.export.exporter)")
    meta = json.loads(props[METADATA_KEY])
    for field in ("config", "input_names", "output_names"):
        if field not in meta:
            raise ValueError(f"{path}: the '{METADATA_KEY}' description lacks '{field}'")
    if meta["input_names"] != list(INPUT_NAMES) or meta["output_names"] != list(OUTPUT_NAMES):
        raise ValueError(
            f"{path}: graph interface {meta['input_names']} -> {meta['output_names']} is not "
            f"{list(INPUT_NAMES)} -> {list(OUTPUT_NAMES)}")
    return runner, meta


class ExportedYOLACTPredictor(YOLACTPredictor):
    """:class:`YOLACTPredictor` on an exported model: the same pre-processing and outputs.

    The image is squashed to the export's input size exactly as the eager predictor does (its
    ``preprocess``, with the augmentation and ``INPUT.FORMAT`` of the config stored in the file);
    the exported graph does the rest. Outputs are ``{"instances": Instances}`` at the original
    size with ``pred_boxes``, ``scores``, ``pred_classes`` and ``pred_masks``, like the eager
    model's; a list of images gives a list of outputs (the graph runs once per image).

    Attributes:
        model: the loaded graph, ``model(height, image, width) -> (pred_boxes, pred_classes,
            pred_masks, scores)``.
        description (dict): the export description stored in the file.
        cfg (CfgNode): the config the model was exported from.

    Example::

        pred = ExportedYOLACTPredictor("output/export/model.onnx")
        outputs = pred(cv2.imread("input.jpg"))
    """

    def __init__(self, path: str):
        """
        Args:
            path (str): a model written by :func:`export_model` (``.onnx`` or ``.ts``).

        Raises:
            FileNotFoundError, ValueError: see :func:`load_exported`.
        """
        self.path = path
        self.model, self.description = load_exported(path)
        self.cfg = CfgNode.load_cfg(self.description["config"])
        self.input_format = self.cfg.INPUT.FORMAT
        if self.input_format not in ("RGB", "BGR"):
            raise ValueError(f"{path}: INPUT.FORMAT must be RGB or BGR, got {self.input_format}")
        self.aug = T.AugmentationList(build_yolact_test_augmentation(self.cfg))

    @torch.no_grad()
    def __call__(self, original_image):
        """
        Args:
            original_image (ndarray or list[ndarray]): an (H, W, 3) uint8 BGR image, or a list.

        Returns:
            dict or list[dict]: {"instances": Instances} at the image's (H, W), or a list of them.
        """
        if isinstance(original_image, (list, tuple)):
            return [self(image) for image in original_image]
        return self.run_inputs([self.preprocess(original_image)])[0]

    @torch.no_grad()
    def run_inputs(self, inputs: List[Dict]) -> List[Dict]:
        """The exported graph behind the eager model's interface: what the test loader gives.

        Args:
            inputs (list[dict]): "image" uint8 (3, S, S) in ``INPUT.FORMAT`` (S the export's input
                size), "height", "width" the output size: the test loader's dicts, or
                :meth:`preprocess`'s.

        Returns:
            list[dict]: ``{"instances": Instances}`` at each (height, width), one graph run each.
        """
        outputs = []
        for x in inputs:
            height, width = int(x["height"]), int(x["width"])
            flat = sample_inputs(x["image"], height, width)[0]
            fields = dict(zip(OUTPUT_NAMES, self.model(*[flat[name] for name in INPUT_NAMES])))
            fields["pred_boxes"] = Boxes(fields["pred_boxes"])
            outputs.append({"instances": Instances((height, width), **fields)})
        return outputs
