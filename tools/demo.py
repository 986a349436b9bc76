#!/usr/bin/env python
"""Run a YOLACT / maYOLACT model on images, folders or a video and draw the predictions.

Drawings use Detectron2's ``Visualizer`` (``VideoVisualizer`` for videos) and are written to
``--output`` (a folder; for a video, a file path or a folder).

Examples::

    python tools/demo.py \
        --config-file configs/COCO-InstanceSegmentation/mayolact_R_50_FPN_550.yaml \
        --input images/ --output output/vis MODEL.WEIGHTS model_final.pth
    python tools/demo.py --config-file <cfg> --video-input clip.mp4 --output output/clip.mp4 \
        MODEL.WEIGHTS model_final.pth
    python tools/demo.py --config-file <cfg> --exported output/export/model.onnx \
        --input datasets/coco_mini/val2017 \
        --output output/vis  # tools/export_model.py's model; tools/make_coco_mini.py: coco_mini

An image without an instance at ``--confidence-threshold`` is logged with the best score below it.

Exit status: 0 when every input was drawn; 1 when an input is missing or some images could not be
read (each is named on stderr; the others are drawn); 2 for a bad config or output path, or a
weights file that cannot be used (unreadable, damaged, holding code, or leaving the heads
untrained: backbone-only ImageNet weights draw random detections).
"""
import argparse
import sys


def get_parser():
    parser = argparse.ArgumentParser(description="maYOLACT demo: draw predictions with Visualizer",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
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
                        help="dataset whose class names to draw; None: the config's first "
                             "test set")
    parser.add_argument("opts", default=[], nargs=argparse.REMAINDER,
                        help="config overrides as KEY VALUE pairs")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    # After parsing: --help and usage errors need none of these.
    from mayolact.engine.demo import run_demo
    from mayolact.utils.logger import setup_logging

    setup_logging(with_detectron2=True)
    return run_demo(args)


if __name__ == "__main__":
    sys.exit(main())
