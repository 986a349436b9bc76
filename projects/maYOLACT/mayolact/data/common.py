"""The training dataset: Detectron2's ``MapDataset`` with one seed per draw.

Every draw of :class:`YOLACTMapDataset` seeds numpy's global RNG (which the augmentations of
:mod:`mayolact.data.augmentation` draw from) with a seed of its own, taken from a generator
seeded once per process from the global RNG (so from ``SEED``, the rank and the data-loader
worker, as Detectron2 seeds them). A draw is therefore replayed exactly by
:func:`replay_sample` with its dataset index and that seed, which is what an escaping error
names (:class:`DataError`): ``tools/check_dataset.py --replay INDEX:SEED`` runs it again.

When the mapper returns None (no ground truth left: none larger than
``INPUT.YOLACT.MIN_GT_SIZE``, or the crop kept only crowd centres), another image is drawn, as
Detectron2's ``MapDataset`` does (a random one among those that have not failed), with the next
seed; ``INPUT.YOLACT.MAX_RESAMPLE`` draws in a row without a training input are an error. This
is the one resampling mechanism of the project: the mapper only returns None.
"""
import logging
import os
from typing import Callable, Dict, Optional, Sequence

import numpy as np
from detectron2.data.common import MapDataset

__all__ = ["DataError", "YOLACTMapDataset", "replay_sample"]

logger = logging.getLogger(__name__)


class DataError(RuntimeError):
    """A training image that could not be mapped; the message names the image, its dataset
    index and the seed that replays the draw."""


def replay_sample(dataset: Sequence[Dict], map_func: Callable, index: int, seed: int):
    """Map ``dataset[index]`` with numpy's global RNG seeded with ``seed``: the draw an error of
    :class:`YOLACTMapDataset` named, exactly.

    Returns:
        what ``map_func`` returns (None when no ground truth is left).
    """
    np.random.seed(int(seed))
    return map_func(dataset[int(index)])


class YOLACTMapDataset(MapDataset):
    """``MapDataset`` of a map-style dataset with a seed per draw and a bounded re-draw.

    Args:
        dataset: a map-style dataset of Detectron2 dataset dicts (e.g. ``DatasetFromList``).
        map_func: the mapper (returns None when the image has no ground truth left).
        max_resample (int): draws in a row that may return None before it is an error
            (``INPUT.YOLACT.MAX_RESAMPLE``).
        names (sequence of str): the datasets it was read from (``DATASETS.TRAIN``), for messages.
    """

    def __new__(cls, dataset, map_func, **kwargs):
        return object.__new__(cls)

    def __init__(self, dataset, map_func, *, max_resample: int = 100, names: Sequence[str] = ()):
        if int(max_resample) < 1:
            raise ValueError(f"INPUT.YOLACT.MAX_RESAMPLE must be >= 1, got {max_resample}")
        super().__init__(dataset, map_func)
        self.max_resample = int(max_resample)
        self.names = tuple(names)
        self._seeds = None
        self._seeds_pid = None

    def _next_seed(self) -> int:
        # One generator per process: a data-loader worker forked after a draw of its parent must
        # not repeat the parent's seeds.
        if self._seeds is None or self._seeds_pid != os.getpid():
            self._seeds = np.random.default_rng(np.random.randint(2**31))
            self._seeds_pid = os.getpid()
        return int(self._seeds.integers(2**31))

    def describe(self, index: int, seed: int) -> str:
        """``<file> (dataset index I of DATASETS.TRAIN (...), seed S)``."""
        try:
            name = self._dataset[index].get("file_name", "?")
        except Exception:  # noqa: BLE001  (only for the message)
            name = "?"
        where = f" of DATASETS.TRAIN {self.names}" if self.names else ""
        return f"{name} (dataset index {index}{where}, seed {seed})"

    def map_one(self, index: int, seed: int) -> Optional[Dict]:
        """One draw: ``dataset[index]`` mapped with the global RNG seeded with ``seed``.

        Raises:
            DataError: the mapper failed; names the image, the index and the seed.
        """
        try:
            return replay_sample(self._dataset, self._map_func, index, seed)
        except Exception as e:
            raise DataError(
                f"{self.describe(index, seed)}: {type(e).__name__}: {e}\nReplay this draw with "
                f"`python tools/check_dataset.py --config-file <the run's config> --replay "
                f"{index}:{seed}`"
            ) from e

    def __getitem__(self, idx):
        index = int(idx)
        for _ in range(self.max_resample):
            seed = self._next_seed()
            data = self.map_one(index, seed)
            if data is not None:
                self._fallback_candidates.add(index)
                return data
            last = self.describe(index, seed)
            self._fallback_candidates.discard(index)
            if not self._fallback_candidates:
                raise DataError(
                    f"every image of the training set was drawn without giving a training input "
                    f"(the last: {last}); check the dataset with tools/check_dataset.py and "
                    "INPUT.YOLACT.MIN_GT_SIZE")
            candidates = list(self._fallback_candidates)
            index = candidates[int(self._seeds.integers(len(candidates)))]
        raise DataError(
            f"{self.max_resample} draws in a row gave no training input (no ground truth left), "
            f"the last: {last}; check the dataset (tools/check_dataset.py), "
            "INPUT.YOLACT.MIN_GT_SIZE and INPUT.YOLACT.MAX_RESAMPLE")
