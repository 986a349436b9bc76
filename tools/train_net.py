#!/usr/bin/env python
"""Train and evaluate YOLACT / maYOLACT with Detectron2.

The standard Detectron2 project script: ``DefaultTrainer`` with YOLACT's mapper, optimizer (global
gradient clip), epoch schedules and COCO AP + oLRP evaluation (``mayolact.engine.Trainer``).

Examples::

    python tools/train_net.py \
        --config-file configs/COCO-InstanceSegmentation/mayolact_R_50_FPN_550.yaml \
        --num-gpus 4
    python tools/train_net.py --config-file <cfg> --eval-only MODEL.WEIGHTS output/model_final.pth
    python tools/train_net.py \
        --config-file configs/quick_schedules/yolact_R_50_FPN_quick_atss_maiou.yaml \
        MODEL.DEVICE cpu

Before anything is built, the config is checked once, in the launcher
(``mayolact.engine.checks.preflight``: datasets registered, NUM_CLASSES against the datasets,
MODEL.WEIGHTS readable, the config's values, OUTPUT_DIR writable and, to train, not in use by a
live run and free of another run's checkpoints unless ``--resume`` or
``SOLVER.YOLACT.OVERWRITE_CHECKPOINTS True``); the workers' trainers skip them. A training run
holds ``OUTPUT_DIR/run.lock`` until it ends (``mayolact.engine.run_lock``).

Exit status: 0 when done; 2 for a bad config, a failed check or a weights file that cannot be
used (unreadable, damaged, holding code, untrained heads for ``--eval-only``; one line on stderr);
1 when a checkpoint could not be written (a full disk; the previous ones are intact); 143 (SIGTERM)
or 130 (SIGINT) when a signal stopped training after a checkpoint (continue with ``--resume``).
"""
import argparse
import contextlib
import signal
import sys

# mayolact, torch and Detectron2 are imported in the functions: --help needs none of them.


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults after each option's help; the examples as written."""


def training_argument_parser(description: str = "", epilog: str = "") -> argparse.ArgumentParser:
    """The options of Detectron2's ``default_argument_parser``, with help for each.

    Args:
        description: the tool's one-line description.
        epilog: examples shown after the options.

    Returns:
        argparse.ArgumentParser: parse with it, then call :func:`finish_training_args`.
    """
    p = argparse.ArgumentParser(description=description, epilog=epilog,
                                formatter_class=_HelpFormatter)
    p.add_argument("--config-file", default="", metavar="FILE", help="path to a yaml config")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in OUTPUT_DIR from its last checkpoint "
                        "(Detectron2's DefaultTrainer.resume_or_load)")
    p.add_argument("--eval-only", action="store_true",
                   help="evaluate MODEL.WEIGHTS on DATASETS.TEST, no training")
    p.add_argument("--num-gpus", type=int, default=1,
                   help="processes per machine (GPUs; on a CPU machine, CPU processes over gloo)")
    p.add_argument("--num-machines", type=int, default=1, help="total number of machines")
    p.add_argument("--machine-rank", type=int, default=0,
                   help="the rank of this machine (unique per machine)")
    p.add_argument("--dist-url", default=None,
                   help="initialisation URL of torch.distributed; 'auto' picks a free local port "
                        "(None: Detectron2's default, a local port derived from the user id)")
    p.add_argument("opts", default=None, nargs=argparse.REMAINDER,
                   help="config overrides at the end of the command: KEY VALUE pairs, e.g. "
                        "SOLVER.MAX_ITER 100 MODEL.DEVICE cpu")
    return p


def finish_training_args(args: argparse.Namespace) -> argparse.Namespace:
    """Fill in what :func:`training_argument_parser` leaves open: Detectron2's ``--dist-url``
    default (imports Detectron2)."""
    if args.dist_url is None:
        from detectron2.engine import default_argument_parser

        args.dist_url = default_argument_parser().get_default("dist_url")
    return args



def setup(args):
    """Create the config from ``args`` and run Detectron2's default setup (logging, output dir)
    with the project's loggers (checkpoints, stops, checks, the oLRP tables) in the same log."""
    from mayolact.config import load_config
    from mayolact.utils.logger import default_setup

    cfg = load_config(args.config_file, args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    """Train, or evaluate with ``--eval-only``: the function each process runs (:func:`cli`
    checks the run first, once, in the launcher)."""
    from detectron2.evaluation import verify_results
    from detectron2.utils import comm

    from mayolact.checkpoint import YOLACTCheckpointer
    from mayolact.config import load_config
    from mayolact.engine import Trainer
    from mayolact.engine.run_lock import RunLock
    from mayolact.modeling.optimize import optimize_if_configured

    if args.eval_only:
        cfg = setup(args)
        model = Trainer.build_model(cfg)
        # inference=True: weights that leave the heads untrained (ImageNet) are refused.
        YOLACTCheckpointer.from_config(
            cfg, model, save_dir=cfg.OUTPUT_DIR, inference=True
        ).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        optimize_if_configured(cfg, model)  # only inference from here: the rewrites, by default
        res = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
        return res

    # One run per OUTPUT_DIR, held by the process that writes the checkpoints from before its
    # setup writes anything there (config.yaml, log.txt) until it ends.
    out = load_config(args.config_file, args.opts).OUTPUT_DIR
    with RunLock(out) if comm.is_main_process() else contextlib.nullcontext():
        cfg = setup(args)
        trainer = Trainer(cfg, checked=True)
        trainer.resume_or_load(resume=args.resume)
        return trainer.train()


def cli(argv=None):
    description, examples = __doc__.split("Examples::")
    args = training_argument_parser(description.split("\n")[0], "examples:" + examples
                                    ).parse_args(argv)
    from detectron2.engine import launch
    from torch.multiprocessing import ProcessExitedException

    from mayolact.checkpoint import CheckpointError
    from mayolact.config import ConfigError, load_config
    from mayolact.engine.checks import PreflightError, preflight
    from mayolact.engine.hooks import STOP_SIGNALS, forward_signals_to_workers

    args = finish_training_args(args)
    print("Command Line Args:", args)
    try:
        # Fail here, in seconds and once, not in each worker after building the model.
        cfg = load_config(args.config_file, args.opts)
        preflight(cfg, train=not args.eval_only, resume=args.resume)
        multi = args.num_gpus * args.num_machines > 1
        # The launcher of workers passes SIGTERM / SIGINT on and waits for their checkpoint.
        with forward_signals_to_workers() if multi else contextlib.nullcontext():
            return launch(
                main,
                args.num_gpus,
                num_machines=args.num_machines,
                machine_rank=args.machine_rank,
                dist_url=args.dist_url,
                args=(args,),
            )
    except (ConfigError, PreflightError, CheckpointError) as e:
        # Once: no logger is set up yet, or (a weights file that cannot be used) it has not
        # logged this error.
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except ProcessExitedException as e:
        # A worker that stopped on a signal (after its checkpoint: 128 + signal; before training
        # began: killed by it) ends the launcher with the same status, without a traceback.
        stopped = {128 + s: s for s in STOP_SIGNALS} | {-s: s for s in STOP_SIGNALS}
        if e.exit_code not in stopped:
            raise
        signum = stopped[e.exit_code]
        print(f"training stopped by {signal.Signals(signum).name}; continue it with --resume",
              file=sys.stderr)
        sys.exit(128 + signum)


if __name__ == "__main__":
    cli()
