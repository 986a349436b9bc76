"""A seeded random model scaled to behave like a trained one, for speed and export studies.

Random weights give class logits in the hundreds (scores of 0 or 1, ties), box deltas of about
100 (boxes clamped to the whole image) and zero DCN offsets, so the number of detections and the
size of their masks, which set the cost of the inference tail, are arbitrary: YOLACT-550 returns
about 34 detections per image and maYOLACT-550 100. :func:`trained_like_predictor` rescales the
heads on one image so that scores spread and boxes keep anchor-like sizes, as a trained model's
do: on coco_mini both models then return ``TEST.DETECTIONS_PER_IMAGE`` (100) detections per image,
the load the inference benchmark compares them at (``tools/benchmark_inference.py
--matched-load``). The test harness builds its export and quantization models with it.
"""
import copy

import numpy as np
import torch
from torch import nn

from mayolact.engine.predictor import YOLACTPredictor
from mayolact.modeling.backbone.carafe import CARAFEUpsample
from mayolact.modeling.optimize import optimize_if_configured

__all__ = ["trained_like_predictor"]


def trained_like_predictor(cfg, image: np.ndarray) -> YOLACTPredictor:
    """An eager predictor on a seeded random model scaled to behave like a trained one.

    DCN offsets (zero-initialised) get about a pixel and the CARAFE encoder non-uniform kernels;
    the classifier and the box regressor are rescaled on ``image`` so that the class logits have a
    standard deviation of 2 (scores spread, rarely saturated) and the box deltas one of 0.5. The
    inference rewrites are applied last, as ``cfg`` asks (the predictor's default); the weights
    before them, as a training run saves them, are in ``predictor.checkpoint`` (a state dict).

    Args:
        cfg (CfgNode): the model's config (``MODEL.WEIGHTS`` empty: seed 0 draws the weights).
        image (ndarray): (H, W, 3) uint8 BGR, the image the heads are rescaled on.

    Returns:
        YOLACTPredictor: the predictor, with ``checkpoint`` set.
    """
    exact = cfg.clone()
    exact.defrost()
    exact.TEST.YOLACT.OPTIMIZE = False
    torch.manual_seed(0)
    predictor = YOLACTPredictor(exact)
    model = predictor.model
    with torch.no_grad():
        for name, m in model.named_modules():
            if name.endswith("conv2_offset"):
                nn.init.normal_(m.weight, std=0.05)
            if isinstance(m, CARAFEUpsample):
                nn.init.normal_(m.content_encoder.weight, std=0.05)
        x = predictor.preprocess(image)
        features = model.backbone(model.preprocess_image([x]).tensor)
        logits, deltas, _ = model.head([features[f] for f in model.head_in_features])
        for conv, outputs, std in ((model.head.cls_score, logits, 2.0),
                                   (model.head.bbox_pred, deltas, 0.5)):
            conv.weight.mul_(std / torch.cat([o.flatten() for o in outputs]).std())
    predictor.checkpoint = copy.deepcopy(model.state_dict())
    optimize_if_configured(cfg, model)
    return predictor
