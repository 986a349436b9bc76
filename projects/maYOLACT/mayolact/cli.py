"""Command-line pieces the tools share, importable without torch or Detectron2.

A tool parses its arguments before it imports anything heavy, so ``--help`` and a mistyped option
answer at once. :func:`training_argument_parser` is for the tools built on Detectron2's
``default_argument_parser`` (``train_net.py``): the same options, names, defaults and meaning
(``tests/test_startup.py`` compares the two parsers), declared here because Detectron2's parser
can only be built after importing torch. Its ``--dist-url`` default is Detectron2's, filled in by
:func:`finish_training_args` once Detectron2 is imported anyway.
"""
import argparse

__all__ = ["training_argument_parser", "finish_training_args"]


def training_argument_parser(description: str = "", epilog: str = "") -> argparse.ArgumentParser:
    """The options of Detectron2's ``default_argument_parser``, with help for each.

    Args:
        description: the tool's one-line description.
        epilog: examples shown after the options.

    Returns:
        argparse.ArgumentParser: parse with it, then call :func:`finish_training_args`.
    """
    p = argparse.ArgumentParser(description=description, epilog=epilog,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
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
                   help="initialisation URL of torch.distributed (default: Detectron2's, a local "
                        "port derived from the user id)")
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
