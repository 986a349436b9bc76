"""mmdetection 3.3 YOLACT R-50 as an oracle for ``tests/test_mmdet_peer.py``; run in a subprocess.

Run with ``PYTHONPATH=.peer/site:tests/peer`` (``scripts/install_peer.sh`` installs the peer there,
outside the project's environment) and the project's Python (for torch and OpenCV)::

    python tests/peer/mmdet_yolact_oracle.py --image IMG.jpg --out DIR [--seed 0]

It builds ``configs/yolact/yolact_r50_1xb8-55e_coco.py`` from the installed package (backbone
``init_cfg=None``: no download), gives every parameter and BN statistic seeded random values, and
writes into DIR:

* ``yolact_r50_mmdet.pth``: ``{"meta": ..., "state_dict": ...}``, as mmdetection saves checkpoints;
* ``outputs.pt``: the network input, the FPN outputs, the head outputs, the prototypes and the
  final detections (boxes, scores, labels, masks at the original image size) for IMG, run through
  mmdetection's own test pipeline (BGR image read by OpenCV, 550 x 550 bilinear resize, RGB
  normalisation).
"""
import argparse
import os
import sys

import cv2
import torch
import torch.nn.functional as F
from torch import nn

#: Exit status when the peer itself cannot be imported (the test then skips instead of failing).
PEER_MISSING = 77

try:
    import mmcv_ext_stub  # noqa: F401  (must come before mmdet: stands in for mmcv._ext)
    import mmdet
    from mmcv.transforms import Compose
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
except ImportError as e:
    print(f"mmdetection peer not importable: {type(e).__name__}: {e}", file=sys.stderr)
    sys.exit(PEER_MISSING)

CONFIG = "configs/yolact/yolact_r50_1xb8-55e_coco.py"


def randomize(model: nn.Module, seed: int, calibration: torch.Tensor) -> None:
    """Seeded random weights and BN statistics, scaled so that the detections are meaningful.

    1. Every conv weight ~ N(0, 2 / fan_in), conv biases ~ N(0, 0.1^2), BN scales ~ U(0.5, 1.5) and
       shifts ~ N(0, 0.1^2).
    2. BN running statistics: those of ``calibration`` (normalised images) through the random
       backbone, then perturbed (means shifted by N(0, 0.2^2) standard deviations,
       variances scaled by U(0.6, 1.4)), so they are neither (0, 1) nor the image's own.
    3. The convs after the backbone are rescaled, in forward order on ``calibration``, so that
       their outputs have a set standard deviation (1; classifier 1.5 so that some classes are
       confident; box deltas 0.3 so that boxes stay near their anchors).
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen)
                               * (2.0 / m.weight[0].numel())**0.5)
                if m.bias is not None:
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=gen))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
                m.reset_running_stats()
                m.momentum = None  # cumulative average over the calibration pass
        model.train()
        model.backbone(calibration)
        model.eval()
        for m in model.backbone.modules():
            if isinstance(m, nn.BatchNorm2d):
                std = m.running_var.sqrt()
                m.running_mean.add_(0.2 * std * torch.randn(std.shape, generator=gen))
                m.running_var.mul_(0.6 + 0.8 * torch.rand(std.shape, generator=gen))
                m.momentum = 0.1

        targets = {"conv_cls": 1.5, "conv_reg": 0.3}
        done, hooks = set(), []

        def rescale(name):
            def hook(module, inputs, output):
                if name in done:  # shared head: scaled on its first level only
                    return None
                done.add(name)
                bias = 0 if module.bias is None else module.bias.view(1, -1, 1, 1)
                scale = targets.get(name.rsplit(".", 1)[-1], 1.0) / (output - bias).std()
                module.weight.mul_(scale)
                return (output - bias) * scale + bias
            return hook

        for prefix in ("neck", "bbox_head", "mask_head"):
            for name, m in getattr(model, prefix).named_modules():
                if isinstance(m, nn.Conv2d):
                    hooks.append(m.register_forward_hook(rescale(f"{prefix}.{name}")))
        feats = model.extract_feat(calibration)
        model.bbox_head.forward(feats)
        model.mask_head.protonet(feats[0])
        for h in hooks:
            h.remove()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    register_all_modules()
    cfg = Config.fromfile(os.path.join(os.path.dirname(mmdet.__file__), ".mim", CONFIG))
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)

    # mmdetection's test pipeline, on an image read by OpenCV as mmdet.apis.inference_detector does.
    steps = [dict(t) for t in cfg.test_pipeline if t["type"] != "LoadAnnotations"]
    assert steps[0]["type"] == "LoadImageFromFile", steps[0]
    steps[0] = dict(type="mmdet.LoadImageFromNDArray")
    image = cv2.imread(args.image)
    data = Compose(steps)(dict(img=image, img_id=0))
    batch = model.data_preprocessor(
        {"inputs": [data["inputs"]], "data_samples": [data["data_samples"]]}, False)

    # BN statistics from the image at half size with its colour channels reversed (cheaper, and
    # not the test input itself).
    calibration = F.interpolate(batch["inputs"].flip(1), scale_factor=0.5, mode="bilinear")
    randomize(model, args.seed, calibration)
    os.makedirs(args.out, exist_ok=True)
    torch.save({"meta": {"mmdet_version": mmdet.__version__, "config": CONFIG},
                "state_dict": model.state_dict()},
               os.path.join(args.out, "yolact_r50_mmdet.pth"))

    # One pass of mmdetection's own predict(); the intermediate outputs are read by hooks.
    seen = {}

    def keep(name):
        def hook(module, inputs, output):
            seen.setdefault(name, output)  # returns None: the output is not replaced
        return hook

    hooks = [model.neck.register_forward_hook(keep("fpn")),
             model.bbox_head.register_forward_hook(keep("head")),
             model.mask_head.protonet.register_forward_hook(keep("prototypes"))]
    with torch.no_grad():
        pred = model.predict(batch["inputs"], batch["data_samples"], rescale=True)[0].pred_instances
    for h in hooks:
        h.remove()
    cls_scores, bbox_preds, coeff_preds = seen["head"]
    torch.save({
        "input": batch["inputs"][0],
        "fpn": list(seen["fpn"]),
        "cls": list(cls_scores), "reg": list(bbox_preds), "coeff": list(coeff_preds),
        "prototypes": seen["prototypes"][0],
        "boxes": pred.bboxes, "scores": pred.scores, "labels": pred.labels, "masks": pred.masks,
        "ori_shape": data["data_samples"].ori_shape,
    }, os.path.join(args.out, "outputs.pt"))


if __name__ == "__main__":
    main()
