"""A procedural instance-segmentation dataset in which the object's *shape* matters.

Every image shows 2-6 objects of eight classes chosen so that the mask-over-box (MOB) ratio of the
ground truths spreads from about 0.1 to 1 (Definition 1 of the paper):

========  ==========================================  ===========================
class     shape                                       MOB |M| / |B|, 10-90th pct.
========  ==========================================  ===========================
square    filled axis-aligned square or near-square   0.76-1 (median 1)
disc      filled circle                               0.59-0.80 (median 0.76)
triangle  isosceles triangle, any rotation            0.41-0.55
ring      annulus, inner/outer radius 0.6-0.85        0.22-0.45
crescent  disc minus a shifted disc                   0.27-0.43
L         L shape, rotated by a multiple of 90 deg    0.32-0.57
U         U shape, rotated by a multiple of 90 deg    0.38-0.69
bar       thin bar rotated by 30-60 deg               0.12-0.23
========  ==========================================  ===========================

(measured on the 2000 training images; occlusion lowers some ratios, e.g. of squares).
Over all GTs 59 % have MOB < 0.5 (COCO: about 30 %).

Objects have random sizes (12-45 % of the image side), positions and colours, a little shading, and
occlude each other: later objects are painted over earlier ones, the masks are the *visible* parts,
and an object whose visible area falls below 30 % of its full (in-image) area or 48 pixels is
dropped: the image is then re-rendered without it, so every visible object is annotated. Boxes are
the exact tight boxes of the visible masks. Backgrounds are textured (gradients, smooth noise,
stripes) and carry clutter (small blobs and thin lines that are not instances), plus pixel noise.
Object colours are vivid (one channel at least 190) and background base colours darker (every
channel below 140, plus texture): with colours drawn alike (generator version 1), objects and
backgrounds were so often locally indistinguishable that a model trained from scratch for the
demo's minutes learnt nothing but constants. Telling the eight shapes apart, separating touching
and occluding objects, and ignoring the clutter remain the task.

Everything is deterministic: image ``i`` of a set depends only on ``(seed, i)`` and the generator
parameters. Images are written once as PNG files into a cache folder (atomically, temp + rename), so
Detectron2's ``read_image``, ``DatasetMapper`` and ``Visualizer`` work unchanged. The cache folder
is ``$MAYOLACT_CACHE/shapes/<hash>`` (or ``~/.cache/mayolact/shapes/<hash>``), the hash covering
every parameter and the generator version. The dataset dicts are generated on the first
``DatasetCatalog.get`` and cached there too (``dataset.json``); a COCO json (for ``COCOEvaluator``)
is written the first time ``MetadataCatalog.get(name).json_file`` is read.

Registered at import time (lazily: nothing is generated before first use):

- ``mayolact_shapes_train``: ``$MAYOLACT_SHAPES_TRAIN_IMAGES`` images (default 2000), seed
  ``$MAYOLACT_SHAPES_SEED`` (default 0).
- ``mayolact_shapes_val``: ``$MAYOLACT_SHAPES_VAL_IMAGES`` images (default 200), seed
  ``$MAYOLACT_SHAPES_SEED + 1``.

Both use ``$MAYOLACT_SHAPES_SIZE`` x ``$MAYOLACT_SHAPES_SIZE`` images (default 256). Generating the
2000 training images (PNG files included) takes 10-20 s of one CPU core, once.
"""
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import pycocotools.mask as mask_util
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.catalog import Metadata
from detectron2.data.datasets.coco import convert_to_coco_json
from detectron2.structures import BoxMode

from mayolact.utils.file_io import atomic_open, write_json_atomic

__all__ = [
    "SHAPES_CLASSES",
    "SHAPES_COLORS",
    "render_shapes_image",
    "generate_shapes_dicts",
    "load_shapes",
    "register_shapes",
    "shapes_cache_dir",
]

logger = logging.getLogger(__name__)

#: Bump whenever the generator's output changes: it is part of the cache hash.
GENERATOR_VERSION = 2
#: Background base colours are drawn per channel in [0, _BG_MAX); object colours have one channel in
#: [_OBJ_MIN_PEAK, 255]. Version 1 drew both in [0, 255], which made objects and backgrounds
#: locally indistinguishable too often for a model trained from scratch in minutes.
_BG_MAX = 140.0
_OBJ_MIN_PEAK = 190.0

SHAPES_CLASSES = ["square", "disc", "triangle", "ring", "crescent", "L", "U", "bar"]
#: RGB colours used by the Visualizer for each class (the objects themselves have random colours).
SHAPES_COLORS = [
    (220, 20, 60), (0, 130, 200), (60, 180, 75), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (128, 128, 0),
]

#: :func:`generate_shapes_dicts` logs its progress for sets of at least this many images.
PROGRESS_MIN_IMAGES = 100

_DEFAULTS = dict(
    min_objects=2,
    max_objects=6,
    size_range=(0.12, 0.45),
    min_visible_frac=0.3,
    min_visible_pixels=48,
)


# --------------------------------------------------------------------------------- shape drawing
def _rot(points: np.ndarray, angle: float) -> np.ndarray:
    """Rotate (N, 2) points about the origin by ``angle`` radians."""
    c, s = np.cos(angle), np.sin(angle)
    return points @ np.array([[c, s], [-s, c]])


def _fill_poly(mask: np.ndarray, points: np.ndarray, center: Tuple[float, float]) -> None:
    """Fill the polygon ``points`` (N, 2), given relative to ``center``, into ``mask`` (1 = on)."""
    pts = np.round(points + np.asarray(center)[None, :]).astype(np.int32)
    cv2.fillPoly(mask, [pts], 1, lineType=cv2.LINE_8)


def _draw_shape(mask: np.ndarray, cls: int, center: Tuple[float, float], size: float,
                rng: np.random.Generator) -> None:
    """Draw shape class ``cls`` of extent about ``size`` pixels centred on ``center`` into ``mask``.

    Args:
        mask: uint8 (H, W), zeros; the shape's pixels are set to 1.
        cls: index into :data:`SHAPES_CLASSES`.
        center: (x, y) in pixels.
        size: side of the shape's (unrotated) bounding square, in pixels.
        rng: random generator (drawn from in a fixed order, for determinism).
    """
    cx, cy = center
    half = size / 2.0
    name = SHAPES_CLASSES[cls]
    if name == "square":
        w, h = size * rng.uniform(0.8, 1.0), size * rng.uniform(0.8, 1.0)
        pts = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]])
        _fill_poly(mask, pts, center)
    elif name == "disc":
        cv2.circle(mask, (int(round(cx)), int(round(cy))), int(round(half)), 1, -1, cv2.LINE_8)
    elif name == "triangle":
        height = size * rng.uniform(0.75, 1.0)
        pts = np.array([[-half, height / 3], [half, height / 3], [0.0, -2 * height / 3]])
        _fill_poly(mask, _rot(pts, rng.uniform(0, 2 * np.pi)), center)
    elif name == "ring":
        inner = rng.uniform(0.6, 0.85)
        c = (int(round(cx)), int(round(cy)))
        cv2.circle(mask, c, int(round(half)), 1, -1, cv2.LINE_8)
        cv2.circle(mask, c, int(round(half * inner)), 0, -1, cv2.LINE_8)
    elif name == "crescent":
        cut_r = half * rng.uniform(0.8, 0.95)
        shift = half * rng.uniform(0.35, 0.6)
        phi = rng.uniform(0, 2 * np.pi)
        cv2.circle(mask, (int(round(cx)), int(round(cy))), int(round(half)), 1, -1, cv2.LINE_8)
        cut = (int(round(cx + shift * np.cos(phi))), int(round(cy + shift * np.sin(phi))))
        cv2.circle(mask, cut, int(round(cut_r)), 0, -1, cv2.LINE_8)
    elif name == "L":
        t = size * rng.uniform(0.18, 0.35)
        s = size
        pts = np.array([[0, 0], [t, 0], [t, s - t], [s, s - t], [s, s], [0, s]]) - half
        _fill_poly(mask, _rot(pts, rng.integers(4) * np.pi / 2), center)
    elif name == "U":
        t = size * rng.uniform(0.14, 0.3)
        s = size
        pts = np.array([[0, 0], [t, 0], [t, s - t], [s - t, s - t], [s - t, 0], [s, 0], [s, s],
                        [0, s]]) - half
        _fill_poly(mask, _rot(pts, rng.integers(4) * np.pi / 2), center)
    elif name == "bar":
        length = size * rng.uniform(1.0, 1.4)
        width = max(3.0, length * rng.uniform(0.05, 0.14))
        angle = np.deg2rad(rng.uniform(30, 60)) * rng.choice([-1.0, 1.0])
        pts = np.array([[-length / 2, -width / 2], [length / 2, -width / 2],
                        [length / 2, width / 2], [-length / 2, width / 2]])
        _fill_poly(mask, _rot(pts, angle), center)
    else:  # pragma: no cover - guarded by the class list
        raise ValueError(f"unknown shape class {cls}")


# ----------------------------------------------------------------------------- backgrounds
def _smooth_noise(rng: np.random.Generator, size: int, channels: int) -> np.ndarray:
    """Low-frequency noise in [0, 1], float32 (size, size, channels)."""
    cells = int(rng.choice([3, 5, 9, 17]))
    small = rng.random((cells, cells, channels)).astype(np.float32)
    out = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    return np.clip(out.reshape(size, size, channels), 0.0, 1.0)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A textured background, float32 RGB (size, size, 3) in [0, 255]."""
    kind = int(rng.integers(3))
    c0, c1 = rng.uniform(0, _BG_MAX, size=(2, 3)).astype(np.float32)
    ramp = np.arange(size, dtype=np.float32) / size
    if kind == 0:  # linear gradient in a random direction
        phi = rng.uniform(0, 2 * np.pi)
        t = ramp[None, :] * np.float32(np.cos(phi)) + ramp[:, None] * np.float32(np.sin(phi))
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    elif kind == 1:  # smooth colour noise
        t = None
        bg = c0 + (c1 - c0) * _smooth_noise(rng, size, 3)
    else:  # stripes, hard or soft, with a random angle and period
        phi = rng.uniform(0, np.pi)
        period = rng.uniform(0.03, 0.15)
        arg = (ramp[None, :] * np.float32(np.cos(phi) * 2 * np.pi / period)
               + ramp[:, None] * np.float32(np.sin(phi) * 2 * np.pi / period))
        wave = np.sin(arg)
        t = (wave > 0).astype(np.float32) if rng.random() < 0.5 else 0.5 + 0.5 * wave
    if t is not None:
        bg = c0 + (c1 - c0) * t[..., None]
    # Mix in a little smooth noise so that no background is flat.
    bg += (_smooth_noise(rng, size, 1) - 0.5) * np.float32(rng.uniform(0, 40))
    return bg


def _object_colour(rng: np.random.Generator) -> np.ndarray:
    """A random object colour, float (3,): any hue, but one channel at least ``_OBJ_MIN_PEAK``, so
    that objects stand out from the darker backgrounds (whose channels stay below ``_BG_MAX``
    plus texture)."""
    colour = rng.uniform(0, 255, size=3)
    colour[int(rng.integers(3))] = rng.uniform(_OBJ_MIN_PEAK, 255)
    return colour


def _clutter(rng: np.random.Generator, img: np.ndarray) -> None:
    """Draw small distractor blobs and thin short lines (not instances) onto ``img`` in place."""
    size = img.shape[0]
    n = int(rng.integers(3, 13))
    for _ in range(n):
        colour = tuple(float(c) for c in rng.uniform(0, 255, size=3))
        x, y = rng.uniform(0, size, size=2)
        if rng.random() < 0.5:
            r = int(rng.integers(2, 6))
            cv2.circle(img, (int(x), int(y)), r, colour, -1, cv2.LINE_AA)
        else:
            length = rng.uniform(8, 24)
            phi = rng.uniform(0, 2 * np.pi)
            p1 = (int(x), int(y))
            p2 = (int(x + length * np.cos(phi)), int(y + length * np.sin(phi)))
            cv2.line(img, p1, p2, colour, 1, cv2.LINE_AA)


# --------------------------------------------------------------------------------- rendering
def _tight_boxes(masks: np.ndarray) -> np.ndarray:
    """Tight XYXY boxes (pixel-edge convention, x2/y2 exclusive) of (N, H, W) non-empty masks."""
    n, h, w = masks.shape
    rows, cols = masks.any(axis=2), masks.any(axis=1)  # (N, H), (N, W)
    y1 = rows.argmax(axis=1)
    y2 = h - rows[:, ::-1].argmax(axis=1)
    x1 = cols.argmax(axis=1)
    x2 = w - cols[:, ::-1].argmax(axis=1)
    return np.stack([x1, y1, x2, y2], axis=1).astype(np.float64)


def render_shapes_image(index: int, image_size: int = 256, seed: int = 0, *,
                        min_objects: int = _DEFAULTS["min_objects"],
                        max_objects: int = _DEFAULTS["max_objects"],
                        size_range: Sequence[float] = _DEFAULTS["size_range"],
                        min_visible_frac: float = _DEFAULTS["min_visible_frac"],
                        min_visible_pixels: int = _DEFAULTS["min_visible_pixels"],
                        ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Render image ``index`` of the shapes set with ``seed`` (deterministic).

    Args:
        index: image index, >= 0.
        image_size: S, images are S x S.
        seed: seed of the set; image ``index`` depends only on ``(seed, index)`` and the arguments.
        min_objects, max_objects: number of objects drawn, inclusive range (before dropping).
        size_range: object size range as fractions of S.
        min_visible_frac: an object is dropped when less than this fraction of its in-image area
            stays visible.
        min_visible_pixels: ... or when fewer pixels than this stay visible (or its visible box
            is 4 px or less wide or high).

    Returns:
        tuple: ``image`` uint8 RGB (S, S, 3); ``masks`` bool (N, S, S) visible masks, N >= 1;
        ``classes`` int64 (N,); ``boxes`` float64 (N, 4) tight XYXY_ABS boxes of the masks.
    """
    _check_params(image_size, min_objects, max_objects, size_range, min_visible_frac)
    rng = np.random.default_rng([int(seed), int(index), GENERATOR_VERSION])
    S = int(image_size)
    img = _background(rng, S)
    _clutter(rng, img)
    shading = 0.85 + 0.3 * _smooth_noise(rng, S, 1)[..., 0]  # (S, S) object shading

    full_masks, classes, colours = [], [], []
    # Retry with fresh draws in the (rare) case that every object gets dropped.
    for _ in range(100):
        n = int(rng.integers(min_objects, max_objects + 1))
        for _ in range(n):
            cls = int(rng.integers(len(SHAPES_CLASSES)))
            size = rng.uniform(*size_range) * S
            margin = 0.3 * size  # up to ~20 % of an object may leave the image
            cx, cy = rng.uniform(margin, S - margin, size=2)
            mask = np.zeros((S, S), np.uint8)
            _draw_shape(mask, cls, (cx, cy), size, rng)
            colour = _object_colour(rng)
            if mask.any():
                full_masks.append(mask.astype(bool))
                classes.append(cls)
                colours.append(colour)
        if full_masks:
            full = np.stack(full_masks)  # (K, S, S), in painting order
            full_area = full.reshape(len(full), -1).sum(1)
            owner = _owner_map(full)
            visible = owner[None] == np.arange(len(full))[:, None, None]
            vis_area = visible.reshape(len(full), -1).sum(1)
            boxes = _tight_boxes(visible)  # meaningless for empty masks, which fail anyway
            keep = ((vis_area >= min_visible_frac * full_area) & (vis_area >= min_visible_pixels)
                    & (vis_area > 0) & ((boxes[:, 2] - boxes[:, 0]) > 4)
                    & ((boxes[:, 3] - boxes[:, 1]) > 4))
            if keep.any():
                break
            full_masks, classes, colours = [], [], []
    else:  # pragma: no cover - practically unreachable
        raise RuntimeError(f"shapes: could not place any object in image {index}")

    # Re-render without the dropped objects: removing objects only uncovers the others, so the
    # kept objects stay above the thresholds.
    full = full[keep]
    classes = np.asarray(classes, np.int64)[keep]
    colours = np.asarray(colours, np.float32)[keep]
    owner = _owner_map(full)
    masks = owner[None] == np.arange(len(full))[:, None, None]
    obj = owner >= 0
    img[obj] = colours[owner[obj]] * shading[obj, None]
    noise = rng.standard_normal(size=(S, S, 1), dtype=np.float32)  # grey pixel noise
    img += noise * np.float32(rng.uniform(0, 10))
    image = np.clip(img, 0, 255).astype(np.uint8)
    return image, masks, classes, _tight_boxes(masks)


def _owner_map(full: np.ndarray) -> np.ndarray:
    """Index of the last (topmost) mask covering each pixel of (K, H, W) masks; -1 for none."""
    owner = np.full(full.shape[1:], -1, dtype=np.int64)
    for k in range(full.shape[0]):  # painter's order; K <= max_objects
        owner[full[k]] = k
    return owner


def _check_params(image_size, min_objects, max_objects, size_range, min_visible_frac):
    if int(image_size) < 32:
        raise ValueError(f"shapes: image_size must be >= 32, got {image_size}")
    if not 1 <= int(min_objects) <= int(max_objects):
        raise ValueError(
            f"shapes: need 1 <= min_objects <= max_objects, got {min_objects}, {max_objects}")
    if len(size_range) != 2 or not 0 < size_range[0] <= size_range[1] <= 1:
        raise ValueError(f"shapes: size_range must be (lo, hi) with 0 < lo <= hi <= 1, got "
                         f"{tuple(size_range)}")
    if not 0 <= min_visible_frac <= 1:
        raise ValueError(f"shapes: min_visible_frac must be in [0, 1], got {min_visible_frac}")


def _annotations(masks: np.ndarray, classes: np.ndarray, boxes: np.ndarray) -> List[Dict]:
    """Detectron2 annotation dicts (COCO RLE segmentation, XYXY_ABS box) of one image."""
    rles = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    annos = []
    for rle, cls, box in zip(rles, classes, boxes):
        rle["counts"] = rle["counts"].decode("ascii")
        annos.append({
            "bbox": [float(v) for v in box],
            "bbox_mode": BoxMode.XYXY_ABS,
            "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"]},
            "category_id": int(cls),
            "iscrowd": 0,
        })
    return annos


# ------------------------------------------------------------------------ dataset + caching
def _params(num_images, image_size, seed, **kwargs) -> Dict:
    p = dict(_DEFAULTS)
    p.update(kwargs)
    p["size_range"] = [float(v) for v in p["size_range"]]
    p.update(num_images=int(num_images), image_size=int(image_size), seed=int(seed),
             version=GENERATOR_VERSION)
    return p


def shapes_cache_dir(num_images: int, image_size: int, seed: int, cache_root: Optional[str] = None,
                     **kwargs) -> Path:
    """The cache folder of one parameter set (not created here).

    Args:
        cache_root: root folder; default ``$MAYOLACT_CACHE/shapes`` or ``~/.cache/mayolact/shapes``.
        other args: as :func:`generate_shapes_dicts`.
    """
    if cache_root is None:
        env = os.environ.get("MAYOLACT_CACHE")
        cache_root = Path(env) / "shapes" if env else Path.home() / ".cache" / "mayolact" / "shapes"
    p = _params(num_images, image_size, seed, **kwargs)
    digest = hashlib.sha1(json.dumps(p, sort_keys=True).encode()).hexdigest()[:12]
    return Path(cache_root) / f"s{int(image_size)}_n{int(num_images)}_seed{int(seed)}_{digest}"


def generate_shapes_dicts(num_images: int, image_size: int = 256, seed: int = 0,
                          image_dir: Optional[str] = None, **kwargs) -> List[Dict]:
    """Generate the dataset dicts of a shapes set, optionally writing the images.

    Args:
        num_images: number of images.
        image_size: S (images are S x S).
        seed: seed of the set.
        image_dir: where the PNG images are written (existing files are kept); ``None`` writes
            nothing and the dicts' ``file_name`` are then virtual ``shapes://<seed>/<index>``
            names that only identify the image.
        **kwargs: the generator options of :func:`render_shapes_image`.

    Returns:
        list[dict]: Detectron2 dataset dicts (``file_name``, ``image_id``, ``height``, ``width``,
        ``annotations`` with XYXY_ABS ``bbox``, RLE ``segmentation``, ``category_id``,
        ``iscrowd``).
    """
    if int(num_images) < 0:
        raise ValueError(f"shapes: num_images must be >= 0, got {num_images}")
    if image_dir is not None:
        Path(image_dir).mkdir(parents=True, exist_ok=True)
    dicts = []
    num_images = int(num_images)
    # Progress every 10% for sets big enough to take a while (the default train set: ~30 s).
    report_every = num_images // 10 if num_images >= PROGRESS_MIN_IMAGES else 0
    start = time.perf_counter()
    for i in range(num_images):
        if report_every and i and i % report_every == 0:
            logger.info("shapes: %d/%d images (%.0f%%), %.0f s", i, num_images,
                        100.0 * i / num_images, time.perf_counter() - start)
        image, masks, classes, boxes = render_shapes_image(i, image_size, seed, **kwargs)
        if image_dir is not None:
            path = Path(image_dir) / f"{i:06d}.png"
            if not path.exists():
                ok, buf = cv2.imencode(".png", image[:, :, ::-1])
                if not ok:  # pragma: no cover
                    raise RuntimeError(f"shapes: could not encode image {i} as PNG")
                with atomic_open(str(path), "wb") as f:
                    f.write(buf.tobytes())
            file_name = str(path)
        else:
            file_name = f"shapes://{int(seed)}/{i}"
        dicts.append({
            "file_name": file_name,
            "image_id": i,
            "height": int(image_size),
            "width": int(image_size),
            "annotations": _annotations(masks, classes, boxes),
        })
    return dicts


def load_shapes(num_images: int, image_size: int = 256, seed: int = 0,
                cache_root: Optional[str] = None, **kwargs) -> List[Dict]:
    """Dataset dicts of a shapes set, generating images and annotations into the cache once.

    The first call writes ``images/*.png`` and ``dataset.json`` into
    :func:`shapes_cache_dir`; later calls read ``dataset.json`` (and regenerate if any image file is
    missing). Safe against concurrent callers: every file is written atomically.
    """
    folder = shapes_cache_dir(num_images, image_size, seed, cache_root, **kwargs)
    ann_file = folder / "dataset.json"
    if ann_file.is_file():
        with open(ann_file) as f:
            dicts = json.load(f)
        if all(os.path.isfile(d["file_name"]) for d in dicts):
            for d in dicts:
                for a in d["annotations"]:
                    a["bbox_mode"] = BoxMode(a["bbox_mode"])
            return dicts
        logger.warning("shapes: images missing in %s, regenerating", folder)
    logger.info("shapes: generating %d images of %dx%d (seed %d) into %s", num_images, image_size,
                image_size, seed, folder)
    dicts = generate_shapes_dicts(num_images, image_size, seed, image_dir=str(folder / "images"),
                                  **kwargs)
    serial = [dict(d, annotations=[dict(a, bbox_mode=int(a["bbox_mode"]))
                                   for a in d["annotations"]]) for d in dicts]
    write_json_atomic(str(ann_file), serial)
    return dicts


class _ShapesMetadata(Metadata):
    """Metadata whose ``json_file`` (COCO format, for COCOEvaluator) is written on first access."""

    @property
    def json_file(self) -> str:
        folder = Path(self.__dict__["cache_dir"])
        path = folder / "coco.json"
        if not path.is_file():
            DatasetCatalog.get(self.name)  # make sure the images and dicts exist
            convert_to_coco_json(self.name, str(path), allow_cached=True)
        return str(path)


def register_shapes(name: str, num_images: int, image_size: int = 256, seed: int = 0,
                    cache_root: Optional[str] = None, **kwargs) -> None:
    """Register a shapes set in ``DatasetCatalog`` and ``MetadataCatalog`` (lazily).

    Args:
        name: dataset name.
        num_images, image_size, seed, **kwargs: as :func:`generate_shapes_dicts`.
        cache_root: cache root (see :func:`shapes_cache_dir`).

    The metadata carries ``thing_classes``, ``thing_colors``, ``evaluator_type="coco"``,
    ``thing_dataset_id_to_contiguous_id`` (COCO category ids 1..8) and a lazily written
    ``json_file``.

    Raises:
        ValueError: on bad parameters, or when ``name`` is already registered.
    """
    _check_params(image_size, kwargs.get("min_objects", _DEFAULTS["min_objects"]),
                  kwargs.get("max_objects", _DEFAULTS["max_objects"]),
                  kwargs.get("size_range", _DEFAULTS["size_range"]),
                  kwargs.get("min_visible_frac", _DEFAULTS["min_visible_frac"]))
    if int(num_images) < 1:
        raise ValueError(f"shapes: num_images must be >= 1, got {num_images}")
    if name in DatasetCatalog.list():
        raise ValueError(f"shapes: dataset '{name}' is already registered")
    folder = shapes_cache_dir(num_images, image_size, seed, cache_root, **kwargs)
    DatasetCatalog.register(
        name, lambda: load_shapes(num_images, image_size, seed, cache_root, **kwargs))
    meta = _ShapesMetadata(name=name)
    MetadataCatalog[name] = meta
    meta.set(
        thing_classes=list(SHAPES_CLASSES),
        thing_colors=[list(c) for c in SHAPES_COLORS],
        thing_dataset_id_to_contiguous_id={i + 1: i for i in range(len(SHAPES_CLASSES))},
        evaluator_type="coco",
        cache_dir=str(folder),
        image_size=int(image_size),
    )


def _env_int(key: str, default: int) -> int:
    value = os.environ.get(key)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {key} must be an integer, got {value!r}") from None


def _register_builtin() -> None:
    size = _env_int("MAYOLACT_SHAPES_SIZE", 256)
    seed = _env_int("MAYOLACT_SHAPES_SEED", 0)
    train_n = _env_int("MAYOLACT_SHAPES_TRAIN_IMAGES", 2000)
    val_n = _env_int("MAYOLACT_SHAPES_VAL_IMAGES", 200)
    for name, n, s in (("mayolact_shapes_train", train_n, seed),
                       ("mayolact_shapes_val", val_n, seed + 1)):
        if name not in DatasetCatalog.list():
            register_shapes(name, n, size, s)


_register_builtin()
