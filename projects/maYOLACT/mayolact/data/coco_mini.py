"""coco_mini from a COCO 2017 download (``tools/make_coco_mini.py``).

coco_mini is 337 images of train2017 and 128 of val2017 (ids in :mod:`mayolact.data.coco_mini_ids`)
with their official instance annotations: crowd regions (uncompressed RLE), a grayscale JPEG and
images without annotations included. It was assembled from the small public COCO subsets
``Obmutescence/COCO-MINI``, ``zzowenzz/COCO_Tiny``, ``lizhogn/tiny_coco_dataset`` and
``developer0hye/COCO128``; :func:`build_coco_mini` takes the same images from a COCO 2017 download
(``annotations/instances_{train,val}2017.json`` and the ``train2017/``, ``val2017/`` folders), so
the tests, demos and benchmarks that use it run on any machine with COCO.

The result has COCO's layout, as :func:`mayolact.data.datasets.register_coco_mini` reads it. The
annotation records are COCO's (CC BY 4.0); each image keeps its Flickr licence in
``images[].license`` and ``images[].flickr_url``.
"""
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple

from mayolact.data.coco_mini_ids import COCO_MINI_IMAGE_IDS
from mayolact.utils.file_io import atomic_path, write_json_atomic

__all__ = ["COCO_MINI_IMAGE_IDS", "build_coco_mini", "select_images"]

logger = logging.getLogger(__name__)


def select_images(coco: dict, image_ids: Sequence[int], source: str = "") -> dict:
    """The part of a COCO instances json about ``image_ids``: their image records (in the order of
    ``image_ids``), every annotation of theirs (in the file's order), and the file's other entries
    (``info``, ``licenses``, ``categories``) as they are.

    Args:
        coco: a loaded COCO instances json.
        image_ids: the ids to keep.
        source: the json's path, for messages.

    Raises:
        ValueError: naming ``source``: not a COCO instances json, or ids it does not hold.
    """
    if not (isinstance(coco, dict) and isinstance(coco.get("images"), list)
            and isinstance(coco.get("annotations"), list)):
        raise ValueError(f"{source}: not a COCO instances json (no 'images' and 'annotations')")
    by_id = {im.get("id"): im for im in coco["images"] if isinstance(im, dict)}
    missing = [i for i in image_ids if i not in by_id]
    if missing:
        raise ValueError(
            f"{source}: {len(missing)} of coco_mini's {len(image_ids)} image ids are not in it "
            f"(e.g. {missing[:3]}); is it COCO 2017's instances json of this split?")
    wanted = set(image_ids)
    out = {k: v for k, v in coco.items() if k not in ("images", "annotations")}
    out["images"] = [by_id[i] for i in image_ids]
    out["annotations"] = [a for a in coco["annotations"] if a.get("image_id") in wanted]
    return out


def _copy_image(src: Path, dst: Path, link: bool) -> None:
    """``src`` to ``dst`` (atomically), or a symbolic link to it; an existing ``dst`` of the same
    size is kept (a rerun after an interruption copies only what is missing)."""
    if dst.is_file() and dst.stat().st_size == src.stat().st_size:
        return
    with atomic_path(str(dst)) as tmp:
        if link:
            os.symlink(src.resolve(), tmp)
        else:
            shutil.copyfile(src, tmp)


def build_coco_mini(coco_root: str, output: str, *, link: bool = False,
                    image_ids: Optional[Mapping[str, Sequence[int]]] = None
                    ) -> Dict[str, Tuple[int, int]]:
    """Write coco_mini under ``output`` from the COCO 2017 download under ``coco_root``.

    For each split (``train2017``, ``val2017``): its json is read and checked (every id present,
    every image file there) before anything of it is written; the images are copied (or linked)
    first and the json last, atomically, so an interrupted build leaves no json that names images
    it lacks (:func:`~mayolact.data.datasets.register_coco_mini` registers a split by its json).

    Args:
        coco_root: the folder holding ``annotations/instances_{split}.json`` and ``{split}/``.
        output: coco_mini's folder (created).
        link: symbolic links to the download's images instead of copies.
        image_ids: split -> image ids (default: coco_mini's, :data:`COCO_MINI_IMAGE_IDS`).

    Returns:
        dict: split -> (images, annotations) written.

    Raises:
        FileNotFoundError: naming a json or an image file of the download that is missing.
        ValueError: naming a json that is not COCO's or lacks some of the ids.
    """
    coco_root, output = Path(coco_root), Path(output)
    image_ids = COCO_MINI_IMAGE_IDS if image_ids is None else image_ids
    done = {}
    for split, ids in image_ids.items():
        source = coco_root / "annotations" / f"instances_{split}.json"
        if not source.is_file():
            raise FileNotFoundError(
                f"{source}: not found; --coco must be the COCO 2017 folder holding "
                f"annotations/instances_{split}.json and {split}/")
        logger.info("Reading %s", source)
        try:
            with open(source) as f:
                coco = json.load(f)
        except ValueError as e:
            raise ValueError(f"{source}: not valid json ({e})") from None
        mini = select_images(coco, list(ids), str(source))
        del coco
        images = [(coco_root / split / im["file_name"], output / split / im["file_name"])
                  for im in mini["images"]]
        absent = [str(src) for src, _ in images if not src.is_file()]
        if absent:
            raise FileNotFoundError(
                f"{len(absent)} of coco_mini's {split} images are not in {coco_root / split} "
                f"(e.g. {absent[0]})")
        for src, dst in images:
            _copy_image(src, dst, link)
        write_json_atomic(str(output / "annotations" / f"instances_{split}.json"), mini)
        done[split] = (len(mini["images"]), len(mini["annotations"]))
        logger.info("%s: %d images, %d annotations -> %s", split, *done[split], output)
    return done
