"""The numbers behind the paper's figures, measured with the training code itself.

* :mod:`~mayolact.analysis.inputs`: dataset dicts; ground truths and model inputs through YOLACT's
  dataset mapper (random augmentations off);
* :mod:`~mayolact.analysis.overlaps`: Figures 1 and 3 (MOB ratios, IoU vs maIoU, disagreements)
  on the config's anchors (:func:`mayolact.modeling.anchor_generator.anchors_for_input`);
* :mod:`~mayolact.analysis.losses`: Figure 2, the model's own per-anchor training losses
  (:meth:`mayolact.modeling.meta_arch.yolact.YOLACT.per_anchor_losses`) binned by MOB ratio;
* :mod:`~mayolact.analysis.plots`: matplotlib drawing and atomic :func:`save_figure`;
* :mod:`~mayolact.analysis.figures`: the sub-commands of ``tools/plot_figures.py``;
* :mod:`~mayolact.analysis.trained_like`: a seeded random model that behaves like a trained one
  (the inference benchmark's matched load, the export tests' models).
"""
import importlib

#: Public name -> the submodule that defines it; loaded on first use (PEP 562), so that
#: ``tools/plot_figures.py --help`` answers before torch and Detectron2 are imported.
_EXPORTS = {
    "DatasetLike": "inputs",
    "figure_mapper": "inputs",
    "get_dataset_dicts": "inputs",
    "mapped_batches": "inputs",
    "mapped_inputs": "inputs",
    "original_gts": "inputs",
    "bin_statistics": "losses",
    "iou_band_matcher": "losses",
    "losses_by_mob": "losses",
    "per_anchor_losses": "losses",
    "disagreement_examples": "overlaps",
    "gt_mob_ratios": "overlaps",
    "iou_maiou_pairs": "overlaps",
    "save_figure": "plots",
    "trained_like_predictor": "trained_like",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    """Load a public name on first use."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
