"""Deterministic mode (SOLVER.YOLACT.DETERMINISTIC): the data stream follows SEED alone, and two
runs of one seeded config give identical weights."""
import json

import numpy as np
import pytest
import torch
from detectron2.utils.env import seed_all_rng

from mayolact.engine import Trainer
from mayolact.utils.determinism import configure_determinism, data_stream_seeds

from common import run_tool, tiny_config


def shapes_config(deterministic: bool, seed: int = 3, workers: int = 1):
    """A tiny config on the test session's shapes set, with every random augmentation on."""
    cfg = tiny_config("atss_maiou", size=96, num_classes=8)
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = ("mayolact_shapes_train",), ("mayolact_shapes_val",)
    cfg.DATALOADER.NUM_WORKERS = workers
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.SEED = seed
    cfg.SOLVER.YOLACT.DETERMINISTIC = deterministic
    return cfg


def first_batches(cfg, draws_before: int, n: int = 3):
    """The first ``n`` batches of a train loader built after seeding the RNGs with ``SEED`` and
    drawing ``draws_before`` numbers from each (as a bigger or smaller model's initialisation
    would)."""
    seed_all_rng(cfg.SEED)
    torch.rand(draws_before)
    np.random.rand(draws_before)
    batches = []
    for batch in Trainer.build_train_loader(cfg):
        batches.append([(d["image_id"], d["image"]) for d in batch])
        if len(batches) == n:
            return batches


def same(a, b) -> bool:
    return all(x[0] == y[0] and torch.equal(x[1], y[1])
               for p, q in zip(a, b) for x, y in zip(p, q))


def test_data_stream_follows_seed_alone():
    """Deterministic: the order of the images and their augmentations (drawn in the loader's
    worker) do not depend on what was drawn before the loader was built; they do without it."""
    on = shapes_config(True)
    assert same(first_batches(on, 0), first_batches(on, 1000))
    assert not same(first_batches(on, 0), first_batches(shapes_config(True, seed=4), 0))
    off = shapes_config(False)
    assert not same(first_batches(off, 0), first_batches(off, 1000))


def test_mode_needs_a_fixed_seed_and_no_cudnn_benchmark():
    cfg = shapes_config(True, seed=-1)
    with pytest.raises(ValueError, match="SOLVER.YOLACT.DETERMINISTIC needs a fixed SEED"):
        configure_determinism(cfg)
    with pytest.raises(ValueError, match="SEED"):
        data_stream_seeds(cfg)
    cfg = shapes_config(True)
    cfg.CUDNN_BENCHMARK = True
    with pytest.raises(ValueError, match="CUDNN_BENCHMARK"):
        configure_determinism(cfg)
    with pytest.raises(ValueError, match="off"):
        data_stream_seeds(shapes_config(False))
    # One stream shared by the ranks; each rank's workers get their own augmentation seeds.
    (s0, l0), (s1, l1) = data_stream_seeds(shapes_config(True), 0), data_stream_seeds(
        shapes_config(True), 1)
    assert s0 == s1 and l0 != l1
    assert configure_determinism(shapes_config(False)) is False


@pytest.mark.slow
def test_two_runs_of_a_seed_give_identical_weights(tmp_path):
    """tools/train_net.py twice (separate processes, one thread each) on a seeded tiny config with
    every augmentation and a data-loader worker: identical weights; another seed: other weights.
    The final evaluation's AP by MOB range reaches metrics.json and tensorboard."""
    cfg = shapes_config(True, seed=5)
    cfg.TEST.YOLACT.MOB_RANGES = [0.0, 0.5, 1.0]
    cfg.MODEL.YOLACT.SCORE_THRESH_TEST = 0.0
    cfg.SOLVER.MAX_ITER = 4
    cfg.SOLVER.WARMUP_ITERS = 1
    cfg.SOLVER.CHECKPOINT_PERIOD = 100000
    cfg.TEST.DETECTIONS_PER_IMAGE = 5
    config = tmp_path / "tiny.yaml"
    config.write_text(cfg.dump())
    weights = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        proc = run_tool("train_net", ["--config-file", config, "OUTPUT_DIR", tmp_path / name,
                                      "SEED", seed], tmp_path, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "Deterministic mode: SEED" in proc.stdout + proc.stderr
        weights[name] = torch.load(tmp_path / name / "model_final.pth", weights_only=False)["model"]
    rows = [json.loads(line) for line in (tmp_path / "a" / "metrics.json").read_text().splitlines()]
    evals = [r for r in rows if "segm/AP" in r]
    assert evals and {"segm/AP-mob[0,0.5]", "bbox/AP75-mob[0.5,1]"} <= set(evals[-1])
    events = next((tmp_path / "a").glob("events.out.tfevents.*")).read_bytes()
    assert b"segm/AP-mob[0,0.5]" in events
    assert "by GT mask-over-box ratio" in (tmp_path / "a" / "log.txt").read_text()
    a, b, c = weights["a"], weights["b"], weights["c"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
