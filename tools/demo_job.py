#!/usr/bin/env python
"""The main job (``make demo``): train, evaluate and draw maYOLACT on the built-in shapes set.

1. trains ``configs/shapes/mayolact_shapes_demo.yaml`` (a CPU-sized maYOLACT: ATSS w. maIoU, CARAFE
   FPN, DCNv2, two anchors per location, cosine schedule) from scratch on ``mayolact_shapes_train``,
   logging losses, speed and ETA;
2. evaluates on ``mayolact_shapes_val`` with COCOEvaluator (bbox and segm AP) and oLRP, logging the
   tables (console and ``log.txt``) and writing ``demo_summary.json`` beside Detectron2's
   per-iteration ``metrics.json``;
3. draws the validation predictions with Detectron2's Visualizer into ``<output>/vis/``.

Everything lands in ``--output`` (default ``output/demo``). Extra arguments are config overrides.
"""
import argparse
import logging
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(REPO, "configs", "shapes", "mayolact_shapes_demo.yaml")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config-file", default=DEFAULT_CONFIG,
                   help="config to train (default: configs/shapes/mayolact_shapes_demo.yaml)")
    p.add_argument("--output", default="output/demo", help="output folder")
    p.add_argument("--num-vis", type=int, default=12, help="validation images to draw")
    p.add_argument("--eval-only", action="store_true",
                   help="skip training; use MODEL.WEIGHTS or the last run")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides (KEY VALUE ...)")
    args = p.parse_args(argv)
    # After parsing: --help and usage errors need none of these.
    from detectron2.data import DatasetCatalog

    from mayolact.checkpoint.checkpointer import YOLACTCheckpointer
    from mayolact.config import ConfigError, load_config
    from mayolact.engine import Trainer
    from mayolact.engine.demo import Demo
    from mayolact.modeling.optimize import optimize_if_configured
    from mayolact.utils.file_io import write_json_atomic
    from mayolact.utils.logger import default_setup

    class DemoTrainer(Trainer):
        """The project's trainer without the evaluation hook: the job evaluates once, itself, so
        that training and evaluation are timed apart."""

        eval_after_train = False

    try:
        # The demo trains afresh each time: a rerun replaces the previous demo's checkpoints.
        fresh = ["OUTPUT_DIR", args.output, "SOLVER.YOLACT.OVERWRITE_CHECKPOINTS", "True"]
        cfg = load_config(args.config_file, fresh + list(args.opts))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cfg.freeze()
    # Detectron2's setup and the project's loggers: one log.txt with the oLRP tables too.
    default_setup(cfg, argparse.Namespace(config_file=args.config_file, opts=args.opts,
                                          eval_only=False))
    logger = logging.getLogger("mayolact.demo")

    start = time.perf_counter()
    final = os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
    if args.eval_only:
        model = Trainer.build_model(cfg)
        YOLACTCheckpointer.from_config(cfg, model).load(cfg.MODEL.WEIGHTS or final)
    else:
        for name in cfg.DATASETS.TRAIN + cfg.DATASETS.TEST:
            logger.info("dataset %s: %d images", name, len(DatasetCatalog.get(name)))
        trainer = DemoTrainer(cfg)
        trainer.resume_or_load(resume=False)
        trainer.train()
        model = trainer.model
    train_time = time.perf_counter() - start

    optimize_if_configured(cfg, model)  # only inference from here: the rewrites, by default
    results = Trainer.test(cfg, model)
    eval_time = time.perf_counter() - start - train_time

    cfg_vis = cfg.clone()
    cfg_vis.defrost()
    cfg_vis.MODEL.WEIGHTS = final if not args.eval_only else (cfg.MODEL.WEIGHTS or final)
    cfg_vis.freeze()
    demo = Demo(cfg_vis, metadata_name=cfg.DATASETS.TEST[0], confidence_threshold=0.3)
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
    # Beside Detectron2's metrics.json (one line per logged iteration), which stays as it is.
    summary_file = os.path.join(cfg.OUTPUT_DIR, "demo_summary.json")
    write_json_atomic(summary_file, summary, indent=2)
    segm = results.get("segm", {})
    print(f"\nmaYOLACT demo: mask AP {segm.get('AP', float('nan')):.1f}, "
          f"box AP {results.get('bbox', {}).get('AP', float('nan')):.1f}; "
          f"trained in {train_time / 60:.1f} min, "
          f"evaluated in {eval_time:.0f} s; drawings in {vis_dir}, results in {summary_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
