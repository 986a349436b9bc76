"""Atomic file writing: the one way the project writes results, figures, images and caches.

Every writer goes through :func:`atomic_path`: the content is written to a temporary file in the
destination's folder, which then replaces the destination with ``os.replace`` (atomic on POSIX and
Windows), so a crash or an error never leaves a half-written file behind, and a reader never sees
one. The folder is created if needed.
"""
import contextlib
import json
import os
from typing import Iterator, Optional

__all__ = [
    "atomic_path",
    "atomic_open",
    "write_json_atomic",
    "write_text_atomic",
    "write_image_atomic",
]


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """A temporary path to write ``path`` through; on success it replaces ``path``.

    The temporary file lies in ``path``'s folder (created if needed) and keeps its extension, so
    writers that choose the format by extension (OpenCV, matplotlib) work on it. On an exception
    it is removed and ``path`` is left as it was.

    Example::

        with atomic_path("out/clip.mp4") as tmp:
            writer = cv2.VideoWriter(tmp, ...)
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    base = os.path.basename(path)
    stem, ext = os.path.splitext(base)
    # A plain name (not mkstemp) so that the file gets the usual permissions; the pid keeps two
    # processes writing the same file apart.
    tmp = os.path.join(folder, f".{stem}.{os.getpid()}.tmp{ext}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w"):
    """``open`` a temporary file that replaces ``path`` when the block ends without an error.

    Args:
        path: the destination.
        mode: a writing mode of ``open`` ("w", "wb").
    """
    if not any(c in mode for c in "wxa"):
        raise ValueError(f"atomic_open: mode must write, got {mode!r}")
    with atomic_path(path) as tmp:
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


def write_text_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_open(path, "w") as f:
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
