"""Figure 2 of the paper: the training losses of anchors with similar IoUs, by their MOB ratio.

The losses are the model's own: :meth:`mayolact.modeling.meta_arch.yolact.YOLACT.per_anchor_losses`
runs the training forward and loss functions without reduction; only the labelling differs.
The figure labels each anchor by the IoU of its best GT (:func:`iou_band_matcher`, a
:class:`~mayolact.modeling.matchers.FixedIoUMatcher` with the figure's bands), so that anchors of
one IoU band can be compared; passing the model's own matcher gives the anchors training uses.

Shape shorthand: N: images of a batch; R: anchors of one image (all levels).
"""
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.structures import Boxes, pairwise_iou

from mayolact.modeling.matchers import FixedIoUMatcher
from mayolact.structures.maiou import mask_fraction_in_boxes

__all__ = ["iou_band_matcher", "per_anchor_losses", "losses_by_mob", "bin_statistics"]

_KEYS = ("neg_cls", "neg_ohem", "neg_mob", "neg_iou", "neg_anchor", "neg_image", "pos_cls",
         "pos_box", "pos_mask", "pos_mob", "pos_iou", "pos_anchor", "pos_gt", "pos_image")
_INT_KEYS = ("neg_anchor", "neg_image", "pos_anchor", "pos_gt", "pos_image")


def iou_band_matcher(pos_iou: Tuple[float, float] = (0.5, 0.7),
                     neg_iou: Tuple[float, float] = (0.3, 0.5)) -> FixedIoUMatcher:
    """Figure 2's labelling: each anchor's best-IoU GT decides (no low-quality matches).

    Positive when that IoU is in ``[pos_iou[0], pos_iou[1]]`` (closed), negative in
    ``[neg_iou[0], neg_iou[1])``, ignored otherwise.

    Raises:
        ValueError: bands that are not ordered ``0 <= n0 <= n1 <= p0 <= p1 <= 1``.
    """
    (n0, n1), (p0, p1) = neg_iou, pos_iou
    if not 0.0 <= n0 <= n1 <= p0 <= p1 <= 1.0:
        raise ValueError(f"IoU bands must satisfy 0 <= neg[0] <= neg[1] <= pos[0] <= pos[1] <= 1, "
                         f"got neg {tuple(neg_iou)}, pos {tuple(pos_iou)}")
    # The matcher's intervals are half-open [lo, hi): the next float32 above p1 closes the band
    # (IoUs are float32).
    above = float(np.nextafter(np.float32(p1), np.float32(np.inf)))
    return FixedIoUMatcher(thresholds=[n0, n1, p0, above], labels=[-1, 0, -1, 1, -1],
                           allow_low_quality_matches=False)


@torch.no_grad()
def per_anchor_losses(model, batched_inputs: List[Dict],
                      pos_iou: Tuple[float, float] = (0.5, 0.7),
                      neg_iou: Tuple[float, float] = (0.3, 0.5),
                      anchor_matcher=None) -> Dict[str, np.ndarray]:
    """Per-anchor training losses of a YOLACT model on one batch (unweighted, unnormalised).

    Losses per anchor (:meth:`~mayolact.modeling.meta_arch.yolact.YOLACT.per_anchor_losses`):

    * ``cls``: softmax cross entropy of the K+1 logits (target: the GT's class, or background);
    * ``box`` (positives): SmoothL1 of the predicted vs the encoded GT deltas, summed over the 4;
    * ``mask`` (positives): YOLACT's mask loss of that anchor alone, weight 1.

    Args:
        model: a :class:`~mayolact.modeling.meta_arch.yolact.YOLACT` (its mode is left as it is;
            use eval mode).
        batched_inputs: N training inputs (``image``, ``instances``), e.g. of
            :func:`~mayolact.analysis.inputs.mapped_batches`.
        pos_iou, neg_iou: the IoU bands of :func:`iou_band_matcher`.
        anchor_matcher: labels the anchors instead (e.g. ``model.anchor_matcher``: the training
            labels); the bands are then unused.

    Returns:
        dict of ndarrays: ``neg_cls``, ``neg_mob``, ``neg_iou``, ``neg_ohem`` (bool: OHEM would
        train on it) for the negatives; ``pos_cls``, ``pos_box``, ``pos_mask``, ``pos_mob``,
        ``pos_iou`` for the positives. ``*_mob`` is the anchor's MOB ratio
        ``|round(Â) ∩ M| / |Â|`` w.r.t. the mask of its highest-IoU GT and ``*_iou`` that IoU.
        Also the int64 ``neg_anchor``, ``pos_anchor`` (anchor index, levels concatenated),
        ``pos_gt`` (matched GT) and ``neg_image``, ``pos_image`` (image index in the batch).
    """
    for x in batched_inputs:
        if "instances" not in x:
            raise ValueError("per_anchor_losses: every input needs ground-truth 'instances'")
    if anchor_matcher is None:
        anchor_matcher = iou_band_matcher(pos_iou, neg_iou)
    terms = model.per_anchor_losses(batched_inputs, anchor_matcher=anchor_matcher)
    anchors = terms["anchors"]
    labels = terms["labels"]
    num_classes = model.num_classes
    out = {k: [] for k in _KEYS}
    for i, x in enumerate(batched_inputs):
        inst = x["instances"].to(anchors.device)
        if len(inst) == 0:
            continue
        iou, best_gt = pairwise_iou(inst.gt_boxes, Boxes(anchors)).max(dim=0)  # (R,)
        mob = mask_fraction_in_boxes(anchors.double(), inst.gt_integral_images, best_gt).float()
        arange = torch.arange(len(anchors), device=anchors.device)
        neg = labels[i] == num_classes
        pos = (labels[i] >= 0) & (labels[i] < num_classes)
        for prefix, sel in (("neg", neg), ("pos", pos)):
            out[f"{prefix}_cls"].append(terms["loss_cls"][i, sel])
            out[f"{prefix}_mob"].append(mob[sel])
            out[f"{prefix}_iou"].append(iou[sel])
            out[f"{prefix}_anchor"].append(arange[sel])
            out[f"{prefix}_image"].append(torch.full((int(sel.sum()),), i, device=anchors.device))
        out["neg_ohem"].append(terms["cls_selected"][i, neg])
        out["pos_box"].append(terms["loss_box_reg"][i, pos])
        out["pos_mask"].append(terms["loss_mask"][i, pos])
        out["pos_gt"].append(terms["matched_idxs"][i, pos])

    def as_array(key, values):
        dtype = np.int64 if key in _INT_KEYS else (bool if key == "neg_ohem" else np.float32)
        if not values:
            return np.zeros((0,), dtype)
        return torch.cat(values).cpu().numpy().astype(dtype)

    return {k: as_array(k, v) for k, v in out.items()}


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
        data_loader: iterable of batches of training inputs at the input size, e.g.
            :func:`~mayolact.analysis.inputs.mapped_batches`.
        bins: MOB bin edges; default 10 bins over [0, 1].
        max_batches: stop after this many batches.
        **kwargs: passed to :func:`per_anchor_losses` (IoU bands, ...).

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
