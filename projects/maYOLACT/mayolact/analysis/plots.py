"""Drawing the paper's figures with matplotlib (imported lazily: only the figures need it)."""
from typing import Dict, List, Sequence, Tuple

import numpy as np

from mayolact.utils.file_io import atomic_path

__all__ = [
    "save_figure",
    "plot_mob_histogram",
    "plot_iou_vs_maiou",
    "plot_anchor_disagreement",
    "plot_losses_by_mob",
    "FIGURE2_PANELS",
    "FIGURE1_KINDS",
]

#: Figure 2's panels: (key of :func:`mayolact.analysis.losses.losses_by_mob`, title).
FIGURE2_PANELS = [
    ("neg_cls", "negatives: classification"),
    ("pos_cls", "positives: classification"),
    ("pos_mask", "positives: segmentation"),
    ("pos_box", "positives: regression"),
]
#: Figure 1's columns: (kind of :func:`mayolact.analysis.overlaps.disagreement_examples`, title).
FIGURE1_KINDS = [("maiou_higher", "IoU low, maIoU high"), ("iou_higher", "IoU high, maIoU low")]


def _pyplot():
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str, dpi: int = 120, tight: bool = True) -> str:
    """Lay out (``tight_layout``), write a matplotlib figure atomically and close it.

    The folder is created if needed and a crash never leaves a half-written image
    (:func:`mayolact.utils.file_io.atomic_path`). The figure is closed whether or not writing
    succeeded.

    Args:
        fig: a ``matplotlib.figure.Figure``.
        path: the output file; its extension gives the format (``.png`` when there is none).
        dpi: resolution.
        tight: call ``fig.tight_layout()`` first.

    Returns:
        str: ``path``.
    """
    import os

    try:
        if tight:
            fig.tight_layout()
        fmt = os.path.splitext(path)[1][1:].lower() or "png"
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                fig.savefig(f, dpi=dpi, format=fmt)
    finally:
        _pyplot().close(fig)
    return path


def plot_mob_histogram(ratios: Dict[str, np.ndarray], edges: np.ndarray, output: str) -> str:
    """Figure 3a: one panel per dataset, % of GTs per MOB bin (ratios clipped to [0, 1])."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(ratios), figsize=(4.5 * len(ratios), 3.6), squeeze=False)
    for ax, (name, r) in zip(axes[0], ratios.items()):
        hist = np.histogram(np.clip(r, 0.0, 1.0), bins=edges)[0]
        ax.bar(edges[:-1], 100.0 * hist / max(len(r), 1), width=np.diff(edges), align="edge",
               color="#4472c4", edgecolor="black")
        ax.axvline(0.5, color="red", linestyle="--", linewidth=1)
        below = 100.0 * (r < 0.5).mean() if len(r) else float("nan")
        ax.set_title(f"{name}\n{len(r)} GTs, {below:.1f}% with MOB < 0.5", fontsize=9)
        ax.set_xlabel("MOB ratio |M| / |B|")
        ax.set_ylabel("% of ground truths")
        ax.set_xlim(0, 1)
    return save_figure(fig, output, dpi=120)


def plot_iou_vs_maiou(iou: np.ndarray, maiou: np.ndarray, bins: int, threshold: float,
                      title: str, output: str) -> str:
    """Figure 3c: (GT, anchor) pair counts over IoU x maIoU, log colour scale."""
    from matplotlib.colors import LogNorm

    plt = _pyplot()
    edges = np.linspace(0, 1, bins + 1)
    hist, _, _ = np.histogram2d(iou, np.clip(maiou, 0, 1), bins=[edges, edges])
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    vmax = max(float(hist.max()), 1.0)
    im = ax.pcolormesh(edges, edges, np.ma.masked_equal(hist.T, 0),
                       norm=LogNorm(vmin=1, vmax=max(vmax, 1.0 + 1e-6)), cmap="viridis")
    fig.colorbar(im, ax=ax, label="number of (GT, anchor) pairs")
    ax.plot([0, 1], [0, 1], color="white", linewidth=0.8, linestyle="--")
    ax.axvline(threshold, color="red", linewidth=0.8)
    ax.axhline(threshold, color="red", linewidth=0.8)
    ax.set_xlabel("IoU")
    ax.set_ylabel("maIoU")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    return save_figure(fig, output, dpi=120)


def plot_anchor_disagreement(shown: Dict[str, List[Dict]],
                             drawings: Dict[Tuple[str, int], np.ndarray], output: str) -> str:
    """Figure 1: one column per kind of :data:`FIGURE1_KINDS`, one drawn example per row."""
    plt = _pyplot()
    rows = max(1, max(len(v) for v in shown.values()))
    fig, axes = plt.subplots(rows, len(FIGURE1_KINDS), figsize=(5 * len(FIGURE1_KINDS), 4 * rows),
                             squeeze=False)
    for c, (kind, title) in enumerate(FIGURE1_KINDS):
        axes[0, c].set_title(title, fontsize=10)
        for r in range(rows):
            axes[r, c].axis("off")
            if (kind, r) in drawings:
                axes[r, c].imshow(drawings[kind, r])
    return save_figure(fig, output, dpi=110)


def plot_losses_by_mob(result: Dict, output: str, title: str = "",
                       panels: Sequence[Tuple[str, str]] = FIGURE2_PANELS) -> str:
    """Figure 2: one panel per loss (mean with std bars per MOB bin) and one with the counts."""
    plt = _pyplot()
    bins = result["bins"]
    centers = 0.5 * (bins[:-1] + bins[1:])
    width = np.diff(bins)
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(3.3 * (len(panels) + 1), 3.2))
    for ax, (name, label) in zip(axes, panels):
        s = result[name]
        ok = s["count"] > 0
        ax.bar(centers[ok], s["mean"][ok], width=width[ok] * 0.9, color="#4472c4")
        ax.errorbar(centers[ok], s["mean"][ok], yerr=s["std"][ok], fmt="none", ecolor="red",
                    capsize=2)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("MOB ratio of the anchor")
        ax.set_xlim(bins[0], bins[-1])
    axes[0].set_ylabel("loss")
    ax = axes[-1]
    ax.bar(centers - width * 0.2, result["neg_cls"]["count"], width=width * 0.4, label="negatives")
    ax.bar(centers + width * 0.2, result["pos_cls"]["count"], width=width * 0.4, label="positives")
    ax.set_yscale("symlog")
    ax.set_title("number of anchors", fontsize=9)
    ax.set_xlabel("MOB ratio of the anchor")
    ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, output, dpi=120)
