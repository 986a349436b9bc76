"""Where inference time goes: per-stage times from the model's own code, FLOPs, the machine's peak.

* Stage timing: ``YOLACT.forward`` and :class:`mayolact.engine.predictor.YOLACTPredictor` wrap each
  stage of inference in ``stage(timer, name)`` (names in :data:`STAGES`). With no timer attached
  (``model.stage_timer = None``, the default) that is a no-op; attach a :class:`StageTimer` to
  measure. On CUDA the timer synchronises the device around each stage.
* FLOPs: fvcore's counter through Detectron2's :class:`FlopCountAnalysis` (the whole model traced
  on one input, per module), plus a handle for torchvision's ``deform_conv2d``, which fvcore does
  not count. fvcore counts one multiply-add as one flop; every number here uses that convention.
* Peak: :func:`measure_peak_flops` times a large matmul and a 3x3 convolution on the device, in
  the same convention, so ``flops / seconds / peak`` is the fraction of the machine's arithmetic
  limit that a stage or a model reaches.
"""
import contextlib
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "STAGES",
    "cpu_time",
    "median_time",
    "StageTimer",
    "stage",
    "count_flops",
    "deform_conv2d_flop_jit",
    "measure_peak_flops",
]

STAGES = (
    "pre-process",  # the predictor's square resize, then the model's normalisation and batching
    "backbone + FPN",
    "head + protonet",
    "top-k + decode",  # per-level softmax and top-k, anchors, box decoding
    "NMS",
    "masks",  # mask assembly (prototypes x coefficients, sigmoid, crop), box scaling, mask resize
)
"""Stage names, in the order inference runs them."""


def median_time(fn: Callable[[], object], repeats: int,
                clock: Callable[[], float] = time.perf_counter, warmup: int = 0) -> float:
    """Median seconds of ``clock`` over ``repeats`` calls of ``fn``, after ``warmup`` untimed
    calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append(clock() - start)
    return statistics.median(times)


def cpu_time(fn: Callable[[], object], repeats: int) -> float:
    """Median CPU seconds of the calling thread over ``repeats`` calls of ``fn``, after one
    warm-up call: the micro-benchmarks' clock, robust to other processes on the machine."""
    return median_time(fn, repeats, clock=time.thread_time, warmup=1)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StageTimer:
    """Accumulates the wall-clock seconds spent in each named stage.

    Example::

        timer = StageTimer(model.device)
        model.stage_timer = timer
        predictor(images)
        timer.seconds  # {"pre-process": ..., "backbone + FPN": ..., ...}
    """

    def __init__(self, device: Optional[torch.device] = None,
                 clock: Callable[[], float] = time.perf_counter):
        """
        Args:
            device: the model's device; on CUDA each stage is bracketed by a synchronisation.
            clock: seconds from a fixed origin: wall clock by default, ``time.thread_time`` for
                the CPU time of a single-threaded run on a machine that others share.
        """
        self.device = torch.device(device if device is not None else "cpu")
        self.clock = clock
        self.seconds: Dict[str, float] = {}

    def reset(self) -> None:
        """Forget the accumulated times."""
        self.seconds = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        """A context that adds its duration to ``seconds[name]``."""
        _synchronize(self.device)
        start = self.clock()
        try:
            yield
        finally:
            _synchronize(self.device)
            self.seconds[name] = self.seconds.get(name, 0.0) + self.clock() - start


def stage(timer: Optional[StageTimer], name: str):
    """``timer(name)``, or a no-op context when ``timer`` is None (the default of the model)."""
    return contextlib.nullcontext() if timer is None else timer(name)


def deform_conv2d_flop_jit(inputs: List, outputs: List) -> int:
    """fvcore handle for ``torchvision::deform_conv2d``: multiply-adds of the convolution.

    Counted as a dense convolution of the same shape (N * C_out * H_out * W_out * C_in / groups *
    kh * kw), as mmcv's counter does for DCN; the bilinear sampling of the offsets is not counted.

    Args:
        inputs: the JIT values of the op: input (N, C_in, H, W), weight (C_out, C_in / groups, kh,
            kw), offset, mask, bias, strides, paddings, dilations, groups, ...
        outputs: the output (N, C_out, H_out, W_out).
    """
    weight = inputs[1].type().sizes()
    out = outputs[0].type().sizes()
    return int(out[0] * out[1] * out[2] * out[3] * weight[1] * weight[2] * weight[3])


def count_flops(model: nn.Module, inputs: List[Dict],
                extra_modules: Sequence[str] = ()) -> Dict[str, float]:
    """Multiply-adds of one inference, in total and per top-level submodule.

    Args:
        model: an eval-mode Detectron2 model.
        inputs: one model input list (as the model's ``forward`` takes it).
        extra_modules: further submodules to report, by name (e.g.
            "backbone.bottom_up.res3"); a name the model lacks counts 0.

    Returns:
        dict: "" -> the whole forward (post-processing included), and each direct child's name
        (e.g. "backbone", "head", "protonet") and each of ``extra_modules`` -> its share. fvcore
        convention: one multiply-add is one flop.
    """
    from detectron2.utils.analysis import FlopCountAnalysis  # fvcore: only when counting

    with torch.no_grad():
        analysis = FlopCountAnalysis(model, inputs)
        analysis.set_op_handle("torchvision::deform_conv2d", deform_conv2d_flop_jit)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        by_module = analysis.by_module()
    # The analysis traces the model inside a TracingAdapter, which holds it as "model".
    out = {"": float(analysis.total())}
    for name in [n for n, _ in model.named_children()] + list(extra_modules):
        out[name] = float(by_module.get(f"model.{name}", 0))
    return out


def measure_peak_flops(
    device: Optional[torch.device] = None, seconds: float = 1.0,
    clock: Callable[[], float] = time.perf_counter,
) -> Dict[str, float]:
    """The device's measured arithmetic rate on dense float32 kernels (multiply-adds per second).

    Two micro-benchmarks, each repeated for about ``seconds`` after a warm-up, the best repetition
    kept: a 2048 x 2048 x 2048 matmul, and a 3x3 convolution of 256 -> 256 channels on a 69 x 69
    map (the FPN's P3 at 550, batch 1; batch 8 on CUDA so that the device fills), as PyTorch runs it
    for the model (oneDNN on CPU, cuDNN on CUDA).

    Args:
        device: where to measure (default CPU). Uses the current torch thread count.
        seconds: time budget per micro-benchmark (wall clock).
        clock: what times each repetition (:class:`StageTimer`'s ``clock``).

    Returns:
        dict: "matmul", "conv3x3" -> multiply-adds per second, and "peak" the larger.
    """
    device = torch.device(device if device is not None else "cpu")
    gen = torch.Generator(device="cpu").manual_seed(0)
    n = 2048
    a = torch.randn(n, n, generator=gen).to(device)
    b = torch.randn(n, n, generator=gen).to(device)
    batch = 8 if device.type == "cuda" else 1
    x = torch.randn(batch, 256, 69, 69, generator=gen).to(device)
    w = torch.randn(256, 256, 3, 3, generator=gen).to(device)
    kernels = {
        "matmul": (lambda: torch.mm(a, b), float(n) ** 3),
        "conv3x3": (lambda: F.conv2d(x, w, padding=1), float(batch * 256 * 256 * 9 * 69 * 69)),
    }
    rates = {}
    with torch.inference_mode():
        for name, (fn, macs) in kernels.items():
            fn()
            _synchronize(device)
            best = float("inf")
            deadline = time.perf_counter() + seconds
            while True:
                start = clock()
                fn()
                _synchronize(device)
                best = min(best, clock() - start)
                if time.perf_counter() >= deadline:
                    break
            rates[name] = macs / best
    rates["peak"] = max(rates.values())
    return rates
