"""Training that survives faults: divergence, pre-emption, a dead launcher, a resumed data stream.

Hooks of :class:`mayolact.engine.trainer.Trainer` (Detectron2 ``HookBase``), in the order they run
after each iteration on the main process:

1. :class:`DivergenceGuard` stops with :class:`TrainingDiverged` when the total loss exceeds
   ``SOLVER.YOLACT.DIVERGENCE_FACTOR`` times its median over the previous
   ``SOLVER.YOLACT.DIVERGENCE_WINDOW`` iterations (Detectron2 itself raises ``FloatingPointError``
   on a non-finite loss, before the optimizer step);
2. :class:`StagedPeriodicCheckpointer` writes the periodic checkpoint of iteration ``i`` to a
   temporary file and gives it its name only after iteration ``i + 1``'s loss, computed with those
   weights, has passed the guard: no checkpoint of a diverged state replaces the last good one;
3. :class:`GracefulStop` turns SIGTERM / SIGINT into a checkpoint at the current iteration and a
   clean exit (:class:`TrainingInterrupted`, exit status 128 + signal number); in multi-process
   runs every rank learns of a signal received by any, and the main one saves.

:class:`DataStreamPosition` keeps the training sampler's seed and position in the checkpoint, so a
resumed run continues the data stream. :func:`watch_parent` makes workers of a multi-process run
stop when their launcher dies; :func:`forward_signals_to_workers` makes the launcher pass a signal
on to its workers and wait for them.
"""
import collections
import contextlib
import logging
import math
import multiprocessing
import os
import signal
import statistics
import sys
import threading
import time
from typing import List, Optional

import torch
from detectron2.engine import HookBase, hooks
from detectron2.utils import comm

__all__ = [
    "CheckpointNotWritten",
    "TrainingDiverged",
    "TrainingInterrupted",
    "DivergenceGuard",
    "StagedPeriodicCheckpointer",
    "GracefulStop",
    "DataStreamPosition",
    "watch_parent",
    "forward_signals_to_workers",
    "STOP_SIGNALS",
]

logger = logging.getLogger(__name__)

#: The signals that stop a run gracefully: SIGTERM (how clusters pre-empt a job) and SIGINT.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class CheckpointNotWritten(SystemExit):
    """A checkpoint could not be written (a full disk): training stopped with exit status 1
    after one error line that names it (a ``SystemExit``, so that neither Detectron2's trainer
    nor the interpreter prints the error again with a traceback).

    Attributes:
        error (CheckpointWriteError): what the checkpointer raised.
    """

    def __init__(self, error: OSError):
        super().__init__(1)
        self.error = error


@contextlib.contextmanager
def _stop_if_not_written():
    """Turn a :class:`~mayolact.checkpoint.checkpointer.CheckpointWriteError` into one logged
    error and a :class:`CheckpointNotWritten`."""
    from mayolact.checkpoint.checkpointer import CheckpointWriteError

    try:
        yield
    except CheckpointWriteError as e:
        logger.error("Training stopped: %s", e)
        raise CheckpointNotWritten(e) from e


class TrainingDiverged(FloatingPointError):
    """The loss left its bounds; no checkpoint of the diverged weights was written."""


class TrainingInterrupted(SystemExit):
    """A stop signal ended the run after a checkpoint at the current iteration.

    A ``SystemExit`` whose code is 128 + the signal number (143 for SIGTERM, 130 for SIGINT), the
    shell's convention for a process ended by a signal: uncaught, the process exits with it and
    no traceback; ``train && next-step`` does not go on with an unfinished model.

    Attributes:
        signum (int): the signal.
        iteration (int): the last completed iteration.
        checkpoint (str or None): the checkpoint written (None on ranks that do not save).
    """

    def __init__(self, signum: int, iteration: int, checkpoint: Optional[str]):
        super().__init__(128 + int(signum))
        self.signum = int(signum)
        self.iteration = int(iteration)
        self.checkpoint = checkpoint


def _params_finite(model: torch.nn.Module) -> bool:
    return all(
        bool(torch.isfinite(t).all())
        for t in model.state_dict().values()
        if torch.is_tensor(t) and t.is_floating_point()
    )


class DivergenceGuard(HookBase):
    """Stop when the total loss is not finite or grows beyond ``factor`` times its recent median.

    Reads ``total_loss`` from the event storage (written by Detectron2's trainer on the main
    process each iteration), so it belongs on the main process, before the checkpointer.

    Args:
        factor (float): the bound, relative to the median; 0 disables the relative check.
        window (int): the number of previous iterations whose median is the reference (fewer
            at the start of a run: a run can diverge within its first iterations).
    """

    def __init__(self, factor: float, window: int):
        if factor < 0 or not math.isfinite(factor):
            raise ValueError(f"SOLVER.YOLACT.DIVERGENCE_FACTOR must be >= 0, got {factor}")
        if int(window) < 1:
            raise ValueError(f"SOLVER.YOLACT.DIVERGENCE_WINDOW must be >= 1, got {window}")
        self.factor = float(factor)
        self.window = int(window)
        self._recent = collections.deque(maxlen=self.window)

    def before_train(self):
        self._recent.clear()

    def after_step(self):
        latest = self.trainer.storage.latest().get("total_loss")
        if latest is None or latest[1] != self.trainer.iter:
            return  # no loss written this iteration (not the main process, or a gather period)
        loss, it = float(latest[0]), self.trainer.iter
        if not math.isfinite(loss):
            raise TrainingDiverged(
                f"Training diverged at iteration {it}: total_loss is {loss}. No checkpoint of "
                "this state was written; the checkpoints in OUTPUT_DIR hold earlier weights."
            )
        if self.factor > 0 and self._recent:
            median = statistics.median(self._recent)
            if loss > self.factor * median:
                raise TrainingDiverged(
                    f"Training diverged at iteration {it}: total_loss {loss:.4g} is more than "
                    f"SOLVER.YOLACT.DIVERGENCE_FACTOR = {self.factor:g} times its median "
                    f"{median:.4g} over the previous {len(self._recent)} iterations "
                    "(SOLVER.YOLACT.DIVERGENCE_WINDOW). No checkpoint of this state was written; "
                    "the checkpoints in OUTPUT_DIR hold earlier weights. Lower SOLVER.BASE_LR or "
                    "keep SOLVER.YOLACT.GLOBAL_CLIP_NORM on, then continue with --resume."
                )
        self._recent.append(loss)


class StagedPeriodicCheckpointer(hooks.PeriodicCheckpointer):
    """Detectron2's ``PeriodicCheckpointer`` hook (every ``period`` iterations and
    ``model_final`` after the last) whose periodic checkpoints are published one iteration late.

    The checkpoint of iteration ``i`` holds the weights after its optimizer step; they produce a
    loss only at iteration ``i + 1``. The file is therefore written at ``i`` (to a temporary file,
    :meth:`YOLACTCheckpointer.stage`) and renamed at ``i + 1``, once the hooks before this one
    (:class:`DivergenceGuard`) have passed that loss; when the run diverges instead, the file is
    dropped. ``model_final`` and the checkpoint of a stop have no next iteration: they are written
    at once, after a check that every weight is finite. A checkpoint that cannot be written (a
    full disk) stops the run with one error line naming it (:class:`CheckpointNotWritten`).

    Args:
        checkpointer (YOLACTCheckpointer): saves the model and the trainer's state.
        period (int): iterations between checkpoints.
        max_iter (int): optional; taken from the trainer otherwise.
    """

    def __init__(self, checkpointer, period: int, max_iter: Optional[int] = None):
        super().__init__(checkpointer, period, max_iter)
        self._staged = None  # (iteration, StagedCheckpoint)

    def _check_finite(self, it: int, name: str) -> None:
        if not _params_finite(self.checkpointer.model):
            raise TrainingDiverged(
                f"Training diverged at iteration {it}: the weights are no longer finite; "
                f"{name} was not written, the checkpoints in OUTPUT_DIR hold earlier weights."
            )

    def _publish_staged(self) -> Optional[str]:
        if self._staged is None:
            return None
        _, staged = self._staged
        self._staged = None
        return self.checkpointer.publish(staged)

    def after_step(self):
        with _stop_if_not_written():
            self._after_step()

    def _after_step(self):
        it = self.trainer.iter
        # This iteration's loss came from the staged weights and passed the hooks before this one.
        self._publish_staged()
        last = self.max_iter is not None and it >= self.max_iter - 1
        if (it + 1) % self.period == 0:
            name = f"{self.file_prefix}_{it:07d}"
            self._check_finite(it, name)
            staged = self.checkpointer.stage(name, iteration=it)
            if staged is not None:
                self._staged = (it, staged)
        if last:
            self._publish_staged()
            self._check_finite(it, f"{self.file_prefix}_final")
            self.checkpointer.save(f"{self.file_prefix}_final", iteration=it)

    def save_now(self, it: int) -> Optional[str]:
        """Publish a checkpoint of the state after iteration ``it`` (for a stop request).

        Returns:
            str or None: its path (None where this process does not save).
        """
        with _stop_if_not_written():
            if self._staged is not None and self._staged[0] == it:
                return self._publish_staged()
            self._publish_staged()
            name = f"{self.file_prefix}_{it:07d}"
            self._check_finite(it, name)
            self.checkpointer.save(name, iteration=it)
            return os.path.join(self.checkpointer.save_dir, name + ".pth")

    def after_train(self):
        if self._staged is None:
            return
        error = sys.exc_info()[1]
        if isinstance(error, FloatingPointError):  # Detectron2's non-finite loss or ours
            it, staged = self._staged
            self._staged = None
            self.checkpointer.discard(staged)
            logger.warning(
                "The checkpoint of iteration %d is not kept: its weights gave a diverged loss", it
            )
        else:
            self._publish_staged()


class GracefulStop(HookBase):
    """SIGTERM / SIGINT: finish the current iteration, save a checkpoint, stop cleanly.

    The handlers only note the signal (installed in ``before_train`` on the main thread, the
    previous ones restored in ``after_train``); after each iteration the ranks agree (one
    ``all_gather`` of a small object when there are several), the main one saves through the
    checkpoint hook, and every rank raises :class:`TrainingInterrupted`. Later signals while
    stopping are ignored.

    Args:
        checkpoint_hook (StagedPeriodicCheckpointer): the main process's checkpointer hook; None
            on the other ranks.
        resume_hint (str): how to go on, the end of the stop's log line (the tool's way: the
            trainer's ``resume_hint``).
    """

    def __init__(self, checkpoint_hook: Optional[StagedPeriodicCheckpointer] = None,
                 resume_hint: str = "continue it with --resume"):
        self._checkpoint_hook = checkpoint_hook
        self.resume_hint = resume_hint
        self._signum = None
        self._previous = {}

    @property
    def requested(self) -> Optional[int]:
        """The signal received, if any."""
        return self._signum

    def request(self, signum: int, frame=None) -> None:
        """Ask for a stop at the end of the current iteration (the signal handler)."""
        if self._signum is None:
            self._signum = int(signum)

    def before_train(self):
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self.request)

    def after_step(self):
        signum = self._signum
        if comm.get_world_size() > 1:
            asked = [s for s in comm.all_gather(signum) if s is not None]
            signum = asked[0] if asked else None
        if signum is None:
            return
        it = self.trainer.iter
        path = self._checkpoint_hook.save_now(it) if self._checkpoint_hook is not None else None
        comm.synchronize()  # the other ranks leave only once the checkpoint is complete
        logger.warning(
            "%s received: training stopped after iteration %d%s; %s",
            signal.Signals(signum).name, it, f", checkpoint {path}" if path else "",
            self.resume_hint,
        )
        raise TrainingInterrupted(signum, it, path)

    def after_train(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


class DataStreamPosition(HookBase):
    """Keeps the training sampler's seed and position in the trainer's checkpointed state.

    Args:
        sampler (ResumableTrainingSampler): the training loader's sampler.
        total_batch_size (int): images per iteration, all ranks together.
    """

    def __init__(self, sampler, total_batch_size: int):
        self.sampler = sampler
        self.total_batch_size = int(total_batch_size)
        self.restored = False

    def state_dict(self):
        done = self.trainer.iter + 1 - self.trainer.start_iter  # iterations of this run so far
        return {
            "seed": self.sampler.seed,
            "images_consumed": self.sampler.start + done * self.total_batch_size,
        }

    def load_state_dict(self, state):
        self.sampler.set_position(state["images_consumed"], seed=state["seed"])
        self.restored = True
        logger.info(
            "Training data stream continues after %d images (sampler seed %d)",
            state["images_consumed"], state["seed"],
        )


def watch_parent(grace_s: float = 60.0, poll_s: float = 1.0) -> threading.Thread:
    """Stop this process when its parent (the launcher of a multi-process run) dies.

    A daemon thread polls the parent's pid; once it changes, the process sends itself SIGTERM
    (a graceful stop with a checkpoint, once training runs) and, if it is still alive
    ``grace_s`` seconds later (stuck in a collective with a dead peer), exits at once. Polling
    works on every OS, where ``prctl(PR_SET_PDEATHSIG)`` is Linux only.

    Returns:
        threading.Thread: the watching thread.
    """
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(poll_s)
        logger.warning("The launcher (pid %d) is gone: stopping this worker", parent)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_s)
        logger.error("Still running %g s after the launcher died: exiting now", grace_s)
        os._exit(128 + signal.SIGTERM)

    thread = threading.Thread(target=watch, name="mayolact-watch-parent", daemon=True)
    thread.start()
    return thread


@contextlib.contextmanager
def forward_signals_to_workers():
    """In the launcher of a multi-process run: pass SIGTERM / SIGINT on to the worker processes
    (which stop gracefully) instead of dying, so the launcher waits for their checkpoint.

    Yields:
        list[int]: the signals received, in order.
    """
    received: List[int] = []

    def forward(signum, frame):
        received.append(signum)
        for child in multiprocessing.active_children():
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in STOP_SIGNALS}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
