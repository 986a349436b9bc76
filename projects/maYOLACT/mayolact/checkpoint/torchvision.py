"""torchvision's ImageNet ResNets as maYOLACT backbones: names, files and ``torchvision://`` paths.

The paper initialises every model from torchvision's ImageNet ResNet-50. Its state dict differs from
Detectron2's ResNet (:func:`mayolact.modeling.backbone.build_mayolact_resnet`) in names only; shapes
and layouts are the same because both put the stride of a bottleneck in its 3x3 conv
(``MODEL.RESNETS.STRIDE_IN_1X1: False``):

================================  ===========================================
torchvision                       Detectron2 (under ``backbone.bottom_up.``)
================================  ===========================================
``conv1``                         ``stem.conv1``
``bn1``                           ``stem.conv1.norm``
``layer{i}.{j}.conv{k}``          ``res{i+1}.{j}.conv{k}``
``layer{i}.{j}.bn{k}``            ``res{i+1}.{j}.conv{k}.norm``
``layer{i}.{j}.downsample.0``     ``res{i+1}.{j}.shortcut``
``layer{i}.{j}.downsample.1``     ``res{i+1}.{j}.shortcut.norm``
``fc``                            unused (the ImageNet classifier)
================================  ===========================================

The 3x3 conv of a deformable (DCNv2) block keeps the name ``conv2`` and the shape of a plain one, so
it takes torchvision's weight as well; its offset/modulation conv ``conv2_offset`` has no
counterpart and keeps its zero initialisation.

``torchvision://resnet50`` (and ``resnet18``, ``resnet34``, ``resnet101``, ``resnet152``) names
torchvision's ``IMAGENET1K_V1`` weights, the ones the paper used. Importing this module registers a
path handler with Detectron2's ``PathManager``, so ``MODEL.WEIGHTS: torchvision://resnet50``
resolves to the file in torch.hub's cache (``$TORCH_HOME/hub/checkpoints``), downloading it through
torchvision's weights API where the machine is online.
"""
import logging
import os
import re
from typing import Dict, List, Mapping, Tuple
from urllib.parse import urlparse

import torch
import torchvision
from detectron2.utils.file_io import PathManager
from iopath.common.file_io import PathHandler

__all__ = [
    "BOTTOM_UP_PREFIX",
    "TORCHVISION_PREFIX",
    "TORCHVISION_RESNETS",
    "is_torchvision_resnet",
    "convert_torchvision_resnet",
    "torchvision_weights",
    "torchvision_cache_path",
    "resolve_torchvision_path",
    "TorchvisionPathHandler",
]

logger = logging.getLogger(__name__)

#: Module path of the ResNet inside maYOLACT models (both FPN backbones wrap it as ``bottom_up``).
BOTTOM_UP_PREFIX = "backbone.bottom_up."
#: URI scheme of torchvision's ImageNet weights in ``MODEL.WEIGHTS``.
TORCHVISION_PREFIX = "torchvision://"
#: Architectures ``torchvision://`` accepts (their ``IMAGENET1K_V1`` weights).
TORCHVISION_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")

# A torchvision ResNet name: the stem, the classifier, or a block tensor of layer1..layer4.
_STEM = re.compile(r"^(conv1|bn1|fc)\.(\w+)$")
_BLOCK = re.compile(r"^layer([1-4])\.(\d+)\.(conv\d|bn\d|downsample\.[01])\.(\w+)$")


def is_torchvision_resnet(state_dict: Mapping) -> bool:
    """Whether ``state_dict`` looks like a torchvision ResNet's (stem ``conv1`` and ``layer1``).

    Args:
        state_dict (Mapping): a loaded file's top-level mapping.

    Returns:
        bool: True when it has ``conv1.weight`` and at least one ``layer1.`` tensor.
    """
    return "conv1.weight" in state_dict and any(
        isinstance(k, str) and k.startswith("layer1.") for k in state_dict
    )


def _detectron2_name(name: str) -> str:
    """The Detectron2 ResNet name of a torchvision name, "" for the classifier, None if unknown."""
    m = _STEM.match(name)
    if m:
        module, param = m.groups()
        if module == "fc":
            return ""
        return f"stem.conv1.{param}" if module == "conv1" else f"stem.conv1.norm.{param}"
    m = _BLOCK.match(name)
    if not m:
        return None
    layer, block, module, param = m.groups()
    stage = f"res{int(layer) + 1}.{block}"
    if module.startswith("conv"):
        return f"{stage}.{module}.{param}"
    if module.startswith("bn"):
        return f"{stage}.conv{module[2:]}.norm.{param}"
    return f"{stage}.shortcut.{param}" if module.endswith("0") else f"{stage}.shortcut.norm.{param}"


def convert_torchvision_resnet(
    state_dict: Mapping[str, torch.Tensor], prefix: str = BOTTOM_UP_PREFIX
) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Rename a torchvision ResNet state dict to Detectron2's ResNet names (table in the module
    doc).

    Tensors are not copied or changed.

    Args:
        state_dict (Mapping[str, Tensor]): torchvision ``resnet*`` names (``conv1.weight``,
            ``layer1.0.bn1.running_mean``, ``fc.bias``, ...).
        prefix (str): prepended to every converted name (the ResNet's path in the model).

    Returns:
        tuple: (dict of converted name -> tensor, sorted list of the torchvision names not used:
        the ``fc`` classifier).

    Raises:
        ValueError: names that are not a torchvision ResNet's, or values that are not tensors
            (both named).
    """
    converted, unused, unknown = {}, [], []
    for name, value in state_dict.items():
        new = _detectron2_name(name) if isinstance(name, str) else None
        if new is None:
            unknown.append(str(name))
        elif not isinstance(value, torch.Tensor):
            raise ValueError(
                f"torchvision ResNet state dict: {name} is a {type(value).__name__}, not a tensor"
            )
        elif new:
            converted[prefix + new] = value
        else:
            unused.append(name)
    if unknown:
        shown = ", ".join(sorted(unknown)[:5])
        raise ValueError(
            f"not a torchvision ResNet state dict: {len(unknown)} names are not a ResNet's "
            f"(conv1, bn1, layer1-4, fc), e.g. {shown}"
        )
    return converted, sorted(unused)


def torchvision_weights(name: str):
    """torchvision's ``IMAGENET1K_V1`` weights enum entry of a ResNet.

    Args:
        name (str): one of :data:`TORCHVISION_RESNETS`, e.g. "resnet50".

    Returns:
        torchvision.models.WeightsEnum: e.g. ``ResNet50_Weights.IMAGENET1K_V1``.

    Raises:
        ValueError: an unsupported name.
    """
    if name not in TORCHVISION_RESNETS:
        raise ValueError(
            f"{TORCHVISION_PREFIX}{name}: unsupported; use one of "
            + ", ".join(TORCHVISION_PREFIX + n for n in TORCHVISION_RESNETS)
        )
    return torchvision.models.get_model_weights(name).IMAGENET1K_V1


def torchvision_cache_path(name: str) -> str:
    """Where torchvision keeps the weights of ``name``:
    ``<torch.hub.get_dir()>/checkpoints/<file>``.

    The file name is the last part of the weights' URL (e.g. ``resnet50-0676ba61.pth``), as
    ``torch.hub.load_state_dict_from_url`` stores it; ``torch.hub.get_dir()`` follows
    ``$TORCH_HOME`` (default ``~/.cache/torch``) + ``/hub``.
    """
    url = torchvision_weights(name).url
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urlparse(url).path))


def resolve_torchvision_path(uri: str) -> str:
    """The local file of ``torchvision://<name>``, downloaded into torch.hub's cache if missing.

    Args:
        uri (str): e.g. "torchvision://resnet50".

    Returns:
        str: path of the cached torchvision state-dict file.

    Raises:
        ValueError: not a ``torchvision://`` URI of a supported ResNet.
        FileNotFoundError: the file is not cached and could not be downloaded (offline); the
            message gives the URL, the file name and the exact path to put it at.
    """
    if not uri.startswith(TORCHVISION_PREFIX):
        raise ValueError(f"{uri}: not a {TORCHVISION_PREFIX} path")
    name = uri[len(TORCHVISION_PREFIX):].strip("/")
    weights = torchvision_weights(name)
    path = torchvision_cache_path(name)
    if os.path.isfile(path):
        return path
    logger.info("%s: downloading %s to %s", uri, weights.url, path)
    try:
        # torchvision's own route: downloads into torch.hub's cache (checking the hash in the
        # file name) and reads the file back.
        weights.get_state_dict(progress=False, check_hash=True, weights_only=True)
    except Exception as e:  # offline, proxy, HTTP or hash errors: all end in the same advice
        raise FileNotFoundError(
            f"{uri}: torchvision's ImageNet weights ({weights}) are not in torch.hub's cache and "
            f"could not be downloaded ({type(e).__name__}: {e}). On a machine that is online, "
            f"download {weights.url} and put the file {os.path.basename(path)} at {path} "
            f"(torch.hub's cache: $TORCH_HOME/hub/checkpoints), or convert it with "
            f"`tools/convert_weights.py torchvision {os.path.basename(path)} R-50.pth` and set "
            f"MODEL.WEIGHTS to the converted file"
        ) from None  # the cause is in the message: no chain of three tracebacks
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{uri}: torchvision reported no error, but {path} is missing")
    return path


class TorchvisionPathHandler(PathHandler):
    """``PathManager`` handler of ``torchvision://<resnet>`` (see
    :func:`resolve_torchvision_path`)."""

    def _get_supported_prefixes(self) -> List[str]:
        return [TORCHVISION_PREFIX]

    def _get_local_path(self, path: str, force: bool = False, **kwargs) -> str:
        # ``force`` (re-fetch) is not honoured: a cached torchvision file is immutable (its name
        # carries its hash).
        self._check_kwargs(kwargs)
        return resolve_torchvision_path(path)

    def _open(self, path: str, mode: str = "r", buffering: int = -1, **kwargs):
        self._check_kwargs(kwargs)
        if any(c in mode for c in "wax+"):
            raise ValueError(f"{path}: torchvision weights are read-only (mode {mode!r})")
        return open(resolve_torchvision_path(path), mode, buffering=buffering)

    def _exists(self, path: str, **kwargs) -> bool:
        self._check_kwargs(kwargs)
        name = path[len(TORCHVISION_PREFIX):].strip("/")
        return name in TORCHVISION_RESNETS and os.path.isfile(torchvision_cache_path(name))

    def _isfile(self, path: str, **kwargs) -> bool:
        return self._exists(path, **kwargs)


PathManager.register_handler(TorchvisionPathHandler())
