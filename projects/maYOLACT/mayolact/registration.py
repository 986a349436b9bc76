"""When maYOLACT registers its components with Detectron2: as soon as Detectron2 is imported.

``import mayolact`` imports neither torch nor Detectron2 (a tool's ``--help`` answers at once). The
modules that register the ``YOLACT`` meta-architecture, the backbones, the anchor generator, the
datasets and the ``torchvision://`` weights paths are imported the moment Detectron2 is, before
or after ``mayolact``. So ``import mayolact`` followed by any Detectron2 call
(``build_model(cfg)``, ``DatasetCatalog.get("mayolact_shapes_val")``) finds them, as Detectron2
projects expect.

How: :func:`install` puts a finder at the front of ``sys.meta_path`` that watches the imports of
``detectron2`` and ``mayolact`` modules (it finds nothing itself; it only wraps the loaders the
other finders return). When the outermost of those imports has finished and Detectron2 is loaded,
:data:`REGISTERING_MODULES` are imported, once, and the finder removes itself. Waiting for the
outermost import means that no Detectron2 or maYOLACT module is half-initialised at that moment,
so the registering modules can import whatever they need.
"""
import importlib
import importlib.abc
import sys
import threading

__all__ = ["REGISTERING_MODULES", "install", "register_all", "registered"]

#: Imported when Detectron2 is: every module whose import registers something (backbones, meta-
#: architecture, anchor generator, datasets, path handlers), with what they need.
REGISTERING_MODULES = (
    "mayolact.config",
    "mayolact.anchor_generator",
    "mayolact.backbone",
    "mayolact.data",
    "mayolact.meta_arch",
    "mayolact.evaluation",
    "mayolact.checkpoint",
)

_WATCHED = ("detectron2", "mayolact")

_lock = threading.RLock()
_state = threading.local()  # .depth: watched imports in progress in this thread
_registered = False


def registered() -> bool:
    """Whether :data:`REGISTERING_MODULES` have been imported."""
    return _registered


def register_all() -> None:
    """Import :data:`REGISTERING_MODULES` (once; later calls return at once)."""
    global _registered
    with _lock:
        if _registered:
            return
        _registered = True  # first: the imports below must not re-enter
        _remove_finder()
        for name in REGISTERING_MODULES:
            importlib.import_module(name)


def _watched(fullname: str) -> bool:
    return any(fullname == w or fullname.startswith(w + ".") for w in _WATCHED)


def _after_import() -> None:
    if getattr(_state, "depth", 0) == 0 and "detectron2" in sys.modules:
        register_all()


class _RegisterOnImport(importlib.abc.MetaPathFinder):
    """Wraps the loaders of watched modules so that :func:`_after_import` runs after each."""

    def find_spec(self, fullname, path, target=None):
        if _registered or not _watched(fullname):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module

        def exec_module_then_register(module):
            _state.depth = getattr(_state, "depth", 0) + 1
            try:
                exec_module(module)
            finally:
                _state.depth -= 1
            _after_import()

        # The loader object belongs to this module's spec alone (finders create one per module),
        # so the wrapper changes nothing for any other module.
        loader.exec_module = exec_module_then_register
        return spec


_finder = _RegisterOnImport()


def _remove_finder() -> None:
    if _finder in sys.meta_path:
        sys.meta_path.remove(_finder)


def install() -> None:
    """Register now if Detectron2 is already imported; otherwise when it is (see the module doc)."""
    with _lock:
        if _registered:
            return
        if "detectron2" in sys.modules:
            register_all()
        elif _finder not in sys.meta_path:
            sys.meta_path.insert(0, _finder)
