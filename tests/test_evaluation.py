"""Tests of mayolact.evaluation (optimal LRP, the COCO backends) and tools/evaluate.py."""

import contextlib
import copy
import io
import json
import logging
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.structures import Boxes, Instances

from mayolact.config.config import add_mayolact_config
from mayolact.evaluation import (
    LRPEvaluator,
    MaYOLACTCOCOEvaluator,
    MergingDatasetEvaluators,
    build_mayolact_evaluator,
    check_tasks,
    coco_metrics,
    compute_olrp,
    faster_coco_eval_available,
    load_coco_gt,
    lrp_results_dict,
    olrp_from_matches,
    read_coco_results,
    resolve_coco_backend,
    run_coco_eval,
    validate_coco_results,
    write_json_atomic,
)

from common import load_tool

REPO = Path(__file__).resolve().parents[1]
EVALUATE_PY = REPO / "tools" / "evaluate.py"
needs_faster = pytest.mark.skipif(
    not faster_coco_eval_available(), reason="faster-coco-eval not installed"
)


# ----------------------------------------------------------------------------- helpers
def brute_force_olrp(scores, is_tp, ious, num_gt, tau=0.5):
    """LRP at every distinct score threshold, one by one; returns the minimum (1 if no TP)."""
    best = 1.0
    for s in sorted(set(scores)):
        kept = [i for i, x in enumerate(scores) if x >= s]
        n_tp = sum(is_tp[i] for i in kept)
        n_fp = len(kept) - n_tp
        loc = sum(1 - ious[i] for i in kept if is_tp[i])
        lrp = (loc / (1 - tau) + n_fp + num_gt - n_tp) / (n_fp + num_gt)
        best = min(best, lrp)
    return best


def rle(mask):
    """Compressed RLE (json-friendly) of a (H, W) bool mask."""
    r = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    r["counts"] = r["counts"].decode("ascii")
    return r


def box_mask(h, w, x0, y0, x1, y1):
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


CATEGORIES = [{"id": 1, "name": "cat"}, {"id": 3, "name": "dog"}, {"id": 7, "name": "emu"}]


def write_gt(path, annotations, images=None, categories=CATEGORIES):
    images = images or [
        {"id": i, "width": 40, "height": 40, "file_name": f"{i}.jpg"} for i in (1, 2)
    ]
    anns = []
    for i, a in enumerate(annotations, start=1):
        a = dict(a)
        a.setdefault("iscrowd", 0)
        x, y, w, h = a["bbox"]
        a.setdefault("area", float(w * h))
        if "segmentation" not in a:
            a["segmentation"] = rle(box_mask(40, 40, int(x), int(y), int(x + w), int(y + h)))
        a["id"] = i
        anns.append(a)
    path = Path(path)
    path.write_text(json.dumps({"images": images, "categories": categories, "annotations": anns}))
    return str(path)


def det(image_id, category_id, bbox, score, segmentation=None):
    d = {
        "image_id": image_id,
        "category_id": category_id,
        "bbox": list(map(float, bbox)),
        "score": score,
    }
    if segmentation is not None:
        d["segmentation"] = segmentation
    return d


@pytest.fixture
def simple_gt(tmp_path):
    """cat: 2 boxes (image 1), dog: 1 box (image 2), emu: no ground truth."""
    return write_gt(
        tmp_path / "gt.json",
        [
            {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]},
            {"image_id": 1, "category_id": 1, "bbox": [20, 20, 10, 10]},
            {"image_id": 2, "category_id": 3, "bbox": [4, 4, 20, 20]},
        ],
    )


# ------------------------------------------------------------------- olrp_from_matches
class TestOLRPFromMatches:
    def test_all_perfect_is_zero(self):
        r = olrp_from_matches([0.9, 0.8, 0.3], [True] * 3, [1.0] * 3, num_gt=3)
        assert r["olrp"] == 0.0 and r["loc"] == 0.0 and r["fp"] == 0.0 and r["fn"] == 0.0
        assert r["threshold"] == pytest.approx(0.3) and r["num_tp"] == 3

    def test_only_false_positives_is_one(self):
        r = olrp_from_matches([0.9, 0.2], [False, False], [0.0, 0.0], num_gt=4)
        assert r["olrp"] == 1.0 and r["fn"] == 1.0
        assert math.isnan(r["loc"]) and math.isnan(r["fp"]) and math.isnan(r["threshold"])

    def test_no_detection_is_one(self):
        r = olrp_from_matches([], [], [], num_gt=2)
        assert r["olrp"] == 1.0 and r["fn"] == 1.0 and math.isnan(r["loc"])

    def test_one_tp_one_fp_one_fn_by_hand(self):
        # FP scores above the TP: every threshold that keeps the TP keeps the FP.
        # LRP = (0.25 / 0.5 + 1 + 1) / 3 = 0.8333...
        r = olrp_from_matches([0.9, 0.8], [False, True], [0.0, 0.75], num_gt=2)
        assert r["olrp"] == pytest.approx(2.5 / 3)
        assert r["loc"] == pytest.approx(0.25) and r["fp"] == pytest.approx(0.5)
        assert r["fn"] == pytest.approx(0.5) and r["threshold"] == pytest.approx(0.8)

    def test_optimal_threshold_drops_the_low_scoring_fp(self):
        # TP first: at 0.9 LRP = (0.5 + 0 + 1) / 2 = 0.75 < 0.8333 at 0.8.
        r = olrp_from_matches([0.9, 0.8], [True, False], [0.75, 0.0], num_gt=2)
        assert r["olrp"] == pytest.approx(0.75) and r["threshold"] == pytest.approx(0.9)
        assert r["fp"] == 0.0 and r["num_fp"] == 0

    def test_picks_the_minimum_over_thresholds(self):
        # 0.9 TP(1.0), 0.8 FP, 0.7 FP, 0.6 TP(1.0), 0.5 TP(0.6), G = 4.
        scores = [0.5, 0.9, 0.7, 0.6, 0.8]
        tp = [True, True, False, True, False]
        ious = [0.6, 1.0, 0.0, 1.0, 0.0]
        lrps = {  # by hand, at each threshold
            0.9: (0 + 0 + 3) / 4,
            0.8: (0 + 1 + 3) / 5,
            0.7: (0 + 2 + 3) / 6,
            0.6: (0 + 2 + 2) / 6,
            0.5: (0.4 / 0.5 + 2 + 1) / 6,
        }
        r = olrp_from_matches(scores, tp, ious, num_gt=4)
        assert r["olrp"] == pytest.approx(min(lrps.values()))
        assert r["threshold"] == pytest.approx(min(lrps, key=lrps.get))

    def test_ties_are_one_threshold(self):
        # Equal scores: a threshold keeps both or neither, whatever their order.
        for order in ([True, False], [False, True]):
            ious = [1.0 if t else 0.0 for t in order]
            r = olrp_from_matches([0.5, 0.5], order, ious, num_gt=1)
            assert r["olrp"] == pytest.approx(0.5)  # (0 + 1 + 0) / 2

    def test_matches_brute_force(self):
        rng = np.random.default_rng(0)
        for _ in range(200):
            d = int(rng.integers(0, 25))
            scores = np.round(rng.random(d), 1)  # many ties
            is_tp = rng.random(d) < 0.5
            tau = float(rng.choice([0.5, 0.3, 0.75]))
            ious = np.where(is_tp, rng.uniform(tau, 1.0, d), 0.0)
            num_gt = int(is_tp.sum() + rng.integers(0, 5))
            if num_gt == 0:
                continue
            r = olrp_from_matches(scores, is_tp, ious, num_gt, tau=tau)
            want = brute_force_olrp(scores.tolist(), is_tp.tolist(), ious.tolist(), num_gt, tau)
            assert r["olrp"] == pytest.approx(want, abs=1e-12)

    def test_class_without_gt_is_nan(self):
        r = olrp_from_matches([0.9], [False], [0.0], num_gt=0)
        assert all(math.isnan(r[k]) for k in ("olrp", "loc", "fp", "fn", "threshold"))

    def test_bad_input(self):
        with pytest.raises(ValueError, match="same length"):
            olrp_from_matches([0.9, 0.8], [True], [1.0], num_gt=1)
        with pytest.raises(ValueError, match="true positives"):
            olrp_from_matches([0.9, 0.8], [True, True], [1.0, 1.0], num_gt=1)
        with pytest.raises(ValueError, match="tau"):
            olrp_from_matches([0.9], [True], [1.0], num_gt=1, tau=1.0)
        with pytest.raises(ValueError, match=r"\[tau, 1\]"):
            olrp_from_matches([0.9], [True], [1.5], num_gt=1)
        with pytest.raises(ValueError, match=r"\[tau, 1\]"):
            olrp_from_matches([0.9], [True], [0.4], num_gt=1)  # below tau: not a TP


# ------------------------------------------------------------------------ compute_olrp
class TestComputeOLRP:
    def test_perfect_boxes(self, simple_gt):
        gt = load_coco_gt(simple_gt)
        results = [
            det(a["image_id"], a["category_id"], a["bbox"], 0.9) for a in gt.dataset["annotations"]
        ]
        r = compute_olrp(gt, results, "bbox")
        assert r.category_ids.tolist() == [1, 3, 7] and r.num_gt.tolist() == [2, 1, 0]
        assert r.olrp[:2].tolist() == [0.0, 0.0] and math.isnan(r.olrp[2])
        assert r.summary()["oLRP"] == 0.0

    def test_only_false_positives(self, simple_gt):
        gt = load_coco_gt(simple_gt)
        results = [
            det(1, 1, [30, 0, 5, 5], 0.9),
            det(2, 3, [30, 30, 5, 5], 0.4),
            det(2, 7, [0, 0, 5, 5], 0.5),
        ]
        res = lrp_results_dict(compute_olrp(gt, results, "bbox"), ["cat", "dog", "emu"])
        assert res["oLRP"] == 100.0 and res["oLRP_FN"] == 100.0
        assert math.isnan(res["oLRP_loc"]) and math.isnan(res["oLRP_FP"])
        assert res["oLRP-cat"] == 100.0 and math.isnan(res["oLRP-emu"])  # emu has no GT: excluded

    def test_hand_computed_tp_fp_fn(self, simple_gt):
        gt = load_coco_gt(simple_gt)
        # cat: FP (0.9), TP with IoU 0.75 (0.8) on the first box, the second box missed.
        results = [det(1, 1, [30, 0, 5, 5], 0.9), det(1, 1, [0, 0, 10, 7.5], 0.8)]
        r = compute_olrp(gt, results, "bbox")
        assert r.olrp[0] == pytest.approx(2.5 / 3)
        assert r.loc[0] == pytest.approx(0.25) and r.fp[0] == pytest.approx(0.5) and r.fn[0] == 0.5
        assert r.olrp[1] == 1.0  # dog: GT, no detection
        res = lrp_results_dict(r)
        assert res["oLRP"] == pytest.approx(100 * (2.5 / 3 + 1) / 2)
        assert res["oLRP_loc"] == pytest.approx(25.0)  # dog's NaN component is left out

    def test_crowd_detection_is_ignored(self, tmp_path):
        path = write_gt(
            tmp_path / "crowd.json",
            [
                {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]},
                {"image_id": 1, "category_id": 1, "bbox": [20, 20, 15, 15], "iscrowd": 1},
            ],
        )
        gt = load_coco_gt(path)
        on_crowd = det(1, 1, [22, 22, 8, 8], 0.95)  # inside the crowd region, scored above the TP
        tp = det(1, 1, [0, 0, 10, 10], 0.5)
        r = compute_olrp(gt, [on_crowd, tp], "bbox")
        assert r.num_gt[0] == 1  # the crowd region is not ground truth
        assert r.olrp[0] == 0.0 and r.num_fp[0] == 0  # not an FP (as an FP it would give 0.5)
        # Same detection without the crowd region: an FP.
        path2 = write_gt(
            tmp_path / "nocrowd.json", [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]}]
        )
        r2 = compute_olrp(load_coco_gt(path2), [on_crowd, tp], "bbox")
        assert r2.olrp[0] == pytest.approx(0.5)

    def test_empty_predictions(self, simple_gt):
        gt = load_coco_gt(simple_gt)
        res = lrp_results_dict(compute_olrp(gt, [], "segm"), ["cat", "dog", "emu"])
        assert res["oLRP"] == 100.0 and res["oLRP-cat"] == 100.0 and res["oLRP-dog"] == 100.0
        assert math.isnan(res["oLRP-emu"])

    def test_at_most_100_detections_per_image(self, simple_gt):
        gt = load_coco_gt(simple_gt)
        fps = [det(2, 3, [30, 30, 5, 5], 0.9 - i * 1e-4) for i in range(100)]
        tp = det(2, 3, [4, 4, 20, 20], 0.1)  # the 101st: dropped, as COCO does
        assert compute_olrp(gt, fps + [tp], "bbox").olrp[1] == 1.0
        assert compute_olrp(gt, fps[:99] + [tp], "bbox").olrp[1] < 1.0

    def test_segm_with_small_rle_masks(self, tmp_path):
        g1 = box_mask(40, 40, 0, 0, 4, 4)  # 16 px
        g2 = box_mask(40, 40, 10, 10, 16, 16)  # 36 px
        path = write_gt(
            tmp_path / "segm.json",
            [
                {
                    "image_id": 1,
                    "category_id": 1,
                    "bbox": [0, 0, 4, 4],
                    "segmentation": rle(g1),
                    "area": 16,
                },
                {
                    "image_id": 1,
                    "category_id": 3,
                    "bbox": [10, 10, 6, 6],
                    "segmentation": rle(g2),
                    "area": 36,
                },
            ],
        )
        gt = load_coco_gt(path)
        p1 = box_mask(40, 40, 0, 0, 4, 3)  # 12 px inside g1: IoU 0.75
        p2 = box_mask(40, 40, 10, 10, 16, 16)  # exact
        # The boxes are deliberately wrong: segm must use the masks only.
        results = [
            det(1, 1, [30, 30, 5, 5], 0.9, rle(p1)),
            det(1, 3, [30, 30, 5, 5], 0.8, rle(p2)),
            det(1, 3, [0, 30, 5, 5], 0.7, rle(box_mask(40, 40, 0, 30, 5, 35))),  # FP below the TP
        ]
        r = compute_olrp(gt, results, "segm")
        assert r.olrp[0] == pytest.approx(0.5)  # (0.25 / 0.5) / 1
        assert r.loc[0] == pytest.approx(0.25)
        assert r.olrp[1] == 0.0 and r.threshold[1] == pytest.approx(0.8)
        assert compute_olrp(gt, results, "bbox").olrp[0] == 1.0  # the boxes miss

    def test_bad_task(self, simple_gt):
        with pytest.raises(ValueError, match="keypoints"):
            compute_olrp(load_coco_gt(simple_gt), [], "keypoints")


# -------------------------------------------------------------------- COCO backends
class TestBackends:
    def test_resolve(self):
        assert resolve_coco_backend("pycocotools") == "pycocotools"
        want = "faster_coco_eval" if faster_coco_eval_available() else "pycocotools"
        assert resolve_coco_backend("auto") == want
        assert resolve_coco_backend("faster_coco_eval") == want  # falls back when missing
        with pytest.raises(ValueError, match="Unknown COCO evaluation backend"):
            resolve_coco_backend("detectron2")

    def test_load_gt_errors(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="missing.json"):
            load_coco_gt(str(tmp_path / "missing.json"))
        bad = tmp_path / "bad.json"
        bad.write_text("[1, 2]")
        with pytest.raises(ValueError, match="not a COCO ground-truth"):
            load_coco_gt(str(bad))

    def test_pycocotools_metrics(self, simple_gt):
        gt = load_coco_gt(simple_gt)
        results = [
            det(a["image_id"], a["category_id"], a["bbox"], 0.9) for a in gt.dataset["annotations"]
        ]
        before = copy.deepcopy(results)
        res = coco_metrics(
            run_coco_eval(gt, results, "bbox", verbose=False), "bbox", ["cat", "dog", "emu"]
        )
        assert results == before  # the COCO API got copies
        assert res["AP"] == pytest.approx(100.0) and res["AP-cat"] == pytest.approx(100.0)
        assert math.isnan(res["AP-emu"])
        assert all(math.isnan(v) for v in coco_metrics(None, "bbox").values())

    @needs_faster
    def test_faster_matches_pycocotools_on_coco_mini(self, coco_mini):
        gt_json = str(coco_mini / "annotations" / "instances_val2017.json")
        slow_gt = load_coco_gt(gt_json, "pycocotools")
        fast_gt = load_coco_gt(gt_json, "faster_coco_eval")
        results = perturbed_ground_truth(slow_gt, np.random.default_rng(1))
        names = [c["name"] for c in slow_gt.loadCats(sorted(slow_gt.getCatIds()))]
        for task in ("bbox", "segm"):
            slow = run_coco_eval(slow_gt, results, task, verbose=False)
            fast = run_coco_eval(fast_gt, results, task, verbose=False)
            assert type(fast).__module__.startswith("faster_coco_eval")
            assert type(slow).__module__.startswith("pycocotools")
            np.testing.assert_allclose(fast.stats[:12], slow.stats[:12], atol=1e-6)
            np.testing.assert_allclose(fast.eval["precision"], slow.eval["precision"], atol=1e-6)
            m_slow, m_fast = coco_metrics(slow, task, names), coco_metrics(fast, task, names)
            assert m_slow.keys() == m_fast.keys()
            np.testing.assert_allclose(list(m_fast.values()), list(m_slow.values()), atol=1e-6)
            assert 20 < m_slow["AP"] < 95  # the perturbation is neither trivial nor destructive
        # LRP on the same predictions: sensible and defined.
        lrp = compute_olrp(slow_gt, results, "segm")
        assert 0 < lrp.summary()["oLRP"] < 1 and np.all(lrp.olrp[lrp.valid] <= 1)

    @needs_faster
    def test_lrp_matches_agree_with_faster_coco_eval(self, coco_mini):
        """The TP pairs and IoUs LRP reads from pycocotools equal faster-coco-eval's matching."""
        from faster_coco_eval import COCOeval_faster

        from mayolact.evaluation.lrp import _MatchingCOCOeval

        gt_json = str(coco_mini / "annotations" / "instances_val2017.json")
        slow_gt = load_coco_gt(gt_json, "pycocotools")
        fast_gt = load_coco_gt(gt_json, "faster_coco_eval")
        results = perturbed_ground_truth(slow_gt, np.random.default_rng(2))
        for task in ("bbox", "segm"):
            E = _MatchingCOCOeval(slow_gt, slow_gt.loadRes(copy.deepcopy(results)), task)
            F = COCOeval_faster(
                fast_gt,
                fast_gt.loadRes(copy.deepcopy(results)),
                task,
                extra_calc=True,
                print_function=lambda *a: None,
            )
            for p in (E.params, F.params):
                p.iouThrs, p.maxDets, p.areaRng, p.areaRngLbl = (
                    np.array([0.5]),
                    [100],
                    [[0, 1e10]],
                    ["all"],
                )
            with contextlib.redirect_stdout(io.StringIO()):
                E.evaluate()
            F.evaluate()
            F.accumulate()
            ours = {}
            for r in filter(None, E.evalImgs):
                for d, g, ignored, iou in zip(
                    r["dtIds"], r["dtMatches"][0], r["dtIgnore"][0], r["dtIoUs"][0]
                ):
                    if g > 0 and not ignored:
                        ours[d, int(g)] = iou
            theirs = {tuple(map(int, k.split("_"))): v for k, v in F.eval["matched"].items()}
            theirs = {k: v for k, v in theirs.items() if not slow_gt.anns[k[1]]["iscrowd"]}
            assert len(ours) > 500 and ours.keys() == theirs.keys()
            np.testing.assert_allclose(
                [ours[k] for k in ours], [theirs[k] for k in ours], atol=1e-9
            )


def perturbed_ground_truth(coco_gt, rng):
    """Predictions from the ground truth: jittered boxes, shifted masks, random scores, ~15%
    dropped, plus a few false positives of random classes."""
    anns = [a for a in coco_gt.dataset["annotations"] if not a["iscrowd"]]
    cat_ids = sorted(coco_gt.getCatIds())
    results = []
    for a in anns:
        if rng.random() < 0.15:
            continue
        x, y, w, h = a["bbox"]
        img = coco_gt.imgs[a["image_id"]]
        jitter = rng.normal(0.0, 0.08, 4) * np.array([w, h, w, h])
        box = [x + jitter[0], y + jitter[1], max(1.0, w + jitter[2]), max(1.0, h + jitter[3])]
        mask = coco_gt.annToMask(a)
        mask = np.roll(mask, (int(rng.integers(-3, 4)), int(rng.integers(-3, 4))), axis=(0, 1))
        results.append(det(a["image_id"], a["category_id"], box, float(rng.random()), rle(mask)))
    for image_id in list(coco_gt.imgs)[:40]:
        img = coco_gt.imgs[image_id]
        x0, y0 = rng.integers(0, img["width"] // 2), rng.integers(0, img["height"] // 2)
        m = box_mask(img["height"], img["width"], int(x0), int(y0), int(x0) + 30, int(y0) + 30)
        results.append(
            det(image_id, int(rng.choice(cat_ids)), [x0, y0, 30, 30], float(rng.random()), rle(m))
        )
    return results


# ---------------------------------------------------------------- Detectron2 evaluators
@pytest.fixture
def registered(tmp_path, request):
    """A registered tiny dataset (category ids 1, 3, 7 -> classes 0, 1, 2) with masks."""
    path = write_gt(
        tmp_path / "reg.json",
        [
            {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]},
            {"image_id": 1, "category_id": 3, "bbox": [20, 20, 10, 10]},
            {"image_id": 2, "category_id": 3, "bbox": [4, 4, 20, 20]},
        ],
    )
    name = f"mayolact_test_eval_{request.node.name}"
    register_coco_instances(name, {}, path, str(tmp_path))
    DatasetCatalog.get(name)  # fills thing_classes and the id mapping, as the test loader does
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def model_outputs():
    """Inputs/outputs for two 40x40 images: perfect cat, a dog box with IoU 0.75, a dog FP."""

    def instances(boxes, scores, classes):
        inst = Instances((40, 40))
        inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        inst.scores = torch.tensor(scores, dtype=torch.float32)
        inst.pred_classes = torch.tensor(classes, dtype=torch.int64)
        inst.pred_masks = (
            torch.stack([torch.from_numpy(box_mask(40, 40, *map(int, b))) for b in boxes])
            if boxes
            else torch.zeros((0, 40, 40), dtype=torch.bool)
        )
        return inst

    inputs = [
        {"image_id": 1, "height": 40, "width": 40},
        {"image_id": 2, "height": 40, "width": 40},
    ]
    outputs = [
        {"instances": instances([[0, 0, 10, 10], [20, 20, 30, 30]], [0.9, 0.8], [0, 1])},
        {"instances": instances([[4, 4, 24, 19], [30, 0, 38, 8]], [0.7, 0.6], [1, 1])},
    ]
    return inputs, outputs


def test_lrp_evaluator(registered, tmp_path):
    ev = LRPEvaluator(registered, distributed=False, output_dir=str(tmp_path / "out"))
    ev.reset()
    inputs, outputs = model_outputs()
    for i, o in zip(inputs, outputs):
        ev.process([i], [o])
    res = ev.evaluate()
    assert list(res) == ["bbox", "segm"]
    for task in ("bbox", "segm"):
        # cat: 0. dog: TPs 1.0 (0.8) and 0.75 (0.7), FP (0.6); best at 0.7: (0.25/0.5)/2 = 0.25.
        assert res[task]["oLRP-cat"] == pytest.approx(0.0)
        assert res[task]["oLRP-dog"] == pytest.approx(25.0)
        assert math.isnan(res[task]["oLRP-emu"])
        assert res[task]["oLRP"] == pytest.approx(12.5)
    saved = json.loads((tmp_path / "out" / "lrp_results.json").read_text())
    assert saved["bbox"]["per_class"][1]["threshold"] == pytest.approx(0.7)


def test_build_evaluator_merges_coco_and_lrp(registered, tmp_path):
    cfg = get_cfg()
    add_mayolact_config(cfg)
    cfg.MODEL.MASK_ON = True
    cfg.TEST.YOLACT.COCO_BACKEND = "pycocotools"
    evaluator = build_mayolact_evaluator(cfg, registered, str(tmp_path / "out"))
    assert isinstance(evaluator, MergingDatasetEvaluators)
    coco_ev, lrp_ev = evaluator._evaluators
    assert isinstance(coco_ev, MaYOLACTCOCOEvaluator) and coco_ev._use_fast_impl is False
    assert lrp_ev._coco_api is coco_ev._coco_api  # the ground truth is shared
    evaluator.reset()
    inputs, outputs = model_outputs()
    evaluator.process(inputs, outputs)
    # The LRP evaluator copied the COCO evaluator's encoded outputs (no second RLE encoding).
    shared = [r for p in lrp_ev._predictions for r in p["instances"]]
    source = [r for p in coco_ev._predictions for r in p["instances"]]
    assert shared == source and all(a is not b for a, b in zip(shared, source))
    assert all(a["segmentation"] is b["segmentation"] for a, b in zip(shared, source))
    res = evaluator.evaluate()
    assert set(res) == {"bbox", "segm"}
    for task in ("bbox", "segm"):
        assert {"AP", "AP50", "AP-cat", "oLRP", "oLRP_FN", "oLRP-dog"} <= set(res[task])
        assert res[task]["AP-cat"] == pytest.approx(100.0)
        assert res[task]["oLRP"] == pytest.approx(12.5)  # same as without sharing
    assert (tmp_path / "out" / "coco_instances_results.json").is_file()

    cfg.TEST.YOLACT.LRP = False
    cfg.MODEL.MASK_ON = False
    evaluators = build_mayolact_evaluator(cfg, registered, str(tmp_path / "out2"))._evaluators
    assert len(evaluators) == 1 and evaluators[0]._tasks == ("bbox",)


@pytest.mark.parametrize("limit", [20, 100])
def test_evaluator_states_its_detection_limit(registered, limit, caplog):
    """The log says at which maxDets AP is computed and which key sets it; a limit other than
    COCO's 100 (the quick configs' 20) is a warning: the numbers are not COCO's."""
    cfg = get_cfg()
    add_mayolact_config(cfg)
    cfg.MODEL.MASK_ON = False
    cfg.TEST.YOLACT.LRP = False
    cfg.TEST.YOLACT.COCO_BACKEND = "pycocotools"
    cfg.TEST.DETECTIONS_PER_IMAGE = limit
    evaluator = build_mayolact_evaluator(cfg, registered)
    evaluator.reset()
    evaluator.process(*model_outputs())
    with caplog.at_level(logging.INFO):
        evaluator.evaluate()
    assert f"at maxDets {limit} (TEST.DETECTIONS_PER_IMAGE)" in caplog.text
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    if limit == 100:
        assert not any("DETECTIONS_PER_IMAGE" in w for w in warned)
    else:
        assert any(f"at most {limit} detections per image" in w
                   and "TEST.DETECTIONS_PER_IMAGE 100" in w for w in warned), warned


@needs_faster
def test_coco_evaluator_backends_agree(registered):
    inputs, outputs = model_outputs()
    found = {}
    for backend in ("pycocotools", "faster_coco_eval"):
        ev = MaYOLACTCOCOEvaluator(registered, distributed=False, backend=backend)
        assert ev.backend == backend
        ev.reset()
        ev.process(inputs, outputs)
        found[backend] = ev.evaluate()
    for task in ("bbox", "segm"):
        a, b = found["pycocotools"][task], found["faster_coco_eval"][task]
        assert a.keys() == b.keys()
        np.testing.assert_allclose(list(a.values()), list(b.values()), atol=1e-6)


def test_merging_rejects_duplicate_metrics():
    class Fixed:
        def __init__(self, res):
            self.res = res

        def evaluate(self):
            return self.res

    merged = MergingDatasetEvaluators(
        [Fixed({"bbox": {"AP": 1.0}}), Fixed({"bbox": {"oLRP": 2.0}})]
    )
    assert merged.evaluate() == {"bbox": {"AP": 1.0, "oLRP": 2.0}}
    with pytest.raises(ValueError, match="AP"):
        MergingDatasetEvaluators(
            [Fixed({"bbox": {"AP": 1.0}}), Fixed({"bbox": {"AP": 2.0}})]
        ).evaluate()


def test_evaluator_rejects_unknown_task(registered):
    with pytest.raises(ValueError, match="keypoints"):
        LRPEvaluator(registered, tasks=("keypoints",))
    with pytest.raises(ValueError, match="keypoints"):
        MaYOLACTCOCOEvaluator(registered, tasks=("keypoints",))


# -------------------------------------------------------------------- tools/evaluate.py
def _load_tool():
    return load_tool("evaluate")


def test_validate_coco_results(simple_gt):
    gt = load_coco_gt(simple_gt)
    ok = [det(1, 1, [0, 0, 10, 10], 0.9, rle(box_mask(40, 40, 0, 0, 10, 10)))]
    assert validate_coco_results(ok, gt, None, "r.json") == ["bbox", "segm"]
    assert validate_coco_results(ok, gt, ["bbox"], "r.json") == ["bbox"]
    cases = [
        ({"a": 1}, "expected a list"),
        ([[1, 2]], "entry 0 is a list"),
        ([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}], r"missing \['score'\]"),
        ([{k: v for k, v in ok[0].items() if k != "image_id"}], "image_id"),
        ([{k: v for k, v in ok[0].items() if k != "category_id"}], "category_id"),
        ([dict(ok[0], score="high")], "non-numeric score"),
        ([dict(ok[0], image_id=99)], "image id.*99"),
        ([dict(ok[0], category_id=2)], "category id.*2"),
        ([dict(ok[0], bbox=[0, 0, 1])], r"\[x, y, w, h\]"),
        ([dict(ok[0], segmentation=[[0, 0, 1, 0, 1, 1]])], "RLE"),
    ]
    for results, message in cases:
        with pytest.raises(ValueError, match=message):
            validate_coco_results(results, gt, None, "r.json")
    no_box = [{k: v for k, v in ok[0].items() if k != "bbox"}]
    with pytest.raises(ValueError, match="'bbox'"):
        validate_coco_results(no_box, gt, ["bbox"], "r.json")
    no_mask = [{k: v for k, v in ok[0].items() if k != "segmentation"}]
    with pytest.raises(ValueError, match="'segmentation'"):
        validate_coco_results(no_mask, gt, ["segm"], "r.json")


def test_evaluate_tool_subprocess(simple_gt, tmp_path):
    results = [
        det(1, 1, [0, 0, 10, 10], 0.9, rle(box_mask(40, 40, 0, 0, 10, 10))),
        det(1, 1, [20, 20, 10, 10], 0.8, rle(box_mask(40, 40, 20, 20, 30, 30))),
        det(2, 3, [4, 4, 20, 15], 0.7, rle(box_mask(40, 40, 4, 4, 24, 19))),  # IoU 0.75
    ]
    res_path = tmp_path / "coco_instances_results.json"
    res_path.write_text(json.dumps(results))
    out = tmp_path / "m" / "metrics.json"
    cmd = [sys.executable, str(EVALUATE_PY), str(res_path), "--gt", simple_gt, "--output", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "oLRP" in proc.stdout and "AP50" in proc.stdout
    metrics = json.loads(out.read_text())
    assert set(metrics) == {"bbox", "segm"}
    assert metrics["bbox"]["oLRP-cat"] == 0.0 and metrics["bbox"]["oLRP-dog"] == pytest.approx(50.0)
    assert metrics["segm"]["oLRP"] == pytest.approx(25.0)
    assert metrics["bbox"]["oLRP-emu"] is None  # NaN is written as null
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".tmp_")]


def test_evaluate_tool_in_process(simple_gt, registered, tmp_path, capsys):
    """The tool's error paths (exit status 2, message naming the file and the problem)."""
    tool = _load_tool()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}]))
    assert tool.main([str(bad), "--gt", simple_gt]) == 2
    err = capsys.readouterr().err
    assert "bad.json" in err and "score" in err
    res_path = tmp_path / "r.json"
    res_path.write_text(json.dumps([det(1, 1, [0, 0, 10, 10], 0.9)]))
    # --dataset with a registered name; bbox only (no masks in the file), AP only.
    assert tool.main([str(res_path), "--dataset", registered, "--no-lrp", "--quiet"]) == 0
    assert "AP" in capsys.readouterr().out
    assert tool.main([str(res_path), "--dataset", "no_such_dataset_xyz"]) == 2
    assert "not registered" in capsys.readouterr().err
    assert tool.main([str(tmp_path / "missing.json"), "--gt", simple_gt]) == 2
    assert "missing.json" in capsys.readouterr().err
    (tmp_path / "dict.json").write_text("{}")
    assert tool.main([str(tmp_path / "dict.json"), "--gt", simple_gt]) == 2
    assert "dict.json" in capsys.readouterr().err
    assert tool.main([str(res_path), "--gt", simple_gt, "--tasks", "segm"]) == 2
    assert "'segmentation'" in capsys.readouterr().err
    # Empty results: AP NaN, oLRP 100 for classes with GT.
    (tmp_path / "empty.json").write_text("[]")
    out = tmp_path / "empty_metrics.json"
    assert (
        tool.main(
            [str(tmp_path / "empty.json"), "--gt", simple_gt, "--quiet", "--output", str(out)]
        )
        == 0
    )
    metrics = json.loads(out.read_text())
    assert metrics["bbox"]["AP"] is None and metrics["bbox"]["oLRP"] == 100.0


# -------------------------------------------------------------------- shared helpers
def test_evaluate_unknown_dataset_points_to_gt(simple_gt, tmp_path, capsys):
    """``--dataset`` with a name of one's own (never registered) says to give its json with
    ``--gt``."""
    tool = _load_tool()
    res_path = tmp_path / "r.json"
    res_path.write_text(json.dumps([det(1, 1, [0, 0, 10, 10], 0.9)]))
    assert tool.main([str(res_path), "--dataset", "my_own_val"]) == 2
    err = capsys.readouterr().err
    assert "dataset 'my_own_val' is not registered" in err and "--gt" in err


def test_check_tasks():
    assert check_tasks(["segm", "bbox"]) == ("segm", "bbox")
    assert check_tasks(()) == ()
    with pytest.raises(ValueError, match=r"Unsupported LRP task\(s\) \['keypoints'\]"):
        check_tasks(["bbox", "keypoints"], "LRP")


def test_write_json_atomic_and_read_back(tmp_path):
    path = tmp_path / "new" / "dir" / "results.json"
    write_json_atomic(str(path), [{"image_id": 1, "score": 0.5}])
    assert read_coco_results(str(path)) == [{"image_id": 1, "score": 0.5}]
    write_json_atomic(str(path), [])  # replaces the old file
    assert read_coco_results(str(path)) == []
    # A payload json cannot encode: the old file stays whole and no temporary file is left.
    with pytest.raises(TypeError):
        write_json_atomic(str(path), [{"bad": object()}])
    assert read_coco_results(str(path)) == []
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]
    with pytest.raises(FileNotFoundError, match="missing.json: results file not found"):
        read_coco_results(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2")
    with pytest.raises(ValueError, match="bad.json: not valid json"):
        read_coco_results(str(bad))
