"""Analysis behind the paper's Figures 1-3: MOB ratios, IoU vs maIoU, losses by MOB ratio.

No plotting here (see ``tools/plot_*.py``), only :func:`save_figure`, which the tools share to
write their figures atomically. Every function reads ground truths from Detectron2
dataset dicts (polygons or RLE) and, where the figure is about the network's input, squashes the
image to S x S as training and test do (boxes scaled and clipped to [0, S], masks resized with
nearest), see :func:`squash_instances`.

Definitions (paper Sec. 3.1, SPEC 6.4):

* MOB ratio of a GT: ``|M| / (|B| + 1e-6)`` (:func:`mayolact.maiou.mask_over_box`);
* MOB ratio of an anchor Â w.r.t. a mask M: ``|round(Â) ∩ M| / |Â|`` (Definition 1,
  :func:`mayolact.maiou.mask_fraction_in_boxes`);
* IoU: Detectron2's ``pairwise_iou``; maIoU: :func:`mayolact.maiou.pairwise_maiou`.

Shape shorthand:
    G: ground truths of one image; A: anchors (all levels); S: input side;
    P: (GT, anchor) pairs; K: foreground classes; k: prototypes; Hp, Wp: prototype size.
"""
import logging
import os
import re
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.nn import functional as F

from detectron2.data import DatasetCatalog
from detectron2.data.detection_utils import annotations_to_instances, read_image
from detectron2.layers import ShapeSpec
from detectron2.modeling.anchor_generator import build_anchor_generator
from detectron2.modeling.meta_arch.dense_detector import permute_to_N_HWA_K
from detectron2.structures import Boxes, Instances, pairwise_iou

import mayolact.anchor_generator  # noqa: F401  (registers YOLACTAnchorGenerator)
from mayolact.maiou import mask_fraction_in_boxes, mask_over_box, pairwise_maiou
from mayolact.postprocessing import box_crop_region
from mayolact.structures import integral_images

__all__ = [
    "DatasetLike",
    "analysis_cfg",
    "register_figure_datasets",
    "get_dataset_dicts",
    "squash_instances",
    "gt_instances",
    "gt_mob_ratios",
    "feature_sizes",
    "anchors_for_size",
    "iou_maiou_pairs",
    "disagreement_examples",
    "squash_batches",
    "per_anchor_losses",
    "losses_by_mob",
    "bin_statistics",
    "save_figure",
]

logger = logging.getLogger(__name__)

DatasetLike = Union[str, Sequence[str], List[Dict]]


# ------------------------------------------------------------------------------- setup
def register_figure_datasets() -> None:
    """Import the modules that register the datasets the figure tools use (idempotent).

    ``mayolact_shapes_*`` (:mod:`mayolact.data.shapes`) and, when that module exists,
    ``coco_mini_*`` (:mod:`mayolact.data.datasets`).
    """
    import importlib
    import importlib.util

    for module in ("mayolact.data.shapes", "mayolact.data.datasets"):
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module)


def analysis_cfg(config_file: Optional[str] = None, opts: Sequence[str] = (),
                 size: Optional[int] = None):
    """A config for the analysis tools.

    Without ``config_file`` it has the ATSS anchors of the paper's Table 2 (one square anchor of
    side 4 x stride per location on P3-P7, offset 0) at 550 x 550, as ``Base-YOLACT.yaml``.

    Args:
        config_file: a yaml config to merge (``_BASE_`` allowed).
        opts: ``KEY VALUE`` pairs merged last.
        size: overrides ``INPUT.YOLACT.SIZE``.
    """
    from detectron2.config import get_cfg

    from mayolact.config import add_mayolact_config

    cfg = get_cfg()
    add_mayolact_config(cfg)
    cfg.MODEL.ANCHOR_GENERATOR.NAME = "DefaultAnchorGenerator"
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[32], [64], [128], [256], [512]]
    cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [[1.0]]
    cfg.MODEL.ANCHOR_GENERATOR.OFFSET = 0.0
    cfg.INPUT.YOLACT.SIZE = 550
    if config_file:
        cfg.merge_from_file(config_file)
    if opts:
        cfg.merge_from_list(list(opts))
    if size:
        cfg.INPUT.YOLACT.SIZE = int(size)
    return cfg


def save_figure(fig, path: str, dpi: int = 120, tight: bool = True) -> str:
    """Lay out (``tight_layout``), write a matplotlib figure atomically and close it.

    The folder is created if needed; the figure goes to a temporary file in that folder, which then
    replaces ``path`` (``os.replace``), so a crash never leaves a half-written image. The figure is
    closed (``plt.close``) whether or not writing succeeded.

    Args:
        fig: a ``matplotlib.figure.Figure``.
        path: the output file; its extension gives the format (``.png`` when there is none).
        dpi: resolution.
        tight: call ``fig.tight_layout()`` first.

    Returns:
        str: ``path``.
    """
    import matplotlib.pyplot as plt  # local: only the figure tools need matplotlib

    try:
        if tight:
            fig.tight_layout()
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        fmt = os.path.splitext(path)[1][1:].lower() or "png"
        # A plain open (not mkstemp) so that the file gets the usual permissions.
        tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                fig.savefig(f, dpi=dpi, format=fmt)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
    finally:
        plt.close(fig)
    return path


# ------------------------------------------------------------------------------- data access
def get_dataset_dicts(dataset: DatasetLike, num_images: Optional[int] = None) -> List[Dict]:
    """Dataset dicts of a registered dataset name, several names, or a list of dicts.

    Args:
        dataset: a name registered in ``DatasetCatalog``, a list/tuple of names (concatenated),
            or a list of dataset dicts.
        num_images: keep only the first ``num_images`` dicts (None: all).

    Raises:
        ValueError: unknown dataset name, or ``num_images`` < 0.
    """
    if isinstance(dataset, str):
        dataset = [dataset]
    if len(dataset) and all(isinstance(d, str) for d in dataset):
        dicts = []
        for name in dataset:
            if name not in DatasetCatalog.list():
                raise ValueError(f"dataset '{name}' is not registered; registered: "
                                 f"{sorted(DatasetCatalog.list())}")
            dicts.extend(DatasetCatalog.get(name))
    elif all(isinstance(d, dict) for d in dataset):
        dicts = list(dataset)
    else:
        raise ValueError("dataset must be a registered name, a list of names or a list of dicts")
    if num_images is not None:
        if num_images < 0:
            raise ValueError(f"num_images must be >= 0, got {num_images}")
        dicts = dicts[:num_images]
    return dicts


def gt_instances(record: Dict, min_size: float = 0.0) -> Instances:
    """Non-crowd ground truths of one dataset dict, masks rasterised at the original size.

    Args:
        record: a Detectron2 dataset dict with ``height``, ``width`` and ``annotations``
            (``bbox``, ``bbox_mode``, ``category_id``, ``segmentation`` as polygons or RLE).
        min_size: keep only GTs whose box width and height are > ``min_size`` (the training
            filter, SPEC 2.2, uses 4); 0 keeps all.

    Returns:
        Instances: of size (height, width) with ``gt_boxes`` (XYXY_ABS), ``gt_classes`` and
        ``gt_masks`` as a bool (G, H, W) tensor.

    Raises:
        ValueError: a record without height/width, or an annotation without a segmentation.
    """
    for key in ("height", "width"):
        if key not in record:
            raise ValueError(f"dataset dict {record.get('file_name', '?')} has no '{key}'")
    h, w = int(record["height"]), int(record["width"])
    annos = [a for a in record.get("annotations", []) if not a.get("iscrowd", 0)]
    for a in annos:
        if "segmentation" not in a:
            raise ValueError(f"an annotation of {record.get('file_name', '?')} has no segmentation")
    inst = annotations_to_instances(annos, (h, w), mask_format="bitmask")
    if not inst.has("gt_masks"):
        inst.gt_masks = torch.zeros((0, h, w), dtype=torch.bool)
    else:
        inst.gt_masks = inst.gt_masks.tensor.bool()
    if min_size > 0 and len(inst):
        wh = inst.gt_boxes.tensor[:, 2:] - inst.gt_boxes.tensor[:, :2]
        inst = inst[(wh > min_size).all(dim=1)]
    return inst


def squash_instances(inst: Instances, size: int) -> Instances:
    """Squash-resize ground truths to ``size`` x ``size`` as the YOLACT pipeline does.

    Boxes are scaled by (S/w, S/h) and clipped to [0, S]; masks are resized with nearest
    interpolation (SPEC 2.2 step 7).

    Args:
        inst: ``Instances`` with ``gt_boxes`` and bool (G, h, w) ``gt_masks`` (as from
            :func:`gt_instances`).
        size: S.

    Returns:
        Instances: of size (S, S), same fields.
    """
    h, w = inst.image_size
    out = Instances((size, size))
    scale = torch.tensor([size / w, size / h, size / w, size / h])
    boxes = Boxes(inst.gt_boxes.tensor * scale)
    boxes.clip((size, size))
    out.gt_boxes = boxes
    for k, v in inst.get_fields().items():
        if k not in ("gt_boxes", "gt_masks"):
            out.set(k, v)
    masks = inst.gt_masks
    if len(inst):
        masks = F.interpolate(masks[None].to(torch.uint8), size=(size, size), mode="nearest")[0]
    else:
        masks = masks.new_zeros((0, size, size))
    out.gt_masks = masks.bool()
    return out


def _input_instances(record: Dict, size: Optional[int], min_size: float = 0.0) -> Instances:
    inst = gt_instances(record, min_size)
    return squash_instances(inst, size) if size else inst


# ------------------------------------------------------------------------------ Figure 3(a)
def gt_mob_ratios(dataset: DatasetLike, size: Optional[int] = None,
                  num_images: Optional[int] = None, min_size: float = 0.0,
                  return_classes: bool = False):
    """MOB ratio ``|M| / |B|`` of every non-crowd ground truth (paper Fig. 3a).

    Args:
        dataset: see :func:`get_dataset_dicts`.
        size: if given, GTs are first squashed to S x S (:func:`squash_instances`), as the
            network sees them; None uses the original annotation.
        num_images: use only the first images.
        min_size: drop GTs whose box is not wider and higher than this (original pixels).
        return_classes: also return each GT's class.

    Returns:
        ndarray: float64 (num_gt,) MOB ratios (and int64 (num_gt,) classes if asked). Values can
        exceed 1 slightly where the rasterised mask is larger than its float box.
    """
    mobs, classes = [], []
    for record in get_dataset_dicts(dataset, num_images):
        inst = _input_instances(record, size, min_size)
        if len(inst) == 0:
            continue
        mobs.append(mask_over_box(inst.gt_boxes.tensor.double(),
                                  integral_images(inst.gt_masks)).numpy())
        classes.append(inst.gt_classes.numpy())
    mobs = np.concatenate(mobs) if mobs else np.zeros((0,))
    if return_classes:
        return mobs, (np.concatenate(classes) if classes else np.zeros((0,), np.int64))
    return mobs


# --------------------------------------------------------------------------------- anchors
def _level_of(name: str) -> int:
    m = re.search(r"(\d+)$", name)
    if m is None:
        raise ValueError(f"cannot tell the level (stride 2**l) of feature '{name}'; expected a "
                         "name ending in its level, e.g. 'p3'")
    return int(m.group(1))


def feature_sizes(size: int, levels: Sequence[int]) -> List[int]:
    """Feature-map side of each level for an S x S input (SPEC 3).

    Every stride-2 layer (conv1 7/2/3, maxpool 3/2/1, the 3x3/2/1 convs and the P6/P7 convs) maps
    n to ``(n - 1) // 2 + 1``, so level l has side ``ceil`` applied l times: 550 gives 69, 35, 18,
    9, 5 for levels 3-7.
    """
    out = []
    for level in levels:
        n = int(size)
        for _ in range(int(level)):
            n = (n - 1) // 2 + 1
        out.append(n)
    return out


def anchors_for_size(cfg, size: Optional[int] = None) -> Boxes:
    """All anchors of a config for an S x S input, levels concatenated in the head's order.

    The anchor generator is built with Detectron2's ``build_anchor_generator`` from
    ``cfg.MODEL.ANCHOR_GENERATOR`` for the levels ``cfg.MODEL.YOLACT.IN_FEATURES`` (stride
    ``2**l`` for ``'pl'``) and run on feature maps of :func:`feature_sizes`.

    Args:
        cfg: a config with ``add_mayolact_config`` applied.
        size: S; default ``cfg.INPUT.YOLACT.SIZE``.

    Returns:
        Boxes: (A, 4) anchors.
    """
    size = int(size or cfg.INPUT.YOLACT.SIZE)
    levels = [_level_of(f) for f in cfg.MODEL.YOLACT.IN_FEATURES]
    shapes = [ShapeSpec(channels=1, stride=2 ** lv) for lv in levels]
    generator = build_anchor_generator(cfg, shapes)
    feats = [torch.zeros((1, 0, n, n)) for n in feature_sizes(size, levels)]
    return Boxes.cat(generator(feats))


# ------------------------------------------------------------------------------ Figure 3(c)
def _pairs_one_image(inst: Instances, anchors: Boxes) -> Dict[str, torch.Tensor]:
    gt = inst.gt_boxes
    if len(inst) == 0:
        z = torch.zeros((0, 0))
        return {"iou": z, "maiou": z, "mob": torch.zeros((0,))}
    ii = integral_images(inst.gt_masks)
    iou = pairwise_iou(gt, anchors)  # (G, A)
    maiou = pairwise_maiou(gt.tensor, anchors.tensor.to(gt.tensor.dtype), ii)  # (G, A)
    mob = mask_over_box(gt.tensor, ii)
    return {"iou": iou, "maiou": maiou, "mob": mob}


def iou_maiou_pairs(dataset: DatasetLike, cfg, num_images: Optional[int] = None,
                    size: Optional[int] = None, min_size: float = 0.0) -> Dict[str, np.ndarray]:
    """IoU and maIoU of every (GT, anchor) pair with IoU > 0 (paper Fig. 3c).

    GTs are squashed to S x S (S = ``size`` or ``cfg.INPUT.YOLACT.SIZE``) and compared with the
    config's anchors (:func:`anchors_for_size`).

    Args:
        dataset: see :func:`get_dataset_dicts`.
        cfg: config (anchors, S).
        num_images: use only the first images.
        size: overrides ``cfg.INPUT.YOLACT.SIZE``.
        min_size: drop GTs not wider and higher than this (original pixels).

    Returns:
        dict of ndarrays, each (P,): ``iou``, ``maiou`` (float32), ``gt_mob`` (MOB of the GT),
        ``image`` (index in the dataset list), ``gt`` (index among the image's non-crowd GTs),
        ``anchor`` (index in :func:`anchors_for_size`).
    """
    size = int(size or cfg.INPUT.YOLACT.SIZE)
    anchors = anchors_for_size(cfg, size)
    out = {k: [] for k in ("iou", "maiou", "gt_mob", "image", "gt", "anchor")}
    for i, record in enumerate(get_dataset_dicts(dataset, num_images)):
        inst = _input_instances(record, size, min_size)
        if len(inst) == 0:
            continue
        p = _pairs_one_image(inst, anchors)
        g, a = torch.nonzero(p["iou"] > 0, as_tuple=True)
        out["iou"].append(p["iou"][g, a].float().numpy())
        out["maiou"].append(p["maiou"][g, a].float().numpy())
        out["gt_mob"].append(p["mob"][g].float().numpy())
        out["image"].append(np.full(len(g), i, np.int64))
        out["gt"].append(g.numpy())
        out["anchor"].append(a.numpy())
    empty = {"iou": np.float32, "maiou": np.float32, "gt_mob": np.float32}
    return {k: (np.concatenate(v) if v else np.zeros((0,), empty.get(k, np.int64)))
            for k, v in out.items()}


# -------------------------------------------------------------------------------- Figure 1
def disagreement_examples(dataset: DatasetLike, cfg, num_images: Optional[int] = None,
                          size: Optional[int] = None, top_k: int = 1,
                          iou_threshold: Optional[float] = 0.5,
                          min_gap: float = 0.0) -> List[Dict]:
    """Per image, the anchors on which IoU and maIoU disagree most, in both directions (Fig. 1).

    * ``"maiou_higher"`` (paper Fig. 1, left): largest ``maIoU - IoU`` among pairs with
      IoU < ``iou_threshold``: the anchor covers much of the object, but IoU calls it negative.
    * ``"iou_higher"`` (Fig. 1, right): largest ``IoU - maIoU`` among pairs with
      IoU >= ``iou_threshold``: IoU calls it positive, but it covers little of the object.

    ``iou_threshold=None`` drops the IoU condition (largest gaps anywhere).

    Args:
        dataset: see :func:`get_dataset_dicts`.
        cfg: config (anchors and S).
        num_images: use only the first images.
        size: overrides ``cfg.INPUT.YOLACT.SIZE``.
        top_k: examples per image and direction.
        iou_threshold: see above.
        min_gap: only examples whose gap exceeds this.

    Returns:
        list[dict]: one per example, sorted by image, then kind, then gap (descending), with
        ``image`` (index), ``record`` (the dataset dict), ``kind``, ``gt`` (non-crowd GT index),
        ``gt_box`` and ``anchor_box`` (XYXY, original image pixels), ``anchor_box_input``
        (XYXY, S x S input pixels), ``anchor`` (anchor index), ``iou``, ``maiou``, ``gap``,
        ``gt_mob``, ``anchor_mob`` (anchor's MOB ratio w.r.t. the GT mask, at input size).
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    size = int(size or cfg.INPUT.YOLACT.SIZE)
    anchors = anchors_for_size(cfg, size)
    examples = []
    for i, record in enumerate(get_dataset_dicts(dataset, num_images)):
        orig = gt_instances(record)
        inst = squash_instances(orig, size)
        if len(inst) == 0:
            continue
        p = _pairs_one_image(inst, anchors)
        iou, maiou = p["iou"], p["maiou"].to(p["iou"].dtype)
        overlap = iou > 0
        below = overlap if iou_threshold is None else overlap & (iou < iou_threshold)
        above = overlap if iou_threshold is None else iou >= iou_threshold
        sx = float(record["width"]) / size
        sy = float(record["height"]) / size
        unscale = torch.tensor([sx, sy, sx, sy])
        for kind, gap, valid in (("maiou_higher", maiou - iou, below),
                                 ("iou_higher", iou - maiou, above)):
            gap = torch.where(valid, gap, torch.full_like(gap, -float("inf"))).flatten()
            k = min(top_k, int(valid.sum()))
            if k == 0:
                continue
            vals, flat = gap.topk(k)
            keep = vals > min_gap
            vals, flat = vals[keep], flat[keep]
            g, a = flat // iou.shape[1], flat % iou.shape[1]
            anc = anchors.tensor[a]
            a_mob = mask_fraction_in_boxes(anc.double(), integral_images(inst.gt_masks), g)
            for j in range(len(g)):  # at most top_k per image: tiny
                gj, aj = int(g[j]), int(a[j])
                examples.append({
                    "image": i, "record": record, "kind": kind, "gt": gj, "anchor": aj,
                    "gt_box": orig.gt_boxes.tensor[gj].tolist(),
                    "anchor_box": (anc[j] * unscale).tolist(),
                    "anchor_box_input": anc[j].tolist(),
                    "iou": float(iou[gj, aj]), "maiou": float(maiou[gj, aj]),
                    "gap": float(vals[j]), "gt_mob": float(p["mob"][gj]),
                    "anchor_mob": float(a_mob[j]),
                })
    return examples


# -------------------------------------------------------------------------------- Figure 2
def squash_batches(dataset: DatasetLike, size: int, batch_size: int = 1,
                   num_images: Optional[int] = None, image_format: str = "RGB",
                   min_size: float = 0.0) -> Iterable[List[Dict]]:
    """Model inputs with ground truths at S x S: the test-time squash resize, no augmentation.

    Yields lists of ``batch_size`` dicts with ``image`` (uint8 (3, S, S) in ``image_format``),
    ``height``/``width`` (original size), ``file_name`` and ``instances`` (``gt_boxes``,
    ``gt_classes``, bool ``gt_masks`` (G, S, S)).
    """
    import cv2  # local: only this helper reads images

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    batch = []
    for record in get_dataset_dicts(dataset, num_images):
        image = read_image(record["file_name"], format=image_format)
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
        if image.ndim == 2:
            image = image[:, :, None]
        batch.append({
            "image": torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "height": record["height"], "width": record["width"],
            "file_name": record["file_name"],
            "instances": _input_instances(record, size, min_size),
        })
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _images_of(model, batched_inputs: List[Dict]) -> torch.Tensor:
    if hasattr(model, "preprocess_image"):
        return model.preprocess_image(batched_inputs).tensor
    device = model.pixel_mean.device
    imgs = [(x["image"].to(device).float() - model.pixel_mean) / model.pixel_std
            for x in batched_inputs]
    return torch.stack(imgs)


def _gt_masks_tensor(inst: Instances, device) -> torch.Tensor:
    m = inst.gt_masks
    if hasattr(m, "tensor"):  # BitMasks
        m = m.tensor
    if not isinstance(m, torch.Tensor):
        raise ValueError(f"gt_masks must be a bool tensor or BitMasks, got {type(m).__name__}")
    return m.to(device).bool()


@torch.no_grad()
def per_anchor_losses(model, batched_inputs: List[Dict],
                      pos_iou: Tuple[float, float] = (0.5, 0.7),
                      neg_iou: Tuple[float, float] = (0.3, 0.5),
                      proto_in_feature: Optional[str] = None,
                      smooth_l1_beta: float = 1.0, crop_padding: int = 1,
                      ) -> Dict[str, np.ndarray]:
    """Per-anchor losses of a YOLACT model on one batch (unweighted, unnormalised).

    For each anchor, the GT of highest IoU decides: anchors with that IoU in
    ``[pos_iou[0], pos_iou[1]]`` are positives of that GT, those in ``[neg_iou[0], neg_iou[1])``
    negatives (background). Losses per anchor:

    * ``cls``: softmax cross entropy of the K+1 logits (target: GT class, or K for negatives);
    * ``box`` (positives): SmoothL1 (``smooth_l1_beta``) of predicted vs encoded GT deltas,
      summed over the 4 coordinates;
    * ``mask`` (positives): YOLACT's mask BCE for that anchor alone, i.e. the per-instance term of
      :func:`mayolact.losses.yolact_mask_loss` with weight 1: mean over the prototype grid of
      BCE-with-logits inside the (padded) GT-box crop, 100 for target pixels outside it, divided
      by the GT box's relative width and height.

    The model must provide ``backbone``, ``head`` (returning per-level lists of logits
    (N, A*(K+1), H, W), deltas (N, A*4, H, W), coefficients (N, A*k, H, W)),
    ``head_in_features``, ``anchor_generator``, ``box2box_transform``, ``protonet`` and
    ``preprocess_image`` (or ``pixel_mean``/``pixel_std``).

    Args:
        model: the YOLACT model (its mode is left unchanged; use ``model.eval()``).
        batched_inputs: list of N dicts with ``image`` (3, S, S) and ``instances`` (``gt_boxes``,
            ``gt_classes``, ``gt_masks`` as bool (G, S, S) or ``BitMasks``) in input pixels.
        pos_iou, neg_iou: IoU ranges of positives and negatives.
        proto_in_feature: the level the protonet reads; default ``model.proto_in_feature`` if it
            exists, else ``'p3'`` if present, else the first head level.
        smooth_l1_beta: SmoothL1 beta.
        crop_padding: mask crop padding, prototype pixels.

    Returns:
        dict of ndarrays: ``neg_cls``, ``neg_mob``, ``neg_iou`` (negatives); ``pos_cls``,
        ``pos_box``, ``pos_mask``, ``pos_mob``, ``pos_iou`` (positives). ``*_mob`` is the anchor's
        MOB ratio ``|round(Â) ∩ M| / |Â|`` w.r.t. the mask of its highest-IoU GT. Also the
        int64 ``neg_anchor``, ``pos_anchor`` (anchor index, levels concatenated), ``pos_gt`` (GT
        index) and ``neg_image``, ``pos_image`` (index of the image in the batch).
    """
    for x in batched_inputs:
        if "instances" not in x:
            raise ValueError("per_anchor_losses: every input needs ground-truth 'instances'")
    images = _images_of(model, batched_inputs)
    device = images.device
    features = model.backbone(images)
    head_feats = [features[f] for f in model.head_in_features]
    logits, deltas, coeffs = model.head(head_feats)
    if proto_in_feature is None:
        proto_in_feature = getattr(model, "proto_in_feature", None)
        if proto_in_feature is None:
            proto_in_feature = "p3" if "p3" in features else model.head_in_features[0]
    protos = model.protonet(features[proto_in_feature])  # (N, k, Hp, Wp)
    num_protos, hp, wp = protos.shape[1:]
    anchors = Boxes.cat(model.anchor_generator(head_feats))
    num_anchors = len(anchors)
    num_cls = logits[0].shape[1] // (deltas[0].shape[1] // 4)  # K + 1
    logits = torch.cat([permute_to_N_HWA_K(x, num_cls) for x in logits], dim=1)
    deltas = torch.cat([permute_to_N_HWA_K(x, 4) for x in deltas], dim=1)
    coeffs = torch.cat([permute_to_N_HWA_K(x, num_protos) for x in coeffs], dim=1)
    if logits.shape[1] != num_anchors:
        raise ValueError(f"per_anchor_losses: the head predicts for {logits.shape[1]} anchors but "
                         f"the anchor generator gives {num_anchors}")
    img_h, img_w = images.shape[-2:]
    out = {k: [] for k in ("neg_cls", "neg_mob", "neg_iou", "neg_anchor", "neg_image", "pos_cls",
                           "pos_box", "pos_mask", "pos_mob", "pos_iou", "pos_anchor", "pos_gt",
                           "pos_image")}
    arange = torch.arange(num_anchors, device=device)
    for i, x in enumerate(batched_inputs):
        inst = x["instances"].to(device)
        if len(inst) == 0:
            continue
        gt_boxes = inst.gt_boxes
        masks = _gt_masks_tensor(inst, device)
        if tuple(masks.shape[1:]) != (img_h, img_w):
            raise ValueError(f"per_anchor_losses: gt_masks of image {i} are {tuple(masks.shape)}, "
                             f"the input is {img_h}x{img_w}")
        iou = pairwise_iou(gt_boxes, anchors)  # (G, A)
        best, best_gt = iou.max(dim=0)
        pos = (best >= pos_iou[0]) & (best <= pos_iou[1])
        neg = (best >= neg_iou[0]) & (best < neg_iou[1])
        ii = integral_images(masks)
        mob = mask_fraction_in_boxes(anchors.tensor.double(), ii, best_gt).float()
        k = num_cls - 1
        if neg.any():
            labels = torch.full((int(neg.sum()),), k, dtype=torch.long, device=device)
            out["neg_cls"].append(F.cross_entropy(logits[i, neg].float(), labels, reduction="none"))
            out["neg_mob"].append(mob[neg])
            out["neg_iou"].append(best[neg])
            out["neg_anchor"].append(arange[neg])
            out["neg_image"].append(torch.full((int(neg.sum()),), i, device=device))
        if pos.any():
            g = best_gt[pos]
            labels = inst.gt_classes[g]
            out["pos_cls"].append(F.cross_entropy(logits[i, pos].float(), labels, reduction="none"))
            target = model.box2box_transform.get_deltas(anchors.tensor[pos], gt_boxes.tensor[g])
            diff = (deltas[i, pos].float() - target).abs()
            sl1 = torch.where(diff < smooth_l1_beta, 0.5 * diff ** 2 / max(smooth_l1_beta, 1e-12),
                              diff - 0.5 * smooth_l1_beta) if smooth_l1_beta > 0 else diff
            out["pos_box"].append(sl1.sum(dim=1))
            out["pos_mask"].append(_mask_losses(protos[i], coeffs[i, pos], masks, gt_boxes.tensor,
                                                g, (img_h, img_w), crop_padding))
            out["pos_mob"].append(mob[pos])
            out["pos_iou"].append(best[pos])
            out["pos_anchor"].append(arange[pos])
            out["pos_gt"].append(g)
            out["pos_image"].append(torch.full((len(g),), i, device=device))
    ints = ("neg_anchor", "neg_image", "pos_anchor", "pos_gt", "pos_image")
    return {k: (torch.cat(v).cpu().numpy().astype(np.int64 if k in ints else np.float32) if v
                else np.zeros((0,), np.int64 if k in ints else np.float32))
            for k, v in out.items()}


def _mask_losses(protos: torch.Tensor, coeffs: torch.Tensor, masks: torch.Tensor,
                 boxes: torch.Tensor, gt_idx: torch.Tensor, image_size: Tuple[int, int],
                 crop_padding: int) -> torch.Tensor:
    """Per-positive YOLACT mask loss, weight 1 (see :func:`per_anchor_losses`); (n,)."""
    k, hp, wp = protos.shape
    img_h, img_w = int(image_size[0]), int(image_size[1])
    targets = F.interpolate(masks.float()[None], size=(hp, wp), mode="bilinear",
                            align_corners=False)[0] > 0.5  # (G, Hp, Wp)
    targets = targets[gt_idx].float()
    inst_boxes = boxes[gt_idx].float()
    scale = inst_boxes.new_tensor([wp / img_w, hp / img_h, wp / img_w, hp / img_h])
    inside = box_crop_region(inst_boxes * scale, hp, wp, crop_padding)
    rel_w = ((inst_boxes[:, 2] - inst_boxes[:, 0]) / img_w).clamp(min=1.0 / img_w)
    rel_h = ((inst_boxes[:, 3] - inst_boxes[:, 1]) / img_h).clamp(min=1.0 / img_h)
    logits = torch.einsum("khw,nk->nhw", protos.float(), coeffs.float())
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    pix = torch.where(inside, bce, targets * 100.0)
    return pix.mean(dim=(1, 2)) / rel_w / rel_h


def bin_statistics(values: np.ndarray, keys: np.ndarray, bins: Sequence[float]
                   ) -> Dict[str, np.ndarray]:
    """Mean, standard deviation and count of ``values`` binned by ``keys``.

    Bins are ``[b_j, b_{j+1})``, the last one closed; keys outside ``[b_0, b_-1]`` are ignored.

    Returns:
        dict: ``mean``, ``std`` (population std; NaN for empty bins) and ``count``, each
        (len(bins) - 1,).
    """
    values, keys = np.asarray(values, np.float64), np.asarray(keys, np.float64)
    bins = np.asarray(bins, np.float64)
    if bins.ndim != 1 or len(bins) < 2 or np.any(np.diff(bins) <= 0):
        raise ValueError(f"bins must be increasing edges, got {bins}")
    if values.shape != keys.shape:
        raise ValueError(f"values {values.shape} and keys {keys.shape} differ in shape")
    idx = np.searchsorted(bins, keys, side="right") - 1
    idx[keys == bins[-1]] = len(bins) - 2
    ok = (idx >= 0) & (idx < len(bins) - 1)
    nb = len(bins) - 1
    count = np.bincount(idx[ok], minlength=nb)
    s = np.bincount(idx[ok], weights=values[ok], minlength=nb)
    s2 = np.bincount(idx[ok], weights=values[ok] ** 2, minlength=nb)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s / count
        std = np.sqrt(np.maximum(s2 / count - mean ** 2, 0.0))
    return {"mean": mean, "std": std, "count": count}


def losses_by_mob(model, data_loader: Iterable[List[Dict]], bins: Sequence[float] = None,
                  max_batches: Optional[int] = None, **kwargs) -> Dict:
    """Fig. 2: per-anchor losses of a trained model, binned by the anchor's MOB ratio.

    Args:
        model: see :func:`per_anchor_losses`; put it in eval mode first.
        data_loader: iterable of batches (lists of dicts with ``image`` and ``instances`` at the
            input size), e.g. :func:`squash_batches`.
        bins: MOB bin edges; default 10 bins over [0, 1].
        max_batches: stop after this many batches.
        **kwargs: passed to :func:`per_anchor_losses` (IoU ranges, ...).

    Returns:
        dict: ``bins``; for each of ``neg_cls``, ``pos_cls``, ``pos_box``, ``pos_mask`` a dict
        of ``mean``, ``std``, ``count`` per bin (:func:`bin_statistics`); and ``raw``, the
        concatenated per-anchor arrays of :func:`per_anchor_losses` (image indices count over
        the whole loader).
    """
    bins = np.linspace(0.0, 1.0, 11) if bins is None else np.asarray(bins, np.float64)
    raw, seen = None, 0
    for b, batch in enumerate(data_loader):
        if max_batches is not None and b >= max_batches:
            break
        r = per_anchor_losses(model, batch, **kwargs)
        r["neg_image"] += seen  # image indices over the whole loader
        r["pos_image"] += seen
        seen += len(batch)
        raw = r if raw is None else {k: np.concatenate([raw[k], r[k]]) for k in raw}
    if raw is None:
        raise ValueError("losses_by_mob: the data loader gave no batch")
    result = {"bins": bins, "raw": raw}
    for name in ("neg_cls", "pos_cls", "pos_box", "pos_mask"):
        keys = raw["neg_mob"] if name.startswith("neg") else raw["pos_mob"]
        result[name] = bin_statistics(raw[name], keys, bins)
    return result
