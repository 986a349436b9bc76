"""One log for a run: the project's loggers next to Detectron2's, and no known third-party noise.

Detectron2's ``default_setup`` gives the ``detectron2`` and ``fvcore`` loggers a console handler
and ``OUTPUT_DIR/log.txt``. The project logs under ``mayolact.*`` (mapper, matcher, backbone,
schedule, the oLRP tables of :mod:`mayolact.evaluation`), which would then reach neither:
:func:`setup_logging` gives ``mayolact`` the same two handlers, in the same format, as Detectron2
projects do for their own package; :func:`default_setup` is Detectron2's plus that.

:func:`filter_known_warnings` (run on ``import mayolact``) silences the deprecation warnings that
importing Detectron2 and fvcore, and running Detectron2's anchor generator, trigger with recent
torch releases, each by its message and the module that issues it, and nothing else.

This module imports neither torch nor Detectron2 at import time.
"""
import logging
import warnings

__all__ = [
    "KNOWN_WARNINGS",
    "KNOWN_LOG_RECORDS",
    "filter_known_warnings",
    "setup_logging",
    "default_setup",
]

#: (message regex, category, issuing module regex) of third-party warnings that say nothing to a
#: user of this project: fvcore and Detectron2 script functions with ``torch.jit.script`` at
#: import time, and Detectron2's ``DefaultAnchorGenerator`` calls ``torch.meshgrid`` without
#: ``indexing`` (its ``"ij"`` default is what it means).
KNOWN_WARNINGS = (
    (r"`torch\.jit\.script` is deprecated", FutureWarning, r"torch\.jit\._script"),
    (r"torch\.meshgrid: in an upcoming release, it will be required to pass the indexing "
     r"argument", UserWarning, r"torch\.functional"),
)


#: (logger, message start) of third-party log records of the same kind: Detectron2's environment
#: report imports ``torch.utils.cpp_extension``, which warns, in torch's own log format, on every
#: machine that has a CUDA folder but no GPU runtime.
KNOWN_LOG_RECORDS = (
    ("torch.utils.cpp_extension", "No CUDA runtime is found"),
)


class _DropRecords(logging.Filter):
    """Drops the records whose (unformatted) message starts with ``start``."""

    def __init__(self, start: str):
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.start)


def filter_known_warnings() -> None:
    """Ignore :data:`KNOWN_WARNINGS` and :data:`KNOWN_LOG_RECORDS` (and only them); harmless to
    call twice."""
    for message, category, module in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    for name, start in KNOWN_LOG_RECORDS:
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropRecords) and f.start == start for f in log.filters):
            log.addFilter(_DropRecords(start))


def setup_logging(output_dir=None, distributed_rank: int = 0, *,
                  with_detectron2: bool = False) -> logging.Logger:
    """Send the ``mayolact`` loggers' INFO lines to the console (main process) and to
    ``output_dir/log.txt`` (``log.txt.rank<N>`` for the others), as Detectron2's own.

    Args:
        output_dir: the run's folder (``OUTPUT_DIR``), or None for the console only.
        distributed_rank: this process's rank.
        with_detectron2: also set up the ``detectron2`` and ``fvcore`` loggers the same way, for
            tools that do not run Detectron2's ``default_setup`` (the demo, the figures).

    Returns:
        the ``mayolact`` logger.
    """
    from detectron2.utils.logger import setup_logger

    if with_detectron2:
        setup_logger(output_dir, distributed_rank, name="fvcore")
        setup_logger(output_dir, distributed_rank)
    return setup_logger(output_dir, distributed_rank, name="mayolact", abbrev_name="mayolact")


def default_setup(cfg, args) -> None:
    """Detectron2's ``default_setup`` (output folder, its loggers, environment, ``config.yaml``,
    the RNGs seeded from ``SEED``) followed by :func:`setup_logging` into the same ``log.txt``
    and, with ``SOLVER.YOLACT.DETERMINISTIC``, the deterministic kernels
    (:mod:`mayolact.utils.determinism`).

    Args:
        cfg: the run's config.
        args: the command-line namespace (``config_file``, ``opts``, ``eval_only``, ...).
    """
    from detectron2.engine import default_setup as d2_default_setup
    from detectron2.utils import comm

    from mayolact.utils.determinism import configure_determinism

    d2_default_setup(cfg, args)
    setup_logging(cfg.OUTPUT_DIR, comm.get_rank())
    configure_determinism(cfg)
