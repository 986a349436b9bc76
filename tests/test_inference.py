"""Inference rewrites (folded batch norm, channels-last), the default wherever the model only
infers, and the batched predictor."""
import copy

import numpy as np
import pytest
import torch
from detectron2.engine import DefaultPredictor
from detectron2.layers import Conv2d, FrozenBatchNorm2d
from torch import nn

from mayolact.engine.predictor import YOLACTPredictor
from mayolact.modeling.backbone.resnet import ModulatedDeformConv2d
from mayolact.modeling.optimize import fold_batch_norms, optimize_for_inference

from common import build_tiny_model, tiny_config


def _randomise_norm(norm, gen):
    c = norm.num_features
    norm.weight.data = torch.rand(c, generator=gen) + 0.5
    norm.bias.data = torch.randn(c, generator=gen) * 0.2
    norm.running_mean.copy_(torch.randn(c, generator=gen) * 0.5)
    norm.running_var.copy_(torch.rand(c, generator=gen) * 2 + 0.1)
    return norm


@pytest.mark.parametrize("norm_cls,bias", [
    (nn.BatchNorm2d, False), (nn.BatchNorm2d, True), (FrozenBatchNorm2d, False)])
def test_fold_batch_norm_into_conv(norm_cls, bias):
    gen = torch.Generator().manual_seed(0)
    conv = Conv2d(6, 5, 3, padding=1, stride=2, bias=bias,
                  norm=_randomise_norm(norm_cls(5), gen)).eval()
    if bias:
        conv.bias.data = torch.randn(5, generator=gen)
    x = torch.randn(2, 6, 11, 9, generator=gen)
    with torch.no_grad():
        expected = conv.norm(nn.functional.conv2d(x, conv.weight, conv.bias, 2, 1))
        assert fold_batch_norms(conv) == 1
        assert conv.norm is None and conv.bias is not None
        torch.testing.assert_close(conv(x), expected, rtol=1e-5, atol=1e-5)
    assert fold_batch_norms(conv) == 0  # nothing left to fold


def test_fold_batch_norm_into_deformable_conv():
    gen = torch.Generator().manual_seed(1)
    conv = ModulatedDeformConv2d(4, 6, 3, padding=1, deformable_groups=2,
                                 norm=_randomise_norm(nn.BatchNorm2d(6), gen)).eval()
    x = torch.randn(1, 4, 7, 8, generator=gen)
    offset = torch.randn(1, 2 * 2 * 9, 7, 8, generator=gen)
    mask = torch.rand(1, 2 * 9, 7, 8, generator=gen)
    with torch.no_grad():
        expected = conv(x, offset, mask)
        assert fold_batch_norms(conv) == 1
        assert conv.norm is None
        torch.testing.assert_close(conv(x, offset, mask), expected, rtol=1e-5, atol=1e-5)


def test_training_mode_norms_are_not_folded():
    conv = Conv2d(3, 4, 1, norm=nn.BatchNorm2d(4)).train()
    assert fold_batch_norms(conv) == 0 and isinstance(conv.norm, nn.BatchNorm2d)


def _instances_close(a, b, box_atol=1e-3, score_atol=1e-5, max_mask_pixels=0):
    """Same detections up to float rounding: same count, classes and order, close boxes and
    scores, masks differing in at most ``max_mask_pixels`` pixels in all."""
    assert len(a) == len(b) > 0
    assert torch.equal(a.pred_classes, b.pred_classes)
    torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor, atol=box_atol, rtol=0)
    torch.testing.assert_close(a.scores, b.scores, atol=score_atol, rtol=0)
    assert int((a.pred_masks != b.pred_masks).sum()) <= max_mask_pixels


@pytest.mark.parametrize("variant", ["fixed_iou", "mayolact"])
def test_optimized_model_gives_the_same_detections(variant):
    cfg = tiny_config(variant, size=128, num_classes=3)
    model = build_tiny_model(cfg, seed=3).eval()
    gen = torch.Generator().manual_seed(4)
    for m in model.modules():  # batch norms that do something
        if isinstance(m, nn.BatchNorm2d):
            _randomise_norm(m, gen)
    fast = optimize_for_inference(copy.deepcopy(model))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert fast.backbone.bottom_up.stem.conv1.weight.is_contiguous(
        memory_format=torch.channels_last)
    inputs = [{"image": torch.randint(0, 256, (3, 128, 128), dtype=torch.uint8, generator=gen),
               "height": 96, "width": 160}]
    with torch.inference_mode():
        expected = model(inputs)[0]["instances"]
        got = fast(inputs)[0]["instances"]
    _instances_close(got, expected, max_mask_pixels=20)


def _images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            for h, w in [(100, 150), (128, 128), (90, 200)]]


@pytest.mark.parametrize("optimize", [False, True])
def test_predictor_batch_equals_one_at_a_time(optimize):
    cfg = tiny_config(size=128, num_classes=3)
    cfg.TEST.YOLACT.OPTIMIZE = optimize
    torch.manual_seed(0)
    pred = YOLACTPredictor(cfg)
    images = _images()
    calls = []
    pred.model.register_forward_pre_hook(lambda m, args: calls.append(len(args[0])))
    batch = pred(images)
    assert calls == [3]  # one forward for the three images
    assert isinstance(batch, list) and len(batch) == 3
    for image, out in zip(images, batch):
        single = pred(image)["instances"]
        assert out["instances"].image_size == image.shape[:2]
        # A batch may run other convolution kernels than one image: a few ulps apart.
        _instances_close(out["instances"], single)


def test_predictor_is_a_default_predictor():
    from mayolact import YOLACTPredictor as exported

    assert exported is YOLACTPredictor
    cfg = tiny_config(size=64)
    cfg.DATASETS.TEST = ("mayolact_shapes_val",)
    pred = YOLACTPredictor(cfg)
    assert isinstance(pred, DefaultPredictor) and not pred.model.training
    assert pred.metadata.name == "mayolact_shapes_val"
    with pytest.raises(ValueError, match="empty list"):
        pred([])
    with pytest.raises(ValueError, match=r"image 0 of the batch has shape \(10, 10\)"):
        pred([np.zeros((10, 10), np.uint8)])
    cfg.INPUT.FORMAT = "YUV"
    with pytest.raises(ValueError, match="INPUT.FORMAT"):
        YOLACTPredictor(cfg)


def _is_rewritten(model):
    return (not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
            and model.backbone.bottom_up.stem.conv1.weight.is_contiguous(
                memory_format=torch.channels_last))


def test_rewrites_are_the_default_and_one_switch_away():
    """The predictor rewrites by default; TEST.YOLACT.OPTIMIZE False is the bit-exact path, whose
    model is the one Trainer.build_model gives (the same detections up to float rounding)."""
    cfg = tiny_config("mayolact", size=96, num_classes=3)
    assert cfg.TEST.YOLACT.OPTIMIZE
    torch.manual_seed(0)
    fast = YOLACTPredictor(cfg)
    cfg.TEST.YOLACT.OPTIMIZE = False
    torch.manual_seed(0)
    exact = YOLACTPredictor(cfg)
    assert _is_rewritten(fast.model) and not _is_rewritten(exact.model)
    assert any(isinstance(m, nn.BatchNorm2d) for m in exact.model.modules())
    image = _images()[0]
    _instances_close(fast(image)["instances"], exact(image)["instances"], max_mask_pixels=20)


@pytest.mark.parametrize("optimize", [True, False])
def test_eval_only_evaluates_the_rewritten_model(monkeypatch, tmp_path, optimize):
    """tools/train_net.py --eval-only: the loaded model is rewritten before Trainer.test, unless
    TEST.YOLACT.OPTIMIZE False."""
    from mayolact.engine import Trainer

    from common import QUICK, load_tool

    tested = []
    monkeypatch.setattr(Trainer, "test", classmethod(lambda cls, cfg, model: tested.append(model)
                                                     or {}))
    tool = load_tool("train_net")
    args = tool.training_argument_parser().parse_args([
        "--config-file", str(QUICK / "mayolact_R_50_FPN_quick.yaml"), "--eval-only",
        "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "OUTPUT_DIR", str(tmp_path),
        "DATASETS.TEST", "('mayolact_shapes_val',)", "MODEL.YOLACT.NUM_CLASSES", "8",
        "TEST.YOLACT.OPTIMIZE", str(optimize)])
    tool.main(tool.finish_training_args(args))
    assert len(tested) == 1 and _is_rewritten(tested[0]) == optimize
