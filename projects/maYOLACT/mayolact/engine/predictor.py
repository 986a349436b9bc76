"""The predictor of YOLACT models: Detectron2's ``DefaultPredictor`` with the square resize and
batches of images."""
from typing import Dict, List, Sequence, Union

import numpy as np
import torch
from detectron2.data import DatasetCatalog
from detectron2.data import transforms as T
from detectron2.engine import DefaultPredictor

from mayolact.checkpoint.checkpointer import YOLACTCheckpointer
from mayolact.data.augmentation import build_yolact_test_augmentation
from mayolact.data.datasets import dataset_metadata
from mayolact.modeling.optimize import optimize_if_configured
from mayolact.utils.profiling import stage

__all__ = ["YOLACTPredictor"]


class YOLACTPredictor(DefaultPredictor):
    """Build a model from ``cfg``, load ``cfg.MODEL.WEIGHTS`` and run it on images or batches.

    Detectron2's ``DefaultPredictor`` (model built in eval mode, ``metadata`` of
    ``DATASETS.TEST[0]``, BGR input converted to ``INPUT.FORMAT``), except that:

    * images go through the test loader's augmentation (``build_yolact_test_augmentation``:
      squashed to S x S, bilinear, no aspect ratio kept, as in YOLACT's test pipeline), and
      outputs are at the original image size;
    * a list of images runs as ONE batch through the model (all are S x S after the resize), with
      the same per-image results as one at a time, up to float rounding;
    * weights load through :class:`mayolact.checkpoint.checkpointer.YOLACTCheckpointer` (foreign
      formats too);
    * the inference rewrites of :func:`mayolact.modeling.optimize.optimize_for_inference` (folded
      batch norms, channels-last) are applied unless ``TEST.YOLACT.OPTIMIZE`` is False (the
      bit-exact path); inference runs under ``torch.inference_mode``.

    Example::

        pred = YOLACTPredictor(cfg)
        outputs = pred(cv2.imread("input.jpg"))  # {"instances": Instances}
        batch = pred([cv2.imread(f) for f in files])  # [{"instances": Instances}, ...]
    """

    def __init__(self, cfg):
        """
        Args:
            cfg (CfgNode): a config with ``add_mayolact_config`` applied and
                ``MODEL.META_ARCHITECTURE`` registered (import ``mayolact`` first).
        """
        if cfg.INPUT.FORMAT not in ("RGB", "BGR"):
            raise ValueError(
                f"YOLACTPredictor: INPUT.FORMAT must be RGB or BGR, got {cfg.INPUT.FORMAT}")
        weights = cfg.MODEL.WEIGHTS
        cfg = cfg.clone()
        cfg.defrost()
        cfg.MODEL.WEIGHTS = ""  # DefaultPredictor's loader is skipped; YOLACTCheckpointer's below
        super().__init__(cfg)
        self.cfg.MODEL.WEIGHTS = weights
        if weights:
            YOLACTCheckpointer.from_config(self.cfg, self.model).load(weights)
        optimize_if_configured(self.cfg, self.model)
        self.aug = T.AugmentationList(build_yolact_test_augmentation(self.cfg))
        names = self.cfg.DATASETS.TEST
        if names and names[0] in DatasetCatalog.list():  # class names of a COCO json not yet read
            self.metadata = dataset_metadata(names[0])

    def preprocess(self, image: np.ndarray) -> Dict:
        """The model input for one image.

        Args:
            image (ndarray): (H, W, 3) uint8 in BGR order (as ``cv2.imread`` gives).

        Returns:
            dict: "image" uint8 (3, S, S) in ``INPUT.FORMAT`` order, "height", "width".
        """
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
            shape = getattr(image, "shape", type(image).__name__)
            raise ValueError(f"YOLACTPredictor: expected an (H, W, 3) BGR image, got {shape}")
        height, width = image.shape[:2]
        if self.input_format == "RGB":
            image = image[:, :, ::-1]
        aug_input = T.AugInput(np.ascontiguousarray(image))
        self.aug(aug_input)
        tensor = torch.as_tensor(np.ascontiguousarray(aug_input.image.transpose(2, 0, 1)))
        return {"image": tensor, "height": height, "width": width}

    def __call__(
        self, original_image: Union[np.ndarray, Sequence[np.ndarray]]
    ) -> Union[Dict, List[Dict]]:
        """
        Args:
            original_image (ndarray or list[ndarray]): an (H, W, 3) uint8 BGR image, or a list
                of them (any sizes), predicted in one forward pass.

        Returns:
            dict or list[dict]: the model's output, {"instances": Instances} at the image's
            (H, W); a list of them, in order, for a list of images.
        """
        single = isinstance(original_image, np.ndarray)
        images = [original_image] if single else list(original_image)
        if not images:
            raise ValueError("YOLACTPredictor: got an empty list of images")
        with torch.inference_mode():
            with stage(getattr(self.model, "stage_timer", None), "pre-process"):
                inputs = [self.preprocess(image) for image in images]
            outputs = self.model(inputs)
        return outputs[0] if single else outputs
