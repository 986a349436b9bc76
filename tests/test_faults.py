"""Injected faults: what survives what (docs/RELIABILITY.md, "What survives what").

* checkpoints: a kill during a save, a corrupt newest checkpoint, a rerun into a used folder;
* signals: SIGTERM to a training process (a checkpoint at the current iteration, then a resume
  that continues the data stream), a killed launcher of a two-process run (workers gone);
* divergence: an exploding learning rate leaves only checkpoints of healthy weights;
* bad input found up front: a misspelt TEST dataset (in seconds), a NUM_CLASSES mismatch, a
  dataset whose GTs are all under MIN_GT_SIZE, an unwritable output;
* evaluation: a perfect detection file gives oLRP 0; bad results entries are named;
* the demo: a truncated image among good ones is named and skipped.
"""
import json
import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog, get_detection_dataset_dicts
from detectron2.engine import TrainerBase, default_argument_parser
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

import mayolact  # noqa: F401  (registers everything)
from mayolact.checkpoint.checkpointer import CheckpointError, YOLACTCheckpointer, find_checkpoints
from mayolact.config.config import add_mayolact_config
from mayolact.data.common import DataError
from mayolact.data.dataset_check import replay
from mayolact.data.datasets import register_coco_with_ids
from mayolact.data.samplers import ResumableTrainingSampler
from mayolact.engine.checks import PreflightError, check_output_dir, check_writable
from mayolact.engine.hooks import (
    DivergenceGuard,
    SaveOnError,
    StagedPeriodicCheckpointer,
    TrainingDiverged,
)
from mayolact.evaluation import build_mayolact_evaluator, olrp_from_matches

from common import (
    PYTHON,
    ListHandler,
    get_config,
    load_tool,
    reaped,
    session_env,
    tool_env,
    wait_for,
)
from common import QUICK_CONFIG as QUICK

REPO = Path(__file__).resolve().parents[1]
TRAIN_NET = str(REPO / "tools" / "train_net.py")
# The tiny training every run here shares: the quick config on the session's 8 shapes images
# (8 classes), at 128 px.
TINY = ["MODEL.YOLACT.NUM_CLASSES", "8", "INPUT.YOLACT.SIZE", "128", "SOLVER.IMS_PER_BATCH", "2",
        "TEST.DETECTIONS_PER_IMAGE", "10"]
TRAIN, VAL = "mayolact_shapes_train", "mayolact_shapes_val"


def train_args(*argv):
    return default_argument_parser().parse_args([str(a) for a in argv])


@pytest.fixture(scope="module")
def shapes():
    """The session's built-in shapes sets, rendered now (before a subprocess reads them)."""
    DatasetCatalog.get(TRAIN)
    DatasetCatalog.get(VAL)
    return SimpleNamespace(train=TRAIN, val=VAL)


# ------------------------------------------------------------------------------ checkpoints
KILLED_SAVE = """
import os, sys, torch
from mayolact.checkpoint.checkpointer import YOLACTCheckpointer
model = torch.nn.Linear(4, 3)
checkpointer = YOLACTCheckpointer(model, sys.argv[1])
checkpointer.save("model_0000001", iteration=1)
real_save = torch.save
def dying_save(obj, f):
    real_save(obj, f)
    f.flush()
    f.truncate(f.tell() // 2)  # half the file is on disk ...
    os._exit(137)  # ... when the process is killed
torch.save = dying_save
checkpointer.save("model_0000003", iteration=3)
"""


@pytest.mark.slow
def test_kill_during_a_save_keeps_the_previous_checkpoint(tmp_path):
    folder = tmp_path / "run"
    proc = subprocess.run([PYTHON, "-c", KILLED_SAVE, str(folder)], capture_output=True,
                          text=True, timeout=120, env=tool_env(tmp_path))
    assert proc.returncode == 137, proc.stderr[-2000:]
    # The kill left a partial temporary file, never a partial checkpoint under its name.
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == [
        "last_checkpoint", "model_0000001.pth"]
    assert (folder / "last_checkpoint").read_text() == "model_0000001.pth"
    partial = [p for p in folder.iterdir() if p.name.startswith(".model_0000003.")]
    assert len(partial) == 1

    model = torch.nn.Linear(4, 3)
    checkpointer = YOLACTCheckpointer(model, str(folder))
    assert checkpointer.resume_or_load("", resume=True)["iteration"] == 1
    assert checkpointer.remove_partial_saves() == [str(partial[0])]
    assert not partial[0].exists()


def test_resume_falls_back_from_an_unreadable_newest_checkpoint(tmp_path):
    folder = str(tmp_path)
    model = torch.nn.Linear(4, 3)
    checkpointer = YOLACTCheckpointer(model, folder)
    for it in (1, 3, 5):
        with torch.no_grad():
            model.weight.fill_(it)
        checkpointer.save(f"model_{it:07d}", iteration=it)
    newest = tmp_path / "model_0000005.pth"
    assert (tmp_path / "last_checkpoint").read_text() == newest.name
    newest.write_bytes(newest.read_bytes()[:100])  # cut short (a full disk, a copy interrupted)
    middle = tmp_path / "model_0000003.pth"
    data = bytearray(middle.read_bytes())
    at = data.index(b"\x00\x00\x40\x40")  # the stored float 3.0: damaged bytes, same length
    data[at: at + 4] = b"\x00\x00\x40\x41"
    middle.write_bytes(bytes(data))

    records = []
    handler = ListHandler(records)
    fresh = YOLACTCheckpointer(torch.nn.Linear(4, 3), folder)
    fresh.logger.addHandler(handler)
    try:
        extra = fresh.resume_or_load("", resume=True)
    finally:
        fresh.logger.removeHandler(handler)
    assert extra["iteration"] == 1 and fresh.model.weight[0, 0].item() == 1.0
    warning = [r for r in records if "newest readable" in r]
    assert len(warning) == 1
    assert "model_0000005.pth" in warning[0] and "model_0000003.pth" in warning[0]
    assert "checksum" in warning[0] and "model_0000001.pth" in warning[0]

    (tmp_path / "model_0000001.pth").write_bytes(b"")
    with pytest.raises(CheckpointError,
                       match="no readable checkpoint.*0001.pth: the file is empty"):
        YOLACTCheckpointer(torch.nn.Linear(4, 3), folder).resume_or_load("", resume=True)


def test_an_untagged_newer_checkpoint_is_resumed(tmp_path):
    """A kill between the rename and the tag leaves the newest checkpoint untagged."""
    checkpointer = YOLACTCheckpointer(torch.nn.Linear(4, 3), str(tmp_path))
    checkpointer.save("model_0000001", iteration=1)
    staged = checkpointer.stage("model_0000003", iteration=3)
    os.replace(staged.temporary, staged.path)  # renamed, the tag not yet written
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert find_checkpoints(str(tmp_path))[0] == staged.path
    fresh = YOLACTCheckpointer(torch.nn.Linear(4, 3), str(tmp_path))
    assert fresh.has_checkpoint()
    assert fresh.resume_or_load("", resume=True)["iteration"] == 3


def test_rerun_into_a_used_folder_stops_with_the_two_ways_on(tmp_path, shapes, capsys):
    out = tmp_path / "out"
    out.mkdir()
    YOLACTCheckpointer(torch.nn.Linear(2, 2), str(out)).save("model_0000009", iteration=9)
    before = (out / "model_0000009.pth").read_bytes()
    train_net = load_tool("train_net")
    argv = ["--config-file", str(QUICK), "OUTPUT_DIR", str(out), *TINY,
            "DATASETS.TRAIN", f"('{shapes.train}',)", "DATASETS.TEST", "()"]
    with pytest.raises(SystemExit) as exc:
        train_net.cli(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert str(out) in err and "model_0000009.pth" in err
    assert "--resume" in err and "SOLVER.YOLACT.OVERWRITE_CHECKPOINTS True" in err
    assert (out / "model_0000009.pth").read_bytes() == before

    # The trainer has the same guard (for callers that skip the tool's checks).
    cfg = get_config(QUICK, ["OUTPUT_DIR", out])
    with pytest.raises(PreflightError, match="--resume"):
        check_output_dir(cfg, resume=False)
    check_output_dir(cfg, resume=True)
    cfg.SOLVER.YOLACT.OVERWRITE_CHECKPOINTS = True
    check_output_dir(cfg, resume=False)


# ---------------------------------------------------------------------------------- signals
@pytest.mark.slow
def test_sigterm_saves_the_current_iteration_and_resume_continues_the_stream(
        tmp_path, shapes, monkeypatch):
    out = tmp_path / "out"
    # No crop and no zoom-out: every image keeps its GTs, so the mapper never resamples and the
    # images it is given are exactly the sampler's stream.
    common = ["--config-file", str(QUICK), "OUTPUT_DIR", str(out), *TINY, "SEED", "3",
              "DATASETS.TRAIN", f"('{shapes.train}',)", "DATASETS.TEST", "()",
              "INPUT.YOLACT.MIN_IOU_CROP", "False", "INPUT.YOLACT.EXPAND_PROB", "0.0",
              "SOLVER.CHECKPOINT_PERIOD", "100000"]
    console = tmp_path / "console.txt"  # a file, not a pipe nobody reads while it runs
    with open(console, "w") as sink:
        proc = subprocess.Popen([PYTHON, TRAIN_NET, *common, "SOLVER.MAX_ITER", "100000"],
                                cwd=tmp_path, env=session_env(tmp_path), stdout=sink,
                                stderr=subprocess.STDOUT)
    with reaped(proc):
        log = out / "log.txt"
        wait_for(lambda: log.is_file() and "Starting training" in log.read_text(), 240,
                 "training to start", proc)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    output = console.read_text()
    assert proc.returncode == 128 + signal.SIGTERM, output[-3000:]
    stop = re.search(r"SIGTERM received: training stopped after iteration (\d+), checkpoint (\S+);",
                     output)
    assert stop, output[-3000:]
    it = int(stop.group(1))
    checkpoint = out / f"model_{it:07d}.pth"
    assert stop.group(2) == str(checkpoint) and checkpoint.is_file()
    assert (out / "last_checkpoint").read_text() == checkpoint.name
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert state["iteration"] == it
    stream = state["trainer"]["hooks"]["DataStreamPosition"]
    assert stream["images_consumed"] == (it + 1) * 2

    # Resume: it starts after the saved iteration, where the uninterrupted stream would go on.
    seen = []
    from mayolact.data.dataset_mapper import YOLACTDatasetMapper

    original = YOLACTDatasetMapper.__call__

    def recording(self, d):
        if self.is_train:
            seen.append(d["file_name"])
        return original(self, d)

    monkeypatch.setattr(YOLACTDatasetMapper, "__call__", recording)
    train_net = load_tool("train_net")
    train_net.main(train_args("--resume", *common, "SOLVER.MAX_ITER", it + 3))
    assert "Starting training from iteration %d" % (it + 1) in log.read_text()
    assert (out / "model_final.pth").is_file()
    # The images of its first two iterations are the stream's next ones after the consumed
    # images (not the stream's first ones again).
    dicts = get_detection_dataset_dicts([shapes.train], filter_empty=True)
    sampler = ResumableTrainingSampler(len(dicts), seed=stream["seed"])
    sampler.set_position(stream["images_consumed"])
    assert seen[:4] == [dicts[i]["file_name"] for i in _take(iter(sampler), 4)]


@pytest.mark.parametrize("tool", ["train_net", "demo_job", "compare_assigners"])
def test_a_stopped_run_is_told_the_tools_way_on(tool, caplog):
    """SIGTERM's log line ends with how to go on: --resume where the tool has it, a rerun where
    the tool trains afresh (the demo job and the assigner study have no --resume)."""
    from mayolact.analysis.assigner_study import StudyTrainer
    from mayolact.engine.demo_job import DemoTrainer
    from mayolact.engine.hooks import GracefulStop, TrainingInterrupted
    from mayolact.engine.trainer import Trainer

    trainer_cls = {"train_net": Trainer, "demo_job": DemoTrainer,
                   "compare_assigners": StudyTrainer}[tool]
    hook = GracefulStop(None, trainer_cls.resume_hint)
    hook.trainer = _FakeTrainer(iter=6)
    hook.request(signal.SIGTERM)
    with caplog.at_level(logging.WARNING, logger="mayolact.engine.hooks"):
        with pytest.raises(TrainingInterrupted):
            hook.after_step()
    assert "SIGTERM received: training stopped after iteration 6; " in caplog.text
    if tool == "train_net":
        assert caplog.text.rstrip().endswith("continue it with --resume")
    else:
        assert "--resume" not in caplog.text and f"tools/{tool}.py" in caplog.text


def _take(iterator, n):
    return [next(iterator) for _ in range(n)]


def test_resumable_sampler_continues_the_stream_for_any_world_size(monkeypatch):
    full = _take(iter(ResumableTrainingSampler(7, seed=11)), 60)
    for consumed in (0, 5, 7, 23):
        for world in (1, 2, 3):
            per_rank = []
            for rank in range(world):
                sampler = ResumableTrainingSampler(7, seed=11)
                monkeypatch.setattr(sampler, "_rank", rank)
                monkeypatch.setattr(sampler, "_world_size", world)
                sampler.set_position(consumed)
                per_rank.append(_take(iter(sampler), 10))
            # Rank r takes every world-th position after the consumed ones, as from position 0.
            merged = [per_rank[k % world][k // world] for k in range(10 * world)]
            assert merged == full[consumed: consumed + 10 * world], (consumed, world)
    sampler = ResumableTrainingSampler(7, seed=11)
    sampler.set_position(4, seed=12)
    assert sampler.seed == 12 and sampler.start == 4
    with pytest.raises(ValueError, match=">= 0"):
        sampler.set_position(-1)


def _children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def _running(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_stop_when_their_launcher_is_killed(tmp_path):
    out = tmp_path / "out"
    cmd = [PYTHON, TRAIN_NET, "--num-gpus", "2",
           "--dist-url", "auto", "--config-file", str(QUICK),
           *TINY, "DATASETS.TRAIN", "('mayolact_shapes_train',)", "DATASETS.TEST", "()",
           "SOLVER.MAX_ITER", "100000", "SOLVER.CHECKPOINT_PERIOD", "100000",
           "OUTPUT_DIR", str(out)]
    launcher = subprocess.Popen(cmd, cwd=tmp_path, env=tool_env(tmp_path),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = []
    try:
        log = out / "log.txt"
        wait_for(lambda: log.is_file() and "Starting training" in log.read_text(), 300,
                 "the workers to start training", launcher)
        # The launcher's children: the two workers (and multiprocessing's resource tracker).
        workers = [c for c in _children(launcher.pid)
                   if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
        assert len(workers) == 2
        launcher.kill()
        launcher.wait()
        wait_for(lambda: not any(_running(w) for w in workers), 90, "the workers to exit")
    finally:
        for pid in [launcher.pid] + workers:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
        launcher.wait()
    # They stopped as on a signal: the main one saved the iteration it had reached.
    saved = find_checkpoints(str(out))
    assert saved and re.fullmatch(r"model_\d{7}\.pth", Path(saved[0]).name)


# ------------------------------------------------------------------------------- divergence
@pytest.mark.slow
def test_exploding_learning_rate_keeps_only_healthy_checkpoints(tmp_path, shapes):
    out = tmp_path / "out"
    train_net = load_tool("train_net")
    with pytest.raises(FloatingPointError) as exc:
        train_net.main(train_args(
            "--config-file", QUICK, "OUTPUT_DIR", out, *TINY, "SEED", "0",
            "DATASETS.TRAIN", f"('{shapes.train}',)", "DATASETS.TEST", "()",
            "SOLVER.BASE_LR", "2.0", "SOLVER.WARMUP_ITERS", "0", "SOLVER.MAX_ITER", "40",
            "SOLVER.CHECKPOINT_PERIOD", "1"))
    message = str(exc.value)
    diverged = int(re.search(r"iteration[ =](\d+)", message).group(1))
    assert diverged < 39, message
    assert not (out / "model_final.pth").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # nothing half-published
    for path in find_checkpoints(str(out)):
        state = torch.load(path, map_location="cpu", weights_only=False)
        # The checkpoint of iteration i holds the weights whose loss iteration i + 1 computed:
        # published only when that loss passed the guard, i.e. before the diverged iteration.
        assert state["iteration"] + 1 < diverged, (path, message)
        assert all(torch.isfinite(v).all() for v in state["model"].values()
                   if v.is_floating_point())


class _FakeTrainer(SimpleNamespace):
    pass


class _LossTrainer(TrainerBase):
    """Detectron2's ``TrainerBase`` whose step writes an injected loss (and positives) and sets
    the model's weight to the iteration, so a checkpoint tells which weights it holds."""

    def __init__(self, losses, positives=None, fail_at=None, error=OSError):
        super().__init__()
        self.model = torch.nn.Linear(1, 1)
        self.losses, self.positives = list(losses), positives or {}
        self.fail_at, self.error = fail_at, error

    def run_step(self):
        it = self.iter
        if it == self.fail_at:
            raise self.error(f"injected at iteration {it}")
        with torch.no_grad():
            self.model.weight.fill_(float(it))
        self.storage.put_scalar("total_loss", self.losses[it])
        self.storage.put_scalar("num_pos_anchors", self.positives.get(it, 10.0))


def _guarded(tmp_path, losses, period, positives=None, window=20, **kw):
    trainer = _LossTrainer(losses, positives, **kw)
    checkpointer = YOLACTCheckpointer(trainer.model, str(tmp_path), trainer=trainer)
    ckpt = StagedPeriodicCheckpointer(checkpointer, period, len(losses), probation=window)
    guard = DivergenceGuard(window=window)
    trainer.register_hooks([SaveOnError(ckpt), guard, ckpt])
    return trainer, guard


def _published(tmp_path):
    return sorted(torch.load(p, map_location="cpu", weights_only=False)["iteration"]
                  for p in find_checkpoints(str(tmp_path)))


def atss_like_losses(n=200, seed=5):
    """A healthy run as the ATSS quick run (batch 1): losses around 40 with a noise of 25%,
    a zero-positive iteration of 1,391 (OHEM over every negative) and a few single spikes of
    20-30x the median on iterations with positives."""
    rng = np.random.default_rng(seed)
    losses = list(120 * np.exp(-np.arange(n) / 15) + 38 * (1 + 0.25 * rng.standard_normal(n)))
    positives = {}
    for it, value in ((29, 358.4), (147, 1391.0), (171, 900.0)):
        if it < n:
            losses[it], positives[it] = value, 0.0
    for it in (60, 110, 160):
        if it < n:
            losses[it] = 30 * 38.0
    return losses, positives


def test_guard_trains_through_spikes_and_zero_positive_iterations(tmp_path):
    losses, positives = atss_like_losses()
    trainer, guard = _guarded(tmp_path, losses, period=25, positives=positives)
    trainer.train(0, len(losses))
    assert guard.zero_positive_iterations == 3
    assert trainer.storage.latest()["zero_positive_iterations"][0] == 3
    # Every periodic checkpoint, and model_final (iteration 199 as well).
    assert _published(tmp_path) == [24, 49, 74, 99, 124, 149, 174, 199, 199]
    # The previous rule (20x the median of the last 20) stopped this run at iteration 147.
    assert losses[147] > 20 * np.median(losses[127:147])


def test_guard_stops_on_a_ceiling_a_sustained_rise_and_non_finite_losses():
    def run(losses, positives=None):
        guard = DivergenceGuard(window=5, rise=3.0, ceiling=100.0)
        with EventStorage(0) as storage:
            guard.trainer = _FakeTrainer(storage=storage, iter=0)
            guard.before_train()
            for it, loss in enumerate(losses):
                guard.trainer.iter = storage.iter = it
                storage.put_scalar("total_loss", loss)
                storage.put_scalar("num_pos_anchors", (positives or {}).get(it, 4.0))
                guard.after_step()
        return guard

    steady = [10.0, 9.0, 11.0, 10.0, 10.0]
    run(steady + [500.0, 10.0, 9.0] + [990.0])  # spikes below the ceiling (100 x 10) pass
    with pytest.raises(TrainingDiverged, match="iteration 5: total_loss 1001 is above "
                                               "SOLVER.YOLACT.DIVERGENCE_CEILING = 100"):
        run(steady + [1001.0])
    guard = run(steady + [5000.0], positives={5: 0.0})  # ... unless the batch had no positive
    assert guard.zero_positive_iterations == 1
    run(steady + [31.0, 32.0, 8.0, 9.0, 10.0])  # two of five high: not sustained
    with pytest.raises(TrainingDiverged, match="iteration 8: the median total_loss of the last "
                                               "5 .* 31, .* SOLVER.YOLACT.DIVERGENCE_RISE = 3"):
        run(steady + [31.0, 32.0, 8.0, 33.0])  # three of the last five high
    with pytest.raises(TrainingDiverged, match="iteration 2: total_loss 2001 is above .* the "
                                               "median of the run's first 2 losses"):
        run([10.0, 9.0, 2001.0])  # an explosion before the first window is complete
    with pytest.raises(TrainingDiverged, match="iteration 6: total_loss is nan"):
        run(steady + [10.0, float("nan")])
    for bad in ({"window": 0}, {"rise": 1.0}, {"ceiling": float("inf")}):
        with pytest.raises(ValueError, match="DIVERGENCE_"):
            DivergenceGuard(**bad)


@pytest.mark.parametrize("period", [1, 5, 25])
def test_growth_is_caught_before_a_checkpoint_holding_it_is_published(tmp_path, period):
    """A loss growing 1.15x per iteration from 100 to 1e12, through the real hooks: the guard
    stops the run, and no published checkpoint holds weights of the growth."""
    losses, _ = atss_like_losses(n=60)
    start = len(losses)
    losses += [100 * 1.15 ** k for k in range(int(np.log(1e10) / np.log(1.15)) + 1)]
    trainer, _ = _guarded(tmp_path, losses, period=period)
    with pytest.raises(TrainingDiverged) as exc:
        trainer.train(0, len(losses))
    stopped = int(re.search(r"iteration (\d+)", str(exc.value)).group(1))
    assert start < stopped <= start + 20, str(exc.value)  # within the probation window
    published = _published(tmp_path)
    assert published and max(published) < start, (published, start)
    assert not (tmp_path / "model_final.pth").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # staged files gone


def test_an_error_saves_the_last_completed_iteration_and_says_how_to_resume(tmp_path):
    losses, _ = atss_like_losses(n=40)
    trainer, _ = _guarded(tmp_path, losses, period=100, fail_at=23, error=OSError)
    with pytest.raises(OSError) as exc:
        trainer.train(0, len(losses))
    notes = " ".join(getattr(exc.value, "__notes__", []))
    assert "state after iteration 22 was saved" in notes and "--resume" in notes, notes
    state = torch.load(tmp_path / "model_0000022.pth", map_location="cpu", weights_only=False)
    assert state["iteration"] == 22 and float(state["model"]["weight"]) == 22.0
    # Divergence saves nothing (its weights are not sound).
    out = tmp_path / "diverged"
    trainer, _ = _guarded(out, losses, period=100, fail_at=23, error=FloatingPointError)
    with pytest.raises(FloatingPointError):
        trainer.train(0, len(losses))
    assert find_checkpoints(str(out)) == []


def test_staged_checkpoint_is_dropped_when_the_next_loss_diverges(tmp_path):
    model = torch.nn.Linear(3, 2)
    checkpointer = YOLACTCheckpointer(model, str(tmp_path))
    hook = StagedPeriodicCheckpointer(checkpointer, period=1, max_iter=10)
    hook.trainer = _FakeTrainer(iter=0)
    hook.after_step()  # stages iteration 0
    assert find_checkpoints(str(tmp_path)) == []
    hook.trainer.iter = 1
    hook.after_step()  # publishes 0, stages 1
    assert [Path(p).name for p in find_checkpoints(str(tmp_path))] == ["model_0000000.pth"]
    try:
        raise FloatingPointError("Loss became infinite or NaN at iteration=2!")
    except FloatingPointError:
        hook.after_train()  # as TrainerBase.train's `finally` runs it
    # The staged checkpoint of iteration 1 (weights that gave the diverged loss) is gone.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_0000000.pth"]
    with torch.no_grad():
        model.weight[0, 0] = float("inf")
    hook.trainer.iter = 9
    with pytest.raises(TrainingDiverged, match="no longer finite"):
        hook.after_step()
    assert not (tmp_path / "model_final.pth").exists()


def _coco_with_a_corrupt_image(tmp_path, n=6, corrupt=3):
    """A COCO json of n 64 x 48 images with one square GT each; image ``corrupt`` holds bytes
    that are not an image (it exists, so only mapping it finds it)."""
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for i in range(n):
        path = tmp_path / f"img{i}.png"
        if i == corrupt:
            path.write_bytes(b"not an image at all")
        else:
            cv2.imwrite(str(path), rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
        images.append({"id": i + 1, "file_name": path.name, "height": 48, "width": 64})
        annotations.append({"id": 100 + i, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                            "area": 600.0, "bbox": [10.0, 10.0, 30.0, 20.0],
                            "segmentation": [[10.0, 10.0, 40.0, 10.0, 40.0, 30.0, 10.0, 30.0]]})
    path = tmp_path / "corrupt.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 1, "name": "thing"}]}))
    return path


@pytest.mark.slow
def test_a_data_error_mid_run_saves_the_completed_iterations_and_resumes(tmp_path):
    json_file = _coco_with_a_corrupt_image(tmp_path)
    out = tmp_path / "out"
    opts = ["--config-file", QUICK, "OUTPUT_DIR", out, "DATASETS.YOLACT.COCO_JSON",
            f"[['corrupt17','{json_file}','{tmp_path}']]", "DATASETS.TRAIN", "('corrupt17',)",
            "DATASETS.TEST", "()", "MODEL.YOLACT.NUM_CLASSES", "1", "INPUT.YOLACT.SIZE", "64",
            "SOLVER.IMS_PER_BATCH", "1", "SOLVER.MAX_ITER", "20", "SEED", "3"]
    train_net = load_tool("train_net")
    with pytest.raises(DataError) as exc:
        train_net.main(train_args(*opts))
    message = str(exc.value)
    assert "img3.png (dataset index 3 of DATASETS.TRAIN ('corrupt17',), seed " in message
    assert "--replay 3:" in message
    notes = " ".join(getattr(exc.value, "__notes__", []))
    done = int(re.search(r"state after iteration (\d+) was saved", notes).group(1))
    assert done >= 0 and "--resume" in notes, notes
    state = torch.load(out / f"model_{done:07d}.pth", map_location="cpu", weights_only=False)
    assert state["iteration"] == done
    # The replay the message gives reproduces the error; --resume continues after `done`.
    seed = int(re.search(r"seed (\d+)\)", message).group(1))
    with pytest.raises(OSError, match="img3.png"):
        replay(get_config(QUICK, [str(o) for o in opts[2:]]), 3, seed)
    (tmp_path / "img3.png").write_bytes(cv2.imencode(".png", np.zeros((48, 64, 3), np.uint8))[1])
    train_net.main(train_args("--resume", *opts))
    final = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)
    assert final["iteration"] == 19


# ---------------------------------------------------------------------- up-front checks
def test_misspelt_test_dataset_fails_in_seconds(tmp_path, capsys):
    """Found by the launcher's checks, before any setup, model or data loading."""
    train_net = load_tool("train_net")
    with pytest.raises(SystemExit) as exc:
        train_net.cli(["--config-file", str(QUICK), *TINY,
                       "DATASETS.TRAIN", "('mayolact_shapes_train',)",
                       "DATASETS.TEST", "('mayolact_shapes_vall',)",
                       "OUTPUT_DIR", str(tmp_path / "out")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "DATASETS.TEST: dataset 'mayolact_shapes_vall' is not registered" in err
    assert "'mayolact_shapes_val'" in err  # the suggestion
    assert not (tmp_path / "out").exists()  # nothing was set up, so nothing trained


def test_num_classes_mismatch_names_the_key_and_the_dataset(tmp_path, shapes, capsys):
    train_net = load_tool("train_net")
    common = ["--config-file", str(QUICK), "OUTPUT_DIR", str(tmp_path / "out"),
              "MODEL.YOLACT.NUM_CLASSES", "80"]
    for key, name, flags in (("DATASETS.TEST", shapes.val, ["--eval-only"]),
                             ("DATASETS.TRAIN", shapes.train, [])):
        datasets = {"DATASETS.TRAIN": "()", "DATASETS.TEST": "()", key: f"('{name}',)"}
        with pytest.raises(SystemExit) as exc:
            train_net.cli([*flags, *common, *[x for kv in datasets.items() for x in kv]])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert f"MODEL.YOLACT.NUM_CLASSES is 80, but {key} dataset '{name}' has 8 classes" in err
    assert not (tmp_path / "out").exists()  # found before any setup


@pytest.mark.slow
def test_train_net_checks_the_run_once(tmp_path, shapes, count_checks):
    """The tool checks in the launcher, before any worker starts; the trainer it builds does not
    repeat the checks."""
    train_net = load_tool("train_net")
    train_net.cli(["--config-file", str(QUICK), *TINY, "DATASETS.TRAIN", f"('{shapes.train}',)",
                   "DATASETS.TEST", "()", "SOLVER.MAX_ITER", "1", "OUTPUT_DIR",
                   str(tmp_path / "out")])
    assert (tmp_path / "out" / "model_final.pth").is_file()
    assert count_checks == {"check_datasets_registered": 2, "check_num_classes": 2,
                            "check_output_dir": 1}


def test_unwritable_output_is_found_before_anything_runs(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(PreflightError, match="OUTPUT_DIR .*a_file is a file, not a folder"):
        check_writable(str(blocker / "out"), "OUTPUT_DIR")
    check_writable(str(tmp_path / "new" / "deeper"), "OUTPUT_DIR")
    assert not (tmp_path / "new").exists()  # probing creates nothing


@pytest.mark.slow
def test_dataset_without_a_usable_gt_names_the_dataset_and_min_gt_size(tmp_path):
    image = tmp_path / "img0.png"
    cv2.imwrite(str(image), np.full((48, 64, 3), 90, np.uint8))
    coco = {
        "images": [{"id": 1, "file_name": image.name, "height": 48, "width": 64}],
        "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 9.0,
                         "bbox": [10.0, 10.0, 3.0, 3.0],
                         "segmentation": [[10.0, 10.0, 13.0, 10.0, 13.0, 13.0, 10.0, 13.0]]}],
        "categories": [{"id": 1, "name": "speck"}],
    }
    (tmp_path / "tiny.json").write_text(json.dumps(coco))
    name = "faults_all_too_small"
    if name not in DatasetCatalog.list():
        register_coco_with_ids(name, tmp_path / "tiny.json", tmp_path)
    train_net = load_tool("train_net")
    with pytest.raises(ValueError) as exc:
        train_net.main(train_args("--config-file", QUICK, "OUTPUT_DIR", tmp_path / "out",
                                  "DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", "()",
                                  "MODEL.YOLACT.NUM_CLASSES", "1", "SOLVER.MAX_ITER", "1"))
    message = str(exc.value)
    assert name in message and "INPUT.YOLACT.MIN_GT_SIZE = 4.0" in message, message
    assert "Sample larger than population" not in message


# ------------------------------------------------------------------------------ evaluation
def _rle(mask):
    r = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    r["counts"] = r["counts"].decode("ascii")
    return r


# Boxes whose IoU with themselves pycocotools computes as 1 + 2e-16, 1 + 9e-16 and 1 - 3e-16.
ROUNDING_BOXES = [[34.53, 21.66, 12.99, 17.91], [25.48, 10.79, 2.64, 1.66], [3.3, 4.1, 20.7, 15.2]]
# Boxes a float32 model output can hold exactly (IoU 1 exactly).
EXACT_BOXES = [[3.25, 4.5, 20.75, 15.25], [30.5, 20.25, 17.0, 19.75], [5.0, 6.0, 40.25, 30.5]]


def _perfect_gt(tmp_path, boxes=ROUNDING_BOXES):
    """A COCO json (2 images, 2 classes, polygon masks) and its annotations as detections."""
    images = [{"id": i, "width": 64, "height": 48, "file_name": f"{i}.png"} for i in (1, 2)]
    anns, dets = [], []
    boxes = list(zip((1, 1, 2), (1, 2, 1), boxes))
    for k, (img, cat, (x, y, w, h)) in enumerate(boxes, start=1):
        poly = [x, y, x + w, y, x + w, y + h, x, y + h]
        anns.append({"id": k, "image_id": img, "category_id": cat, "bbox": [x, y, w, h],
                     "area": w * h, "iscrowd": 0, "segmentation": [poly]})
        rle = mask_util.merge(mask_util.frPyObjects([poly], 48, 64))
        rle["counts"] = rle["counts"].decode("ascii")
        dets.append({"image_id": img, "category_id": cat, "bbox": [x, y, w, h], "score": 1.0,
                     "segmentation": rle})
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"images": images, "annotations": anns,
                              "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}))
    return gt, dets


def test_olrp_of_ground_truth_fed_back_is_zero(tmp_path, capsys):
    assert olrp_from_matches([0.9], [True], [1 + 4e-16], 1)["olrp"] == 0.0
    with pytest.raises(ValueError, match=r"\[tau, 1\]"):
        olrp_from_matches([0.9], [True], [1 + 1e-6], 1)

    gt, dets = _perfect_gt(tmp_path)
    assert max(mask_util.iou([b], [b], [0])[0, 0] for b in ROUNDING_BOXES) > 1  # the fault
    results = tmp_path / "results.json"
    results.write_text(json.dumps(dets))
    out = tmp_path / "metrics.json"
    evaluate = load_tool("evaluate")
    assert evaluate.main([str(results), "--gt", str(gt), "--quiet", "--output", str(out),
                          "--backend", "pycocotools"]) == 0
    metrics = json.loads(out.read_text())
    for task in ("bbox", "segm"):
        assert metrics[task]["oLRP"] == 0.0 and metrics[task]["AP"] == 100.0, metrics[task]

    # The training evaluator (the same LRP code), on model outputs that reproduce the ground
    # truth: float32 boxes, so the ground truth is one that float32 holds exactly.
    (tmp_path / "exact").mkdir()
    gt, dets = _perfect_gt(tmp_path / "exact", EXACT_BOXES)
    name = "faults_perfect_gt"
    if name not in DatasetCatalog.list():
        register_coco_with_ids(name, gt, tmp_path)
    DatasetCatalog.get(name)
    cfg = _eval_cfg(name)
    evaluator = build_mayolact_evaluator(cfg, name, str(tmp_path / "inference"))
    evaluator.reset()
    by_image = {}
    for d in dets:
        by_image.setdefault(d["image_id"], []).append(d)
    mapping = MetadataCatalog.get(name).thing_dataset_id_to_contiguous_id
    for image_id, found in by_image.items():
        inst = Instances((48, 64))
        x, y, w, h = np.array([d["bbox"] for d in found], np.float32).T
        inst.pred_boxes = Boxes(torch.as_tensor(np.stack([x, y, x + w, y + h], 1)))
        inst.scores = torch.ones(len(found))
        inst.pred_classes = torch.as_tensor([mapping[d["category_id"]] for d in found])
        inst.pred_masks = BitMasks(torch.as_tensor(np.stack(
            [mask_util.decode({**d["segmentation"], "counts": d["segmentation"]["counts"].encode()})
             for d in found]).astype(bool))).tensor
        evaluator.process([{"image_id": image_id}], [{"instances": inst}])
    res = evaluator.evaluate()
    for task in ("bbox", "segm"):
        assert res[task]["oLRP"] == 0.0, (task, res[task])


def _eval_cfg(dataset):
    from detectron2.config import get_cfg

    cfg = get_cfg()
    add_mayolact_config(cfg)
    cfg.MODEL.MASK_ON = True
    cfg.DATASETS.TEST = (dataset,)
    cfg.TEST.YOLACT.COCO_BACKEND = "pycocotools"
    return cfg


@pytest.mark.parametrize("backend", ["pycocotools", "faster_coco_eval"])
def test_bad_results_entries_are_named(tmp_path, backend, capsys):
    from mayolact.evaluation import faster_coco_eval_available

    if backend == "faster_coco_eval" and not faster_coco_eval_available():
        pytest.skip("faster-coco-eval not installed")
    gt, dets = _perfect_gt(tmp_path)
    evaluate = load_tool("evaluate")
    wrong_size = _rle(np.ones((10, 10), bool))
    cases = [
        (2, "score", float("nan"), "entry 2: field 'score' is nan"),
        (1, "score", float("inf"), "entry 1: field 'score' is inf"),
        (0, "bbox", [1.0, float("nan"), 3.0, 4.0], "entry 0: field 'bbox'"),
        (1, "bbox", [1.0, 2.0, -3.0, 4.0], "entry 1: field 'bbox' [1.0, 2.0, -3.0, 4.0] has a "
                                          "negative width or height"),
        (2, "segmentation", wrong_size, "entry 2: field 'segmentation' has size [10, 10], but "
                                        "image 2 is [48, 64]"),
        (1, "segmentation", None, "entry 1: field 'segmentation' is missing, but task 'segm'"),
    ]
    for index, field, value, message in cases:
        bad = [dict(d) for d in dets]
        if value is None:
            del bad[index][field]
        else:
            bad[index][field] = value
        path = tmp_path / f"bad_{field}.json"
        path.write_text(json.dumps(bad))  # NaN / Infinity: what Python's json writes for them
        assert evaluate.main([str(path), "--gt", str(gt), "--quiet", "--backend", backend]) == 2
        err = capsys.readouterr().err
        assert str(path) in err and message in err, (message, err)


# ------------------------------------------------------------------------------------ demo
@pytest.fixture(scope="module")
def demo_weights(tmp_path_factory):
    from detectron2.modeling import build_model

    cfg = get_config(QUICK, ["MODEL.YOLACT.NUM_CLASSES", 80])
    torch.manual_seed(0)
    model = build_model(cfg)
    folder = tmp_path_factory.mktemp("weights")
    YOLACTCheckpointer(model, str(folder)).save("demo")
    return folder / "demo.pth"


def test_demo_skips_and_names_an_unreadable_image(tmp_path, demo_weights, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.jpg", "c.jpg"):
        cv2.imwrite(str(folder / name), rng.integers(0, 255, (40, 56, 3), dtype=np.uint8))
    good = (folder / "a.jpg").read_bytes()
    (folder / "b.jpg").write_bytes(good[: len(good) // 3])  # a truncated download
    out = tmp_path / "vis"
    demo = load_tool("demo")
    code = demo.main(["--config-file", str(QUICK), "--input", str(folder), "--output", str(out),
                      "MODEL.WEIGHTS", str(demo_weights), "MODEL.YOLACT.NUM_CLASSES", "80"])
    assert code == 1
    err = capsys.readouterr().err
    assert str(folder / "b.jpg") in err and "1 of 3 inputs could not be read" in err
    assert sorted(p.stem for p in out.iterdir()) == ["a", "c"]  # the good ones are drawn



def test_demo_output_that_cannot_be_written_fails_before_any_frame(tmp_path, demo_weights,
                                                                   capsys, monkeypatch):
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (32, 32))
    for _ in range(3):
        writer.write(np.zeros((32, 32, 3), np.uint8))
    writer.release()
    demo = load_tool("demo")
    from mayolact.engine.demo import Demo

    predicted = []
    monkeypatch.setattr(Demo, "predict", lambda self, image: predicted.append(1))
    common = ["--config-file", str(QUICK), "--video-input", str(video)]
    opts = ["MODEL.WEIGHTS", str(demo_weights), "MODEL.YOLACT.NUM_CLASSES", "80"]
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    # A folder that cannot exist: found before the model is built.
    assert demo.main([*common, "--output", str(blocker / "clip.mp4"), *opts]) == 2
    assert "--output" in capsys.readouterr().err
    # A writable folder but no writer for the name: found before the first frame.
    out = tmp_path / "drawn.unknownext"
    assert demo.main([*common, "--output", str(out), *opts]) == 2
    assert f"{out}: cannot open a video writer" in capsys.readouterr().err
    assert predicted == [] and not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
