"""Stage timing from the model's own code, FLOP counting (deformable convs included), peak rate."""
import numpy as np
import torch

from mayolact.engine.predictor import YOLACTPredictor
from mayolact.modeling.backbone.resnet import ModulatedDeformConv2d
from mayolact.utils.profiling import (
    STAGES,
    StageTimer,
    count_flops,
    measure_peak_flops,
    stage,
)

from common import build_tiny_model, tiny_config


def test_stage_timer_accumulates_and_none_is_a_noop():
    timer = StageTimer()
    for _ in range(2):
        with stage(timer, "a"):
            sum(range(1000))
    assert set(timer.seconds) == {"a"} and timer.seconds["a"] > 0
    with stage(None, "a"):
        pass
    timer.reset()
    assert timer.seconds == {}


def test_predictor_stages_cover_inference():
    cfg = tiny_config(size=96)
    pred = YOLACTPredictor(cfg)
    timer = StageTimer(pred.model.device)
    pred.model.stage_timer = timer
    images = [np.random.default_rng(i).integers(0, 256, (80, 120, 3), dtype=np.uint8)
              for i in range(2)]
    pred(images)
    assert list(timer.seconds) == list(STAGES)
    assert all(t > 0 for t in timer.seconds.values())
    pred.model.stage_timer = None
    pred(images[0])  # untimed: nothing added
    assert list(timer.seconds) == list(STAGES)


def test_count_flops_by_module():
    cfg = tiny_config(size=64)
    model = build_tiny_model(cfg).eval()
    inputs = [{"image": torch.zeros(3, 64, 64, dtype=torch.uint8), "height": 64, "width": 64}]
    flops = count_flops(model, inputs)
    assert {"", "backbone", "head", "protonet"} <= set(flops)
    assert flops["backbone"] > 0 and flops["head"] > 0 and flops["protonet"] > 0
    assert flops[""] >= flops["backbone"] + flops["head"] + flops["protonet"]
    # The head's predictors, by hand: 3x3 convs from C to A*(K+1), A*4, A*k on every level.
    head = model.head
    c = head.cls_score.in_channels
    outs = head.cls_score.out_channels + head.bbox_pred.out_channels + head.coeff_pred.out_channels
    tower = sum(m.out_channels for m in head.tower if isinstance(m, torch.nn.Conv2d))
    positions = sum(h * w for h, w in [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)])
    assert flops["head"] == c * 9 * (outs + tower) * positions


def test_deformable_conv_flops_are_counted():
    conv = ModulatedDeformConv2d(8, 16, 3, padding=1, stride=2).eval()

    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dcn = conv

        def forward(self, x):
            n, _, h, w = x.shape
            offset = x.new_zeros(n, 18, (h + 1) // 2, (w + 1) // 2)
            mask = x.new_ones(n, 9, (h + 1) // 2, (w + 1) // 2)
            return self.dcn(x, offset, mask)

    from detectron2.utils.analysis import FlopCountAnalysis  # as count_flops, on a plain module

    from mayolact.utils.profiling import deform_conv2d_flop_jit

    analysis = FlopCountAnalysis(Wrapper(), (torch.zeros(2, 8, 10, 10),))
    analysis.set_op_handle("torchvision::deform_conv2d", deform_conv2d_flop_jit)
    assert analysis.total() == 2 * 16 * 5 * 5 * 8 * 9


def test_measure_peak_flops():
    rates = measure_peak_flops(seconds=0.01)
    assert set(rates) == {"matmul", "conv3x3", "peak"}
    assert rates["peak"] == max(rates["matmul"], rates["conv3x3"]) > 1e8
