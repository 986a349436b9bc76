#!/usr/bin/env python
"""CPU speed of maYOLACT's DCNv2 and CARAFE kernels, layer by layer, and of DCN training.

Three tables, each
checking first that the kernels it compares agree:

1. **DCNv2 forward** at maYOLACT-550's deformable shapes (res3-res5, 4 offset groups, offsets of
   a few pixels, channels-last as the inference rewrites lay it out): the dense 3x3 convolution of
   the same shape (the rate a DCN layer could reach), the vectorised ATen kernel
   (``mayolact.modeling.backbone.deform_conv``, ``MODEL.YOLACT.DCN_KERNEL aten``) and
   ``torchvision.ops.deform_conv2d``.
2. **DCN training**: forward + backward of the deformable ResNet (random offsets of a few tenths
   of a pixel) with either kernel, at the demo's size (one DCN block, as the demo; every block of
   res3-res5, as maYOLACT) and at 550; the ratio decides what ``DCN_KERNEL auto`` trains with on
   the CPU.
3. **CARAFE reassembly** at maYOLACT-550's four upsamplings: the package's ``carafe`` against the
   ``einsum`` over the unfolded input it replaced.

``--onnx`` adds a fourth: one res3 DCN layer exported as ONNX ``DeformConv`` and in the standard
ops of the ATen kernel (``sampler="gather"``), run by onnxruntime.

Times are the median of ``--repeats`` calls in CPU seconds of the calling thread (robust to other
processes on the machine); run it with ``OMP_NUM_THREADS=1``.

Example::

    OMP_NUM_THREADS=1 python tools/benchmark_deform_conv.py --repeats 7 --onnx
"""
import argparse
import sys

# mayolact, torch and onnxruntime are imported in main(): --help needs none of them.


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--repeats", type=int, default=5, help="timed calls per kernel (median)")
    p.add_argument("--skip-training", action="store_true", help="leave out the training table")
    p.add_argument("--onnx", action="store_true", help="add the onnxruntime table")
    args = p.parse_args(argv)
    from mayolact.analysis.benchmark_deform_conv import run_benchmark

    return run_benchmark(args.repeats, training=not args.skip_training, onnx=args.onnx)


if __name__ == "__main__":
    sys.exit(main())
