"""Test helper: the names and shapes of mmdetection YOLACT checkpoints, written from the official
code.

:func:`mmdet_yolact_shapes` lists every tensor of the state dict that mmdetection saves for a
YOLACT / maYOLACT model, in the module order of the official classes, without using maYOLACT's
model (so a conversion test against it is not circular):

* ``mmdet/models/backbones/resnet.py`` ``ResNet(depth=50 or 101, style='pytorch')``: ``conv1``,
  ``bn1``, ``layer{1-4}.{j}.conv{1-3}`` / ``bn{1-3}`` / ``downsample.{0,1}``; with
  ``dcn=dict(type='DCNv2', deformable_groups=G)`` a stage's ``conv2`` is a
  ``ModulatedDeformConvPack`` without bias, whose ``conv_offset`` has ``G * 3 * 9`` outputs;
* ``mmdet/models/necks/fpn.py`` ``FPN(start_level=1, add_extra_convs='on_input', num_outs=5)``:
  ``lateral_convs.{0-2}.conv``, ``fpn_convs.{0-4}.conv`` (3 is the 2048 -> 256 P6 conv on C5);
* ``mmdet/models/necks/fpn_carafe.py`` ``FPN_CARAFE``: ``lateral_convs.{0-4}.conv`` (3 and 4 are the
  3x3/s2 extra laterals), ``fpn_convs.{0-4}.conv``, ``upsample_modules.{0-3}`` ``CARAFEPack``
  (``channel_compressor`` 256 -> 64, ``content_encoder`` 64 -> 5*5*1*2*2 = 100, 3x3);
* ``mmdet/models/dense_heads/yolact_head.py``: ``YOLACTHead`` (``head_convs.0.conv``, ``conv_cls``
  A*81, ``conv_reg`` A*4, ``conv_coeff`` A*32), ``YOLACTProtonet`` (``protonet.{0,2,4,8,10}``, a
  ReLU after every layer and the x2 interpolation at index 6) and the semantic head: mmdet 2.x
  ``segm_head.segm_conv``, mmdet 3.x ``mask_head.segm_branch.segm_conv``.
"""
from collections import OrderedDict

import torch

RESNET_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


def _bn(shapes, prefix, channels):
    for p in ("weight", "bias", "running_mean", "running_var"):
        shapes[f"{prefix}.{p}"] = (channels,)
    shapes[f"{prefix}.num_batches_tracked"] = ()


def mmdet_yolact_shapes(neck="fpn", dcn_groups=0, num_anchors=3, num_classes=80, version=2,
                        depth=50):
    """Names and shapes of an mmdetection YOLACT state dict (see the module doc).

    Args:
        neck (str): "fpn" (Table 2 models, mmdet 3.x zoo) or "carafe" (maYOLACT).
        dcn_groups (int): 0 (no DCN) or the DCNv2 offset groups of res3-res5 (maYOLACT: 4).
        num_anchors (int): anchors per location (3 fixed IoU, 1 ATSS, 2 maYOLACT).
        num_classes (int): foreground classes.
        version (int): 2 (the authors' fork) or 3 (mmdetection 3.x): where the semantic head is.
        depth (int): ResNet depth, 50 or 101.

    Returns:
        OrderedDict[str, tuple]: name -> shape.
    """
    s = OrderedDict()
    s["backbone.conv1.weight"] = (64, 3, 7, 7)
    _bn(s, "backbone.bn1", 64)
    inplanes = 64
    for i, blocks in enumerate(RESNET_BLOCKS[depth]):
        planes = 64 * 2**i
        dcn = dcn_groups and i > 0  # stage_with_dcn=(False, True, True, True)
        for j in range(blocks):
            p = f"backbone.layer{i + 1}.{j}"
            s[f"{p}.conv1.weight"] = (planes, inplanes if j == 0 else planes * 4, 1, 1)
            _bn(s, f"{p}.bn1", planes)
            s[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            if dcn:
                s[f"{p}.conv2.conv_offset.weight"] = (dcn_groups * 27, planes, 3, 3)
                s[f"{p}.conv2.conv_offset.bias"] = (dcn_groups * 27,)
            _bn(s, f"{p}.bn2", planes)
            s[f"{p}.conv3.weight"] = (planes * 4, planes, 1, 1)
            _bn(s, f"{p}.bn3", planes * 4)
            if j == 0:
                s[f"{p}.downsample.0.weight"] = (planes * 4, inplanes, 1, 1)
                _bn(s, f"{p}.downsample.1", planes * 4)
        inplanes = planes * 4

    def conv(name, out, inp, k):
        s[f"{name}.weight"] = (out, inp, k, k)
        s[f"{name}.bias"] = (out,)

    if neck == "fpn":
        for i, c in enumerate((512, 1024, 2048)):
            conv(f"neck.lateral_convs.{i}.conv", 256, c, 1)
        for i in range(3):
            conv(f"neck.fpn_convs.{i}.conv", 256, 256, 3)
        conv("neck.fpn_convs.3.conv", 256, 2048, 3)
        conv("neck.fpn_convs.4.conv", 256, 256, 3)
    elif neck == "carafe":
        # Construction order of FPN_CARAFE.__init__: per input level (lateral, fpn conv, and an
        # upsampler for all but the last), then per extra level (upsampler, fpn conv, lateral).
        for i, c in enumerate((512, 1024, 2048)):
            conv(f"neck.lateral_convs.{i}.conv", 256, c, 1)
        conv("neck.lateral_convs.3.conv", 256, 2048, 3)
        conv("neck.lateral_convs.4.conv", 256, 256, 3)
        for i in range(5):
            conv(f"neck.fpn_convs.{i}.conv", 256, 256, 3)
        for i in range(4):
            conv(f"neck.upsample_modules.{i}.channel_compressor", 64, 256, 1)
            conv(f"neck.upsample_modules.{i}.content_encoder", 100, 64, 3)
    else:
        raise ValueError(neck)

    conv("bbox_head.head_convs.0.conv", 256, 256, 3)
    conv("bbox_head.conv_cls", num_anchors * (num_classes + 1), 256, 3)
    conv("bbox_head.conv_reg", num_anchors * 4, 256, 3)
    conv("bbox_head.conv_coeff", num_anchors * 32, 256, 3)
    for idx in (0, 2, 4, 8):
        conv(f"mask_head.protonet.{idx}", 256, 256, 3)
    conv("mask_head.protonet.10", 32, 256, 1)
    conv("segm_head.segm_conv" if version == 2 else "mask_head.segm_branch.segm_conv",
         num_classes, 256, 1)
    return s


def random_state_dict(shapes, seed=0):
    """Random tensors of ``shapes``: conv weights ~ N(0, 1/fan_in), biases and BN shifts small,
    BN scales and variances in [0.5, 1.5], counters 0 (all distinct, so a misplaced tensor shows).

    Args:
        shapes (dict[str, tuple]): see :func:`mmdet_yolact_shapes`.
        seed (int): generator seed.

    Returns:
        OrderedDict[str, Tensor]: float32 tensors (int64 for ``num_batches_tracked``).
    """
    gen = torch.Generator().manual_seed(seed)
    out = OrderedDict()
    for name, shape in shapes.items():
        if name.endswith("num_batches_tracked"):
            out[name] = torch.tensor(0, dtype=torch.int64)
        elif name.endswith(("running_var", "weight")) and len(shape) == 1:
            out[name] = 0.5 + torch.rand(shape, generator=gen)
        elif len(shape) == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            out[name] = torch.randn(shape, generator=gen) / fan_in**0.5
        else:
            out[name] = 0.1 * torch.randn(shape, generator=gen)
    return out
