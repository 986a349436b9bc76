"""Up-front checks: what would otherwise fail hours into a run fails before the model is built.

The tools call :func:`preflight` on the config before training, evaluating or drawing; the
trainer repeats the cheap ones that concern it (:func:`check_output_dir` when it resumes or
starts, :func:`check_num_classes` on its training sets).

Every error is a :class:`PreflightError` that names the config key and the dataset or path.
"""
import difflib
import logging
import os
import tempfile
from typing import Iterable

from detectron2.data import DatasetCatalog

from mayolact.checkpoint.checkpointer import find_checkpoints
from mayolact.config.config import resolved_num_classes
from mayolact.data.datasets import dataset_classes
from mayolact.data.validation import AnnotationError, check_registered_datasets

__all__ = [
    "PreflightError",
    "check_datasets_registered",
    "check_num_classes",
    "check_writable",
    "check_output_dir",
    "preflight",
]

logger = logging.getLogger(__name__)


class PreflightError(ValueError):
    """A config or path that cannot work, found before any training or inference."""


def check_datasets_registered(key: str, names: Iterable[str]) -> None:
    """Every dataset of the config key ``key`` (e.g. ``"DATASETS.TEST"``) is registered.

    Raises:
        PreflightError: naming the key, the dataset and the registered names closest to it.
    """
    registered = DatasetCatalog.list()
    for name in names:
        if name not in registered:
            close = difflib.get_close_matches(name, registered, n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise PreflightError(f"{key}: dataset {name!r} is not registered{hint}")


def check_num_classes(cfg, key: str, names: Iterable[str]) -> None:
    """``MODEL.YOLACT.NUM_CLASSES`` (0: the training set's) equals the class count of every
    dataset of ``key``.

    A model with more classes than its test set predicts ids the evaluator cannot map back; one
    with fewer cannot learn some classes of its training set. The class lists come from the
    metadata or, for a COCO json not loaded yet, from its ``categories``
    (:func:`mayolact.data.datasets.dataset_classes`); a dataset with neither is not checked.

    Args:
        cfg: the run's config.
        key (str): the config key the datasets come from, for the message.
        names: registered dataset names.

    Raises:
        PreflightError: naming ``MODEL.YOLACT.NUM_CLASSES``, the key and the dataset (or the
            json that cannot be read).
    """
    names = list(names)
    if not names:
        return
    try:
        expected = resolved_num_classes(cfg)
        lists = [(name, dataset_classes(name)) for name in names]
    except ValueError as e:
        raise PreflightError(str(e)) from e
    given = cfg.MODEL.YOLACT.NUM_CLASSES
    value = f"{given}" if given > 0 else f"0 (the training set's {expected})"
    for name, classes in lists:
        if classes is None:
            logger.debug("%s: no class list in its metadata; NUM_CLASSES not checked", name)
            continue
        if len(classes) != expected:
            shown = ", ".join(map(str, classes[:5])) + (", ..." if len(classes) > 5 else "")
            raise PreflightError(
                f"MODEL.YOLACT.NUM_CLASSES is {value}, but {key} dataset {name!r} has "
                f"{len(classes)} classes ({shown}); set MODEL.YOLACT.NUM_CLASSES {len(classes)}"
            )


def check_writable(path: str, what: str) -> None:
    """``path`` is a folder that exists and can be written, or one that can be created.

    Nothing is created: the nearest existing folder above a missing ``path`` is probed with a
    temporary file, which is removed at once.

    Args:
        path (str): the folder.
        what (str): what it is, for the message (e.g. ``"OUTPUT_DIR"``, ``"--output"``).

    Raises:
        PreflightError: naming ``what``, ``path`` and the reason.
    """
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise PreflightError(f"{what} {path}: {probe} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        raise PreflightError(f"{what} {path}: cannot write in {probe} ({e.strerror or e})") from e


def check_output_dir(cfg, resume: bool) -> None:
    """A training run without ``--resume`` must not start over the checkpoints of another.

    Args:
        cfg: the run's config (``OUTPUT_DIR``, ``SOLVER.YOLACT.OVERWRITE_CHECKPOINTS``).
        resume (bool): the run continues the one in ``OUTPUT_DIR``.

    Raises:
        PreflightError: naming the folder, its newest checkpoints and the two ways on.
    """
    if resume:
        return
    found = find_checkpoints(cfg.OUTPUT_DIR)
    if not found:
        return
    names = ", ".join(os.path.basename(p) for p in found[:3]) + (", ..." if len(found) > 3 else "")
    if cfg.SOLVER.YOLACT.OVERWRITE_CHECKPOINTS:
        logger.warning(
            "OUTPUT_DIR %s holds checkpoints (%s); this new run overwrites those of the same name "
            "(SOLVER.YOLACT.OVERWRITE_CHECKPOINTS)", cfg.OUTPUT_DIR, names
        )
        return
    raise PreflightError(
        f"OUTPUT_DIR {cfg.OUTPUT_DIR} already holds checkpoints of a run ({names}). Continue that "
        "run with --resume, or start a new one over it with SOLVER.YOLACT.OVERWRITE_CHECKPOINTS "
        "True (or choose another OUTPUT_DIR)"
    )


def preflight(cfg, *, train: bool, resume: bool = False) -> None:
    """The checks of a run of ``cfg``, cheapest first.

    * the datasets it uses are registered (``DATASETS.TEST``, and ``DATASETS.TRAIN`` to train);
    * ``OUTPUT_DIR`` can be written;
    * to train: ``OUTPUT_DIR`` holds no other run's checkpoints unless resuming or overwriting
      (:func:`check_output_dir`);
    * ``MODEL.YOLACT.NUM_CLASSES`` matches every dataset it uses (:func:`check_num_classes`);
    * every annotation and image file of the COCO-json datasets it uses is valid
      (:func:`mayolact.data.validation.check_registered_datasets`: seconds, or a cached verdict).

    Args:
        cfg: the run's config.
        train (bool): the run trains (otherwise it only evaluates).
        resume (bool): the run resumes the one in ``OUTPUT_DIR``.

    Raises:
        PreflightError: the first problem found; for annotations that cannot be used or
            missing image files, each of them (file, image, annotation id, field, reason).
    """
    used = [("DATASETS.TRAIN", cfg.DATASETS.TRAIN)] if train else []
    used.append(("DATASETS.TEST", cfg.DATASETS.TEST))
    for key, names in used:
        check_datasets_registered(key, names)
    check_writable(cfg.OUTPUT_DIR, "OUTPUT_DIR")
    if train:
        check_output_dir(cfg, resume)
    for key, names in used:
        check_num_classes(cfg, key, names)
    for key, names in used:
        try:
            check_registered_datasets(names, for_evaluation=key == "DATASETS.TEST")
        except (AnnotationError, FileNotFoundError) as e:
            raise PreflightError(f"{key}: {e}") from e
