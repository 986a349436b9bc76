"""int8 deployment (``mayolact.export.quantize``, ``tools/export_model.py --quantize int8``) and the
accuracy of exported models (``evaluate_exported``).

* The int8 graph quantizes every dense convolution (QDQ, weights from ``DequantizeLinear``) and
  leaves DCNv2 (``DeformConv``), CARAFE's reassembly and the post-processing in float32; it keeps
  the export description, with the quantization recorded; it runs in
  :class:`ExportedYOLACTPredictor` and finds the float model's detections.
* ``float_nodes`` keeps the named convolutions in float32.
* Bad input: no calibration image, a file that is not an exported model, ``--quantize`` without
  ``--format onnx``.
* ``evaluate_exported`` of the float32 ONNX model gives the eager model's AP.
"""
import collections
import contextlib
import io
import json

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.data.detection_utils import read_image

from mayolact.export.exporter import (
    METADATA_KEY,
    ExportedYOLACTPredictor,
    export_model,
    sample_inputs,
)
from mayolact.export.quantize import evaluate, evaluate_exported, quantize_int8

from common import (
    QUICK,
    get_config,
    load_tool,
    onnxruntime_runs_deformconv,
    save_checkpoint,
    tiny_config,
    trained_like_predictor,
)

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

MAYOLACT = QUICK / "mayolact_R_50_FPN_quick.yaml"  # CARAFE FPN + DCNv2 in res3-res5


def _shapes_images(n):
    return [read_image(d["file_name"], format="BGR")
            for d in DatasetCatalog.get("mayolact_shapes_val")[:n]]


@pytest.fixture(scope="module")
def float_model(tmp_path_factory):
    """(eager predictor, path of its float32 ONNX export): the quick maYOLACT config (CARAFE FPN,
    DCNv2 in res3-res5) at 128, trained-like random weights, on shapes images."""
    if not onnxruntime_runs_deformconv():
        pytest.skip("this onnxruntime has no DeformConv (opset 19) on the CPU")
    folder = tmp_path_factory.mktemp("quantize")
    cfg = get_config(MAYOLACT, ["INPUT.YOLACT.SIZE", 128, "MODEL.YOLACT.NUM_CLASSES", 8,
                                "DATASETS.TEST", "('mayolact_shapes_val',)"])
    images = _shapes_images(2)
    eager = trained_like_predictor(cfg, images[0])
    x = eager.preprocess(images[0])
    paths = export_model(cfg, eager.model, sample_inputs(x["image"], x["height"], x["width"]),
                         str(folder), ["onnx"])
    return eager, paths["onnx"]


def _dequantized_convs(model):
    """{Conv node name: whether its weight comes out of a DequantizeLinear}."""
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    return {n.name: producers.get(n.input[1]) == "DequantizeLinear"
            for n in model.graph.node if n.op_type == "Conv"}


def test_int8_model_quantizes_the_dense_convolutions(float_model, tmp_path):
    _, src = float_model
    dst = quantize_int8(src, str(tmp_path / "model_int8.onnx"), _shapes_images(2))
    model = onnx.load(dst)
    ops = collections.Counter(n.op_type for n in model.graph.node)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0
    convs = _dequantized_convs(model)
    assert convs and all(convs.values()), [k for k, v in convs.items() if not v]
    # DCNv2 and CARAFE's reassembly have no integer form: they stay float32.
    assert ops["DeformConv"] > 0 and ops["Einsum"] > 0
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.op_type in ("DeformConv", "Einsum"):
            assert all(producers.get(i) != "QuantizeLinear" for i in node.input), node.name
    description = json.loads(next(p.value for p in model.metadata_props
                                  if p.key == METADATA_KEY))
    assert description["quantization"]["mode"] == "int8"
    assert description["quantization"]["calibration_images"] == 2
    assert description["config"] == json.loads(next(
        p.value for p in onnx.load(src).metadata_props if p.key == METADATA_KEY))["config"]


def test_int8_model_approximates_the_float_model(float_model, tmp_path):
    """int8 moves scores a little: on each image the same number of detections and their sorted
    scores within 0.05 of the float model's. (Accuracy on a trained model: docs/DEPLOY.md's int8
    table; on this random one, which detections make the top 20 among near-ties varies.)"""
    _, src = float_model
    images = _shapes_images(4)
    dst = quantize_int8(src, str(tmp_path / "model_int8.onnx"), images)
    float_pred, int8_pred = ExportedYOLACTPredictor(src), ExportedYOLACTPredictor(dst)
    for image in images:
        expected = float_pred(image)["instances"]
        actual = int8_pred(image)["instances"]
        assert actual.pred_masks.shape[1:] == image.shape[:2]
        assert len(actual) == len(expected) > 0
        assert (actual.scores - expected.scores).abs().max() < 0.05


def test_float_nodes_stay_float(float_model, tmp_path):
    _, src = float_model
    dst = quantize_int8(src, str(tmp_path / "m.onnx"), _shapes_images(1),
                        float_nodes=[r"/head/cls_score(_\d+)?/Conv$"])
    convs = _dequantized_convs(onnx.load(dst))
    kept = [name for name, quantized in convs.items() if not quantized]
    assert kept and all("cls_score" in name for name in kept)
    assert sum(convs.values()) == len(convs) - len(kept) > 0


def test_quantize_rejects_bad_input(float_model, tmp_path):
    _, src = float_model
    with pytest.raises(ValueError, match="no calibration images"):
        quantize_int8(src, str(tmp_path / "a.onnx"), [])
    plain = tmp_path / "plain.onnx"
    torch.onnx.export(torch.nn.ReLU(), (torch.zeros(2),), str(plain), dynamo=False,
                      opset_version=19)
    with pytest.raises(ValueError, match="plain.onnx.*mayolact_export"):
        quantize_int8(str(plain), str(tmp_path / "b.onnx"), _shapes_images(1))
    assert not (tmp_path / "a.onnx").exists() and not (tmp_path / "b.onnx").exists()


def test_quantize_needs_the_onnx_format(tmp_path, capsys):
    assert load_tool("export_model").main([
        "--config-file", str(MAYOLACT), "--format", "torchscript", "--quantize",
        "int8", "--output", str(tmp_path)]) == 2
    assert "--quantize needs --format onnx" in capsys.readouterr().err


def test_exported_model_evaluates_like_eager(tmp_path):
    """evaluate_exported of the float32 ONNX model: the eager model's COCO AP and oLRP."""
    cfg = tiny_config("mayolact", size=96, num_classes=8)
    cfg.DATASETS.TEST = ("mayolact_shapes_val",)
    images = _shapes_images(1)
    eager = trained_like_predictor(cfg, images[0])
    x = eager.preprocess(images[0])
    path = export_model(cfg, eager.model, sample_inputs(x["image"], x["height"], x["width"]),
                        str(tmp_path), ["onnx"])["onnx"]
    expected = evaluate(cfg, eager.model, str(tmp_path / "eager"))
    got = evaluate_exported(cfg, path, str(tmp_path / "onnx"))
    for task in ("bbox", "segm"):
        for key in ("AP", "AP50", "oLRP"):
            assert got[task][key] == pytest.approx(expected[task][key], abs=0.01), (task, key)


@pytest.mark.slow
def test_export_tool_quantizes_and_evaluates(tmp_path):
    """tools/export_model.py --quantize int8 --evaluate: model_int8.onnx beside model.onnx, and the
    accuracy table of the eager, float32 and int8 models."""
    cfg = tiny_config("mayolact", size=96, num_classes=8)
    eager = trained_like_predictor(cfg, _shapes_images(1)[0])
    save_checkpoint(eager, tmp_path / "weights.pth")
    config = tmp_path / "config.yaml"
    config.write_text(cfg.dump())
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = load_tool("export_model").main([
            "--config-file", str(config), "--format", "onnx", "--quantize", "int8",
            "--calibration-images", "2", "--evaluate", "--output", str(tmp_path / "out"),
            "MODEL.WEIGHTS", str(tmp_path / "weights.pth"),
            "DATASETS.TEST", "('mayolact_shapes_val',)"])
    assert code == 0
    assert (tmp_path / "out" / "model.onnx").is_file()
    assert (tmp_path / "out" / "model_int8.onnx").is_file()
    report = printed.getvalue()
    table = [line.split("|")[1:-1] for line in report[report.index("Accuracy on"):].splitlines()
             if line.startswith("| ")]
    assert [row[0].strip() for row in table] == [
        "model", "eager (float32)", "onnx (model.onnx)", "onnx int8 (model_int8.onnx)"]
    values = np.array([[float(c) for c in row[1:]] for row in table[1:]])
    assert np.isfinite(values).all()
    np.testing.assert_allclose(values[1], values[0], atol=0.01)  # float32 ONNX: eager's AP
