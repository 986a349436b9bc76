"""Tests of the procedural shapes dataset (mayolact.data.shapes)."""
import json
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.structures import BoxMode
from pycocotools.coco import COCO

from mayolact.data import shapes
from mayolact.data.shapes import (
    SHAPES_CLASSES,
    generate_shapes_dicts,
    load_shapes,
    register_shapes,
    render_shapes_image,
    shapes_cache_dir,
)


@pytest.fixture(scope="module")
def dicts300():
    """300 images in memory: enough for the statistics, about 2 s."""
    return generate_shapes_dicts(300, 128, seed=0)


def _decode(anno):
    return mask_util.decode(anno["segmentation"]).astype(bool)


def test_render_deterministic_and_seed_dependent():
    a = render_shapes_image(5, 96, seed=3)
    b = render_shapes_image(5, 96, seed=3)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    c = render_shapes_image(5, 96, seed=4)
    d = render_shapes_image(6, 96, seed=3)
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[0], d[0])
    image, masks, classes, boxes = a
    assert image.shape == (96, 96, 3) and image.dtype == np.uint8
    assert masks.dtype == bool and masks.shape[1:] == (96, 96) and len(masks) >= 1
    assert classes.shape == (len(masks),) and boxes.shape == (len(masks), 4)
    # Visible masks never overlap (occlusion).
    assert masks.sum(0).max() <= 1


def test_objects_stand_out_from_the_background():
    """Generator version 2: vivid objects over darker textured backgrounds (see the module doc)."""
    gaps = []
    for i in range(20):
        image, masks, _, _ = render_shapes_image(i, 128, seed=0)
        peak = image.max(axis=2).astype(np.float32)  # brightest channel per pixel
        obj = masks.any(0)
        gaps.append(np.median(peak[obj]) - np.median(peak[~obj]))
    assert shapes.GENERATOR_VERSION == 2
    assert min(gaps) > 40 and np.median(gaps) > 80, gaps


def test_dicts_deterministic_independent_of_count():
    a = generate_shapes_dicts(4, 96, seed=1)
    b = generate_shapes_dicts(6, 96, seed=1)
    assert json.dumps(a, default=int) == json.dumps(b[:4], default=int)
    c = generate_shapes_dicts(4, 96, seed=2)
    assert json.dumps(a, default=int) != json.dumps(c, default=int)


def test_boxes_are_tight_boxes_of_rle_masks(dicts300):
    n = 0
    for d in dicts300[:100]:
        assert d["height"] == d["width"] == 128
        for anno in d["annotations"]:
            m = _decode(anno)
            ys, xs = np.nonzero(m)
            expected = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            assert anno["bbox"] == [float(v) for v in expected]
            assert anno["bbox_mode"] == BoxMode.XYXY_ABS
            x, y, w, h = mask_util.toBbox(anno["segmentation"])
            np.testing.assert_allclose([x, y, x + w, y + h], anno["bbox"])
            assert anno["iscrowd"] == 0 and 0 <= anno["category_id"] < len(SHAPES_CLASSES)
            assert anno["bbox"][2] - anno["bbox"][0] > 4 and anno["bbox"][3] - anno["bbox"][1] > 4
            assert m.sum() >= 48
            n += 1
    assert n > 200


def test_objects_per_image_and_occlusion(dicts300):
    counts = np.array([len(d["annotations"]) for d in dicts300])
    assert counts.min() >= 1 and counts.max() <= 6
    assert counts.mean() > 3
    occluded = 0
    for d in dicts300[:60]:
        masks = np.stack([_decode(a) for a in d["annotations"]])
        assert masks.sum(0).max() <= 1  # visible parts are disjoint
        boxes = np.array([a["bbox"] for a in d["annotations"]])
        # a box that overlaps another object's mask means an occlusion happened somewhere
        for i, b in enumerate(boxes):
            x1, y1, x2, y2 = b.astype(int)
            others = np.delete(masks, i, 0)[:, y1:y2, x1:x2]
            occluded += bool(others.any())
    assert occluded > 10


def test_mob_ratio_range_and_class_coverage(dicts300):
    mobs, cls = [], []
    images_per_class = np.zeros(len(SHAPES_CLASSES), int)
    for d in dicts300:
        present = set()
        for a in d["annotations"]:
            x1, y1, x2, y2 = a["bbox"]
            mobs.append(mask_util.area(a["segmentation"]) / ((x2 - x1) * (y2 - y1)))
            cls.append(a["category_id"])
            present.add(a["category_id"])
        images_per_class[list(present)] += 1
    mobs, cls = np.array(mobs), np.array(cls)
    assert mobs.min() > 0 and mobs.max() <= 1.0
    assert (mobs < 0.25).mean() > 0.05 and (mobs > 0.9).mean() > 0.05
    # 300 images: every class in well over 100 of them (2000 images: several hundred).
    assert images_per_class.min() > 100, images_per_class
    med = {SHAPES_CLASSES[c]: np.median(mobs[cls == c]) for c in range(len(SHAPES_CLASSES))}
    assert med["square"] > 0.95
    assert 0.7 < med["disc"] < 0.8
    assert med["bar"] < 0.25
    assert med["ring"] < 0.5 and med["crescent"] < 0.5
    assert 0.35 < med["triangle"] <= 0.5


def test_bad_parameters():
    with pytest.raises(ValueError, match="image_size"):
        render_shapes_image(0, 8)
    with pytest.raises(ValueError, match="min_objects"):
        render_shapes_image(0, 64, min_objects=3, max_objects=2)
    with pytest.raises(ValueError, match="size_range"):
        render_shapes_image(0, 64, size_range=(0.5, 0.2))
    with pytest.raises(ValueError, match="num_images"):
        generate_shapes_dicts(-1)
    with pytest.raises(ValueError, match="already registered"):
        register_shapes("mayolact_shapes_train", 10)


def test_builtin_registration():
    for name in ("mayolact_shapes_train", "mayolact_shapes_val"):
        assert name in DatasetCatalog.list()
        meta = MetadataCatalog.get(name)
        assert meta.thing_classes == SHAPES_CLASSES
        assert len(meta.thing_colors) == len(SHAPES_CLASSES)
        assert meta.evaluator_type == "coco"
    assert (MetadataCatalog.get("mayolact_shapes_train").cache_dir
            != MetadataCatalog.get("mayolact_shapes_val").cache_dir)


def test_cache_registration_and_coco_json(tmp_path):
    name = "_test_shapes_tiny"
    register_shapes(name, 12, 64, seed=7, cache_root=str(tmp_path))
    try:
        folder = shapes_cache_dir(12, 64, 7, str(tmp_path))
        assert not folder.exists()  # lazy: nothing generated at registration
        dicts = DatasetCatalog.get(name)
        assert len(dicts) == 12 and (folder / "dataset.json").is_file()
        assert not [p for p in os.listdir(folder / "images") if p.endswith(".tmp")]
        img = read_image(dicts[3]["file_name"], format="RGB")
        expected = render_shapes_image(3, 64, seed=7)[0]
        np.testing.assert_array_equal(img, expected)
        # Second load comes from the cache and is identical.
        again = load_shapes(12, 64, 7, cache_root=str(tmp_path))
        assert again == dicts
        assert again[0]["annotations"][0]["bbox_mode"] == BoxMode.XYXY_ABS
        # COCO json for COCOEvaluator, written on first access; valid for pycocotools.
        json_file = MetadataCatalog.get(name).json_file
        coco = COCO(json_file)
        assert len(coco.getImgIds()) == 12
        assert sorted(coco.getCatIds()) == list(range(1, len(SHAPES_CLASSES) + 1))
        n_annos = sum(len(d["annotations"]) for d in dicts)
        assert len(coco.getAnnIds()) == n_annos
        ann = coco.loadAnns(coco.getAnnIds(imgIds=[dicts[0]["image_id"]]))[0]
        src = dicts[0]["annotations"][0]
        np.testing.assert_array_equal(coco.annToMask(ann), mask_util.decode(src["segmentation"]))
        x1, y1, x2, y2 = src["bbox"]
        np.testing.assert_allclose(ann["bbox"], [x1, y1, x2 - x1, y2 - y1])
        assert ann["category_id"] == src["category_id"] + 1
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_missing_image_is_regenerated(tmp_path):
    dicts = load_shapes(3, 64, 9, cache_root=str(tmp_path))
    os.remove(dicts[1]["file_name"])
    again = load_shapes(3, 64, 9, cache_root=str(tmp_path))
    assert os.path.isfile(again[1]["file_name"]) and again == dicts


def test_module_has_dunder_all():
    for name in shapes.__all__:
        assert hasattr(shapes, name)


def test_coco_evaluator_perfect_predictions(tmp_path):
    """COCOEvaluator reads the lazily written json; the GTs as predictions give AP 100."""
    import torch
    from detectron2.evaluation import COCOEvaluator
    from detectron2.structures import Boxes, Instances

    name = "_test_shapes_eval"
    register_shapes(name, 4, 64, seed=3, cache_root=str(tmp_path))
    try:
        dicts = DatasetCatalog.get(name)
        evaluator = COCOEvaluator(name, tasks=("bbox", "segm"), distributed=False,
                                  output_dir=str(tmp_path / "eval"), use_fast_impl=False)
        evaluator.reset()
        for d in dicts:
            annos = d["annotations"]
            inst = Instances((d["height"], d["width"]))
            inst.pred_boxes = Boxes(torch.tensor([a["bbox"] for a in annos]))
            inst.scores = torch.ones(len(annos))
            inst.pred_classes = torch.tensor([a["category_id"] for a in annos])
            inst.pred_masks = torch.from_numpy(
                np.stack([_decode(a) for a in annos])).bool()
            evaluator.process([{"image_id": d["image_id"]}], [{"instances": inst}])
        res = evaluator.evaluate()
        assert res["segm"]["AP"] > 99.0 and res["bbox"]["AP"] > 99.0
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_generation_reports_progress(caplog, monkeypatch):
    """Long generations log every 10%; short ones stay silent."""
    monkeypatch.setattr(shapes, "PROGRESS_MIN_IMAGES", 20)
    with caplog.at_level("INFO", logger="mayolact.data.shapes"):
        generate_shapes_dicts(20, 32, seed=0, min_objects=1, max_objects=1)
    lines = [r.getMessage() for r in caplog.records if "images (" in r.getMessage()]
    assert [line.split(",")[0] for line in lines] == [
        f"shapes: {i}/20 images ({5 * i}%)" for i in range(2, 20, 2)]
    caplog.clear()
    with caplog.at_level("INFO", logger="mayolact.data.shapes"):
        generate_shapes_dicts(19, 32, seed=0, min_objects=1, max_objects=1)
    assert not caplog.records
