"""Up-front checks: what would otherwise fail hours into a run fails before the model is built.

Each run is checked once, by whoever starts it:

* the tools call :func:`preflight` before training, evaluating or drawing (``tools/train_net.py``
  in the launcher, before any worker starts, so a multi-process run fails once, in seconds), and
  build the trainer with ``Trainer(cfg, checked=True)``;
* a :class:`mayolact.engine.trainer.Trainer` built without ``checked`` (by a script of one's own,
  or ``tools/compare_assigners.py``, which trains several runs) runs :func:`preflight` itself: the
  checks that need no resume flag before anything is built, :func:`check_output_dir` in
  ``resume_or_load``.

What only the loaded data can show (a training set without a usable ground truth) is checked
where the data is loaded, by the trainer's ``build_train_dataset``.

Every error is a :class:`PreflightError` that names the config key and the dataset or path.
"""
import logging
import os
import tempfile
from typing import Iterable, Optional

from detectron2.data import DatasetCatalog
from detectron2.utils.file_io import PathManager

from mayolact.checkpoint.checkpointer import find_checkpoints
from mayolact.config.config import resolved_num_classes
from mayolact.data.datasets import dataset_classes, unregistered_message
from mayolact.data.validation import AnnotationError, check_registered_datasets

__all__ = [
    "PreflightError",
    "check_datasets_registered",
    "check_num_classes",
    "check_writable",
    "check_output_dir",
    "check_config",
    "check_weights",
    "preflight",
]

logger = logging.getLogger(__name__)


#: How a config names a dataset of one's own (the end of a "not registered" error).
OWN_DATASET_HINT = ("a COCO-format json of your own is registered by naming it in the config: "
                    "DATASETS.YOLACT.COCO_JSON [[name, json_file, image_root]]")


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
            raise PreflightError(f"{key}: " + unregistered_message(name, OWN_DATASET_HINT))


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


def check_config(cfg, *, train: bool) -> None:
    """The config's values can build the run: found in a second, not after the model is built.

    The parts are built as the run builds them, so that every check they make (an unknown
    ``MODEL.YOLACT.MATCHER``, ``NUM_PROTOTYPES`` 0, a CARAFE kernel that is not odd, ...) applies
    here, with no second copy of the rules: the model on PyTorch's ``meta`` device (no memory
    used, no weights read), the data mapper and, to train, the optimizer, the LR schedule and the
    divergence guard.

    Args:
        cfg: the run's config (not changed).
        train (bool): the run trains (otherwise it only evaluates, draws or exports).

    Raises:
        PreflightError: the value that cannot work, as the part that reads it words it.
    """
    import torch
    from detectron2.modeling import build_model

    from mayolact.data.dataset_mapper import YOLACTDatasetMapper

    dry = cfg.clone()
    dry.defrost()
    dry.MODEL.DEVICE = "meta"
    dry.MODEL.WEIGHTS = ""
    try:
        with torch.device("meta"):
            model = build_model(dry)
        YOLACTDatasetMapper(dry, is_train=train)
        if train:
            # Imported here: the trainer imports this module.
            from mayolact.engine.hooks import DivergenceGuard
            from mayolact.engine.trainer import build_yolact_lr_scheduler, build_yolact_optimizer

            build_yolact_lr_scheduler(dry, build_yolact_optimizer(dry, model))
            DivergenceGuard.from_config(dry)
    except (ValueError, KeyError, AssertionError) as e:
        # KeyError: a name missing from a Detectron2 registry; AssertionError: Detectron2's own
        # config checks.
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        raise PreflightError(f"config: {message}") from e


def check_weights(cfg, resume: bool) -> None:
    """``MODEL.WEIGHTS`` can be read: a local file that exists, or a URI (``torchvision://``,
    ``detectron2://``, ``https://``) that resolves to one, which downloads it now, once, rather
    than in every worker.

    Not checked: an empty ``MODEL.WEIGHTS`` (random initialisation), and a resumed run whose
    ``OUTPUT_DIR`` holds checkpoints (it loads the newest of them instead). What the file holds is
    checked when it is loaded (:mod:`mayolact.checkpoint.checkpointer`).

    Args:
        cfg: the run's config.
        resume (bool): the run continues the one in ``OUTPUT_DIR``.

    Raises:
        PreflightError: naming ``MODEL.WEIGHTS``, the file and, for ``torchvision://`` offline,
            where to put the file.
    """
    weights = cfg.MODEL.WEIGHTS
    if not weights or (resume and find_checkpoints(cfg.OUTPUT_DIR)):
        return
    if "://" not in weights:
        if not os.path.isfile(weights):
            raise PreflightError(f"MODEL.WEIGHTS: {weights}: no such weights file")
        return
    try:
        PathManager.get_local_path(weights)
    except Exception as e:  # offline, HTTP or unknown-scheme errors: the message names the cause
        raise PreflightError(f"MODEL.WEIGHTS: {e}") from None


def preflight(cfg, *, train: bool, resume: Optional[bool] = False) -> None:
    """The checks of a run of ``cfg``, cheapest first.

    * the datasets it uses are registered (``DATASETS.TEST``, and ``DATASETS.TRAIN`` to train);
    * ``OUTPUT_DIR`` can be written;
    * to train: no live run holds ``OUTPUT_DIR``
      (:func:`mayolact.engine.run_lock.check_run_lock`), and it holds no other run's checkpoints
      unless resuming or overwriting (:func:`check_output_dir`);
    * ``MODEL.WEIGHTS`` can be read (:func:`check_weights`);
    * ``MODEL.YOLACT.NUM_CLASSES`` matches every dataset it uses (:func:`check_num_classes`);
    * every annotation and image file of the COCO-json datasets it uses is valid
      (:func:`mayolact.data.validation.check_registered_datasets`: seconds, or a cached verdict);
    * the config's values can build the run (:func:`check_config`).

    Args:
        cfg: the run's config.
        train (bool): the run trains (otherwise it only evaluates).
        resume (bool or None): the run resumes the one in ``OUTPUT_DIR``; None when that is not
            known yet (a ``Trainer`` before ``resume_or_load``): the checks of the output folder
            and of the weights are then left out.

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
        from mayolact.engine.run_lock import check_run_lock  # it builds on this module

        check_run_lock(cfg.OUTPUT_DIR)
    if resume is not None:
        if train:
            check_output_dir(cfg, resume)
        check_weights(cfg, resume)
    for key, names in used:
        check_num_classes(cfg, key, names)
    for key, names in used:
        try:
            check_registered_datasets(names, for_evaluation=key == "DATASETS.TEST")
        except (AnnotationError, FileNotFoundError) as e:
            raise PreflightError(f"{key}: {e}") from e
    check_config(cfg, train=train)
