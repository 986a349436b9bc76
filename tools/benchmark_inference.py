#!/usr/bin/env python
"""Table 4 speed study: where inference time goes, per stage, against the machine's arithmetic peak.

For each config: randomly initialised weights (unless ``MODEL.WEIGHTS`` is given among the
overrides), a few warm-up batches, then the time per image over real images (``coco_mini_val`` when
present, else the shapes set) through :class:`mayolact.engine.predictor.YOLACTPredictor`, from the
uint8 BGR image to the final ``Instances`` with full-resolution masks. ``--batch N`` runs N images
per forward pass. On CUDA the timers synchronise the device.

Reported per config: anchors, parameters, fvcore's FLOPs of one image (one multiply-add is one flop;
torchvision's deformable convs counted as convs), end-to-end time and fps against the first row, the
achieved GFLOP/s against the peak that the tool measures first on the same device and threads
(a large matmul and a 3x3 convolution), and the time of each stage, measured by the model's own
stage hooks (:mod:`mayolact.utils.profiling`): pre-process, backbone + FPN, head + protonet, top-k +
decode, NMS, masks. ``TEST.YOLACT.OPTIMIZE True`` times the folded-batch-norm, channels-last model.

Example::

    python tools/benchmark_inference.py --images 20 --device cpu
    python tools/benchmark_inference.py --images 20 TEST.YOLACT.OPTIMIZE True
    python tools/benchmark_inference.py --batch 4 \
        --configs configs/COCO-InstanceSegmentation/mayolact_R_50_FPN_550.yaml
"""
import argparse
import sys

# mayolact, torch and Detectron2 are imported in main(): --help needs none of them.


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--configs", nargs="+", help="config files (default: the Table 4 rows at 550)")
    p.add_argument("--images", type=int, default=20, help="timed images")
    p.add_argument("--warmup", type=int, default=3, help="warm-up batches (not timed)")
    p.add_argument("--device", default=None,
                   help="torch device, e.g. cpu or cuda (default: cuda when available, else cpu)")
    p.add_argument("--dataset", default=None,
                   help="default: coco_mini_val, else mayolact_shapes_val")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--batch", type=int, default=1, help="images per forward pass")
    p.add_argument("--peak-seconds", type=float, default=1.0,
                   help="time budget of each peak micro-benchmark")
    p.add_argument("--no-flops", action="store_true", help="skip the fvcore GFLOPs count")
    p.add_argument("--exported", action="append", default=[], metavar="MODEL",
                   help="also time an exported model (.onnx, .ts of tools/export_model.py); "
                        "repeatable")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides for every config")
    return p


def main(argv=None):
    p = get_parser()
    args = p.parse_args(argv)
    if args.batch < 1:
        p.error(f"--batch must be >= 1, got {args.batch}")
    from mayolact.analysis.benchmark_inference import run_benchmark

    return run_benchmark(args)


if __name__ == "__main__":
    sys.exit(main())
