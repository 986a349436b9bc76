"""COCO AP with a choice of backend, and checks for COCO-format detection results.

Two backends compute the same COCO numbers:

* ``"pycocotools"``: the official COCO API (pure Python ``COCOeval``);
* ``"faster_coco_eval"``: the `faster-coco-eval <https://github.com/MiXaiLL76/faster_coco_eval>`_
  package, whose C++ ``COCOeval_faster`` gives the numbers of pycocotools several times faster.

``"auto"`` picks faster-coco-eval when it can be imported and pycocotools otherwise. Detectron2's
own ``use_fast_impl`` (its compiled ``COCOeval_opt``) is never used: the pure-Python Detectron2
installed here does not have it.

:class:`MaYOLACTCOCOEvaluator` is Detectron2's :class:`COCOEvaluator` with only the step that runs
``COCOeval`` replaced; the result dict, the per-category table and the files written to
``output_dir`` are the same as Detectron2's.
"""

import contextlib
import io
import itertools
import json
import logging
import math
import os
import time
from collections import OrderedDict
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np
from detectron2.evaluation import COCOEvaluator
from detectron2.evaluation.coco_evaluation import COCOevalMaxDets
from detectron2.utils.file_io import PathManager
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from mayolact.data.validation import rle_counts_totals
from mayolact.utils.file_io import write_json_atomic  # re-exported: the evaluators write through it

__all__ = [
    "COCO_BACKENDS",
    "SUPPORTED_TASKS",
    "check_tasks",
    "faster_coco_eval_available",
    "resolve_coco_backend",
    "load_coco_gt",
    "run_coco_eval",
    "to_dataset_category_ids",
    "infer_tasks",
    "read_coco_results",
    "validate_coco_results",
    "write_json_atomic",
    "MaYOLACTCOCOEvaluator",
    "coco_metrics",
]

logger = logging.getLogger(__name__)

COCO_BACKENDS = ("auto", "pycocotools", "faster_coco_eval")
SUPPORTED_TASKS = ("bbox", "segm")
_FIELD_OF_TASK = {"bbox": "bbox", "segm": "segmentation"}


def check_tasks(tasks: Sequence[str], what: str = "COCO") -> tuple:
    """``tasks`` as a tuple, after checking that each is in :data:`SUPPORTED_TASKS`.

    Args:
        tasks: task names, e.g. ``("bbox", "segm")``.
        what: the metric, for the message (``"COCO"``, ``"LRP"``).

    Raises:
        ValueError: naming the unsupported tasks.
    """
    tasks = tuple(tasks)
    bad = [t for t in tasks if t not in SUPPORTED_TASKS]
    if bad:
        raise ValueError(f"Unsupported {what} task(s) {bad}; "
                         f"expected a subset of {SUPPORTED_TASKS}")
    return tasks


def faster_coco_eval_available() -> bool:
    """Whether the ``faster_coco_eval`` package (with its compiled extension) can be imported."""
    try:
        import faster_coco_eval  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_coco_backend(name: str) -> str:
    """Turn a ``TEST.YOLACT.COCO_BACKEND`` value into the backend that will run.

    Args:
        name: ``"auto"``, ``"pycocotools"`` or ``"faster_coco_eval"`` (case-insensitive).

    Returns:
        ``"pycocotools"`` or ``"faster_coco_eval"``. ``"auto"`` gives faster-coco-eval when it is
        importable. An explicit ``"faster_coco_eval"`` that is not installed falls back to
        pycocotools with a warning (same numbers, only slower), so that a long training job is not
        lost at its final evaluation.

    Raises:
        ValueError: for any other name.
    """
    key = str(name).strip().lower().replace("-", "_")
    if key not in COCO_BACKENDS:
        raise ValueError(
            f"Unknown COCO evaluation backend {name!r}; expected one of {COCO_BACKENDS}"
        )
    if key == "pycocotools":
        return key
    if faster_coco_eval_available():
        return "faster_coco_eval"
    if key == "faster_coco_eval":
        logger.warning(
            "COCO backend 'faster_coco_eval' was asked for but the package is not installed "
            "(pip install faster-coco-eval); falling back to pycocotools (same numbers, slower)."
        )
    return "pycocotools"


def _is_faster_coco(coco_api) -> bool:
    return type(coco_api).__module__.startswith("faster_coco_eval")


def _read_json(path: str, what: str):
    """The parsed content of a json file (any path PathManager understands).

    Raises:
        FileNotFoundError: naming ``path`` and ``what`` it should be, when it does not exist.
        ValueError: naming ``path``, when it is not valid json.
    """
    if not PathManager.isfile(path):
        raise FileNotFoundError(f"{path}: {what} not found")
    with PathManager.open(path, "r") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid json ({e})") from e


def load_coco_gt(json_file: str, backend: str = "pycocotools"):
    """Load a COCO ground-truth json with the COCO class of ``backend`` (its chatter silenced).

    Args:
        json_file: path of a COCO instances json (any path PathManager understands).
        backend: ``"pycocotools"``, ``"faster_coco_eval"`` or ``"auto"``.

    Returns:
        ``pycocotools.coco.COCO`` or ``faster_coco_eval.COCO``; :func:`run_coco_eval` evaluates with
        the backend the object belongs to.

    Raises:
        FileNotFoundError: when ``json_file`` does not exist.
        ValueError: when it is not valid json or not a COCO dict with "images" and "categories".
    """
    backend = resolve_coco_backend(backend)
    dataset = _read_json(json_file, "ground-truth json")
    if not isinstance(dataset, dict) or "images" not in dataset or "categories" not in dataset:
        raise ValueError(
            f"{json_file}: not a COCO ground-truth file (needs 'images' and 'categories')"
        )
    if backend == "faster_coco_eval":
        from faster_coco_eval import COCO as FasterCOCO

        with contextlib.redirect_stdout(io.StringIO()):
            api = FasterCOCO(dataset)
    else:
        with contextlib.redirect_stdout(io.StringIO()):
            api = COCO()
            api.dataset = dataset
            api.createIndex()
    return api


def _results_for_task(coco_results: Iterable[dict], iou_type: str) -> List[dict]:
    """Shallow copies of the results for one task (the COCO API adds keys to what it loads).

    For ``segm`` the "bbox" field is dropped, as Detectron2 does, so that COCO takes the mask area
    (not the box area) for the small / medium / large split.
    """
    if iou_type == "segm":
        return [{k: v for k, v in r.items() if k != "bbox"} for r in coco_results]
    return [dict(r) for r in coco_results]


def run_coco_eval(
    coco_gt,
    coco_results: Sequence[dict],
    iou_type: str,
    *,
    img_ids: Optional[Sequence[int]] = None,
    max_dets_per_image: int = 100,
    verbose: bool = True,
):
    """Run COCOeval (evaluate, accumulate, summarize) on COCO-format results.

    The backend follows the class of ``coco_gt`` (see :func:`load_coco_gt`). The results are not
    modified (the COCO API gets shallow copies).

    Detectron2's ``_evaluate_predictions_on_coco`` also takes a ``cocoeval_fn``, but whenever the
    limit is not 100 (the quick and shapes configs use 20 and 50) it replaces that class by
    pycocotools' ``COCOevalMaxDets``: on faster-coco-eval's ground truth this runs at pycocotools'
    speed and its statistics differ in the last bits. This function keeps the backend's own class
    for every limit.

    Args:
        coco_gt: ``pycocotools.coco.COCO`` or ``faster_coco_eval.COCO`` with the ground truth.
        coco_results: COCO result dicts ("image_id", dataset "category_id", "score" and "bbox" or
            "segmentation"); must not be empty.
        iou_type: ``"bbox"`` or ``"segm"``.
        img_ids: evaluate only these images (default: every image of ``coco_gt``).
        max_dets_per_image: COCO's detection limit per image (and per category, as pycocotools
            applies it); the AR limits are ``[1, 10, max_dets_per_image]``.
        verbose: let the backend print its summary table to stdout.

    Returns:
        The evaluated ``COCOeval`` object (``.stats`` and ``.eval["precision"]`` filled).

    Raises:
        ValueError: for an unsupported ``iou_type`` or empty results.
    """
    check_tasks([iou_type])
    if len(coco_results) == 0:
        raise ValueError(
            "run_coco_eval needs at least one detection (COCO cannot load empty results)"
        )
    max_dets = [1, 10, int(max_dets_per_image)]
    sink = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with sink:
        coco_dt = coco_gt.loadRes(_results_for_task(coco_results, iou_type))
        if _is_faster_coco(coco_gt):
            from faster_coco_eval import COCOeval_faster

            # print_function=print: the same stdout summary as pycocotools.
            coco_eval = COCOeval_faster(coco_gt, coco_dt, iou_type, print_function=print)
        elif max_dets[2] != 100:
            # pycocotools' summarize() hard-codes maxDets=100 for AP; Detectron2's subclass doesn't.
            coco_eval = COCOevalMaxDets(coco_gt, coco_dt, iou_type)
        else:
            coco_eval = COCOeval(coco_gt, coco_dt, iou_type)
        coco_eval.params.maxDets = max_dets
        if img_ids is not None:
            coco_eval.params.imgIds = list(img_ids)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval


def to_dataset_category_ids(coco_results: Sequence[dict], metadata) -> List[dict]:
    """Copies of the results with contiguous class ids (0..K-1) turned back into dataset ids.

    Args:
        coco_results: result dicts whose "category_id" is the model's contiguous class index.
        metadata: Detectron2 ``Metadata``; without ``thing_dataset_id_to_contiguous_id`` the ids are
            kept as they are (the dataset's ids are already contiguous).

    Returns:
        New (shallow-copied) dicts; the input is not modified.

    Raises:
        ValueError: when a class index is not in the dataset's mapping.
    """
    mapping = (
        getattr(metadata, "thing_dataset_id_to_contiguous_id", None)
        if metadata is not None
        else None
    )
    if not mapping:
        return [dict(r) for r in coco_results]
    reverse = {int(v): int(k) for k, v in mapping.items()}
    out = []
    for r in coco_results:
        c = int(r["category_id"])
        if c not in reverse:
            raise ValueError(
                f"A prediction has class {c}, but the dataset has {len(reverse)} classes "
                f"(expected 0..{len(reverse) - 1})"
            )
        r = dict(r)
        r["category_id"] = reverse[c]
        out.append(r)
    return out


def infer_tasks(coco_results: Sequence[dict]) -> List[str]:
    """``["bbox"]``, plus ``"segm"`` when any result has a "segmentation"."""
    tasks = ["bbox"]
    if any("segmentation" in r for r in coco_results):
        tasks.append("segm")
    return tasks


def read_coco_results(path: str) -> list:
    """Read a COCO results json (e.g. COCOEvaluator's ``coco_instances_results.json``).

    Raises:
        FileNotFoundError: when the file is missing.
        ValueError: naming the file, when it is not valid json or not a json list.
    """
    results = _read_json(path, "results file")
    if not isinstance(results, list):
        raise ValueError(
            f"{path}: expected a json list of detections (COCO results format), "
            f"got a {type(results).__name__}"
        )
    return results


def _examples(values, limit: int = 5) -> str:
    values = sorted(values, key=repr)
    more = f" ... ({len(values)} in all)" if len(values) > limit else ""
    return ", ".join(repr(v) for v in values[:limit]) + more


def _is_xywh(box) -> bool:
    return (
        isinstance(box, (list, tuple))
        and len(box) == 4
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)
    )


def _is_rle(segm) -> bool:
    """A compressed RLE: ``{"size": [h, w], "counts": str}`` (what ``mask_util.encode`` gives)."""
    if not (isinstance(segm, dict) and "counts" in segm and "size" in segm):
        return False
    size = segm["size"]
    return (
        isinstance(segm["counts"], (str, bytes))
        and isinstance(size, (list, tuple))
        and len(size) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in size)
    )


def _bad_entry(source: str, i: int, field: str, what: str) -> ValueError:
    return ValueError(f"{source}: entry {i}: field {field!r} {what}")


def _image_sizes(coco_gt) -> Dict:
    """image id -> (height, width) of a ground truth (either backend)."""
    return {
        img["id"]: (img.get("height"), img.get("width"))
        for img in coco_gt.loadImgs(coco_gt.getImgIds())
    }


def validate_coco_results(
    results: Sequence[dict], coco_gt, tasks: Optional[Sequence[str]] = None, source: str = "results"
) -> List[str]:
    """Check COCO-format results against a ground truth and return the tasks to evaluate.

    Everything the COCO backends would accept silently (NaN scores or boxes, a mask of another
    size) or fail on with a library traceback is found here, with the entry's index and field.

    Args:
        results: the loaded results list.
        coco_gt: the ground-truth COCO api (either backend).
        tasks: tasks asked for; ``None`` infers them: bbox, and segm when any result has a mask
            (then every result must have one).
        source: the file name, for messages.

    Returns:
        The tasks, a sub-list of ``["bbox", "segm"]`` in that order.

    Raises:
        ValueError: naming ``source``, and for an entry its index and field: not a list; an entry
            that is not a dict or lacks "image_id" / "category_id" / "score"; a score that is not
            a finite number; image or category ids absent from the ground truth; for bbox, a
            missing "bbox" or one that is not 4 finite numbers with width and height >= 0; for
            segm, a missing "segmentation", one that is not a compressed RLE dict, whose size
            is not its image's (height, width), or whose counts do not decode or do not sum to
            height x width (checked without pycocotools, which would hang); an unknown task.
    """
    if not isinstance(results, list):
        raise ValueError(f"{source}: expected a list of detections, got a {type(results).__name__}")
    if tasks is not None:
        check_tasks(tasks)
    required = ["image_id", "category_id", "score"]
    for i, r in enumerate(results):
        if not isinstance(r, dict):
            raise ValueError(f"{source}: entry {i} is a {type(r).__name__}, not a dict")
        missing = [k for k in required if k not in r]
        if missing:
            raise ValueError(f"{source}: entry {i} is missing {missing} (keys: {sorted(r)})")
        score = r["score"]
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise ValueError(f"{source}: entry {i} has a non-numeric score {score!r}")
        if not math.isfinite(score):
            raise _bad_entry(source, i, "score", f"is {score}, not a finite number")
    gt_images = set(coco_gt.getImgIds())
    gt_cats = set(coco_gt.getCatIds())
    unknown_images = {r["image_id"] for r in results} - gt_images
    if unknown_images:
        raise ValueError(
            f"{source}: {len(unknown_images)} image id(s) are not in the ground truth: "
            f"{_examples(unknown_images)}"
        )
    unknown_cats = {r["category_id"] for r in results} - gt_cats
    if unknown_cats:
        raise ValueError(
            f"{source}: category id(s) not in the ground truth: {_examples(unknown_cats)} "
            f"(ground-truth ids: {_examples(gt_cats, 10)})"
        )
    if tasks is None:
        tasks = ["bbox"]
        if any("segmentation" in r for r in results):
            tasks.append("segm")
    tasks = [t for t in SUPPORTED_TASKS if t in tasks]
    sizes = _image_sizes(coco_gt) if "segm" in tasks else {}
    for task in tasks:
        field = _FIELD_OF_TASK[task]
        lacking = [i for i, r in enumerate(results) if field not in r]
        if lacking:
            raise _bad_entry(
                source, lacking[0], field,
                f"is missing, but task {task!r} is evaluated ({len(lacking)} of {len(results)} "
                f"entries lack it; to evaluate without it, leave {task!r} out of the tasks)",
            )
        check = _is_xywh if task == "bbox" else _is_rle
        malformed = [i for i, r in enumerate(results) if not check(r[field])]
        if malformed:
            what = (
                "[x, y, w, h] numbers"
                if task == "bbox"
                else "a compressed RLE dict ('size' [h, w], 'counts' a string)"
            )
            i = malformed[0]
            raise ValueError(
                f"{source}: {len(malformed)} {field!r} value(s) are not {what} "
                f"(first: entry {i}: {str(results[i][field])[:80]})"
            )
        for i, r in enumerate(results):
            if task == "bbox":
                box = r["bbox"]
                if not all(math.isfinite(v) for v in box):
                    raise _bad_entry(source, i, "bbox", f"{box} has a non-finite value")
                if box[2] < 0 or box[3] < 0:
                    raise _bad_entry(source, i, "bbox", f"{box} has a negative width or height")
            else:
                size = list(r["segmentation"]["size"])
                expected = list(sizes[r["image_id"]])
                if size != expected:
                    raise _bad_entry(
                        source, i, "segmentation",
                        f"has size {size}, but image {r['image_id']} is {expected} "
                        "(height, width)",
                    )
        if task == "segm":
            _check_rle_counts(results, source)
    return tasks


def _check_rle_counts(results: Sequence[dict], source: str) -> None:
    """Every result's RLE counts decode and cover exactly its image (h x w pixels): both COCO
    backends loop forever in ``mask.iou`` on counts that sum to less, and pycocotools on more."""
    counts = [r["segmentation"]["counts"] for r in results]
    valid, totals = rle_counts_totals(counts)
    areas = np.array([r["segmentation"]["size"][0] * r["segmentation"]["size"][1]
                      for r in results], np.int64)
    bad = np.flatnonzero(~valid | (totals != areas))
    if bad.size:
        i = int(bad[0])
        what = (f"counts {str(counts[i])[:40]!r} cannot be decoded as a COCO RLE" if not valid[i]
                else f"counts sum to {totals[i]} pixels, not height x width = {areas[i]}")
        raise _bad_entry(source, i, "segmentation",
                         f"{what} ({bad.size} of {len(results)} entries have such counts)")


class MaYOLACTCOCOEvaluator(COCOEvaluator):
    """Detectron2's ``COCOEvaluator`` evaluated by pycocotools or faster-coco-eval.

    Everything but the ``COCOeval`` run is Detectron2's: ``process`` (``instances_to_coco_json``),
    gathering in distributed runs, the ``coco_instances_results.json`` and
    ``instances_predictions.pth`` dumps, the result dict
    ``{"bbox": {"AP", "AP50", ..., "AP-<class>"}, "segm": {...}}`` (x100) and the per-category
    table. Detectron2's ``use_fast_impl`` is always off.
    """

    def __init__(
        self,
        dataset_name: str,
        tasks: Optional[Sequence[str]] = None,
        distributed: bool = True,
        output_dir: Optional[str] = None,
        *,
        backend: str = "auto",
        max_dets_per_image: Optional[int] = None,
        allow_cached_coco: bool = True,
        mob_edges: Sequence[float] = (),
    ):
        """
        Args:
            dataset_name: a registered dataset (with a COCO ``json_file`` in its metadata, or
                convertible to one; then ``output_dir`` is needed, as in Detectron2).
            tasks: a subset of ``("bbox", "segm")``; ``None`` infers them from the predictions.
            distributed: gather predictions from all ranks and evaluate on the main one.
            output_dir: where the predictions are dumped (optional).
            backend: ``"auto"``, ``"pycocotools"`` or ``"faster_coco_eval"`` (see
                :func:`resolve_coco_backend`).
            max_dets_per_image: COCO's detection limit (default 100).
            allow_cached_coco: reuse a converted COCO json from an earlier run.
            mob_edges: edges of GT mask-over-box ranges; non-empty adds AP / AP50 / AP75 per
                range to each task's results (:mod:`mayolact.evaluation.mob_ranges`).
        """
        from .mob_ranges import parse_mob_edges

        if tasks is not None:
            tasks = check_tasks(tasks)
        parse_mob_edges(mob_edges)  # bad edges fail here, not after inference
        self._mob_edges = tuple(float(e) for e in mob_edges)
        self._gt_mob = None  # GT ratios, computed at the first evaluation
        super().__init__(
            dataset_name,
            tasks=tasks,
            distributed=distributed,
            output_dir=output_dir,
            max_dets_per_image=max_dets_per_image,
            use_fast_impl=False,
            allow_cached_coco=allow_cached_coco,
        )
        self._use_fast_impl = False  # never Detectron2's COCOeval_opt
        self._backend = resolve_coco_backend(backend)
        self._faster_coco_api = None
        self._logger.info(f"COCO AP backend: {self._backend}")

    @property
    def backend(self) -> str:
        """The backend in use: ``"pycocotools"`` or ``"faster_coco_eval"``."""
        return self._backend

    @property
    def coco_api(self) -> COCO:
        """The pycocotools ground truth (shared with the LRP evaluator)."""
        return self._coco_api

    def _gt_api(self):
        if self._backend == "pycocotools":
            return self._coco_api
        if self._faster_coco_api is None:
            # A separate copy: both COCO APIs annotate the ground-truth dicts they evaluate.
            self._faster_coco_api = load_coco_gt(self._metadata.json_file, "faster_coco_eval")
        return self._faster_coco_api

    def _eval_predictions(self, predictions, img_ids=None):
        """Fill ``self._results`` with each task's COCO metrics (replaces Detectron2's method)."""
        coco_results = list(itertools.chain(*[x["instances"] for x in predictions]))
        tasks = self._tasks or self._tasks_from_predictions(coco_results)
        unsupported = [t for t in tasks if t not in SUPPORTED_TASKS]
        if unsupported:
            self._logger.warning(f"Skipping unsupported task(s) {unsupported}")
        tasks = [t for t in tasks if t in SUPPORTED_TASKS]
        coco_results = to_dataset_category_ids(coco_results, self._metadata)

        if self._output_dir:
            file_path = os.path.join(self._output_dir, "coco_instances_results.json")
            self._logger.info(f"Saving results to {file_path}")
            write_json_atomic(file_path, coco_results)

        if not self._do_evaluation:
            self._logger.info("Annotations are not available for evaluation.")
            return

        max_dets = self._max_dets_per_image[2]
        self._logger.info(f"Evaluating predictions with {self._backend} at maxDets {max_dets} "
                          "(TEST.DETECTIONS_PER_IMAGE) ...")
        if max_dets != 100:
            self._logger.warning(
                f"AP is computed with at most {max_dets} detections per image "
                f"(TEST.DETECTIONS_PER_IMAGE {max_dets}, which also caps the model's output), not "
                "COCO's standard 100: set TEST.DETECTIONS_PER_IMAGE 100 for numbers comparable "
                "with published COCO AP")
        for task in sorted(tasks):
            coco_eval = (
                run_coco_eval(
                    self._gt_api(),
                    coco_results,
                    task,
                    img_ids=img_ids,
                    max_dets_per_image=self._max_dets_per_image[2],
                )
                if len(coco_results) > 0
                else None  # the COCO API cannot load empty results: all metrics become NaN
            )
            self._results[task] = self._derive_coco_results(
                coco_eval, task, class_names=self._metadata.get("thing_classes")
            )
            if self._mob_edges and coco_results:
                self._results[task].update(self._mob_range_results(coco_results, task, img_ids))

    def _mob_range_results(self, coco_results, task, img_ids):
        """AP / AP50 / AP75 of ``task`` per GT MOB range, logged as tables (x100)."""
        from .mob_ranges import (
            format_per_class_range_table,
            format_range_table,
            gt_mob_ratios,
            mob_range_metrics,
            range_results_dict,
            results_have_masks,
        )

        if not results_have_masks(coco_results):
            self._logger.info(f"No masks in the {task} results: no AP by MOB range")
            return {}
        start = time.perf_counter()
        if self._gt_mob is None:
            self._gt_mob = gt_mob_ratios(self._coco_api)
        result = mob_range_metrics(
            self._coco_api, coco_results, task, self._mob_edges,
            max_dets_per_image=self._max_dets_per_image[2], img_ids=img_ids,
            gt_ratios=self._gt_mob,
        )
        self._logger.info(
            f"Evaluation results for {task} by GT mask-over-box ratio (COCO's area-range rules, "
            f"{time.perf_counter() - start:.2f} s): \n{format_range_table(result)}"
        )
        names = self._metadata.get("thing_classes")
        if names is not None and len(names) == result.per_class_ap.shape[0]:
            self._logger.info(
                f"Per-category {task} AP by MOB range: \n"
                + format_per_class_range_table(result, names)
            )
        return range_results_dict(result)


def coco_metrics(coco_eval, iou_type: str, class_names: Optional[Sequence[str]] = None):
    """COCO metrics of an evaluated ``COCOeval`` in Detectron2's form (x100; NaN when undefined).

    Args:
        coco_eval: what :func:`run_coco_eval` returned, or ``None`` (no detections: all NaN).
        iou_type: ``"bbox"`` or ``"segm"``.
        class_names: names of the ground-truth categories in sorted-id order; adds "AP-<name>".

    Returns:
        OrderedDict: "AP", "AP50", "AP75", "APs", "APm", "APl", then "AP-<name>" per class.
    """
    check_tasks([iou_type])
    names = ["AP", "AP50", "AP75", "APs", "APm", "APl"]
    nan = float("nan")
    if coco_eval is None:
        return OrderedDict((n, nan) for n in names)
    stats = np.asarray(coco_eval.stats[: len(names)], dtype=np.float64)
    out = OrderedDict((n, float(v * 100) if v >= 0 else nan) for n, v in zip(names, stats))
    if class_names is None:
        return out
    precision = np.asarray(coco_eval.eval["precision"])  # (T, R, K, A, M)
    if precision.shape[2] != len(class_names):
        raise ValueError(
            f"{len(class_names)} class names for {precision.shape[2]} evaluated categories"
        )
    per_class = precision[:, :, :, 0, -1]  # area "all", the largest maxDets
    valid = per_class > -1
    sums = np.where(valid, per_class, 0.0).sum(axis=(0, 1))
    counts = valid.sum(axis=(0, 1))
    ap = np.divide(sums, counts, out=np.full(len(class_names), nan), where=counts > 0)
    for name, value in zip(class_names, ap):
        out[f"AP-{name}"] = float(value * 100)
    return out

