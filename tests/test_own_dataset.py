"""docs/GETTING_STARTED.md, "Your own data", end to end: a COCO-format json and an image folder,
given by path, train, evaluate, draw (with class names) and plot without a line of Python.

The test writes a small COCO-format set the way a labelling tool exports one (JPEG images,
polygons, three classes with non-contiguous ids), then runs the documented commands as
subprocesses: ``train_net.py`` (a few iterations), ``train_net.py --eval-only``, ``demo.py`` and
``plot_figures.py``.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from mayolact.data.shapes import SHAPES_CLASSES, render_shapes_image

REPO = Path(__file__).resolve().parents[1]
QUICK = REPO / "configs" / "quick_schedules" / "yolact_R_50_FPN_quick_atss_maiou.yaml"
OWN_CONFIGS = sorted((REPO / "configs" / "own_data").glob("*.yaml"))

#: The user's three classes (ids as a labelling tool may number them), each a group of shapes.
CATEGORIES = [{"id": 3, "name": "solid"}, {"id": 5, "name": "hollow"}, {"id": 9, "name": "thin"}]
GROUP = {"square": 3, "disc": 3, "triangle": 3, "ring": 5, "crescent": 5, "U": 5, "L": 9, "bar": 9}


def write_coco_split(root: Path, split: str, indices, size=96):
    """JPEG images under root/images and root/<split>.json with polygon annotations."""
    images, annotations = [], []
    (root / "images").mkdir(parents=True, exist_ok=True)
    for i in indices:
        rgb, masks, classes, _ = render_shapes_image(i, size, seed=7, max_objects=4)
        name = f"img_{i:03d}.jpg"
        cv2.imwrite(str(root / "images" / name), rgb[:, :, ::-1])
        images.append({"id": i + 1, "file_name": name, "height": size, "width": size})
        for mask, cls in zip(masks, classes):
            contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                           cv2.CHAIN_APPROX_SIMPLE)
            polygons = [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]
            if not polygons:
                continue
            x, y, w, h = cv2.boundingRect(np.concatenate(contours))
            annotations.append({
                "id": len(annotations) + 1 + 1000 * (split == "val"), "image_id": i + 1,
                "category_id": GROUP[SHAPES_CLASSES[int(cls)]], "iscrowd": 0,
                "segmentation": polygons, "bbox": [x, y, w, h], "area": float(mask.sum())})
    coco = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    (root / f"{split}.json").write_text(json.dumps(coco))


@pytest.fixture(scope="module")
def own_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("my_data")
    write_coco_split(root, "train", range(8))
    write_coco_split(root, "val", range(8, 11))
    return root


def run_tool(args, cwd, timeout=600):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("PYTHONWARNINGS", None)
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    return proc


@pytest.mark.slow
def test_own_coco_dataset_trains_evaluates_draws_and_plots(own_data, tmp_path):
    # A config of one's own (docs/GETTING_STARTED.md) over the quick config, NUM_CLASSES left to
    # the dataset.
    config = tmp_path / "my_data.yaml"
    config.write_text(f"""\
_BASE_: "{QUICK}"
DATASETS:
  YOLACT:
    COCO_JSON: [["my_train", "{own_data}/train.json", "{own_data}/images"],
                ["my_val", "{own_data}/val.json", "{own_data}/images"]]
  TRAIN: ("my_train",)
  TEST: ("my_val",)
""")
    out = tmp_path / "output"
    small = ["INPUT.YOLACT.SIZE", 96, "SOLVER.IMS_PER_BATCH", 2, "SOLVER.MAX_ITER", 3]

    # 1. Training (then the trainer's final evaluation on my_val).
    run_tool([REPO / "tools" / "train_net.py", "--config-file", config, "OUTPUT_DIR", out,
              *small], cwd=tmp_path)
    assert (out / "model_final.pth").is_file()
    saved = (out / "config.yaml").read_text()
    assert "NUM_CLASSES: 3" in saved  # taken from my_train's three categories
    rows = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    assert [r["iteration"] for r in rows if "total_loss" in r][-1] == 2
    log = (out / "log.txt").read_text()
    assert "mayolact.data.dataset_mapper" in log  # the project's INFO lines reach log.txt
    assert "Per-category segm oLRP" in log and "solid" in log  # the oLRP table, with names
    events = list(out.glob("events.out.tfevents.*"))  # training curves, with the evaluation
    assert events and b"segm/oLRP" in events[0].read_bytes()

    # 2. Evaluation of the trained weights.
    proc = run_tool([REPO / "tools" / "train_net.py", "--config-file", config, "--eval-only",
                     "OUTPUT_DIR", out, "MODEL.WEIGHTS", out / "model_final.pth", *small[:2]],
                    cwd=tmp_path)
    assert "Per-category bbox oLRP" in proc.stdout + proc.stderr
    assert (out / "inference" / "my_val" / "coco_instances_results.json").is_file()

    # 3. Drawings of the images, in their own format, labelled with class names.
    vis = tmp_path / "vis"
    proc = run_tool([REPO / "tools" / "demo.py", "--config-file", config, "--input",
                     own_data / "images", "--output", vis, "--confidence-threshold", "0.0",
                     "MODEL.WEIGHTS", out / "model_final.pth", *small[:2]], cwd=tmp_path)
    drawn = sorted(p.name for p in vis.iterdir())
    assert drawn == sorted(p.name for p in (own_data / "images").iterdir())  # JPEG in, JPEG out
    assert cv2.imread(str(vis / drawn[0])) is not None
    assert any(name in proc.stdout + proc.stderr for name in ("solid", "hollow", "thin"))

    # 4. A figure of the paper on the json itself (the figure tool's one run as a script).
    figure = tmp_path / "mob.png"
    proc = run_tool([REPO / "tools" / "plot_figures.py", "mob-histogram", "--dataset",
                     own_data / "train.json", "--output", figure], cwd=tmp_path)
    assert "train.json" in proc.stdout and "MOB<0.5" in proc.stdout
    png = figure.read_bytes()
    assert len(png) > 1000 and png[:8] == b"\x89PNG\r\n\x1a\n"


def own_data_opts(own_data):
    """The command-line way to name the data for configs/own_data/ (own_train, own_val)."""
    entries = [["own_train", f"{own_data}/train.json", f"{own_data}/images"],
               ["own_val", f"{own_data}/val.json", f"{own_data}/images"]]
    return ["DATASETS.YOLACT.COCO_JSON", repr(entries)]


@pytest.mark.parametrize("config", OWN_CONFIGS, ids=[p.stem for p in OWN_CONFIGS])
def test_own_data_configs_take_the_data_and_keep_their_recipe(config, own_data, tmp_path):
    """The shipped own-data configs: the data named once (NUM_CLASSES from it, the run's checks
    pass); from ImageNet at full width with SGD, or from scratch on the CPU with AdamW."""
    from mayolact.config import load_config
    from mayolact.engine.checks import preflight

    cfg = load_config(str(config), [*own_data_opts(own_data), "OUTPUT_DIR", str(tmp_path)])
    assert cfg.MODEL.YOLACT.NUM_CLASSES == 3
    preflight(cfg, train=True, resume=None)
    if "imagenet" in config.stem:
        assert cfg.MODEL.WEIGHTS == "torchvision://resnet50"
        assert cfg.MODEL.YOLACT.RESNET_WIDTH_SCALE == 1.0 and cfg.INPUT.YOLACT.SIZE == 550
        assert cfg.SOLVER.YOLACT.OPTIMIZER == "SGD"
        assert cfg.MODEL.BACKBONE.NAME == "build_yolact_resnet_carafe_fpn_backbone"
    else:
        assert cfg.MODEL.WEIGHTS == "" and cfg.MODEL.DEVICE == "cpu"
        assert cfg.SOLVER.YOLACT.OPTIMIZER == "AdamW"
        assert cfg.INPUT.YOLACT.PHOTOMETRIC and cfg.INPUT.YOLACT.MIN_IOU_CROP


def test_own_data_scratch_config_trains(own_data, tmp_path):
    """Two iterations of the CPU config on the data, through the project's trainer."""
    from mayolact.config import load_config
    from mayolact.engine import Trainer

    config = REPO / "configs" / "own_data" / "mayolact_R_50_FPN_192_scratch_cpu.yaml"
    cfg = load_config(str(config), [
        *own_data_opts(own_data), "OUTPUT_DIR", str(tmp_path), "INPUT.YOLACT.SIZE", "96",
        "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2", "DATALOADER.NUM_WORKERS", "0",
        "DATASETS.TEST", "()"])
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert (tmp_path / "model_final.pth").is_file()
