"""AP by GT mask-over-box range (mayolact.evaluation.mob_ranges): a hand-computed case, the
identity with pycocotools' APs / APm / APl when the value is the area, the evaluators and
tools/evaluate.py --mob-ranges."""
import copy
import json
import math

import numpy as np
import pytest
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from test_evaluation import box_mask, det, perturbed_ground_truth, rle, write_gt

from mayolact.config.config import add_mayolact_config
from mayolact.evaluation import (
    DEFAULT_MOB_EDGES,
    build_mayolact_evaluator,
    evaluate_ranges,
    gt_mob_ratios,
    load_coco_gt,
    mob_range_metrics,
    parse_mob_edges,
    range_results_dict,
    run_coco_eval,
)

from common import load_tool

AREA_RANGES = [[0.0, 32.0**2], [32.0**2, 96.0**2], [96.0**2, 1e5**2]]  # COCO's s / m / l


def by_area(coco_gt, results, task, **kwargs):
    return evaluate_ranges(coco_gt, results, task, AREA_RANGES,
                           gt_value=lambda g: g["area"],
                           dt_value=lambda dts: [d["area"] for d in dts], **kwargs)


def assert_area_identity(coco_gt, results, task, max_dets=100):
    """AP, AP50 and AP75 per area range equal pycocotools' own, bit for bit."""
    ref = run_coco_eval(coco_gt, results, task, max_dets_per_image=max_dets, verbose=False)
    ours = by_area(coco_gt, results, task, max_dets_per_image=max_dets)
    assert ours.ap.tolist() == ref.stats[3:6].tolist()  # APs, APm, APl
    precision = ref.eval["precision"]  # (T, R, K, A: all, s, m, l; M)
    for t, values in ((0, ours.ap50), (5, ours.ap75)):
        for a in range(3):
            s = precision[t, :, :, a + 1, -1]
            expected = np.mean(s[s > -1]) if (s > -1).any() else float("nan")
            np.testing.assert_equal(values[a], expected)
    return ours


# ---------------------------------------------------------------------- the hand case
def hand_case(tmp_path):
    """One 40 x 40 image, one class; GT masks A (MOB 0.3), B (1.0), C (0.5) and four detections.

    A: box (0, 0, 10, 10), mask the 3 left columns (30 px). B: box (20, 20, 10, 10), full.
    C: box (0, 20, 10, 10), mask the 5 left columns (50 px), never detected.
    d1 (0.9) = B's mask; d3 (0.85) an L far from every GT: column x=35, y 0-9 and row y=9,
    x 30-35: 15 px in a 6 x 10 tight box, MOB 0.25; d2 (0.8) = A's mask and box (the mask's own
    MOB is 1: its tight box is 3 x 10; matched, it counts in A's range).
    """
    a = np.zeros((40, 40), bool)
    a[0:10, 0:3] = True
    c = np.zeros((40, 40), bool)
    c[20:30, 0:5] = True
    b = box_mask(40, 40, 20, 20, 30, 30)
    gt = write_gt(tmp_path / "hand.json", [
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "segmentation": rle(a)},
        {"image_id": 1, "category_id": 1, "bbox": [20, 20, 10, 10], "segmentation": rle(b)},
        {"image_id": 1, "category_id": 1, "bbox": [0, 20, 10, 10], "segmentation": rle(c)},
    ], images=[{"id": 1, "width": 40, "height": 40, "file_name": "1.jpg"}],
        categories=[{"id": 1, "name": "cat"}])
    ell = np.zeros((40, 40), bool)
    ell[0:10, 35] = True
    ell[9, 30:36] = True
    results = [
        det(1, 1, [20, 20, 10, 10], 0.9, rle(b)),
        det(1, 1, [30, 0, 6, 10], 0.85, rle(ell)),
        det(1, 1, [0, 0, 10, 10], 0.8, rle(a)),
    ]
    return load_coco_gt(gt), results


def test_hand_computed_case(tmp_path):
    coco_gt, results = hand_case(tmp_path)
    ratios = gt_mob_ratios(coco_gt)
    assert [round(ratios[i], 6) for i in (1, 2, 3)] == [0.3, 1.0, 0.5]
    before = copy.deepcopy(coco_gt.dataset["annotations"])
    result = mob_range_metrics(coco_gt, results, "segm", DEFAULT_MOB_EDGES)
    assert result.num_gt.tolist() == [1, 1, 0, 1]
    # [0, 0.4]: A alone; d1 is matched to B (outside): ignored; d3 (MOB 0.25) a false positive
    # ranked above d2, the TP: precision 1/2 at recall 1, so 50 at every IoU threshold.
    # [0.4, 0.6]: C, never detected: 0; d2 and d1 are matched outside, d3 lies outside.
    # [0.6, 0.8]: no GT: undefined. [0.8, 1]: B found first, d3 outside, d2 matched outside: 100.
    np.testing.assert_allclose(result.ap, [0.5, 0.0, np.nan, 1.0])
    np.testing.assert_allclose(result.ap50, [0.5, 0.0, np.nan, 1.0])
    np.testing.assert_allclose(result.ap75, [0.5, 0.0, np.nan, 1.0])
    np.testing.assert_allclose(result.per_class_ap, [[0.5, 0.0, np.nan, 1.0]])
    metrics = range_results_dict(result)
    assert list(metrics)[:3] == ["AP-mob[0,0.4]", "AP50-mob[0,0.4]", "AP75-mob[0,0.4]"]
    assert metrics["AP-mob[0,0.4]"] == pytest.approx(50.0)
    assert math.isnan(metrics["AP-mob[0.6,0.8]"])
    assert metrics["AP-mob[0.8,1]"] == pytest.approx(100.0)
    # The same detections scored by box: d3's box hits nothing, the others match their GTs.
    boxes = mob_range_metrics(coco_gt, results, "bbox", DEFAULT_MOB_EDGES)
    np.testing.assert_allclose(boxes.ap, [0.5, 0.0, np.nan, 1.0])
    # The ground truth the COCO api holds is left as it was (the evaluation works on copies).
    assert [a["area"] for a in coco_gt.dataset["annotations"]] == [a["area"] for a in before]
    # Without the false positive the low range is perfect; with d3 below d2 as well.
    np.testing.assert_allclose(
        mob_range_metrics(coco_gt, [results[0], results[2]], "segm").ap, [1.0, 0.0, np.nan, 1.0])
    late_fp = [results[0], dict(results[1], score=0.7), results[2]]
    np.testing.assert_allclose(mob_range_metrics(coco_gt, late_fp, "segm").ap[0], 1.0)


def test_edges_are_checked():
    assert parse_mob_edges(()) == []
    assert parse_mob_edges([0, 0.5, 1]) == [[0.0, 0.5], [0.5, 1.0]]
    for edges, message in (([0.5], "at least two"), ([0.5, 0.5], "increase"),
                           ([0.6, 0.4], "increase"), ([-0.1, 1], ">= 0"),
                           ([0, float("inf")], "finite"), (["a", 1], "numbers")):
        with pytest.raises(ValueError, match=f"TEST.YOLACT.MOB_RANGES.*{message}"):
            parse_mob_edges(edges)


def test_results_without_masks_are_refused(tmp_path):
    coco_gt, results = hand_case(tmp_path)
    boxes_only = [{k: v for k, v in r.items() if k != "segmentation"} for r in results]
    with pytest.raises(ValueError, match="needs a mask"):
        mob_range_metrics(coco_gt, boxes_only, "bbox")


# ------------------------------------------------------------- identity with COCO's areas
def random_scene(tmp_path, seed=0, num_images=6, size=200):
    """Boxes of every COCO size class (sides 4-180 px), their box masks, and detections: jittered
    copies of most GTs, random false positives, scores drawn at random."""
    rng = np.random.default_rng(seed)
    images = [{"id": i, "width": size, "height": size, "file_name": f"{i}.jpg"}
              for i in range(1, num_images + 1)]
    anns, results = [], []
    for img in images:
        for _ in range(rng.integers(3, 9)):
            w, h = rng.integers(4, 180, size=2)
            x, y = rng.integers(0, size - w), rng.integers(0, size - h)
            cat = int(rng.choice([1, 3, 7]))
            anns.append({"image_id": img["id"], "category_id": cat,
                         "bbox": [int(x), int(y), int(w), int(h)],
                         "area": float(w * h), "iscrowd": int(rng.random() < 0.05),
                         "segmentation": rle(box_mask(size, size, x, y, x + w, y + h))})
            if rng.random() < 0.8:
                jx, jy = rng.integers(-3, 4, size=2)
                x2, y2 = np.clip([x + jx, y + jy], 0, [size - w, size - h])
                results.append(det(img["id"], cat, [x2, y2, w, h], float(rng.random()),
                                   rle(box_mask(size, size, x2, y2, x2 + w, y2 + h))))
        for _ in range(3):
            w, h = rng.integers(4, 120, size=2)
            x, y = rng.integers(0, size - w), rng.integers(0, size - h)
            results.append(det(img["id"], int(rng.choice([1, 3, 7])), [x, y, w, h],
                               float(rng.random()), rle(box_mask(size, size, x, y, x + w, y + h))))
    gt = write_gt(tmp_path / f"scene{seed}.json", anns, images=images)
    return load_coco_gt(gt), results


@pytest.mark.parametrize("task", ["bbox", "segm"])
def test_area_in_place_of_mob_gives_cocos_size_ranges(tmp_path, task):
    coco_gt, results = random_scene(tmp_path)
    ours = assert_area_identity(coco_gt, results, task)
    assert np.isfinite(ours.ap).all() and len(set(ours.ap.tolist())) == 3
    assert_area_identity(coco_gt, results, task, max_dets=5)  # the limit applies as in COCO


@pytest.mark.parametrize("task", ["bbox", "segm"])
def test_area_identity_on_coco_mini(coco_mini, task):
    coco_gt = load_coco_gt(str(coco_mini / "annotations" / "instances_val2017.json"))
    results = perturbed_ground_truth(coco_gt, np.random.default_rng(3))
    assert_area_identity(coco_gt, results, task)
    by_mob = mob_range_metrics(coco_gt, results, task)
    assert by_mob.num_gt.sum() >= 976 and np.isfinite(by_mob.ap).all()


# ------------------------------------------------------------------------ the evaluators
@pytest.fixture
def registered_hand(tmp_path, request):
    coco_gt, results = hand_case(tmp_path)
    name = f"mayolact_test_mob_{request.node.name}"
    register_coco_instances(name, {}, str(tmp_path / "hand.json"), str(tmp_path))
    DatasetCatalog.get(name)
    yield name, results
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _hand_outputs(results):
    """The hand case's detections as model outputs (class 0, masks decoded from the RLEs)."""
    import pycocotools.mask as mask_util
    import torch
    from detectron2.structures import Boxes, Instances

    inst = Instances((40, 40))
    xyxy = [[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in results)]
    inst.pred_boxes = Boxes(torch.tensor(xyxy, dtype=torch.float32))
    inst.scores = torch.tensor([r["score"] for r in results], dtype=torch.float32)
    inst.pred_classes = torch.zeros(len(results), dtype=torch.int64)
    inst.pred_masks = torch.from_numpy(
        np.stack([mask_util.decode(r["segmentation"]).astype(bool) for r in results]))
    return [{"image_id": 1, "height": 40, "width": 40}], [{"instances": inst}]


def test_evaluator_reports_ranges_in_results_and_log(registered_hand, tmp_path, caplog):
    name, results = registered_hand
    cfg = get_cfg()
    add_mayolact_config(cfg)
    cfg.MODEL.MASK_ON = True
    cfg.TEST.YOLACT.MOB_RANGES = list(DEFAULT_MOB_EDGES)
    evaluator = build_mayolact_evaluator(cfg, name, str(tmp_path / "out"))
    evaluator.reset()
    evaluator.process(*_hand_outputs(results))
    with caplog.at_level("INFO"):
        res = evaluator.evaluate()
    for task in ("bbox", "segm"):
        assert res[task]["AP-mob[0,0.4]"] == pytest.approx(50.0)
        assert res[task]["AP75-mob[0.8,1]"] == pytest.approx(100.0)
        assert "AP" in res[task] and "oLRP" in res[task]  # next to COCO's and LRP's metrics
    log = caplog.text
    assert "by GT mask-over-box ratio" in log and "| mob[0.4,0.6] | 1" in log
    assert "Per-category segm AP by MOB range" in log
    cfg.TEST.YOLACT.MOB_RANGES = [0.5]
    with pytest.raises(ValueError, match="TEST.YOLACT.MOB_RANGES"):
        build_mayolact_evaluator(cfg, name, str(tmp_path / "out2"))


def test_evaluator_without_ranges_or_masks_is_unchanged(registered_hand, tmp_path):
    name, results = registered_hand
    cfg = get_cfg()
    add_mayolact_config(cfg)
    cfg.MODEL.MASK_ON = False
    inputs, outputs = _hand_outputs(results)
    outputs[0]["instances"].remove("pred_masks")
    found = {}
    for edges in ((), DEFAULT_MOB_EDGES):
        cfg.TEST.YOLACT.MOB_RANGES = list(edges)
        evaluator = build_mayolact_evaluator(cfg, name, str(tmp_path / "out"))
        evaluator.reset()
        evaluator.process(inputs, outputs)
        found[edges] = evaluator.evaluate()
    assert list(found[()]) == ["bbox"]
    # Boxes alone have no MOB ratio: nothing is added (NaN APm / APl compare equal here).
    np.testing.assert_equal(dict(found[()]["bbox"]), dict(found[DEFAULT_MOB_EDGES]["bbox"]))


# --------------------------------------------------------------------- tools/evaluate.py
def test_evaluate_tool_mob_ranges(tmp_path, capsys):
    tool = load_tool("evaluate")
    coco_gt, results = hand_case(tmp_path)
    res_path = tmp_path / "r.json"
    res_path.write_text(json.dumps(results))
    out = tmp_path / "metrics.json"
    gt = str(tmp_path / "hand.json")
    assert tool.main([str(res_path), "--gt", gt, "--mob-ranges", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "AP by GT mask-over-box ratio" in printed and "Per-category segm AP:" in printed
    metrics = json.loads(out.read_text())
    assert metrics["segm"]["AP-mob[0,0.4]"] == pytest.approx(50.0)
    assert metrics["segm"]["AP-mob[0.6,0.8]"] is None  # no GT in the range: null
    assert tool.main([str(res_path), "--gt", gt, "--mob-ranges", "0", "0.5", "1", "--quiet",
                      "--output", str(out)]) == 0
    assert set(k for k in json.loads(out.read_text())["bbox"] if "mob" in k) == {
        f"{m}-mob[{r}]" for m in ("AP", "AP50", "AP75") for r in ("0,0.5", "0.5,1")}
    assert tool.main([str(res_path), "--gt", gt, "--mob-ranges", "0.5"]) == 2
    assert "--mob-ranges" in capsys.readouterr().err
    boxes_only = tmp_path / "boxes.json"
    boxes_only.write_text(json.dumps([{k: v for k, v in r.items() if k != "segmentation"}
                                      for r in results]))
    assert tool.main([str(boxes_only), "--gt", gt, "--mob-ranges"]) == 2
    assert "boxes.json" in capsys.readouterr().err
