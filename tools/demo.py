#!/usr/bin/env python
"""Run a YOLACT / maYOLACT model on images, folders or a video and draw the predictions.

Drawings use Detectron2's ``Visualizer`` (``VideoVisualizer`` for videos) and are written to
``--output`` (a folder; for a video, a file path or a folder).

Examples::

    python tools/demo.py --config-file configs/COCO-InstanceSegmentation/mayolact_R_50_FPN_550.yaml \
        --input ../shared/data/coco_mini/val2017 --output output/vis MODEL.WEIGHTS model_final.pth
    python tools/demo.py --config-file <cfg> --video-input clip.mp4 --output output/clip.mp4 \
        MODEL.WEIGHTS model_final.pth
"""
import argparse
import glob
import logging
import os
import sys
import time

import cv2
import numpy as np
import tqdm

from detectron2.data import MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.utils.logger import setup_logger
from detectron2.utils.video_visualizer import VideoVisualizer
from detectron2.utils.visualizer import ColorMode, Visualizer

import mayolact  # noqa: F401  (registers everything)
from mayolact.predictor import YOLACTPredictor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_net import ConfigError, load_config  # noqa: E402

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def get_parser():
    parser = argparse.ArgumentParser(description="maYOLACT demo: draw predictions with Visualizer")
    parser.add_argument("--config-file", required=True, metavar="FILE", help="path to a config file")
    parser.add_argument("--input", nargs="+", help="image files, folders of images, or glob patterns")
    parser.add_argument("--video-input", help="path to a video file")
    parser.add_argument("--output", required=True,
                        help="folder for the drawn images (or the output video path)")
    parser.add_argument("--confidence-threshold", type=float, default=0.3,
                        help="minimum score of the drawn instances")
    parser.add_argument("--metadata", default=None,
                        help="dataset whose class names to draw (default: the config's first test set)")
    parser.add_argument("opts", default=[], nargs=argparse.REMAINDER,
                        help="config overrides as KEY VALUE pairs")
    return parser


def expand_inputs(inputs):
    """Files from paths, folders (sorted, images only) and glob patterns; errors name the input."""
    files = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(f for f in glob.glob(os.path.join(item, "*"))
                           if f.lower().endswith(IMAGE_EXTENSIONS))
            if not found:
                raise FileNotFoundError(f"{item}: folder contains no images")
            files.extend(found)
        elif os.path.isfile(item):
            files.append(item)
        else:
            found = sorted(glob.glob(os.path.expanduser(item)))
            if not found:
                raise FileNotFoundError(f"{item}: no such file, folder or pattern")
            files.extend(found)
    return files


def atomic_imwrite(path, image_bgr):
    """Write an image through a temporary file so a crash never leaves a half-written file."""
    root, ext = os.path.splitext(path)
    tmp = f"{root}.tmp{ext}"
    if not cv2.imwrite(tmp, image_bgr):
        raise OSError(f"{path}: could not write the image")
    os.replace(tmp, path)


class Demo:
    """Predictor + Visualizer. ``draw(image)`` takes an image in the config's INPUT.FORMAT."""

    def __init__(self, cfg, metadata_name=None, confidence_threshold=0.3):
        names = cfg.DATASETS.TEST or cfg.DATASETS.TRAIN
        self.metadata = MetadataCatalog.get(metadata_name or (names[0] if names else "__unused"))
        self.predictor = YOLACTPredictor(cfg)
        self.input_format = cfg.INPUT.FORMAT
        self.threshold = confidence_threshold

    def predict(self, image):
        instances = self.predictor(image)["instances"].to("cpu")
        return instances[instances.scores >= self.threshold]

    def draw(self, image):
        """Returns (instances, drawing as an RGB uint8 array)."""
        instances = self.predict(image)
        rgb = image if self.input_format == "RGB" else image[:, :, ::-1]
        vis = Visualizer(rgb, self.metadata, instance_mode=ColorMode.IMAGE)
        return instances, vis.draw_instance_predictions(instances).get_image()

    def run_video(self, path, output):
        video = cv2.VideoCapture(path)
        if not video.isOpened():
            raise FileNotFoundError(f"{path}: cannot open the video")
        width = int(video.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(video.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = video.get(cv2.CAP_PROP_FPS) or 25.0
        frames = int(video.get(cv2.CAP_PROP_FRAME_COUNT))
        if os.path.isdir(output):
            output = os.path.join(output, os.path.splitext(os.path.basename(path))[0] + ".mp4")
        tmp = output + ".part.mp4"
        writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
        visualizer = VideoVisualizer(self.metadata, ColorMode.IMAGE)
        try:
            for _ in tqdm.tqdm(range(frames), desc=os.path.basename(path)):
                ok, frame_bgr = video.read()
                if not ok:
                    break
                frame = frame_bgr if self.input_format == "BGR" else frame_bgr[:, :, ::-1]
                instances = self.predict(np.ascontiguousarray(frame))
                drawn = visualizer.draw_instance_predictions(frame_bgr[:, :, ::-1], instances)
                writer.write(cv2.cvtColor(drawn.get_image(), cv2.COLOR_RGB2BGR))
        finally:
            video.release()
            writer.release()
        os.replace(tmp, output)
        return output


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logger(name="mayolact")
    logger = setup_logger()
    if not args.input and not args.video_input:
        print("error: give --input or --video-input", file=sys.stderr)
        return 2
    try:
        cfg = load_config(args.config_file, args.opts)
    except ConfigError as e:
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
    demo = Demo(cfg, args.metadata, args.confidence_threshold)

    if args.video_input:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        out = demo.run_video(args.video_input, args.output)
        logger.info("wrote %s", out)
        return 0

    os.makedirs(args.output, exist_ok=True)
    for path in tqdm.tqdm(files, disable=len(files) < 2):
        image = read_image(path, format=cfg.INPUT.FORMAT)  # raises naming the file if unreadable
        start = time.perf_counter()
        instances, drawing = demo.draw(image)
        logger.info("%s: %d instances in %.2fs", path, len(instances), time.perf_counter() - start)
        out = os.path.join(args.output, os.path.splitext(os.path.basename(path))[0] + ".png")
        atomic_imwrite(out, cv2.cvtColor(drawing, cv2.COLOR_RGB2BGR))
    logger.info("wrote %d drawings to %s", len(files), args.output)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main())
