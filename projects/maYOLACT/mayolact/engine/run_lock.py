"""One training run per output folder: an advisory lock on ``OUTPUT_DIR/run.lock``.

Two runs in one folder overwrite each other's checkpoints and interleave ``metrics.json`` and
``log.txt``; a ``--resume`` started while the first run is alive would take its staged checkpoint
for a leftover. :class:`RunLock` holds ``fcntl.flock`` on ``run.lock`` for the whole run: the
kernel releases it when the holding process ends, however it ends (a kill, a crash, a lost node),
so a lock is never stale, and the file's content (the holder's pid, host, start time and command)
only serves the message a second run stops with. :func:`check_run_lock` asks the same question
without taking the lock, for the up-front checks of ``tools/train_net.py``.

``flock`` is advisory: it keeps out other runs of this project, not other programs. On NFS, Linux
maps it to POSIX byte-range locks, which hold across machines; on systems without ``fcntl``
(Windows) the lock is skipped with a warning.
"""
import logging
import os
import socket
import sys
import time
from typing import Optional

from mayolact.engine.checks import PreflightError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

__all__ = ["LOCK_NAME", "RunLockError", "RunLock", "check_run_lock"]

logger = logging.getLogger(__name__)

#: The lock file in ``OUTPUT_DIR`` (left in place after a run; only the kernel's lock matters).
LOCK_NAME = "run.lock"
_TRIES = 5


class RunLockError(PreflightError):
    """``OUTPUT_DIR`` is in use by another live run (named by its pid in the message)."""


def _holder(path: str) -> str:
    """The holder's description as written in the lock file (pid, host, start, command)."""
    try:
        with open(path) as f:
            fields = dict(line.split("=", 1) for line in f.read().splitlines() if "=" in line)
    except (OSError, ValueError):
        fields = {}
    pid = fields.get("pid", "?")
    where = f" on {fields['host']}" if fields.get("host") else ""
    since = f", started {fields['started']}" if fields.get("started") else ""
    command = f": {fields['command']}" if fields.get("command") else ""
    return f"pid {pid}{where}{since}{command}"


def _busy_error(folder: str, path: str) -> RunLockError:
    return RunLockError(
        f"OUTPUT_DIR {folder} is in use by another run ({_holder(path)}), which holds {path}. "
        "Two runs in one folder would overwrite each other's checkpoints and logs: wait for it to "
        "end (a --resume continues it afterwards), stop it, or choose another OUTPUT_DIR"
    )


class RunLock:
    """The exclusive lock of a training run on its output folder (see the module docstring).

    Example::

        with RunLock(cfg.OUTPUT_DIR):  # raises RunLockError naming the holder's pid
            trainer.train()

    Args:
        folder (str): the run's ``OUTPUT_DIR`` (created if needed).
    """

    def __init__(self, folder: str):
        self.folder = folder
        self.path = os.path.join(folder, LOCK_NAME)
        self._fd: Optional[int] = None

    def acquire(self) -> "RunLock":
        """Take the lock without waiting and write this process's description into the file.

        Raises:
            RunLockError: another live process holds it (its pid in the message).
        """
        if fcntl is None:
            logger.warning("No fcntl on this system: OUTPUT_DIR %s is not locked against a "
                           "second run", self.folder)
            return self
        os.makedirs(self.folder, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        # A few tries: check_run_lock of a run starting beside this one holds a shared lock for
        # an instant, which must not be taken for a run.
        for attempt in range(_TRIES):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if attempt == _TRIES - 1:
                    os.close(fd)
                    raise _busy_error(self.folder, self.path) from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.write(fd, (
            f"pid={os.getpid()}\nhost={socket.gethostname()}\n"
            f"started={time.strftime('%Y-%m-%d %H:%M:%S')}\ncommand={' '.join(sys.argv)}\n"
        ).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the lock up (closing the file releases it; the file stays)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def check_run_lock(folder: str) -> None:
    """Whether a live run holds ``folder``'s lock, without taking it or creating anything.

    Raises:
        RunLockError: naming the holder's pid.
    """
    path = os.path.join(folder, LOCK_NAME)
    if fcntl is None or not os.path.isfile(path):
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        raise _busy_error(folder, path) from None
    finally:
        os.close(fd)  # releases the shared lock, if it was taken
