"""Drawing predictions: the predictor and Detectron2's ``Visualizer`` behind ``tools/demo.py`` and
``tools/demo_job.py``."""
import glob
import os
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import tqdm

from detectron2.data import MetadataCatalog
from detectron2.utils.video_visualizer import VideoVisualizer
from detectron2.utils.visualizer import ColorMode, Visualizer

from mayolact.file_io import atomic_path
from mayolact.data.datasets import dataset_metadata
from mayolact.predictor import YOLACTPredictor

__all__ = ["IMAGE_EXTENSIONS", "Demo", "expand_inputs"]

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


class Demo:
    """Predictor + Visualizer. ``draw(image)`` takes an image in the config's ``INPUT.FORMAT``.

    Args:
        cfg: the model's config (``MODEL.WEIGHTS`` loaded by the predictor).
        metadata_name: dataset whose class names are drawn (default: the config's first test set,
            else its first training set).
        confidence_threshold: instances scoring below it are not drawn.
    """

    def __init__(self, cfg, metadata_name: Optional[str] = None,
                 confidence_threshold: float = 0.3):
        names = cfg.DATASETS.TEST or cfg.DATASETS.TRAIN
        name = metadata_name or (names[0] if names else None)
        # A registered COCO json knows its class names only once loaded: read them now, so that
        # drawings show names, not class numbers.
        self.metadata = dataset_metadata(name) if name else MetadataCatalog.get("__unused")
        self.predictor = YOLACTPredictor(cfg)
        self.input_format = cfg.INPUT.FORMAT
        self.threshold = confidence_threshold

    def predict(self, image: np.ndarray):
        """``Instances`` on the CPU with score >= the threshold; image (H, W, 3) uint8."""
        instances = self.predictor(image)["instances"].to("cpu")
        return instances[instances.scores >= self.threshold]

    def draw(self, image: np.ndarray) -> Tuple[object, np.ndarray]:
        """Returns (instances, drawing as an RGB uint8 (H, W, 3) array)."""
        instances = self.predict(image)
        rgb = image if self.input_format == "RGB" else image[:, :, ::-1]
        vis = Visualizer(rgb, self.metadata, instance_mode=ColorMode.IMAGE)
        return instances, vis.draw_instance_predictions(instances).get_image()

    def run_video(self, path: str, output: str) -> str:
        """Draw every frame of the video ``path`` into an mp4 ``output`` (a file or a folder).

        Returns:
            str: the video written (atomically: a failure leaves no partial file).

        Raises:
            FileNotFoundError: naming ``path`` when it cannot be opened.
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
