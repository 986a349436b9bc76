"""mmdetection YOLACT checkpoints in maYOLACT's (Detectron2's) parameter names and layouts.

Two families of checkpoints are converted by :func:`convert_mmdet_checkpoint`:

* the paper authors' released models, trained with their fork of mmdetection 2.1: the Table 2
  models (plain ``FPN``, 3 anchors per location for the fixed-IoU rows, 1 for the ATSS rows) and
  maYOLACT-550 (``FPN_CARAFE``, DCNv2 in every bottleneck of res3-res5 with 4 offset groups,
  2 anchors per location);
* mmdetection 3.x YOLACT model-zoo checkpoints (``configs/yolact/yolact_r50_1xb8-55e_coco.py``),
  whose semantic head moved under the mask head.

Names (mmdet -> maYOLACT; ``s`` is the stage of a level, 3 for P3 / C3; ``R`` is the ResNet's
prefix ``backbone.bottom_up.``):

* ``backbone.<torchvision ResNet name>`` -> ``R`` + Detectron2's name
  (:mod:`mayolact.checkpoint.torchvision`);
* ``backbone.layer{i}.{j}.conv2.conv_offset`` (DCNv2) -> ``R`` + ``res{i+1}.{j}.conv2_offset``;
* ``neck.lateral_convs.{l}.conv`` -> ``backbone.fpn_lateral{s}``;
* ``neck.fpn_convs.{l}.conv`` -> ``backbone.fpn_output{s}``; in the plain FPN the two extra convs
  (P6 from C5, P7 from P6) are ``backbone.top_block.p6`` and ``backbone.top_block.p7``;
* ``neck.upsample_modules.{l}.*`` (CARAFE, level s + 1 to s) -> ``backbone.fpn_upsample{s}.*``;
* ``bbox_head.head_convs.{i}.conv`` -> ``head.tower.{2i}``;
* ``bbox_head.conv_cls`` / ``conv_reg`` / ``conv_coeff`` -> ``head.cls_score`` / ``bbox_pred`` /
  ``coeff_pred``;
* ``mask_head.protonet.{0,2,4,8,10}`` -> ``protonet.convs.{0,2,4}``,
  ``protonet.post_upsample.{0,2}``;
* ``segm_head.segm_conv`` (2.x) or ``mask_head.segm_branch.segm_conv`` (3.x) ->
  ``semseg_head.conv``.

Layouts, checked one by one against the official code:

* classifier: ``A * (K + 1)`` channels, anchor-major, softmax over K + 1 with background LAST in
  both (mmdet's label K is background since v2.0); the anchors of a location are in the same order
  (mmdet: ratio-major over scales, the same as Detectron2's size-major order whenever one of the
  two lists has a single entry, which holds for every YOLACT / maYOLACT config): copied unchanged;
* DCNv2: mmdet's ``conv_offset`` output is chunked into (o1, o2, mask), the offsets are
  ``cat(o1, o2)`` with a (y, x) pair per kernel point grouped by offset group, masks go through a
  sigmoid; :class:`mayolact.modeling.backbone.ModulatedDeformBottleneck` reads ``conv2_offset`` the
  same way and torchvision's ``deform_conv2d`` indexes offsets and masks as mmcv's kernel does:
  unchanged;
* CARAFE: the content encoder's ``k^2 * g * s^2`` channels go through ``pixel_shuffle`` and a
  group-major softmax in both: unchanged;
* semantic head (training only): mmdet writes the target of class c into channel c - 1 (0-based
  labels minus one, class 0 into channel K - 1), so its channel j learned class (j + 1) mod K.
  Here channel c is class c, so channel c takes mmdet's channel (c - 1) mod K.
"""
import logging
import math
import re
from collections import OrderedDict
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn

from .torchvision import BOTTOM_UP_PREFIX, convert_torchvision_resnet

__all__ = ["convert_mmdet_checkpoint"]

logger = logging.getLogger(__name__)

_DCN_OFFSET = re.compile(r"^backbone\.layer([1-4])\.(\d+)\.conv2\.conv_offset\.(weight|bias)$")
_NECK = re.compile(r"^neck\.(lateral_convs|fpn_convs|upsample_modules)\.(\d+)\.(.+)$")
_HEAD_CONV = re.compile(r"^bbox_head\.head_convs\.(\d+)\.conv\.(weight|bias)$")
_HEAD_PRED = re.compile(r"^bbox_head\.(conv_cls|conv_reg|conv_coeff)\.(weight|bias)$")
_PROTONET = re.compile(r"^mask_head\.protonet\.(\d+)\.(weight|bias)$")
_SEGM = re.compile(r"^(?:segm_head|mask_head\.segm_branch)\.segm_conv\.(weight|bias)$")
_CARAFE_PARAM = re.compile(r"^(channel_compressor|content_encoder)\.(weight|bias)$")
_CONV_PARAM = re.compile(r"^conv\.(weight|bias)$")

_HEAD_NAMES = {"conv_cls": "cls_score", "conv_reg": "bbox_pred", "conv_coeff": "coeff_pred"}

# Tensor transform of one entry: source tensor -> tensor in maYOLACT's layout.
Transform = Optional[Callable[[torch.Tensor], torch.Tensor]]


def _roll_semseg_channels(t: torch.Tensor) -> torch.Tensor:
    """mmdet's semantic channel j holds class (j + 1) mod K; ours holds class j (module doc)."""
    return torch.roll(t, shifts=1, dims=0)


class _Layout:
    """What the target model looks like: its stages and its optional parts."""

    def __init__(self, model: nn.Module):
        backbone = getattr(model, "backbone", None)
        bottom_up = getattr(backbone, "bottom_up", None)
        for part in ("head", "protonet"):
            if not isinstance(getattr(model, part, None), nn.Module):
                raise ValueError(
                    f"convert_mmdet_checkpoint: the model has no '{part}'; build it from a "
                    "maYOLACT config (MODEL.META_ARCHITECTURE: YOLACT)")
        if bottom_up is None or not hasattr(backbone, "in_features"):
            raise ValueError(
                "convert_mmdet_checkpoint: the model's backbone is not one of maYOLACT's FPNs "
                "(build_yolact_resnet_fpn_backbone or build_yolact_resnet_carafe_fpn_backbone)")
        shapes = bottom_up.output_shape()
        self.in_stages = [int(math.log2(shapes[f].stride)) for f in backbone.in_features]
        out_features = backbone.output_shape()
        self.out_stages = sorted(int(math.log2(s.stride)) for s in out_features.values())
        self.carafe = any(n.startswith("fpn_upsample") for n, _ in backbone.named_children())
        top_block = getattr(backbone, "top_block", None)
        self.top_block = (
            [n for n, m in top_block.named_children() if isinstance(m, nn.Conv2d)]
            if top_block is not None else [])
        self.semseg = getattr(model, "semseg_head", None) is not None
        # ProtoNet: the convs before the x2 interpolation, then those after it.
        self.proto_convs = [
            f"protonet.{seq}.{i}"
            for seq in ("convs", "post_upsample")
            for i, m in enumerate(getattr(model.protonet, seq, []))
            if isinstance(m, nn.Conv2d)
        ]
        self.proto_pre = sum(1 for n in self.proto_convs if n.startswith("protonet.convs."))

    def neck_name(self, kind: str, index: int, param: str) -> Optional[str]:
        """Our name of ``neck.<kind>.<index>.<param>`` or None when the model has no such part."""
        if kind == "upsample_modules":
            m = _CARAFE_PARAM.match(param)
            if not (self.carafe and m and index < len(self.out_stages) - 1):
                return None
            return f"backbone.fpn_upsample{self.out_stages[index]}.{param}"
        m = _CONV_PARAM.match(param)
        if not m:
            return None
        if self.carafe:  # FPN_CARAFE: every level has a lateral and an output conv.
            if index >= len(self.out_stages):
                return None
            what = "lateral" if kind == "lateral_convs" else "output"
            return f"backbone.fpn_{what}{self.out_stages[index]}.{m.group(1)}"
        n_in = len(self.in_stages)
        if kind == "lateral_convs":
            return f"backbone.fpn_lateral{self.in_stages[index]}.{m.group(1)}" \
                if index < n_in else None
        if index < n_in:
            return f"backbone.fpn_output{self.in_stages[index]}.{m.group(1)}"
        extra = index - n_in  # mmdet FPN's extra convs (add_extra_convs='on_input'): P6, P7
        if extra < len(self.top_block):
            return f"backbone.top_block.{self.top_block[extra]}.{m.group(1)}"
        return None

    def protonet_name(self, index: int, param: str) -> Optional[str]:
        """Our name of ``mask_head.protonet.<index>``: mmdet's Sequential interleaves a ReLU after
        every layer and puts the interpolation (plus its ReLU) after the first ``proto_pre``
        convs, so conv i sits at index 2i before it and 2i + 2 after it."""
        if index % 2:
            return None
        i = index // 2
        if i > self.proto_pre:
            i -= 1
        elif i == self.proto_pre:
            return None  # the interpolation has no parameters
        return f"{self.proto_convs[i]}.{param}" if i < len(self.proto_convs) else None


def _target_name(key: str, layout: _Layout) -> Tuple[Optional[str], Transform, str]:
    """(our name, transform, why-dropped) of one mmdet key other than a plain ResNet tensor.

    Our name is None for a key with no place in the model (and for plain ResNet tensors, which
    :func:`convert_torchvision_resnet` names); why-dropped is then "" for an unknown key (an
    error) or the reason a known key is not needed (reported).
    """
    m = _DCN_OFFSET.match(key)
    if m:
        layer, block, param = m.groups()
        return f"{BOTTOM_UP_PREFIX}res{int(layer) + 1}.{block}.conv2_offset.{param}", None, ""
    m = _NECK.match(key)
    if m:
        return layout.neck_name(m.group(1), int(m.group(2)), m.group(3)), None, ""
    m = _HEAD_CONV.match(key)
    if m:
        return f"head.tower.{2 * int(m.group(1))}.{m.group(2)}", None, ""
    m = _HEAD_PRED.match(key)
    if m:
        return f"head.{_HEAD_NAMES[m.group(1)]}.{m.group(2)}", None, ""
    m = _PROTONET.match(key)
    if m:
        return layout.protonet_name(int(m.group(1)), m.group(2)), None, ""
    m = _SEGM.match(key)
    if m:
        if not layout.semseg:
            return None, None, "the config has no semantic head (MODEL.YOLACT.SEMSEG_HEAD: False)"
        return f"semseg_head.conv.{m.group(1)}", _roll_semseg_channels, ""
    return None, None, ""


def _hint(target: str) -> str:
    """Advice for a shape mismatch of ``target`` ("" when there is none)."""
    if target.startswith("head.") and not target.startswith("head.tower"):
        return ("the checkpoint was trained with another number of classes or anchors per "
                "location: check MODEL.YOLACT.NUM_CLASSES and MODEL.ANCHOR_GENERATOR")
    if target.startswith("semseg_head."):
        return "check MODEL.YOLACT.NUM_CLASSES"
    return ""


_OUR_DCN_OFFSET = re.compile(r"^" + re.escape(BOTTOM_UP_PREFIX) + r"(res\d)\.\d+\.conv2_offset\.")


def _deformable_stages(names) -> List[str]:
    """The ResNet stages (res2..res5) with DCNv2 offset convs among ``names`` (ours or mmdet's)."""
    stages = set()
    for name in names:
        m = _DCN_OFFSET.match(name)
        if m:
            stages.add(f"res{int(m.group(1)) + 1}")
        m = _OUR_DCN_OFFSET.match(name)
        if m:
            stages.add(m.group(1))
    return sorted(stages)


def _check_architecture(state_dict: Mapping, expected: Mapping, layout: _Layout) -> None:
    """Stop early, with one clear sentence, when the checkpoint's neck or DCN stages are not the
    config's (otherwise every tensor of the part would be listed)."""
    keys = [str(k) for k in state_dict]
    carafe = any(k.startswith("neck.upsample_modules.") for k in keys)
    if carafe != layout.carafe:
        names = {True: "FPN_CARAFE (build_yolact_resnet_carafe_fpn_backbone)",
                 False: "a plain FPN (build_yolact_resnet_fpn_backbone)"}
        raise ValueError(
            f"mmdetection checkpoint: its neck is {names[carafe]} but the config's is "
            f"{names[layout.carafe]}; use the config of the checkpoint's model")
    theirs, ours = _deformable_stages(keys), _deformable_stages(expected)
    if theirs != ours:
        raise ValueError(
            f"mmdetection checkpoint: its ResNet has DCNv2 convs in {theirs or 'no stage'} but the "
            f"config's in {ours or 'no stage'} (MODEL.RESNETS.DEFORM_ON_PER_STAGE); use the "
            "config of the checkpoint's model")


def convert_mmdet_checkpoint(
    state_dict: Mapping[str, torch.Tensor], model: nn.Module
) -> Dict[str, torch.Tensor]:
    """Convert an mmdetection YOLACT / maYOLACT state dict into ``model``'s names and layouts.

    Every source tensor is either placed (renamed, and converted where the layout differs: see the
    module doc) or, for parts the config does not build (the semantic head with
    ``MODEL.YOLACT.SEMSEG_HEAD: False``, BN ``num_batches_tracked`` counters of a frozen norm),
    dropped and reported in the log. Everything else is an error.

    Args:
        state_dict (Mapping[str, Tensor]): the ``"state_dict"`` of an mmdetection checkpoint
            (names under ``backbone.``, ``neck.``, ``bbox_head.``, ``mask_head.``, ``segm_head.``).
        model (nn.Module): the target :class:`mayolact.YOLACT`, built from the matching config;
            only its names, shapes and structure are read.

    Returns:
        dict[str, Tensor]: one tensor for every entry of ``model.state_dict()``, in its order and
        with its shapes (the source dtypes are kept).

    Raises:
        ValueError: source keys with no place in the model, model entries the checkpoint does not
            fill, shape mismatches or non-tensor values; the message names each one.
    """
    if not isinstance(state_dict, Mapping):
        raise ValueError(
            "mmdetection checkpoint: expected a state dict (a mapping), "
            f"got {type(state_dict).__name__}")
    layout = _Layout(model)
    expected = model.state_dict()
    _check_architecture(state_dict, expected, layout)

    not_tensor = [str(k) for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if not_tensor:
        raise ValueError(
            f"mmdetection checkpoint: {len(not_tensor)} entries are not tensors: "
            + ", ".join(sorted(not_tensor)[:10]))

    out: Dict[str, torch.Tensor] = {}
    source_of: Dict[str, str] = {}  # our name -> the mmdet key placed there
    unknown: List[str] = []
    dropped: List[Tuple[str, str]] = []
    problems: List[str] = []
    hints: List[str] = []
    for key, value in state_dict.items():
        ours, transform, why = _target_name(str(key), layout)
        if ours is None and not why and str(key).startswith("backbone."):
            try:  # the ResNet itself: torchvision's names under "backbone."
                renamed, unused = convert_torchvision_resnet(
                    {key[len("backbone."):]: value}, prefix=BOTTOM_UP_PREFIX)
            except ValueError:
                renamed = {}
            ours = next(iter(renamed), None)
        if ours is not None and ours not in expected and ours.endswith(".num_batches_tracked"):
            ours, why = None, "the model's norm keeps no batch counter"
        if ours is None or ours not in expected:
            if why:
                dropped.append((key, why))
            else:
                unknown.append(key)
            continue
        if ours in source_of:
            problems.append(f"{source_of[ours]} and {key} both map to {ours}")
            continue
        source_of[ours] = key
        value = transform(value) if transform is not None else value
        if tuple(value.shape) != tuple(expected[ours].shape):
            problems.append(
                f"{key} has shape {tuple(value.shape)} but {ours} needs "
                f"{tuple(expected[ours].shape)}")
            if _hint(ours) and _hint(ours) not in hints:
                hints.append(_hint(ours))
            continue
        out[ours] = value

    if unknown:
        problems.insert(0, f"{len(unknown)} keys have no place in this model: "
                        + ", ".join(sorted(unknown)[:10]))
    missing = [k for k in expected if k not in source_of]
    if missing:
        problems.append(f"{len(missing)} entries of the model are not in the checkpoint: "
                        + ", ".join(missing[:10]))
    if problems:
        raise ValueError("mmdetection checkpoint does not match the config's model: "
                         + "; ".join(problems + hints))
    for key, why in dropped:
        logger.info("mmdetection checkpoint: %s not used: %s", key, why)
    logger.info("mmdetection checkpoint: converted %d tensors (%d not used)",
                len(out), len(dropped))
    return OrderedDict((k, out[k]) for k in expected)
