"""The figures: mayolact.analysis against numpy oracles, Figure 2 against the training losses, and
``tools/plot_figures.py`` end to end on tiny sets."""
import math
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.structures import BoxMode
from detectron2.utils.events import EventStorage
from fvcore.nn import smooth_l1_loss
from torch.nn import functional as F

from mayolact import analysis as an
from mayolact.analysis import figures
from mayolact.data.shapes import generate_shapes_dicts
from mayolact.modeling.anchor_generator import anchors_for_input
from mayolact.modeling.losses import yolact_mask_loss

from common import (
    BASE_CONFIG,
    REPO,
    build_tiny_model,
    get_config,
    load_tool,
    register_tiny_shapes,
    tiny_config,
)

SMALL_ANCHORS = ["MODEL.ANCHOR_GENERATOR.SIZES", "[[16], [32], [64], [128], [256]]"]


# --------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def tiny_shapes(tmp_path_factory):
    """A registered 8-image shapes set of 128x128 in a temporary cache."""
    return register_tiny_shapes("_test_figures_shapes", 8, 128, 11,
                                tmp_path_factory.mktemp("shapes"))


@pytest.fixture(scope="module")
def tiny_dicts(tmp_path_factory):
    """Three 80x80 shapes images written to a temporary folder, as dataset dicts."""
    return generate_shapes_dicts(3, 80, seed=5, image_dir=str(tmp_path_factory.mktemp("dicts")))


@pytest.fixture(scope="module")
def tiny_model():
    """A tiny YOLACT (8 classes, 128 x 128) in eval mode."""
    return build_tiny_model(tiny_config("atss_maiou", size=128, num_classes=8)).eval()


def _config(opts=(), size=None):
    return get_config(BASE_CONFIG, list(opts) + (["INPUT.YOLACT.SIZE", size] if size else []))


def _coco_mini_name(root, split):
    """``coco_mini_<split>`` (the package registers it when ../shared is present)."""
    name = f"coco_mini_{split}"
    if name in DatasetCatalog.list():
        return name
    name = f"_test_figures_coco_mini_{split}"
    if name not in DatasetCatalog.list():
        register_coco_instances(name, {}, str(root / "annotations" / f"instances_{split}2017.json"),
                                str(root / f"{split}2017"))
    return name


def _check_png(path):
    data = Path(path).read_bytes()
    assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------ numpy oracles
def _np_nearest(src, dst):
    """OpenCV's INTER_NEAREST source index: floor(i * src / dst)."""
    return np.minimum((np.arange(dst) * (src / dst)).astype(int), src - 1)


def _np_gts(record, size):
    """(boxes (G, 4), masks (G, S, S)) of the non-crowd GTs, squashed (numpy only)."""
    boxes, masks = [], []
    h, w = record["height"], record["width"]
    for a in record["annotations"]:
        if a.get("iscrowd", 0):
            continue
        b = np.array(BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS), float)
        boxes.append(np.clip(b * [size / w, size / h, size / w, size / h], 0, size))
        m = mask_util.decode(a["segmentation"]).astype(bool)
        masks.append(m[_np_nearest(h, size)][:, _np_nearest(w, size)])
    return np.array(boxes), np.array(masks)


def _np_iou(b, a):
    iw = max(0.0, min(b[2], a[2]) - max(b[0], a[0]))
    ih = max(0.0, min(b[3], a[3]) - max(b[1], a[1]))
    inter = iw * ih
    union = (b[2] - b[0]) * (b[3] - b[1]) + (a[2] - a[0]) * (a[3] - a[1]) - inter
    return inter / union, union


def _np_count(mask, box):
    s = mask.shape[0]
    x1, y1, x2, y2 = [int(np.clip(v, 0, s)) for v in np.round(box)]
    return mask[y1:max(y1, y2), x1:max(x1, x2)].sum()


def _np_maiou(b, m, a):
    iou, union = _np_iou(b, a)
    if iou <= 0:
        return 0.0
    mob = m.sum() / ((b[2] - b[0]) * (b[3] - b[1]) + 1e-6)
    return _np_count(m, a) / mob / union


# ------------------------------------------------------------------------------ Figure 3a
def _rle(mask):
    r = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    r["counts"] = r["counts"].decode()
    return r


def test_gt_mob_ratios_hand_computed(tmp_path):
    m = np.zeros((20, 20), bool)
    m[5:15, 5:10] = True  # 50 px in the box [5, 5, 15, 15]: MOB 0.5
    poly = [[0.0, 0.0, 10.0, 0.0, 10.0, 4.0, 0.0, 4.0]]  # 10 x 4 rectangle
    annos = [
        {"bbox": [5, 5, 15, 15], "bbox_mode": BoxMode.XYXY_ABS, "segmentation": _rle(m),
         "category_id": 1, "iscrowd": 0},
        {"bbox": [0, 0, 10, 8], "bbox_mode": BoxMode.XYWH_ABS, "segmentation": poly,
         "category_id": 2, "iscrowd": 0},
        {"bbox": [0, 0, 20, 20], "bbox_mode": BoxMode.XYXY_ABS, "segmentation": _rle(m),
         "category_id": 0, "iscrowd": 1},  # crowd: ignored
    ]
    image = tmp_path / "x.png"
    cv2.imwrite(str(image), np.zeros((20, 20, 3), np.uint8))  # the mapper reads the image
    rec = {"file_name": str(image), "image_id": 0, "height": 20, "width": 20,
           "annotations": annos}
    poly_area = mask_util.area(mask_util.merge(mask_util.frPyObjects(poly, 20, 20)))
    mobs, cls = an.gt_mob_ratios([rec], return_classes=True)
    np.testing.assert_allclose(mobs, [0.5, poly_area / 80.0], rtol=1e-6)
    assert cls.tolist() == [1, 2]
    # Squash 20x20 -> 40x40 (through the mapper): nearest doubles every pixel, the box doubles.
    mobs, cls = an.gt_mob_ratios([rec], size=40, return_classes=True)
    np.testing.assert_allclose(mobs, [0.5, poly_area / 80.0], rtol=1e-6)
    assert cls.tolist() == [1, 2]
    # min_size drops the 10 x 8 box (h = 8 is not > 8).
    np.testing.assert_allclose(an.gt_mob_ratios([rec], min_size=8), [0.5], rtol=1e-6)
    np.testing.assert_allclose(an.gt_mob_ratios([rec], size=40, min_size=8), [0.5], rtol=1e-6)
    assert an.gt_mob_ratios([dict(rec, annotations=[])]).shape == (0,)
    assert an.gt_mob_ratios([dict(rec, annotations=[])], size=40).shape == (0,)


def test_gt_mob_ratios_squash_matches_numpy(tiny_dicts):
    got = an.gt_mob_ratios(tiny_dicts, size=50)
    expected = []
    for rec in tiny_dicts:
        boxes, masks = _np_gts(rec, 50)
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        expected.extend(masks.reshape(len(masks), -1).sum(1) / (area + 1e-6))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_bad_inputs():
    with pytest.raises(ValueError, match="not registered"):
        an.get_dataset_dicts("no_such_dataset_xyz")
    with pytest.raises(ValueError, match="num_images"):
        an.get_dataset_dicts([{"file_name": "a"}], num_images=-1)
    with pytest.raises(ValueError, match="height"):
        an.gt_mob_ratios([{"file_name": "a", "annotations": []}])
    with pytest.raises(ValueError, match="'segmentation'"):
        an.gt_mob_ratios([{"file_name": "a", "height": 8, "width": 8, "annotations": [
            {"bbox": [0, 0, 2, 2], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0}]}])
    with pytest.raises(ValueError, match="bins"):
        an.bin_statistics([1.0], [0.5], [0.5, 0.2])
    with pytest.raises(ValueError, match="batch_size"):
        next(an.mapped_batches([], 64, batch_size=0))
    cfg = _config()
    cfg.MODEL.YOLACT.IN_FEATURES = ["res_last"]
    with pytest.raises(ValueError, match="level"):
        anchors_for_input(cfg)
    with pytest.raises(ValueError, match="IoU bands"):
        an.iou_band_matcher(pos_iou=(0.4, 0.8), neg_iou=(0.3, 0.5))


# ------------------------------------------------------------------------ Figures 3c and 1
def test_iou_maiou_pairs_bruteforce(tiny_dicts):
    size = 96
    cfg = _config(SMALL_ANCHORS, size)
    pairs = an.iou_maiou_pairs(tiny_dicts, cfg)
    anchors = torch.cat([b.tensor for b in anchors_for_input(cfg)]).numpy().astype(np.float64)
    got = {(int(i), int(g), int(a)): (u, m) for i, g, a, u, m in zip(
        pairs["image"], pairs["gt"], pairs["anchor"], pairs["iou"], pairs["maiou"])}
    expected = {}
    for i, rec in enumerate(tiny_dicts):
        boxes, masks = _np_gts(rec, size)
        for g, (b, m) in enumerate(zip(boxes, masks)):
            for a, anc in enumerate(anchors):
                iou, _ = _np_iou(b, anc)
                if iou > 0:
                    expected[(i, g, a)] = (iou, _np_maiou(b, m, anc))
    assert got.keys() == expected.keys() and len(got) > 100
    keys = sorted(got)
    np.testing.assert_allclose([got[k][0] for k in keys], [expected[k][0] for k in keys],
                               atol=1e-5)
    np.testing.assert_allclose([got[k][1] for k in keys], [expected[k][1] for k in keys],
                               atol=1e-5)
    assert pairs["maiou"].max() <= 1 + 1e-5 and pairs["gt_mob"].min() > 0


def test_disagreement_examples_are_extremes(tiny_dicts):
    size = 96
    cfg = _config(SMALL_ANCHORS, size)
    pairs = an.iou_maiou_pairs(tiny_dicts, cfg)
    anchors = torch.cat([b.tensor for b in anchors_for_input(cfg)]).numpy()
    ex = an.disagreement_examples(tiny_dicts, cfg, top_k=2)
    assert {e["kind"] for e in ex} == {"maiou_higher", "iou_higher"}
    for e in ex:
        sel = pairs["image"] == e["image"]
        iou, maiou = pairs["iou"][sel], pairs["maiou"][sel]
        if e["kind"] == "maiou_higher":
            valid, gap = iou < 0.5, maiou - iou
        else:
            valid, gap = iou >= 0.5, iou - maiou
        best = np.sort(gap[valid])[::-1][:2]
        assert np.isclose(e["gap"], best, atol=1e-5).any()
        sign = 1 if e["kind"] == "maiou_higher" else -1
        assert np.isclose(e["gap"], (e["maiou"] - e["iou"]) * sign, atol=1e-6)
        np.testing.assert_allclose(e["anchor_box"], anchors[e["anchor"]], atol=1e-5)
        boxes, masks = _np_gts(e["record"], size)
        np.testing.assert_allclose(e["gt_box"], boxes[e["gt"]], atol=1e-4)
        a = anchors[e["anchor"]]
        np.testing.assert_allclose(
            e["anchor_mob"], _np_count(masks[e["gt"]], a) / ((a[2] - a[0]) * (a[3] - a[1])),
            rtol=1e-5)
        assert e["record"] is tiny_dicts[e["image"]] and e["size"] == size
    with pytest.raises(ValueError, match="top_k"):
        an.disagreement_examples(tiny_dicts, cfg, top_k=0)


def test_bin_statistics_hand_computed():
    s = an.bin_statistics([1.0, 3.0, 10.0, 7.0, 5.0], [0.05, 0.15, 0.5, 1.0, 2.0],
                          [0.0, 0.1, 0.2, 1.0])
    assert s["count"].tolist() == [1, 1, 2]  # 1.0 falls in the closed last bin; 2.0 is outside
    np.testing.assert_allclose(s["mean"], [1.0, 3.0, 8.5])
    np.testing.assert_allclose(s["std"], [0.0, 0.0, 1.5])
    e = an.bin_statistics([], [], [0.0, 1.0])
    assert e["count"].tolist() == [0] and math.isnan(e["mean"][0])


# ------------------------------------------------------------------------------- Figure 2
def test_figure2_losses_sum_to_the_training_losses(tiny_shapes):
    """With the model's own matcher, the figure's per-anchor losses reduce to the training losses
    of the same batch: Figure 2 measures what training computes."""
    model = build_tiny_model(tiny_config("atss_maiou", size=128, num_classes=8))
    model.max_masks_train = 1000  # no random subset of the positives' masks
    batch = next(an.mapped_batches(tiny_shapes, 128, batch_size=3, num_classes=8))
    model.train()
    with EventStorage(0):
        losses = model(batch)
    r = an.per_anchor_losses(model, batch, anchor_matcher=model.anchor_matcher)
    num_pos = len(r["pos_cls"])
    normalizer = sum(max(int((r["pos_image"] == i).sum()), 1) for i in range(len(batch)))
    assert num_pos > 0 and r["neg_ohem"].sum() < len(r["neg_ohem"])  # OHEM drops some negatives
    cls = (r["pos_cls"].sum() + r["neg_cls"][r["neg_ohem"]].sum()) / normalizer
    assert np.isclose(model.cls_loss_weight * cls, losses["loss_cls"].item(), rtol=1e-5)
    box = r["pos_box"].sum() / normalizer
    assert np.isclose(model.box_loss_weight * box, losses["loss_box_reg"].item(), rtol=1e-5)
    mask = r["pos_mask"].sum() / num_pos
    assert np.isclose(model.mask_loss_weight * mask, losses["loss_mask"].item(), rtol=1e-5)


def test_per_anchor_losses_oracles(tiny_shapes, tiny_model):
    model, size = tiny_model, 128
    batch = next(an.mapped_batches(tiny_shapes, size, batch_size=3, num_classes=8))
    r = an.per_anchor_losses(model, batch, pos_iou=(0.4, 0.8), neg_iou=(0.2, 0.4))
    assert len(r["pos_cls"]) > 0 and len(r["neg_cls"]) > 0
    with torch.no_grad():
        feats = model.backbone(model.preprocess_image(batch).tensor)
        levels = [feats[f] for f in model.head_in_features]
        logits, deltas, coeffs = model.head(levels)
        protos = model.protonet(feats["p3"])
    sizes = [f.shape[-1] for f in levels]
    anchors = torch.cat([a.tensor for a in model.anchor_generator(levels)]).numpy()
    starts = np.cumsum([0] + [s * s for s in sizes])

    def at(level_maps, n, a, width):  # anchor index -> prediction vector (A = 1)
        lv = int(np.searchsorted(starts, a, side="right") - 1)
        y, x = divmod(a - starts[lv], sizes[lv])
        return level_maps[lv][n, :width, y, x]

    # Which anchors are positives / negatives: brute force over the numpy IoUs.
    exp_pos, exp_neg = set(), set()
    for n, x in enumerate(batch):
        boxes = x["instances"].gt_boxes.tensor.numpy()
        for a, anc in enumerate(anchors):
            best = max(_np_iou(b, anc)[0] for b in boxes)
            if 0.4 <= best <= 0.8:
                exp_pos.add((n, a))
            elif 0.2 <= best < 0.4:
                exp_neg.add((n, a))
    assert set(zip(r["pos_image"].tolist(), r["pos_anchor"].tolist())) == exp_pos
    assert set(zip(r["neg_image"].tolist(), r["neg_anchor"].tolist())) == exp_neg

    for j in range(len(r["pos_cls"])):
        n, a, g = int(r["pos_image"][j]), int(r["pos_anchor"][j]), int(r["pos_gt"][j])
        inst = batch[n]["instances"]
        cls = int(inst.gt_classes[g])
        assert np.isclose(r["pos_cls"][j], -F.log_softmax(at(logits, n, a, 9), 0)[cls].item(),
                          rtol=1e-4)
        target = model.box2box_transform.get_deltas(torch.tensor(anchors[a:a + 1]),
                                                    inst.gt_boxes.tensor[g:g + 1])
        box = smooth_l1_loss(at(deltas, n, a, 4)[None], target, beta=1.0, reduction="sum")
        assert np.isclose(r["pos_box"][j], box.item(), rtol=1e-4)
        mask = inst.gt_masks.tensor[g].numpy()
        anc = anchors[a]
        mob = _np_count(mask, anc) / ((anc[2] - anc[0]) * (anc[3] - anc[1]))
        assert np.isclose(r["pos_mob"][j], mob, rtol=1e-5)
        assert np.isclose(r["pos_iou"][j], _np_iou(inst.gt_boxes.tensor[g].numpy(), anc)[0],
                          atol=1e-5)
        # The mask loss of one positive equals yolact_mask_loss on that positive alone.
        ref = yolact_mask_loss(protos[n:n + 1], [at(coeffs, n, a, 8)[None]], [torch.tensor([g])],
                               [inst.gt_masks.tensor], [inst.gt_boxes.tensor], (size, size),
                               max_masks=0, loss_weight=1.0)
        assert np.isclose(r["pos_mask"][j], ref.item(), rtol=1e-4)
    for j in range(0, len(r["neg_cls"]), 7):
        n, a = int(r["neg_image"][j]), int(r["neg_anchor"][j])
        assert np.isclose(r["neg_cls"][j], -F.log_softmax(at(logits, n, a, 9), 0)[8].item(),
                          rtol=1e-4)
    with pytest.raises(ValueError, match="instances"):
        an.per_anchor_losses(model, [{"image": batch[0]["image"]}])


def test_losses_by_mob_aggregates(tiny_shapes, tiny_model):
    loader = list(an.mapped_batches(tiny_shapes, 128, batch_size=2, num_images=4, num_classes=8))
    res = an.losses_by_mob(tiny_model, loader, bins=[0.0, 0.25, 0.5, 0.75, 1.0],
                           pos_iou=(0.4, 0.8), neg_iou=(0.2, 0.4))
    raw = res["raw"]
    assert sorted(set(raw["pos_image"].tolist()) | set(raw["neg_image"].tolist())) == [0, 1, 2, 3]
    assert res["pos_cls"]["count"].sum() == len(raw["pos_cls"])
    assert res["neg_cls"]["count"].sum() == len(raw["neg_cls"])
    for name, key in (("pos_box", "pos_mob"), ("neg_cls", "neg_mob")):
        sel = (raw[key] >= 0.25) & (raw[key] < 0.5)
        assert sel.any()
        assert np.isclose(res[name]["mean"][1], raw[name][sel].mean(), rtol=1e-5)
    with pytest.raises(ValueError, match="no batch"):
        an.losses_by_mob(tiny_model, [])


# ------------------------------------------------------------------------------- the tool
def test_tool_mob_histogram(tiny_shapes, tmp_path, capsys):
    out = tmp_path / "mob.png"
    ratios = load_tool("plot_figures").main(["mob-histogram", "--dataset", tiny_shapes,
                                             "--output", str(out), "--bins", "5"])
    _check_png(out)
    text = capsys.readouterr().out
    assert "MOB<0.5" in text and tiny_shapes in text
    r = ratios[tiny_shapes]
    assert f"{100 * (r < 0.5).mean():.1f}%" in text


def test_tool_iou_vs_maiou(tiny_shapes, tmp_path, capsys):
    out = tmp_path / "iou.png"
    pairs = load_tool("plot_figures").main([
        "iou-vs-maiou", "--dataset", tiny_shapes, "--size", "128", "--num-images", "4",
        "--output", str(out), *SMALL_ANCHORS])
    _check_png(out)
    text = capsys.readouterr().out
    assert f"pairs with IoU > 0: {len(pairs['iou'])}" in text
    assert len(pairs["iou"]) > 0 and set(pairs["image"].tolist()) <= {0, 1, 2, 3}


def test_tool_anchor_disagreement(tiny_shapes, tmp_path, capsys):
    out = tmp_path / "fig1.png"
    shown = load_tool("plot_figures").main([
        "anchor-disagreement", "--dataset", tiny_shapes, "--size", "128", "--num-images", "4",
        "--num-show", "2", "--output", str(out), *SMALL_ANCHORS])
    _check_png(out)
    text = capsys.readouterr().out
    assert "maiou_higher" in text and 1 <= len(shown["maiou_higher"]) <= 2
    gaps = [e["gap"] for e in shown["maiou_higher"]]
    assert gaps == sorted(gaps, reverse=True)


def test_tool_losses_by_mob_tiny_model(tiny_shapes, tiny_model, tmp_path, capsys):
    out = tmp_path / "fig2.png"
    args = load_tool("plot_figures").build_parser(str(BASE_CONFIG)).parse_args([
        "losses-by-mob", "--config-file", "x.yaml", "--dataset", tiny_shapes, "--num-images", "4",
        "--batch-size", "2", "--bins", "5", "--pos-iou", "0.4", "0.8", "--neg-iou", "0.2", "0.4",
        "--output", str(out)])
    res = figures.losses_by_mob_figure(tiny_model, tiny_config(size=128, num_classes=8), args)
    _check_png(out)
    text = capsys.readouterr().out
    assert "MOB bin" in text and f"{len(res['raw']['pos_cls'])} positives" in text


def test_tool_losses_by_mob_real_model(tiny_shapes, tmp_path, capsys):
    config = REPO / "configs" / "shapes" / "mayolact_shapes_demo.yaml"
    out = tmp_path / "fig2_real.png"
    res = load_tool("plot_figures").main([
        "losses-by-mob", "--config-file", str(config), "--dataset", tiny_shapes,
        "--num-images", "2", "--batch-size", "2", "--output", str(out), "INPUT.YOLACT.SIZE",
        "128", "MODEL.WEIGHTS", ""])
    _check_png(out)
    assert "MOB bin" in capsys.readouterr().out
    assert len(res["raw"]["neg_cls"]) > 0


@pytest.mark.slow
def test_coco_mini_mob_share_and_tools(coco_mini, tmp_path):
    train = _coco_mini_name(coco_mini, "train")
    ratios = an.gt_mob_ratios(train)
    assert len(ratios) > 2000
    # The paper: about 30 % of COCO GTs have MOB < 0.5 (Fig. 3a).
    assert 0.2 < (ratios < 0.5).mean() < 0.45
    val = _coco_mini_name(coco_mini, "val")
    tool = load_tool("plot_figures")
    out = tmp_path / "fig1_coco.png"
    tool.main(["anchor-disagreement", "--dataset", val, "--num-images", "3", "--num-show", "1",
               "--output", str(out)])
    _check_png(out)
    out = tmp_path / "fig3c_coco.png"
    pairs = tool.main(["iou-vs-maiou", "--dataset", val, "--num-images", "3", "--output", str(out)])
    _check_png(out)
    assert len(pairs["iou"]) > 100


def test_save_figure_is_atomic_and_closes(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = tmp_path / "sub" / "dir" / "fig.png"
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    assert an.save_figure(fig, str(out), dpi=50) == str(out)
    _check_png(out)
    assert not plt.fignum_exists(fig.number)
    before = out.read_bytes()
    # A failing write (unknown format) keeps the old file whole, leaves no temporary file behind
    # and still closes the figure.
    fig, _ = plt.subplots()
    bad = out.with_suffix(".notaformat")
    with pytest.raises(ValueError):
        an.save_figure(fig, str(bad))
    assert not plt.fignum_exists(fig.number)
    assert out.read_bytes() == before
    assert [p.name for p in out.parent.iterdir()] == ["fig.png"]
