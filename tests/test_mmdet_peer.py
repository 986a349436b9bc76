"""Against the peer itself: mmdetection 3.3 YOLACT R-50 with random weights vs. its conversion.

``scripts/install_peer.sh`` (run by ``make test``) installs mmdetection 3.3.0, mmengine and
mmcv-lite into ``.peer/site``, outside the project's environment;
``tests/peer/mmdet_yolact_oracle.py`` runs there in a subprocess: it builds
``yolact_r50_1xb8-55e_coco.py`` with seeded random weights and BN statistics, saves its checkpoint
and runs mmdetection's test pipeline on a coco_mini image. Here the checkpoint is converted with
``tools/convert_weights.py mmdet`` into ``yolact_R_50_FPN_550_fixediou.yaml`` and run through
:class:`mayolact.engine.predictor.YOLACTPredictor` on the same image. Skips when the peer or
coco_mini is absent.
"""
import os
import subprocess
import sys

import cv2
import pytest
import torch
from detectron2.modeling import build_model

from mayolact.checkpoint.checkpointer import YOLACTCheckpointer
from mayolact.engine.predictor import YOLACTPredictor

from common import FULL, REPO, get_config, run_tool

PEER_SITE = REPO / ".peer" / "site"
PEER_HELPERS = REPO / "tests" / "peer"
CONFIG = FULL / "yolact_R_50_FPN_550_fixediou.yaml"
IMAGE = "val2017/000000000139.jpg"  # 426 x 640, not square: the squash and rescale matter
PEER_MISSING = 77  # the oracle's exit status when mmdetection cannot be imported


def _peer_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PEER_SITE), str(PEER_HELPERS)])
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


@pytest.fixture(scope="module")
def peer(tmp_path_factory, coco_mini):
    """(output folder, mmdetection's outputs, image path) of one oracle run."""
    root = coco_mini
    if not (PEER_SITE / "mmdet").is_dir():
        pytest.skip("the mmdetection peer is not installed (bash scripts/install_peer.sh)")
    out = tmp_path_factory.mktemp("mmdet_peer")
    image = root / IMAGE
    run = subprocess.run(
        [sys.executable, str(PEER_HELPERS / "mmdet_yolact_oracle.py"), "--image", str(image),
         "--out", str(out), "--seed", "0"],
        env=_peer_env(), capture_output=True, text=True, timeout=900)
    if run.returncode == PEER_MISSING:
        pytest.skip("the mmdetection peer in .peer/site does not import: "
                    + run.stderr.strip().splitlines()[-1])
    assert run.returncode == 0, run.stderr[-3000:]
    return out, torch.load(out / "outputs.pt", weights_only=False), image


@pytest.fixture(scope="module")
def converted(peer):
    """The converted checkpoint, written by the tool as a user would."""
    out, _, _ = peer
    dst = out / "yolact_R_50_FPN_550_fixediou.pth"
    run = run_tool("convert_weights", ["mmdet", out / "yolact_r50_mmdet.pth", dst,
                                       "--config-file", CONFIG], out, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    return dst


def _cfg(weights):
    # The bit-exact path: the inference rewrites (the predictor's default) move the outputs by
    # float rounding, measured against this path by tools/benchmark_inference.py --deviation.
    return get_config(CONFIG, ("MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", weights,
                               "TEST.YOLACT.OPTIMIZE", False))


@pytest.fixture(scope="module")
def ours(peer, converted):
    """One pass of YOLACTPredictor on the image (the user's route): its input tensor, the
    backbone, head and protonet outputs (read by hooks) and the final instances."""
    _, _, image = peer
    predictor = YOLACTPredictor(_cfg(converted))
    model = predictor.model
    seen = {}

    def keep(name):
        def hook(module, inputs, output):
            seen.setdefault(name, output)
            seen.setdefault(name + "_input", inputs[0])
        return hook  # returns None: the output is not replaced

    hooks = [model.backbone.register_forward_hook(keep("fpn")),
             model.head.register_forward_hook(keep("head")),
             model.protonet.register_forward_hook(keep("prototypes"))]
    seen["instances"] = predictor(cv2.imread(str(image)))["instances"]
    for h in hooks:
        h.remove()
    seen["input"] = seen["fpn_input"][0]
    seen["prototypes"] = seen["prototypes"][0]
    return seen


def _close(ours, theirs, rel=1e-4):
    """Equal up to float32 reordering: |diff| <= rel * max|theirs|."""
    theirs = theirs.float()
    torch.testing.assert_close(ours.float(), theirs, rtol=0, atol=rel * theirs.abs().max().item())


def test_network_outputs_equal_mmdetection(peer, ours):
    _, ref, _ = peer
    # Same resize (OpenCV bilinear, squashed to 550 x 550) and normalisation (RGB).
    torch.testing.assert_close(ours["input"], ref["input"], rtol=0, atol=1e-5)
    for name, theirs in zip(("p3", "p4", "p5", "p6", "p7"), ref["fpn"]):
        assert ours["fpn"][name].shape == theirs.shape, name
        _close(ours["fpn"][name], theirs)
    logits, deltas, coeffs = ours["head"]
    for mine, theirs in zip(logits + deltas + coeffs, ref["cls"] + ref["reg"] + ref["coeff"]):
        _close(mine, theirs)
    _close(ours["prototypes"], ref["prototypes"])


def test_detections_equal_mmdetection(peer, ours):
    _, ref, _ = peer
    out = ours["instances"]
    n = len(ref["scores"])
    assert n == 100 and len(out) == n  # a full set of detections, not a trivial case
    assert tuple(out.image_size) == tuple(ref["ori_shape"]) == (426, 640)
    assert ref["labels"].unique().numel() > 5 and ref["masks"].flatten(1).any(1).sum() > 20
    torch.testing.assert_close(out.scores, ref["scores"], rtol=0, atol=1e-5)
    assert torch.equal(out.pred_classes, ref["labels"])
    torch.testing.assert_close(out.pred_boxes.tensor, ref["boxes"], rtol=0, atol=2e-3)
    assert out.pred_masks.shape == ref["masks"].shape
    differ = (out.pred_masks != ref["masks"]).sum().item()
    assert differ <= 1e-5 * ref["masks"].numel(), f"{differ} mask pixels differ"


def test_mmdet_file_loads_directly_as_model_weights(peer, converted):
    """MODEL.WEIGHTS may name the mmdetection file itself: converted on load, same tensors."""
    out, _, _ = peer
    model = build_model(_cfg(out / "yolact_r50_mmdet.pth"))
    YOLACTCheckpointer(model).load(str(out / "yolact_r50_mmdet.pth"))
    expected = torch.load(converted, weights_only=False)["model"]
    got = model.state_dict()
    assert set(got) == set(expected)
    for k, v in expected.items():
        assert torch.equal(got[k], v), k
