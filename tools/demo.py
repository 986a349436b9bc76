#!/usr/bin/env python
"""Run a YOLACT / maYOLACT model on images, folders or a video and draw the predictions.

Drawings use Detectron2's ``Visualizer`` (``VideoVisualizer`` for videos) and are written to
``--output`` (a folder; for a video, a file path or a folder).

Examples::

    python tools/demo.py \
        --config-file configs/COCO-InstanceSegmentation/mayolact_R_50_FPN_550.yaml \
        --input ../shared/data/coco_mini/val2017 --output output/vis MODEL.WEIGHTS model_final.pth
    python tools/demo.py --config-file <cfg> --video-input clip.mp4 --output output/clip.mp4 \
        MODEL.WEIGHTS model_final.pth
    python tools/demo.py --config-file <cfg> --exported output/export/model.onnx \
        --input ../shared/data/coco_mini/val2017 \
        --output output/vis  # tools/export_model.py's model

Exit status: 0 when every input was drawn; 1 when an input is missing or some images could not be
read (each is named on stderr; the others are drawn); 2 for a bad config or output path, or a
weights file that cannot be used (unreadable, damaged, holding code, or leaving the heads
untrained: backbone-only ImageNet weights draw random detections).
"""
import argparse
import os
import sys


def get_parser():
    parser = argparse.ArgumentParser(description="maYOLACT demo: draw predictions with Visualizer")
    parser.add_argument("--config-file", required=True, metavar="FILE",
                        help="path to a config file")
    parser.add_argument("--input", nargs="+",
                        help="image files, folders of images, or glob patterns")
    parser.add_argument("--video-input", help="path to a video file")
    parser.add_argument("--output", required=True,
                        help="folder for the drawn images (or the output video path)")
    parser.add_argument("--confidence-threshold", type=float, default=0.3,
                        help="minimum score of the drawn instances")
    parser.add_argument("--exported", default=None, metavar="MODEL",
                        help="predict with this model of tools/export_model.py (.onnx in "
                             "onnxruntime on the CPU, .ts TorchScript) instead of building one")
    parser.add_argument("--metadata", default=None,
                        help="dataset whose class names to draw "
                             "(default: the config's first test set)")
    parser.add_argument("opts", default=[], nargs=argparse.REMAINDER,
                        help="config overrides as KEY VALUE pairs")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    # After parsing: --help and usage errors need none of these.
    from mayolact.checkpoint import CheckpointError
    from mayolact.config import ConfigError, load_config, take_overrides
    from mayolact.engine.checks import (
        PreflightError,
        check_config,
        check_datasets_registered,
        check_writable,
    )
    from mayolact.engine.demo import Demo, expand_inputs
    from mayolact.utils.logger import setup_logging

    logger = setup_logging(with_detectron2=True)
    if not args.input and not args.video_input:
        print("error: give --input or --video-input", file=sys.stderr)
        return 2
    if args.input:  # `--input a.jpg KEY VALUE`: the overrides go back to opts
        args.input, args.opts = take_overrides(args.input, args.opts)
    try:
        cfg = load_config(args.config_file, args.opts)
        if not args.exported:
            check_config(cfg, train=False)
    except (ConfigError, PreflightError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cfg.freeze()
    # Check the inputs before building the model: a wrong path fails fast, with its name.
    try:
        if args.video_input:
            if not os.path.isfile(args.video_input):
                raise FileNotFoundError(f"{args.video_input}: no such video file")
        else:
            files = expand_inputs(args.input)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    # ... and the output, so that no model runs for drawings that cannot be written.
    try:
        if args.metadata:
            check_datasets_registered("--metadata", [args.metadata])
        video_to_file = args.video_input and not os.path.isdir(args.output)
        check_writable(
            os.path.dirname(os.path.abspath(args.output)) if video_to_file else args.output,
            "--output",
        )
    except PreflightError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    predictor = None
    if args.exported:
        from mayolact.export.exporter import ExportedYOLACTPredictor

        try:
            predictor = ExportedYOLACTPredictor(args.exported)
        except (OSError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    try:
        demo = Demo(cfg, args.metadata, args.confidence_threshold, predictor=predictor)
    except (CheckpointError, FileNotFoundError) as e:  # MODEL.WEIGHTS, named in the message
        print(f"error: {e}", file=sys.stderr)
        return 2

    if args.video_input:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        try:
            out = demo.run_video(args.video_input, args.output)
        except OSError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        logger.info("wrote %s", out)
        return 0

    os.makedirs(args.output, exist_ok=True)
    failed = demo.draw_files(files, args.output)
    logger.info("wrote %d drawings to %s", len(files) - len(failed), args.output)
    for message in failed:
        print(f"error: {message}", file=sys.stderr)
    if failed:
        print(f"error: {len(failed)} of {len(files)} inputs could not be read", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
