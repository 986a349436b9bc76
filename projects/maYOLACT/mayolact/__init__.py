"""maYOLACT: mask-aware IoU anchor assignment, YOLACT and maYOLACT for Detectron2.

``import mayolact`` is instant: it imports neither torch nor Detectron2. Everything is registered
with Detectron2 as soon as Detectron2 is imported, before or after this package
(:mod:`mayolact.registration`): the ``YOLACT`` meta-architecture, the backbones
(``build_yolact_resnet_fpn_backbone``, ``build_yolact_resnet_carafe_fpn_backbone``,
``build_mayolact_resnet``), the ``YOLACTAnchorGenerator``, the datasets (``coco_mini_*`` when
present, ``mayolact_shapes_*``) and the ``torchvision://`` weights paths of ``MODEL.WEIGHTS``
(Detectron2's ``PathManager``). Import it only as ``mayolact``: a second import path would register
the same names twice.

The public names below are loaded on first use (``from mayolact import YOLACTPredictor``). To
export another name, add it to ``_EXPORTS`` (name -> submodule), not as an import here: an import
here would load torch with the package.
"""
import importlib
import importlib.util

from .logger import filter_known_warnings
from .registration import install as _install_registration

__version__ = "0.1.0"

#: Public name -> the submodule that defines it.
_EXPORTS = {
    "add_mayolact_config": "config",
    "load_config": "config",
    "IntegralImages": "structures",
    "integral_images": "structures",
    "as_integral_images": "structures",
    "pairwise_giou": "box_ops",
    "pairwise_diou": "box_ops",
    "pairwise_maiou": "maiou",
    "pairwise_maiou_bruteforce": "maiou",
    "mask_over_box": "maiou",
    "ATSSMatcher": "matchers",
    "FixedIoUMatcher": "matchers",
    "build_anchor_matcher": "matchers",
    "YOLACTAnchorGenerator": "anchor_generator",
    "YOLACT": "meta_arch",
    "YOLACTPredictor": "predictor",
    "build_mayolact_evaluator": "evaluation",
    "YOLACTCheckpointer": "checkpoint",
    "ExportedYOLACTPredictor": "export",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    """Load a public name, or a submodule, on first use (PEP 562)."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    elif importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


# Narrow filters for the deprecation warnings Detectron2 and fvcore trigger with this torch.
filter_known_warnings()
# Last: registration may import the submodules at once (when Detectron2 is already loaded).
_install_registration()
