"""The kernel benchmark of ``tools/benchmark_deform_conv.py``: CPU speed of maYOLACT's DCNv2 and
CARAFE kernels, layer by layer, and of DCN training (the tool's docstring says what each table
measures)."""
import io
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from torchvision.ops import deform_conv2d

from mayolact.config import load_config
from mayolact.export.exporter import ONNX_OPSET, onnx_symbolics
from mayolact.modeling.backbone.carafe import carafe
from mayolact.modeling.backbone.deform_conv import modulated_deform_conv2d
from mayolact.modeling.backbone.resnet import build_mayolact_resnet
from mayolact.utils.profiling import cpu_time

__all__ = ["run_benchmark"]

CONFIGS = Path(__file__).resolve().parents[4] / "configs"
#: maYOLACT-550's deformable 3x3 convolutions: (label, channels, input side, stride).
DCN_SHAPES = (("res3, first block (stride 2)", 128, 138, 2), ("res3", 128, 69, 1),
              ("res4", 256, 35, 1), ("res5", 512, 18, 1))
#: maYOLACT-550's CARAFE upsamplings: input side (256 channels, x2).
CARAFE_SIDES = (35, 18, 9, 5)


def dcn_inputs(channels, side, stride, seed=0):
    gen = torch.Generator().manual_seed(seed)
    out = (side - 1) // stride + 1
    cl = torch.channels_last
    x = torch.randn(1, channels, side, side, generator=gen).contiguous(memory_format=cl)
    offset = 2.0 * torch.randn(1, 2 * 4 * 9, out, out, generator=gen)
    mask = torch.rand(1, 4 * 9, out, out, generator=gen)
    weight = (0.05 * torch.randn(channels, channels, 3, 3, generator=gen)).contiguous(
        memory_format=cl)
    return x, offset, mask, weight


def dcn_forward_table(repeats):
    print("\nDCNv2 forward, maYOLACT-550 shapes, 4 offset groups, batch 1 (ms; the multiple of "
          "the dense 3x3 convolution of the same shape)\n")
    print("| layer | dense 3x3 conv | ATen kernel | torchvision | torchvision / ATen |")
    print("|---|---:|---:|---:|---:|")
    for label, channels, side, stride in DCN_SHAPES:
        x, offset, mask, weight = dcn_inputs(channels, side, stride)
        kw = dict(stride=stride, padding=1)
        with torch.inference_mode():
            ours = modulated_deform_conv2d(x, offset, mask, weight, None, **kw)
            ref = deform_conv2d(x, offset, weight, None, mask=mask, **kw)
            torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
            dense = cpu_time(lambda: F.conv2d(x, weight, **kw), repeats)
            aten = cpu_time(lambda: modulated_deform_conv2d(x, offset, mask, weight, None, **kw),
                            repeats)
            tv = cpu_time(lambda: deform_conv2d(x, offset, weight, None, mask=mask, **kw),
                          repeats)
        print(f"| {label} ({channels} ch, {side}x{side}) | {1e3 * dense:.1f} | {1e3 * aten:.1f} "
              f"({aten / dense:.2f}x) | {1e3 * tv:.1f} ({tv / dense:.2f}x) | {tv / aten:.1f}x |")


def _resnet(config, overrides, kernel):
    cfg = load_config(config, ["MODEL.WEIGHTS", "", "MODEL.YOLACT.DCN_KERNEL", kernel]
                      + list(overrides))
    torch.manual_seed(0)
    model = build_mayolact_resnet(cfg, ShapeSpec(channels=3)).train()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, m in model.named_modules():
            if name.endswith("conv2_offset"):  # offsets of a few tenths of a pixel
                m.weight.copy_(0.01 * torch.randn(m.weight.shape, generator=gen))
    return model


def training_table(repeats):
    demo = str(CONFIGS / "shapes" / "mayolact_shapes_demo.yaml")
    full = str(CONFIGS / "COCO-InstanceSegmentation" / "mayolact_R_50_FPN_550.yaml")
    rows = (
        ("demo backbone (quarter-width R-50, one DCN block), batch 8 at 192", demo, (), 8, 192),
        ("the same, DCN in every res3-res5 block (maYOLACT)", demo,
         ("MODEL.RESNETS.DEFORM_ON_PER_STAGE", "[False, True, True, True]",
          "MODEL.YOLACT.DEFORM_INTERVAL", "1"), 8, 192),
        ("maYOLACT-550 backbone (R-50, 13 DCN blocks), batch 2 at 550", full, (), 2, 550),
    )
    print("\nDCN training: forward + backward of the ResNet, mean squared outputs as the loss "
          "(s)\n")
    print("| backbone | torchvision | ATen kernel | ATen / torchvision |")
    print("|---|---:|---:|---:|")
    for label, config, overrides, batch, size in rows:
        x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(2))
        times = {}
        for kernel in ("torchvision", "aten"):
            model = _resnet(config, overrides, kernel)

            def step():
                model.zero_grad()
                sum(v.square().mean() for v in model(x).values()).backward()

            times[kernel] = cpu_time(step, repeats)
        print(f"| {label} | {times['torchvision']:.2f} | {times['aten']:.2f} | "
              f"{times['aten'] / times['torchvision']:.2f}x |")


def _carafe_einsum(x, kernels, k, s):
    """The reassembly ``carafe`` replaced: an einsum over the unfolded input (one group)."""
    n, c, h, w = x.shape
    unf = F.unfold(x, kernel_size=k, padding=(k - 1) // 2).view(n, c, k * k, h, w)
    return torch.einsum("nckhw,nkhpwq->nchpwq", unf, kernels.reshape(n, k * k, h, s, w, s)
                        ).reshape(n, c, h * s, w * s)


def carafe_table(repeats):
    print("\nCARAFE reassembly, maYOLACT-550's upsamplings (256 channels, k 5, x2; ms)\n")
    print("| input side | einsum over the unfolded input | carafe (k^2 channels-last "
          "multiply-adds) | speed-up |")
    print("|---|---:|---:|---:|")
    for side in CARAFE_SIDES:
        gen = torch.Generator().manual_seed(side)
        x = torch.randn(1, 256, side, side, generator=gen).contiguous(
            memory_format=torch.channels_last)
        m = torch.randn(1, 1, 25, 2 * side, 2 * side, generator=gen).softmax(2)
        with torch.inference_mode():
            torch.testing.assert_close(carafe(x, m, 5, 1, 2), _carafe_einsum(x, m, 5, 2))
            old = cpu_time(lambda: _carafe_einsum(x, m, 5, 2), repeats)
            new = cpu_time(lambda: carafe(x, m, 5, 1, 2), repeats)
        print(f"| {side} | {1e3 * old:.1f} | {1e3 * new:.1f} | {old / new:.1f}x |")


def onnx_table(repeats):
    import numpy as np
    import onnxruntime as ort

    class Layer(torch.nn.Module):
        def __init__(self, weight, sampler):
            super().__init__()
            self.weight, self.sampler = weight, sampler

        def forward(self, x, offset, mask):
            if self.sampler == "DeformConv":
                return deform_conv2d(x, offset, self.weight, None, padding=1, mask=mask)
            return modulated_deform_conv2d(x, offset, mask, self.weight, None, padding=1,
                                           sampler="gather")

    x, offset, mask, weight = dcn_inputs(128, 69, 1)
    x, weight = x.contiguous(), weight.contiguous()
    feeds = {"x": x.numpy(), "offset": offset.numpy(), "mask": mask.numpy()}
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    print("\nOne res3 DCN layer (128 channels, 69x69) in onnxruntime (ms)\n")
    print("| ONNX form | ms |")
    print("|---|---:|")
    outputs = []
    for sampler in ("DeformConv", "standard ops (sampler gather)"):
        f = io.BytesIO()
        with onnx_symbolics(ONNX_OPSET), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(Layer(weight, sampler), (x, offset, mask), f, dynamo=False,
                              opset_version=ONNX_OPSET, input_names=list(feeds))
        session = ort.InferenceSession(f.getvalue(), sess_options=options,
                                       providers=["CPUExecutionProvider"])
        used = {i.name for i in session.get_inputs()}
        feed = {k: v for k, v in feeds.items() if k in used}
        outputs.append(session.run(None, feed)[0])
        seconds = cpu_time(lambda: session.run(None, feed), repeats)
        print(f"| {sampler} | {1e3 * seconds:.1f} |")
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-3, atol=1e-3)


def run_benchmark(repeats: int, training: bool = True, onnx: bool = False) -> int:
    """Print the tables: DCN forward, DCN training (``training``), CARAFE and onnxruntime
    (``onnx``)."""
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); CPU seconds of the "
          f"calling thread, median of {repeats}")
    dcn_forward_table(repeats)
    if training:
        training_table(max(1, repeats // 2))
    carafe_table(repeats)
    if onnx:
        onnx_table(repeats)
    return 0
