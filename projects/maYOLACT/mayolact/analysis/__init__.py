"""The numbers behind the paper's figures, measured with the training code itself.

* :mod:`~mayolact.analysis.inputs`: dataset dicts; ground truths and model inputs through YOLACT's
  dataset mapper (random augmentations off);
* :mod:`~mayolact.analysis.overlaps`: Figures 1 and 3 (MOB ratios, IoU vs maIoU, disagreements)
  on the config's anchors (:func:`mayolact.anchor_generator.anchors_for_input`);
* :mod:`~mayolact.analysis.losses`: Figure 2, the model's own per-anchor training losses
  (:meth:`mayolact.meta_arch.YOLACT.per_anchor_losses`) binned by MOB ratio;
* :mod:`~mayolact.analysis.plots`: matplotlib drawing and atomic :func:`save_figure`;
* :mod:`~mayolact.analysis.figures`: the sub-commands of ``tools/plot_figures.py``.
"""
from mayolact.analysis.inputs import (
    DatasetLike,
    figure_mapper,
    get_dataset_dicts,
    mapped_batches,
    mapped_inputs,
    original_gts,
)
from mayolact.analysis.losses import (
    bin_statistics,
    iou_band_matcher,
    losses_by_mob,
    per_anchor_losses,
)
from mayolact.analysis.overlaps import disagreement_examples, gt_mob_ratios, iou_maiou_pairs
from mayolact.analysis.plots import save_figure

__all__ = [
    "DatasetLike",
    "figure_mapper",
    "get_dataset_dicts",
    "mapped_batches",
    "mapped_inputs",
    "original_gts",
    "bin_statistics",
    "iou_band_matcher",
    "losses_by_mob",
    "per_anchor_losses",
    "disagreement_examples",
    "gt_mob_ratios",
    "iou_maiou_pairs",
    "save_figure",
]
