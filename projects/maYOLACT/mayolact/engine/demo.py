"""Drawing predictions: the predictor and Detectron2's ``Visualizer`` behind ``tools/demo.py``
(:func:`run_demo`) and ``tools/demo_job.py``."""
import argparse
import collections
import glob
import logging
import os
import sys
import time
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import tqdm
from detectron2.data import MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.utils.video_visualizer import VideoVisualizer
from detectron2.utils.visualizer import ColorMode, Visualizer

from mayolact.data.datasets import dataset_metadata
from mayolact.engine.image_input import DEFAULT_MAX_IMAGE_PIXELS, check_image, fit_image
from mayolact.engine.predictor import YOLACTPredictor
from mayolact.utils.file_io import atomic_path, write_image_atomic

__all__ = ["IMAGE_EXTENSIONS", "Demo", "expand_inputs", "read_image_file", "run_demo"]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def expand_inputs(inputs: Sequence[str]) -> List[str]:
    """Files from paths, folders (sorted, images only) and glob patterns.

    Raises:
        FileNotFoundError: naming the input that gave no file.
    """
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


def read_image_file(path: str, image_format: str) -> np.ndarray:
    """Detectron2's ``read_image``, with every way a file can fail to decode (missing, not an
    image, truncated) reported as an ``OSError`` that names it.

    Returns:
        ndarray: (H, W, 3) uint8 in ``image_format``.
    """
    try:
        return read_image(path, format=image_format)
    except (OSError, ValueError, SyntaxError) as e:  # PIL's errors for broken files
        raise OSError(f"{path}: cannot read the image ({type(e).__name__}: {e})") from e


class Demo:
    """Predictor + Visualizer. ``draw(image)`` takes an image in the config's ``INPUT.FORMAT``.

    Args:
        cfg: the model's config (``MODEL.WEIGHTS`` loaded by the predictor).
        metadata_name: dataset whose class names are drawn (default: the config's first test set,
            else its first training set).
        confidence_threshold: instances scoring below it are not drawn.
        predictor: what predicts (BGR image -> ``{"instances": Instances}``), e.g. an
            ``mayolact.export.exporter.ExportedYOLACTPredictor``; default: ``YOLACTPredictor(cfg)``.
    """

    def __init__(self, cfg, metadata_name: Optional[str] = None,
                 confidence_threshold: float = 0.3, predictor=None):
        names = cfg.DATASETS.TEST or cfg.DATASETS.TRAIN
        name = metadata_name or (names[0] if names else None)
        # A registered COCO json knows its class names only once loaded: read them now, so that
        # drawings show names, not class numbers.
        self.metadata = MetadataCatalog.get("__unused")
        if name:
            try:
                self.metadata = dataset_metadata(name)
            except KeyError as e:  # the test set is not on this machine: numbers, not a crash
                logger.warning("%s: the drawings show class numbers", e.args[0])
        self.predictor = YOLACTPredictor(cfg) if predictor is None else predictor
        self.input_format = cfg.INPUT.FORMAT
        self.threshold = confidence_threshold
        self.max_image_pixels = cfg.TEST.YOLACT.get("MAX_IMAGE_PIXELS", DEFAULT_MAX_IMAGE_PIXELS)

    def predict_all(self, image: np.ndarray):
        """Every predicted ``Instances`` on the CPU, whatever its score; image (H, W, 3) uint8 in
        ``INPUT.FORMAT`` (anything else: a ``ValueError`` naming dtype and shape)."""
        check_image(image)
        # The predictors take BGR (as cv2.imread gives), like Detectron2's DefaultPredictor.
        bgr = image if self.input_format == "BGR" else np.ascontiguousarray(image[:, :, ::-1])
        return self.predictor(bgr)["instances"].to("cpu")

    def predict(self, image: np.ndarray):
        """``Instances`` on the CPU with score >= the threshold; image (H, W, 3) uint8 in
        ``INPUT.FORMAT``."""
        instances = self.predict_all(image)
        return instances[instances.scores >= self.threshold]

    def render(self, image: np.ndarray, instances) -> np.ndarray:
        """``instances`` drawn on ``image`` (``INPUT.FORMAT``): an RGB uint8 (H, W, 3) array."""
        rgb = image if self.input_format == "RGB" else image[:, :, ::-1]
        vis = Visualizer(rgb, self.metadata, instance_mode=ColorMode.IMAGE)
        return vis.draw_instance_predictions(instances).get_image()

    def draw(self, image: np.ndarray) -> Tuple[object, np.ndarray]:
        """Returns (instances, drawing as an RGB uint8 (H, W, 3) array); an image above
        ``TEST.YOLACT.MAX_IMAGE_PIXELS`` is shrunk first and drawn at that size."""
        image, _ = fit_image(check_image(image), self.max_image_pixels)
        instances = self.predict(image)
        return instances, self.render(image, instances)

    def describe(self, instances) -> str:
        """The classes of ``instances`` by name and count, most frequent first ("disc 3, bar 1")."""
        classes = self.metadata.get("thing_classes", None) or []
        counts = collections.Counter(
            classes[c] if c < len(classes) else str(c) for c in instances.pred_classes.tolist())
        return ", ".join(f"{name} {n}" for name, n in counts.most_common())

    def draw_files(self, files: Sequence[str], output: str) -> List[str]:
        """Draw each image file into ``output`` under its own name, so in its own format (a JPEG
        stays a JPEG; PNG for an extension OpenCV cannot write); a file that cannot be read is
        reported (logged with its name) and skipped, the others are drawn.

        An image without an instance at the threshold says so, with the best score below it;
        when some images have none, a last warning names the threshold and the option that
        lowers it (``--confidence-threshold`` of ``tools/demo.py`` and ``tools/demo_job.py``).

        Returns:
            list[str]: one message per skipped file, naming it and the reason.
        """
        failed, empty, best_below = [], 0, None
        for path in tqdm.tqdm(files, disable=len(files) < 2):
            try:
                image = read_image_file(path, self.input_format)
            except OSError as e:
                logger.error("%s; skipped", e)
                failed.append(str(e))
                continue
            start = time.perf_counter()
            found = self.predict_all(image)
            instances = found[found.scores >= self.threshold]
            drawing = self.render(image, instances)
            what = self.describe(instances)
            if not what:
                empty += 1
                best = float(found.scores.max()) if len(found) else None
                best_below = best if best_below is None else max(best_below, best or 0.0)
                what = (f"none at score >= {self.threshold:g}"
                        + (f"; the best scored {best:.2f}" if best is not None else ""))
            logger.info("%s: %d instances in %.2fs (%s)", path, len(instances),
                        time.perf_counter() - start, what)
            out = os.path.join(output, os.path.basename(path))
            if not cv2.haveImageWriter(out):
                out = os.path.splitext(out)[0] + ".png"
            write_image_atomic(out, cv2.cvtColor(drawing, cv2.COLOR_RGB2BGR))
        if empty:
            logger.warning(
                "%d of %d images show no instance at score >= %g (the confidence threshold); %s",
                empty, len(files) - len(failed), self.threshold,
                f"the best score below it was {best_below:.2f}: lower it with "
                f"--confidence-threshold to draw more" if best_below is not None else
                "the model detected nothing in them (scores under MODEL.YOLACT.SCORE_THRESH_TEST "
                "are not kept)")
        return failed

    def run_video(self, path: str, output: str) -> str:
        """Draw every frame of the video ``path`` into an mp4 ``output`` (a file or a folder).

        Returns:
            str: the video written (atomically: a failure leaves no partial file).

        Raises:
            FileNotFoundError: naming ``path`` when it cannot be opened.
            OSError: naming ``output`` when no video writer can be opened there.
        """
        video = cv2.VideoCapture(path)
        if not video.isOpened():
            raise FileNotFoundError(f"{path}: cannot open the video")
        width = int(video.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(video.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = video.get(cv2.CAP_PROP_FPS) or 25.0
        frames = int(video.get(cv2.CAP_PROP_FRAME_COUNT))
        if os.path.isdir(output):
            output = os.path.join(output, os.path.splitext(os.path.basename(path))[0] + ".mp4")
        visualizer = VideoVisualizer(self.metadata, ColorMode.IMAGE)
        with atomic_path(output) as tmp:
            writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
            if not writer.isOpened():  # before any frame is processed, not after the last
                video.release()
                raise OSError(
                    f"{output}: cannot open a video writer (mp4v) there; check the folder can be "
                    "written and the name ends in .mp4"
                )
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
        return output


def run_demo(args: argparse.Namespace) -> int:
    """Draw the predictions of ``tools/demo.py``'s parsed arguments (``config_file``, ``input``
    or ``video_input``, ``output``, ``confidence_threshold``, ``exported``, ``metadata``,
    ``opts``).

    The inputs, the output folder and ``MODEL.WEIGHTS`` are checked before the model is built: a
    wrong path fails fast, with its name, and no model runs for drawings that cannot be written.

    Returns:
        int: the exit status: 0 when every input was drawn; 1 when an input is missing or some
        images could not be read (each named on stderr; the others are drawn); 2 for a bad
        config, weights file or output path.
    """
    from mayolact.checkpoint import CheckpointError
    from mayolact.config import ConfigError, load_config, take_overrides
    from mayolact.engine.checks import (
        PreflightError,
        check_config,
        check_datasets_registered,
        check_weights,
        check_writable,
    )

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
    try:
        if args.video_input:
            if not os.path.isfile(args.video_input):
                raise FileNotFoundError(f"{args.video_input}: no such video file")
        else:
            files = expand_inputs(args.input)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    try:
        if args.metadata:
            check_datasets_registered("--metadata", [args.metadata])
        video_to_file = args.video_input and not os.path.isdir(args.output)
        check_writable(
            os.path.dirname(os.path.abspath(args.output)) if video_to_file else args.output,
            "--output",
        )
        if not args.exported:
            check_weights(cfg, resume=False)
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
