"""tools/compare_assigners.py: paired runs (same initial weights and data for every assigner of a
seed), resuming after a kill, paired differences with confidence intervals, tables and figure."""
import csv
import json
import os
import signal
import subprocess
import time

import pytest
import torch

from common import PYTHON, REPO, reaped, run_tool, tiny_config, tool_env


def load_study():
    import mayolact.analysis.assigner_study as study

    return study


def test_rows_come_from_the_rows_files_with_the_550_geometry():
    study = load_study()
    assert study.ASSIGNERS == ["fixed_iou", "atss_iou", "atss_giou", "atss_diou", "atss_maiou"]
    base = study.DEFAULT_BASE
    fixed = study.row_config(base, "fixed_iou", ["INPUT.YOLACT.SIZE", "256"])
    y = fixed.MODEL.YOLACT
    assert y.MATCHER == "FixedIoU" and y.MASK_LOSS_WEIGHT == 6.125
    assert fixed.MODEL.ANCHOR_GENERATOR.NAME == "YOLACTAnchorGenerator"
    # One geometry policy: YOLACT's 550 strides at any input size, as every fixed-IoU config.
    assert y.ANCHOR_REFERENCE_SIZE == 550 and list(y.ANCHOR_REFERENCE_GRID) == [69, 35, 18, 9, 5]
    giou = study.row_config(base, "atss_giou", ["MODEL.YOLACT.MASK_LOSS_WEIGHT", "1.0"])
    assert giou.MODEL.YOLACT.ATSS_QUALITY == "giou"
    assert giou.MODEL.YOLACT.MASK_LOSS_WEIGHT == 8.0  # the row wins over the base's overrides
    assert giou.MODEL.ANCHOR_GENERATOR.NAME == "DefaultAnchorGenerator"  # the base's anchors
    with pytest.raises(ValueError, match="unknown assigner"):
        study.row_config(base, "atss")


def test_summary_mean_and_std_over_seeds():
    study = load_study()
    rows = [{"assigner": "atss_maiou", "seed": s, "segm_AP": v, "segm_AP50": 2 * v}
            for s, v in enumerate([10.0, 20.0])]
    rows.append({"assigner": "atss_iou", "seed": 0, "segm_AP": 5.0, "segm_AP50": 6.0})
    summary = study.summarise(rows)
    assert [s["assigner"] for s in summary] == ["atss_iou", "atss_maiou"]
    maiou = summary[1]
    assert maiou["runs"] == 2 and maiou["segm_AP"] == 15.0
    assert maiou["segm_AP_std"] == pytest.approx(7.0710678, rel=1e-6)  # sample std
    assert summary[0]["segm_AP_std"] is None  # one run: no spread to report


def test_one_seed_is_reported_without_a_spread(monkeypatch):
    """--seeds 1: no "± 0.0" in the table, no error bars, and an axis that starts at AP 0 even
    when every AP is 0."""
    study = load_study()
    rows = [{"assigner": a, "seed": 0, **{f"{t}_{m}": 0.0 for t in ("segm", "bbox")
                                          for m in study.METRICS + ["oLRP"]}}
            for a in ("fixed_iou", "atss_maiou")]
    summary = study.summarise(rows)
    md = study.markdown(summary, "one seed")
    assert "±" not in md and "| fixed_iou | 1 | 0.0 | 0.0 |" in md
    drawn = {}
    monkeypatch.setattr(study, "save_figure",
                        lambda fig, path, dpi=120: drawn.update(fig=fig))
    study.figure(summary, [], [], "unused.png")
    ax = drawn["fig"].axes[0]
    assert ax.get_ylim()[0] == 0.0 and ax.get_ylim()[1] > 0.0
    assert all(c.errorbar is None or not c.errorbar.lines[2] for c in ax.containers)
    assert ax.get_title() == "Mask AP by GT MOB range (one seed)"
    two = study.summarise(rows + [dict(r, seed=1, segm_AP=2.0) for r in rows])
    assert "| fixed_iou | 2 | 1.0 ± 1.4 |" in study.markdown(two, "two seeds")  # several: ±


def test_paired_differences_with_t_intervals():
    """Differences 1, 2, 3 over three seeds: mean 2, sd 1, 95% CI 2 -+ t(0.975, 2) / sqrt(3)."""
    study = load_study()
    rows = [{"assigner": "atss_iou", "seed": s, "segm_AP": 10.0} for s in range(4)]
    rows += [{"assigner": "atss_maiou", "seed": s, "segm_AP": 10.0 + d}
             for s, d in enumerate([1.0, 2.0, 3.0])]  # seed 3 missing: not paired
    rows += [{"assigner": "fixed_iou", "seed": 0, "segm_AP": 4.0}]
    paired = study.paired_differences(rows, study.baselines(), ["segm_AP"])
    assert [p["pair"] for p in paired] == ["atss_iou - fixed_iou", "atss_maiou - atss_iou"]
    one, three = paired
    assert one["n"] == 1 and one["mean"] == 6.0 and one["sd"] is None and one["ci_low"] is None
    assert three["n"] == 3 and three["mean"] == 2.0 and three["sd"] == 1.0
    half = 4.302652729911275 / 3 ** 0.5  # scipy.stats.t.ppf(0.975, 2) / sqrt(3)
    assert three["ci_low"] == pytest.approx(2.0 - half) and three["ci_high"] == pytest.approx(
        2.0 + half)
    md = study.markdown(study.summarise(rows), "t", paired)
    assert "| atss_maiou - atss_iou | mask AP | 3 | +2.00 | [-0.48, +4.48] | 1.00 | 10 |" in md


def test_seeds_to_resolve_one_ap():
    """A paired t-test at 5% with 80% power for a +1 difference: sd 1 needs 10 seeds (t(0.975, 9)
    + t(0.8, 9) = 3.145 <= sqrt(10); with 9 seeds 3.195 > 3), sd 2 needs 34 (about 4 x 8.4)."""
    study = load_study()
    assert study.seeds_to_resolve(1.0) == 10
    assert study.seeds_to_resolve(2.0) == 34
    assert study.seeds_to_resolve(0.0) == 2 and study.seeds_to_resolve(None) is None


def tiny_base(tmp_path, **extra):
    """A tiny study base config written as yaml (R-18 at quarter width, the test's shapes set)."""
    cfg = tiny_config("atss_maiou", size=96, num_classes=8)
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = ("mayolact_shapes_train",), ("mayolact_shapes_val",)
    cfg.DATALOADER.NUM_WORKERS = 1
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.SOLVER.MAX_ITER = 2
    cfg.SOLVER.WARMUP_ITERS = 0
    cfg.SOLVER.CHECKPOINT_PERIOD = 100000
    cfg.TEST.DETECTIONS_PER_IMAGE = 5
    cfg.MODEL.YOLACT.SCORE_THRESH_TEST = 0.0
    for key, value in extra.items():
        cfg.merge_from_list([key, value])
    path = tmp_path / "base.yaml"
    path.write_text(cfg.dump())
    return str(path)


@pytest.fixture
def restore_torch_determinism():
    """prepare_run switches torch to its deterministic kernels, process-wide: switch back."""
    before = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic
    yield
    torch.use_deterministic_algorithms(before[0])
    torch.backends.cudnn.deterministic = before[1]


def test_rows_of_a_seed_start_alike_and_see_the_same_data(tmp_path, restore_torch_determinism):
    """ATSS w. IoU and the fixed-IoU row (three anchors per location) of one seed: every tensor the
    two models share starts equal, and the first batches (images after augmentation, GTs) are the
    same; another seed gives other weights and data."""
    study = load_study()
    base = tiny_base(tmp_path)
    reference = study.load_config(base)

    def start(assigner, seed):
        trainer = study.prepare_run(base, assigner, seed, str(tmp_path / "out"), [], reference)
        batches = []
        for batch in trainer.data_loader:
            batches.append([(d["image_id"], d["image"], d["instances"].gt_boxes.tensor)
                            for d in batch])
            if len(batches) == 3:
                break
        return trainer.model.state_dict(), batches

    iou, iou_data = start("atss_iou", 0)
    fixed, fixed_data = start("fixed_iou", 0)
    other, other_data = start("atss_iou", 1)
    shared = [k for k in iou if k in fixed and iou[k].shape == fixed[k].shape]
    assert len(shared) == len(iou) - 6  # all but the three convs of the head, weights and biases
    assert all(torch.equal(iou[k], fixed[k]) for k in shared)
    assert not all(torch.equal(iou[k], other[k]) for k in shared)

    def same(a, b):
        return all(x[0] == y[0] and torch.equal(x[1], y[1]) and torch.equal(x[2], y[2])
                   for p, q in zip(a, b) for x, y in zip(p, q))

    assert same(iou_data, fixed_data) and not same(iou_data, other_data)


STUDY_OPTS = ["SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "0",
              "INPUT.YOLACT.SIZE", "96", "DATALOADER.NUM_WORKERS", "0",
              "MODEL.YOLACT.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "5"]


@pytest.mark.slow
def test_study_resumes_after_a_kill_without_redoing_runs(tmp_path):
    """Killed (SIGKILL) right after its first run completed: the second invocation skips that run
    (its result.json untouched), runs the rest, and reports paired differences."""
    out = tmp_path / "study"
    args = [PYTHON, str(REPO / "tools" / "compare_assigners.py"), "--seeds", "2",
            "--assigners", "atss_iou", "atss_maiou", "--output", str(out), *STUDY_OPTS]
    env = tool_env(tmp_path, MAYOLACT_SHAPES_TRAIN_IMAGES=6, MAYOLACT_SHAPES_VAL_IMAGES=3)
    first = out / "atss_iou_seed0" / "result.json"
    proc = subprocess.Popen(args, cwd=str(tmp_path), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    with reaped(proc, kill=lambda p: os.killpg(p.pid, signal.SIGKILL)):  # the tool's workers too
        deadline = time.monotonic() + 600
        while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.exists(), proc.stderr.read().decode()[-3000:] if proc.poll() else "timeout"
    stamp = (first.read_bytes(), first.stat().st_mtime_ns)
    assert proc.returncode == -signal.SIGKILL  # killed, not finished
    assert not (out / "atss_maiou_seed1" / "result.json").exists()
    done = subprocess.run(args, cwd=str(tmp_path), env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (first.read_bytes(), first.stat().st_mtime_ns) == stamp  # never redone
    log = done.stdout + done.stderr  # Detectron2's loggers write to stdout
    assert "atss_iou, seed 0: complete" in log and "=== atss_iou, seed 0 ===" not in log
    assert "=== atss_maiou, seed 0 ===" in log
    for run in ("atss_iou_seed0", "atss_maiou_seed0", "atss_iou_seed1", "atss_maiou_seed1"):
        result = json.loads((out / run / "result.json").read_text())
        assert {"segm_AP", "segm_AP-mob[0,0.4]", "bbox_AP"} <= set(result["row"])
    md = (out / "summary.md").read_text()
    assert "| atss_maiou - atss_iou | mask AP | 2 |" in md
    with open(out / "paired.csv") as f:
        assert {r["metric"] for r in csv.DictReader(f)} >= {"segm_AP", "segm_AP-mob[0.8,1]"}
    # A changed schedule in the same folder is refused before anything is trained.
    changed = subprocess.run(args + ["SOLVER.BASE_LR", "0.002"], cwd=str(tmp_path), env=env,
                             capture_output=True, text=True, timeout=300)
    assert changed.returncode == 2 and "another config" in changed.stderr


@pytest.mark.slow
def test_study_runs_every_assigner_end_to_end(tmp_path):
    out = tmp_path / "study"
    proc = run_tool("compare_assigners", [
        "--seeds", "1", "--output", out, *STUDY_OPTS],
        tmp_path, timeout=600, MAYOLACT_SHAPES_TRAIN_IMAGES=6, MAYOLACT_SHAPES_VAL_IMAGES=3)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["assigner"] for r in rows] == [
        "fixed_iou", "atss_iou", "atss_giou", "atss_diou", "atss_maiou"]
    for r in rows:
        assert 0.0 <= float(r["segm_AP"]) <= 100.0 and 0.0 <= float(r["segm_oLRP"]) <= 100.0
    md = (out / "summary.md").read_text()
    for a in ("fixed_iou", "atss_iou", "atss_giou", "atss_diou", "atss_maiou"):
        assert f"| {a} |" in md
    assert "Mask AP by GT mask-over-box range" in md and "| atss_iou - fixed_iou |" in md
    assert (out / "mask_ap.png").stat().st_size > 1000
    assert (out / "summary.csv").is_file() and (out / "paired.csv").is_file()
    report = run_tool("compare_assigners", ["--seeds", "1", "--output", out, "--report-only",
                                            *STUDY_OPTS], tmp_path, timeout=300)
    assert report.returncode == 0 and "=== " not in report.stdout  # nothing trained again
