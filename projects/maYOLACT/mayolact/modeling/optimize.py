"""Inference-only rewrites of a trained model: batch norms folded into convolutions, channels-last.

Both change only how the arithmetic is laid out, not what is computed, so the outputs move by float
rounding (about 1e-6 relative on the network's outputs), not by the model's meaning:

* **Folded batch norm.** In eval mode a ``BatchNorm2d`` (or Detectron2's ``FrozenBatchNorm2d``)
  after a convolution is the per-channel affine map ``y = x * s + b`` with
  ``s = weight / sqrt(running_var + eps)`` and ``b = bias - running_mean * s``; it is folded into
  the convolution (``W' = W * s``, ``b' = b_conv * s + b``), which removes one full pass over every
  ResNet activation. Detectron2's ``Conv2d`` and
  :class:`mayolact.modeling.backbone.ModulatedDeformConv2d` (DCNv2 is linear in its weight as
  well) carry their norm in ``.norm``; it becomes None.
* **Channels-last.** Convolution weights in NHWC order make PyTorch's CPU convolutions (oneDNN)
  run NHWC end to end, without the reorders of its NCHW path; the model's ops accept either layout.

:func:`optimize_for_inference` applies them to an eval-mode model. They are the default wherever
the model only infers (``TEST.YOLACT.OPTIMIZE``, True unless set): :class:`YOLACTPredictor
<mayolact.engine.predictor.YOLACTPredictor>` (and so ``tools/demo.py``, the export and the inference
benchmark), ``tools/train_net.py --eval-only`` and the demo job's evaluation
(:func:`optimize_if_configured`). ``TEST.YOLACT.OPTIMIZE False`` (with ``MODEL.YOLACT.DCN_KERNEL
torchvision``) is the bit-exact path.
"""
import logging

import torch
from detectron2.layers import FrozenBatchNorm2d
from torch import nn

__all__ = ["fold_batch_norms", "optimize_for_inference", "optimize_if_configured"]

logger = logging.getLogger(__name__)

_FOLDABLE_NORMS = (nn.BatchNorm2d, FrozenBatchNorm2d)


def _fold_into(conv: nn.Module) -> None:
    """Fold ``conv.norm`` (eval-mode batch norm) into ``conv.weight`` / ``conv.bias``."""
    norm = conv.norm
    weight = conv.weight.detach()
    scale = norm.weight.detach() * (norm.running_var + norm.eps).rsqrt()  # (C_out,)
    shift = norm.bias.detach() - norm.running_mean * scale
    if conv.bias is not None:
        shift = shift + conv.bias.detach() * scale
    conv.weight = nn.Parameter(weight * scale.reshape(-1, *([1] * (weight.dim() - 1))),
                               requires_grad=False)
    conv.bias = nn.Parameter(shift.to(weight.dtype), requires_grad=False)
    conv.norm = None


def fold_batch_norms(model: nn.Module) -> int:
    """Fold every eval-mode batch norm held as ``.norm`` by a convolution into that convolution.

    Args:
        model: a model in eval mode (training-mode batch norm uses batch statistics and is left).

    Returns:
        int: the number of folded norms.
    """
    folded = 0
    for module in model.modules():
        norm = getattr(module, "norm", None)
        if (
            isinstance(norm, _FOLDABLE_NORMS)
            and not norm.training
            and isinstance(getattr(module, "weight", None), torch.Tensor)
            and norm.running_mean is not None
            and module.weight.shape[0] == norm.num_features
        ):
            _fold_into(module)
            folded += 1
    return folded


def optimize_for_inference(model: nn.Module, channels_last: bool = True) -> nn.Module:
    """Fold batch norms and (optionally) switch to channels-last, in place, for inference only.

    Args:
        model: the model; it is put in eval mode (it cannot be trained afterwards: the folded norms
            are gone).
        channels_last: store 4-D weights in NHWC order.

    Returns:
        nn.Module: ``model``.
    """
    model.eval()
    folded = fold_batch_norms(model)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    logger.info("Inference rewrites: %d batch norms folded, channels-last: %s",
                folded, channels_last)
    return model


def optimize_if_configured(cfg, model: nn.Module) -> nn.Module:
    """:func:`optimize_for_inference` when ``cfg.TEST.YOLACT.OPTIMIZE`` (the default) is set, for a
    model that will only infer from now on; else ``model`` unchanged.

    Args:
        cfg (CfgNode): a config with ``add_mayolact_config`` applied.
        model: the model (put in eval mode when rewritten).

    Returns:
        nn.Module: ``model``.
    """
    return optimize_for_inference(model) if cfg.TEST.YOLACT.OPTIMIZE else model
