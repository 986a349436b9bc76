"""Annotation checks that run before any library sees an annotation.

pycocotools and OpenCV trust what they are given: a NaN, inf or 1e9 polygon coordinate makes
``frPyObjects`` allocate without bound, an RLE whose counts do not sum to h x w makes ``mask.iou``
loop forever, a 2-point polygon is taken for a box, a malformed counts string decodes to
nonsense. Everything here is plain numpy on the parsed json, vectorised over all annotations of
a file, so no annotation reaches those libraries unchecked.

* :func:`rle_counts_totals`: the pixel total of COCO compressed RLE count strings (the format of
  ``pycocotools.mask.encode``), decoded in one numpy pass for any number of strings, with a flag
  for strings that are not valid (characters outside the alphabet, an unfinished value, a
  negative run);
* :func:`segmentation_problem`: the check of one segmentation (polygons or RLE) against its image
  size, used by the training mapper on every annotation it parses;
* :func:`validate_coco_dict` / :func:`validate_coco_json`: every check of a COCO instances json
  (structure, duplicated ids, unknown image and category ids, boxes outside their image,
  polygons, RLE counts, missing image files), as a list of :class:`Problem`;
  :func:`validate_coco_json` caches the verdict on the json's content hash under
  ``$MAYOLACT_CACHE/validation`` (or ``~/.cache/mayolact/validation``), so a file is read and
  checked once, and a later run only hashes it;
* :func:`check_coco_json` raises :class:`AnnotationError` (or ``FileNotFoundError`` when only
  image files are missing) naming each problem: file, image, annotation id, field, reason.

Coordinates of polygons and boxes must lie within one image size of the image
(:data:`COORDINATE_MARGIN`): pycocotools rasterises a polygon point by point along its edges, so a
coordinate far away costs memory in proportion; real annotations stay at the border.

Severity: everything is an error except a polygon with fewer than 3 points next to valid ones in
a training set (Detectron2's ``load_coco_json`` and mmdet drop such polygons); in a set that is
evaluated it is an error too, because pycocotools' evaluation cannot rasterise it.
"""
import collections
import dataclasses
import hashlib
import itertools
import json
import logging
import os
import threading
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "COORDINATE_MARGIN",
    "AnnotationError",
    "Problem",
    "rle_counts_totals",
    "segmentation_problem",
    "validate_coco_dict",
    "validate_coco_json",
    "check_coco_json",
    "check_registered_datasets",
    "raise_for_problems",
]

logger = logging.getLogger(__name__)

#: Polygon and box coordinates may lie at most this many image sizes outside the image.
COORDINATE_MARGIN = 1.0
#: A compressed-RLE value longer than this many characters (35 bits) cannot be a pixel count.
_MAX_RLE_VALUE_CHARS = 7
#: Characters decoded per numpy pass (bounds the temporary arrays to ~100 MB).
_RLE_CHUNK_CHARS = 4_000_000
#: Bumped whenever a check changes, so that cached verdicts of older checks are not reused.
_VALIDATOR_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Problem:
    """One thing wrong with an annotation file.

    Attributes:
        source: the json file (or the image file, for a dataset dict).
        reason: what is wrong.
        field: the json field (``"segmentation"``, ``"bbox"``, ``"category_id"``, ...).
        image_id: the image it belongs to, if known.
        file_name: that image's file, if known.
        annotation_id: the annotation's ``id``, if any.
        index: the position in the json's ``annotations`` (or ``images``) list.
        severity: ``"error"`` (the file cannot be used) or ``"warning"`` (reported, then dropped
            as Detectron2 does).
    """

    source: str
    reason: str
    field: str = ""
    image_id: Any = None
    file_name: str = ""
    annotation_id: Any = None
    index: Optional[int] = None
    severity: str = "error"

    def __str__(self) -> str:
        parts = [self.source]
        if self.image_id is not None or self.file_name:
            parts.append(f"image {self.image_id}" + (f" ({self.file_name})" if self.file_name
                                                      else ""))
        if self.annotation_id is not None:
            parts.append(f"annotation id {self.annotation_id}")
        elif self.index is not None:
            parts.append(f"annotations[{self.index}] (no id)")
        if self.field:
            parts.append(f"field '{self.field}'")
        return ": ".join(parts) + f": {self.reason}"


class AnnotationError(ValueError):
    """Annotations that cannot be used; ``problems`` lists every one found (errors first)."""

    def __init__(self, problems: Sequence[Problem], limit: int = 10):
        self.problems = list(problems)
        errors = [p for p in self.problems if p.severity == "error"]
        shown = "\n  ".join(str(p) for p in errors[:limit])
        more = f"\n  ... and {len(errors) - limit} more" if len(errors) > limit else ""
        super().__init__(
            f"{len(errors)} annotation problem(s):\n  {shown}{more}\n"
            "(python tools/check_dataset.py lists them all)")


def raise_for_problems(problems: Sequence[Problem]) -> None:
    """Raise when ``problems`` holds an error: ``FileNotFoundError`` when every error is a missing
    image file, :class:`AnnotationError` otherwise; warnings alone are logged once."""
    errors = [p for p in problems if p.severity == "error"]
    if not errors:
        warnings = [p for p in problems if p.severity == "warning"]
        if warnings:
            logger.warning("%d annotation warning(s), e.g. %s", len(warnings), warnings[0])
        return
    if all(p.field == "file_name" for p in errors):
        names = "\n  ".join(str(p) for p in errors[:10])
        more = f"\n  ... and {len(errors) - 10} more" if len(errors) > 10 else ""
        raise FileNotFoundError(f"{len(errors)} image file(s) not found:\n  {names}{more}")
    raise AnnotationError(problems)


# --------------------------------------------------------------------------------- RLE counts
def _rle_chunk(strings: List[bytes]) -> Tuple[np.ndarray, np.ndarray]:
    """``rle_counts_totals`` of strings whose total length fits one numpy pass."""
    n = len(strings)
    lengths = np.fromiter(map(len, strings), np.int64, n)
    valid = lengths >= 0
    totals = np.zeros(n, np.int64)
    nonempty = np.flatnonzero(lengths)
    if nonempty.size == 0:
        return valid, totals
    ends = np.cumsum(lengths)  # one past the last character of each string
    last_char = ends[nonempty] - 1
    c = np.frombuffer(b"".join(strings), np.uint8).astype(np.int32) - 48
    # Characters outside '0'..'o' are not COCO's alphabet.
    bad = np.flatnonzero((c < 0) | (c > 63))
    if bad.size:
        valid[np.searchsorted(ends, bad, side="right")] = False
        c[bad] = 0
    more = (c & 0x20) != 0
    # A string whose last character asks for more is unfinished (pycocotools reads past its end).
    valid[nonempty[more[last_char]]] = False
    more[last_char] = False  # values never run across strings
    group_end = np.flatnonzero(~more)
    group_start = np.empty_like(group_end)
    group_start[0] = 0
    group_start[1:] = group_end[:-1] + 1
    group_len = group_end - group_start + 1
    group_string = np.searchsorted(ends, group_start, side="right")
    # A value of more than 7 characters (35 bits) cannot be a pixel count.
    valid[group_string[group_len > _MAX_RLE_VALUE_CHARS]] = False
    # Little-endian 5-bit groups: add character k of every value (at most 7) in turn.
    x = (c[group_start] & 0x1F).astype(np.int64)
    for k in range(1, _MAX_RLE_VALUE_CHARS):
        longer = np.flatnonzero(group_len > k)
        if longer.size == 0:
            break
        x[longer] += (c[group_start[longer] + k] & 0x1F).astype(np.int64) << (5 * k)
    negative = (c[group_end] & 0x10) != 0  # the sign bit of a value's last character
    x[negative] -= np.int64(1) << (5 * np.minimum(group_len[negative], _MAX_RLE_VALUE_CHARS))
    # pycocotools: count m > 2 is a difference to count m - 2: two running sums per string, by
    # parity (odd m from m = 1, even m from m = 2); m = 0 stands alone.
    first_group = np.searchsorted(group_string, np.arange(n))
    m = np.arange(group_string.size) - first_group[group_string]
    chain = group_string * 3 + np.where(m == 0, 0, 2 - m % 2)
    order = np.argsort(chain, kind="stable")
    xs = x[order]
    cs = np.cumsum(xs)
    new_chain = np.empty(order.size, bool)
    new_chain[0] = True
    new_chain[1:] = chain[order][1:] != chain[order][:-1]
    base = np.where(new_chain, cs - xs, 0)
    counts = np.empty_like(x)
    counts[order] = cs - np.maximum.accumulate(base)
    valid[group_string[counts < 0]] = False
    has_groups = np.flatnonzero(np.bincount(group_string, minlength=n) > 0)
    totals[has_groups] = np.add.reduceat(counts, first_group[has_groups])
    return valid, totals


def rle_counts_totals(counts: Sequence) -> Tuple[np.ndarray, np.ndarray]:
    """Decode COCO compressed RLE count strings, all at once, without pycocotools.

    The string format is ``pycocotools.mask.encode``'s (``rleToString``): each count is a
    little-endian sequence of 5-bit groups, one character each (``chr(48 + group)``, 0x20 =
    more to come, 0x10 of the last = negative), and counts after the second are differences to
    the count two before.

    Args:
        counts: N strings (or bytes).

    Returns:
        tuple: ``valid`` bool (N,) (False: a character outside the alphabet, an unfinished value,
        a value too large to be a pixel count, or a negative run) and ``totals`` int64 (N,), the
        sum of the runs (the number of pixels the RLE covers; meaningless where not valid).
    """
    encoded = []
    for s in counts:
        if isinstance(s, str):
            try:
                encoded.append(s.encode("ascii"))
            except UnicodeEncodeError:
                encoded.append(b"\x00")  # not the alphabet: invalid
        else:
            encoded.append(bytes(s))
    valid = np.ones(len(encoded), bool)
    totals = np.zeros(len(encoded), np.int64)
    start = 0
    while start < len(encoded):
        stop, size = start, 0
        while stop < len(encoded) and (size == 0 or size + len(encoded[stop]) <= _RLE_CHUNK_CHARS):
            size += len(encoded[stop])
            stop += 1
        valid[start:stop], totals[start:stop] = _rle_chunk(encoded[start:stop])
        start = stop
    return valid, totals


def _uncompressed_rle_problem(counts: list, area: int) -> Optional[str]:
    try:
        arr = np.asarray(counts, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        return "RLE 'counts' must be a list of non-negative integers"
    if not np.isfinite(arr).all() or (arr < 0).any() or (arr != np.round(arr)).any():
        return "RLE 'counts' must be a list of non-negative integers"
    total = int(arr.sum())
    if total != area:
        return f"RLE counts sum to {total} pixels, not height x width = {area}"
    return None


def _rle_problem(segm: dict, hw: Tuple[int, int], total: Optional[int] = None,
                 valid: bool = True) -> Optional[str]:
    """Why an RLE dict cannot be used for an image of size ``hw``, or None."""
    if "counts" not in segm or "size" not in segm:
        return "an RLE needs 'counts' and 'size'"
    size = segm["size"]
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                       for v in size)):
        return f"RLE 'size' must be [height, width], got {size!r}"
    if [int(size[0]), int(size[1])] != [int(hw[0]), int(hw[1])]:
        return f"RLE size {list(size)} does not match the image size {list(hw)} (height, width)"
    area = int(hw[0]) * int(hw[1])
    counts = segm["counts"]
    if isinstance(counts, list):
        return _uncompressed_rle_problem(counts, area)
    if not isinstance(counts, (str, bytes)):
        return f"RLE 'counts' must be a list, str or bytes, got {type(counts).__name__}"
    if total is None:
        valid_arr, totals = rle_counts_totals([counts])
        valid, total = bool(valid_arr[0]), int(totals[0])
    if not valid:
        return f"RLE counts string {str(counts)[:40]!r} cannot be decoded"
    if total != area:
        return f"RLE counts sum to {total} pixels, not height x width = {area}"
    return None


# ----------------------------------------------------------------------------------- polygons
def _polygon_reasons(polys, hw: Tuple[int, int]) -> Tuple[List[str], List[str]]:
    """(errors, degenerate) reasons for one annotation's polygons (the slow, exact path)."""
    h, w = float(hw[0]), float(hw[1])
    errors, degenerate = [], []
    if not isinstance(polys, (list, tuple)) or len(polys) == 0:
        return ["expected a non-empty list of polygons"], []
    for k, poly in enumerate(polys):
        if not isinstance(poly, (list, tuple, np.ndarray)):
            errors.append(f"polygon {k} must be a list of numbers, got {type(poly).__name__}")
            continue
        try:
            arr = np.asarray(poly, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            errors.append(f"polygon {k} holds something other than numbers")
            continue
        if any(isinstance(v, (bool, str, bytes)) for v in poly):
            errors.append(f"polygon {k} holds something other than numbers")
            continue
        if arr.size % 2:
            errors.append(f"polygon {k} has an odd number of coordinates ({arr.size})")
            continue
        if not np.isfinite(arr).all():
            errors.append(f"polygon {k} has a non-finite coordinate ({arr[~np.isfinite(arr)][0]})")
            continue
        reason = _range_reason(arr[0::2], arr[1::2], h, w, f"polygon {k}")
        if reason:
            errors.append(reason)
        elif arr.size < 6:
            degenerate.append(f"polygon {k} has {arr.size // 2} point(s); a polygon needs 3")
    return errors, degenerate


def _range_reason(xs: np.ndarray, ys: np.ndarray, h: float, w: float, what: str) -> Optional[str]:
    if xs.size == 0:
        return None
    lo_x, hi_x = -COORDINATE_MARGIN * w, (1 + COORDINATE_MARGIN) * w
    lo_y, hi_y = -COORDINATE_MARGIN * h, (1 + COORDINATE_MARGIN) * h
    if xs.min() < lo_x or xs.max() > hi_x or ys.min() < lo_y or ys.max() > hi_y:
        return (f"{what} reaches x in [{xs.min():.6g}, {xs.max():.6g}], y in [{ys.min():.6g}, "
                f"{ys.max():.6g}], beyond one image size around the {int(w)}x{int(h)} image")
    return None


def segmentation_problem(segm, hw: Tuple[int, int], *, strict: bool = False
                         ) -> Tuple[Optional[str], List[int]]:
    """Check one COCO segmentation for an image of size ``hw`` before pycocotools sees it.

    Args:
        segm: polygons (a list of flat coordinate lists) or an RLE dict.
        hw: (height, width) of the image.
        strict: a polygon with fewer than 3 points is an error (otherwise it is dropped).

    Returns:
        tuple: the reason it cannot be used (None when it can) and the indices of the polygons
        with fewer than 3 points that are to be dropped.
    """
    if isinstance(segm, dict):
        return _rle_problem(segm, hw), []
    if not isinstance(segm, (list, tuple)):
        return f"expected polygons (list) or RLE (dict), got {type(segm).__name__}", []
    errors, degenerate = _polygon_reasons(segm, hw)
    if errors:
        return "; ".join(errors), []
    drop = [k for k, p in enumerate(segm) if len(p) < 6]
    if degenerate and (strict or len(drop) == len(segm)):
        return "; ".join(degenerate) + (" (no polygon with 3 points left)"
                                        if len(drop) == len(segm) else ""), []
    return None, drop


def _polygon_batch(segms: List, hws: np.ndarray) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """Vectorised polygon check of many annotations; None when the structure needs the slow path.

    Args:
        segms: A polygon segmentations (lists of flat coordinate lists).
        hws: float (A, 2) image (height, width) of each.

    Returns:
        ``(bad, degenerate)``: bool (A,) an error somewhere (odd, non-finite or out-of-range
        coordinates, no polygon), int (A,) polygons with fewer than 3 points.
    """
    try:
        npoly = np.fromiter(map(len, segms), np.int64, len(segms))
        lens = np.fromiter(map(len, itertools.chain.from_iterable(segms)), np.int64,
                           int(npoly.sum()))
        flat = np.fromiter(itertools.chain.from_iterable(itertools.chain.from_iterable(segms)),
                           np.float64, int(lens.sum()))
    except (TypeError, ValueError):
        return None
    if (lens % 2).any():
        return None  # odd polygons break the x / y alternation: the exact path names them
    poly_ann = np.repeat(np.arange(len(segms)), npoly)
    bad = npoly == 0
    degenerate = np.bincount(poly_ann, weights=lens < 6, minlength=len(segms)).astype(np.int64)
    filled = lens > 0
    if filled.any():
        starts = (np.cumsum(lens) - lens)[filled] // 2
        xs, ys = flat[0::2], flat[1::2]
        stats = [ufunc.reduceat(v, starts) for v in (xs, ys) for ufunc in (np.minimum,
                                                                             np.maximum)]
        min_x, max_x, min_y, max_y = stats
        h, w = hws[poly_ann[filled], 0], hws[poly_ann[filled], 1]
        ok = (np.isfinite(min_x) & np.isfinite(max_x) & np.isfinite(min_y) & np.isfinite(max_y)
              & (min_x >= -COORDINATE_MARGIN * w) & (max_x <= (1 + COORDINATE_MARGIN) * w)
              & (min_y >= -COORDINATE_MARGIN * h) & (max_y <= (1 + COORDINATE_MARGIN) * h))
        bad |= np.bincount(poly_ann[filled], weights=~ok, minlength=len(segms)) > 0
    return bad, degenerate


# ------------------------------------------------------------------------------- COCO json
def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def validate_coco_dict(dataset: dict, source: str, *, image_root: Optional[str] = None,
                       for_evaluation: bool = False) -> List[Problem]:
    """Every problem of a parsed COCO instances json, before any library sees it.

    Checked: the ``images`` (integer ids, unique; ``file_name``; positive ``height`` and
    ``width``), the ``categories`` (integer ids, unique), and each annotation: an integer ``id``,
    unique; an ``image_id`` among the images; a ``category_id`` among the categories;
    ``iscrowd`` 0 or 1; a ``bbox`` of 4 finite numbers, width and height >= 0, within one image
    size of the image and not entirely outside it; a ``segmentation`` of polygons (numbers, an
    even count, finite, within one image size of the image, at least 3 points) or an RLE (size
    equal to the image's, counts that decode and sum to height x width). With ``image_root``,
    every image file must exist.

    Args:
        dataset: the parsed json.
        source: the json's path, for the messages.
        image_root: the image folder; None skips the file check.
        for_evaluation: the set is evaluated by pycocotools, so a polygon with fewer than 3
            points is an error, not a warning.

    Returns:
        list[Problem]: errors and warnings, in the order of the json.
    """
    problems: List[Problem] = []
    add = problems.append
    if not isinstance(dataset, dict):
        return [Problem(source, f"expected a json object, got {type(dataset).__name__}")]
    images = dataset.get("images")
    if not isinstance(images, list):
        return [Problem(source, "expected a list", field="images")]
    categories = dataset.get("categories")
    if not isinstance(categories, list) or not categories:
        return [Problem(source, "expected a non-empty list", field="categories")]
    annotations = dataset.get("annotations", [])
    if not isinstance(annotations, list):
        return [Problem(source, "expected a list", field="annotations")]

    # Images.
    sizes: Dict[Any, Tuple[float, float]] = {}
    names: Dict[Any, str] = {}
    seen = collections.Counter()
    for i, img in enumerate(images):
        if not isinstance(img, dict) or not _is_int(img.get("id")):
            add(Problem(source, f"images[{i}] needs an integer 'id', got "
                                f"{img.get('id') if isinstance(img, dict) else img!r}", "id"))
            continue
        iid, name = img["id"], img.get("file_name")
        seen[iid] += 1
        if not isinstance(name, str) or not name:
            add(Problem(source, f"missing or not a string: {name!r}", "file_name", iid))
            name = ""
        h, w = img.get("height"), img.get("width")
        if not (_is_int(h) and _is_int(w) and h > 0 and w > 0):
            add(Problem(source, f"height and width must be positive integers, got {h!r}, {w!r}",
                        "height", iid, name))
            continue
        if iid not in sizes:
            sizes[iid], names[iid] = (float(h), float(w)), name
    for iid, n in seen.items():
        if n > 1:
            files = sorted({img.get("file_name", "?") for img in images
                            if isinstance(img, dict) and img.get("id") == iid})
            add(Problem(source, f"image id {iid} is used by {n} images ({', '.join(files[:3])})",
                        "id", iid))

    # Categories.
    cat_ids = [c.get("id") if isinstance(c, dict) else None for c in categories]
    bad_cats = [c for c in cat_ids if not _is_int(c)]
    if bad_cats:
        add(Problem(source, f"category ids must be integers, got {bad_cats[0]!r}", "categories"))
    repeated = [c for c, n in collections.Counter(cat_ids).items() if n > 1]
    if repeated:
        add(Problem(source, f"category id {repeated[0]} is used more than once", "categories"))
    known_cats = set(c for c in cat_ids if _is_int(c))

    if not annotations:
        _check_files(names, image_root, source, add)
        return problems
    A = len(annotations)
    if not all(isinstance(a, dict) for a in annotations):
        i = next(i for i, a in enumerate(annotations) if not isinstance(a, dict))
        add(Problem(source, f"annotations[{i}] is a {type(annotations[i]).__name__}, not an "
                            "object", index=i))
        return problems

    def where(i: int, field: str, reason: str, severity: str = "error") -> Problem:
        a = annotations[i]
        iid = a.get("image_id")
        return Problem(source, reason, field, iid, names.get(iid, "") if _is_hashable(iid) else "",
                       a.get("id"), i, severity)

    ann_ids = [a.get("id") for a in annotations]
    ids = _int_array(ann_ids)
    if ids is None:  # something other than integers: the exact, slow path names them
        for i, aid in enumerate(ann_ids):
            if not _is_int(aid):
                add(where(i, "id", f"must be an integer, got {aid!r}"))
        ids = np.array([aid if _is_int(aid) else -(i + 1) for i, aid in enumerate(ann_ids)],
                       np.int64)
    values, first, counts = np.unique(ids, return_index=True, return_counts=True)
    for k in np.flatnonzero(counts > 1):
        if values[k] >= 0 or _is_int(ann_ids[first[k]]):
            add(where(int(first[k]), "id", f"annotation id {values[k]} is used {counts[k]} "
                                           "times"))
    # Image ids: each annotation's row in the (sorted) table of valid images.
    image_ids = [a.get("image_id") for a in annotations]
    table = np.array(sorted(sizes), np.int64) if sizes else np.zeros(0, np.int64)
    table_hw = np.array([sizes[i] for i in table.tolist()], np.float64).reshape(-1, 2)
    iids = _int_array(image_ids)
    if iids is None:
        iids = np.array([iid if _is_int(iid) else np.iinfo(np.int64).min for iid in image_ids],
                        np.int64)
    row = np.clip(np.searchsorted(table, iids), 0, max(len(table) - 1, 0))
    known = (table[row] == iids) if len(table) else np.zeros(A, bool)
    for i in np.flatnonzero(~known):
        iid = image_ids[i]
        add(where(int(i), "image_id", f"{iid!r} is not the id of an image of the file"
                                      + (" with a valid size" if _is_hashable(iid) and iid in seen
                                         else "")))
    cats = _int_array([a.get("category_id") for a in annotations])
    cat_table = np.array(sorted(known_cats), np.int64)
    bad_cat = (np.ones(A, bool) if cats is None or not len(cat_table)
               else ~np.isin(cats, cat_table))
    for i in np.flatnonzero(bad_cat):
        cat = annotations[i].get("category_id")
        if not (_is_hashable(cat) and cat in known_cats):
            add(where(int(i), "category_id", f"{cat!r} is not among the categories' ids "
                                             f"({_short(sorted(known_cats))})"))
    crowds = [a.get("iscrowd", 0) for a in annotations]
    crowd_arr = _int_array(crowds)
    bad_crowd = (np.ones(A, bool) if crowd_arr is None
                 else (crowd_arr != 0) & (crowd_arr != 1))
    for i in np.flatnonzero(bad_crowd):
        crowd = crowds[i]
        if crowd not in (0, 1) or isinstance(crowd, float):
            add(where(int(i), "iscrowd", f"expected 0 or 1, got {crowd!r}"))
    hws = np.where(known[:, None], table_hw[row] if len(table) else np.nan, np.nan)
    valid_image = known
    _check_boxes(annotations, hws, valid_image, where, add)
    _check_segmentations(annotations, hws, valid_image, where, add, for_evaluation)
    _check_files(names, image_root, source, add)
    problems.sort(key=lambda p: (p.index is None, p.index if p.index is not None else 0))
    return problems


def _int_array(values: list) -> Optional[np.ndarray]:
    """``values`` as an int64 array when every one is an integer (not a bool), else None."""
    try:
        arr = np.array(values)
    except (TypeError, ValueError):
        return None
    if arr.ndim != 1 or arr.dtype.kind not in "iu" or len(arr) != len(values):
        return None
    return arr.astype(np.int64)


def _is_hashable(v) -> bool:
    return isinstance(v, (int, str, float, bool, type(None), np.integer))


def _short(values, limit: int = 8) -> str:
    text = ", ".join(map(str, values[:limit]))
    return text + (", ..." if len(values) > limit else "")


def _check_boxes(annotations, hws, valid_image, where, add) -> None:
    A = len(annotations)
    raw = [a.get("bbox") for a in annotations]
    try:
        boxes = np.array(raw)  # no dtype: strings or None would not pass as numbers
        fast = boxes.shape == (A, 4) and boxes.dtype.kind in "fiu"
        boxes = boxes.astype(np.float64)
    except (TypeError, ValueError):
        fast = False
    if not fast:
        boxes = np.full((A, 4), np.nan)
        for i, b in enumerate(raw):
            if (not isinstance(b, (list, tuple)) or len(b) != 4
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                               for v in b)):
                add(where(i, "bbox", f"expected [x, y, width, height] numbers, got {b!r}"))
                continue
            boxes[i] = b
        malformed = np.isnan(boxes).all(axis=1)
    else:
        malformed = np.zeros(A, bool)
    x, y, w, h = boxes.T
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(boxes).all(axis=1)
        for i in np.flatnonzero(~finite & ~malformed):
            add(where(int(i), "bbox", f"{raw[i]} has a non-finite value"))
        check = finite & valid_image
        neg = check & ((w < 0) | (h < 0))
        for i in np.flatnonzero(neg):
            add(where(int(i), "bbox", f"{raw[i]} has a negative width or height"))
        check &= ~neg
        H, W = hws[:, 0], hws[:, 1]
        far = check & ((x < -COORDINATE_MARGIN * W) | (y < -COORDINATE_MARGIN * H)
                       | (x + w > (1 + COORDINATE_MARGIN) * W)
                       | (y + h > (1 + COORDINATE_MARGIN) * H))
        for i in np.flatnonzero(far):
            add(where(int(i), "bbox", f"{raw[i]} reaches beyond one image size around the "
                                      f"{int(W[i])}x{int(H[i])} image"))
        outside = check & ~far & (w > 0) & (h > 0) & ((x >= W) | (y >= H) | (x + w <= 0)
                                                      | (y + h <= 0))
        for i in np.flatnonzero(outside):
            add(where(int(i), "bbox", f"{raw[i]} lies entirely outside the "
                                      f"{int(W[i])}x{int(H[i])} image"))


_SEGM_KIND = {list: 0, dict: 1, type(None): 2}


def _check_segmentations(annotations, hws, valid_image, where, add, for_evaluation) -> None:
    segms = [a.get("segmentation") for a in annotations]
    kind = np.array([_SEGM_KIND.get(type(s), 3) for s in segms], np.int8)  # list/dict/None/other
    crowd = np.array([a.get("iscrowd", 0) in (1, True) for a in annotations], bool)
    for i in np.flatnonzero((kind == 2) & valid_image):
        add(where(int(i), "segmentation", "missing (instance masks are required)"))
    is_poly = (kind == 0) & valid_image
    is_rle = (kind == 1) & valid_image
    other = (kind == 3) & valid_image
    for i in np.flatnonzero(other):
        add(where(int(i), "segmentation", "expected polygons (list) or RLE (dict), got "
                                          f"{type(segms[i]).__name__}"))
    # Polygons: one vectorised pass; the exact per-annotation check only where it found something.
    poly_idx = np.flatnonzero(is_poly)
    batch = _polygon_batch([segms[i] for i in poly_idx], hws[poly_idx])
    suspects = poly_idx if batch is None else poly_idx[batch[0] | (batch[1] > 0)]
    for i in suspects:
        i = int(i)
        errors, degenerate = _polygon_reasons(segms[i], tuple(hws[i]))
        if errors:
            add(where(i, "segmentation", "; ".join(errors)))
        elif degenerate:
            all_bad = len(degenerate) == len(segms[i])
            severe = for_evaluation or all_bad
            tail = (" (no polygon with 3 points left)" if all_bad else
                    " (pycocotools' evaluation cannot rasterise it)" if for_evaluation else
                    "; dropped, as Detectron2's loader does")
            add(where(i, "segmentation", "; ".join(degenerate) + tail,
                      "error" if severe else "warning"))
    # RLE: every compressed string decoded in one pass.
    rle_idx = [int(i) for i in np.flatnonzero(is_rle)]
    strings = [(i, segms[i].get("counts")) for i in rle_idx
               if isinstance(segms[i].get("counts"), (str, bytes))]
    valid, totals = rle_counts_totals([s for _, s in strings])
    decoded = {i: (bool(v), int(t)) for (i, _), v, t in zip(strings, valid, totals)}
    for i in rle_idx:
        v, t = decoded.get(i, (True, None))
        reason = _rle_problem(segms[i], (int(hws[i, 0]), int(hws[i, 1])), total=t, valid=v)
        if reason:
            add(where(i, "segmentation", reason + (" (crowd region)" if crowd[i] else "")))


def _check_files(names: Dict[Any, str], image_root: Optional[str], source: str, add) -> None:
    """A problem for each image (id -> file name) whose file is not in ``image_root``."""
    if image_root is None:
        return
    listing: Dict[str, Optional[set]] = {}
    for iid, name in names.items():
        if not name:
            continue
        path = os.path.join(image_root, name)
        folder = os.path.dirname(path)
        if folder not in listing:
            try:
                listing[folder] = set(os.listdir(folder))
            except OSError:
                listing[folder] = None
        entries = listing[folder]
        if entries is None or os.path.basename(path) not in entries:
            add(Problem(source, f"image file {path} not found", "file_name", iid, name))


# ------------------------------------------------------------------------------- caching
def _cache_dir() -> str:
    root = os.environ.get("MAYOLACT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                            "mayolact")
    return os.path.join(root, "validation")


def _file_hash(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


_memo: Dict[Tuple, Tuple[List[Problem], List[Tuple[int, str]]]] = {}
_memo_lock = threading.Lock()


def _image_names(dataset) -> List[Tuple[int, str]]:
    images = dataset.get("images") if isinstance(dataset, dict) else None
    return [(img["id"], img["file_name"]) for img in images or []
            if isinstance(img, dict) and _is_int(img.get("id"))
            and isinstance(img.get("file_name"), str) and img["file_name"]]


def validate_coco_json(json_file: str, *, image_root: Optional[str] = None,
                       check_files: bool = True, for_evaluation: bool = False,
                       use_cache: bool = True) -> List[Problem]:
    """:func:`validate_coco_dict` of a json file, with the verdict cached on its content.

    The verdict (and the list of image files) is stored under
    ``$MAYOLACT_CACHE/validation/<sha256 of the json>`` and reused by any later run on the same
    content, which then only hashes the file (and not even that again in the same process while
    its size and modification time are unchanged). The image files are looked up on every call
    (one folder listing each).

    Args:
        json_file: a COCO instances json.
        image_root: the image folder: problems name their image by its path in it.
        check_files: look up every image file in ``image_root``.
        for_evaluation: see :func:`validate_coco_dict`.
        use_cache: read and write the cached verdict.

    Returns:
        list[Problem].

    Raises:
        FileNotFoundError: the json does not exist.
    """
    from mayolact.utils.file_io import write_json_atomic

    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"{json_file}: annotation json not found")
    stat = os.stat(json_file)
    memo_key = (os.path.abspath(json_file), stat.st_size, stat.st_mtime_ns, for_evaluation)
    with _memo_lock:
        found = _memo.get(memo_key) if use_cache else None
    if found is None:
        cache_file = None
        if use_cache:
            purpose = "eval" if for_evaluation else "train"
            key = f"{_file_hash(json_file)}-v{_VALIDATOR_VERSION}-{purpose}"
            cache_file = os.path.join(_cache_dir(), key + ".json")
            try:
                with open(cache_file) as f:
                    cached = json.load(f)
                found = ([Problem(**p) for p in cached["problems"]],
                         [(int(i), str(n)) for i, n in cached["images"]])
                logger.debug("%s: annotation verdict from %s", json_file, cache_file)
            except (OSError, ValueError, TypeError, KeyError):
                found = None
        if found is None:
            dataset = _load_json(json_file)
            found = (validate_coco_dict(dataset, json_file, for_evaluation=for_evaluation),
                     _image_names(dataset))
            del dataset
            if cache_file is not None:
                try:
                    write_json_atomic(cache_file, {
                        "json_file": os.path.abspath(json_file),
                        "problems": [dataclasses.asdict(p) for p in found[0]],
                        "images": found[1]})
                except OSError as e:  # a read-only cache costs time, not correctness
                    logger.warning("cannot cache the annotation verdict in %s: %s", cache_file, e)
        if use_cache:
            with _memo_lock:
                _memo[memo_key] = found
    # The verdict is the content's: name the file it was read from this time.
    problems = [dataclasses.replace(p, source=json_file) if p.source != json_file else p
                for p in found[0]]
    if image_root is not None:
        problems = [dataclasses.replace(p, file_name=os.path.join(image_root, p.file_name))
                    if p.file_name else p for p in problems]
        if check_files:
            _check_files(dict(found[1]), image_root, json_file, problems.append)
    return problems


def _load_json(json_file: str):
    try:
        with open(json_file) as f:
            return json.load(f)
    except ValueError as e:
        raise AnnotationError([Problem(json_file, f"not valid json ({e})")]) from e


def check_coco_json(json_file: str, *, image_root: Optional[str] = None,
                    check_files: bool = True, for_evaluation: bool = False) -> List[Problem]:
    """:func:`validate_coco_json`, raising on errors (:func:`raise_for_problems`).

    Returns:
        list[Problem]: the warnings.
    """
    problems = validate_coco_json(json_file, image_root=image_root, check_files=check_files,
                                  for_evaluation=for_evaluation)
    raise_for_problems(problems)
    return problems


def check_registered_datasets(names: Sequence[str], *, for_evaluation: bool = False,
                              check_files: bool = True) -> List[Problem]:
    """:func:`check_coco_json` on every registered dataset of ``names`` that comes from a COCO
    json (its metadata's ``json_file`` and ``image_root``: the COCO and coco_mini sets, the sets
    of ``DATASETS.YOLACT.COCO_JSON``); other datasets (the built-in shapes) are generated and
    skipped.

    Args:
        names: registered dataset names.
        for_evaluation: the sets are evaluated (see :func:`validate_coco_dict`).
        check_files: also look up every image file.

    Returns:
        list[Problem]: the warnings.

    Raises:
        AnnotationError, FileNotFoundError: see :func:`raise_for_problems`.
    """
    from detectron2.data import MetadataCatalog

    warnings = []
    for name in names:
        meta = MetadataCatalog.get(name)
        json_file = meta.get("json_file")
        if not json_file or "://" in str(json_file):
            continue
        warnings += check_coco_json(json_file, image_root=meta.get("image_root"),
                                    check_files=check_files, for_evaluation=for_evaluation)
    return warnings
