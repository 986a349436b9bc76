"""The assigner study of ``tools/compare_assigners.py`` (Table 2 on your data): every assigner
row trained with one schedule and the same seeds, evaluated (COCO AP, oLRP, AP by GT MOB range),
and compared **in pairs**.

Pairing. For a seed ``s`` every assigner starts from the same initial weights and sees the same
images in the same order with the same augmentation draws, so that the difference of two rows at
one seed is the effect of the assigner, not of the draw:

* the runs use the deterministic mode (``SOLVER.YOLACT.DETERMINISTIC``,
  :mod:`mayolact.utils.determinism`): the data stream is seeded from ``SEED`` alone;
* the initial weights of every tensor a row's model shares (by name and shape) with the base
  config's model are copied from that model, built with seed ``s`` (:func:`reference_weights`);
  the ATSS rows have the base's architecture, so all of their tensors are the same; the fixed-IoU
  row's class / box / coefficient convolutions have three anchors per location, and only they
  start from their own draw;
* the global RNGs are seeded again with ``s`` just before training.

Resuming. Each run ends by writing ``<output>/<assigner>_seed<s>/result.json`` atomically, after
its evaluation: a run with that file is complete and is never run again; a run without it (killed
part-way) starts afresh. The file records a digest of the run's config, and a result of another
config in the same folder stops the study with an error naming it. The report is rewritten after
every run.

Report: per assigner the mean and standard deviation over seeds; per pair (``baseline`` of a row of
``configs/rows/compare_assigners.yaml``: maIoU - IoU, IoU - fixed IoU, ...) the mean paired
difference with its 95% confidence interval (Student's t over the seeds both rows completed) and
the number of seeds a +1 AP difference would need at that spread; all of it for mask AP, AP50,
AP75, box AP, oLRP and mask AP per MOB range; tables (``summary.md``, ``summary.csv``,
``paired.csv``, ``results.csv``, ``summary.json``) and one figure (``mask_ap.png``).
"""
import argparse
import csv
import hashlib
import io
import json
import logging
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng

from mayolact.analysis.plots import save_figure
from mayolact.config import ConfigError, load_config, load_rows, merge_config_row
from mayolact.engine import Trainer
from mayolact.evaluation.mob_ranges import DEFAULT_MOB_EDGES
from mayolact.utils.determinism import configure_determinism
from mayolact.utils.file_io import write_json_atomic, write_text_atomic
from mayolact.utils.logger import default_setup

__all__ = ["ASSIGNERS", "RESULT_FILE", "StudyTrainer", "config_digest", "figure", "load_result",
           "markdown", "paired_differences", "prepare_run", "reference_weights", "row_config",
           "run_one", "run_study", "seeds_to_resolve", "share_initial_weights", "summarise"]

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[4]
DEFAULT_BASE = str(REPO / "configs" / "shapes" / "yolact_shapes_study.yaml")
ROWS_DIR = REPO / "configs" / "rows"
STUDY_ROWS = str(ROWS_DIR / "compare_assigners.yaml")
ASSIGNER_ROWS = str(ROWS_DIR / "assigners.yaml")
ASSIGNERS = list(load_rows(STUDY_ROWS))
METRICS = ["AP", "AP50", "AP75", "APs", "APm", "APl"]
#: The per-run file whose presence marks a completed run (written last, atomically).
RESULT_FILE = "result.json"


def row_config(base_config, assigner, opts=()):
    """The base config with ``opts``, then the assigner's row merged over them."""
    rows = load_rows(STUDY_ROWS)
    if assigner not in rows:
        raise ValueError(f"unknown assigner {assigner!r}; choose from {list(rows)}")
    cfg = load_config(base_config, list(opts))
    return merge_config_row(cfg, ASSIGNER_ROWS, rows[assigner]["assigner"])


def baselines() -> Dict[str, str]:
    """row -> the row it is compared with (the ``baseline`` of ``compare_assigners.yaml``)."""
    return {name: row["baseline"] for name, row in load_rows(STUDY_ROWS).items()
            if row.get("baseline")}


def run_config(base_config, assigner, seed, output, opts):
    """The frozen config of one run: the row's, with the seed, its folder, the deterministic
    mode and (when the base has none) the default MOB ranges."""
    cfg = row_config(base_config, assigner, opts)
    if not cfg.TEST.YOLACT.MOB_RANGES:
        cfg.TEST.YOLACT.MOB_RANGES = list(DEFAULT_MOB_EDGES)
    # Every run of the study trains afresh: a rerun replaces a killed run's checkpoints.
    cfg.merge_from_list(["SEED", str(seed), "OUTPUT_DIR", run_dir(output, assigner, seed),
                         "SOLVER.YOLACT.OVERWRITE_CHECKPOINTS", "True",
                         "SOLVER.YOLACT.DETERMINISTIC", "True"])
    cfg.freeze()
    return cfg


def run_dir(output, assigner, seed) -> str:
    return os.path.join(output, f"{assigner}_seed{seed}")


def _flatten(node, prefix: str = "") -> Dict:
    out = {}
    for k, v in node.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def config_digest(cfg) -> str:
    """A digest of what a run's config sets apart from the defaults, without its seed and folder:
    equal for the runs of one study, and unchanged by keys a later version adds."""
    from detectron2.config import get_cfg

    from mayolact.config import add_mayolact_config

    defaults = get_cfg()
    add_mayolact_config(defaults)
    defaults = _flatten(defaults)
    changed = sorted((k, repr(v)) for k, v in _flatten(cfg).items()
                     if k not in ("SEED", "OUTPUT_DIR") and (k not in defaults or defaults[k] != v))
    return hashlib.sha1(repr(changed).encode()).hexdigest()[:16]


def load_result(path) -> Optional[dict]:
    """The content of a run's ``result.json``, or None when the run is not complete.

    Raises:
        ValueError: naming the file, when it is not a result of this tool.
    """
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            result = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid json ({e}); delete it to run that seed again") from e
    if not isinstance(result, dict) or not {"row", "config_digest"} <= set(result):
        raise ValueError(f"{path}: not a result of tools/compare_assigners.py (needs 'row' and "
                         "'config_digest'); delete it to run that seed again")
    return result


_REFERENCE: Dict = {}


def reference_weights(cfg, seed: int) -> Dict:
    """The initial weights of seed ``seed``: those of ``cfg``'s model built after seeding the RNGs
    with it (cached per config and seed)."""
    key = (config_digest(cfg), seed)
    if key not in _REFERENCE:
        seed_all_rng(seed)
        model = Trainer.build_model(cfg)
        _REFERENCE.clear()  # one reference at a time: a study runs its seeds in order
        _REFERENCE[key] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return _REFERENCE[key]


def share_initial_weights(model, reference: Dict) -> List[str]:
    """Copy into ``model`` every tensor of ``reference`` with the same name and shape.

    Returns:
        the names of the model's tensors that were not copied (other shape, or absent).
    """
    state = model.state_dict()
    shared = {k: v for k, v in reference.items() if k in state and state[k].shape == v.shape}
    model.load_state_dict(shared, strict=False)
    return sorted(k for k in state if k not in shared)


class StudyTrainer(Trainer):
    """Evaluation is done once per run, by :func:`run_one`, not also by the trainer's hook; each
    run trains afresh (the study has no ``--resume``)."""

    eval_after_train = False
    resume_hint = "tools/compare_assigners.py trains every run afresh: run it again"


def _finite_or_none(value):
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def prepare_run(base_config, assigner, seed, output, opts, reference_cfg) -> StudyTrainer:
    """The trainer of one (assigner, seed) run, paired with the other rows of the seed: shared
    initial weights, the data stream of the seed, the RNGs seeded again just before training."""
    cfg = run_config(base_config, assigner, seed, output, opts)
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    reference = reference_weights(reference_cfg, seed)
    seed_all_rng(seed + comm.get_rank())
    configure_determinism(cfg)
    trainer = StudyTrainer(cfg)
    own = share_initial_weights(trainer.model, reference)
    logger.info("Initial weights of seed %d: %s", seed,
                "all tensors shared with the other rows" if not own else
                f"shared but {len(own)} tensors of another shape ({', '.join(own)})")
    trainer.resume_or_load(resume=False)
    seed_all_rng(seed + comm.get_rank())  # the training's own draws start alike for every row
    return trainer


def run_one(base_config, assigner, seed, output, opts, reference_cfg):
    """Train and evaluate one (assigner, seed) run in ``output/<assigner>_seed<seed>``, write its
    ``result.json`` last and return its row of metrics."""
    start = time.perf_counter()
    trainer = prepare_run(base_config, assigner, seed, output, opts, reference_cfg)
    cfg = trainer.cfg
    trainer.train()
    train_min = (time.perf_counter() - start) / 60
    results = Trainer.test(cfg, trainer.model)
    row = {"assigner": assigner, "seed": seed, "train_min": round(train_min, 2),
           "eval_s": round((time.perf_counter() - start) - 60 * train_min, 1)}
    for task in ("segm", "bbox"):
        for name, value in results.get(task, {}).items():
            if name in METRICS or name == "oLRP" or "-mob[" in name:
                row[f"{task}_{name}"] = _finite_or_none(value)
    if comm.is_main_process():
        write_json_atomic(os.path.join(cfg.OUTPUT_DIR, RESULT_FILE), {
            "row": row, "config_digest": config_digest(cfg),
            "results": {t: {k: _finite_or_none(v) for k, v in m.items()}
                        for t, m in results.items()}}, indent=1)
    return row


# ----------------------------------------------------------------------------------- report
def metric_columns(rows) -> List[str]:
    """The metric columns of the rows, in the order of the first row that has each."""
    cols = []
    for r in rows:
        cols += [k for k in r if k not in ("assigner", "seed") and k not in cols]
    return cols


def _values(runs, key) -> List[float]:
    return [r[key] for r in runs if r.get(key) is not None]


def summarise(rows):
    """Mean and standard deviation per assigner of every metric column (the std of a single run
    is None: one seed says nothing about the spread)."""
    keys = metric_columns(rows)
    out = []
    for a in ASSIGNERS:
        runs = [r for r in rows if r["assigner"] == a]
        if not runs:
            continue
        s = {"assigner": a, "runs": len(runs)}
        for k in keys:
            vals = _values(runs, k)
            s[k] = statistics.mean(vals) if vals else None
            s[k + "_std"] = statistics.stdev(vals) if len(vals) > 1 else None
        out.append(s)
    return out


def _t_quantile(q: float, dof: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(q, dof))


def seeds_to_resolve(sd: Optional[float], delta: float = 1.0, power: float = 0.8,
                     alpha: float = 0.05, limit: int = 10000) -> Optional[int]:
    """Seeds a paired comparison needs so that a true difference ``delta`` is found significant
    (two-sided paired t-test at ``alpha``) with probability ``power``, at a paired-difference
    standard deviation ``sd``: the smallest n with ``t(1 - alpha/2, n-1) + t(power, n-1) <=
    delta * sqrt(n) / sd``. None when ``sd`` is unknown; 2 when ``sd`` is 0."""
    if sd is None or not math.isfinite(sd):
        return None
    if sd == 0:
        return 2
    for n in range(2, limit + 1):
        need = _t_quantile(1 - alpha / 2, n - 1) + _t_quantile(power, n - 1)
        if delta * math.sqrt(n) / sd >= need:
            return n
    return None


def paired_differences(rows, pairs: Dict[str, str], keys: Sequence[str]):
    """Per (row, baseline) pair and metric: the seeds both completed, the mean difference
    (row - baseline), its standard deviation and 95% confidence interval (Student's t)."""
    by = {(r["assigner"], r["seed"]): r for r in rows}
    out = []
    for a in ASSIGNERS:
        b = pairs.get(a)
        if b is None:
            continue
        seeds = sorted(s for (x, s) in by if x == a and (b, s) in by)
        if not seeds:
            continue
        for k in keys:
            diffs = [by[a, s][k] - by[b, s][k] for s in seeds
                     if by[a, s].get(k) is not None and by[b, s].get(k) is not None]
            n = len(diffs)
            if n == 0:
                continue
            mean = statistics.mean(diffs)
            sd = statistics.stdev(diffs) if n > 1 else None
            half = _t_quantile(0.975, n - 1) * sd / math.sqrt(n) if n > 1 else None
            out.append({"pair": f"{a} - {b}", "row": a, "baseline": b, "metric": k, "n": n,
                        "mean": mean, "sd": sd,
                        "ci_low": None if half is None else mean - half,
                        "ci_high": None if half is None else mean + half,
                        "seeds_for_1ap": seeds_to_resolve(sd)})
    return out


def mob_keys(keys: Sequence[str], task: str = "segm", metric: str = "AP") -> List[str]:
    """The ``<task>_<metric>-mob[lo,hi]`` columns, in range order."""
    return [k for k in keys if k.startswith(f"{task}_{metric}-mob[")]


def _cell(s, key, digits=1):
    if s.get(key) is None:
        return "-"
    std = s.get(key + "_std")
    return f"{s[key]:.{digits}f}" + ("" if std is None else f" ± {std:.{digits}f}")


def _range_name(key: str) -> str:
    return key.split("-", 1)[1]


def markdown(summary, title, paired=None, mob=()):
    """The report: means ± std per assigner, mask AP by MOB range, paired differences."""
    cols = [("segm", m) for m in METRICS] + [("segm", "oLRP"), ("bbox", "AP")]
    lines = [title, "", "| assigner | runs | " + " | ".join(
        f"mask {m}" if t == "segm" else "box AP" for t, m in cols) + " |",
             "|---|---:|" + "---:|" * len(cols)]
    for s in summary:
        lines.append(f"| {s['assigner']} | {s['runs']} | "
                     + " | ".join(_cell(s, f"{t}_{m}") for t, m in cols) + " |")
    if mob:
        lines += ["", "Mask AP by GT mask-over-box range (mean ± std over seeds):", "",
                  "| assigner | mask AP | " + " | ".join(_range_name(k) for k in mob) + " |",
                  "|---|---:|" + "---:|" * len(mob)]
        for s in summary:
            lines.append(f"| {s['assigner']} | {_cell(s, 'segm_AP')} | "
                         + " | ".join(_cell(s, k) for k in mob) + " |")
    if paired:
        lines += ["", "Paired differences (row - baseline, same seeds), mean [95% CI] over the "
                  "seeds both completed; sd: standard deviation of the differences; seeds for "
                  "+1: seeds a paired t-test needs to find a true +1 AP difference with 80% "
                  "power at that sd:", "",
                  "| pair | metric | seeds | mean | 95% CI | sd | seeds for +1 |",
                  "|---|---|---:|---:|---|---:|---:|"]
        for p in paired:
            ci = ("-" if p["ci_low"] is None
                  else f"[{p['ci_low']:+.2f}, {p['ci_high']:+.2f}]")
            sd = "-" if p["sd"] is None else f"{p['sd']:.2f}"
            need = "-" if p["seeds_for_1ap"] is None else str(p["seeds_for_1ap"])
            lines.append(f"| {p['pair']} | {_metric_name(p['metric'])} | {p['n']} | "
                         f"{p['mean']:+.2f} | {ci} | {sd} | {need} |")
    return "\n".join(lines) + "\n"


def _metric_name(key: str) -> str:
    task, metric = key.split("_", 1)
    return ("mask " if task == "segm" else "box ") + metric


def figure(summary, paired, mob, path):
    """One figure: mask AP overall and per MOB range per assigner (mean ± std over seeds), and
    the paired differences of mask AP with their 95% confidence intervals."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    keys = ["segm_AP"] + list(mob)
    labels = ["all"] + [_range_name(k)[len("mob["):-1].replace(",", "-") for k in mob]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6),
                                      gridspec_kw={"width_ratios": [3, 2]})
    colours = {"fixed_iou": "#999999", "atss_iou": "#4c72b0", "atss_giou": "#55a868",
               "atss_diou": "#8172b2", "atss_maiou": "#c44e52"}
    width = 0.8 / max(len(summary), 1)
    spread = all(s.get("segm_AP_std") is not None for s in summary)
    for i, s in enumerate(summary):
        xs = [j + (i - (len(summary) - 1) / 2) * width for j in range(len(keys))]
        means = [s.get(k) or 0.0 for k in keys]
        stds = [s.get(k + "_std") or 0.0 for k in keys] if spread else None
        left.bar(xs, means, width, yerr=stds, capsize=2, label=s["assigner"],
                 color=colours.get(s["assigner"]))
    left.set_xticks(range(len(keys)))
    left.set_xticklabels(labels)
    left.set_xlabel("GT mask-over-box range" if mob else "")
    left.set_ylim(bottom=0)  # AP is never negative; all-zero bars would otherwise centre on 0
    left.set_ylabel("mask AP")
    left.set_title("Mask AP by GT MOB range (mean ± std over seeds)" if spread
                   else "Mask AP by GT MOB range (one seed)")
    left.legend(fontsize=7, ncol=2)
    pairs = sorted({p["pair"] for p in paired or []})
    for i, pair in enumerate(pairs):
        ys, xs, lo, hi = [], [], [], []
        for j, k in enumerate(keys):
            p = next((p for p in paired if p["pair"] == pair and p["metric"] == k), None)
            if p is None:
                continue
            ys.append(j + (i - (len(pairs) - 1) / 2) * 0.8 / max(len(pairs), 1))
            xs.append(p["mean"])
            lo.append(p["mean"] - (p["ci_low"] if p["ci_low"] is not None else p["mean"]))
            hi.append((p["ci_high"] if p["ci_high"] is not None else p["mean"]) - p["mean"])
        right.errorbar(xs, ys, xerr=[lo, hi], fmt="o", capsize=3, label=pair,
                       color=colours.get(pair.split(" - ")[0]))
    right.axvline(0.0, color="black", linewidth=0.8)
    right.set_yticks(range(len(keys)))
    right.set_yticklabels(labels)
    right.set_ylabel("GT MOB range" if mob else "")
    right.invert_yaxis()
    right.set_xlabel("mask AP difference (row - baseline)")
    right.set_title("Paired differences, 95% CI")
    if pairs:
        right.legend(fontsize=7)
    save_figure(fig, path, dpi=100)


def write_csv(path, rows, fields=None):
    """``rows`` (dicts) as a csv file, written atomically; columns ``fields`` or the rows' own."""
    text = io.StringIO()
    w = csv.DictWriter(text, fieldnames=fields or ["assigner", "seed"] + metric_columns(rows))
    w.writeheader()
    w.writerows(rows)
    write_text_atomic(path, text.getvalue())


def write_report(rows, output, title) -> str:
    """Write every table and the figure of the completed ``rows`` into ``output``; returns the
    markdown."""
    summary = summarise(rows)
    keys = metric_columns(rows)
    mob = mob_keys(keys)
    report_keys = [k for k in ("segm_AP", "segm_AP50", "segm_AP75", "bbox_AP", "segm_oLRP")
                   if k in keys] + mob
    paired = paired_differences(rows, baselines(), report_keys)
    write_csv(os.path.join(output, "results.csv"), rows)
    write_csv(os.path.join(output, "summary.csv"), summary, list(summary[0]))
    if paired:
        write_csv(os.path.join(output, "paired.csv"), paired, list(paired[0]))
    md = markdown(summary, title, paired, mob)
    write_text_atomic(os.path.join(output, "summary.md"), md)
    write_json_atomic(os.path.join(output, "summary.json"),
                      {"summary": summary, "paired": paired}, indent=1)
    figure(summary, paired, mob, os.path.join(output, "mask_ap.png"))
    return md


def _collect(output, assigners, seeds, digest) -> List[dict]:
    """Rows of the completed runs among ``assigners`` x ``seeds`` in ``output``.

    Raises:
        ValueError: a result of another config (its digest differs).
    """
    rows = []
    for seed in seeds:
        for a in assigners:
            path = os.path.join(run_dir(output, a, seed), RESULT_FILE)
            result = load_result(path)
            if result is None:
                continue
            if result["config_digest"] != digest:
                raise ValueError(
                    f"{path}: a run of another config (digest {result['config_digest']}, this "
                    f"study's is {digest}): the study's schedule or options changed; use another "
                    "--output, or delete the folder's runs to start over")
            rows.append(result["row"])
    return rows


def run_study(args) -> int:
    """Run (or resume) the study of the tool's parsed arguments; returns the exit status."""
    try:
        base = load_config(args.config_file, args.opts)
        assigners = args.assigners or ASSIGNERS
        unknown = [a for a in assigners if a not in ASSIGNERS]
        if unknown:
            raise ConfigError(f"--assigners {unknown}: not rows of {STUDY_ROWS} ({ASSIGNERS})")
        if args.seeds < 1:
            raise ConfigError(f"--seeds must be >= 1, got {args.seeds}")
        # One digest per row (the rows differ in their assigner keys); checked before training.
        digests = {a: config_digest(run_config(args.config_file, a, 0, args.output, args.opts))
                   for a in assigners}
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    seeds = list(range(args.seeds))
    base.OUTPUT_DIR = args.output
    default_setup(base, argparse.Namespace(config_file=args.config_file, opts=args.opts,
                                           eval_only=False))
    os.makedirs(args.output, exist_ok=True)
    title = (f"Assigner study: {base.DATASETS.TRAIN[0]} -> {base.DATASETS.TEST[0]}, "
             f"{base.SOLVER.MAX_ITER} iterations x {base.SOLVER.IMS_PER_BATCH} images, "
             f"seeds {seeds[0]}-{seeds[-1]}, input {base.INPUT.YOLACT.SIZE}")

    def completed():
        rows = []
        for a in assigners:
            rows += _collect(args.output, [a], seeds, digests[a])
        return sorted(rows, key=lambda r: (r["seed"], assigners.index(r["assigner"])))

    try:
        done = {(r["assigner"], r["seed"]) for r in completed()}
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if done:
        logger.info("Resuming: %d of %d runs are complete and are not run again", len(done),
                    len(assigners) * len(seeds))
    if not getattr(args, "report_only", False):
        for seed in seeds:
            for a in assigners:
                if (a, seed) in done:
                    logger.info("=== %s, seed %d: complete (%s), skipped ===", a, seed,
                                os.path.join(run_dir(args.output, a, seed), RESULT_FILE))
                    continue
                logger.info("=== %s, seed %d ===", a, seed)
                run_one(args.config_file, a, seed, args.output, args.opts, base)
                if comm.is_main_process():
                    write_report(completed(), args.output, title)
    if not comm.is_main_process():
        return 0
    rows = completed()
    if not rows:
        print(f"no completed run in {args.output}", file=sys.stderr)
        return 1
    md = write_report(rows, args.output, title)
    print(md)
    return 0
