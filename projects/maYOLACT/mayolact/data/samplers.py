"""A training sampler whose stream a resumed run continues instead of replaying.

Detectron2's ``TrainingSampler`` yields one infinite stream of indices, ``shuffle(range(N))`` epoch
after epoch from one seed, and each rank takes every ``world_size``-th element. A run restarted
from a checkpoint builds a new sampler and starts that stream (or, without ``SEED``, another one)
from its beginning: the first batches are seen again and the ones after the checkpoint never.

:class:`ResumableTrainingSampler` is that sampler with a position: it keeps the seed in the
checkpoint and starts the stream after the images the run has consumed, so that the resumed run
draws exactly what the uninterrupted one would have drawn next (see docs/RELIABILITY.md, "What
--resume restores", for the cases where data-loader workers and aspect-ratio grouping blur the
boundary).
"""
import itertools

from detectron2.data.samplers import TrainingSampler

__all__ = ["ResumableTrainingSampler"]


class ResumableTrainingSampler(TrainingSampler):
    """``TrainingSampler`` that can start its stream at a given position.

    Args:
        size (int): the number of images of the dataset.
        shuffle (bool): shuffle every epoch (as ``TrainingSampler``).
        seed (int): seed of the stream; None draws one shared by all ranks (as
            ``TrainingSampler``).
    """

    def __init__(self, size: int, shuffle: bool = True, seed=None):
        super().__init__(size, shuffle=shuffle, seed=seed)
        self._start = 0

    @property
    def seed(self) -> int:
        """The seed of the stream (what a checkpoint must keep to continue it)."""
        return self._seed

    @property
    def start(self) -> int:
        """Position in the global stream (all ranks together) where iteration begins."""
        return self._start

    def set_position(self, start: int, seed=None) -> None:
        """Begin the stream at global position ``start`` (images consumed by all ranks), with
        ``seed`` if given. Takes effect for iterators created afterwards.

        Raises:
            ValueError: a negative position.
        """
        if int(start) < 0:
            raise ValueError(f"stream position must be >= 0, got {start}")
        self._start = int(start)
        if seed is not None:
            self._seed = int(seed)

    def __iter__(self):
        # Positions before `start` were consumed by the interrupted run; rank r then takes every
        # world_size-th of the rest, as TrainingSampler does from position 0. Skipping walks the
        # generator (one randperm per epoch): fractions of a second even for a whole COCO schedule.
        yield from itertools.islice(
            self._infinite_indices(), self._start + self._rank, None, self._world_size
        )
