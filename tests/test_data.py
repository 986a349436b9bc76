"""Tests of mayolact.data: augmentations, the YOLACT dataset mapper and dataset registration."""

import json

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.data.common import MapDataset
from detectron2.structures import Boxes, BoxMode, pairwise_iou
from fvcore.transforms.transform import HFlipTransform, NoOpTransform

from mayolact.config.config import add_mayolact_config
from mayolact.data.augmentation import (
    Expand,
    ExpandTransform,
    MinIoUCropTransform,
    MinIoURandomCrop,
    PhotometricDistortion,
    PhotometricTransform,
    SquareResize,
    SquareResizeTransform,
    YOLACTAugInput,
    build_yolact_test_augmentation,
    build_yolact_train_augmentation,
    filter_small_gts,
)
from mayolact.data.common import YOLACTMapDataset
from mayolact.data.dataset_mapper import YOLACTDatasetMapper, decode_segmentations
from mayolact.data.datasets import register_coco_mini

S = 96  # small input size keeps the synthetic tests fast
MEAN = [123.68, 116.78, 103.94]


def make_cfg(size=S, **input_yolact):
    cfg = get_cfg()
    add_mayolact_config(cfg)
    cfg.MODEL.YOLACT.NUM_CLASSES = 80  # no DATASETS.TRAIN to take it from
    cfg.INPUT.FORMAT = "RGB"
    cfg.MODEL.PIXEL_MEAN = list(MEAN)
    cfg.MODEL.PIXEL_STD = [58.40, 57.12, 57.38]
    cfg.INPUT.YOLACT.SIZE = size
    for k, v in input_yolact.items():
        setattr(cfg.INPUT.YOLACT, k, v)
    return cfg


def no_aug_cfg(size=S, **kw):
    """Only the square resize: outputs are deterministic."""
    return make_cfg(
        size, PHOTOMETRIC=False, EXPAND_PROB=0.0, MIN_IOU_CROP=False, FLIP_PROB=0.0, **kw
    )


def box_masks(boxes, h, w):
    """uint8 (N, h, w) masks that fill each integer box."""
    out = np.zeros((len(boxes), h, w), np.uint8)
    for i, (x1, y1, x2, y2) in enumerate(np.asarray(boxes, int)):
        out[i, y1:y2, x1:x2] = 1
    return out


def tight_box(mask):
    ys, xs = np.nonzero(mask)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


# ------------------------------------------------------------------------- FilterAnnotations
def test_filter_small_gts_is_strict():
    boxes = np.array(
        [[0, 0, 4, 10], [0, 0, 10, 4], [0, 0, 4.01, 4.01], [5, 5, 9, 30], [1, 1, 6, 6]]
    )
    assert filter_small_gts(boxes, 4.0).tolist() == [False, False, True, False, True]
    assert filter_small_gts(boxes, (3.0, 5.0)).tolist() == [True, False, False, True, False]
    assert filter_small_gts(np.zeros((0, 4)), 4.0).shape == (0,)


# ----------------------------------------------------------------------------- photometric
def test_photometric_identity_and_brightness():
    rng = np.random.default_rng(0)
    img = rng.uniform(20, 200, (16, 20, 3)).astype(np.float32)
    same = PhotometricTransform(None, None, True, None, None, None).apply_image(img)
    np.testing.assert_allclose(same, img, rtol=1e-5, atol=1e-3)  # HSV round trip only
    bright = PhotometricTransform(10.0, None, True, None, None, None).apply_image(img)
    np.testing.assert_allclose(bright, img + 10, rtol=1e-5, atol=1e-3)
    perm = PhotometricTransform(None, None, True, None, None, (2, 0, 1)).apply_image(img)
    np.testing.assert_allclose(perm, img[..., [2, 0, 1]], rtol=1e-5, atol=1e-3)
    # Contrast first or last commutes with an identity HSV step.
    c1 = PhotometricTransform(None, 1.3, True, None, None, None).apply_image(img)
    c2 = PhotometricTransform(None, 1.3, False, None, None, None).apply_image(img)
    np.testing.assert_allclose(c1, c2, rtol=1e-4, atol=1e-2)
    assert img.dtype == np.float32 and not np.shares_memory(same, img)


def test_photometric_rgb_equals_bgr_semantics():
    rng = np.random.default_rng(1)
    rgb = rng.uniform(0, 255, (12, 12, 3)).astype(np.float32)
    params = (-20.0, 1.4, False, 0.6, 15.0, None)
    out_rgb = PhotometricTransform(*params, image_format="RGB").apply_image(rgb)
    out_bgr = PhotometricTransform(*params, image_format="BGR").apply_image(rgb[..., ::-1].copy())
    np.testing.assert_allclose(out_rgb, out_bgr[..., ::-1], rtol=1e-5, atol=1e-3)


def test_photometric_hue_wraps_and_saturation():
    # Pure red (hue 0): a negative hue shift wraps to 360 - 10 = 350 degrees.
    red = np.zeros((1, 1, 3), np.float32)
    red[..., 0] = 200.0  # RGB
    out = PhotometricTransform(None, None, True, None, -10.0, None, "RGB").apply_image(red)
    hsv = cv2.cvtColor(out, cv2.COLOR_RGB2HSV)
    assert hsv[0, 0, 0] == pytest.approx(350.0, abs=1e-2)
    grey = np.full((2, 2, 3), 100.0, np.float32)  # saturation 0 stays grey
    out = PhotometricTransform(None, None, True, 1.5, None, None).apply_image(grey)
    np.testing.assert_allclose(out, grey, atol=1e-3)


def test_photometric_no_clipping_and_draws():
    img = np.random.default_rng(2).uniform(0, 255, (24, 24, 3)).astype(np.float32)
    aug = PhotometricDistortion()
    np.random.seed(3)
    outside, kinds = 0, set()
    for _ in range(40):
        tfm = aug.get_transform(img)
        out = tfm.apply_image(img)
        assert out.dtype == np.float32 and out.shape == img.shape
        outside += int((out < 0).any() or (out > 255).any())
        kinds.add(
            (
                tfm.brightness is None,
                tfm.contrast is None,
                tfm.contrast_first,
                tfm.saturation is None,
                tfm.hue is None,
                tfm.permutation is None,
            )
        )
        if tfm.brightness is not None:
            assert -32 <= tfm.brightness <= 32
        if tfm.hue is not None:
            assert -18 <= tfm.hue <= 18
        for v in (tfm.contrast, tfm.saturation):
            assert v is None or 0.5 <= v <= 1.5
    assert outside > 0  # values leave [0, 255]: nothing is clipped
    assert len(kinds) > 10  # the coins vary independently
    box = np.array([[1.0, 2.0, 5.0, 9.0]], np.float32)
    np.testing.assert_array_equal(tfm.apply_box(box), box)


# ---------------------------------------------------------------------------------- expand
def test_expand_keeps_masks_aligned_with_boxes():
    h, w = 30, 40
    boxes = np.array([[2, 3, 12, 20], [20, 5, 40, 30]], np.float32)
    masks = box_masks(boxes, h, w)
    img = np.random.default_rng(0).uniform(0, 255, (h, w, 3)).astype(np.float32)
    aug = Expand(prob=1.0, ratio_range=(1.0, 4.0), fill=MEAN)
    np.random.seed(0)
    for _ in range(10):
        inp = YOLACTAugInput(img, boxes=boxes, masks=masks, classes=np.array([3, 7]))
        tfm = aug(inp)
        assert isinstance(tfm, ExpandTransform)
        assert inp.image.shape == (tfm.new_h, tfm.new_w, 3) == inp.masks.shape[1:] + (3,)
        r = tfm.new_w / w
        assert 1.0 <= r <= 4.0 and abs(tfm.new_h / h - r) < 1 / h + 1 / w
        for m, b in zip(inp.masks, inp.boxes):
            assert tight_box(m) == b.tolist()  # the mask moved with its box
        np.testing.assert_array_equal(
            inp.image[tfm.top : tfm.top + h, tfm.left : tfm.left + w], img
        )
        outside = np.ones(inp.image.shape[:2], bool)
        outside[tfm.top : tfm.top + h, tfm.left : tfm.left + w] = False
        np.testing.assert_allclose(
            inp.image[outside], np.broadcast_to(MEAN, (outside.sum(), 3)), rtol=1e-6
        )
        assert inp.masks[:, outside].sum() == 0  # zero padding


def test_expand_probability_and_arithmetic():
    aug = Expand(prob=0.5, ratio_range=(1.0, 4.0), fill=MEAN)
    img = np.zeros((10, 20, 3), np.float32)
    np.random.seed(1)
    fired = sum(isinstance(aug.get_transform(img), ExpandTransform) for _ in range(400))
    assert 150 < fired < 250
    # Same draws as the official code: u, ratio, left, top.
    np.random.seed(5)
    tfm = Expand(prob=1.0, ratio_range=(1.0, 4.0), fill=MEAN).get_transform(img)
    np.random.seed(5)
    np.random.uniform(0, 1)
    r = np.random.uniform(1.0, 4.0)
    left = int(np.random.uniform(0, 20 * r - 20))
    top = int(np.random.uniform(0, 10 * r - 10))
    assert (tfm.new_h, tfm.new_w, tfm.left, tfm.top) == (int(10 * r), int(20 * r), left, top)


# ------------------------------------------------------------------------------------ crop
def test_crop_keeps_exactly_the_gts_with_centre_strictly_inside():
    h, w = 50, 60
    # Patch x in [10, 40), y in [5, 35).
    tfm = MinIoUCropTransform(10, 5, 30, 30, w, h)
    boxes = np.array(
        [
            [12, 10, 20, 20],  # centre (16, 15): inside
            [0, 0, 20, 10],  # centre (10, 5): on the corner -> out (strict)
            [30, 20, 50, 30],  # centre (40, 25): on the right edge -> out
            [5, 10, 25, 40],  # centre (15, 25): inside, gets clipped
            [45, 40, 55, 48],  # outside
            [10, 10, 40.2, 34],  # centre (25.1, 22): inside, clipped on the right
        ],
        np.float32,
    )
    masks = box_masks(np.floor(boxes), h, w)
    inp = YOLACTAugInput(
        np.zeros((h, w, 3), np.float32),
        boxes=boxes,
        crowd_boxes=np.array([[0, 0, 8, 8], [20, 20, 24, 24]], np.float32),
        masks=masks,
        classes=np.arange(6),
    )
    inp.transform(tfm)
    assert inp.classes.tolist() == [0, 3, 5]
    np.testing.assert_allclose(inp.boxes, [[2, 5, 10, 15], [0, 5, 15, 30], [0, 5, 30, 29]])
    np.testing.assert_allclose(inp.crowd_boxes, [[10, 15, 14, 19]])  # crowd boxes filtered too
    assert inp.image.shape == (30, 30, 3) and inp.masks.shape == (3, 30, 30)
    np.testing.assert_array_equal(inp.masks, masks[[0, 3, 5], 5:35, 10:40])


def _fixed_mode_crop(mode, **kw):
    aug = MinIoURandomCrop(min_ious=(mode,), **kw)
    aug.sample_mode = (mode,)  # test only: always this mode
    return aug


def test_crop_iou_test_includes_crowd_boxes():
    img = np.zeros((100, 100, 3), np.float32)
    full = np.array([[0, 0, 100, 100]], np.float32)
    aug = _fixed_mode_crop(0.7, max_modes=3)
    np.random.seed(0)
    tfm = aug.get_transform(img, full, None)
    assert isinstance(tfm, MinIoUCropTransform)
    assert tfm.w * tfm.h >= 0.7 * 100 * 100 - 1e-6  # IoU with the full-image box >= 0.7
    # A small crowd box can never reach IoU 0.7 with a patch of >= 30 % of the sides: no crop.
    np.random.seed(0)
    tfm = aug.get_transform(img, full, np.array([[0, 0, 10, 10]], np.float32))
    assert isinstance(tfm, NoOpTransform)


def test_crop_centre_test_counts_crowd_boxes_so_zero_gts_can_remain():
    img = np.zeros((100, 100, 3), np.float32)
    gt = np.array([[0, 0, 4, 4]], np.float32)
    crowd = np.array([[30, 30, 70, 70]], np.float32)
    aug = _fixed_mode_crop(0.0)
    np.random.seed(0)
    emptied = 0
    for _ in range(30):
        inp = YOLACTAugInput(
            img, boxes=gt, crowd_boxes=crowd, masks=box_masks(gt, 100, 100), classes=np.array([1])
        )
        tfm = aug(inp)
        x1, y1, x2, y2 = tfm.x0, tfm.y0, tfm.x0 + tfm.w, tfm.y0 + tfm.h
        assert (2 > x1 and 2 > y1 and 2 < x2 and 2 < y2) or (
            50 > x1 and 50 > y1 and 50 < x2 and 50 < y2
        )
        emptied += len(inp.boxes) == 0
        assert len(inp.boxes) == len(inp.masks) == len(inp.classes)
    assert emptied > 0


def test_crop_iou_requirement_holds():
    img = np.zeros((80, 120, 3), np.float32)
    boxes = np.array([[10, 10, 70, 60], [40, 20, 110, 75]], np.float32)
    crowd = np.array([[20, 15, 90, 70]], np.float32)
    np.random.seed(11)
    for mode in (0.1, 0.3, 0.5):
        aug = _fixed_mode_crop(mode, max_modes=5)
        for _ in range(10):
            tfm = aug.get_transform(img, boxes, crowd)
            if isinstance(tfm, NoOpTransform):
                continue
            patch = Boxes(
                torch.tensor(
                    [[tfm.x0, tfm.y0, tfm.x0 + tfm.w, tfm.y0 + tfm.h]], dtype=torch.float32
                )
            )
            ious = pairwise_iou(patch, Boxes(torch.from_numpy(np.concatenate([boxes, crowd]))))
            assert float(ious.min()) >= mode - 1e-6


def test_crop_patch_arithmetic_and_modes():
    h, w = 80, 120
    img = np.zeros((h, w, 3), np.float32)
    boxes = np.array([[10, 10, 50, 40], [60, 30, 110, 70]], np.float32)
    aug = MinIoURandomCrop()
    np.random.seed(4)
    kept = 0
    for _ in range(60):
        tfm = aug.get_transform(img, boxes, None)
        if isinstance(tfm, NoOpTransform):
            kept += 1
            continue
        assert 0 <= tfm.x0 and tfm.x0 + tfm.w <= w and 0 <= tfm.y0 and tfm.y0 + tfm.h <= h
        assert tfm.w >= int(0.3 * w) - 1 and tfm.h >= int(0.3 * h) - 1
        assert 0.5 - 0.05 <= tfm.h / tfm.w <= 2 + 0.05
        assert tfm.box_keep(boxes).any()
    assert 0 < kept < 60  # mode 1 (keep) is drawn sometimes


# ------------------------------------------------------------------------- resize and flip
def test_square_resize_matches_opencv_and_clips_boxes():
    rng = np.random.default_rng(0)
    h, w = 37, 53
    img = rng.uniform(-20, 280, (h, w, 3)).astype(np.float32)
    masks = (rng.random((4, h, w)) > 0.6).astype(np.uint8)
    boxes = np.array([[0, 0, 53, 37], [10.5, 3, 20, 30], [-3, 2, 60, 40]], np.float32)
    tfm = SquareResize(S).get_transform(img)
    assert isinstance(tfm, SquareResizeTransform)
    np.testing.assert_array_equal(
        tfm.apply_image(img), cv2.resize(img, (S, S), interpolation=cv2.INTER_LINEAR)
    )
    out = tfm.apply_masks(masks)
    assert out.shape == (4, S, S) and out.dtype == np.uint8
    for m, o in zip(masks, out):
        np.testing.assert_array_equal(o, cv2.resize(m, (S, S), interpolation=cv2.INTER_NEAREST))
    sx, sy = S / w, S / h
    np.testing.assert_allclose(
        tfm.apply_box(boxes),
        [[0, 0, S, S], [10.5 * sx, 3 * sy, 20 * sx, 30 * sy], [0, 2 * sy, S, S]],
        rtol=1e-5,
    )
    u8 = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    np.testing.assert_array_equal(tfm.apply_image(u8), cv2.resize(u8, (S, S)))


def test_flip_arithmetic():
    h, w = 20, 30
    boxes = np.array([[2, 3, 10, 15], [20, 0, 30, 20]], np.float32)
    masks = box_masks(boxes, h, w)
    img = np.random.default_rng(0).uniform(0, 255, (h, w, 3)).astype(np.float32)
    inp = YOLACTAugInput(img, boxes=boxes, masks=masks, classes=np.array([0, 1]))
    tfm = T.RandomFlip(prob=1.0, horizontal=True, vertical=False)(inp)
    assert isinstance(tfm, HFlipTransform)
    np.testing.assert_allclose(inp.boxes, [[20, 3, 28, 15], [0, 0, 10, 20]])  # x1' = W - x2
    np.testing.assert_array_equal(inp.masks, masks[:, :, ::-1])
    np.testing.assert_array_equal(inp.image, img[:, ::-1])
    for m, b in zip(inp.masks, inp.boxes):
        assert tight_box(m) == b.tolist()


def test_builders_follow_config():
    cfg = make_cfg()
    augs = build_yolact_train_augmentation(cfg)
    assert [type(a).__name__ for a in augs] == [
        "PhotometricDistortion",
        "Expand",
        "MinIoURandomCrop",
        "SquareResize",
        "RandomFlip",
    ]
    assert augs[1].fill == tuple(MEAN)
    assert [type(a).__name__ for a in build_yolact_train_augmentation(no_aug_cfg())] == [
        "SquareResize"
    ]
    test = build_yolact_test_augmentation(cfg)
    assert len(test) == 1 and test[0].size == S
    cfg.INPUT.FORMAT = "L"
    with pytest.raises(ValueError, match="INPUT.FORMAT"):
        build_yolact_train_augmentation(cfg)


def test_full_pipeline_on_synthetic_input_keeps_masks_in_boxes():
    h, w = 60, 80
    boxes = np.array([[5, 5, 30, 40], [40, 10, 75, 55], [20, 30, 60, 58]], np.float32)
    masks = box_masks(boxes, h, w)
    img = np.random.default_rng(0).uniform(0, 255, (h, w, 3)).astype(np.float32)
    augs = T.AugmentationList(build_yolact_train_augmentation(make_cfg(size=64)))
    np.random.seed(7)
    for _ in range(25):
        inp = YOLACTAugInput(img, boxes=boxes, masks=masks, classes=np.arange(3))
        augs(inp)
        assert inp.image.shape == (64, 64, 3) and inp.masks.shape == (len(inp.boxes), 64, 64)
        assert (inp.boxes >= 0).all() and (inp.boxes <= 64).all()
        for m, b in zip(inp.masks, inp.boxes):
            if m.any():  # box masks: the tight box of the mask is the box, up to a pixel
                np.testing.assert_allclose(tight_box(m), b, atol=1.01)


# --------------------------------------------------------------------------------- decoding
def test_decode_segmentations_polygons_and_rle():
    h, w = 20, 30
    poly = [[2, 2, 12, 2, 12, 10, 2, 10], [20, 5, 28, 5, 28, 15]]
    from_poly = decode_segmentations([poly], h, w)
    assert from_poly.shape == (1, h, w) and from_poly.dtype == np.uint8 and from_poly.sum() > 0
    mask = np.asfortranarray(from_poly[0])
    compressed = mask_util.encode(mask)
    compressed_str = {"size": compressed["size"], "counts": compressed["counts"].decode()}
    # Uncompressed RLE (as COCO's crowd annotations): column-major run lengths.
    flat = mask.flatten(order="F")
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    counts = np.diff(np.concatenate([[0], changes])).tolist()
    uncompressed = {"size": [h, w], "counts": counts}
    out = decode_segmentations([compressed, compressed_str, uncompressed, poly], h, w)
    for m in out:
        np.testing.assert_array_equal(m, from_poly[0])
    assert decode_segmentations([], h, w).shape == (0, h, w)


# --------------------------------------------------------------------- mapper (synthetic data)
@pytest.fixture
def synthetic(tmp_path):
    h, w = 48, 64
    img = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    path = tmp_path / "img.png"
    cv2.imwrite(str(path), img)

    def poly(x1, y1, x2, y2):
        return [[x1, y1, x2, y1, x2, y2, x1, y2]]

    annos = [
        {
            "id": 1,
            "bbox": [4, 4, 20, 16],
            "bbox_mode": BoxMode.XYWH_ABS,
            "category_id": 3,
            "iscrowd": 0,
            "segmentation": poly(4, 4, 24, 20),
        },
        {
            "id": 2,
            "bbox": [30, 10, 4, 20],
            "bbox_mode": BoxMode.XYWH_ABS,
            "category_id": 5,
            "iscrowd": 0,
            "segmentation": poly(30, 10, 34, 30),
        },  # w == 4: filtered out
        {
            "id": 3,
            "bbox": [30, 20, 30, 25],
            "bbox_mode": BoxMode.XYWH_ABS,
            "category_id": 7,
            "iscrowd": 0,
            "segmentation": poly(30, 20, 60, 45),
        },
        {
            "id": 4,
            "bbox": [0, 30, 20, 18],
            "bbox_mode": BoxMode.XYWH_ABS,
            "category_id": 1,
            "iscrowd": 1,
            "segmentation": mask_util.encode(
                np.asfortranarray(np.pad(np.ones((18, 20), np.uint8), ((30, 0), (0, 44))))
            ),
        },
    ]
    return {
        "file_name": str(path),
        "height": h,
        "width": w,
        "image_id": 7,
        "annotations": annos,
    }, img


def test_mapper_without_augmentation_is_exact(synthetic):
    d, img = synthetic
    out = YOLACTDatasetMapper(no_aug_cfg(), is_train=True)(d)
    assert set(out) >= {"image", "height", "width", "file_name", "image_id", "instances"}
    assert (out["height"], out["width"], out["image_id"]) == (48, 64, 7)
    assert out["image"].dtype == torch.float32 and out["image"].shape == (3, S, S)
    rgb = img[..., ::-1].astype(np.float32)
    np.testing.assert_allclose(
        out["image"].permute(1, 2, 0).numpy(),
        cv2.resize(rgb, (S, S), interpolation=cv2.INTER_LINEAR),
        atol=1e-3,
    )
    inst = out["instances"]
    assert inst.image_size == (S, S) and len(inst) == 2  # w == 4 GT and crowd are not instances
    assert inst.gt_classes.tolist() == [3, 7] and inst.gt_classes.dtype == torch.int64
    sx, sy = S / 64, S / 48
    np.testing.assert_allclose(
        inst.gt_boxes.tensor.numpy(),
        [[4 * sx, 4 * sy, 24 * sx, 20 * sy], [30 * sx, 20 * sy, 60 * sx, 45 * sy]],
        rtol=1e-5,
    )
    masks = inst.gt_masks.tensor
    assert masks.dtype == torch.bool and masks.shape == (2, S, S)
    expect = decode_segmentations([a["segmentation"] for a in d["annotations"][::2][:2]], 48, 64)
    for m, e in zip(masks.numpy(), expect):
        np.testing.assert_array_equal(m, cv2.resize(e, (S, S), interpolation=cv2.INTER_NEAREST) > 0)
    dense = inst.gt_integral_images.dense()
    ref = torch.zeros(2, S + 1, S + 1, dtype=torch.int64)
    ref[:, 1:, 1:] = masks.long().cumsum(1).cumsum(2)
    assert torch.equal(dense.long(), ref)
    assert d["annotations"][0]["bbox"] == [4, 4, 20, 16]  # input untouched
    # Without integral images.
    out = YOLACTDatasetMapper(no_aug_cfg(INTEGRAL_IMAGES=False), is_train=True)(d)
    assert not out["instances"].has("gt_integral_images")


def test_mapper_test_mode(synthetic):
    d, img = synthetic
    out = YOLACTDatasetMapper(make_cfg(), is_train=False)(d)
    assert "annotations" not in out and "instances" not in out
    assert out["image"].dtype == torch.uint8 and out["image"].shape == (3, S, S)
    expect = cv2.resize(
        np.ascontiguousarray(img[..., ::-1]), (S, S), interpolation=cv2.INTER_LINEAR
    )
    np.testing.assert_array_equal(out["image"].permute(1, 2, 0).numpy(), expect)
    assert (out["height"], out["width"]) == (48, 64) and "annotations" in d


def test_mapper_drops_empty_masks_and_resamples(synthetic):
    d, _ = synthetic
    d = dict(d)
    # GT 1 has an empty mask (polygon outside its box area, tiny): it is dropped.
    d["annotations"] = [
        dict(d["annotations"][0], segmentation=[[0, 0, 0.1, 0, 0.1, 0.1]]),
        d["annotations"][2],
    ]
    out = YOLACTDatasetMapper(no_aug_cfg(), is_train=True)(d)
    assert out["instances"].gt_classes.tolist() == [7]
    assert out["instances"].gt_masks.tensor.flatten(1).any(1).all()
    # Only small or crowd GTs: None; the training dataset draws another image instead.
    small = dict(d, annotations=[synthetic[0]["annotations"][1], synthetic[0]["annotations"][3]])
    mapper = YOLACTDatasetMapper(no_aug_cfg(), is_train=True)
    assert mapper(small) is None and mapper(dict(small, annotations=[])) is None
    ds = YOLACTMapDataset([small, synthetic[0]], mapper)
    assert ds[0]["image_id"] == 7 and len(ds[0]["instances"]) == 2
    # Detectron2's own MapDataset still works with the mapper.
    assert MapDataset([small, synthetic[0]], mapper)[0]["image_id"] == 7


def test_mapper_errors_name_file_and_field(synthetic, tmp_path):
    d, _ = synthetic
    mapper = YOLACTDatasetMapper(no_aug_cfg(), is_train=True)
    missing = str(tmp_path / "nope.jpg")
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        mapper(dict(d, file_name=missing))
    bad_file = tmp_path / "broken.jpg"
    bad_file.write_bytes(b"not an image")
    with pytest.raises(OSError, match="broken.jpg"):
        YOLACTDatasetMapper(make_cfg(), is_train=False)(dict(d, file_name=str(bad_file)))
    good = d["annotations"][0]
    cases = [
        (dict(good, bbox=[1, 2, 3]), "bbox"),
        (dict(good, bbox=[1, 2, -5, 3]), "bbox"),
        (dict(good, bbox=[1, 2, "x", 3]), "bbox"),
        (dict(good, segmentation=17), "segmentation"),
        (dict(good, segmentation=[[1, 2, 3]]), "segmentation"),
        (dict(good, segmentation={"size": [5, 5], "counts": [25]}), "segmentation"),
        ({k: v for k, v in good.items() if k != "segmentation"}, "segmentation"),
        (dict(good, category_id=80), "category_id"),
        (dict(good, category_id=-1), "category_id"),
        (dict(good, iscrowd=2), "iscrowd"),
    ]
    for ann, field in cases:
        with pytest.raises(ValueError) as err:
            mapper(dict(d, annotations=[ann]))
        msg = str(err.value)
        assert "img.png" in msg and "id 1" in msg and f"'{field}'" in msg, msg


def test_mapper_skips_like_mmdet(synthetic):
    d, _ = synthetic
    base = d["annotations"][2]
    annos = [
        base,
        dict(base, id=10, bbox=[100, 100, 20, 20]),  # outside the image
        dict(base, id=11, area=0),  # area <= 0
        dict(base, id=12, ignore=1),
    ]  # ignore flag
    out = YOLACTDatasetMapper(no_aug_cfg(), is_train=True)(dict(d, annotations=annos))
    assert len(out["instances"]) == 1


# ------------------------------------------------------------------------ real data (coco_mini)
def _check_train_output(out, num_classes=80, size=S):
    assert out["image"].dtype == torch.float32 and out["image"].shape == (3, size, size)
    inst = out["instances"]
    g = len(inst)
    assert g > 0 and inst.image_size == (size, size)
    boxes = inst.gt_boxes.tensor
    assert boxes.dtype == torch.float32 and boxes.shape == (g, 4)
    assert (boxes >= 0).all() and (boxes <= size).all() and (boxes[:, 2:] >= boxes[:, :2]).all()
    assert inst.gt_classes.dtype == torch.int64
    assert ((inst.gt_classes >= 0) & (inst.gt_classes < num_classes)).all()
    masks = inst.gt_masks.tensor
    assert masks.dtype == torch.bool and masks.shape == (g, size, size)
    assert masks.flatten(1).any(1).all()  # no empty mask left
    ref = torch.zeros(g, size + 1, size + 1, dtype=torch.int64)
    ref[:, 1:, 1:] = masks.long().cumsum(1).cumsum(2)
    assert torch.equal(inst.gt_integral_images.dense().long(), ref)


def test_coco_mini_registered(coco_mini):
    assert "coco_mini_train" in DatasetCatalog.list() and "coco_mini_val" in DatasetCatalog.list()
    meta = MetadataCatalog.get("coco_mini_train")
    assert meta.evaluator_type == "coco" and meta.json_file.endswith("instances_train2017.json")
    assert "coco_2017_train" in DatasetCatalog.list()  # detectron2's builtin names
    assert register_coco_mini(coco_mini) == []  # already registered: left alone


def test_mapper_on_coco_mini_train(coco_mini):
    dicts = {d["image_id"]: d for d in DatasetCatalog.get("coco_mini_train")}
    with open(coco_mini / "annotations" / "instances_train2017.json") as f:
        raw = json.load(f)
    crowd_images = sorted({a["image_id"] for a in raw["annotations"] if a["iscrowd"]})
    with_anns = {a["image_id"] for a in raw["annotations"]}
    empty_images = [i["id"] for i in raw["images"] if i["id"] not in with_anns]
    assert empty_images and crowd_images
    ids = [86] + crowd_images[:3] + [9, 25, 30, 34]  # 86 is the grayscale image
    mapper = YOLACTDatasetMapper(make_cfg(size=128), is_train=True)
    np.random.seed(0)
    done = 0
    for i in ids * 2:
        out = mapper(dicts[i])
        if out is None:  # every GT lost to the augmentation: resampled by MapDataset
            continue
        _check_train_output(out, size=128)
        n_noncrowd = sum(1 for a in dicts[i]["annotations"] if not a["iscrowd"])
        assert len(out["instances"]) <= n_noncrowd
        done += 1
    assert done >= len(ids)
    for i in empty_images:  # no annotation: resampled
        assert mapper(dicts[i]) is None
    # Deterministic mapping of a crowd image: exactly the large non-crowd GTs, boxes scaled.
    d = dicts[crowd_images[0]]
    out = YOLACTDatasetMapper(no_aug_cfg(size=128), is_train=True)(d)
    keep = [
        a for a in d["annotations"] if not a["iscrowd"] and a["bbox"][2] > 4 and a["bbox"][3] > 4
    ]
    boxes = np.array([BoxMode.convert(a["bbox"], BoxMode.XYWH_ABS, BoxMode.XYXY_ABS) for a in keep])
    boxes[:, 0::2] *= 128 / d["width"]
    boxes[:, 1::2] *= 128 / d["height"]
    nonempty = out["instances"].gt_masks.tensor.flatten(1).any(1)
    assert nonempty.all() and len(out["instances"]) <= len(keep)
    got = out["instances"].gt_boxes.tensor.numpy()
    assert all(np.abs(boxes - g).max(axis=1).min() < 1e-3 for g in got)
    # Grayscale image: three channels out, in test mode as well.
    out = YOLACTDatasetMapper(make_cfg(size=128), is_train=False)(dicts[86])
    assert out["image"].shape == (3, 128, 128) and out["image"].dtype == torch.uint8
    assert "annotations" not in out


# ------------------------------------------------------------------------------ misc contracts
def test_integral_images_cpu_path_is_exact():
    from mayolact.structures.integral_image import integral_images

    rng = np.random.default_rng(5)
    for _ in range(30):
        g, h, w = int(rng.integers(0, 5)), int(rng.integers(1, 30)), int(rng.integers(1, 30))
        masks = (rng.random((g, h, w)) > rng.random()).astype(np.uint8) * np.uint8(
            rng.choice([1, 255])
        )
        if g:
            masks[0] = 0  # an empty mask
        ref = torch.zeros(g, h + 1, w + 1, dtype=torch.int64)
        ref[:, 1:, 1:] = torch.from_numpy(masks != 0).long().cumsum(1).cumsum(2)
        for inp in (
            masks,
            torch.from_numpy(masks),
            torch.from_numpy(masks).bool(),
            torch.from_numpy(np.ascontiguousarray(masks.transpose(0, 2, 1))).transpose(1, 2),
        ):
            ii = integral_images(inp)
            assert ii.data.dtype == torch.int32 and ii.image_size == (h, w)
            assert torch.equal(ii.dense().long(), ref)
            assert torch.equal(ii.areas(), ref[:, -1, -1])


def test_expand_transform_dtypes_and_checks():
    tfm = ExpandTransform(2, 3, 4, 6, 1, 2, (10.0, 20.0, 30.0))
    u8 = np.full((2, 3, 3), 255, np.uint8)
    out = tfm.apply_image(u8)
    assert out.dtype == np.uint8 and out.shape == (4, 6, 3)
    assert out[0, 0].tolist() == [10, 20, 30] and (out[2:4, 1:4] == 255).all()
    seg = tfm.apply_segmentation(np.ones((2, 3), np.uint8))
    assert seg.sum() == 6 and seg[2:4, 1:4].all()
    five = np.ones((2, 3, 5), np.float32)  # > 4 channels: numpy fallback, one fill value
    out = ExpandTransform(2, 3, 4, 6, 1, 2, (7.0,)).apply_image(five)
    assert out.shape == (4, 6, 5) and out[0, 0].tolist() == [7.0] * 5
    np.testing.assert_allclose(tfm.apply_box(np.array([[0, 0, 3, 2]], np.float32)), [[1, 2, 4, 4]])
    with pytest.raises(ValueError, match="does not fit"):
        ExpandTransform(2, 3, 4, 6, 4, 2, (0.0,))
    with pytest.raises(ValueError, match="fill"):
        tfm.apply_image(np.ones((2, 3, 2), np.float32))


def test_aug_input_checks():
    img = np.zeros((10, 10, 3), np.float32)
    with pytest.raises(ValueError, match="boxes"):
        YOLACTAugInput(img, boxes=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="masks"):
        YOLACTAugInput(img, boxes=np.zeros((1, 4)), masks=np.zeros((1, 5, 5), np.uint8))
    with pytest.raises(ValueError, match="2 masks for 1 boxes"):
        YOLACTAugInput(img, boxes=np.zeros((1, 4)), masks=np.zeros((2, 10, 10), np.uint8))
    with pytest.raises(ValueError, match="MAX_RESAMPLE"):
        YOLACTMapDataset([], YOLACTDatasetMapper(no_aug_cfg(), is_train=True), max_resample=0)


def test_register_coco_mini_absent_folder(tmp_path, monkeypatch):
    from mayolact.data import datasets

    assert register_coco_mini(tmp_path / "missing") == []
    monkeypatch.setenv("MAYOLACT_COCO_MINI", str(tmp_path / "missing"))
    assert datasets.coco_mini_root() is None
    monkeypatch.setenv("MAYOLACT_COCO_MINI", str(tmp_path))
    assert datasets.coco_mini_root() == tmp_path
