"""Figures 1 and 3 of the paper: MOB ratios of the ground truths, IoU vs maIoU of (GT, anchor) pairs
and the anchors on which the two disagree most.

Definitions (paper Sec. 3.1):

* MOB ratio of a GT: ``|M| / (|B| + 1e-6)`` (:func:`mayolact.structures.maiou.mask_over_box`);
* MOB ratio of an anchor Â w.r.t. a mask M: ``|round(Â) ∩ M| / |Â|`` (Definition 1,
  :func:`mayolact.structures.maiou.mask_fraction_in_boxes`);
* IoU: Detectron2's ``pairwise_iou``; maIoU: :func:`mayolact.structures.maiou.pairwise_maiou`.

The anchors are a config's (:func:`mayolact.modeling.anchor_generator.anchors_for_input`) and the
ground truths at the input size come through YOLACT's mapper (:mod:`mayolact.analysis.inputs`).

Shape shorthand: G: ground truths of one image; A: anchors (all levels); P: (GT, anchor) pairs.
"""
from typing import Dict, List, Optional

import numpy as np
import torch
from detectron2.structures import Boxes, Instances, pairwise_iou

from mayolact.analysis.inputs import DatasetLike, get_dataset_dicts, mapped_inputs, original_gts
from mayolact.modeling.anchor_generator import anchors_for_input
from mayolact.structures.integral_image import integral_images
from mayolact.structures.maiou import mask_fraction_in_boxes, mask_over_box, pairwise_maiou

__all__ = ["gt_mob_ratios", "iou_maiou_pairs", "disagreement_examples"]


def gt_mob_ratios(dataset: DatasetLike, size: Optional[int] = None,
                  num_images: Optional[int] = None, min_size: float = 0.0,
                  return_classes: bool = False):
    """MOB ratio ``|M| / |B|`` of every non-crowd ground truth (paper Fig. 3a).

    Args:
        dataset: see :func:`~mayolact.analysis.inputs.get_dataset_dicts`.
        size: if given, the GTs the network sees at S x S (through the mapper, which reads the
            images); None uses the annotations at their original resolution.
        num_images: use only the first images.
        min_size: drop GTs whose box is not wider and higher than this (original pixels).
        return_classes: also return each GT's class.

    Returns:
        ndarray: float64 (num_gt,) MOB ratios (and int64 (num_gt,) classes if asked). Values can
        exceed 1 slightly where the rasterised mask is larger than its float box.
    """
    mobs, classes = [], []
    if size:
        for _, _, mapped in mapped_inputs(dataset, size, num_images, min_size):
            inst = mapped["instances"]
            mobs.append(mask_over_box(inst.gt_boxes.tensor.double(),
                                      inst.gt_integral_images).numpy())
            classes.append(inst.gt_classes.numpy())
    else:
        for record in get_dataset_dicts(dataset, num_images):
            boxes, cls, masks = original_gts(record, min_size)
            if len(boxes) == 0:
                continue
            mobs.append(mask_over_box(torch.from_numpy(boxes).double(),
                                      integral_images(torch.from_numpy(masks))).numpy())
            classes.append(cls)
    mobs = np.concatenate(mobs) if mobs else np.zeros((0,))
    if return_classes:
        return mobs, (np.concatenate(classes) if classes else np.zeros((0,), np.int64))
    return mobs


def _pairs_one_image(inst: Instances, anchors: Boxes) -> Dict[str, torch.Tensor]:
    """IoU and maIoU (G, A) and the GTs' MOB (G,) of one mapped image."""
    gt = inst.gt_boxes
    ii = inst.gt_integral_images
    iou = pairwise_iou(gt, anchors)
    maiou = pairwise_maiou(gt.tensor, anchors.tensor.to(gt.tensor.dtype), ii)
    return {"iou": iou, "maiou": maiou, "mob": mask_over_box(gt.tensor, ii)}


def iou_maiou_pairs(dataset: DatasetLike, cfg, num_images: Optional[int] = None,
                    size: Optional[int] = None, min_size: float = 0.0) -> Dict[str, np.ndarray]:
    """IoU and maIoU of every (GT, anchor) pair with IoU > 0 (paper Fig. 3c).

    Args:
        dataset: see :func:`~mayolact.analysis.inputs.get_dataset_dicts`.
        cfg: config (its anchors; S = ``INPUT.YOLACT.SIZE``).
        num_images: use only the first images.
        size: overrides ``cfg.INPUT.YOLACT.SIZE``.
        min_size: drop GTs not wider and higher than this (original pixels).

    Returns:
        dict of ndarrays, each (P,): ``iou``, ``maiou`` (float32), ``gt_mob`` (MOB of the GT),
        ``image`` (index in the dataset list), ``gt`` (index among the image's mapped GTs, i.e.
        its non-crowd annotations that the mapper keeps, in order), ``anchor`` (index in
        ``anchors_for_input``, levels concatenated).
    """
    size = int(size or cfg.INPUT.YOLACT.SIZE)
    anchors = Boxes.cat(anchors_for_input(cfg, size))
    out = {k: [] for k in ("iou", "maiou", "gt_mob", "image", "gt", "anchor")}
    for i, _, mapped in mapped_inputs(dataset, size, num_images, min_size):
        p = _pairs_one_image(mapped["instances"], anchors)
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
        dataset: see :func:`~mayolact.analysis.inputs.get_dataset_dicts`.
        cfg: config (anchors and S).
        num_images: use only the first images.
        size: overrides ``cfg.INPUT.YOLACT.SIZE``.
        top_k: examples per image and direction.
        iou_threshold: see above.
        min_gap: only examples whose gap exceeds this.

    Returns:
        list[dict]: one per example, by image, then kind, then gap (descending), with ``image``
        (index), ``record`` (the dataset dict), ``size`` (S), ``kind``, ``gt`` (mapped GT
        index, as in :func:`iou_maiou_pairs`), ``gt_box`` and ``anchor_box`` (XYXY, S x S input
        pixels), ``anchor`` (anchor index), ``iou``, ``maiou``, ``gap``, ``gt_mob``,
        ``anchor_mob`` (the anchor's MOB ratio w.r.t. the GT mask).
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    size = int(size or cfg.INPUT.YOLACT.SIZE)
    anchors = Boxes.cat(anchors_for_input(cfg, size))
    examples = []
    for i, record, mapped in mapped_inputs(dataset, size, num_images):
        inst = mapped["instances"]
        p = _pairs_one_image(inst, anchors)
        iou, maiou = p["iou"], p["maiou"].to(p["iou"].dtype)
        overlap = iou > 0
        below = overlap if iou_threshold is None else overlap & (iou < iou_threshold)
        above = overlap if iou_threshold is None else iou >= iou_threshold
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
            a_mob = mask_fraction_in_boxes(anc.double(), inst.gt_integral_images, g)
            for j in range(len(g)):  # at most top_k per image: tiny
                gj, aj = int(g[j]), int(a[j])
                examples.append({
                    "image": i, "record": record, "size": size, "kind": kind, "gt": gj,
                    "anchor": aj, "gt_box": inst.gt_boxes.tensor[gj].tolist(),
                    "anchor_box": anc[j].tolist(),
                    "iou": float(iou[gj, aj]), "maiou": float(maiou[gj, aj]),
                    "gap": float(vals[j]), "gt_mob": float(p["mob"][gj]),
                    "anchor_mob": float(a_mob[j]),
                })
    return examples
