"""The test harness every test module shares: paths, config and tiny-model builders, the tools of
``tools/`` as modules or subprocesses, and small generated datasets.

The session's environment (conftest.py) points ``$MAYOLACT_CACHE`` at a temporary folder and
shrinks the built-in shapes sets (``mayolact_shapes_train`` 8 images, ``mayolact_shapes_val`` 4),
so no test writes to the user's cache or generates the full sets.
"""
import contextlib
import functools
import json
import logging
import os
import runpy
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, Sequence

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
CONFIGS = REPO / "configs"
FULL = CONFIGS / "COCO-InstanceSegmentation"
QUICK = CONFIGS / "quick_schedules"
BASE_CONFIG = FULL / "Base-YOLACT.yaml"
QUICK_CONFIG = QUICK / "yolact_R_50_FPN_quick_atss_maiou.yaml"
#: The built-in shapes sets of a test session (conftest.py): images, side.
SESSION_SHAPES = {"MAYOLACT_SHAPES_TRAIN_IMAGES": "8", "MAYOLACT_SHAPES_VAL_IMAGES": "4",
                  "MAYOLACT_SHAPES_SIZE": "256"}


def strict_json(text: str):
    """``json.loads`` that fails on the non-JSON constants NaN and Infinity."""

    def reject(constant):
        raise AssertionError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=reject)


# ------------------------------------------------------------------------------ configs
def get_config(config_file="", opts: Sequence = ()):
    """The project's config loader (``mayolact.config.config.load_config``); opts may hold
    non-strings."""
    from mayolact.config.config import load_config

    return load_config(str(config_file) if config_file else "", [str(o) for o in opts])


def tiny_config(variant: str = "atss_maiou", size: int = 128, num_classes: int = 3):
    """A tiny YOLACT: R-18 at quarter width, 32-channel FPN, 8 prototypes, no DCN.

    Args:
        variant: "atss_maiou", "atss_iou", "fixed_iou" (YOLACT's anchors, from
            ``configs/rows/assigners.yaml``) or "mayolact" (CARAFE FPN, two anchors per location).
        size: the input side S.
        num_classes: K.
    """
    from mayolact.config.config import merge_config_row

    cfg = get_config(BASE_CONFIG)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    y = cfg.MODEL.YOLACT
    y.RESNET_WIDTH_SCALE = 0.25
    y.NUM_CLASSES = num_classes
    y.NUM_PROTOTYPES = 8
    y.PROTO_CHANNELS = 16
    cfg.TEST.DETECTIONS_PER_IMAGE = 20
    cfg.INPUT.YOLACT.SIZE = size
    rows = str(CONFIGS / "rows" / "assigners.yaml")
    if variant == "fixed_iou":
        merge_config_row(cfg, rows, "fixed_iou")
    elif variant in ("atss_maiou", "atss_iou"):
        merge_config_row(cfg, rows, variant)
    elif variant == "mayolact":
        merge_config_row(cfg, rows, "atss_maiou")
        cfg.MODEL.BACKBONE.NAME = "build_yolact_resnet_carafe_fpn_backbone"
        cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[s, s * 2 ** 0.5] for s in (32, 64, 128, 256, 512)]
    else:
        raise ValueError(f"unknown variant {variant!r}")
    return cfg


def build_tiny_model(cfg, seed: int = 0):
    """``build_model(cfg)`` with a fixed seed."""
    from detectron2.modeling import build_model

    torch.manual_seed(seed)
    return build_model(cfg)


# ------------------------------------------------------------------ models for export tests
def trained_like_predictor(cfg, image):
    """An eager predictor on a seeded random model scaled to behave like a trained one
    (:func:`mayolact.analysis.trained_like.trained_like_predictor`; the weights before the
    inference rewrites are in ``predictor.checkpoint``, see :func:`save_checkpoint`)."""
    from mayolact.analysis.trained_like import trained_like_predictor as build

    return build(cfg, image)


def save_checkpoint(predictor, path) -> str:
    """Save :func:`trained_like_predictor`'s weights (before the rewrites) as a Detectron2
    checkpoint at ``path``; returns ``path``."""
    torch.save({"model": predictor.checkpoint}, str(path))
    return str(path)


@functools.lru_cache(maxsize=None)
def onnxruntime_runs_deformconv():
    """Whether this onnxruntime implements ONNX DeformConv (opset 19) on the CPU (1.32 does)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from mayolact.export.exporter import ONNX_OPSET

    names = ["X", "W", "offset"]
    node = helper.make_node("DeformConv", names, ["Y"], kernel_shape=[1, 1])
    graph = helper.make_graph(
        [node], "deformconv",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])
    try:
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception:  # onnxruntime raises its own NOT_IMPLEMENTED / INVALID_GRAPH errors
        return False
    return True


# --------------------------------------------------------------------------- benchmarks
# -------------------------------------------------------------------------------- tools
_TOOLS: Dict[str, SimpleNamespace] = {}


def load_tool(name: str) -> SimpleNamespace:
    """A script of ``tools/`` run as a module (``runpy``, once per session): its functions and
    constants as attributes. Nothing is added to ``sys.path`` or ``sys.modules``."""
    if name not in _TOOLS:
        _TOOLS[name] = SimpleNamespace(
            **runpy.run_path(str(REPO / "tools" / f"{name}.py"), run_name=f"tool_{name}"))
    return _TOOLS[name]


def tool_env(tmp_path, **overrides) -> Dict[str, str]:
    """Environment of a tool subprocess: one thread, tiny shapes sets in a private cache."""
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        MAYOLACT_CACHE=str(Path(tmp_path) / "cache"),
        MAYOLACT_SHAPES_TRAIN_IMAGES="8",
        MAYOLACT_SHAPES_VAL_IMAGES="4",
        MAYOLACT_SHAPES_SIZE="128",
        PYTHONWARNINGS="ignore",
    )
    env.update({k: str(v) for k, v in overrides.items()})
    return env


def session_env(tmp_path):
    """A subprocess environment whose built-in shapes sets are this session's (same cache, same
    sizes), so that a run started there can be resumed here."""
    return tool_env(tmp_path, MAYOLACT_CACHE=os.environ["MAYOLACT_CACHE"], **SESSION_SHAPES)


@contextlib.contextmanager
def reaped(proc: subprocess.Popen, kill=subprocess.Popen.kill):
    """Run the block beside ``proc``; however the block ends, ``kill(proc)`` if it still runs
    (SIGKILL by default), then wait for it, so that no test leaves a process behind."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            kill(proc)
        proc.wait(timeout=60)


def wait_for(predicate, timeout, what, proc=None):
    """Poll ``predicate`` every 0.2 s; fail naming ``what`` after ``timeout`` seconds, or as soon
    as ``proc`` (a Popen) has exited."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the process exited ({proc.returncode}) before {what}")
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def run_tool(name: str, args: Sequence, tmp_path, timeout: float = 300,
             **env) -> subprocess.CompletedProcess:
    """``python tools/<name>.py args`` in ``tmp_path`` with :func:`tool_env`; output captured."""
    return subprocess.run([PYTHON, str(REPO / "tools" / f"{name}.py"), *[str(a) for a in args]],
                          cwd=str(tmp_path), env=tool_env(tmp_path, **env), capture_output=True,
                          text=True, timeout=timeout)


# --------------------------------------------------------------------------------- data
def register_tiny_shapes(name: str, num_images: int, size: int, seed: int, cache_root) -> str:
    """Register a shapes set under ``name`` (once per session) in ``cache_root``; returns name."""
    from detectron2.data import DatasetCatalog

    from mayolact.data.shapes import register_shapes

    if name not in DatasetCatalog.list():
        register_shapes(name, num_images, size, seed, cache_root=str(cache_root))
    return name


# ------------------------------------------------------------------------------ logging
class ListHandler(logging.Handler):
    """Keeps the messages of a logger (Detectron2's setup makes some loggers stop propagating,
    which caplog relies on)."""

    def __init__(self, records):
        super().__init__()
        self.records = records

    def emit(self, record):
        self.records.append(record.getMessage())


@contextlib.contextmanager
def logged(*names):
    """The messages (INFO and up) of the loggers ``names`` while the block runs."""
    records = []
    handler = ListHandler(records)
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
    try:
        yield records
    finally:
        for lg, level in zip(loggers, levels):
            lg.removeHandler(handler)
            lg.setLevel(level)
def make_broken_coco(coco_root, out_dir, split: str = "val") -> Dict[str, tuple]:
    """A copy of coco_mini's ``split`` json with one of each annotation fault, in ``out_dir``.

    The images are not copied: ``out_dir/<split>2017`` links to coco_mini's folder. Faults (name:
    (field, annotation id or image id)): a NaN polygon coordinate, a 1e9 one, a 2-point polygon,
    a crowd RLE whose counts sum to less than h x w, a counts string ``"abc"``, a box entirely
    outside its image, an unknown category id, a duplicated image id, a missing image file.

    Returns:
        dict: fault name -> (field, id); ``out_dir/annotations/instances_<split>2017.json`` and
        the image folder are written.
    """
    import copy
    import json

    coco_root, out_dir = Path(coco_root).resolve(), Path(out_dir)
    with open(coco_root / "annotations" / f"instances_{split}2017.json") as f:
        data = json.load(f)
    images = {img["id"]: img for img in data["images"]}
    polys = [a for a in data["annotations"]
             if not a["iscrowd"] and isinstance(a["segmentation"], list)
             and len(a["segmentation"][0]) >= 8]
    crowd = [a for a in data["annotations"] if a["iscrowd"]]
    faults = {}

    def fault(name, ann, field):
        faults[name] = (field, ann["id"])

    nan, huge, two, outside, unknown, abc = polys[:6]
    nan["segmentation"][0][3] = float("nan")
    fault("NaN polygon coordinate", nan, "segmentation")
    huge["segmentation"][0][0] = 1e9
    fault("1e9 polygon coordinate", huge, "segmentation")
    two["segmentation"] = [two["segmentation"][0][:4]]
    fault("2-point polygon", two, "segmentation")
    img = images[outside["image_id"]]
    outside["bbox"] = [img["width"] + 10.0, 5.0, 20.0, 20.0]
    fault("box entirely outside its image", outside, "bbox")
    unknown["category_id"] = 999
    fault("unknown category id", unknown, "category_id")
    abc["segmentation"] = {"size": [images[abc["image_id"]]["height"],
                                    images[abc["image_id"]]["width"]], "counts": "abc"}
    fault("RLE counts string 'abc'", abc, "segmentation")
    if crowd:
        short = crowd[0]
        short["segmentation"]["counts"] = short["segmentation"]["counts"][:-1]
    else:  # coco_mini val has no crowd region: make one
        short = copy.deepcopy(polys[6])
        short.update(id=900000001, iscrowd=1,
                     segmentation={"size": [images[short["image_id"]]["height"],
                                            images[short["image_id"]]["width"]], "counts": [5, 7]})
        data["annotations"].append(short)
    fault("crowd RLE with short counts", short, "segmentation")
    dup = copy.deepcopy(data["images"][0])
    dup["file_name"] = data["images"][1]["file_name"]
    data["images"].append(dup)
    faults["duplicated image id"] = ("id", dup["id"])
    missing = dict(copy.deepcopy(data["images"][2]), id=900000002, file_name="missing.jpg")
    data["images"].append(missing)
    data["annotations"].append(dict(copy.deepcopy(polys[7]), id=900000003, image_id=missing["id"]))
    faults["missing image file"] = ("file_name", missing["id"])
    (out_dir / "annotations").mkdir(parents=True, exist_ok=True)
    with open(out_dir / "annotations" / f"instances_{split}2017.json", "w") as f:
        json.dump(data, f)
    link = out_dir / f"{split}2017"
    if not link.exists():
        link.symlink_to(coco_root / f"{split}2017", target_is_directory=True)
    return faults
