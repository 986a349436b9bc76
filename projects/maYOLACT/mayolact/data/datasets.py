"""Dataset registration.

- ``coco_mini_train`` / ``coco_mini_val``: the small COCO subset used by the tests and demos, read
  from ``$MAYOLACT_COCO_MINI`` or ``<repo>/../shared/data/coco_mini`` (``annotations/
  instances_{train,val}2017.json`` and ``{train,val}2017/`` images). A split is registered only
  when its json exists; nothing is registered (and nothing fails) otherwise.
- COCO 2017 itself: Detectron2 registers ``coco_2017_train``, ``coco_2017_val``,
  ``coco_2017_test-dev``, ... when ``detectron2.data.datasets`` is imported
  (``detectron2/data/datasets/builtin.py`` runs ``register_all_coco`` at import time, under
  ``$DETECTRON2_DATASETS``, default ``./datasets``; checked in this install). Set
  ``DETECTRON2_DATASETS`` to the folder that holds ``coco/`` and use those names directly.

The coco_mini splits are registered as ``register_coco_instances`` would, except that the
annotation ``id`` and ``area`` are kept in the dataset dicts (``extra_annotation_keys``): the
mapper names a malformed annotation by its id and applies mmdet's ``area <= 0`` filter.
"""

import logging
import os
from pathlib import Path
from typing import Optional

import detectron2.data.datasets  # noqa: F401  (registers detectron2's builtin datasets)
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.coco import load_coco_json

__all__ = ["coco_mini_root", "register_coco_with_ids", "register_coco_mini"]

logger = logging.getLogger(__name__)

# .../<repo>/projects/maYOLACT/mayolact/data/datasets.py -> <repo>
_REPO_ROOT = Path(__file__).resolve().parents[4]

COCO_MINI_SPLITS = {
    "coco_mini_train": ("train2017", "annotations/instances_train2017.json"),
    "coco_mini_val": ("val2017", "annotations/instances_val2017.json"),
}


def coco_mini_root() -> Optional[Path]:
    """The coco_mini folder: ``$MAYOLACT_COCO_MINI`` or ``<repo>/../shared/data/coco_mini``.

    Returns:
        Path or None: the folder, or None when it does not exist.
    """
    env = os.environ.get("MAYOLACT_COCO_MINI")
    root = Path(env).expanduser() if env else _REPO_ROOT.parent / "shared" / "data" / "coco_mini"
    return root if root.is_dir() else None


def register_coco_with_ids(name: str, json_file: str, image_root: str) -> None:
    """``register_coco_instances`` that also keeps each annotation's ``id`` and ``area``.

    Args:
        name: dataset name.
        json_file: COCO instances json.
        image_root: folder of the images.
    """
    json_file, image_root = str(json_file), str(image_root)
    DatasetCatalog.register(
        name,
        lambda: load_coco_json(json_file, image_root, name, extra_annotation_keys=["id", "area"]),
    )
    MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root, evaluator_type="coco")


def register_coco_mini(root: Optional[Path] = None) -> list:
    """Register the coco_mini splits found under ``root`` (default :func:`coco_mini_root`).

    Names that are already registered are left alone.

    Returns:
        list[str]: the names registered by this call.
    """
    root = Path(root) if root is not None else coco_mini_root()
    if root is None:
        return []
    done = []
    for name, (images, ann) in COCO_MINI_SPLITS.items():
        if name in DatasetCatalog.list() or not (root / ann).is_file():
            continue
        register_coco_with_ids(name, root / ann, root / images)
        done.append(name)
    if done:
        logger.debug("Registered %s from %s", done, root)
    return done


register_coco_mini()
