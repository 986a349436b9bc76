"""The assigner study of ``tools/compare_assigners.py`` (Table 2 on your data): every assigner
row trained with one schedule and several seeds, evaluated, summarised, drawn."""
import argparse
import csv
import io
import logging
import os
import statistics
import sys
import time
from pathlib import Path

from detectron2.utils import comm

from mayolact.analysis.plots import save_figure
from mayolact.config import ConfigError, load_config, load_rows, merge_config_row
from mayolact.engine import Trainer
from mayolact.utils.file_io import write_json_atomic, write_text_atomic
from mayolact.utils.logger import default_setup

__all__ = ["ASSIGNERS", "StudyTrainer", "bar_chart", "markdown", "row_config", "run_one",
           "run_study", "summarise"]

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[4]
DEFAULT_BASE = str(REPO / "configs" / "shapes" / "yolact_shapes_study.yaml")
ROWS_DIR = REPO / "configs" / "rows"
STUDY_ROWS = str(ROWS_DIR / "compare_assigners.yaml")
ASSIGNER_ROWS = str(ROWS_DIR / "assigners.yaml")
ASSIGNERS = list(load_rows(STUDY_ROWS))
METRICS = ["AP", "AP50", "AP75", "APs", "APm", "APl"]


def row_config(base_config, assigner, opts=()):
    """The base config with ``opts``, then the assigner's row merged over them."""
    rows = load_rows(STUDY_ROWS)
    if assigner not in rows:
        raise ValueError(f"unknown assigner {assigner!r}; choose from {list(rows)}")
    cfg = load_config(base_config, list(opts))
    return merge_config_row(cfg, ASSIGNER_ROWS, rows[assigner]["assigner"])


class StudyTrainer(Trainer):
    """Evaluation is done once per run, by :func:`run_one`, not also by the trainer's hook; each
    run trains afresh (the study has no ``--resume``)."""

    eval_after_train = False
    resume_hint = "tools/compare_assigners.py trains every run afresh: run it again"


def run_one(base_config, assigner, seed, output, opts):
    """Train and evaluate one (assigner, seed) run in ``output/<assigner>_seed<seed>``; returns
    its row of metrics."""
    out_dir = os.path.join(output, f"{assigner}_seed{seed}")
    cfg = row_config(base_config, assigner, opts)
    # Every run of the study trains afresh: a rerun replaces that run's checkpoints.
    cfg.merge_from_list(["SEED", str(seed), "OUTPUT_DIR", out_dir,
                         "SOLVER.YOLACT.OVERWRITE_CHECKPOINTS", "True"])
    cfg.freeze()
    os.makedirs(out_dir, exist_ok=True)
    start = time.perf_counter()
    trainer = StudyTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    train_min = (time.perf_counter() - start) / 60
    results = Trainer.test(cfg, trainer.model)
    row = {"assigner": assigner, "seed": seed, "train_min": train_min}
    for task in ("segm", "bbox"):
        for m in METRICS:
            row[f"{task}_{m}"] = results.get(task, {}).get(m, float("nan"))
        row[f"{task}_oLRP"] = results.get(task, {}).get("oLRP", float("nan"))
    return row


def summarise(rows):
    """Mean and standard deviation per assigner of every metric column (the std of a single run
    is None: one seed says nothing about the spread)."""
    keys = [k for k in rows[0] if k not in ("assigner", "seed")]
    out = []
    for a in ASSIGNERS:
        runs = [r for r in rows if r["assigner"] == a]
        if not runs:
            continue
        s = {"assigner": a, "runs": len(runs)}
        for k in keys:
            vals = [r[k] for r in runs]
            s[k] = statistics.mean(vals)
            s[k + "_std"] = statistics.stdev(vals) if len(vals) > 1 else None
        out.append(s)
    return out


def write_csv(path, rows):
    text = io.StringIO()
    w = csv.DictWriter(text, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    write_text_atomic(path, text.getvalue())


def markdown(summary, title):
    cols = [("segm", m) for m in METRICS] + [("segm", "oLRP"), ("bbox", "AP")]
    lines = [title, "", "| assigner | runs | " + " | ".join(
        f"mask {m}" if t == "segm" else "box AP" for t, m in cols) + " |",
             "|---|---:|" + "---:|" * len(cols)]
    for s in summary:
        cells = [f"{s[f'{t}_{m}']:.1f}" + ("" if s[f"{t}_{m}_std"] is None
                                            else f" ± {s[f'{t}_{m}_std']:.1f}") for t, m in cols]
        lines.append(f"| {s['assigner']} | {s['runs']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def bar_chart(summary, path):
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = [s["assigner"] for s in summary]
    stds = [s["segm_AP_std"] for s in summary]
    spread = all(v is not None for v in stds)  # error bars only where there are several seeds
    ax.bar(names, [s["segm_AP"] for s in summary], yerr=stds if spread else None,
           capsize=4, color=["#999999", "#4c72b0", "#55a868", "#8172b2", "#c44e52"][: len(names)])
    ax.set_ylim(bottom=0)  # AP is never negative; all-zero bars would otherwise centre on 0
    ax.set_ylabel("mask AP")
    ax.set_title("Assigners (mean ± std over seeds)" if spread else "Assigners (one seed)")
    save_figure(fig, path, dpi=120)


def run_study(args) -> int:
    """Run the study of the tool's parsed arguments; returns the exit status."""
    try:
        base = load_config(args.config_file, args.opts)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    assigners = args.assigners or ASSIGNERS
    unknown = [a for a in assigners if a not in ASSIGNERS]
    if unknown:
        print(f"error: --assigners {unknown}: not rows of {STUDY_ROWS} ({ASSIGNERS})",
              file=sys.stderr)
        return 2
    base.OUTPUT_DIR = args.output
    default_setup(base, argparse.Namespace(config_file=args.config_file, opts=args.opts,
                                           eval_only=False))
    os.makedirs(args.output, exist_ok=True)
    rows_path = os.path.join(args.output, "results.csv")
    rows = []
    for seed in range(args.seeds):
        for a in assigners:
            logger.info("=== %s, seed %d ===", a, seed)
            rows.append(run_one(args.config_file, a, seed, args.output, args.opts))
            write_csv(rows_path, rows)  # keep what is done if a later run fails
    if not comm.is_main_process():
        return 0
    summary = summarise(rows)
    write_csv(os.path.join(args.output, "summary.csv"), summary)
    title = (f"Assigner study: {base.DATASETS.TRAIN[0]} -> {base.DATASETS.TEST[0]}, "
             f"{base.SOLVER.MAX_ITER} iterations x {base.SOLVER.IMS_PER_BATCH} images, "
             f"{args.seeds} seed(s), input {base.INPUT.YOLACT.SIZE}")
    md = markdown(summary, title)
    write_text_atomic(os.path.join(args.output, "summary.md"), md)
    bar_chart(summary, os.path.join(args.output, "mask_ap.png"))
    print(md)
    write_json_atomic(os.path.join(args.output, "summary.json"), summary, indent=1)
    return 0
