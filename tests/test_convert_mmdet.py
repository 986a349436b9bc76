"""mmdetection YOLACT checkpoints -> maYOLACT: layouts of the authors' released models.

The authors' checkpoints (mmdetection 2.1 fork) cannot be run here, so their layout is rebuilt from
the official code (``mmdet_layouts``) and the converted layers are checked against literal
transcriptions of the official kernels (``mmcv_reference``). The mmdetection 3.x model zoo layout is
checked against the peer itself in ``test_mmdet_peer.py``.
"""
import functools
import logging

import pytest
import torch
from detectron2.modeling import build_model

from mayolact.checkpoint.mmdet import convert_mmdet_checkpoint

from common import FULL, get_config, load_tool
from mmcv_reference import bottleneck_reference, carafe_pack_reference, fpn_carafe_reference
from mmdet_layouts import mmdet_yolact_shapes, random_state_dict

# Each released checkpoint's layout (neck, DCN groups, anchors per location) and its config here.
RELEASED = [
    (f"yolact_R_50_FPN_{size}_{assigner}.yaml", ("fpn", 0, 3 if assigner == "fixediou" else 1))
    for size in (400, 550, 700)
    for assigner in ("fixediou", "atss_iou", "atss_maiou")
] + [("mayolact_R_50_FPN_550.yaml", ("carafe", 4, 2))]

@functools.lru_cache(maxsize=2)  # a few R-50 models, not one per config for the whole session
def build(config, *opts):
    """An eval-mode model of ``config`` on CPU (tests load into it what they need)."""
    cfg = get_config(FULL / config, ("MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "") + opts)
    torch.manual_seed(0)
    return build_model(cfg).eval()


def mayolact_checkpoint(seed=0, offset_scale=1.0):
    """A random state dict in the layout of the authors' maYOLACT-550 checkpoint."""
    sd = random_state_dict(mmdet_yolact_shapes("carafe", dcn_groups=4, num_anchors=2), seed)
    for k in sd:
        if "conv_offset" in k:
            sd[k] = sd[k] * offset_scale
    return sd


@pytest.mark.parametrize("config,layout", RELEASED, ids=[c for c, _ in RELEASED])
def test_released_layout_loads_with_every_key_used(config, layout):
    neck, groups, anchors = layout
    src = random_state_dict(mmdet_yolact_shapes(neck, groups, anchors, version=2), seed=1)
    model = build(config)
    out = convert_mmdet_checkpoint(src, model)
    assert list(out) == list(model.state_dict())
    model.load_state_dict(out, strict=True)
    # Every source tensor lands somewhere, unchanged except the semantic head's channel roll.
    placed = {id(v) for v in out.values()}
    moved = [k for k, v in src.items() if id(v) not in placed]
    assert moved == ["segm_head.segm_conv.weight", "segm_head.segm_conv.bias"]
    assert len(out) == len(src)


def test_mmdet3_layout_loads_into_the_fixed_iou_config():
    src = random_state_dict(mmdet_yolact_shapes("fpn", 0, 3, version=3), seed=2)
    model = build("yolact_R_50_FPN_550_fixediou.yaml")
    out = convert_mmdet_checkpoint(src, model)
    model.load_state_dict(out, strict=True)
    assert torch.equal(out["backbone.top_block.p6.weight"], src["neck.fpn_convs.3.conv.weight"])
    assert torch.equal(out["backbone.fpn_lateral3.weight"], src["neck.lateral_convs.0.conv.weight"])
    assert torch.equal(out["protonet.post_upsample.0.weight"], src["mask_head.protonet.8.weight"])
    assert torch.equal(out["head.tower.0.bias"], src["bbox_head.head_convs.0.conv.bias"])
    assert torch.equal(out["backbone.bottom_up.res5.0.shortcut.norm.running_var"],
                       src["backbone.layer4.0.downsample.1.running_var"])


def test_mmdet_zoo_r101_loads_into_the_fixed_iou_config_at_depth_101():
    """mmdetection's YOLACT R-101 zoo model: the fixed-IoU config with MODEL.RESNETS.DEPTH 101."""
    src = random_state_dict(mmdet_yolact_shapes("fpn", 0, 3, depth=101), seed=18)
    model = build("yolact_R_50_FPN_550_fixediou.yaml", "MODEL.RESNETS.DEPTH", 101)
    out = convert_mmdet_checkpoint(src, model)
    model.load_state_dict(out, strict=True)
    assert torch.equal(out["backbone.bottom_up.res4.22.conv3.weight"],
                       src["backbone.layer3.22.conv3.weight"])


@pytest.mark.parametrize("version", [2, 3])
def test_semantic_channel_of_class_c_is_mmdets_channel_c_minus_1(version):
    """mmdet trains channel c - 1 for class c (class 0 in channel K - 1); ours is channel c."""
    src = random_state_dict(mmdet_yolact_shapes("fpn", 0, 1, version=version), seed=3)
    name = "segm_head.segm_conv" if version == 2 else "mask_head.segm_branch.segm_conv"
    src[name + ".bias"] = torch.arange(80.0)  # mmdet channel j
    out = convert_mmdet_checkpoint(src, build("yolact_R_50_FPN_550_atss_maiou.yaml"))
    trained_class_of_mmdet_channel = (torch.arange(80) + 1) % 80
    ours = out["semseg_head.conv.bias"].long()
    assert torch.equal(trained_class_of_mmdet_channel[ours], torch.arange(80))
    for c in (0, 1, 79):
        assert torch.equal(out["semseg_head.conv.weight"][c], src[name + ".weight"][(c - 1) % 80])


@pytest.mark.parametrize("layer,block,stride,size", [(2, 0, 2, 7), (3, 1, 1, 3)])
def test_dcn_blocks_equal_mmcv_transcription(layer, block, stride, size):
    """A converted DCNv2 bottleneck equals mmdet's Bottleneck with ModulatedDeformConvPack (offset
    chunks, (y, x) order per kernel point, 4 offset groups, sigmoid masks) on the same weights."""
    src = mayolact_checkpoint(seed=4, offset_scale=40.0)  # offsets of a few pixels
    model = build("mayolact_R_50_FPN_550.yaml")
    model.load_state_dict(convert_mmdet_checkpoint(src, model))
    ours = getattr(model.backbone.bottom_up, f"res{layer + 1}")[block]
    in_channels = ours.conv1.in_channels
    x = torch.randn(1, in_channels, size, size, generator=torch.Generator().manual_seed(5))
    prefix = f"backbone.layer{layer}.{block}."
    offsets = torch.nn.functional.conv2d(
        torch.randn(1, src[prefix + "conv2.conv_offset.weight"].shape[1], 3, 3),
        src[prefix + "conv2.conv_offset.weight"], padding=1)
    assert offsets.abs().max() > 1.5  # the sampling points really move
    ref = bottleneck_reference(x, src, prefix, stride, deformable_groups=4)
    with torch.no_grad():
        got = ours(x.float()).double()
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


def test_carafe_upsamplers_equal_mmcv_transcription():
    src = mayolact_checkpoint(seed=6)
    for k in src:
        if "content_encoder.weight" in k:
            src[k] = src[k] * 20  # peaked reassembly kernels, not near-uniform
    model = build("mayolact_R_50_FPN_550.yaml")
    model.load_state_dict(convert_mmdet_checkpoint(src, model))
    x = torch.randn(1, 256, 3, 4, generator=torch.Generator().manual_seed(7))
    channels = [0, 77, 255]
    for j, stage in enumerate((3, 4, 5, 6)):
        ref = carafe_pack_reference(x, src, f"neck.upsample_modules.{j}.", channels=channels)
        with torch.no_grad():
            got = getattr(model.backbone, f"fpn_upsample{stage}")(x)[:, channels].double()
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_carafe_fpn_equals_mmdet_fpn_carafe_transcription(monkeypatch):
    """The whole converted neck equals FPN_CARAFE.forward (laterals, extra levels from C5, CARAFE
    top-down over all five levels with top-left slicing, output convs) on the same weights."""
    src = mayolact_checkpoint(seed=8)
    model = build("mayolact_R_50_FPN_550.yaml")
    model.load_state_dict(convert_mmdet_checkpoint(src, model))
    gen = torch.Generator().manual_seed(9)
    feats = {f"res{s}": torch.randn(1, c, n, n, generator=gen)
             for s, c, n in ((3, 512, 5), (4, 1024, 3), (5, 2048, 2))}
    monkeypatch.setattr(model.backbone.bottom_up, "forward", lambda x: feats)
    with torch.no_grad():
        got = model.backbone(torch.zeros(1, 3, 8, 8))
    c2 = torch.zeros(1, 256, 10, 10)  # start_level=1: C2 is not used
    ref = fpn_carafe_reference([c2, feats["res3"], feats["res4"], feats["res5"]], src)
    assert [tuple(got[f"p{s}"].shape) for s in range(3, 8)] == [tuple(r.shape) for r in ref]
    for s, r in zip(range(3, 8), ref):
        torch.testing.assert_close(got[f"p{s}"].double(), r, rtol=1e-4, atol=1e-4 * r.abs().max())


# ----------------------------------------------------------------------------------- bad input
def test_unknown_key_is_named():
    src = random_state_dict(mmdet_yolact_shapes("fpn", 0, 1), seed=10)
    src["bbox_head.conv_centerness.weight"] = torch.zeros(1, 256, 3, 3)
    with pytest.raises(ValueError, match=r"no place in this model: bbox_head\.conv_centerness"):
        convert_mmdet_checkpoint(src, build("yolact_R_50_FPN_550_atss_iou.yaml"))


def test_missing_tensor_is_named():
    src = random_state_dict(mmdet_yolact_shapes("fpn", 0, 1), seed=11)
    del src["mask_head.protonet.10.bias"]
    with pytest.raises(ValueError,
                       match=r"not in the checkpoint: protonet\.post_upsample\.2\.bias"):
        convert_mmdet_checkpoint(src, build("yolact_R_50_FPN_550_atss_iou.yaml"))


def test_anchor_count_mismatch_names_the_shapes():
    src = random_state_dict(mmdet_yolact_shapes("fpn", 0, 3), seed=12)  # fixed IoU: 3 anchors
    with pytest.raises(ValueError) as e:
        convert_mmdet_checkpoint(src, build("yolact_R_50_FPN_550_atss_iou.yaml"))
    msg = str(e.value)
    assert "bbox_head.conv_cls.weight has shape (243, 256, 3, 3)" in msg
    assert "head.cls_score.weight needs (81, 256, 3, 3)" in msg
    assert "MODEL.ANCHOR_GENERATOR" in msg


def test_neck_and_dcn_mismatches_stop_early():
    with pytest.raises(ValueError, match="neck is FPN_CARAFE.*config's is a plain FPN"):
        convert_mmdet_checkpoint(mayolact_checkpoint(),
                                 build("yolact_R_50_FPN_550_atss_maiou.yaml"))
    plain = random_state_dict(mmdet_yolact_shapes("fpn", 0, 2), seed=13)
    with pytest.raises(ValueError, match="neck is a plain FPN.*config's is FPN_CARAFE"):
        convert_mmdet_checkpoint(plain, build("mayolact_R_50_FPN_550.yaml"))
    carafe_no_dcn = random_state_dict(mmdet_yolact_shapes("carafe", 0, 2), seed=14)
    with pytest.raises(ValueError, match=r"DCNv2 convs in no stage but the config's in "
                                         r"\['res3', 'res4', 'res5'\]"):
        convert_mmdet_checkpoint(carafe_no_dcn, build("mayolact_R_50_FPN_550.yaml"))


def test_non_tensor_values_and_duplicates():
    src = random_state_dict(mmdet_yolact_shapes("fpn", 0, 1), seed=15)
    model = build("yolact_R_50_FPN_550_atss_iou.yaml")
    bad = dict(src, **{"bbox_head.conv_reg.bias": [0.0] * 4})
    with pytest.raises(ValueError, match=r"not tensors: bbox_head\.conv_reg\.bias"):
        convert_mmdet_checkpoint(bad, model)
    both = dict(src)
    both["mask_head.segm_branch.segm_conv.weight"] = src["segm_head.segm_conv.weight"]
    with pytest.raises(ValueError, match="segm_head.segm_conv.weight and mask_head.segm_branch."
                                         "segm_conv.weight both map to semseg_head.conv.weight"):
        convert_mmdet_checkpoint(both, model)
    with pytest.raises(ValueError, match="expected a state dict"):
        convert_mmdet_checkpoint([1, 2], model)
    with pytest.raises(ValueError, match="has no 'head'"):
        convert_mmdet_checkpoint(src, torch.nn.Linear(2, 2))


def test_semantic_head_is_reported_when_the_config_has_none(caplog):
    src = random_state_dict(mmdet_yolact_shapes("fpn", 0, 1), seed=16)
    model = build("yolact_R_50_FPN_550_atss_iou.yaml", "MODEL.YOLACT.SEMSEG_HEAD", False)
    with caplog.at_level(logging.INFO, logger="mayolact.checkpoint.mmdet"):
        out = convert_mmdet_checkpoint(src, model)
    model.load_state_dict(out, strict=True)
    assert "segm_head.segm_conv.weight not used: the config has no semantic head" in caplog.text
    assert len(out) == len(src) - 2


def test_convert_tool_mmdet_subcommand(tmp_path):
    """``tools/convert_weights.py mmdet SRC DST --config-file CFG``: the documented command writes a
    checkpoint of the config's model; a checkpoint of another model exits 2 with the reason."""
    tool = load_tool("convert_weights")
    src_sd = mayolact_checkpoint(seed=17)
    src = tmp_path / "mayolact_550_mmdet.pth"
    torch.save({"meta": {"mmdet_version": "2.1.0"}, "state_dict": src_sd}, src)
    dst = tmp_path / "converted.pth"
    assert tool.main(["mmdet", str(src), str(dst), "--config-file",
                      str(FULL / "mayolact_R_50_FPN_550.yaml")]) == 0
    written = torch.load(dst, weights_only=True)
    assert written["__author__"] == "mmdetection"
    model = build("mayolact_R_50_FPN_550.yaml")
    assert list(written["model"]) == list(model.state_dict())
    assert torch.equal(written["model"]["backbone.fpn_upsample6.content_encoder.weight"],
                       src_sd["neck.upsample_modules.3.content_encoder.weight"])
    wrong = tmp_path / "wrong.pth"
    assert tool.main(["mmdet", str(src), str(wrong), "--config-file",
                      str(FULL / "yolact_R_50_FPN_550_atss_maiou.yaml")]) == 2
    assert not wrong.exists()
