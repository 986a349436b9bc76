"""The command-line tools on real images: two-process CPU training, the demo, and bad inputs.

* ``tools/train_net.py --num-gpus 2`` on CPU (gloo, Detectron2's ``launch``) trains and writes
  ``model_final.pth`` (``mayolact.engine.trainer.Trainer`` wraps a CPU model for DDP without
  device ids);
* ``tools/demo.py`` draws predictions on images (coco_mini val, or shapes images without
  ``../shared``) and on a small mp4; a missing input or an unknown config key fails clearly;
* ``train_net`` stops with an error naming the file and the field on a malformed annotation, and
  naming the image on a missing image file.
"""
import json
import subprocess
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog
from detectron2.engine import default_argument_parser

from mayolact.data.datasets import register_coco_with_ids
from mayolact.data.shapes import register_shapes

from common import PYTHON, QUICK_CONFIG, REPO, get_config, load_tool, strict_json, tool_env


@pytest.fixture(scope="module")
def sample_images(tmp_path_factory):
    """Three real images: coco_mini val when present, else rendered shapes images."""
    if "coco_mini_val" in DatasetCatalog.list():
        return [d["file_name"] for d in DatasetCatalog.get("coco_mini_val")[:3]]
    name = "tools_shapes_images"
    if name not in DatasetCatalog.list():
        register_shapes(name, 3, 128, 5, cache_root=str(tmp_path_factory.mktemp("cache")))
    return [d["file_name"] for d in DatasetCatalog.get(name)]


# ------------------------------------------------------------ two-process CPU training (gloo)
@pytest.mark.slow
def test_two_process_cpu_training(tmp_path):
    out = tmp_path / "out"
    cmd = [PYTHON, str(REPO / "tools" / "train_net.py"), "--num-gpus", "2",
           "--dist-url", "auto",  # Detectron2's launch picks a free port: xdist-safe
           "--config-file", str(QUICK_CONFIG),
           "MODEL.DEVICE", "cpu", "MODEL.YOLACT.NUM_CLASSES", "8", "INPUT.YOLACT.SIZE", "128",
           "DATASETS.TRAIN", "('mayolact_shapes_train',)",
           "DATASETS.TEST", "('mayolact_shapes_val',)", "MODEL.YOLACT.SCORE_THRESH_TEST", "0.0",
           "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2", "OUTPUT_DIR", str(out)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=tool_env(tmp_path), capture_output=True,
                          text=True, timeout=240)
    tail = (proc.stdout + proc.stderr)[-4000:]
    assert proc.returncode == 0, tail
    assert (out / "model_final.pth").is_file(), tail
    log = (out / "log.txt").read_text()
    assert "World size: 2" in log
    assert (out / "log.txt.rank1").is_file()  # the second process ran
    rows = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    losses = [r for r in rows if "total_loss" in r]
    assert losses[-1]["iteration"] == 1 and np.isfinite(losses[-1]["total_loss"])
    # The final evaluation ran on both ranks and was gathered on the main one (4 val images).
    evals = [r for r in rows if "segm/AP" in r]
    assert evals and np.isfinite(evals[-1]["segm/AP"]) and np.isfinite(evals[-1]["bbox/oLRP"])
    results = json.loads(
        (out / "inference" / "mayolact_shapes_val" / "coco_instances_results.json").read_text())
    assert {r["image_id"] for r in results} == {0, 1, 2, 3}


# ------------------------------------------------------------------------------------- demo
@pytest.fixture(scope="module")
def demo_weights(tmp_path_factory):
    """A checkpoint of the quick config whose head predicts class 0 (score ~0.4) on every anchor
    with zero box deltas: every image gets detections (the anchors), so something is drawn.
    (Random weights alone can leave an image without any detection.)"""
    import torch
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    cfg = get_config(QUICK_CONFIG)
    torch.manual_seed(0)
    model = build_model(cfg)
    head = model.head
    with torch.no_grad():
        for conv in (head.cls_score, head.bbox_pred):
            conv.weight.zero_()
            conv.bias.zero_()
        head.cls_score.bias.view(head.num_anchors, head.num_classes + 1)[:, 0] = 4.0
    folder = tmp_path_factory.mktemp("weights")
    DetectionCheckpointer(model, save_dir=str(folder)).save("demo")
    return folder / "demo.pth"


def _run_demo(argv):
    demo = load_tool("demo")
    return demo.main([str(a) for a in argv])


def test_demo_draws_on_images(sample_images, demo_weights, tmp_path):
    out = tmp_path / "vis"
    code = _run_demo(["--config-file", QUICK_CONFIG, "--input", *sample_images, "--output", out,
                      "--confidence-threshold", 0, "MODEL.WEIGHTS", demo_weights])
    assert code == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(Path(f).name for f in sample_images)  # each in its input's format
    for f in sample_images:
        original = cv2.imread(f, cv2.IMREAD_COLOR)
        drawn = cv2.imread(str(out / Path(f).name), cv2.IMREAD_COLOR)
        assert drawn.shape == original.shape
        # Far beyond JPEG re-encoding noise: masks, boxes and labels.
        changed = np.abs(drawn.astype(np.int16) - original.astype(np.int16)).max(axis=2) > 48
        assert changed.mean() > 0.01, f"{f}: nothing was drawn"


@pytest.mark.parametrize("scores", [[0.21, 0.05], []], ids=["below", "nothing"])
def test_demo_without_an_instance_says_why(scores, tmp_path, caplog):
    """An image without an instance at the confidence threshold is named with the best score
    below it, and a last warning says how to draw more (or that the model found nothing)."""
    import torch
    from detectron2.structures import Boxes, Instances

    from mayolact.engine.demo import Demo

    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.full((32, 48, 3), 90, np.uint8))

    def predictor(bgr):
        found = Instances(bgr.shape[:2])
        found.pred_boxes = Boxes(torch.tensor([[2.0, 2.0, 20.0, 20.0]] * len(scores)))
        found.scores = torch.tensor(scores, dtype=torch.float32)
        found.pred_classes = torch.zeros(len(scores), dtype=torch.int64)
        found.pred_masks = torch.zeros((len(scores), 32, 48), dtype=torch.bool)
        return {"instances": found}

    cfg = get_config(QUICK_CONFIG, ["MODEL.YOLACT.NUM_CLASSES", 8,
                                    "DATASETS.TEST", "('mayolact_shapes_val',)"])
    demo = Demo(cfg, confidence_threshold=0.3, predictor=predictor)
    with caplog.at_level("INFO", logger="mayolact.engine.demo"):
        assert demo.draw_files([str(image)], str(tmp_path / "vis")) == []
    assert (tmp_path / "vis" / "a.png").is_file()
    if scores:
        assert "0 instances" in caplog.text
        assert "none at score >= 0.3; the best scored 0.21" in caplog.text
        assert ("1 of 1 images show no instance at score >= 0.3 (the confidence threshold); the "
                "best score below it was 0.21: lower it with --confidence-threshold") in caplog.text
    else:
        assert "none at score >= 0.3)" in caplog.text
        assert "the model detected nothing in them" in caplog.text


def test_demo_folder_input(sample_images, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for f in sample_images[:2]:
        (folder / Path(f).name).write_bytes(Path(f).read_bytes())
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "vis"
    assert _run_demo(["--config-file", QUICK_CONFIG, "--input", folder, "--output", out]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(Path(f).name for f in sample_images[:2])


def test_demo_video(demo_weights, tmp_path):
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (96, 64))
    assert writer.isOpened()
    frames = []
    for i in range(3):
        frame = np.full((64, 96, 3), 40, np.uint8)
        frame[10:40, 10 + 8 * i:50 + 8 * i] = (0, 200, 255)
        frames.append(frame)
        writer.write(frame)
    writer.release()

    out = tmp_path / "vis" / "drawn.mp4"
    code = _run_demo(["--config-file", QUICK_CONFIG, "--video-input", video, "--output", out,
                      "--confidence-threshold", 0, "MODEL.WEIGHTS", demo_weights])
    assert code == 0 and out.is_file()
    assert [p.name for p in out.parent.iterdir()] == ["drawn.mp4"]  # no temporary file left
    cap = cv2.VideoCapture(str(out))
    read = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        read.append(frame)
    cap.release()
    assert len(read) == 3
    for got, sent in zip(read, frames):
        assert got.shape == sent.shape
        assert np.abs(got.astype(np.int16) - sent.astype(np.int16)).mean() > 3  # drawings


def test_demo_missing_input_names_the_path(tmp_path, capsys):
    missing = tmp_path / "no_such_image.jpg"
    code = _run_demo(["--config-file", QUICK_CONFIG, "--input", missing, "--output",
                      tmp_path / "vis"])
    assert code != 0
    assert str(missing) in capsys.readouterr().err
    assert not (tmp_path / "vis").exists()

    missing_video = tmp_path / "no_such_clip.mp4"
    code = _run_demo(["--config-file", QUICK_CONFIG, "--video-input", missing_video,
                      "--output", tmp_path / "vis"])
    assert code != 0
    assert str(missing_video) in capsys.readouterr().err


@pytest.mark.slow
def test_demo_unknown_config_key_exits_2(sample_images, tmp_path):
    """Through the real command line: exit status 2 and the key named on stderr."""
    proc = subprocess.run(
        [PYTHON, str(REPO / "tools" / "demo.py"), "--config-file", str(QUICK_CONFIG),
         "--input", sample_images[0], "--output", str(tmp_path / "vis"),
         "MODEL.YOLACT.NO_SUCH_KEY", "1"],
        cwd=tmp_path, env=tool_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "MODEL.YOLACT.NO_SUCH_KEY" in proc.stderr
    assert not (tmp_path / "vis").exists()


# ------------------------------------------------------------------------------- train_net
@pytest.mark.parametrize("num_gpus", ["1", "2"])
def test_train_net_unknown_config_key_exits_2(num_gpus, tmp_path, capsys):
    train_net = load_tool("train_net")
    with pytest.raises(SystemExit) as exc:
        train_net.cli(["--num-gpus", num_gpus, "--config-file", str(QUICK_CONFIG),
                       "OUTPUT_DIR", str(tmp_path / "out"), "SOLVER.NO_SUCH_KEY", "3"])
    assert exc.value.code == 2
    assert "SOLVER.NO_SUCH_KEY" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # failed before any setup or worker


def _tiny_coco(tmp_path, annotation, write_image=True):
    """A one-image COCO json (64 x 48 image) registered under a fresh name."""
    image = tmp_path / "img0.png"
    if write_image:
        rng = np.random.default_rng(0)
        cv2.imwrite(str(image), rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    coco = {
        "images": [{"id": 1, "file_name": image.name, "height": 48, "width": 64}],
        "annotations": [dict({"id": 7, "image_id": 1, "category_id": 1, "iscrowd": 0,
                              "area": 400.0}, **annotation)],
        "categories": [{"id": 1, "name": "thing"}],
    }
    json_file = tmp_path / "bad.json"
    json_file.write_text(json.dumps(coco))
    name = f"tools_bad_{uuid.uuid4().hex[:8]}"
    register_coco_with_ids(name, json_file, tmp_path)
    return name, image


def _train(tmp_path, dataset):
    train_net = load_tool("train_net")
    args = default_argument_parser().parse_args(
        ["--config-file", str(QUICK_CONFIG), "OUTPUT_DIR", str(tmp_path / "out"),
         "DATASETS.TRAIN", f"('{dataset}',)", "DATASETS.TEST", "()",
         "MODEL.YOLACT.NUM_CLASSES", "1", "SOLVER.IMS_PER_BATCH", "1", "SOLVER.MAX_ITER", "1"])
    return train_net.main(args)


GOOD_POLYGON = [[10.0, 10.0, 40.0, 10.0, 40.0, 30.0, 10.0, 30.0]]


def test_train_net_malformed_annotation_names_file_and_field(tmp_path):
    name, image = _tiny_coco(tmp_path, {"bbox": [10.0, 10.0, 30.0],
                                        "segmentation": GOOD_POLYGON})
    with pytest.raises(ValueError) as exc:
        _train(tmp_path, name)
    message = str(exc.value)
    assert str(image) in message and "'bbox'" in message and "id 7" in message, message
    assert not (tmp_path / "out" / "model_final.pth").exists()


def test_train_net_missing_image_names_the_file(tmp_path):
    name, image = _tiny_coco(tmp_path, {"bbox": [10.0, 10.0, 30.0, 20.0],
                                        "segmentation": GOOD_POLYGON}, write_image=False)
    with pytest.raises(FileNotFoundError) as exc:
        _train(tmp_path, name)
    assert str(image) in str(exc.value)
    assert not (tmp_path / "out" / "model_final.pth").exists()


# ------------------------------------------------------------------------------ make demo
@pytest.mark.slow
def test_demo_job_logs_everything_and_keeps_metrics_json(tmp_path):
    """``make demo`` in miniature: the project's lines and the oLRP tables in log.txt, Detectron2's
    per-iteration metrics.json kept, the job's summary beside it, drawings in the inputs' format."""
    from common import run_tool

    out = tmp_path / "demo"
    proc = run_tool("demo_job", ["--output", out, "--num-vis", 2, "SOLVER.MAX_ITER", 2,
                                 "SOLVER.IMS_PER_BATCH", 2, "INPUT.YOLACT.SIZE", 128,
                                 "DATALOADER.NUM_WORKERS", 0], tmp_path, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    log = (out / "log.txt").read_text()
    assert "mayolact.data.dataset_mapper" in log and "Per-category segm oLRP" in log
    # Strict JSON (AP of a class without a detection is null, not NaN).
    rows = [strict_json(line) for line in (out / "metrics.json").read_text().splitlines()]
    assert [r["iteration"] for r in rows if "total_loss" in r][-1] == 1
    summary = strict_json((out / "demo_summary.json").read_text())
    assert set(summary["results"]) == {"bbox", "segm"} and "oLRP" in summary["results"]["segm"]
    assert sorted(p.suffix for p in (out / "vis").iterdir()) == [".png", ".png"]  # shapes: PNG
    assert "demo_summary.json" in proc.stdout


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="the no-device path")
def test_gpu_check_without_a_device_exits_2_and_runs_nothing(tmp_path):
    """scripts/gpu_check.sh (the GPU column in one run) stops up front on a machine without CUDA."""
    out = tmp_path / "gpu"
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh")],
                          env=tool_env(tmp_path, PYTHON=PYTHON, OUT=str(out)),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "sees no CUDA device" in proc.stderr
    assert not out.exists()
