"""Tests of mayolact.analysis (brute-force oracles) and of the figure tools (end to end, tiny)."""
import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.layers import ShapeSpec
from detectron2.modeling import Backbone
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.meta_arch.dense_detector import DenseDetector
from detectron2.structures import BoxMode
from fvcore.nn import smooth_l1_loss
from torch import nn
from torch.nn import functional as F

from mayolact import analysis as an
from mayolact.data.shapes import generate_shapes_dicts, register_shapes
from mayolact.head import YOLACTHead
from mayolact.losses import yolact_mask_loss
from mayolact.protonet import ProtoNet

REPO = Path(__file__).resolve().parents[1]
SMALL_ANCHORS = ["MODEL.ANCHOR_GENERATOR.SIZES", "[[16], [32], [64], [128], [256]]"]


# --------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def tiny_shapes(tmp_path_factory):
    """A registered 8-image shapes set of 128x128 in a temporary cache."""
    name = "_test_figures_shapes"
    register_shapes(name, 8, 128, seed=11, cache_root=str(tmp_path_factory.mktemp("shapes")))
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


@pytest.fixture(scope="module")
def tiny_dicts():
    return generate_shapes_dicts(3, 80, seed=5)


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(f"_tool_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _coco_mini_name(root, split):
    """``coco_mini_<split>`` if the project registers it, else a test-local registration."""
    an.register_figure_datasets()
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
def _np_squash(mask, size):
    h, w = mask.shape
    rows = np.minimum((np.arange(size) * (h / size)).astype(int), h - 1)
    cols = np.minimum((np.arange(size) * (w / size)).astype(int), w - 1)
    return mask[rows][:, cols]


def _np_gts(record, size):
    """(boxes (G, 4), masks (G, S, S)) of the non-crowd GTs, squashed (numpy only)."""
    boxes, masks = [], []
    h, w = record["height"], record["width"]
    for a in record["annotations"]:
        if a.get("iscrowd", 0):
            continue
        b = np.array(BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS), float)
        b = np.clip(b * [size / w, size / h, size / w, size / h], 0, size)
        boxes.append(b)
        masks.append(_np_squash(mask_util.decode(a["segmentation"]).astype(bool), size))
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


# ------------------------------------------------------------------------------ analysis
def _mask_record(h, w, annos):
    return {"file_name": "x.png", "image_id": 0, "height": h, "width": w, "annotations": annos}


def _rle(mask):
    r = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    r["counts"] = r["counts"].decode()
    return r


def test_gt_mob_ratios_hand_computed():
    m = np.zeros((20, 20), bool)
    m[5:15, 5:10] = True  # 50 px in the box [5, 5, 15, 15] (SPEC 14): MOB 0.5
    poly = [[0.0, 0.0, 10.0, 0.0, 10.0, 4.0, 0.0, 4.0]]  # 10 x 4 rectangle
    annos = [
        {"bbox": [5, 5, 15, 15], "bbox_mode": BoxMode.XYXY_ABS, "segmentation": _rle(m),
         "category_id": 1, "iscrowd": 0},
        {"bbox": [0, 0, 10, 8], "bbox_mode": BoxMode.XYWH_ABS, "segmentation": poly,
         "category_id": 2, "iscrowd": 0},
        {"bbox": [0, 0, 20, 20], "bbox_mode": BoxMode.XYXY_ABS, "segmentation": _rle(m),
         "category_id": 0, "iscrowd": 1},  # crowd: ignored
    ]
    rec = _mask_record(20, 20, annos)
    poly_area = mask_util.area(mask_util.merge(mask_util.frPyObjects(poly, 20, 20)))
    mobs, cls = an.gt_mob_ratios([rec], return_classes=True)
    np.testing.assert_allclose(mobs, [0.5, poly_area / 80.0], rtol=1e-6)
    assert cls.tolist() == [1, 2]
    # Squash 20x20 -> 40x40: nearest doubles every pixel, the box doubles: same ratios.
    np.testing.assert_allclose(an.gt_mob_ratios([rec], size=40), [0.5, poly_area / 80.0], rtol=1e-6)
    # min_size drops the 10 x 8 box (h = 8 is not > 8).
    np.testing.assert_allclose(an.gt_mob_ratios([rec], min_size=8), [0.5], rtol=1e-6)
    assert an.gt_mob_ratios([_mask_record(20, 20, [])]).shape == (0,)


def test_gt_mob_ratios_squash_matches_numpy(tiny_dicts):
    got = an.gt_mob_ratios(tiny_dicts, size=50)
    expected = []
    for rec in tiny_dicts:
        boxes, masks = _np_gts(rec, 50)
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        expected.extend(masks.reshape(len(masks), -1).sum(1) / (area + 1e-6))
    np.testing.assert_allclose(got, expected, rtol=1e-9)


def test_bad_inputs():
    with pytest.raises(ValueError, match="not registered"):
        an.get_dataset_dicts("no_such_dataset_xyz")
    with pytest.raises(ValueError, match="height"):
        an.gt_mob_ratios([{"file_name": "a", "annotations": []}])
    with pytest.raises(ValueError, match="segmentation"):
        an.gt_mob_ratios([_mask_record(8, 8, [{"bbox": [0, 0, 2, 2], "bbox_mode": 0,
                                              "category_id": 0}])])
    with pytest.raises(ValueError, match="bins"):
        an.bin_statistics([1.0], [0.5], [0.5, 0.2])
    cfg = an.analysis_cfg()
    cfg.MODEL.YOLACT.IN_FEATURES = ["res_last"]
    with pytest.raises(ValueError, match="level"):
        an.anchors_for_size(cfg)


def test_feature_sizes_and_anchor_counts():
    assert an.feature_sizes(550, [3, 4, 5, 6, 7]) == [69, 35, 18, 9, 5]
    assert an.feature_sizes(400, [3, 4, 5, 6, 7]) == [50, 25, 13, 7, 4]
    cfg = an.analysis_cfg()
    anchors = an.anchors_for_size(cfg)
    assert len(anchors) == 6416  # SPEC 5.2, ATSS at 550
    np.testing.assert_allclose(anchors.tensor[0].numpy(), [-16, -16, 16, 16])
    assert len(an.anchors_for_size(cfg, 700)) == 10321
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[32, 45.2548], [64, 90.5097], [128, 181.0193],
                                        [256, 362.0387], [512, 724.0773]]
    assert len(an.anchors_for_size(cfg)) == 12832
    fixed = REPO / "configs" / "COCO-InstanceSegmentation" / "yolact_R_50_FPN_550_fixediou.yaml"
    if fixed.is_file():  # YOLACT's own anchors: 3 per location, 550 geometry (SPEC 5.2)
        cfg = an.analysis_cfg(str(fixed))
        assert len(an.anchors_for_size(cfg)) == 19248
        assert len(an.anchors_for_size(cfg, 400)) == 10077


def test_iou_maiou_pairs_bruteforce(tiny_dicts):
    size = 96
    cfg = an.analysis_cfg(opts=SMALL_ANCHORS, size=size)
    pairs = an.iou_maiou_pairs(tiny_dicts, cfg)
    anchors = an.anchors_for_size(cfg).tensor.numpy().astype(np.float64)
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
    cfg = an.analysis_cfg(opts=SMALL_ANCHORS, size=size)
    pairs = an.iou_maiou_pairs(tiny_dicts, cfg)
    anchors = an.anchors_for_size(cfg).tensor.numpy()
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
        assert np.isclose(e["gap"], (e["maiou"] - e["iou"]) * (1 if e["kind"] == "maiou_higher"
                                                               else -1), atol=1e-6)
        np.testing.assert_allclose(e["anchor_box_input"], anchors[e["anchor"]], atol=1e-5)
        s = e["record"]["width"] / size
        np.testing.assert_allclose(e["anchor_box"], anchors[e["anchor"]] * s, atol=1e-4)
        _, masks = _np_gts(e["record"], size)
        a = anchors[e["anchor"]]
        np.testing.assert_allclose(
            e["anchor_mob"], _np_count(masks[e["gt"]], a) / ((a[2] - a[0]) * (a[3] - a[1])),
            rtol=1e-5)
        assert e["record"] is tiny_dicts[e["image"]]
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


# ------------------------------------------------------- Figure 2 with a tiny random model
class _TinyBackbone(Backbone):
    """Stride-2 convs: p3 (stride 8) ... p7 (stride 128), 8 channels."""

    def __init__(self, ch=8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, ch, 3, 2, 1), nn.ReLU(), nn.Conv2d(ch, ch, 3, 2, 1),
                                  nn.ReLU(), nn.Conv2d(ch, ch, 3, 2, 1))
        self.down = nn.ModuleList([nn.Conv2d(ch, ch, 3, 2, 1) for _ in range(4)])
        self.ch = ch

    def forward(self, x):
        out = {"p3": self.stem(x)}
        for lv, conv in zip(range(4, 8), self.down):
            out[f"p{lv}"] = conv(out[f"p{lv - 1}"])
        return out

    def output_shape(self):
        return {f"p{lv}": ShapeSpec(channels=self.ch, stride=2 ** lv) for lv in range(3, 8)}


def _tiny_model(num_classes=8):
    torch.manual_seed(0)
    backbone = _TinyBackbone()
    shapes = [backbone.output_shape()[f"p{lv}"] for lv in range(3, 8)]
    head = YOLACTHead(input_shape=shapes, num_classes=num_classes, num_anchors=1, num_prototypes=4)
    model = DenseDetector(backbone, head, ["p3", "p4", "p5", "p6", "p7"],
                          pixel_mean=[128.0, 128.0, 128.0], pixel_std=[60.0, 60.0, 60.0])
    model.protonet = ProtoNet(in_channels=8, hidden_channels=8, num_prototypes=4)
    model.anchor_generator = DefaultAnchorGenerator(
        sizes=[[16], [32], [64], [128], [256]], aspect_ratios=[[1.0]], strides=[8, 16, 32, 64, 128],
        offset=0.0)
    model.box2box_transform = Box2BoxTransform(weights=(10.0, 10.0, 5.0, 5.0))
    return model.eval()


def test_per_anchor_losses_oracles(tiny_shapes):
    model = _tiny_model()
    size = 128
    batch = next(iter(an.squash_batches(tiny_shapes, size, batch_size=3, num_images=3)))
    r = an.per_anchor_losses(model, batch, pos_iou=(0.4, 0.8), neg_iou=(0.2, 0.4))
    assert len(r["pos_cls"]) > 0 and len(r["neg_cls"]) > 0
    with torch.no_grad():
        images = model.preprocess_image(batch).tensor
        feats = model.backbone(images)
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
        lg = at(logits, n, a, 9)
        assert np.isclose(r["pos_cls"][j], -F.log_softmax(lg, 0)[cls].item(), rtol=1e-4)
        target = model.box2box_transform.get_deltas(torch.tensor(anchors[a:a + 1]),
                                                    inst.gt_boxes.tensor[g:g + 1])
        box = smooth_l1_loss(at(deltas, n, a, 4)[None], target, beta=1.0, reduction="sum")
        assert np.isclose(r["pos_box"][j], box.item(), rtol=1e-4)
        mask = inst.gt_masks[g].numpy()
        anc = anchors[a]
        mob = _np_count(mask, anc) / ((anc[2] - anc[0]) * (anc[3] - anc[1]))
        assert np.isclose(r["pos_mob"][j], mob, rtol=1e-5)
        assert np.isclose(r["pos_iou"][j], _np_iou(inst.gt_boxes.tensor[g].numpy(), anc)[0],
                          atol=1e-5)
        # The mask loss of one positive equals yolact_mask_loss on that positive alone.
        ref = yolact_mask_loss(protos[n:n + 1], [at(coeffs, n, a, 4)[None]],
                               [torch.tensor([g])], [inst.gt_masks], [inst.gt_boxes.tensor],
                               (size, size), max_masks=0, loss_weight=1.0)
        assert np.isclose(r["pos_mask"][j], ref.item(), rtol=1e-4)
    for j in range(0, len(r["neg_cls"]), 7):
        n, a = int(r["neg_image"][j]), int(r["neg_anchor"][j])
        assert np.isclose(r["neg_cls"][j], -F.log_softmax(at(logits, n, a, 9), 0)[8].item(),
                          rtol=1e-4)
    with pytest.raises(ValueError, match="instances"):
        an.per_anchor_losses(model, [{"image": batch[0]["image"]}])


def test_losses_by_mob_aggregates(tiny_shapes):
    model = _tiny_model()
    loader = list(an.squash_batches(tiny_shapes, 128, batch_size=2, num_images=4))
    res = an.losses_by_mob(model, loader, bins=[0.0, 0.25, 0.5, 0.75, 1.0], pos_iou=(0.4, 0.8))
    raw = res["raw"]
    assert sorted(set(raw["pos_image"].tolist()) | set(raw["neg_image"].tolist())) == [0, 1, 2, 3]
    assert res["pos_cls"]["count"].sum() == len(raw["pos_cls"])
    assert res["neg_cls"]["count"].sum() == len(raw["neg_cls"])
    for name, key in (("pos_box", "pos_mob"), ("neg_cls", "neg_mob")):
        sel = (raw[key] >= 0.25) & (raw[key] < 0.5)
        if sel.any():
            assert np.isclose(res[name]["mean"][1], raw[name][sel].mean(), rtol=1e-5)
    with pytest.raises(ValueError, match="no batch"):
        an.losses_by_mob(model, [])


# ------------------------------------------------------------------------------- tools
def test_tool_mob_histogram(tiny_shapes, tmp_path, capsys):
    tool = _load_tool("plot_mob_histogram")
    out = tmp_path / "mob.png"
    ratios = tool.main(["--dataset", tiny_shapes, "--output", str(out), "--bins", "5"])
    _check_png(out)
    text = capsys.readouterr().out
    assert "MOB<0.5" in text and tiny_shapes in text
    r = ratios[tiny_shapes]
    assert f"{100 * (r < 0.5).mean():.1f}%" in text


def test_tool_iou_vs_maiou(tiny_shapes, tmp_path, capsys):
    tool = _load_tool("plot_iou_vs_maiou")
    out = tmp_path / "iou.png"
    pairs = tool.main(["--dataset", tiny_shapes, "--size", "128", "--num-images", "4",
                       "--output", str(out), *SMALL_ANCHORS])
    _check_png(out)
    text = capsys.readouterr().out
    assert f"pairs with IoU > 0: {len(pairs['iou'])}" in text
    assert len(pairs["iou"]) > 0 and set(pairs["image"].tolist()) <= {0, 1, 2, 3}


def test_tool_anchor_disagreement(tiny_shapes, tmp_path, capsys):
    tool = _load_tool("plot_anchor_disagreement")
    out = tmp_path / "fig1.png"
    shown = tool.main(["--dataset", tiny_shapes, "--size", "128", "--num-images", "4",
                       "--num-show", "2", "--output", str(out), *SMALL_ANCHORS])
    _check_png(out)
    text = capsys.readouterr().out
    assert "maiou_higher" in text and 1 <= len(shown["maiou_higher"]) <= 2
    gaps = [e["gap"] for e in shown["maiou_higher"]]
    assert gaps == sorted(gaps, reverse=True)


def test_tool_losses_by_mob_tiny_model(tiny_shapes, tmp_path, capsys):
    tool = _load_tool("plot_losses_by_mob")
    out = tmp_path / "fig2.png"
    args = tool.parse_args(["--config-file", "x.yaml", "--dataset", tiny_shapes,
                            "--num-images", "4", "--batch-size", "2", "--bins", "5",
                            "--pos-iou", "0.4", "0.8", "--output", str(out)])
    cfg = an.analysis_cfg(size=128)
    res = tool.run(_tiny_model(), cfg, args)
    _check_png(out)
    text = capsys.readouterr().out
    assert "MOB bin" in text and f"{len(res['raw']['pos_cls'])} positives" in text


def test_tool_losses_by_mob_real_model(tiny_shapes, tmp_path, capsys):
    from detectron2.modeling import META_ARCH_REGISTRY

    tool = _load_tool("plot_losses_by_mob")  # imports mayolact.meta_arch
    if "YOLACT" not in META_ARCH_REGISTRY:
        pytest.skip("mayolact.meta_arch.YOLACT is not registered")
    config = REPO / "configs" / "shapes" / "mayolact_shapes_demo.yaml"
    if not config.is_file():
        pytest.skip("configs/shapes/mayolact_shapes_demo.yaml is missing")
    out = tmp_path / "fig2_real.png"
    res = tool.main(["--config-file", str(config), "--dataset", tiny_shapes, "--num-images", "2",
                     "--batch-size", "2", "--output", str(out), "INPUT.YOLACT.SIZE", "128",
                     "MODEL.WEIGHTS", ""])
    _check_png(out)
    assert "MOB bin" in capsys.readouterr().out
    assert len(res["raw"]["neg_cls"]) > 0


def test_tool_runs_as_script(tmp_path):
    env = dict(os.environ, MAYOLACT_CACHE=str(tmp_path / "cache"), MAYOLACT_SHAPES_VAL_IMAGES="4",
               MAYOLACT_SHAPES_SIZE="64", OMP_NUM_THREADS="1")
    out = tmp_path / "mob.png"
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "plot_mob_histogram.py"), "--dataset",
         "mayolact_shapes_val", "--output", str(out)],
        env=env, capture_output=True, text=True, timeout=120, cwd=str(REPO))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "MOB<0.5" in proc.stdout
    _check_png(out)


def test_coco_mini_mob_share_and_tools(coco_mini, tmp_path, capsys):
    train = _coco_mini_name(coco_mini, "train")
    ratios = an.gt_mob_ratios(train)
    assert len(ratios) > 2000
    # The paper: about 30 % of COCO GTs have MOB < 0.5 (Fig. 3a).
    assert 0.2 < (ratios < 0.5).mean() < 0.45
    val = _coco_mini_name(coco_mini, "val")
    out = tmp_path / "fig1_coco.png"
    tool = _load_tool("plot_anchor_disagreement")
    tool.main(["--dataset", val, "--num-images", "3", "--num-show", "1", "--output", str(out)])
    _check_png(out)
    out = tmp_path / "fig3c_coco.png"
    pairs = _load_tool("plot_iou_vs_maiou").main(["--dataset", val, "--num-images", "3",
                                                  "--output", str(out)])
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
