"""End-to-end YOLACT model: geometry at 550, training steps, inference outputs, predictor."""
import math

import numpy as np
import pytest
import torch
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

from mayolact.engine.predictor import YOLACTPredictor
from mayolact.modeling.meta_arch.yolact import YOLACT
from mayolact.structures.integral_image import integral_images

from common import build_tiny_model, tiny_config

NUM_CLASSES = 3


def _cfg(variant="atss_maiou", size=128):
    return tiny_config(variant, size, NUM_CLASSES)


def _build(cfg, seed=0):
    return build_tiny_model(cfg, seed)


def _instances(size, boxes, classes):
    """GT Instances with box-shaped masks, trimmed on the right half so they are not boxes."""
    inst = Instances((size, size))
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    masks = torch.zeros(len(boxes), size, size, dtype=torch.bool)
    for g, (x1, y1, x2, y2) in enumerate(boxes.round().long().tolist()):
        masks[g, y1:y2, x1:(x1 + x2) // 2 + 1] = True
    inst.gt_boxes = Boxes(boxes)
    inst.gt_classes = torch.tensor(classes, dtype=torch.int64)
    inst.gt_masks = BitMasks(masks)
    return inst


def _image(size, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8)


def _train_batch(size=128):
    full = {"image": _image(size, 0), "height": size, "width": size,
            "instances": _instances(size, [[10, 12, 70, 90], [60, 30, 120, 100]], [0, 2])}
    empty = {"image": _image(size, 1), "height": size, "width": size,
             "instances": _instances(size, [], [])}
    return full, empty


LOSS_KEYS = {"loss_cls", "loss_box_reg", "loss_mask", "loss_semseg"}


def _check_losses_and_grads(model, losses):
    assert set(losses) == LOSS_KEYS
    for k, v in losses.items():
        assert v.dim() == 0 and torch.isfinite(v), (k, v)
    model.zero_grad()
    sum(losses.values()).backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not unused, unused  # every parameter takes part (DDP-safe), even without positives
    for n, p in model.named_parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), n


def test_geometry_at_550():
    cfg = _cfg(size=550)
    model = _build(cfg)
    model.eval()
    with torch.no_grad():
        feats = model.backbone(torch.zeros(1, 3, 550, 550))
    sizes = [tuple(feats[f].shape[-2:]) for f in model.head_in_features]
    assert sizes == [(69, 69), (35, 35), (18, 18), (9, 9), (5, 5)]
    head_feats = [feats[f] for f in model.head_in_features]
    assert sum(len(a) for a in model.anchor_generator(head_feats)) == 6416
    assert model.protonet(feats["p3"]).shape[-2:] == (138, 138)
    from detectron2.modeling.anchor_generator import build_anchor_generator
    fixed = build_anchor_generator(_cfg("fixed_iou", 550), [model.backbone.output_shape()[f]
                                                            for f in model.head_in_features])
    assert sum(len(a) for a in fixed(head_feats)) == 19248
    assert model.backbone.size_divisibility == 0


@pytest.mark.parametrize("variant", ["atss_maiou", "fixed_iou", "mayolact"])
def test_train_step_half_empty_batch(variant):
    model = _build(_cfg(variant))
    model.train()
    with EventStorage() as storage:
        losses = model(list(_train_batch()))
        num_pos = storage.latest()["num_pos_anchors"][0]
    assert num_pos > 0
    assert losses["loss_mask"] > 0 and losses["loss_box_reg"] > 0
    _check_losses_and_grads(model, losses)


def test_train_step_all_empty_batch():
    model = _build(_cfg())
    model.train()
    _, empty = _train_batch()
    losses = model([empty, dict(empty)])  # no EventStorage: logging is skipped
    assert losses["loss_box_reg"].item() == 0.0 and losses["loss_mask"].item() == 0.0
    assert losses["loss_semseg"].item() == 0.0  # as mmdet: no GT, zero weights
    assert losses["loss_cls"] > 0  # every anchor is a negative and all are used (no positive)
    _check_losses_and_grads(model, losses)


def test_label_anchors_uses_given_integral_images_and_matches_without():
    model = _build(_cfg())
    full, _ = _train_batch()
    with_ii = full["instances"]
    without = Instances(with_ii.image_size, **with_ii.get_fields())
    with_ii = Instances(with_ii.image_size, **with_ii.get_fields())
    with_ii.gt_integral_images = integral_images(with_ii.gt_masks.tensor)
    anchors = model.anchor_generator([torch.zeros(1, 1, s, s) for s in (16, 8, 4, 2, 1)])
    a = model.label_anchors(anchors, [with_ii])
    b = model.label_anchors(anchors, [without])
    assert torch.equal(a[0][0], b[0][0]) and torch.equal(a[1][0], b[1][0])
    labels = a[0][0]
    assert labels.dtype == torch.int64 and set(labels.unique().tolist()) <= {0, 2, NUM_CLASSES}
    assert (labels < NUM_CLASSES).sum() > 0
    # Positives point at a GT of their class.
    pos = labels < NUM_CLASSES
    assert torch.equal(with_ii.gt_classes[a[1][0][pos]], labels[pos])


def test_semseg_head_off():
    cfg = _cfg()
    cfg.MODEL.YOLACT.SEMSEG_HEAD = False
    model = _build(cfg)
    assert model.semseg_head is None
    model.train()
    losses = model(list(_train_batch()))
    assert set(losses) == LOSS_KEYS - {"loss_semseg"}


@pytest.mark.parametrize("nms_type", ["fast", "standard"])
def test_inference_odd_output_size_and_coco_json(nms_type):
    cfg = _cfg()
    cfg.MODEL.YOLACT.NMS_TYPE = nms_type
    model = _build(cfg)
    model.eval()
    inputs = [{"image": _image(128, 2), "height": 200, "width": 249},
              {"image": _image(128, 3)}]
    with torch.no_grad():
        outputs = model(inputs)
    assert len(outputs) == 2
    inst = outputs[0]["instances"]
    assert inst.image_size == (200, 249)
    assert 0 < len(inst) <= 20
    assert inst.pred_masks.shape == (len(inst), 200, 249) and inst.pred_masks.dtype == torch.bool
    assert inst.pred_classes.dtype == torch.int64 and int(inst.pred_classes.max()) < NUM_CLASSES
    assert bool((inst.scores[:-1] >= inst.scores[1:]).all())
    boxes = inst.pred_boxes.tensor
    assert (boxes[:, 0::2] <= 249).all() and (boxes[:, 1::2] <= 200).all() and (boxes >= 0).all()
    assert set(inst.get_fields()) == {"pred_boxes", "scores", "pred_classes", "pred_masks"}
    assert outputs[1]["instances"].pred_masks.shape[1:] == (128, 128)
    json = instances_to_coco_json(inst.to("cpu"), 7)
    assert len(json) == len(inst) and "segmentation" in json[0] and json[0]["image_id"] == 7


def test_inference_candidate_limit_and_no_detections():
    cfg = _cfg()
    cfg.MODEL.YOLACT.TOPK_CANDIDATES_PER_LEVEL = 5
    cfg.MODEL.YOLACT.SCORE_THRESH_TEST = 1.0  # nothing can score above 1
    model = _build(cfg)
    model.eval()
    with torch.no_grad():
        out = model([{"image": _image(128, 4), "height": 50, "width": 60}])[0]["instances"]
    assert len(out) == 0 and out.pred_masks.shape == (0, 50, 60)


def test_decode_boxes_clamps_both_sides_and_clips():
    model = _build(_cfg())
    anchors = torch.tensor([[40.0, 40, 60, 60], [40, 40, 60, 60], [100, 100, 140, 140]])
    deltas = torch.tensor([[0.0, 0, -100, -100], [0, 0, 0, 0], [0, 0, 100, 0]])
    boxes = model.decode_boxes(deltas, anchors, (128, 128))
    side = 20 * math.exp(-math.log(1000 / 16))  # dw clamped at -scale_clamp, not -inf
    torch.testing.assert_close(boxes[0], torch.tensor([50 - side / 2, 50 - side / 2,
                                                       50 + side / 2, 50 + side / 2]))
    torch.testing.assert_close(boxes[1], anchors[1])
    assert boxes[2].tolist() == [0.0, 100.0, 128.0, 128.0]  # huge width clipped to the image


def test_bad_inputs():
    model = _build(_cfg())
    model.eval()
    with pytest.raises(ValueError, match="same S x S"):
        model([{"image": _image(128, 0)}, {"image": torch.zeros(3, 96, 96, dtype=torch.uint8)}])
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        model([{"image": torch.zeros(1, 128, 128)}])
    model.train()
    with pytest.raises(ValueError, match="instances"):
        model([{"image": _image(128, 0)}])
    full, _ = _train_batch()
    bad = dict(full, instances=_instances(96, [[1, 1, 20, 20]], [0]))
    with pytest.raises(ValueError, match="gt_masks"):
        model([bad])


def test_a_few_steps_reduce_the_loss():
    model = _build(_cfg(size=96), seed=1)
    model.train()
    full = {"image": _image(96, 5),
            "instances": _instances(96, [[10, 10, 60, 70], [50, 20, 90, 90]], [1, 2])}
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    totals = []
    for _ in range(6):
        losses = model([full])
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 35.0)
        opt.step()
        totals.append(total.item())
    assert totals[-1] < totals[0]


def test_predictor_outputs_original_size():
    cfg = _cfg()
    pred = YOLACTPredictor(cfg)
    assert isinstance(pred.model, YOLACT) and not pred.model.training
    img = np.random.default_rng(0).integers(0, 256, (100, 150, 3), dtype=np.uint8)
    inp = pred.preprocess(img)
    assert inp["image"].shape == (3, 128, 128) and (inp["height"], inp["width"]) == (100, 150)
    # RGB model: channels are flipped from the BGR input.
    small = pred.preprocess(np.dstack([np.full((128, 128), v, np.uint8) for v in (1, 2, 3)]))
    assert small["image"][:, 0, 0].tolist() == [3, 2, 1]
    out = pred(img)["instances"]
    assert out.pred_masks.shape[1:] == (100, 150)
    with pytest.raises(ValueError, match=r"image has shape \(10, 10\) \(dtype uint8\)"):
        pred(np.zeros((10, 10), np.uint8))


def test_visualize_training_period():
    cfg = _cfg()
    cfg.VIS_PERIOD = 1
    model = _build(cfg)
    model.train()
    with EventStorage() as storage:
        model(list(_train_batch()))
        assert len(storage._vis_data) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_autocast_train_and_inference():
    cfg = _cfg()
    cfg.MODEL.DEVICE = "cuda"
    model = _build(cfg)
    model.train()
    with torch.autocast("cuda", dtype=torch.float16):
        losses = model(list(_train_batch()))
    assert all(v.dtype == torch.float32 for v in losses.values())
    _check_losses_and_grads(model, losses)
    model.eval()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
        out = model([{"image": _image(128, 2), "height": 200, "width": 249}])[0]["instances"]
    assert out.pred_masks.shape == (len(out), 200, 249) and out.pred_masks.is_cuda
    assert len(out) > 0


def test_coco_mini_mapper_to_model(coco_mini):
    """Real data through the project's mapper: one training step and original-size outputs."""
    from detectron2.data import DatasetCatalog

    from mayolact.data import YOLACTDatasetMapper

    cfg = _cfg(size=128)
    cfg.MODEL.YOLACT.NUM_CLASSES = 80
    model = _build(cfg)
    dicts = DatasetCatalog.get("coco_mini_train")
    train_mapper = YOLACTDatasetMapper(cfg, is_train=True)
    batch = [m for m in (train_mapper(dict(d)) for d in dicts[:6]) if m is not None][:2]
    assert len(batch) == 2
    model.train()
    losses = model(batch)
    _check_losses_and_grads(model, losses)
    test_mapper = YOLACTDatasetMapper(cfg, is_train=False)
    inp = test_mapper(dict(DatasetCatalog.get("coco_mini_val")[0]))
    model.eval()
    with torch.no_grad():
        out = model([inp])[0]["instances"]
    assert out.pred_masks.shape[1:] == (inp["height"], inp["width"])
