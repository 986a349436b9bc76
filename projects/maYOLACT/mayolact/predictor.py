"""A one-image predictor for YOLACT models (the square-resize variant of ``DefaultPredictor``)."""
from typing import Dict

import numpy as np
import torch

from detectron2.data import transforms as T
from detectron2.modeling import build_model

from mayolact.checkpoint import YOLACTCheckpointer
from mayolact.data.augmentation import build_yolact_test_augmentation

__all__ = ["YOLACTPredictor"]


class YOLACTPredictor:
    """Build a model from ``cfg``, load ``cfg.MODEL.WEIGHTS`` and run it on single images.

    Like Detectron2's ``DefaultPredictor``, but images go through the test loader's augmentation
    (``build_yolact_test_augmentation``: squashed to S x S, bilinear, no aspect ratio kept, as in
    YOLACT's test pipeline), and outputs are at the original image size.

    Example::

        pred = YOLACTPredictor(cfg)
        outputs = pred(cv2.imread("input.jpg"))  # {"instances": Instances}
    """

    def __init__(self, cfg):
        """
        Args:
            cfg (CfgNode): a config with ``add_mayolact_config`` applied and
                ``MODEL.META_ARCHITECTURE`` registered (import ``mayolact`` first).
        """
        self.cfg = cfg.clone()
        self.model = build_model(self.cfg)
        self.model.eval()
        if self.cfg.MODEL.WEIGHTS:
            YOLACTCheckpointer.from_config(self.cfg, self.model).load(self.cfg.MODEL.WEIGHTS)
        self.input_format = self.cfg.INPUT.FORMAT
        if self.input_format not in ("RGB", "BGR"):
            raise ValueError(
                f"YOLACTPredictor: INPUT.FORMAT must be RGB or BGR, got {self.input_format}")
        self.aug = T.AugmentationList(build_yolact_test_augmentation(self.cfg))

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

    @torch.no_grad()
    def __call__(self, original_image: np.ndarray) -> Dict:
        """
        Args:
            original_image (ndarray): (H, W, 3) uint8, BGR.

        Returns:
            dict: the model's output for the image, {"instances": Instances} at (H, W).
        """
        return self.model([self.preprocess(original_image)])[0]
