"""The main job of ``tools/demo_job.py`` (``make demo``): train, evaluate and draw one model.

1. trains the config (by default ``configs/shapes/mayolact_shapes_demo.yaml``, a CPU-sized
   maYOLACT) from scratch, logging losses, speed and ETA;
2. evaluates on its test set with COCO AP (bbox and segm) and oLRP, logging the tables (console
   and ``log.txt``) and writing ``demo_summary.json`` (strict JSON) beside Detectron2's
   per-iteration ``metrics.json``;
3. draws the first test images' predictions with Detectron2's Visualizer into ``<output>/vis/``.
"""
import argparse
import logging
import os
import sys
import time
from pathlib import Path

from detectron2.data import DatasetCatalog

from mayolact.checkpoint.checkpointer import CheckpointError, YOLACTCheckpointer
from mayolact.config import ConfigError, load_config
from mayolact.engine.checks import PreflightError, preflight
from mayolact.engine.demo import Demo
from mayolact.engine.run_lock import RunLock, RunLockError
from mayolact.engine.trainer import Trainer
from mayolact.modeling.optimize import optimize_if_configured
from mayolact.utils.events import finite_or_none
from mayolact.utils.file_io import write_json_atomic
from mayolact.utils.logger import default_setup

__all__ = ["DemoTrainer", "run_demo_job"]

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[4]


class DemoTrainer(Trainer):
    """The project's trainer without the evaluation hook: the job evaluates once, itself, so that
    training and evaluation are timed apart. The job trains afresh each time (it has no
    ``--resume``), which is what a stopped run is told."""

    eval_after_train = False
    resume_hint = "tools/demo_job.py trains afresh: run it again"


def run_demo_job(args: argparse.Namespace) -> int:
    """Run the job of ``tools/demo_job.py``'s parsed arguments (``config_file``, ``output``,
    ``num_vis``, ``eval_only``, ``confidence_threshold``, ``opts``).

    Returns:
        int: the exit status: 0 when done, 2 for a bad config, a failed check or an unreadable
        weights file (named on stderr).
    """
    try:
        # The demo trains afresh each time: a rerun replaces the previous demo's checkpoints.
        fresh = ["OUTPUT_DIR", args.output, "SOLVER.YOLACT.OVERWRITE_CHECKPOINTS", "True"]
        cfg = load_config(args.config_file, fresh + list(args.opts))
        preflight(cfg, train=not args.eval_only, resume=False)
    except (ConfigError, PreflightError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cfg.freeze()
    if not args.eval_only:
        # One run per folder, before anything is written there: a second demo into the same
        # --output stops, naming this one. Held until the process ends (the kernel releases it).
        try:
            _held = RunLock(cfg.OUTPUT_DIR).acquire()  # noqa: F841  (held, not used)
        except RunLockError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    # Detectron2's setup and the project's loggers: one log.txt with the oLRP tables too.
    default_setup(cfg, argparse.Namespace(config_file=args.config_file, opts=args.opts,
                                          eval_only=args.eval_only))

    start = time.perf_counter()
    final = os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
    weights = (cfg.MODEL.WEIGHTS or final) if args.eval_only else final
    if args.eval_only:
        model = Trainer.build_model(cfg)
        try:
            YOLACTCheckpointer.from_config(cfg, model, inference=True).load(weights)
        except (CheckpointError, FileNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    else:
        for name in cfg.DATASETS.TRAIN + cfg.DATASETS.TEST:
            logger.info("dataset %s: %d images", name, len(DatasetCatalog.get(name)))
        trainer = DemoTrainer(cfg, checked=True)
        trainer.resume_or_load(resume=False)
        trainer.train()
        model = trainer.model
    train_time = time.perf_counter() - start

    optimize_if_configured(cfg, model)  # only inference from here: the rewrites, by default
    results = Trainer.test(cfg, model)
    eval_time = time.perf_counter() - start - train_time

    cfg_vis = cfg.clone()
    cfg_vis.defrost()
    cfg_vis.MODEL.WEIGHTS = weights
    cfg_vis.freeze()
    demo = Demo(cfg_vis, metadata_name=cfg.DATASETS.TEST[0],
                confidence_threshold=args.confidence_threshold)
    vis_dir = os.path.join(cfg.OUTPUT_DIR, "vis")
    os.makedirs(vis_dir, exist_ok=True)
    demo.draw_files([d["file_name"]
                     for d in DatasetCatalog.get(cfg.DATASETS.TEST[0])[: args.num_vis]],
                    vis_dir)

    summary = {
        "config": os.path.relpath(args.config_file, REPO),
        "train_seconds": round(train_time, 1),
        "eval_seconds": round(eval_time, 1),
        "results": {task: dict(v) for task, v in results.items()},
    }
    # Beside Detectron2's metrics.json (one line per logged iteration); AP of a class without a
    # detection is NaN, written as null.
    summary_file = os.path.join(cfg.OUTPUT_DIR, "demo_summary.json")
    write_json_atomic(summary_file, finite_or_none(summary), indent=2)
    segm = results.get("segm", {})
    print(f"\nmaYOLACT demo: mask AP {segm.get('AP', float('nan')):.1f}, "
          f"box AP {results.get('bbox', {}).get('AP', float('nan')):.1f}; "
          f"trained in {train_time / 60:.1f} min, "
          f"evaluated in {eval_time:.0f} s; drawings in {vis_dir}, results in {summary_file}")
    return 0
