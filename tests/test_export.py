"""Export (``mayolact.export.exporter``, ``tools/export_model.py``): TorchScript and ONNX reproduce
eager.

* The ONNX translations this project adds, each against PyTorch on inputs built to catch a wrong
  translation: a stable sort on heavy ties (both directions), bincount (empty input, values past
  ``minlength``, a traced ``minlength``) and DCNv2 (``deform_conv2d`` -> ``DeformConv``) with
  offsets whose y and x differ, offset groups, stride, dilation, with and without a mask.
* YOLACT and maYOLACT (CARAFE + DCNv2) exported by the tool from a checkpoint, then run through
  :class:`ExportedYOLACTPredictor` (onnxruntime on the CPU, and TorchScript) on coco_mini
  images: the same detections as the eager predictor (boxes within 1e-3 px, scores within
  1e-5, masks differing in a few pixels at most). The weights are random (fixed seed) but
  scaled so that the model behaves like a trained one: box deltas of order 1, class scores
  spread above the threshold, DCN offsets of about a pixel, non-uniform CARAFE kernels.
* A graph traced on an image with detections runs on one without, and the other way round.
* Bad input: a missing file, an unknown extension, a file without the export description, a
  model in training mode, an ONNX opset without DeformConv.
"""
import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.data.detection_utils import read_image
from detectron2.modeling import build_model
from torch import nn

import mayolact  # noqa: F401  (registers everything)
from mayolact.export.exporter import (
    ONNX_OPSET,
    ExportedYOLACTPredictor,
    compare_instances,
    export_model,
    export_onnx,
    load_exported,
    onnx_symbolics,
    sample_inputs,
    summarize_comparisons,
)

from common import (
    QUICK,
    get_config,
    load_tool,
    onnxruntime_runs_deformconv,
    save_checkpoint,
    tiny_config,
    trained_like_predictor,
)

ort = pytest.importorskip("onnxruntime")

CONFIGS = {
    "yolact": QUICK / "yolact_R_50_FPN_quick_fixediou.yaml",
    "mayolact": QUICK / "mayolact_R_50_FPN_quick.yaml",  # CARAFE FPN + DCNv2 in res3-res5
}
# Small and fast: 128 x 128 inputs (the quick configs are already a quarter-width R-50).
OPTS = ["INPUT.YOLACT.SIZE", "128", "MODEL.YOLACT.SCORE_THRESH_TEST", "0.05"]
IMAGES = ["000000000139.jpg", "000000000802.jpg", "000000006818.jpg"]
BOX_TOL, SCORE_TOL = 1e-3, 1e-5


def assert_reproduces(expected, actual, where):
    """The same detections (class, score within 1e-5, box within 1e-3 px), in the same order up
    to scores closer than 1e-5; masks differ only on their contours, in at most one row's or
    column's worth of pixels (a one-pixel shift of a straight edge where the upsampled
    probability is exactly the threshold, e.g. half-way to a crop edge)."""
    diff = compare_instances(expected, actual, score_tol=SCORE_TOL)
    assert diff["same_count"] and diff["matched"], (where, diff)
    assert diff["box_max_diff"] <= BOX_TOL, (where, diff)
    assert diff["score_max_diff"] <= SCORE_TOL, (where, diff)
    assert diff["mask_off_contour_pixels"] == 0, (where, diff)
    assert diff["mask_max_pixels"] <= max(expected.image_size), (where, diff)
    return diff


def skip_onnx_without_deformconv(config):
    """maYOLACT's ONNX model needs DeformConv (DCNv2): skip where onnxruntime lacks it."""
    if config == CONFIGS["mayolact"] and not onnxruntime_runs_deformconv():
        pytest.skip(f"onnxruntime {ort.__version__} has no DeformConv (opset 19) on the CPU: "
                    "maYOLACT's DCNv2 blocks cannot run in ONNX there (TorchScript still can)")


def run_onnx(module, args, input_names):
    """Export ``module`` with this project's symbolics and run it in onnxruntime (CPU)."""
    f = io.BytesIO()
    with onnx_symbolics(ONNX_OPSET), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, f, dynamo=False, opset_version=ONNX_OPSET,
                          input_names=input_names)
    session = ort.InferenceSession(f.getvalue(), providers=["CPUExecutionProvider"])
    used = {i.name for i in session.get_inputs()}  # inputs the graph does not read are dropped
    return session.run(None, {n: a.numpy() for n, a in zip(input_names, args) if n in used})


# ------------------------------------------------------------------------------ symbolics
class _StableSort(nn.Module):
    def __init__(self, dim, descending):
        super().__init__()
        self.dim, self.descending = dim, descending

    def forward(self, x):
        return x.sort(dim=self.dim, descending=self.descending, stable=True)


@pytest.mark.parametrize("dim", [0, 1, -1])
@pytest.mark.parametrize("descending", [True, False])
def test_stable_sort_exports_with_torch_tie_order(dim, descending):
    # Few distinct values, many ties: an unstable translation would reorder equal elements.
    x = torch.randint(0, 4, (7, 300), generator=torch.Generator().manual_seed(0)).float()
    values, indices = run_onnx(_StableSort(dim, descending), (x,), ["x"])
    ref_values, ref_indices = _StableSort(dim, descending)(x)
    assert np.array_equal(values, ref_values.numpy())
    assert np.array_equal(indices, ref_indices.numpy())


class _Bincount(nn.Module):
    def __init__(self, minlength=None):
        super().__init__()
        self.minlength = minlength

    def forward(self, x, like):
        # minlength None: traced from ``like``'s length, as fast_nms's number of classes is.
        minlength = like.shape[0] if self.minlength is None else self.minlength
        return torch.bincount(x, minlength=minlength)


@pytest.mark.parametrize("values,minlength", [
    ([3, 0, 3, 1, 3], 6),       # padded to minlength
    ([0, 9, 2, 9], 4),          # values past minlength lengthen the output
    ([], 5),                    # empty: minlength zeros
    ([2, 2, 0], None),          # minlength traced from a shape
])
def test_bincount_exports(values, minlength):
    x = torch.tensor(values, dtype=torch.int64)
    like = torch.zeros(7)
    (counts,) = run_onnx(_Bincount(minlength), (x, like), ["x", "like"])
    expected = _Bincount(minlength)(x, like)
    assert counts.dtype == np.int64
    assert np.array_equal(counts, expected.numpy())


class _DeformConv(nn.Module):
    def __init__(self, stride, padding, dilation):
        super().__init__()
        self.stride, self.padding, self.dilation = stride, padding, dilation

    def forward(self, x, offset, weight, bias, mask=None):
        from torchvision.ops import deform_conv2d

        return deform_conv2d(x, offset, weight, bias, stride=self.stride, padding=self.padding,
                             dilation=self.dilation, mask=mask)


@pytest.mark.parametrize("stride,padding,dilation,use_mask,offset_groups", [
    (1, 1, 1, True, 1),
    (2, 2, 2, True, 2),   # stride, dilation and offset groups, as in DCN res3-res5 blocks
    (1, 1, 1, False, 4),  # DCNv1: no modulation mask
])
def test_deform_conv2d_exports_to_deformconv(stride, padding, dilation, use_mask, offset_groups):
    skip_onnx_without_deformconv(CONFIGS["mayolact"])
    g = torch.Generator().manual_seed(0)
    n, c, h, w, out_c, k = 2, 8, 11, 9, 6, 3
    oh = (h + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    ow = (w + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    x = torch.randn(n, c, h, w, generator=g)
    # Offsets of a few pixels with y != x, so a swapped (y, x) order or group layout shows.
    offset = 2.5 * torch.randn(n, 2 * offset_groups * k * k, oh, ow, generator=g)
    weight = torch.randn(out_c, c, k, k, generator=g)
    bias = torch.randn(out_c, generator=g)
    args = [x, offset, weight, bias]
    if use_mask:
        args.append(torch.rand(n, offset_groups * k * k, oh, ow, generator=g))
    module = _DeformConv(stride, padding, dilation)
    (out,) = run_onnx(module, tuple(args), ["x", "offset", "weight", "bias", "mask"][:len(args)])
    np.testing.assert_allclose(out, module(*args).numpy(), rtol=1e-4, atol=1e-4)


class _DeformModule(nn.Module):
    """maYOLACT's DCN layer (``kernel``), or the ATen kernel's standard-op form (``gather``)."""

    def __init__(self, kernel):
        super().__init__()
        from mayolact.modeling.backbone.resnet import ModulatedDeformConv2d

        self.kernel = kernel
        self.conv = ModulatedDeformConv2d(8, 6, 3, stride=2, padding=1, deformable_groups=2,
                                          kernel="aten" if kernel == "gather" else kernel)

    def forward(self, x, offset, mask):
        if self.kernel != "gather":
            return self.conv(x, offset, mask)
        from mayolact.modeling.backbone.deform_conv import modulated_deform_conv2d

        return modulated_deform_conv2d(x, offset, mask, self.conv.weight, None, 2, 1, 1,
                                       sampler="gather")


@pytest.mark.parametrize("kernel", ["auto", "aten", "torchvision", "gather"])
def test_deformable_conv_exports(kernel):
    """Whatever DCN_KERNEL runs in eager, the ONNX graph holds DeformConv (onnxruntime runs it
    faster than the standard-op form); the standard-op form (sampler "gather") exports too."""
    import onnx

    if kernel != "gather":
        skip_onnx_without_deformconv(CONFIGS["mayolact"])
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 8, 11, 9, generator=g)
    offset = 2.5 * torch.randn(1, 2 * 2 * 9, 6, 5, generator=g)
    mask = torch.rand(1, 2 * 9, 6, 5, generator=g)
    module = _DeformModule(kernel).eval()
    f = io.BytesIO()
    with onnx_symbolics(ONNX_OPSET), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x, offset, mask), f, dynamo=False, opset_version=ONNX_OPSET,
                          input_names=["x", "offset", "mask"])
    ops = {n.op_type for n in onnx.load_from_string(f.getvalue()).graph.node}
    assert ("DeformConv" in ops) == (kernel != "gather"), ops
    session = ort.InferenceSession(f.getvalue(), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"x": x.numpy(), "offset": offset.numpy(), "mask": mask.numpy()})
    with torch.no_grad():
        expected = module(x, offset, mask).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_postprocess_takes_the_traced_output_size():
    """The export feeds the output size as 0-dim tensors; the result equals the int path's."""
    from detectron2.structures import Boxes, Instances

    from mayolact.modeling.postprocessing import yolact_postprocess

    g = torch.Generator().manual_seed(0)
    boxes = torch.tensor([[4.0, 8, 40, 60], [10, 10, 64, 30], [70, 5, 90, 20]])
    results = Instances((64, 64), pred_boxes=Boxes(boxes), scores=torch.tensor([0.9, 0.8, 0.7]),
                        pred_classes=torch.tensor([0, 2, 1]),
                        pred_coeffs=torch.randn(3, 4, generator=g))
    protos = torch.randn(4, 32, 32, generator=g).relu()
    ints = yolact_postprocess(results, protos, 200, 249)
    tensors = yolact_postprocess(results, protos, torch.tensor(200), torch.tensor(249))
    assert len(ints) == len(tensors) == 2
    for field in ("pred_boxes", "scores", "pred_classes", "pred_masks"):
        a, b = ints.get(field), tensors.get(field)
        a, b = getattr(a, "tensor", a), getattr(b, "tensor", b)
        assert torch.equal(a, b), field


def _instances(boxes, scores, classes, masks):
    from detectron2.structures import Boxes, Instances

    return Instances(tuple(masks.shape[1:]), pred_boxes=Boxes(torch.tensor(boxes)),
                     scores=torch.tensor(scores), pred_classes=torch.tensor(classes),
                     pred_masks=masks)


def test_compare_instances_matches_near_ties_and_locates_mask_differences():
    masks = torch.zeros(3, 12, 12, dtype=torch.bool)
    masks[0, 2:8, 2:8] = masks[1, 5:10, 1:4] = masks[2, 0:3, 0:12] = True
    boxes = [[2.0, 2, 8, 8], [1, 5, 4, 10], [0, 0, 12, 3]]
    expected = _instances(boxes, [0.9, 0.5, 0.5 - 2e-7], [1, 4, 2], masks)
    # Rounding swapped the two near-tied detections and moved a box by 1e-4 px.
    order = [0, 2, 1]
    moved = [list(boxes[i]) for i in order]
    moved[0][0] += 1e-4
    actual = _instances(moved, [0.9, 0.5 - 1e-7, 0.5], [1, 2, 4], masks[order].clone())
    actual.pred_masks[0, 2:8, 8] = True  # a one-pixel shift of an edge: contour pixels
    diff = compare_instances(expected, actual)
    assert diff["matched"] == 1 and diff["reordered"] == 2
    assert diff["score_max_diff"] == pytest.approx(2e-7, abs=2e-8)  # position by position
    assert diff["box_max_diff"] == pytest.approx(1e-4, rel=1e-2)
    assert diff["mask_max_pixels"] == 6 and diff["mask_off_contour_pixels"] == 0
    actual.pred_masks[0, 4, 4] = False  # inside the mask: not a contour pixel
    assert compare_instances(expected, actual)["mask_off_contour_pixels"] == 1
    actual.pred_classes[2] = 7  # a detection without a counterpart
    assert compare_instances(expected, actual)["matched"] == 0
    fewer = compare_instances(expected, actual[:2])
    assert fewer["same_count"] == 0 and fewer["matched"] == 0
    total = summarize_comparisons([diff, fewer])
    assert total["detections"] == 6 and total["matched"] == 0
    assert total["reordered"] != total["reordered"]  # NaN: one image's counts differ
    assert summarize_comparisons([diff, diff])["reordered"] == 4


# ---------------------------------------------------------------------- models on images
@pytest.fixture(scope="module")
def coco_images(coco_mini):
    return [str(coco_mini / "val2017" / f) for f in IMAGES]


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def exported(request, coco_images, tmp_path_factory):
    """(eager predictor, {format: path}) for one config, exported by tools/export_model.py."""
    folder = tmp_path_factory.mktemp(f"export_{request.param}")
    cfg = get_config(str(CONFIGS[request.param]), OPTS)
    eager = trained_like_predictor(cfg, read_image(coco_images[0], format="BGR"))
    save_checkpoint(eager, folder / "weights.pth")
    opts = OPTS + ["MODEL.WEIGHTS", str(folder / "weights.pth")]
    runs_onnx = request.param != "mayolact" or onnxruntime_runs_deformconv()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = load_tool("export_model").main([
            "--config-file", str(CONFIGS[request.param]), "--sample-image", coco_images[0],
            "--output", str(folder), *(["--check", "2"] if runs_onnx else []), *opts])
    assert code == 0
    report = printed.getvalue()  # --check: the sample image and the next of its folder
    for fmt in ("onnx", "torchscript") if runs_onnx else ():
        assert f"{fmt} vs eager on 2 images: detections " in report and "matched 1," in report
    paths = {"onnx": str(folder / "model.onnx"), "torchscript": str(folder / "model.ts")}
    return eager, paths, CONFIGS[request.param]


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_model_reproduces_eager(exported, fmt, coco_images):
    eager, paths, config = exported
    if fmt == "onnx":
        skip_onnx_without_deformconv(config)
    predictor = ExportedYOLACTPredictor(paths[fmt])
    total = 0
    for path in coco_images:
        image = read_image(path, format="BGR")
        expected = eager(image)["instances"]
        actual = predictor(image)["instances"]
        assert actual.image_size == expected.image_size == image.shape[:2]
        assert actual.pred_masks.dtype == torch.bool
        diff = assert_reproduces(expected, actual, path)
        if fmt == "torchscript":  # the same kernels as eager: identical
            assert diff["box_max_diff"] == diff["score_max_diff"] == diff["mask_max_pixels"] == 0
            assert diff["reordered"] == 0
        total += len(expected)
    assert total >= len(coco_images)  # the comparison is not vacuous


def test_benchmark_times_exported_models(exported, capsys):
    """tools/benchmark_inference.py --exported: a row per exported model, beside the eager row."""
    _, paths, exported_config = exported
    skip_onnx_without_deformconv(exported_config)
    config = CONFIGS["yolact"]
    code = load_tool("benchmark_inference").main([
        "--configs", str(config), "--images", "1", "--warmup", "0", "--no-flops",
        "--exported", paths["onnx"], "--exported", paths["torchscript"], "--profile-exported",
        *OPTS])
    assert code == 0
    table = capsys.readouterr().out
    for path in paths.values():
        row = next(line for line in table.splitlines() if line.startswith(f"| {path} |"))
        assert float(row.split("|")[2]) > 0  # ms / image
    # --profile-exported: the ONNX model's time by part of the graph (onnxruntime's profiler).
    parts = [line for line in table.splitlines() if line.startswith(f"| {paths['onnx']} |")][1]
    cells = parts.strip("|").split("|")[1:]
    assert len(cells) == 7 and float(cells[-1]) > 0
    dcn = float(cells[0].split()[0])
    assert (dcn > 0) == (exported_config == CONFIGS["mayolact"])  # DeformConv nodes


def test_demo_draws_with_an_exported_model(exported, coco_images, tmp_path):
    """tools/demo.py --exported draws; the Demo's instances (image read in INPUT.FORMAT) are the
    predictor's on the BGR image, for the eager and the exported predictor alike."""
    from mayolact.engine.demo import Demo

    eager, paths, config = exported
    skip_onnx_without_deformconv(config)
    out = tmp_path / "vis"
    code = load_tool("demo").main([
        "--config-file", str(config), "--exported", paths["onnx"], "--input", coco_images[0],
        "--output", str(out), "--confidence-threshold", "0", *OPTS])
    assert code == 0
    assert (out / Path(coco_images[0]).name).is_file()

    rgb = read_image(coco_images[1], format="RGB")
    assert eager.cfg.INPUT.FORMAT == "RGB"
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    for predictor in (eager, ExportedYOLACTPredictor(paths["onnx"])):
        expected = predictor(bgr)["instances"]
        drawn = Demo(eager.cfg, confidence_threshold=0.0, predictor=predictor).predict(rgb)
        assert len(expected) > 0
        assert_reproduces(expected, drawn, type(predictor).__name__)


def test_exported_predictor_takes_a_list(exported, coco_images):
    _, paths, config = exported
    skip_onnx_without_deformconv(config)
    predictor = ExportedYOLACTPredictor(paths["onnx"])
    images = [read_image(p, format="BGR") for p in coco_images[:2]]
    outputs = predictor(images)
    assert [o["instances"].image_size for o in outputs] == [im.shape[:2] for im in images]
    for image, output in zip(images, outputs):
        assert_reproduces(predictor(image)["instances"], output["instances"], "list")


def test_trace_generalises_between_empty_and_nonempty_images(coco_images, tmp_path):
    """A threshold between two images' best scores: one has detections, the other none."""
    cfg = tiny_config("fixed_iou", size=128)  # a small graph: two exports
    cfg.MODEL.YOLACT.SCORE_THRESH_TEST = 0.05
    images = [read_image(p, format="BGR") for p in coco_images[:2]]
    eager = trained_like_predictor(cfg, images[0])
    model = eager.model
    model.test_score_thresh = 0.0
    best = [float(eager(im)["instances"].scores.max()) for im in images]
    assert best[0] != best[1]
    model.test_score_thresh = sum(best) / 2
    counts = [len(eager(im)["instances"]) for im in images]
    assert sorted(c == 0 for c in counts) == [False, True]
    for traced_on in range(2):
        x = eager.preprocess(images[traced_on])
        # ONNX only: TorchScript records the same trace.
        paths = export_model(cfg, model, sample_inputs(x["image"], x["height"], x["width"]),
                             str(tmp_path / str(traced_on)), ["onnx"])
        for fmt, path in paths.items():
            predictor = ExportedYOLACTPredictor(path)
            for im in images:
                expected, actual = eager(im)["instances"], predictor(im)["instances"]
                assert_reproduces(expected, actual, (fmt, traced_on))
                assert tuple(actual.pred_masks.shape[1:]) == im.shape[:2]


# ------------------------------------------------------------------------------ bad input
def test_load_exported_rejects_bad_files(tmp_path):
    missing = tmp_path / "none.onnx"
    with pytest.raises(FileNotFoundError, match="none.onnx"):
        load_exported(str(missing))
    other = tmp_path / "model.pth"
    other.write_bytes(b"x")
    with pytest.raises(ValueError, match="model.pth.*unknown exported model type"):
        load_exported(str(other))
    # A valid ONNX file, but not one of ours: no description of its interface.
    plain = tmp_path / "plain.onnx"
    torch.onnx.export(nn.ReLU(), (torch.zeros(2),), str(plain), dynamo=False,
                      opset_version=ONNX_OPSET)
    with pytest.raises(ValueError, match="plain.onnx.*mayolact_export"):
        load_exported(str(plain))


def test_export_rejects_training_mode_and_old_opsets(tmp_path):
    cfg = get_config(str(CONFIGS["yolact"]), OPTS)
    model = build_model(cfg)
    inputs = sample_inputs(torch.zeros(3, 128, 128, dtype=torch.uint8), 100, 80)
    with pytest.raises(ValueError, match="eval mode"):
        export_onnx(cfg, model.train(), inputs, str(tmp_path / "m.onnx"))
    with pytest.raises(ValueError, match="opset 17 .*DeformConv"):
        export_onnx(cfg, model.eval(), inputs, str(tmp_path / "m.onnx"), opset=17)
    assert not (tmp_path / "m.onnx").exists()


def test_export_tool_reports_a_missing_sample_image(tmp_path, capsys):
    code = load_tool("export_model").main([
        "--config-file", str(CONFIGS["yolact"]), "--sample-image", str(tmp_path / "no.jpg"),
        "--output", str(tmp_path)])
    assert code == 1
    assert "no.jpg" in capsys.readouterr().err
