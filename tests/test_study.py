"""tools/compare_assigners.py: every assigner trains and evaluates; tables and chart are written."""
import csv

import pytest

from common import run_tool


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


@pytest.mark.slow
def test_study_runs_every_assigner_end_to_end(tmp_path):
    out = tmp_path / "study"
    proc = run_tool("compare_assigners", [
        "--seeds", "1", "--output", out, "SOLVER.MAX_ITER", "1", "SOLVER.IMS_PER_BATCH", "2",
        "SOLVER.WARMUP_ITERS", "0", "INPUT.YOLACT.SIZE", "128", "DATALOADER.NUM_WORKERS", "0",
        "MODEL.YOLACT.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "5"],
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
    assert (out / "mask_ap.png").stat().st_size > 1000
    assert (out / "summary.csv").is_file()
