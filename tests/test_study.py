"""tools/compare_assigners.py: every assigner trains and evaluates; tables and chart are written."""
import csv
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def load_study():
    spec = importlib.util.spec_from_file_location(
        "compare_assigners", REPO / "tools" / "compare_assigners.py")
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(REPO / "tools"))
    spec.loader.exec_module(mod)
    return mod


def test_fixed_iou_overrides_follow_the_input_size():
    study = load_study()
    assert study.feature_sizes(550, range(3, 8)) == [69, 35, 18, 9, 5]
    assert study.feature_sizes(400, range(3, 8)) == [50, 25, 13, 7, 4]
    opts = dict(zip(*[iter(study.assigner_overrides("fixed_iou", 256))] * 2))
    assert opts["MODEL.YOLACT.MATCHER"] == "FixedIoU"
    assert opts["MODEL.YOLACT.ANCHOR_REFERENCE_GRID"] == str(study.feature_sizes(256, range(3, 8)))
    assert opts["MODEL.YOLACT.MASK_LOSS_WEIGHT"] == "6.125"
    opts = dict(zip(*[iter(study.assigner_overrides("atss_giou", 256))] * 2))
    assert opts["MODEL.YOLACT.ATSS_QUALITY"] == "giou"
    with pytest.raises(ValueError, match="unknown assigner"):
        study.assigner_overrides("atss", 256)


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
    assert summary[0]["segm_AP_std"] == 0.0


def test_study_runs_every_assigner_end_to_end(tmp_path):
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MAYOLACT_CACHE=str(tmp_path / "cache"),
               MAYOLACT_SHAPES_TRAIN_IMAGES="6", MAYOLACT_SHAPES_VAL_IMAGES="3",
               MAYOLACT_SHAPES_SIZE="128", PYTHONWARNINGS="ignore")
    out = tmp_path / "study"
    cmd = [sys.executable, str(REPO / "tools" / "compare_assigners.py"), "--seeds", "1",
           "--output", str(out), "SOLVER.MAX_ITER", "1", "SOLVER.IMS_PER_BATCH", "2",
           "SOLVER.WARMUP_ITERS", "0", "INPUT.YOLACT.SIZE", "128", "DATALOADER.NUM_WORKERS", "0",
           "MODEL.YOLACT.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "5"]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
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
    assert (out / "mask_ap.png").stat().st_size > 1000
    assert (out / "summary.csv").is_file()
