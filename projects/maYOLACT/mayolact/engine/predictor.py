"""The predictor of YOLACT models: Detectron2's ``DefaultPredictor`` with the square resize and
batches of images."""
import logging
from typing import Dict, List, Sequence, Union

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model

from mayolact.checkpoint.checkpointer import YOLACTCheckpointer
from mayolact.data.augmentation import build_yolact_test_augmentation
from mayolact.data.datasets import dataset_metadata
from mayolact.engine.image_input import DEFAULT_MAX_IMAGE_PIXELS, check_image, fit_image
from mayolact.modeling.optimize import optimize_if_configured
from mayolact.utils.profiling import stage

__all__ = ["YOLACTPredictor"]

logger = logging.getLogger(__name__)


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
      formats too; no code runs from the file; a file that leaves the heads untrained, such as
      ImageNet backbone weights, is refused);
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
        # DefaultPredictor.__init__ without its loader, which would read MODEL.WEIGHTS with a
        # plain DetectionCheckpointer (or log "Initializing model from scratch" before ours).
        self.cfg = cfg.clone()
        self.model = build_model(self.cfg)
        self.model.eval()
        self.input_format = self.cfg.INPUT.FORMAT
        if self.cfg.MODEL.WEIGHTS:
            # inference=True: backbone-only weights (random heads) are refused, naming them.
            YOLACTCheckpointer.from_config(self.cfg, self.model, inference=True).load(
                self.cfg.MODEL.WEIGHTS)
        else:
            logger.warning("MODEL.WEIGHTS is empty: the predictor's model keeps its random "
                           "initialisation")
        optimize_if_configured(self.cfg, self.model)
        self.aug = T.AugmentationList(build_yolact_test_augmentation(self.cfg))
        names = self.cfg.DATASETS.TEST
        if names:
            self.metadata = MetadataCatalog.get(names[0])
        if names and names[0] in DatasetCatalog.list():  # class names of a COCO json not yet read
            self.metadata = dataset_metadata(names[0])

    def preprocess(self, image: np.ndarray) -> Dict:
        """The model input for one image.

        Args:
            image (ndarray): (H, W, 3) uint8 in BGR order (as ``cv2.imread`` gives); anything
                else is a ``ValueError`` naming dtype and shape
                (:func:`mayolact.engine.image_input.check_image`).

        Returns:
            dict: "image" uint8 (3, S, S) in ``INPUT.FORMAT`` order, "height", "width" (the
            image's, or the shrunk size of one above ``TEST.YOLACT.MAX_IMAGE_PIXELS``).
        """
        check_image(image)
        # Outputs are at the image's size: a huge image is shrunk first (memory stays bounded).
        image, _ = fit_image(image, self.cfg.TEST.YOLACT.get("MAX_IMAGE_PIXELS",
                                                             DEFAULT_MAX_IMAGE_PIXELS))
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
                of them (any sizes), predicted in one forward pass. Anything else is a
                ``ValueError`` naming its dtype and shape.

        Returns:
            dict or list[dict]: the model's output, {"instances": Instances} at the image's
            (H, W) (shrunk to ``TEST.YOLACT.MAX_IMAGE_PIXELS`` when larger); a list of them, in
            order, for a list of images.
        """
        single = not isinstance(original_image, (list, tuple))
        images = [original_image] if single else list(original_image)
        if not images:
            raise ValueError("YOLACTPredictor: got an empty list of images")
        if not single:
            for i, image in enumerate(images):
                check_image(image, f"image {i} of the batch")
        with torch.inference_mode():
            with stage(getattr(self.model, "stage_timer", None), "pre-process"):
                inputs = [self.preprocess(image) for image in images]
            outputs = self.model(inputs)
        return outputs[0] if single else outputs
