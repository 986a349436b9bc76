"""Deterministic mode (``SOLVER.YOLACT.DETERMINISTIC``): runs of one seed that reproduce exactly.

Detectron2 seeds Python's, NumPy's and torch's global generators from ``SEED`` (+ rank) in
``default_setup``, and its data loader draws the sampler's seed and the workers' seeds from those
generators when it is built. A run of one config is then repeatable, but what the data stream gets
depends on how many random numbers were drawn before the loader was built (the model's
initialisation draws them): two models that differ only in their heads (the fixed-IoU row has
three anchors per location, ATSS one) see other images in another order, with other augmentations.
The deterministic mode turns the habits into one switch:

* the RNGs are seeded as Detectron2 does (``SEED`` must be >= 0);
* the training data stream is seeded from ``SEED`` alone (:func:`data_stream_seeds`): the sampler's
  order, and the generator the ``DataLoader`` draws its workers' seeds from, so every model of a
  given seed sees the same images, in the same order, with the same augmentation draws;
* ``torch.use_deterministic_algorithms(True, warn_only=True)``: kernels with a deterministic
  variant use it (on CPU the accumulating ``index_put_`` of advanced-indexing backward passes; on
  CUDA scatter / index_add / convolutions), and an op without one logs torch's warning naming it
  instead of stopping a long run at its first evaluation; cuDNN deterministic, its benchmark off
  (Detectron2's ``CUDNN_BENCHMARK: False``), and cuBLAS's workspace set as CUDA requires.

What it cannot pin: the number of intra-op threads (``OMP_NUM_THREADS`` / ``torch.set_num_threads``;
a reduction split over 2 threads rounds differently from one over 1), the CPU's instruction set
(oneDNN picks kernels by it), the library versions and, with several processes, the world size.
Runs agree bit for bit when these are equal; the mode logs the thread count to compare.
"""
import logging
import os
from typing import Tuple

import numpy as np

__all__ = ["configure_determinism", "data_stream_seeds", "is_deterministic"]

logger = logging.getLogger(__name__)


def is_deterministic(cfg) -> bool:
    """Whether ``cfg`` asks for the deterministic mode (``SOLVER.YOLACT.DETERMINISTIC``)."""
    return bool(cfg.SOLVER.YOLACT.DETERMINISTIC)


def _check(cfg) -> None:
    if cfg.SEED < 0:
        raise ValueError(
            f"SOLVER.YOLACT.DETERMINISTIC needs a fixed SEED (>= 0), got SEED {cfg.SEED}")
    if cfg.CUDNN_BENCHMARK:
        raise ValueError(
            "SOLVER.YOLACT.DETERMINISTIC: CUDNN_BENCHMARK True picks convolution algorithms by "
            "timing them; set CUDNN_BENCHMARK False")


def configure_determinism(cfg) -> bool:
    """Switch torch to its deterministic kernels when ``cfg`` asks for it (after the RNGs were
    seeded, e.g. by Detectron2's ``default_setup``).

    Returns:
        whether the mode is on.

    Raises:
        ValueError: the mode with ``SEED`` < 0 or ``CUDNN_BENCHMARK`` True.
    """
    if not is_deterministic(cfg):
        return False
    _check(cfg)
    import torch

    if torch.device(cfg.MODEL.DEVICE).type == "cuda":
        # cuBLAS reproduces only with a fixed workspace (torch raises otherwise); read when
        # cuBLAS starts, so it must be set before the first matmul on the device.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)
    logger.info(
        "Deterministic mode: SEED %d, data stream seeded from SEED, deterministic kernels; "
        "bit-for-bit only with the same thread count (now %d), CPU type, library versions and "
        "world size", cfg.SEED, torch.get_num_threads())
    return True


def data_stream_seeds(cfg, rank: int = 0) -> Tuple[int, int]:
    """``(sampler_seed, loader_seed)`` of the deterministic mode, from ``SEED`` alone.

    The sampler's seed is the same on every rank (ranks share one stream, each takes its part);
    the loader's seed, from which the ``DataLoader`` draws its workers' seeds (and so their
    augmentations), differs per rank as Detectron2's ``SEED + rank`` does.

    Raises:
        ValueError: the mode is off or ``SEED`` < 0.
    """
    if not is_deterministic(cfg):
        raise ValueError("data_stream_seeds: SOLVER.YOLACT.DETERMINISTIC is off")
    _check(cfg)
    sampler = np.random.SeedSequence([int(cfg.SEED), 0]).generate_state(1)[0]
    loader = np.random.SeedSequence([int(cfg.SEED), 1, int(rank)]).generate_state(1)[0]
    return int(sampler) % 2**31, int(loader) % 2**31
