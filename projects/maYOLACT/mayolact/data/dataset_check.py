"""Check a dataset the way training and evaluation will use it (``tools/check_dataset.py``).

For each dataset: every annotation is validated first (:mod:`mayolact.data.validation`, before
any library sees it); then every image is mapped through the training mapper ``draws`` times,
each draw with a seed of its own (replayable), and through the test mapper once. The report
gives the failures (file, annotation id, field, reason; or file, dataset index, seed, error),
the instances and positive anchors (the config's anchors and matcher) per training draw, the
draws left without a GT or without a positive anchor, the MOB ratio of the training GTs, and the
images that lose all their GTs to ``INPUT.YOLACT.MIN_GT_SIZE``.

Shape shorthand: G: ground truths of one draw; R: anchors of an S x S input.
"""
import logging
import time
import traceback
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import tqdm
from detectron2.data import DatasetCatalog, MetadataCatalog, get_detection_dataset_dicts

from mayolact.config.config import resolved_num_classes
from mayolact.data.augmentation import filter_small_gts
from mayolact.data.common import replay_sample
from mayolact.data.dataset_mapper import YOLACTDatasetMapper, parse_annotations
from mayolact.data.validation import Problem, validate_coco_json
from mayolact.modeling.anchor_generator import anchors_for_input
from mayolact.modeling.matchers import build_anchor_matcher
from mayolact.structures.integral_image import integral_images
from mayolact.structures.maiou import mask_over_box

__all__ = ["DatasetReport", "check_datasets", "draw_seed", "format_reports", "replay"]

logger = logging.getLogger(__name__)

#: Edges of the MOB-ratio histogram of the report.
MOB_BINS = np.linspace(0.0, 1.0, 11)


def draw_seed(base_seed: int, index: int, draw: int) -> int:
    """The seed of training draw ``draw`` of image ``index`` (what ``--replay`` takes)."""
    return int(np.random.SeedSequence([base_seed, index, draw]).generate_state(1)[0] % 2**31)


@dataclass
class DatasetReport:
    """What :func:`check_datasets` found in one dataset."""

    name: str
    source: str = ""
    images: int = 0
    annotations: int = 0
    problems: List[Problem] = field(default_factory=list)
    failures: List[str] = field(default_factory=list)
    draws: int = 0
    redrawn: int = 0
    instances: List[int] = field(default_factory=list)
    positives: List[int] = field(default_factory=list)
    mobs: List[float] = field(default_factory=list)
    lost_to_min_size: List[str] = field(default_factory=list)
    without_gt: List[str] = field(default_factory=list)
    test_mapped: int = 0
    seconds: float = 0.0

    @property
    def errors(self) -> List[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def failed(self) -> bool:
        return bool(self.errors or self.failures)


def _positives(matcher, anchors, inst) -> int:
    if len(inst) == 0:
        return 0
    kwargs = {}
    if matcher.needs_masks:
        masks = inst.gt_masks.tensor
        ii = inst.gt_integral_images if inst.has("gt_integral_images") else integral_images(masks)
        kwargs = {"integral_masks": ii, "gt_masks": masks}
    _, labels = matcher(anchors, inst.gt_boxes, **kwargs)
    return int((labels == 1).sum())


def check_datasets(cfg, names: Sequence[str], *, draws: int = 3, seed: int = 0,
                   num_images: Optional[int] = None, evaluation: Sequence[str] = (),
                   progress: bool = True) -> List[DatasetReport]:
    """Check each dataset of ``names`` (see the module docstring).

    Args:
        cfg: the config whose mappers, anchors and matcher are used.
        names: registered dataset names.
        draws: training draws per image.
        seed: base seed of the draws (:func:`draw_seed`).
        num_images: check only the first images of each dataset.
        evaluation: the names that are evaluated (a polygon with fewer than 3 points is an
            error there, see :func:`mayolact.data.validation.validate_coco_dict`).
        progress: show a progress bar (stderr).

    Returns:
        list[DatasetReport].
    """
    train_mapper = YOLACTDatasetMapper(cfg, is_train=True)
    test_mapper = YOLACTDatasetMapper(cfg, is_train=False)
    anchors = anchors_for_input(cfg)
    matcher = build_anchor_matcher(cfg)
    num_classes = resolved_num_classes(cfg)
    reports = []
    for name in names:
        start = time.perf_counter()
        report = DatasetReport(name)
        meta = MetadataCatalog.get(name)
        json_file = meta.get("json_file")
        if json_file:
            report.source = json_file
            report.problems = validate_coco_json(json_file, image_root=meta.get("image_root"),
                                                 for_evaluation=name in evaluation)
        if report.errors:
            # Detectron2's loader would fail (or worse) on them: nothing is mapped.
            reports.append(report)
            report.seconds = time.perf_counter() - start
            continue
        dicts = DatasetCatalog.get(name)
        if num_images is not None:
            dicts = dicts[:num_images]
        report.images = len(dicts)
        report.annotations = sum(len(d.get("annotations") or []) for d in dicts)
        bar = tqdm.tqdm(dicts, desc=name, unit="image", disable=not progress)
        for index, d in enumerate(bar):
            _check_image(report, d, index, name, seed, draws, train_mapper, test_mapper,
                         anchors, matcher, num_classes, cfg.INPUT.YOLACT.MIN_GT_SIZE)
        report.seconds = time.perf_counter() - start
        reports.append(report)
    return reports


def _check_image(report, d, index, name, seed, draws, train_mapper, test_mapper, anchors,
                 matcher, num_classes, min_gt_size) -> None:
    file_name = d.get("file_name", "?")
    try:
        test_mapper(d)
        report.test_mapped += 1
    except Exception as e:  # noqa: BLE001  (reported, with the image)
        report.failures.append(f"{file_name} (dataset index {index}, test mapper): "
                               f"{type(e).__name__}: {e}")
    try:
        boxes, _, _, _ = parse_annotations(d.get("annotations") or [], file_name,
                                           (d.get("height"), d.get("width")), num_classes,
                                           need_masks=False)
        if not len(boxes):
            report.without_gt.append(file_name)
        elif not filter_small_gts(boxes, min_gt_size).any():
            report.lost_to_min_size.append(file_name)
    except ValueError:
        pass  # the training draws report it
    for k in range(draws):
        s = draw_seed(seed, index, k)
        report.draws += 1
        try:
            out = replay_sample([d], train_mapper, 0, s)
        except Exception as e:  # noqa: BLE001  (reported, with what replays it)
            report.failures.append(
                f"{file_name} (dataset index {index}, seed {s}): {type(e).__name__}: {e} "
                f"[replay: --dataset {name} --replay {index}:{s}]")
            continue
        if out is None:
            report.redrawn += 1
            continue
        inst = out["instances"]
        report.instances.append(len(inst))
        with torch.no_grad():
            report.positives.append(_positives(matcher, anchors, inst))
            ii = (inst.gt_integral_images if inst.has("gt_integral_images")
                  else integral_images(inst.gt_masks.tensor))
            report.mobs.extend(mask_over_box(inst.gt_boxes, ii).tolist())


def replay(cfg, index: int, seed: int, dataset: Optional[str] = None):
    """Map one training draw again: image ``index`` with seed ``seed``.

    Args:
        cfg: the run's config.
        index: the dataset index an error named.
        seed: the seed it named.
        dataset: a dataset name (indices of ``tools/check_dataset.py``); default: the training
            list of the config, as the trainer builds it (``DATASETS.TRAIN`` concatenated, images
            without annotations dropped per ``DATALOADER.FILTER_EMPTY_ANNOTATIONS``): the
            indices of a training run's errors.

    Returns:
        tuple: (the dataset dict, the mapped input or None).
    """
    if dataset is None:
        dicts = get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS)
    else:
        dicts = DatasetCatalog.get(dataset)
    if not 0 <= index < len(dicts):
        raise IndexError(f"dataset index {index} is out of range: the list has {len(dicts)} "
                         "images")
    mapper = YOLACTDatasetMapper(cfg, is_train=True)
    return dicts[index], replay_sample(dicts, mapper, index, seed)


def _stats(values: Sequence[float]) -> str:
    if not len(values):
        return "-"
    v = np.asarray(values, np.float64)
    return f"mean {v.mean():.1f}, median {np.median(v):g}, min {v.min():g}, max {v.max():g}"


def format_reports(reports: Sequence[DatasetReport], cfg=None, limit: int = 20) -> str:
    """The report :func:`check_datasets` prints: one section per dataset, failures listed."""
    lines = []
    matcher = ""
    if cfg is not None:
        y = cfg.MODEL.YOLACT
        quality = f" w. {y.ATSS_QUALITY}" if y.MATCHER == "ATSS" else ""
        n = sum(len(a) for a in anchors_for_input(cfg))
        matcher = f" ({y.MATCHER}{quality}, {n:,} anchors at {cfg.INPUT.YOLACT.SIZE})"
    for r in reports:
        lines.append(f"== {r.name}" + (f" ({r.source})" if r.source and r.source != r.name
                                        else ""))
        warnings = [p for p in r.problems if p.severity == "warning"]
        lines.append(f"  annotations: {len(r.errors)} error(s), {len(warnings)} warning(s)")
        for p in (r.errors + warnings)[:limit]:
            lines.append(f"    {p.severity}: {p}")
        if len(r.problems) > limit:
            lines.append(f"    ... and {len(r.problems) - limit} more")
        if r.errors:
            lines.append("  images not mapped: the annotations must be fixed first")
            continue
        kept = r.draws - r.redrawn - len(r.failures)
        lines.append(f"  images: {r.images}, annotations: {r.annotations} "
                     f"({r.seconds:.1f} s)")
        lines.append(f"  test mapper: {r.test_mapped} of {r.images} images mapped")
        lines.append(f"  training draws: {r.draws}, failures: {len(r.failures)}, "
                     f"re-drawn (no GT left): {r.redrawn}, kept: {kept}")
        for f in r.failures[:limit]:
            lines.append(f"    failure: {f}")
        if len(r.failures) > limit:
            lines.append(f"    ... and {len(r.failures) - limit} more")
        lines.append(f"  instances per kept draw: {_stats(r.instances)}")
        zero = sum(1 for p in r.positives if p == 0)
        share = f" ({100.0 * zero / len(r.positives):.1f}%)" if r.positives else ""
        lines.append(f"  positive anchors per kept draw{matcher}: {_stats(r.positives)}; "
                     f"draws without a positive: {zero}{share}")
        if r.mobs:
            hist, _ = np.histogram(np.clip(r.mobs, 0, 1), MOB_BINS)
            below = 100.0 * np.mean(np.asarray(r.mobs) < 0.5)
            bins = ", ".join(f"{lo:.1f}-{hi:.1f}: {n}"
                             for lo, hi, n in zip(MOB_BINS[:-1], MOB_BINS[1:], hist))
            lines.append(f"  MOB ratio of {len(r.mobs)} training GTs: {below:.1f}% below 0.5; "
                         f"{bins}")
        lines.append(f"  images without a GT to train on (none annotated, or only crowd regions "
                     f"and skipped annotations): {len(r.without_gt)}"
                     + (f" (e.g. {', '.join(r.without_gt[:3])})" if r.without_gt else ""))
        lines.append(f"  images that lose all GTs to INPUT.YOLACT.MIN_GT_SIZE: "
                     f"{len(r.lost_to_min_size)}"
                     + (f" (e.g. {', '.join(r.lost_to_min_size[:3])})" if r.lost_to_min_size
                        else ""))
    failed = [r.name for r in reports if r.failed]
    lines.append("result: " + (f"FAILED ({', '.join(failed)})" if failed else "OK"))
    return "\n".join(lines)


def report_dict(reports: Sequence[DatasetReport]) -> Dict:
    """The reports as json-able data (``--output``)."""
    out = {}
    for r in reports:
        out[r.name] = {
            "source": r.source, "images": r.images, "annotations": r.annotations,
            "errors": [str(p) for p in r.errors],
            "warnings": [str(p) for p in r.problems if p.severity == "warning"],
            "failures": r.failures, "draws": r.draws, "redrawn": r.redrawn,
            "instances": r.instances, "positives": r.positives,
            "mob_histogram": np.histogram(np.clip(r.mobs, 0, 1), MOB_BINS)[0].tolist()
            if r.mobs else [],
            "lost_to_min_gt_size": r.lost_to_min_size, "without_gt": r.without_gt,
            "seconds": r.seconds,
        }
    return out


def format_traceback(error: BaseException) -> str:
    return "".join(traceback.format_exception(type(error), error, error.__traceback__))
