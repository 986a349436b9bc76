#!/usr/bin/env python
"""Table 4 speed study: where inference time goes, per stage, against the machine's arithmetic peak.

For each config: randomly initialised weights (unless ``MODEL.WEIGHTS`` is given among the
overrides), a few warm-up batches, then the time per image over real images (``coco_mini_val`` when
present, else the shapes set) through :class:`mayolact.engine.predictor.YOLACTPredictor` (its
default path: the inference rewrites and, on the CPU, the vectorised DCN kernel), from the uint8
BGR image to the final ``Instances`` with full-resolution masks. ``--batch N`` runs N images per
forward pass. All models (configs, ``--compare-paths`` variants, ``--exported`` files) run in ONE
interleaved loop, image by image, so that their ratios hold on a busy machine. On CUDA the timers
synchronise the device.

Reported per config: anchors, parameters, fvcore's FLOPs of one image (one multiply-add is one flop;
deformable convs counted as convs), end-to-end time and fps against the first row, the achieved
GFLOP/s against the peak that the tool measures first on the same device and threads (a large
matmul and a 3x3 convolution), the time of each stage, measured by the model's own stage hooks
(:mod:`mayolact.utils.profiling`): pre-process, backbone + FPN, head + protonet, top-k + decode,
NMS, masks; the arithmetic rate of each ResNet stage (dense and deformable); and the ratios the
Table 4 claims rest on. ``--matched-load`` adds every config again with trained-like weights
(:mod:`mayolact.analysis.trained_like`: all models return ``TEST.DETECTIONS_PER_IMAGE``
detections, so the mask tail runs at the same load) and their end-to-end ratio; random weights
set the number of detections arbitrarily. ``--compare-paths`` adds the first config's explicitly
rewritten path and the bit-exact path (``TEST.YOLACT.OPTIMIZE False MODEL.YOLACT.DCN_KERNEL
torchvision``) of the first and the last config; ``--deviation N`` compares each config's
detections with its bit-exact path.

Example::

    python tools/benchmark_inference.py --images 20 --device cpu --compare-paths --deviation 4
    python tools/benchmark_inference.py --batch 4 \
        --configs configs/COCO-InstanceSegmentation/mayolact_R_50_FPN_550.yaml
    python tools/benchmark_inference.py --configs <cfg> --exported model.onnx \
        --exported model_int8.onnx MODEL.WEIGHTS model_final.pth
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
    p.add_argument("--profile-exported", action="store_true",
                   help="also split each exported ONNX model's time by part of the graph (DCN, "
                        "CARAFE, backbone, head, mask resize, post-processing; onnxruntime's "
                        "profiler)")
    p.add_argument("--compare-paths", action="store_true",
                   help="also time the first config's rewritten path and the bit-exact path of "
                        "the first and the last config")
    p.add_argument("--clock", choices=("wall", "thread"), default="wall",
                   help="wall: wall-clock time (default); thread: CPU time of the one thread that "
                        "runs the models (with --threads 1; a shared machine inflates it less)")
    p.add_argument("--matched-load", action="store_true",
                   help="also time every config with its seeded weights rescaled to behave like "
                        "a trained model's (mayolact.analysis.trained_like), so that all return "
                        "TEST.DETECTIONS_PER_IMAGE detections, and print the ratio at that load")
    p.add_argument("--deviation", type=int, default=0, metavar="N",
                   help="compare each config's outputs with its bit-exact path on the first N "
                        "images")
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
