"""Atomic file writing: the one way the project writes checkpoints, results, figures, images and
caches.

Every writer goes through these helpers: the content is written to a temporary file in the
destination's folder (:func:`temporary_path`: hidden, with the writer's process id), which then
replaces the destination with ``os.replace`` (atomic on POSIX and Windows), so a crash or an error
never leaves a half-written file behind, and a reader never sees one. The folder is created if
needed, and the temporary file is removed on any failure.

``durable=True`` (checkpoints, ``last_checkpoint``, converted weights) also fsyncs the file before
the rename and the folder after it, so that the new file survives a power loss too, not only a
killed process. Checkpoints that are written at one iteration and given their name at the next
use the two halves separately: :func:`write_staged` and :func:`publish_staged`.
"""
import contextlib
import json
import os
import re
from typing import BinaryIO, Callable, Iterator, Optional

__all__ = [
    "TEMPORARY_NAME",
    "temporary_path",
    "write_staged",
    "publish_staged",
    "atomic_path",
    "atomic_open",
    "write_json_atomic",
    "write_text_atomic",
    "write_image_atomic",
]

#: Names of the temporary files of :func:`temporary_path`: ``.<stem>.<pid>.tmp<ext>`` (groups
#: "stem", "pid", "ext"; files of an older naming, ``.<name>.<pid>.tmp``, match as well).
TEMPORARY_NAME = re.compile(r"^\.(?P<stem>.+)\.(?P<pid>\d+)\.tmp(?P<ext>\.[^.]+)?$")


def temporary_path(path: str) -> str:
    """The temporary file through which this process writes ``path`` (its folder is created).

    It lies in ``path``'s folder (so the final rename stays on one file system) and keeps the
    extension, so that writers that choose the format by extension (OpenCV, matplotlib) work on
    it. A plain name (not ``mkstemp``) gives the file the usual permissions; the process id keeps
    two writers of the same file apart and tells a clean-up whose file it is.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    stem, ext = os.path.splitext(os.path.basename(path))
    return os.path.join(folder, f".{stem}.{os.getpid()}.tmp{ext}")


def _fsync_folder(folder: str) -> None:
    """Make a rename inside ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)


def write_staged(path: str, write: Callable[[BinaryIO], None]) -> str:
    """Write ``path``'s content to its temporary file, flushed and fsync'ed, without publishing it.

    Args:
        path: the destination (:func:`publish_staged` gives the file this name).
        write: called with the open binary file.

    Returns:
        str: the temporary file.

    Raises:
        whatever ``write`` or the file system raises; the temporary file is removed first.
    """
    tmp = temporary_path(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        _remove_quietly(tmp)
        raise
    return tmp


def publish_staged(tmp: str, path: str) -> None:
    """Rename a file of :func:`write_staged` to ``path`` and make the rename durable."""
    os.replace(tmp, path)
    _fsync_folder(os.path.dirname(os.path.abspath(path)))


@contextlib.contextmanager
def atomic_path(path: str, durable: bool = False) -> Iterator[str]:
    """A temporary path to write ``path`` through; on success it replaces ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was.

    Args:
        path: the destination; its folder is created if needed.
        durable: fsync the file before the rename and the folder after it.

    Example::

        with atomic_path("out/clip.mp4") as tmp:
            writer = cv2.VideoWriter(tmp, ...)
    """
    tmp = temporary_path(path)
    try:
        yield tmp
        if durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        _remove_quietly(tmp)
        raise
    if durable:
        _fsync_folder(os.path.dirname(os.path.abspath(path)))


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w", durable: bool = False):
    """``open`` a temporary file that replaces ``path`` when the block ends without an error.

    Args:
        path: the destination.
        mode: a writing mode of ``open`` ("w", "wb").
        durable: as for :func:`atomic_path`.
    """
    if not any(c in mode for c in "wxa"):
        raise ValueError(f"atomic_open: mode must write, got {mode!r}")
    with atomic_path(path, durable=durable) as tmp:
        with open(tmp, mode) as f:
            yield f


def write_json_atomic(path: str, payload, indent: Optional[int] = None) -> None:
    """Write ``payload`` as json (``indent`` as ``json.dump``) atomically.

    A remote path (``scheme://...``) is written directly through Detectron2's ``PathManager``.
    """
    if "://" in path:
        from detectron2.utils.file_io import PathManager

        with PathManager.open(path, "w") as f:
            json.dump(payload, f, indent=indent)
        return
    with atomic_open(path, "w") as f:
        json.dump(payload, f, indent=indent)


def write_text_atomic(path: str, text: str, durable: bool = False) -> None:
    """Write ``text`` to ``path`` atomically (``durable`` as for :func:`atomic_path`)."""
    with atomic_open(path, "w", durable=durable) as f:
        f.write(text)


def write_image_atomic(path: str, image) -> None:
    """Write an image (OpenCV's channel order, BGR) atomically; the extension gives the format.

    Raises:
        OSError: naming ``path`` when OpenCV cannot encode the image.
    """
    import cv2

    ext = os.path.splitext(path)[1] or ".png"
    ok, buf = cv2.imencode(ext, image)
    if not ok:
        raise OSError(f"{path}: could not encode the image as {ext}")
    with atomic_open(path, "wb") as f:
        f.write(buf.tobytes())
