"""Real data, every time: every training draw maps or is re-drawn, every bad annotation is named
before any library sees it, and nothing can hang or exhaust memory.

* the min-IoU crop that keeps only crowd centres (coco_mini ``000000000540.jpg``, seeded), and a
  soak of thousands of draws over coco_mini train with the crowd images drawn most;
* the training dataset's re-draw and its errors (image, dataset index, seed that replays it);
* the COCO RLE decoder against pycocotools; every annotation fault of a COCO json named (file,
  image, annotation id, field); the verdict cache;
* NaN / 1e9 polygons and bad RLE counts under a memory cap and a timeout; results files whose
  RLE counts would hang the COCO backends;
* ``tools/check_dataset.py`` on coco_mini and on a broken copy of it; training and
  ``--eval-only`` stopping up front on a broken json.
"""
import json
import os
import pickle
import subprocess

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.data import DatasetCatalog

from mayolact.data.common import DataError, YOLACTMapDataset, replay_sample
from mayolact.data.dataset_mapper import YOLACTDatasetMapper
from mayolact.data.datasets import register_coco_with_ids
from mayolact.data.validation import (
    AnnotationError,
    rle_counts_totals,
    segmentation_problem,
    validate_coco_dict,
    validate_coco_json,
)
from mayolact.engine.checks import PreflightError, preflight
from mayolact.evaluation.coco import load_coco_gt, validate_coco_results

from common import PYTHON, QUICK_CONFIG, get_config, make_broken_coco, run_tool

CROWD_IMAGE = "000000000540.jpg"
#: A seed whose draw of CROWD_IMAGE (quick config) crops to a patch where only the crowd region's
#: centre lies: every GT is dropped (the official crop allows it, docs/REFERENCE.md
#: §2.2); the mapper used to crash there with "cannot reshape array of size 0".
CROWD_ONLY_SEED = 96


@pytest.fixture
def coco_train(coco_mini):
    return DatasetCatalog.get("coco_mini_train")


def _quick_mapper(**overrides):
    opts = [x for kv in overrides.items() for x in kv]
    return YOLACTDatasetMapper(get_config(QUICK_CONFIG, opts), is_train=True)


# ------------------------------------------------------------------------------ the crop
def test_crop_that_keeps_only_crowd_centres_is_redrawn(coco_train):
    index = next(i for i, d in enumerate(coco_train) if d["file_name"].endswith(CROWD_IMAGE))
    d = coco_train[index]
    assert any(a["iscrowd"] for a in d["annotations"])
    mapper = _quick_mapper()
    # The draw itself: no GT left, so None (re-drawn), not an exception.
    assert replay_sample(coco_train, mapper, index, CROWD_ONLY_SEED) is None
    # The training dataset draws another image with the next seed and returns a real input.
    ds = YOLACTMapDataset(coco_train, mapper)
    seeds = iter([CROWD_ONLY_SEED, 1, 2, 3])
    ds._next_seed = lambda: next(seeds)
    ds._seeds = np.random.default_rng(0)
    out = ds[index]
    assert len(out["instances"]) > 0 and out["file_name"] != d["file_name"]
    assert index not in ds._fallback_candidates  # as Detectron2's MapDataset: not a fallback


def test_crowd_image_maps_or_is_redrawn_for_every_seed(coco_train):
    index = next(i for i, d in enumerate(coco_train) if d["file_name"].endswith(CROWD_IMAGE))
    mapper = _quick_mapper(**{"INPUT.YOLACT.INTEGRAL_IMAGES": False})
    outcomes = [replay_sample(coco_train, mapper, index, s) for s in range(150)]
    nones = sum(o is None for o in outcomes)
    assert 0 < nones < 150  # CROWD_ONLY_SEED (96) is among them
    assert all(len(o["instances"]) > 0 for o in outcomes if o is not None)


@pytest.mark.slow
def test_soak_thousands_of_draws_over_coco_mini_train(coco_train):
    """2,000 training draws, the crowd images drawn 20 times as often: 0 exceptions. (Without the
    photometric distortion, which moves no box, and the integral images: half the time.)"""
    mapper = _quick_mapper(**{"INPUT.YOLACT.INTEGRAL_IMAGES": False,
                              "INPUT.YOLACT.PHOTOMETRIC": False})
    ds = YOLACTMapDataset(coco_train, mapper, names=("coco_mini_train",))
    weights = np.array([20.0 if any(a["iscrowd"] for a in d["annotations"]) else 1.0
                        for d in coco_train])
    rng = np.random.default_rng(17)
    np.random.seed(17)
    indices = rng.choice(len(coco_train), size=2000, p=weights / weights.sum())
    redrawn = 0
    real_map_one = ds.map_one

    def counting(index, seed):
        nonlocal redrawn
        out = real_map_one(index, seed)
        redrawn += out is None
        return out

    ds.map_one = counting
    crowd_draws = 0
    for i in indices:
        out = ds[int(i)]  # raises DataError on any exception
        assert len(out["instances"]) > 0
        crowd_draws += weights[i] > 1
    assert crowd_draws > 1000 and redrawn > 0


# --------------------------------------------------------------------- the training dataset
def _tiny_image(tmp_path, name="img.png", hw=(48, 64)):
    path = tmp_path / name
    cv2.imwrite(str(path), np.full(hw + (3,), 128, np.uint8))
    return str(path)


def _record(file_name, annotations, image_id=1, hw=(48, 64)):
    return {"file_name": file_name, "image_id": image_id, "height": hw[0], "width": hw[1],
            "annotations": annotations}


def _ann(ann_id=1, box=(10.0, 10.0, 30.0, 20.0), segm=None, **kw):
    x, y, w, h = box
    segm = segm if segm is not None else [[x, y, x + w, y, x + w, y + h, x, y + h]]
    return dict({"id": ann_id, "bbox": list(box), "bbox_mode": 1, "category_id": 0,
                 "iscrowd": 0, "segmentation": segm}, **kw)


def test_training_dataset_names_image_index_and_a_seed_that_replays(tmp_path):
    from detectron2.structures import BoxMode

    good = _record(_tiny_image(tmp_path), [_ann(bbox_mode=BoxMode.XYWH_ABS)])
    bad = _record(_tiny_image(tmp_path, "bad.png"),
                  [_ann(7, segm=[[10.0, 10.0, float("nan"), 10.0, 40.0, 30.0]])], image_id=2)
    cfg = get_config(QUICK_CONFIG, ["MODEL.YOLACT.NUM_CLASSES", "1", "INPUT.YOLACT.SIZE", "64"])
    mapper = YOLACTDatasetMapper(cfg, is_train=True)
    ds = YOLACTMapDataset([good, bad], mapper, names=("mine",))
    with pytest.raises(DataError) as exc:
        ds[1]
    message = str(exc.value)
    assert "bad.png" in message and "dataset index 1 of DATASETS.TRAIN ('mine',)" in message
    assert "id 7" in message and "'segmentation'" in message and "non-finite" in message
    seed = int(message.split("seed ")[1].split(")")[0])
    assert f"--replay 1:{seed}" in message
    with pytest.raises(ValueError, match="non-finite"):
        replay_sample([good, bad], mapper, 1, seed)  # the same error, replayed
    # A seed replays a draw exactly; the dataset survives pickling (data-loader workers).
    a = replay_sample([good], mapper, 0, 123)
    b = pickle.loads(pickle.dumps(ds)).map_one(0, 123)
    assert np.array_equal(a["image"].numpy(), b["image"].numpy())
    # MAX_RESAMPLE draws in a row without a GT: an error that names the key.
    empty = _record(good["file_name"], [])
    with pytest.raises(DataError, match="every image of the training set"):
        YOLACTMapDataset([empty, empty], mapper)[0]
    with pytest.raises(DataError, match="3 draws in a row.*MAX_RESAMPLE"):
        YOLACTMapDataset([empty] * 10, mapper, max_resample=3)[0]


# ------------------------------------------------------------------------------ RLE counts
def test_rle_decoder_agrees_with_pycocotools():
    rng = np.random.default_rng(3)
    strings, areas, masks = [], [], []
    for _ in range(200):
        h, w = (int(v) for v in rng.integers(1, 120, 2))
        m = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        if rng.random() < 0.2:
            m[:] = rng.integers(0, 2)
        rle = mask_util.encode(np.asfortranarray(m))
        strings.append(rle["counts"] if rng.random() < 0.5 else rle["counts"].decode())
        areas.append(h * w)
        masks.append((m, rle))
    valid, totals = rle_counts_totals(strings)
    assert valid.all() and (totals == np.array(areas)).all()
    for m, rle in masks[:20]:  # decoding agrees with the counts pycocotools reads
        assert mask_util.area(rle) == m.sum()
    # What pycocotools would misread: outside the alphabet, unfinished, negative runs.
    s = strings[0] if isinstance(strings[0], str) else strings[0].decode()
    bad = ["abc", "a", "\x7f", "ab\u00e9", "PP", s + "\x20"]
    valid, _ = rle_counts_totals(bad)
    assert not valid.any()
    valid, totals = rle_counts_totals([s[:-1], "", s])
    assert valid[2] and totals[2] == areas[0] and totals[0] != areas[0] and totals[1] == 0


@pytest.mark.parametrize("segm, reason", [
    ([[1.0, 2.0, float("nan"), 4.0, 5.0, 6.0]], "non-finite"),
    ([[1.0, 2.0, float("inf"), 4.0, 5.0, 6.0]], "non-finite"),
    ([[1.0, 2.0, 1e9, 4.0, 5.0, 6.0]], "beyond one image size"),
    ([[1.0, 2.0, 3.0, 4.0]], "2 point"),
    ([[1.0, 2.0, 3.0, 4.0, 5.0]], "odd number"),
    ([[1.0, "x", 3.0, 4.0, 5.0, 6.0]], "other than numbers"),
    ({"size": [48, 64], "counts": [100]}, "sum to 100"),
    ({"size": [48, 64], "counts": [3000, 500]}, "sum to 3500"),
    ({"size": [48, 64], "counts": "abc"}, "cannot be decoded"),
    ({"size": [48, 60], "counts": [2880]}, "does not match"),
    ({"size": [48, 64], "counts": [-1, 3073]}, "non-negative"),
])
def test_segmentation_problems_are_found_before_pycocotools(segm, reason):
    found, _ = segmentation_problem(segm, (48, 64))
    assert found is not None and reason in found, found


def test_a_degenerate_polygon_next_to_valid_ones_is_dropped_in_training():
    segm = [[1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 20.0, 1.0, 20.0, 20.0]]
    assert segmentation_problem(segm, (48, 64)) == (None, [0])
    assert "2 point" in segmentation_problem(segm, (48, 64), strict=True)[0]


# ------------------------------------------------------------------------- COCO json checks
def _coco(tmp_path):
    """A valid two-image COCO dict (images written to tmp_path)."""
    for name in ("a.png", "b.png"):
        _tiny_image(tmp_path, name)
    square = [[10.0, 10.0, 40.0, 10.0, 40.0, 30.0, 10.0, 30.0]]
    full = mask_util.encode(np.asfortranarray(np.ones((48, 64), np.uint8)))
    return {
        "images": [{"id": 1, "file_name": "a.png", "height": 48, "width": 64},
                   {"id": 2, "file_name": "b.png", "height": 48, "width": 64}],
        "categories": [{"id": 3, "name": "x"}, {"id": 5, "name": "y"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 3, "iscrowd": 0, "area": 600.0,
             "bbox": [10.0, 10.0, 30.0, 20.0], "segmentation": square},
            {"id": 11, "image_id": 2, "category_id": 5, "iscrowd": 1, "area": 3072.0,
             "bbox": [0.0, 0.0, 64.0, 48.0],
             "segmentation": {"size": [48, 64], "counts": full["counts"].decode()}},
            {"id": 12, "image_id": 2, "category_id": 3, "iscrowd": 1, "area": 3072.0,
             "bbox": [0.0, 0.0, 64.0, 48.0], "segmentation": {"size": [48, 64],
                                                              "counts": [0, 3072]}},
        ],
    }


FAULTS = [  # (annotation id or None, change, field, words of the reason)
    (10, {"segmentation": [[10.0, float("nan"), 40.0, 10.0, 40.0, 30.0]]}, "segmentation",
     "non-finite"),
    (10, {"segmentation": [[10.0, 1e9, 40.0, 10.0, 40.0, 30.0]]}, "segmentation",
     "beyond one image size"),
    (10, {"segmentation": [[10.0, 10.0, 40.0, 10.0]]}, "segmentation", "2 point"),
    (11, {"segmentation": {"size": [48, 64], "counts": "abc"}}, "segmentation",
     "cannot be decoded"),
    (12, {"segmentation": {"size": [48, 64], "counts": [0, 3000]}}, "segmentation",
     "sum to 3000"),
    (12, {"segmentation": {"size": [48, 64], "counts": [0, 4000]}}, "segmentation",
     "sum to 4000"),
    (10, {"bbox": [70.0, 10.0, 30.0, 20.0]}, "bbox", "entirely outside"),
    (10, {"bbox": [10.0, 10.0, float("inf"), 20.0]}, "bbox", "non-finite"),
    (10, {"bbox": [10.0, 10.0, -3.0, 20.0]}, "bbox", "negative"),
    (10, {"category_id": 4}, "category_id", "not among the categories"),
    (10, {"image_id": 9}, "image_id", "not the id of an image"),
    (10, {"iscrowd": 2}, "iscrowd", "expected 0 or 1"),
    (10, {"id": 11}, "id", "used 2 times"),
]


@pytest.mark.parametrize("ann_id, change, field, words", FAULTS)
def test_every_annotation_fault_is_named(tmp_path, ann_id, change, field, words):
    data = _coco(tmp_path)
    assert validate_coco_dict(data, "x.json", image_root=str(tmp_path)) == []
    ann = next(a for a in data["annotations"] if a["id"] == ann_id)
    ann.update(change)
    problems = validate_coco_dict(data, "x.json", image_root=str(tmp_path), for_evaluation=True)
    assert len(problems) == 1, problems
    p = problems[0]
    text = str(p)
    assert p.severity == "error" and p.field == field and words in p.reason, text
    assert text.startswith("x.json: image ") and f"annotation id {change.get('id', ann_id)}" in text


def test_image_faults_are_named(tmp_path):
    data = _coco(tmp_path)
    data["images"].append(dict(data["images"][0], file_name="b.png"))  # a duplicated id
    data["images"].append({"id": 3, "file_name": "gone.png", "height": 48, "width": 64})
    problems = validate_coco_dict(data, "x.json", image_root=str(tmp_path))
    assert {p.field for p in problems} == {"id", "file_name"}
    dup = next(p for p in problems if p.field == "id")
    assert "image id 1 is used by 2 images (a.png, b.png)" in dup.reason
    gone = next(p for p in problems if p.field == "file_name")
    assert gone.image_id == 3 and "gone.png not found" in gone.reason


def test_verdict_is_cached_by_content(tmp_path, monkeypatch):
    from mayolact.data import validation

    monkeypatch.setenv("MAYOLACT_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "x.json"
    path.write_text(json.dumps(_coco(tmp_path)))
    assert validate_coco_json(str(path)) == []
    assert len(list((tmp_path / "cache" / "validation").iterdir())) == 1
    validation._memo.clear()
    monkeypatch.setattr(validation, "validate_coco_dict", lambda *a, **k: pytest.fail("recheck"))
    assert validate_coco_json(str(path), image_root=str(tmp_path)) == []  # from the cache
    (tmp_path / "a.png").unlink()  # image files are looked up every time
    assert [p.field for p in validate_coco_json(str(path), image_root=str(tmp_path))] == [
        "file_name"]
    copy = tmp_path / "copy.json"  # the same content elsewhere: the cached verdict, its name
    data = _coco(tmp_path)
    data["annotations"][0]["category_id"] = 4
    path.write_text(json.dumps(data))
    copy.write_text(json.dumps(data))
    monkeypatch.undo()
    monkeypatch.setenv("MAYOLACT_CACHE", str(tmp_path / "cache"))
    assert str(validate_coco_json(str(path))[0]).startswith(str(path))
    validation._memo.clear()
    assert str(validate_coco_json(str(copy))[0]).startswith(str(copy))
    monkeypatch.undo()
    monkeypatch.setenv("MAYOLACT_CACHE", str(tmp_path / "cache"))
    data = _coco(tmp_path)
    data["annotations"][0]["category_id"] = 4
    path.write_text(json.dumps(data))  # new content: checked again
    assert [p.field for p in validate_coco_json(str(path))] == ["category_id"]


def test_a_registered_json_is_checked_before_detectron2_loads_it(tmp_path):
    data = _coco(tmp_path)
    data["annotations"][0]["category_id"] = 4  # load_coco_json: a raw KeyError
    path = tmp_path / "x.json"
    path.write_text(json.dumps(data))
    register_coco_with_ids("issue17_unknown_category", str(path), str(tmp_path))
    with pytest.raises(AnnotationError, match="annotation id 10: field 'category_id'"):
        DatasetCatalog.get("issue17_unknown_category")


def test_preflight_names_a_bad_annotation_of_train_and_test_sets(tmp_path):
    data = _coco(tmp_path)
    data["annotations"][0]["segmentation"] = [[10.0, 10.0, 40.0, 10.0]]  # 2 points
    path = tmp_path / "x.json"
    path.write_text(json.dumps(data))
    entry = f"[['issue17_pre','{path}','{tmp_path}']]"
    cfg = get_config(QUICK_CONFIG, ["DATASETS.YOLACT.COCO_JSON", entry, "DATASETS.TRAIN",
                                    "('issue17_pre',)", "DATASETS.TEST", "('issue17_pre',)",
                                    "OUTPUT_DIR", str(tmp_path / "out")])
    with pytest.raises(PreflightError) as exc:
        preflight(cfg, train=True)
    assert "DATASETS.TRAIN" in str(exc.value) and "annotation id 10" in str(exc.value)
    with pytest.raises(PreflightError, match="(?s)DATASETS.TEST.*annotation id 10"):
        preflight(cfg, train=False)


# ---------------------------------------------- nothing hangs, nothing exhausts memory
CAPPED = """
import json, resource, sys
import mayolact
from detectron2.data import DatasetCatalog
from mayolact.data.dataset_mapper import YOLACTDatasetMapper
from mayolact.data.datasets import register_coco_with_ids
from mayolact.config import load_config

def vm_bytes():
    for line in open("/proc/self/status"):
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024

cfg = load_config(sys.argv[1], ["MODEL.YOLACT.NUM_CLASSES", "2", "INPUT.YOLACT.SIZE", "64"])
mapper = YOLACTDatasetMapper(cfg, is_train=True)
record = json.loads(sys.argv[2])
# 1 GB beyond what the process holds now: pycocotools on these inputs wanted 24 GB.
cap = vm_bytes() + (1 << 30)
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
for name, segm in json.loads(sys.argv[3]):
    bad = dict(record, annotations=[dict(record["annotations"][0], segmentation=segm)])
    try:
        mapper(bad)
    except ValueError as e:
        print("NAMED", name, "|", e)
"""


@pytest.mark.slow
def test_bad_polygons_and_counts_are_named_under_a_memory_cap(tmp_path):
    image = _tiny_image(tmp_path)
    record = _record(image, [_ann(bbox_mode=1)])
    record["annotations"][0]["bbox_mode"] = 1
    cases = [("nan", [[10.0, float("nan"), 40.0, 10.0, 40.0, 30.0]]),
             ("inf", [[10.0, float("inf"), 40.0, 10.0, 40.0, 30.0]]),
             ("huge", [[10.0, 1e9, 40.0, 10.0, 40.0, 30.0]]),
             ("short", {"size": [48, 64], "counts": [5]}),
             ("long", {"size": [48, 64], "counts": [5000]}),
             ("abc", {"size": [48, 64], "counts": "abc"})]
    proc = subprocess.run(
        [PYTHON, "-c", CAPPED, str(QUICK_CONFIG), json.dumps(record), json.dumps(cases)],
        capture_output=True, text=True, timeout=300, cwd=str(tmp_path),
        env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    named = [line for line in proc.stdout.splitlines() if line.startswith("NAMED")]
    assert len(named) == len(cases), proc.stdout + proc.stderr[-2000:]
    assert all("img.png" in line and "'segmentation'" in line for line in named)


def _results_gt(tmp_path):
    data = _coco(tmp_path)
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(data))
    full = mask_util.encode(np.asfortranarray(np.ones((48, 64), np.uint8)))["counts"].decode()
    result = {"image_id": 1, "category_id": 3, "score": 0.9, "bbox": [10.0, 10.0, 30.0, 20.0],
              "segmentation": {"size": [48, 64], "counts": full}}
    return path, result


@pytest.mark.parametrize("counts, words", [
    ("abc", "cannot be decoded"),
    ([0, 3000], "sum to 3000"),
    ("<defect>", "cannot be decoded"),  # an unfinished last value
])
def test_results_with_bad_rle_counts_are_named(tmp_path, counts, words):
    path, result = _results_gt(tmp_path)
    short = mask_util.encode(np.asfortranarray(np.ones((48, 64), np.uint8)))["counts"].decode()
    counts = short[:-1] if counts == "<defect>" else counts
    if isinstance(counts, list):  # an uncompressed RLE is not a result: malformed
        counts = mask_util.frPyObjects({"size": [48, 64], "counts": counts}, 48, 64)[
            "counts"].decode()
    bad = dict(result, segmentation={"size": [48, 64], "counts": counts})
    gt = load_coco_gt(str(path))
    with pytest.raises(ValueError) as exc:
        validate_coco_results([result, bad], gt, source="r.json")
    assert "r.json: entry 1: field 'segmentation'" in str(exc.value) and words in str(exc.value)


EVALUATE = """
import json, sys
from mayolact.evaluation.results_file import InputError, evaluate_results_file
try:
    evaluate_results_file(sys.argv[1], gt=sys.argv[2], backend=sys.argv[3], verbose=False)
except InputError as e:
    print("NAMED", e)
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["pycocotools", "faster_coco_eval"])
def test_evaluate_cannot_hang_on_short_or_long_counts(tmp_path, backend):
    """Both backends loop forever in mask.iou on counts that do not sum to h x w: the file is
    refused first (the subprocess has a timeout)."""
    path, result = _results_gt(tmp_path)
    for counts, words in (([0, 3000], "sum to 3000"), ([0, 4000], "sum to 4000")):
        rle = mask_util.frPyObjects({"size": [48, 64], "counts": counts}, 48, 64)
        bad = dict(result, segmentation={"size": [48, 64], "counts": rle["counts"].decode()})
        results = tmp_path / "results.json"
        results.write_text(json.dumps([result, bad]))
        proc = subprocess.run([PYTHON, "-c", EVALUATE, str(results), str(path), backend],
                              capture_output=True, text=True, timeout=120,
                              env=dict(os.environ, OMP_NUM_THREADS="1"))
        assert "NAMED" in proc.stdout and words in proc.stdout, proc.stdout + proc.stderr[-2000:]
    # A ground truth with such a crowd region is refused as well.
    data = json.loads(path.read_text())
    data["annotations"][2]["segmentation"]["counts"] = [0, 3000]
    path.write_text(json.dumps(data))
    results.write_text(json.dumps([result]))
    proc = subprocess.run([PYTHON, "-c", EVALUATE, str(results), str(path), backend],
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert "NAMED" in proc.stdout and "annotation id 12" in proc.stdout, proc.stdout


# ------------------------------------------------------------------------ the check tool
@pytest.mark.slow
def test_check_dataset_on_coco_mini_and_on_a_broken_copy(coco_mini, tmp_path):
    ok = run_tool("check_dataset", ["--config-file", QUICK_CONFIG, "--dataset", "coco_mini_val",
                                    "--images", "12", "--draws", "2", "--no-progress"], tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr[-3000:]
    assert "training draws: 24, failures: 0" in ok.stdout and "result: OK" in ok.stdout
    assert "positive anchors per kept draw (ATSS w. maiou" in ok.stdout
    faults = make_broken_coco(coco_mini, tmp_path / "broken")
    json_file = tmp_path / "broken" / "annotations" / "instances_val2017.json"
    bad = run_tool("check_dataset", ["--config-file", QUICK_CONFIG, "--dataset", json_file,
                                     "--image-root", tmp_path / "broken" / "val2017",
                                     "--no-progress"], tmp_path)
    assert bad.returncode == 1, bad.stdout + bad.stderr[-3000:]
    assert f"{len(faults)} error(s)" in bad.stdout and "result: FAILED" in bad.stdout
    for name, (field, some_id) in faults.items():
        assert any(f"field '{field}'" in line and str(some_id) in line
                   for line in bad.stdout.splitlines()), (name, bad.stdout)
    # A replay of a draw the report names.
    replay = run_tool("check_dataset", ["--config-file", QUICK_CONFIG, "--dataset",
                                        "coco_mini_val", "--replay", "3:12345"], tmp_path)
    assert replay.returncode == 0 and "instances" in replay.stdout, replay.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("eval_only", [False, True])
def test_train_and_eval_only_stop_up_front_on_a_broken_json(coco_mini, tmp_path, eval_only):
    make_broken_coco(coco_mini, tmp_path / "broken")
    json_file = tmp_path / "broken" / "annotations" / "instances_val2017.json"
    entry = f"[['broken','{json_file}','{tmp_path / 'broken' / 'val2017'}']]"
    args = ["--config-file", QUICK_CONFIG, "DATASETS.YOLACT.COCO_JSON", entry,
            "DATASETS.TRAIN", "('broken',)", "DATASETS.TEST", "('broken',)",
            "OUTPUT_DIR", tmp_path / "out", "MODEL.YOLACT.NUM_CLASSES", "80"]
    if eval_only:
        args = ["--eval-only"] + args
    proc = run_tool("train_net", args, tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "annotation problem(s)" in proc.stderr and "annotation id" in proc.stderr
    assert "field 'segmentation'" in proc.stderr
    assert not (tmp_path / "out" / "model_final.pth").exists()
