"""Loading MODEL.WEIGHTS: torchvision ImageNet ResNets (files and ``torchvision://``), Detectron2
checkpoints with the class-layer switch, mmdetection detection, and the errors of bad files.

Everything runs offline: torchvision models get random weights (with non-trivial BatchNorm
statistics, so that a misplaced tensor changes the outputs) and ``torchvision://`` resolves in a
temporary ``$TORCH_HOME``; the download function is replaced wherever it could be reached.
"""
import logging
import os
import sys
import types
import urllib.error
from copy import deepcopy
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from detectron2.engine import hooks
from detectron2.modeling import build_model
from torch import nn

import mayolact  # noqa: F401
from mayolact.checkpoint.checkpointer import CheckpointError, YOLACTCheckpointer, summarize_names
from mayolact.checkpoint.torchvision import torchvision_cache_path
from mayolact.config.config import load_config
from mayolact.data.datasets import coco_mini_root
from mayolact.modeling.backbone import ModulatedDeformBottleneck

from common import load_tool

REPO = Path(__file__).resolve().parents[1]
COCO_CONFIGS = REPO / "configs" / "COCO-InstanceSegmentation"
PAPER_CONFIGS = sorted(p for p in COCO_CONFIGS.glob("*.yaml") if not p.name.startswith("Base-"))
SCRATCH_CONFIGS = sorted((REPO / "configs" / "quick_schedules").glob("*.yaml")) + sorted(
    (REPO / "configs" / "shapes").glob("*.yaml"))
TABLE2 = COCO_CONFIGS / "yolact_R_50_FPN_550_atss_maiou.yaml"
MAYOLACT = COCO_CONFIGS / "mayolact_R_50_FPN_550.yaml"
QUICK = REPO / "configs" / "quick_schedules" / "yolact_R_50_FPN_quick_atss_maiou.yaml"
SIDE = 128  # input side of the output comparisons: small, R-101 on CPU is slow at 550


# ---------------------------------------------------------------------------------- helpers
def random_torchvision_resnet(depth: int, seed: int = 0) -> nn.Module:
    """torchvision ``resnet{depth}()`` in eval mode with random BatchNorm affine and statistics."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models, f"resnet{depth}")()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.2)
                m.running_mean.normal_(0.0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(7)
    return model.eval()


def real_image() -> np.ndarray:
    """A coco_mini photograph (RGB, uint8, SIDE x SIDE), or a smooth synthetic one without it."""
    root = coco_mini_root()
    if root is not None:
        import cv2

        bgr = cv2.imread(str(sorted((root / "val2017").glob("*.jpg"))[0]))
        return np.ascontiguousarray(cv2.resize(bgr, (SIDE, SIDE))[:, :, ::-1])
    y, x = np.mgrid[0:SIDE, 0:SIDE] / SIDE
    return (255 * np.stack([x, y, (x * y) ** 0.5], -1)).astype(np.uint8)


def normalised_input(model) -> torch.Tensor:
    """The image as the model normalises it: (1, 3, SIDE, SIDE), RGB, (x - mean) / std."""
    img = torch.as_tensor(real_image().transpose(2, 0, 1).copy()).float()[None]
    return (img - model.pixel_mean) / model.pixel_std


def bottom_up_stages(resnet, x):
    """Outputs of res2..res5 of a Detectron2 ResNet (its OUT_FEATURES need not include res2)."""
    x = resnet.stem(x)
    out = {}
    for name, stage in zip(resnet.stage_names, resnet.stages):
        x = stage(x)
        out[name] = x
    return out


def torchvision_layers(tv, x):
    """Outputs of layer1..layer4 of a torchvision ResNet, as res2..res5."""
    x = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
    out = {}
    for i in range(1, 5):
        x = getattr(tv, f"layer{i}")(x)
        out[f"res{i + 1}"] = x
    return out


def deformable_equivalent(tv, resnet):
    """A copy of ``tv`` whose blocks that are deformable in ``resnet`` have their 3x3 weight halved:
    at zero offsets with modulation sigmoid(0) = 0.5, DCNv2 is half the plain convolution."""
    copy = deepcopy(tv)
    with torch.no_grad():
        for i in range(1, 5):
            for tv_block, block in zip(getattr(copy, f"layer{i}"), getattr(resnet, f"res{i + 1}")):
                if isinstance(block, ModulatedDeformBottleneck):
                    tv_block.conv2.weight.mul_(0.5)
    return copy.eval()


def assert_close_rel(ours, theirs, rel=1e-5):
    """Max |ours - theirs| within ``rel`` of max |theirs| (the activations grow with depth)."""
    scale = theirs.abs().max().item()
    err = (ours - theirs).abs().max().item()
    assert scale > 0 and err <= rel * scale, (err, scale)


def build(config, *opts):
    cfg = load_config(str(config), ["MODEL.DEVICE", "cpu", *opts])
    torch.manual_seed(1)
    return cfg, build_model(cfg).eval()


def load(cfg, model, path=None):
    return YOLACTCheckpointer.from_config(cfg, model).load(str(path or cfg.MODEL.WEIGHTS))


@pytest.fixture(scope="module")
def r50_file(tmp_path_factory):
    """(path of a random torchvision R-50 state dict, the model)."""
    tv = random_torchvision_resnet(50)
    path = tmp_path_factory.mktemp("tv") / "resnet50-random.pth"
    torch.save(tv.state_dict(), path)
    return path, tv


@pytest.fixture
def no_download(monkeypatch):
    """Any download attempt fails as offline; the attempts are recorded."""
    attempts = []

    def offline(url, dst, *args, **kwargs):
        attempts.append((url, dst))
        raise urllib.error.URLError("offline (test)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return attempts


@pytest.fixture
def torch_home(tmp_path, monkeypatch, no_download):
    """An empty ``$TORCH_HOME`` (torch.hub's cache is ``$TORCH_HOME/hub``)."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    return home


def put_in_cache(home: Path, name: str, src: Path) -> Path:
    """Place ``src`` where torchvision keeps ``name``'s ImageNet weights under ``home``."""
    from torchvision.models import get_model_weights

    url = get_model_weights(name).IMAGENET1K_V1.url
    dst = home / "hub" / "checkpoints" / os.path.basename(url)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(src.read_bytes())
    return dst


# --------------------------------------------------------- 1. torchvision -> equal backbone outputs
@pytest.mark.parametrize("depth,freeze_at", [(50, 0), (101, 0), (50, 5)])
def test_torchvision_resnet_outputs_equal_in_table2_config(depth, freeze_at, tmp_path, caplog):
    """res2-res5 equal torchvision's layer1-layer4 (BN in eval; FREEZE_AT 5: FrozenBN)."""
    tv = random_torchvision_resnet(depth, seed=depth)
    path = tmp_path / f"resnet{depth}.pth"
    torch.save(tv.state_dict(), path)
    cfg, model = build(TABLE2, "MODEL.WEIGHTS", str(path), "MODEL.RESNETS.DEPTH", depth,
                       "MODEL.BACKBONE.FREEZE_AT", freeze_at)
    with caplog.at_level(logging.INFO):
        load(cfg, model)
    lines = [r.getMessage() for r in caplog.records]
    assert "Unused from the checkpoint (2 tensors): fc" in lines
    fresh = [line for line in lines if line.startswith("Initialised fresh")]
    assert len(fresh) == 1 and "backbone.{fpn_lateral*, fpn_output*, top_block.p*}" in fresh[0]
    assert ("head.{tower.*, cls_score, bbox_pred, coeff_pred}" in fresh[0]
            and "bottom_up" not in fresh[0])

    x = normalised_input(model)
    with torch.no_grad():
        ours = bottom_up_stages(model.backbone.bottom_up, x)
        theirs = torchvision_layers(tv, x)
    for name in ("res2", "res3", "res4", "res5"):
        assert_close_rel(ours[name], theirs[name])


def test_dcn_config_takes_every_torchvision_tensor(r50_file, caplog):
    """maYOLACT (DCNv2 in res3-res5): each torchvision tensor lands in its module, the deformable
    3x3 weights included; the offset convs stay zero; outputs equal torchvision's with the
    deformable 3x3 weights halved (zero offsets, modulation sigmoid(0) = 0.5)."""
    path, tv = r50_file
    cfg, model = build(MAYOLACT, "MODEL.WEIGHTS", str(path))
    with caplog.at_level(logging.INFO):
        load(cfg, model)
    fresh = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Initialised")]
    assert "bottom_up.res*.*.conv2_offset" in fresh[0] and "fpn_upsample*" in fresh[0]

    ours = model.backbone.bottom_up
    pairs = [(tv.conv1, ours.stem.conv1), (tv.bn1, ours.stem.conv1.norm)]
    deformable = 0
    for i in range(1, 5):
        for tv_block, block in zip(getattr(tv, f"layer{i}"), getattr(ours, f"res{i + 1}")):
            for k in (1, 2, 3):
                pairs.append((getattr(tv_block, f"conv{k}"), getattr(block, f"conv{k}")))
                pairs.append((getattr(tv_block, f"bn{k}"), getattr(block, f"conv{k}").norm))
            if tv_block.downsample is not None:
                pairs.append((tv_block.downsample[0], block.shortcut))
                pairs.append((tv_block.downsample[1], block.shortcut.norm))
            if isinstance(block, ModulatedDeformBottleneck):
                deformable += 1
                assert torch.equal(block.conv2.weight, tv_block.conv2.weight)
                assert not block.conv2_offset.weight.any() and not block.conv2_offset.bias.any()
    assert deformable == 13
    for theirs, mine in pairs:
        for name, tensor in theirs.state_dict().items():
            if name in mine.state_dict():
                assert torch.equal(mine.state_dict()[name], tensor), (mine, name)
            else:
                assert name == "num_batches_tracked"

    halved = deformable_equivalent(tv, ours)
    with torch.no_grad():
        x = normalised_input(model)
        mine = bottom_up_stages(ours, x)
        expected = torchvision_layers(halved, x)
    for name in ("res2", "res3", "res4", "res5"):
        assert_close_rel(mine[name], expected[name])


# ------------------------------------------------- 2. every paper config starts from ImageNet R-50
def backbone_network(cfg) -> tuple:
    """What decides how ImageNet weights load into a config's ResNet: its architecture keys."""
    r = cfg.MODEL.RESNETS
    return (cfg.MODEL.BACKBONE.NAME, r.DEPTH, tuple(r.DEFORM_ON_PER_STAGE), r.DEFORM_MODULATED,
            r.DEFORM_NUM_GROUPS, cfg.MODEL.YOLACT.DEFORM_INTERVAL, cfg.MODEL.BACKBONE.FREEZE_AT,
            r.NORM, r.STRIDE_IN_1X1, cfg.MODEL.YOLACT.RESNET_WIDTH_SCALE)


#: backbone_network -> the config whose model was built, loaded and compared for it (this process).
_LOADED_NETWORKS = {}


@pytest.mark.parametrize("config", PAPER_CONFIGS, ids=lambda p: p.stem)
def test_paper_config_loads_torchvision_resnet50(config, r50_file, torch_home, no_download):
    """Table 2 / Table 4 configs: torchvision://resnet50 with the settings torchvision's weights
    need (stride in the 3x3, RGB, full width), resolved from the cache without a download.

    The 22 configs have three distinct backbones: each is built, loaded and compared with
    torchvision once (the configs differ elsewhere: matcher, input size, anchors)."""
    path, tv = r50_file
    cfg = load_config(str(config), ["MODEL.DEVICE", "cpu"])
    assert cfg.MODEL.WEIGHTS == "torchvision://resnet50"
    assert cfg.MODEL.RESNETS.DEPTH == 50 and not cfg.MODEL.RESNETS.STRIDE_IN_1X1
    assert cfg.MODEL.YOLACT.RESNET_WIDTH_SCALE == 1.0 and cfg.INPUT.FORMAT == "RGB"
    # The official configs' normalisation (RGB mean / std), used with the torchvision weights.
    assert list(cfg.MODEL.PIXEL_MEAN) == [123.68, 116.78, 103.94]
    assert list(cfg.MODEL.PIXEL_STD) == [58.40, 57.12, 57.38]
    if backbone_network(cfg) in _LOADED_NETWORKS:
        return  # the same ResNet as a config loaded and compared before
    put_in_cache(torch_home, "resnet50", path)
    cfg, model = build(config)
    load(cfg, model)
    _LOADED_NETWORKS[backbone_network(cfg)] = config.stem
    assert no_download == []
    bottom_up = model.backbone.bottom_up
    assert torch.equal(bottom_up.stem.conv1.weight, tv.conv1.weight)
    assert torch.equal(bottom_up.res5[2].conv3.norm.running_var, tv.layer4[2].bn3.running_var)
    x = normalised_input(model)[..., :64, :64]
    with torch.no_grad():
        ours = bottom_up_stages(bottom_up, x)
        theirs = torchvision_layers(deformable_equivalent(tv, bottom_up), x)
    for name in ("res2", "res3", "res4", "res5"):
        assert_close_rel(ours[name], theirs[name])


@pytest.mark.parametrize("config", SCRATCH_CONFIGS, ids=lambda p: p.stem)
def test_cpu_and_shapes_configs_train_from_scratch(config):
    assert load_config(str(config)).MODEL.WEIGHTS == ""


# ---------------------------------------------------------------- 3. torchvision:// resolution
def test_torchvision_uri_resolves_in_torch_home(r50_file, torch_home, no_download):
    path, _ = r50_file
    expected = put_in_cache(torch_home, "resnet101", path)
    assert torchvision_cache_path("resnet101") == str(expected)
    from detectron2.utils.file_io import PathManager

    assert PathManager.get_local_path("torchvision://resnet101") == str(expected)
    assert PathManager.exists("torchvision://resnet101")
    assert not PathManager.exists("torchvision://resnet50")
    assert no_download == []


def test_torchvision_uri_offline_names_the_file_and_the_place(torch_home, no_download):
    cfg, model = build(QUICK, "MODEL.WEIGHTS", "torchvision://resnet50")
    expected = torch_home / "hub" / "checkpoints" / "resnet50-0676ba61.pth"
    with pytest.raises(FileNotFoundError) as info:
        load(cfg, model)
    message = str(info.value)
    assert str(expected) in message and "resnet50-0676ba61.pth" in message
    assert "https://download.pytorch.org/models/resnet50-0676ba61.pth" in message
    assert "tools/convert_weights.py torchvision" in message
    assert [url for url, _ in no_download] == ["https://download.pytorch.org/models/resnet50-0676ba61.pth"]
    assert not expected.exists()


def test_offline_torchvision_weights_stop_train_net_in_one_line(torch_home, no_download,
                                                               tmp_path, capsys, monkeypatch):
    """The offline error of a COCO config is one line on stderr and exit status 2, before any
    model is built (no chain of download tracebacks)."""
    # Only what the tool prints: console handlers an earlier test gave the project's logger (in
    # this process) may write to a stream that test's capture has closed.
    monkeypatch.setattr(logging.getLogger("mayolact"), "handlers", [])
    train_net = load_tool("train_net")
    with pytest.raises(SystemExit) as exc:
        train_net.cli(["--config-file", str(QUICK), "MODEL.WEIGHTS", "torchvision://resnet50",
                       "MODEL.YOLACT.RESNET_WIDTH_SCALE", "1.0", "MODEL.YOLACT.NUM_CLASSES", "8",
                       "DATASETS.TRAIN", "('mayolact_shapes_train',)", "DATASETS.TEST", "()",
                       "OUTPUT_DIR", str(tmp_path / "out")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: MODEL.WEIGHTS: torchvision://resnet50: ")
    assert "resnet50-0676ba61.pth" in err and "tools/convert_weights.py torchvision" in err
    assert not (tmp_path / "out").exists()


def test_torchvision_uri_downloads_through_torchvision_where_online(r50_file, torch_home,
                                                                    monkeypatch, caplog):
    """Online: torchvision's weights API downloads into torch.hub's cache, then it loads."""
    path, tv = r50_file

    def download(url, dst, hash_prefix=None, progress=True):
        assert url == torchvision.models.ResNet50_Weights.IMAGENET1K_V1.url
        Path(dst).write_bytes(path.read_bytes())

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    cfg, model = build(TABLE2)
    load(cfg, model)
    assert (torch_home / "hub" / "checkpoints" / "resnet50-0676ba61.pth").is_file()
    assert torch.equal(model.backbone.bottom_up.res4[5].conv2.weight, tv.layer3[5].conv2.weight)


def test_unknown_torchvision_name_lists_the_supported_ones(torch_home):
    from detectron2.utils.file_io import PathManager

    with pytest.raises(ValueError, match="torchvision://vgg16: unsupported.*torchvision://resnet101"):
        PathManager.get_local_path("torchvision://vgg16")


# ------------------------------------------------------- 4. architecture mismatches and bad files
@pytest.mark.parametrize("depth,match", [
    (18, r"resnet18\.pth: the torchvision ImageNet ResNet does not match.*nothing was loaded.*"
         r"not in the file.*shortcut.*another shape.*MODEL.RESNETS.DEPTH"),
    (101, r"resnet101\.pth: the torchvision ImageNet ResNet does not match.*255 tensors of the "
          r"file are not in the model.*e\.g\. backbone\.bottom_up\.res4\.6\.conv1\.weight"),
])
def test_torchvision_resnet_of_another_depth_is_refused(depth, match, tmp_path):
    path = tmp_path / f"resnet{depth}.pth"
    torch.save(getattr(torchvision.models, f"resnet{depth}")().state_dict(), path)
    cfg, model = build(TABLE2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=match):
        load(cfg, model, path)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing loaded


def test_torchvision_resnet_needs_full_width_and_stride_in_3x3(r50_file):
    path, _ = r50_file
    cfg, model = build(QUICK)  # quarter-width ResNet
    with pytest.raises(CheckpointError, match="another shape.*RESNET_WIDTH_SCALE"):
        load(cfg, model, path)
    cfg, model = build(QUICK, "MODEL.YOLACT.RESNET_WIDTH_SCALE", 1.0,
                       "MODEL.RESNETS.STRIDE_IN_1X1", True)
    with pytest.raises(CheckpointError, match="set MODEL.RESNETS.STRIDE_IN_1X1 False"):
        load(cfg, model, path)


def test_another_architectures_detectron2_checkpoint_is_refused(tmp_path):
    """A RetinaNet-like Detectron2 state dict (same ResNet, other FPN and head)."""
    cfg, model = build(QUICK)
    state = {k: v for k, v in model.state_dict().items() if k.startswith("backbone.bottom_up.")}
    state.update({
        "backbone.fpn_lateral3.weight": torch.zeros(256, 128, 1, 1),
        "head.cls_subnet.0.weight": torch.zeros(256, 256, 3, 3),
        "head.cls_score.weight": torch.zeros(720, 256, 3, 3),
        "head.bbox_pred.weight": torch.zeros(36, 256, 3, 3),
    })
    path = tmp_path / "retinanet.pth"
    torch.save({"model": state, "__author__": "Detectron2"}, path)
    with pytest.raises(CheckpointError) as info:
        load(cfg, model, path)
    message = str(info.value)
    assert message.startswith(f"{path}: the checkpoint does not match the model")
    assert "not in the file (backbone.{fpn_lateral*" in message
    assert "head.cls_subnet.*" in message and "another shape" in message
    assert "another architecture or config" in message


def test_backbone_only_detectron2_checkpoint_points_to_torchvision(tmp_path):
    cfg, model = build(QUICK)
    path = tmp_path / "r50_backbone.pth"
    torch.save({"model": {k: v for k, v in model.state_dict().items()
                          if k.startswith("backbone.bottom_up.")}}, path)
    with pytest.raises(CheckpointError, match="backbone only.*torchvision://resnet50"):
        load(cfg, model, path)


def _write_bad_files(folder: Path, good: Path):
    data = good.read_bytes()
    files = {
        "truncated.pth": (data[: len(data) // 2], "corrupt or truncated"),
        "garbage.pth": (bytes(range(256)) * 64, "corrupt or truncated"),
        "notes.pth": (b"model: R-50\nweights: torchvision\n", "a text file"),
        "empty.pth": (b"", "empty"),
    }
    for name, (content, _) in files.items():
        (folder / name).write_bytes(content)
    return {folder / name: why for name, (_, why) in files.items()}


def test_corrupt_text_and_empty_files_are_named(r50_file, tmp_path):
    cfg, model = build(QUICK)
    for path, why in _write_bad_files(tmp_path, r50_file[0]).items():
        with pytest.raises(CheckpointError, match=f"^{path}: .*{why}"):
            load(cfg, model, path)
    for obj, why in ((torch.arange(3), "holds a Tensor, not a dict"),
                     ({"model": [1, 2]}, "'model' is a list"),
                     ({"model": {"head.cls_score.weight": 3}}, "Unsupported type"),
                     ({"epoch": 3, "lr": 0.1}, "unrecognised checkpoint layout"),
                     ({"state_dict": {"encoder.weight": torch.ones(1)}}, "not an mmdetection")):
        path = tmp_path / "odd.pth"
        torch.save(obj, path)
        with pytest.raises(CheckpointError, match=f"^{path}: .*{why}"):
            load(cfg, model, path)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load(cfg, model, tmp_path / "missing.pth")


# -------------------------------------------------- 5. full checkpoints and the class-layer switch
def _quick_checkpoint(tmp_path, *opts):
    cfg, src = build(QUICK, *opts)
    with torch.no_grad():
        for p in src.parameters():
            p.normal_()
    path = tmp_path / "quick.pth"
    torch.save({"model": src.state_dict()}, path)
    return path, src.state_dict()


def test_full_checkpoint_round_trip_is_exact(tmp_path, caplog):
    path, saved = _quick_checkpoint(tmp_path)
    cfg, model = build(QUICK)
    with caplog.at_level(logging.INFO):
        load(cfg, model, path)
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    assert not any(r.getMessage().startswith(("Unused", "Initialised")) for r in caplog.records)


def test_other_class_count_needs_the_class_layer_switch(tmp_path, caplog):
    path, saved = _quick_checkpoint(tmp_path)  # 80 classes
    cfg, model = build(QUICK, "MODEL.YOLACT.NUM_CLASSES", 8)
    with pytest.raises(CheckpointError, match="Only the class layers differ.*"
                                              "MODEL.YOLACT.WEIGHTS_SKIP_CLASS_LAYERS True"):
        load(cfg, model, path)

    cfg, model = build(QUICK, "MODEL.YOLACT.NUM_CLASSES", 8,
                       "MODEL.YOLACT.WEIGHTS_SKIP_CLASS_LAYERS", True)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    with caplog.at_level(logging.INFO):
        load(cfg, model, path)
    class_layers = {"head.cls_score.weight", "head.cls_score.bias",
                    "semseg_head.conv.weight", "semseg_head.conv.bias"}
    for k, v in model.state_dict().items():
        assert torch.equal(v, fresh[k] if k in class_layers else saved[k]), k
    assert ("Initialised fresh, not from the checkpoint (4 tensors): head.cls_score, "
            "semseg_head.conv") in [r.getMessage() for r in caplog.records]


def test_class_layer_switch_allows_nothing_else(tmp_path):
    path, _ = _quick_checkpoint(tmp_path, "MODEL.FPN.OUT_CHANNELS", 32)
    cfg, model = build(QUICK, "MODEL.YOLACT.WEIGHTS_SKIP_CLASS_LAYERS", True)
    with pytest.raises(CheckpointError, match="another shape.*another architecture"):
        load(cfg, model, path)
    path, saved = _quick_checkpoint(tmp_path)
    del saved["head.bbox_pred.weight"]
    torch.save({"model": saved}, path)
    with pytest.raises(CheckpointError, match=r"1 of the model's \d+ tensors are not in the file "
                                              r"\(head.bbox_pred; e.g. head.bbox_pred.weight\)"):
        load(cfg, model, path)


def test_training_only_semantic_head_is_reported_unused(tmp_path, caplog):
    path, saved = _quick_checkpoint(tmp_path)
    cfg, model = build(QUICK, "MODEL.YOLACT.SEMSEG_HEAD", False)
    with caplog.at_level(logging.INFO):
        load(cfg, model, path)
    assert "Unused from the checkpoint (2 tensors): semseg_head.conv" in [
        r.getMessage() for r in caplog.records]
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())


# ----------------------------------------------------------------------- 6. mmdetection wiring
def test_mmdet_checkpoint_goes_through_the_mmdet_converter(tmp_path, monkeypatch):
    """Detected by its 'state_dict' of mmdet names; converted by mayolact.checkpoint.mmdet (a
    stand-in here) and then held to the full-checkpoint rules."""
    cfg, model = build(QUICK)
    target = {k: torch.randn_like(v) if v.is_floating_point() else v
              for k, v in model.state_dict().items()}
    calls = []

    def convert(state_dict, m):
        calls.append((sorted(state_dict), m))
        if "bbox_head.bad" in state_dict:
            raise ValueError("bbox_head.bad: no place in the model")
        return dict(target)

    monkeypatch.setitem(sys.modules, "mayolact.checkpoint.mmdet",
                        types.SimpleNamespace(convert_mmdet_checkpoint=convert))
    path = tmp_path / "mmdet.pth"
    torch.save({"state_dict": {"backbone.conv1.weight": torch.ones(1),
                               "bbox_head.conv_cls.weight": torch.ones(1)},
                "meta": {"mmdet_version": "2.1.0"}}, path)
    extra = load(cfg, model, path)
    assert calls == [(["backbone.conv1.weight", "bbox_head.conv_cls.weight"], model)]
    assert extra["__author__"] == "mmdetection"
    assert all(torch.equal(target[k], v) for k, v in model.state_dict().items())

    torch.save({"state_dict": {"bbox_head.bad": torch.ones(1)}, "meta": {}}, path)
    with pytest.raises(CheckpointError, match=f"^{path}: mmdetection checkpoint: bbox_head.bad"):
        load(cfg, model, path)


# ----------------------------------------------------------------- 7. convert tool, trainer, names
def test_convert_tool_writes_a_checkpoint_that_loads_the_same(r50_file, tmp_path, torch_home):
    path, tv = r50_file
    tool = load_tool("convert_weights")
    put_in_cache(torch_home, "resnet50", path)
    dst = tmp_path / "out" / "R-50.pth"
    assert tool.main(["torchvision", "torchvision://resnet50", str(dst)]) == 0
    written = torch.load(dst, weights_only=True)
    assert written["__author__"] == "torchvision"
    assert set(written) == {"model", "__author__"} and len(written["model"]) == 318
    assert not list(dst.parent.glob(".*.tmp"))  # no temporary left behind

    cfg, direct = build(MAYOLACT, "MODEL.WEIGHTS", str(path))
    load(cfg, direct)
    cfg, converted = build(MAYOLACT, "MODEL.WEIGHTS", str(dst))
    load(cfg, converted)
    for (k, a), b in zip(direct.state_dict().items(), converted.state_dict().values()):
        if k.startswith("backbone.bottom_up."):
            assert torch.equal(a, b), k

    text = tmp_path / "notes.txt"
    text.write_text("not weights\n")
    assert tool.main(["torchvision", str(text), str(tmp_path / "x.pth")]) == 2
    assert tool.main(["torchvision", str(dst), str(tmp_path / "x.pth")]) == 2  # already converted
    assert not (tmp_path / "x.pth").exists()


def test_trainer_loads_and_saves_through_the_yolact_checkpointer(tmp_path, monkeypatch):
    from mayolact.engine.trainer import Trainer

    path, _ = _quick_checkpoint(tmp_path)
    # No data: the trainer is built only for its checkpointer.
    monkeypatch.setattr(Trainer, "build_train_dataset", classmethod(lambda cls, cfg: [{}]))
    monkeypatch.setattr(Trainer, "build_train_loader",
                        classmethod(lambda cls, cfg, **kwargs: [[]]))
    cfg = load_config(str(QUICK), ["MODEL.WEIGHTS", str(path), "MODEL.YOLACT.NUM_CLASSES", 8,
                                   "OUTPUT_DIR", str(tmp_path / "run")])
    trainer = Trainer(cfg, checked=True)
    assert isinstance(trainer.checkpointer, YOLACTCheckpointer)
    periodic = [h for h in trainer._hooks if isinstance(h, hooks.PeriodicCheckpointer)]
    assert periodic and periodic[0].checkpointer is trainer.checkpointer
    with pytest.raises(CheckpointError, match="WEIGHTS_SKIP_CLASS_LAYERS"):
        trainer.resume_or_load(resume=False)


def test_summarize_names_groups_by_module():
    names = ["fc.weight", "fc.bias", "backbone.fpn_lateral3.weight", "backbone.fpn_lateral4.bias",
             "backbone.bottom_up.res3.0.conv2_offset.weight", "head.cls_score.bias",
             "head.tower.0.weight", "pixel_mean"]
    assert summarize_names(names) == ("fc, backbone.{fpn_lateral*, bottom_up.res*.*.conv2_offset}, "
                                      "head.{cls_score, tower.*}, pixel_mean")
    assert summarize_names([]) == ""


class _NotATensor:
    """A pickled Python object that a weights-only load refuses (as mmengine's message hub)."""

    def __init__(self, value):
        self.value = value


def test_file_with_python_objects_is_refused_unless_trusted(tmp_path, monkeypatch):
    """A weights-only load refuses pickled objects and names the opt-in; with
    $MAYOLACT_TRUST_PICKLE=1 the same file loads in full."""
    from mayolact.checkpoint.checkpointer import (
        TRUST_PICKLE_ENV,
        CheckpointError,
        load_weights_file,
    )

    path = tmp_path / "training_state.pth"
    torch.save({"state_dict": {"w": torch.ones(2)}, "message_hub": _NotATensor(3)}, str(path))
    monkeypatch.delenv(TRUST_PICKLE_ENV, raising=False)
    refused = (rf"training_state.pth: holds Python code/objects: test_weights._NotATensor .*"
               rf"{TRUST_PICKLE_ENV}=1")
    with pytest.raises(CheckpointError, match=refused):
        load_weights_file(str(path))
    monkeypatch.setenv(TRUST_PICKLE_ENV, "1")
    loaded = load_weights_file(str(path))
    assert torch.equal(loaded["state_dict"]["w"], torch.ones(2))
    assert loaded["message_hub"].value == 3
