"""Reading a weights file that someone else wrote: no code runs from it, damaged bytes are found.

A weights file is a pickle (``torch.save`` wraps one in a zip archive; Detectron2's ``.pkl`` files
are bare pickles), and unpickling calls whatever functions the file names. :func:`load_weights_file`
is the one reader of ``MODEL.WEIGHTS``, ``--resume`` and the tools; for every file it

1. checks the bytes: a ``torch.save`` archive must start at the file's first byte and every member
   must pass its CRC-32 (PyTorch's own reader does not check them); a bare pickle must end exactly
   at the end of the file (:func:`integrity_problem`);
2. unpickles with an allowlist of what real Detectron2, torchvision and mmdetection checkpoints
   hold: tensors, numpy arrays and dtypes, numpy scalars, dicts, ``OrderedDict``, lists, tuples,
   strings, bytes, numbers, booleans and None (:data:`SAFE_GLOBALS`). Anything else is refused by
   its qualified name (``posix.system``, ``builtins.eval``, a class) before it is called;
3. refuses non-finite values (NaN, inf) in any tensor or array, naming the tensor.

``$MAYOLACT_TRUST_PICKLE=1`` (:data:`TRUST_PICKLE_ENV`) is the one opt-in: a file refused in step 2
is then unpickled in full, with a warning, since that can run code from it.
"""
import collections
import contextlib
import importlib
import logging
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from detectron2.utils.file_io import PathManager

__all__ = [
    "TRUST_PICKLE_ENV",
    "SAFE_GLOBALS",
    "CheckpointError",
    "UnsafePickleError",
    "integrity_problem",
    "first_non_finite",
    "load_weights_file",
]

logger = logging.getLogger(__name__)

#: Environment variable: "1" lets a file that holds Python objects beyond :data:`SAFE_GLOBALS` be
#: unpickled in full. Unpickling runs code from the file, so it is opt-in, for files you trust.
TRUST_PICKLE_ENV = "MAYOLACT_TRUST_PICKLE"


class CheckpointError(ValueError):
    """A weights file that cannot be read, or whose tensors do not fit the model (named in the
    message with the file)."""


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle names a global outside :data:`SAFE_GLOBALS` (``name``, e.g. ``posix.system``)."""

    def __init__(self, name: str):
        super().__init__(f"{name} is not allowed in a weights file")
        self.name = name


def _latin1_encode(text, encoding="utf-8"):
    """``_codecs.encode`` as pickles of protocol 2 use it for ``bytes`` (numpy array data): the
    latin-1 codec only, so that no codec lookup is reachable from a file."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise UnsafePickleError(f"_codecs.encode(..., {encoding!r})")
    return text.encode("latin1")


def _numpy_global(module: str, name: str) -> Callable:
    """A numpy internal under its numpy 1 (``numpy.core``) or numpy 2 (``numpy._core``) name."""
    core = "numpy._core" if hasattr(np, "_core") else "numpy.core"
    return getattr(importlib.import_module(module.replace("numpy.core", core, 1)), name)


# Qualified name -> how to get the object. Pickles name numpy internals by the module of the numpy
# that wrote them (numpy.core in 1.x, numpy._core in 2.x); both resolve to the installed one.
_SAFE_SOURCES: Dict[str, Callable[[], Callable]] = {
    "collections.OrderedDict": lambda: collections.OrderedDict,
    "numpy.ndarray": lambda: np.ndarray,
    "numpy.dtype": lambda: np.dtype,
    "_codecs.encode": lambda: _latin1_encode,
}
for _core in ("numpy.core", "numpy._core"):
    for _module, _name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"),
                           ("numeric", "_frombuffer")):
        _SAFE_SOURCES[f"{_core}.{_module}.{_name}"] = (
            lambda m=f"numpy.core.{_module}", n=_name: _numpy_global(m, n))
#: The globals a weights file may name: numpy arrays (their reconstruction functions, ``ndarray``,
#: ``dtype``), numpy scalars, ``OrderedDict`` and the latin-1 ``bytes`` of protocol-2 pickles.
#: Plain containers, strings and numbers need no global; ``torch.load`` adds tensors and storages.
SAFE_GLOBALS = tuple(sorted(_SAFE_SOURCES))
del _core, _module, _name


class _RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only :data:`SAFE_GLOBALS` (others raise
    :class:`UnsafePickleError` before anything from the file is called)."""

    def find_class(self, module: str, name: str):
        # Protocol-2 pickles name Python 2's module of the built-ins.
        qualified = f"{'builtins' if module == '__builtin__' else module}.{name}"
        if qualified not in _SAFE_SOURCES:
            raise UnsafePickleError(qualified)
        return _SAFE_SOURCES[qualified]()

    def persistent_load(self, pid):
        # torch.save's storages: only inside its archives, which torch.load reads.
        raise UnsafePickleError(f"persistent id {str(pid)[:40]!r}")


@contextlib.contextmanager
def _torch_safe_globals():
    """``torch.load(weights_only=True)`` with :data:`SAFE_GLOBALS` allowed too (under every name a
    file may use for them)."""
    allowed = [(source(), name) for name, source in _SAFE_SOURCES.items()
               if name not in ("collections.OrderedDict", "_codecs.encode")]  # torch's own
    # A pickled dtype is built as an instance of its class (numpy 2: numpy.dtypes.Float32DType,
    # ...), which torch's BUILD checks against the allowed globals.
    allowed += sorted({type(np.dtype(c)) for c in np.typecodes["All"]} - {np.dtype}, key=str)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # numpy.core under numpy 2
        with torch.serialization.safe_globals(allowed):
            yield


# ------------------------------------------------------------------------------ integrity
_ZIP_MAGIC = b"PK\x03\x04"
# torch.save's legacy (pre-1.6, non-zip) format starts with this pickled magic number.
_LEGACY_TORCH_MAGIC = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
# Files whose integrity was checked, by (path, size, mtime, inode): a resume checks the newest
# checkpoint before choosing it and then loads it; its bytes are read through once, not twice.
_VERIFIED: "collections.OrderedDict[Tuple, None]" = collections.OrderedDict()


def _identity(path: str) -> Tuple:
    st = os.stat(path)
    return os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ino


def integrity_problem(path: str, archive_only: bool = False) -> Optional[str]:
    """Why the bytes of ``path`` cannot be a whole weights file, or None when they can.

    A ``torch.save`` archive (a zip) must begin at the first byte (a zip with data before it, e.g.
    a pickle with an archive appended, is refused) and every member must pass its CRC-32 (damaged
    bytes) and be complete (a file cut short has no zip directory). Other files are bare pickles,
    which carry no checksum: they are checked as they are unpickled (the stream must be complete
    and end at the end of the file).

    Args:
        path (str): a local file.
        archive_only (bool): anything but a ``torch.save`` archive is a problem (the checkpoints a
            training run writes).

    Returns:
        str or None: the problem, in words.
    """
    try:
        key = _identity(path)
        if key in _VERIFIED:
            return None
        if key[1] == 0:
            return "the file is empty"
        with open(path, "rb") as f:
            head = f.read(4)
        if head != _ZIP_MAGIC:
            if zipfile.is_zipfile(path):
                return ("a zip archive that does not start at the first byte (data before it, "
                        "e.g. a pickle with an archive appended), not a torch.save file")
            if archive_only:
                return "not a complete torch.save archive (truncated, or not a checkpoint)"
            return None
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except Exception as e:  # any failure to read it through is a reason not to load it
        return f"corrupt or truncated, not a complete torch.save archive ({type(e).__name__}: {e})"
    if bad is not None:
        return f"its member {bad} fails its CRC-32 checksum (damaged bytes)"
    _VERIFIED[key] = None
    while len(_VERIFIED) > 16:
        _VERIFIED.popitem(last=False)
    return None


def first_non_finite(obj, prefix: str = "") -> Optional[str]:
    """The name of the first tensor or array in ``obj`` (nested dicts, lists, tuples) with a NaN
    or an infinite value, e.g. ``"model/head.cls_score.weight"``; None when all are finite."""
    # A finite sum proves every element finite (a NaN or an inf would carry into it), in one pass
    # without a temporary; only a sum that is not finite (or that overflowed) needs isfinite.
    if isinstance(obj, torch.Tensor):
        if ((obj.is_floating_point() or obj.is_complex()) and not bool(torch.isfinite(obj.sum()))
                and not bool(torch.isfinite(obj).all())):
            return prefix or "the tensor"
        return None
    if isinstance(obj, np.ndarray):
        if (obj.dtype.kind in "fc" and not np.isfinite(obj.sum())
                and not bool(np.isfinite(obj).all())):
            return prefix or "the array"
        return None
    if isinstance(obj, Mapping):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return None
    for key, value in items:
        found = first_non_finite(value, f"{prefix}/{key}" if prefix else str(key))
        if found is not None:
            return found
    return None


# --------------------------------------------------------------------------------- reading
def _unpickle(local: str):
    """A bare pickle (Detectron2's ``.pkl``) through the restricted unpickler; the stream must end
    at the end of the file."""
    with open(local, "rb") as f:
        loaded = _RestrictedUnpickler(f, encoding="latin1").load()
        rest = len(f.read())
    if rest:
        raise pickle.UnpicklingError(f"{rest} bytes follow the pickled data (something appended)")
    return loaded


def _unsafe_names(local: str, err: Exception) -> List[str]:
    """The globals that made a safe load refuse ``local``."""
    if isinstance(err, UnsafePickleError):
        return [err.name]
    if "GLOBAL" not in str(err):
        return []
    with contextlib.suppress(Exception):
        with _torch_safe_globals():
            names = torch.serialization.get_unsafe_globals_in_checkpoint(local)
        names = [n for n in names if n not in _SAFE_SOURCES]
        if names:
            return names
    found = re.search(r"GLOBAL (\S+)", str(err))
    return [found.group(1)] if found else []


def _describe_read_error(path: str, err: Exception) -> str:
    """Why ``path`` could not be read as a weights file, in words (text, corrupt, code)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError as e:
        return f"cannot be opened ({e})"
    unsafe = _unsafe_names(path, err)
    if unsafe:
        return (
            f"holds Python code/objects: {', '.join(unsafe)} (a weights file holds only tensors, "
            "numpy arrays, dicts, lists, tuples, strings and numbers). Unpickling it would run "
            "them, so nothing was loaded. If you trust the file and its source, set "
            f"{TRUST_PICKLE_ENV}=1 to unpickle it in full"
        )
    if head and not any(b < 32 and b not in b"\t\n\r\f" for b in head):
        return "a text file, not a weights file"
    text = str(err)
    detail = re.search(r"WeightsUnpickler error: \s*(.+)", text)
    detail = detail.group(1).strip() if detail else (text.strip().splitlines() or [""])[0]
    return ("corrupt or truncated, not a readable weights file "
            f"({type(err).__name__}: {detail})")


def _read(local: str, trusted: bool):
    """Unpickle ``local``: ``torch.load`` for ``torch.save`` files (zip or legacy), the restricted
    unpickler for bare pickles; in full (code may run) when ``trusted``."""
    with open(local, "rb") as f:
        head = f.read(len(_LEGACY_TORCH_MAGIC))
    if head.startswith(_ZIP_MAGIC) or head == _LEGACY_TORCH_MAGIC:
        if trusted:
            return torch.load(local, map_location="cpu", weights_only=False)  # trusted opt-in
        with _torch_safe_globals():
            return torch.load(local, map_location="cpu", weights_only=True)
    if trusted:
        with open(local, "rb") as f:
            return pickle.load(f, encoding="latin1")  # trusted opt-in
    return _unpickle(local)


def load_weights_file(path: str):
    """Read a weights file without running code from it (see the module docstring).

    Args:
        path (str): a local file or a ``PathManager`` URI (``torchvision://resnet50``, ...).

    Returns:
        the loaded object (for a checkpoint, a dict), tensors on the CPU.

    Raises:
        FileNotFoundError: no such file (for ``torchvision://``: where to put it).
        CheckpointError: naming the file: empty, a text file, damaged or truncated bytes, Python
            code or objects beyond :data:`SAFE_GLOBALS` (unless ``$MAYOLACT_TRUST_PICKLE`` is
            "1"), or a non-finite value (naming the tensor).
    """
    local = PathManager.get_local_path(path)
    if not os.path.isfile(local):
        raise FileNotFoundError(f"{path}: no such weights file")
    problem = integrity_problem(local)
    if problem is not None:
        raise CheckpointError(f"{path}: {problem}")
    try:
        loaded = _read(local, trusted=False)
    except Exception as e:
        if os.environ.get(TRUST_PICKLE_ENV) != "1" or not _unsafe_names(local, e):
            raise CheckpointError(f"{path}: {_describe_read_error(local, e)}") from e
        logger.warning("%s: unpickled in full (%s=1): it holds Python objects (%s)", path,
                       TRUST_PICKLE_ENV, ", ".join(_unsafe_names(local, e)))
        loaded = _read(local, trusted=True)
    bad = first_non_finite(loaded)
    if bad is not None:
        raise CheckpointError(
            f"{path}: tensor {bad} holds NaN or infinite values; a damaged or diverged file, "
            "nothing was loaded"
        )
    return loaded
