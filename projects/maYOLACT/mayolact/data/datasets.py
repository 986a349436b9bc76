"""Dataset registration.

- ``coco_mini_train`` / ``coco_mini_val``: the small COCO subset used by the tests and demos (337
  train2017 and 128 val2017 images of COCO 2017 with their official annotations), read from
  ``$MAYOLACT_COCO_MINI``, else ``<repo>/datasets/coco_mini`` (where ``tools/make_coco_mini.py``
  builds it from a COCO download), else ``<repo>/../shared/data/coco_mini`` (``annotations/
  instances_{train,val}2017.json`` and ``{train,val}2017/`` images). A split is registered only
  when its json exists; otherwise only its metadata is set (COCO's class names) and nothing fails
  until the images are needed, where the error says how to build it (:data:`COCO_MINI_HINT`).
- COCO 2017 itself: Detectron2 registers ``coco_2017_train``, ``coco_2017_val``,
  ``coco_2017_test-dev``, ... when ``detectron2.data.datasets`` is imported
  (``detectron2/data/datasets/builtin.py`` runs ``register_all_coco`` at import time, under
  ``$DETECTRON2_DATASETS``, default ``./datasets``; checked in this install). Set
  ``DETECTRON2_DATASETS`` to the folder that holds ``coco/`` and use those names directly.

- Your own COCO-format sets, named in the config (``DATASETS.YOLACT.COCO_JSON``, a list of
  ``[name, json_file, image_root]``): :func:`register_config_datasets` registers them, so that
  ``DATASETS.TRAIN`` / ``DATASETS.TEST`` and the tools can use the names without a line of Python;
  the figure tool's ``--dataset`` also takes a json path (:func:`dataset_arguments`).

The coco_mini splits and the config's sets are registered as ``register_coco_instances`` would,
except that the annotation ``id`` and ``area`` are kept in the dataset dicts
(``extra_annotation_keys``): the mapper names a malformed annotation by its id and applies mmdet's
``area <= 0`` filter.

The class list of a registered COCO json is known to Detectron2 only once the dataset is loaded
(``load_coco_json`` sets ``thing_classes``); :func:`dataset_metadata` reads it from the json's
``categories`` before that, for drawings and for ``MODEL.YOLACT.NUM_CLASSES``, which
:func:`resolve_num_classes` takes from the training set when it is 0.
"""

import difflib
import json
import logging
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import detectron2.data.datasets  # noqa: F401  (registers detectron2's builtin datasets)
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.coco import load_coco_json

from mayolact.config.config import resolved_num_classes
from mayolact.data.validation import check_coco_json

__all__ = [
    "COCO_MINI_HINT",
    "coco_mini_root",
    "unregistered_message",
    "register_coco_with_ids",
    "register_coco_mini",
    "register_config_datasets",
    "dataset_arguments",
    "read_coco_categories",
    "dataset_metadata",
    "dataset_classes",
    "resolve_num_classes",
    "apply_dataset_config",
]

logger = logging.getLogger(__name__)

# .../<repo>/projects/maYOLACT/mayolact/data/datasets.py -> <repo>
_REPO_ROOT = Path(__file__).resolve().parents[4]

COCO_MINI_SPLITS = {
    "coco_mini_train": ("train2017", "annotations/instances_train2017.json"),
    "coco_mini_val": ("val2017", "annotations/instances_val2017.json"),
}


#: Where coco_mini is looked for when ``$MAYOLACT_COCO_MINI`` is not set, in this order: where
#: ``tools/make_coco_mini.py`` writes it, then the shared data folder beside the repository.
COCO_MINI_DEFAULT_ROOTS = (
    _REPO_ROOT / "datasets" / "coco_mini",
    _REPO_ROOT.parent / "shared" / "data" / "coco_mini",
)

#: How to get coco_mini, in one line: every error about its absence ends with it.
COCO_MINI_HINT = (
    "coco_mini (337 train2017 + 128 val2017 images of COCO 2017) is not on this machine: build it "
    "from your COCO 2017 download with `python tools/make_coco_mini.py --coco /path/to/coco` (or "
    "set $MAYOLACT_COCO_MINI to a copy)"
)


def coco_mini_root() -> Optional[Path]:
    """The coco_mini folder: ``$MAYOLACT_COCO_MINI`` when set, else the first folder of
    :data:`COCO_MINI_DEFAULT_ROOTS` that exists.

    The one lookup of coco_mini (the package, the tools and the tests call it); whether a split is
    usable is decided when it is registered (:func:`register_coco_mini`: its json exists).

    Returns:
        Path or None: the folder, or None when it does not exist.
    """
    env = os.environ.get("MAYOLACT_COCO_MINI")
    if env:
        root = Path(env).expanduser()
        return root if root.is_dir() else None
    return next((root for root in COCO_MINI_DEFAULT_ROOTS if root.is_dir()), None)


def unregistered_message(name: str, hint: str = "") -> str:
    """"dataset NAME is not registered" with what to do: for a coco_mini split, how to build
    coco_mini (:data:`COCO_MINI_HINT`); otherwise the registered names closest to ``name`` and
    ``hint`` (the caller's way to name a dataset of one's own).

    Args:
        name: the dataset name that is not in ``DatasetCatalog``.
        hint: appended after "; " for names other than coco_mini's (e.g. "give its COCO json with
            --gt").
    """
    text = f"dataset {name!r} is not registered"
    if name in COCO_MINI_SPLITS:
        return f"{text}: {COCO_MINI_HINT}"
    close = difflib.get_close_matches(name, DatasetCatalog.list(), n=3, cutoff=0.6)
    if close:
        text += f" (did you mean {', '.join(repr(c) for c in close)}?)"
    return f"{text}; {hint}" if hint else text


def register_coco_with_ids(name: str, json_file: str, image_root: str) -> None:
    """``register_coco_instances`` that also keeps each annotation's ``id`` and ``area``, and
    validates the json before loading it (:func:`mayolact.data.validation.check_coco_json`).

    Args:
        name: dataset name.
        json_file: COCO instances json.
        image_root: folder of the images.
    """
    json_file, image_root = str(json_file), str(image_root)

    def load():
        # Before pycocotools or load_coco_json sees an annotation (an unknown category id is a
        # raw KeyError there, a NaN polygon exhausts memory later): cached per json content.
        check_coco_json(json_file, image_root=image_root, check_files=False)
        return load_coco_json(json_file, image_root, name, extra_annotation_keys=["id", "area"])

    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root, evaluator_type="coco")


def register_coco_mini(root: Optional[Path] = None) -> list:
    """Register the coco_mini splits found under ``root`` (default :func:`coco_mini_root`).

    Names that are already registered are left alone. A split whose files are absent stays
    unregistered, but its metadata gets COCO's class names (those of Detectron2's
    ``coco_2017_train``, which coco_mini's json shares), so that a config naming it (the quick
    configs) still has its 80 classes, as ``coco_2017_*`` do without their files.

    Returns:
        list[str]: the names registered by this call.
    """
    root = Path(root) if root is not None else coco_mini_root()
    done = []
    for name, (images, ann) in COCO_MINI_SPLITS.items():
        if name in DatasetCatalog.list():
            continue
        if root is None or not (root / ann).is_file():
            meta = MetadataCatalog.get(name)
            if "thing_classes" not in meta.as_dict():
                coco = MetadataCatalog.get("coco_2017_train")
                meta.set(thing_classes=list(coco.thing_classes),
                         thing_dataset_id_to_contiguous_id=dict(
                             coco.thing_dataset_id_to_contiguous_id))
            continue
        register_coco_with_ids(name, root / ann, root / images)
        done.append(name)
    if done:
        logger.debug("Registered %s from %s", done, root)
    return done



# ------------------------------------------------------------------ datasets named in the config
def register_config_datasets(cfg) -> List[str]:
    """Register the COCO-format sets of ``DATASETS.YOLACT.COCO_JSON`` (``[name, json_file,
    image_root]`` each) with :func:`register_coco_with_ids`.

    A name registered before with the same json and image folder is left alone (so calling this in
    every process of a run is harmless).

    Returns:
        list[str]: the names registered by this call.

    Raises:
        ValueError: naming ``DATASETS.YOLACT.COCO_JSON`` and the entry: not three strings, a json
            file or image folder that does not exist, or a name already registered otherwise.
    """
    key = "DATASETS.YOLACT.COCO_JSON"
    done = []
    for entry in cfg.DATASETS.YOLACT.COCO_JSON:
        if not (isinstance(entry, (list, tuple)) and len(entry) == 3
                and all(isinstance(v, str) and v for v in entry)):
            raise ValueError(
                f"{key}: each entry must be [name, json_file, image_root] (three strings), "
                f"got {entry!r}")
        name, json_file, image_root = entry
        json_file, image_root = os.path.abspath(json_file), os.path.abspath(image_root)
        if not os.path.isfile(json_file):
            raise ValueError(f"{key} entry {name!r}: json file {json_file} not found")
        if not os.path.isdir(image_root):
            raise ValueError(f"{key} entry {name!r}: image folder {image_root} not found")
        if name in DatasetCatalog.list():
            meta = MetadataCatalog.get(name)
            if (meta.get("json_file"), meta.get("image_root")) == (json_file, image_root):
                continue
            raise ValueError(
                f"{key} entry {name!r}: a dataset of that name is already registered (json "
                f"{meta.get('json_file')}); choose another name")
        register_coco_with_ids(name, json_file, image_root)
        done.append(name)
    if done:
        logger.info("Registered %s from %s", done, key)
    return done


def dataset_arguments(values: Sequence[str], image_root: Optional[str] = None) -> List[str]:
    """Dataset names for a tool's ``--dataset`` values: a registered name is kept; a COCO-format
    json file is registered under its path as given (:func:`register_coco_with_ids`), with its
    images under ``image_root`` (default: the json's folder). Other values are kept as they are,
    for the tool to report (or for a config loaded later to register).

    Raises:
        ValueError: ``image_root`` is not a folder.
    """
    names = []
    for value in values:
        value = str(value)
        if value in DatasetCatalog.list() or not (value.endswith(".json")
                                                  and os.path.isfile(value)):
            names.append(value)
            continue
        root = os.path.abspath(image_root or os.path.dirname(value) or ".")
        if not os.path.isdir(root):
            raise ValueError(f"--image-root {root}: not a folder (images of {value})")
        register_coco_with_ids(value, os.path.abspath(value), root)
        names.append(value)
    return names


def read_coco_categories(json_file: str) -> Tuple[List[str], Dict[int, int]]:
    """The class names and id map that ``load_coco_json`` derives from a COCO json's
    ``categories`` (names in the order of the sorted category ids; id -> contiguous index).

    Raises:
        ValueError: naming the file: unreadable json, or no valid ``categories`` list (each a
            dict with an integer ``id`` and a string ``name``, ids unique).
    """
    try:
        with open(json_file) as f:
            categories = json.load(f).get("categories")
    except (OSError, ValueError, AttributeError) as e:
        raise ValueError(f"{json_file}: cannot read a COCO json object: {e}") from e
    if not isinstance(categories, list) or not categories:
        raise ValueError(f"{json_file}: 'categories' must be a non-empty list")
    for i, c in enumerate(categories):
        if not (isinstance(c, dict) and isinstance(c.get("id"), int)
                and isinstance(c.get("name"), str)):
            raise ValueError(
                f"{json_file}: categories[{i}] needs an integer 'id' and a string 'name', "
                f"got {c!r}")
    ids = sorted({c["id"] for c in categories})
    if len(ids) != len(categories):
        raise ValueError(f"{json_file}: 'categories' repeats an id")
    names = {c["id"]: c["name"] for c in categories}
    return [names[i] for i in ids], {cid: k for k, cid in enumerate(ids)}


def dataset_metadata(name: str):
    """``MetadataCatalog.get(name)`` with ``thing_classes`` filled in from the COCO json's
    ``categories`` when the dataset has not been loaded yet (Detectron2 sets them only on load).

    A name that is not registered but has class names in its metadata (coco_mini without its
    files, see :func:`register_coco_mini`) gives that metadata.

    Raises:
        KeyError: ``name`` is neither registered nor has class names (the message names the
            registered names closest to it).
    """
    if name not in DatasetCatalog.list():
        if (name in MetadataCatalog.list()
                and "thing_classes" in MetadataCatalog.get(name).as_dict()):
            return MetadataCatalog.get(name)
        raise KeyError(unregistered_message(name))
    meta = MetadataCatalog.get(name)
    json_file = meta.get("json_file") if "thing_classes" not in meta.as_dict() else None
    if json_file:
        classes, id_map = read_coco_categories(json_file)
        # The values load_coco_json sets later, so Metadata's consistency check passes.
        meta.set(thing_classes=classes, thing_dataset_id_to_contiguous_id=id_map)
    return meta


def dataset_classes(name: str) -> Optional[List[str]]:
    """The class names of a registered dataset, or None when its metadata has none and it is not
    a COCO json (see :func:`dataset_metadata`)."""
    classes = dataset_metadata(name).get("thing_classes")
    return list(classes) if classes is not None else None


def resolve_num_classes(cfg) -> int:
    """``MODEL.YOLACT.NUM_CLASSES``, or when it is 0, the number of classes of the first training
    set (the first test set when there is no training set).

    Raises:
        ValueError: a negative value, or 0 with no dataset that has a class list.
    """
    if cfg.MODEL.YOLACT.NUM_CLASSES != 0:
        return resolved_num_classes(cfg)  # a value, or the error for a negative one
    names = list(cfg.DATASETS.TRAIN) or list(cfg.DATASETS.TEST)
    hint = "set MODEL.YOLACT.NUM_CLASSES to the number of foreground classes"
    if not names:
        raise ValueError(
            f"MODEL.YOLACT.NUM_CLASSES is 0 (take it from DATASETS.TRAIN) but DATASETS.TRAIN and "
            f"DATASETS.TEST are empty: {hint}")
    try:
        classes = dataset_classes(names[0])
    except KeyError as e:
        raise ValueError(
            f"MODEL.YOLACT.NUM_CLASSES is 0 (take it from DATASETS.TRAIN) but {e.args[0]}; "
            f"register it (DATASETS.YOLACT.COCO_JSON) or {hint}") from None
    if not classes:
        raise ValueError(
            f"MODEL.YOLACT.NUM_CLASSES is 0 (take it from DATASETS.TRAIN) but dataset "
            f"{names[0]!r} has no class list (metadata thing_classes or a COCO json_file): {hint}")
    return len(classes)


#: Detectron2's class-count keys of other meta-architectures; YOLACT reads MODEL.YOLACT.NUM_CLASSES.
_FOREIGN_NUM_CLASSES_KEYS = ("ROI_HEADS", "RETINANET")


def apply_dataset_config(cfg):
    """Make a loaded config's datasets and class count concrete, in place (before ``freeze``).

    1. registers ``DATASETS.YOLACT.COCO_JSON`` (:func:`register_config_datasets`);
    2. ``MODEL.ROI_HEADS.NUM_CLASSES`` or ``MODEL.RETINANET.NUM_CLASSES`` changed from Detectron2's
       default (the habit from R-CNN configs) while it differs from the YOLACT key: an error that
       names the right key;
    3. ``MODEL.YOLACT.NUM_CLASSES`` 0 becomes the training set's class count
       (:func:`resolve_num_classes`), when that set is registered; otherwise it stays 0 and the
       model, when built, says what is missing. (A value that disagrees with the datasets is
       found by :func:`mayolact.engine.checks.check_num_classes`.)

    Returns:
        cfg.

    Raises:
        ValueError: as :func:`register_config_datasets`, and for step 2.
    """
    register_config_datasets(cfg)
    names = list(cfg.DATASETS.TRAIN) or list(cfg.DATASETS.TEST)
    known = names and (names[0] in DatasetCatalog.list() or (
        names[0] in MetadataCatalog.list()
        and "thing_classes" in MetadataCatalog.get(names[0]).as_dict()))
    if cfg.MODEL.YOLACT.NUM_CLASSES == 0 and known:
        cfg.MODEL.YOLACT.NUM_CLASSES = resolve_num_classes(cfg)
        logger.info("MODEL.YOLACT.NUM_CLASSES: %d, from %s", cfg.MODEL.YOLACT.NUM_CLASSES, names[0])
    if cfg.MODEL.META_ARCHITECTURE == "YOLACT":
        d2_default = get_cfg().MODEL
        for node in _FOREIGN_NUM_CLASSES_KEYS:
            value = cfg.MODEL[node].NUM_CLASSES
            if value == d2_default[node].NUM_CLASSES or value == cfg.MODEL.YOLACT.NUM_CLASSES:
                continue
            raise ValueError(
                f"MODEL.{node}.NUM_CLASSES is {value}, but YOLACT does not read it (it is "
                f"Detectron2's key for other models): set MODEL.YOLACT.NUM_CLASSES {value} instead "
                f"(or leave MODEL.YOLACT.NUM_CLASSES at 0 to take it from DATASETS.TRAIN)")
    return cfg


register_coco_mini()
