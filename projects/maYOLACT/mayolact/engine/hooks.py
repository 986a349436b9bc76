"""Training that survives faults: divergence, pre-emption, errors, a dead launcher, a resumed
data stream.

Hooks of :class:`mayolact.engine.trainer.Trainer` (Detectron2 ``HookBase``), in the order they run
after each iteration on the main process:

0. :class:`SaveOnError` (first) marks each completed iteration; when an error (a data error, an
   I/O error) ends training, it saves the state after the last completed one and says how to
   resume;
1. :class:`DivergenceGuard` stops with :class:`TrainingDiverged` on a non-finite loss, a loss above
   a ceiling set by the run's first losses, or a sustained rise of the median loss; single spikes
   and iterations without positive anchors (counted) pass;
2. :class:`StagedPeriodicCheckpointer` writes the periodic checkpoint of iteration ``i`` to a
   temporary file and gives it its name only after ``SOLVER.YOLACT.DIVERGENCE_WINDOW`` more
   iterations, computed with those weights, have passed the guard: no checkpoint of a diverging
   state replaces the last good one;
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
    "SaveOnError",
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
    """Stop on real divergence only: a non-finite loss, a loss above a ceiling set by the run's own
    early losses, or a sustained rise; single spikes and iterations without positives pass.

    Reads ``total_loss`` (and the model's ``num_pos_anchors``) from the event storage, written on
    the main process each iteration, so it belongs on the main process, before the checkpointer.
    Per iteration:

    1. a non-finite ``total_loss`` stops at once (Detectron2 itself raises
       ``FloatingPointError`` on one, before the optimizer step);
    2. an iteration whose batch had no positive anchor (``num_pos_anchors`` 0 on this process) is
       counted (``zero_positive_iterations`` in the storage, logged) and not judged: OHEM then
       trains on every negative with normaliser 1 (docs/REFERENCE.md §7.1), a loss
       tens of times the usual one that says nothing about the weights;
    3. ``total_loss`` above ``ceiling`` times the median of the run's first ``window`` judged
       losses (of those so far, during the first window) stops at once (an explosion, also one
       in the first iterations);
    4. the median of the last ``window`` judged losses above ``rise`` times the lowest such median
       of the run stops (a sustained rise: half the window must be high, so one spike never is).

    A growth of 1.15x per iteration is caught after 18 iterations with the defaults (the median
    lags by half the window, then needs 3x); the periodic checkpoints wait ``window`` iterations
    before they are published (:class:`StagedPeriodicCheckpointer`), so none of its weights is.

    Args:
        window (int): losses per median (``SOLVER.YOLACT.DIVERGENCE_WINDOW``).
        rise (float): the sustained-rise bound, relative to the lowest median; 0 disables it
            (``SOLVER.YOLACT.DIVERGENCE_RISE``).
        ceiling (float): the bound of a single loss, relative to the first window's median; 0
            disables it (``SOLVER.YOLACT.DIVERGENCE_CEILING``).
    """

    def __init__(self, window: int = 20, rise: float = 3.0, ceiling: float = 100.0):
        if int(window) < 1:
            raise ValueError(f"SOLVER.YOLACT.DIVERGENCE_WINDOW must be >= 1, got {window}")
        for key, value in (("RISE", rise), ("CEILING", ceiling)):
            if not math.isfinite(value) or (value != 0 and value <= 1):
                raise ValueError(
                    f"SOLVER.YOLACT.DIVERGENCE_{key} must be > 1 (or 0: off), got {value}")
        self.window = int(window)
        self.rise = float(rise)
        self.ceiling_factor = float(ceiling)
        self._recent = collections.deque(maxlen=self.window)
        self.reference = None  # median of the first window's losses (of those so far, until full)
        self._reference_fixed = False
        self.best_median = math.inf
        self.zero_positive_iterations = 0

    @classmethod
    def from_config(cls, cfg) -> "DivergenceGuard":
        """The guard of ``SOLVER.YOLACT.DIVERGENCE_{WINDOW,RISE,CEILING}``."""
        s = cfg.SOLVER.YOLACT
        return cls(s.DIVERGENCE_WINDOW, s.DIVERGENCE_RISE, s.DIVERGENCE_CEILING)

    def before_train(self):
        self._recent.clear()
        self.reference, self._reference_fixed, self.best_median = None, False, math.inf
        self.zero_positive_iterations = 0

    @property
    def ceiling(self) -> Optional[float]:
        """The current bound of a single loss (None before the first judged loss)."""
        if self.reference is None or self.ceiling_factor == 0:
            return None
        return self.ceiling_factor * self.reference

    def _stop(self, it: int, why: str):
        raise TrainingDiverged(
            f"Training diverged at iteration {it}: {why}. No checkpoint of these weights was "
            "published: the periodic checkpoints of the last SOLVER.YOLACT.DIVERGENCE_WINDOW "
            "iterations were dropped, the checkpoints in OUTPUT_DIR hold earlier weights. Lower "
            "SOLVER.BASE_LR or keep SOLVER.YOLACT.GLOBAL_CLIP_NORM on, then continue with "
            "--resume."
        )

    def after_step(self):
        storage = self.trainer.storage
        latest = storage.latest()
        loss_entry = latest.get("total_loss")
        it = self.trainer.iter
        if loss_entry is None or loss_entry[1] != it:
            return  # no loss written this iteration (not the main process, or a gather period)
        loss = float(loss_entry[0])
        if not math.isfinite(loss):
            self._stop(it, f"total_loss is {loss}")
        positives = latest.get("num_pos_anchors")
        if positives is not None and positives[1] == it and float(positives[0]) == 0:
            self.zero_positive_iterations += 1
            n = self.zero_positive_iterations
            if n == 1 or n % 100 == 0:
                logger.warning(
                    "Iteration %d: no positive anchor in the batch (total_loss %.4g: OHEM sums "
                    "every negative with normaliser 1); not judged by the divergence guard "
                    "(%d such iteration(s) so far, 'zero_positive_iterations' in metrics.json)",
                    it, loss, n)
            storage.put_scalar("zero_positive_iterations", n, smoothing_hint=False)
            return
        storage.put_scalar("zero_positive_iterations", self.zero_positive_iterations,
                           smoothing_hint=False)
        ceiling = self.ceiling
        if ceiling is not None and loss > ceiling:
            first = self.window if self._reference_fixed else len(self._recent)
            self._stop(it, f"total_loss {loss:.4g} is above SOLVER.YOLACT.DIVERGENCE_CEILING = "
                           f"{self.ceiling_factor:g} times {self.reference:.4g}, the median of the "
                           f"run's first {first} losses")
        self._recent.append(loss)
        median = statistics.median(self._recent)
        if not self._reference_fixed:
            self.reference = median
        if len(self._recent) < self.window:
            return
        self._reference_fixed = True
        self.best_median = min(self.best_median, median)
        if self.rise > 0 and median > self.rise * self.best_median:
            self._stop(it, f"the median total_loss of the last {self.window} iterations "
                           f"(SOLVER.YOLACT.DIVERGENCE_WINDOW), {median:.4g}, is more than "
                           f"SOLVER.YOLACT.DIVERGENCE_RISE = {self.rise:g} times its lowest value "
                           f"in this run, {self.best_median:.4g}")


class StagedPeriodicCheckpointer(hooks.PeriodicCheckpointer):
    """Detectron2's ``PeriodicCheckpointer`` hook (every ``period`` iterations and
    ``model_final`` after the last) whose periodic checkpoints are published ``probation``
    iterations late.

    The checkpoint of iteration ``i`` holds the weights after its optimizer step; they produce a
    loss only from iteration ``i + 1`` on. The file is therefore written at ``i`` (to a temporary
    file, :meth:`YOLACTCheckpointer.stage`) and renamed at ``i + probation``, once the hooks
    before this one (:class:`DivergenceGuard`) have passed iterations ``i + 1 .. i + probation``;
    when the run diverges before that, the file is dropped. ``model_final`` and the checkpoint of
    a stop have no later iterations: they are written at once, after a check that every weight is
    finite (and publish the staged ones first). A checkpoint that cannot be written (a full disk)
    stops the run with one error line naming it (:class:`CheckpointNotWritten`).

    Args:
        checkpointer (YOLACTCheckpointer): saves the model and the trainer's state.
        period (int): iterations between checkpoints.
        max_iter (int): optional; taken from the trainer otherwise.
        probation (int): iterations a checkpoint waits (``SOLVER.YOLACT.DIVERGENCE_WINDOW``).
    """

    def __init__(self, checkpointer, period: int, max_iter: Optional[int] = None,
                 probation: int = 1):
        super().__init__(checkpointer, period, max_iter)
        if int(probation) < 1:
            raise ValueError(f"probation must be >= 1, got {probation}")
        self.probation = int(probation)
        self._staged = []  # [(iteration, StagedCheckpoint)], oldest first

    def _check_finite(self, it: int, name: str) -> None:
        if not _params_finite(self.checkpointer.model):
            raise TrainingDiverged(
                f"Training diverged at iteration {it}: the weights are no longer finite; "
                f"{name} was not written, the checkpoints in OUTPUT_DIR hold earlier weights."
            )

    def _publish_staged(self, until: Optional[int] = None) -> Optional[str]:
        """Publish the staged checkpoints of iterations <= ``until`` (all when None); returns
        the path of the last one published."""
        path = None
        while self._staged and (until is None or self._staged[0][0] <= until):
            _, staged = self._staged.pop(0)
            path = self.checkpointer.publish(staged) or path
        return path

    def after_step(self):
        with _stop_if_not_written():
            self._after_step()

    def _after_step(self):
        it = self.trainer.iter
        # Iterations up to this one passed the hooks before this one.
        self._publish_staged(until=it - self.probation)
        last = self.max_iter is not None and it >= self.max_iter - 1
        if (it + 1) % self.period == 0:
            name = f"{self.file_prefix}_{it:07d}"
            self._check_finite(it, name)
            staged = self.checkpointer.stage(name, iteration=it)
            if staged is not None:
                self._staged.append((it, staged))
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
            if self._staged and self._staged[-1][0] == it:
                return self._publish_staged()
            self._publish_staged()
            name = f"{self.file_prefix}_{it:07d}"
            self._check_finite(it, name)
            self.checkpointer.save(name, iteration=it)
            return os.path.join(self.checkpointer.save_dir, name + ".pth")

    def after_train(self):
        if not self._staged:
            return
        error = sys.exc_info()[1]
        if isinstance(error, FloatingPointError):  # Detectron2's non-finite loss or ours
            for it, staged in self._staged:
                self.checkpointer.discard(staged)
                logger.warning(
                    "The checkpoint of iteration %d is not kept: the run diverged within %d "
                    "iterations of it", it, self.probation)
            self._staged = []
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


class SaveOnError(HookBase):
    """A run stopped by an error (a data error, an I/O error, ...) keeps the work of its completed
    iterations: a checkpoint of the state after the last one, and a note on how to resume.

    The first hook of the trainer: its ``after_step`` marks iteration ``i`` complete as soon as
    ``run_step`` has returned (the optimizer has stepped). When an exception ends training,
    ``after_train`` saves the state after the last completed iteration through the checkpoint
    hook (:meth:`StagedPeriodicCheckpointer.save_now`: staged checkpoints published, weights
    checked finite). A failed iteration never stepped the optimizer (Detectron2's ``run_step``
    reads its data, computes and checks the losses, then steps), so that state is sound.
    Divergence (``FloatingPointError``) saves nothing: its weights are not sound. A signal's stop
    (:class:`TrainingInterrupted`) has saved already.

    Args:
        checkpoint_hook (StagedPeriodicCheckpointer): the main process's checkpointer hook; None
            on the other ranks (they only log).
    """

    def __init__(self, checkpoint_hook: Optional[StagedPeriodicCheckpointer] = None):
        self._checkpoint_hook = checkpoint_hook
        self.last_completed = None

    def before_train(self):
        self.last_completed = self.trainer.iter - 1  # start_iter - 1: nothing done yet

    def after_step(self):
        self.last_completed = self.trainer.iter

    def after_train(self):
        error = sys.exc_info()[1]
        if not isinstance(error, Exception) or isinstance(error, FloatingPointError):
            return
        done = self.last_completed
        if done is None or done < self.trainer.start_iter:
            note = ("No iteration of this run was completed: nothing to save. Fix the cause and "
                    "run the same command again (with --resume if OUTPUT_DIR holds a checkpoint).")
        elif self._checkpoint_hook is None:
            note = (f"The main process saves the state after iteration {done}; fix the cause and "
                    "continue with --resume.")
        else:
            try:
                path = self._checkpoint_hook.save_now(done)
            except Exception as e:  # noqa: BLE001  (the disk may be what failed)
                note = (f"Saving the state after iteration {done} failed too ({type(e).__name__}: "
                        f"{e}); --resume continues from the newest checkpoint in OUTPUT_DIR.")
            else:
                note = (f"The state after iteration {done} was saved to {path}: fix the cause, "
                        "then run the same command with --resume to continue from iteration "
                        f"{done + 1}.")
        logger.error("Training stopped by %s: %s", type(error).__name__, note)
        error.add_note(note)


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
