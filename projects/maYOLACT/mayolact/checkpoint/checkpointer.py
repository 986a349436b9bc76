"""Checkpoints of maYOLACT: reading foreign weights and writing runs that survive faults.

:class:`YOLACTCheckpointer` is Detectron2's ``DetectionCheckpointer`` with two concerns added, each
in its own methods:

* loading: recognises the format of ``MODEL.WEIGHTS`` (a Detectron2 checkpoint, a torchvision
  ImageNet ResNet, an mmdetection YOLACT checkpoint) and converts its names on load, refusing
  silent partial loads;
* saving: writes checkpoints atomically and resumes from the newest readable one.
"""
import logging
import os
import re
import zipfile
from collections.abc import Mapping
from typing import Dict, Iterable, List, NamedTuple, Optional, Tuple

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling.backbone.resnet import BottleneckBlock
from detectron2.utils.file_io import PathManager
from fvcore.common.checkpoint import _IncompatibleKeys, _strip_prefix_if_present

from mayolact.checkpoint.torchvision import (
    BOTTOM_UP_PREFIX,
    TORCHVISION_PREFIX,
    convert_torchvision_resnet,
    is_torchvision_resnet,
)

__all__ = [
    "CLASS_LAYERS",
    "MMDET_PREFIXES",
    "CheckpointError",
    "summarize_names",
    "load_weights_file",
    "save_converted_checkpoint",
    "StagedCheckpoint",
    "find_checkpoints",
    "YOLACTCheckpointer",
]

logger = logging.getLogger(__name__)

#: Tensors whose shape depends on MODEL.YOLACT.NUM_CLASSES (the classifier and the semantic head's
#: output conv): the only ones MODEL.YOLACT.WEIGHTS_SKIP_CLASS_LAYERS lets a checkpoint lack.
CLASS_LAYERS = ("head.cls_score.", "semseg_head.conv.")
#: Module prefixes of mmdetection YOLACT state dicts (``checkpoint["state_dict"]``).
MMDET_PREFIXES = ("backbone.", "neck.", "bbox_head.", "mask_head.", "segm_head.")
#: ``__author__`` of checkpoints converted from torchvision (by the checkpointer or
#: ``tools/convert_weights.py``): an ImageNet backbone, everything else starts fresh.
TORCHVISION_AUTHOR = "torchvision"
#: ``__author__`` of checkpoints converted from mmdetection: full models.
MMDET_AUTHOR = "mmdetection"

# Private keys _load_file adds for _load_model (popped there, never saved).
_SOURCE_KEY = "__mayolact_source__"
_UNUSED_KEY = "__mayolact_unused__"
# BatchNorm's step counter: absent from old torchvision files and from FrozenBatchNorm2d, unused in
# eval and by momentum BN, so neither its absence nor its presence says anything about a file.
_COUNTER = "num_batches_tracked"
# The training-only semantic head: a checkpoint may have it for a model built without it.
_TRAINING_ONLY = ("semseg_head.",)


class CheckpointError(ValueError):
    """A weights file that cannot be read, or whose tensors do not fit the model (named in the
    message with the file)."""


def summarize_names(names: Iterable[str]) -> str:
    """Parameter names grouped by module, short enough for one log line.

    Trailing digits become ``*`` (block and level indices), the last part (``weight``, ``bias``,
    ...) is dropped, and groups under the same top-level module share braces, e.g.
    ``backbone.{fpn_lateral*, bottom_up.res*.*.conv2_offset}, head.{cls_score, bbox_pred}, fc``.

    Args:
        names (Iterable[str]): dotted tensor names.

    Returns:
        str: the grouped names, in first-seen order ("" when there are none).
    """
    groups: Dict[str, List[str]] = {}
    for name in names:
        parts = name.split(".")
        parts = [re.sub(r"\d+$", "*", p) for p in (parts[:-1] if len(parts) > 1 else parts)]
        rest = ".".join(parts[1:])
        members = groups.setdefault(parts[0], [])
        if rest not in members:
            members.append(rest)
    out = []
    for root, members in groups.items():
        members = [m for m in members if m]
        if not members:
            out.append(root)
        elif len(members) == 1:
            out.append(f"{root}.{members[0]}")
        else:
            out.append(f"{root}.{{{', '.join(members)}}}")
    return ", ".join(out)


def _describe_read_error(path: str, err: Exception) -> str:
    """Why ``path`` could not be read as a checkpoint, in words (empty, text, corrupt, unsafe)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError as e:
        return f"cannot be opened ({e})"
    if not head:
        return "the file is empty, not a checkpoint"
    if not any(b < 32 and b not in b"\t\n\r\f" for b in head):
        return "a text file, not a PyTorch checkpoint"
    text = str(err)
    found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if found:
        return (
            f"it holds Python objects ({found.group(1)}) besides tensors and plain containers, "
            "which a weights-only torch.load refuses to unpickle (training checkpoints of other "
            f"frameworks often do); if you trust the file, set {TRUST_PICKLE_ENV}=1 to unpickle it"
        )
    detail = re.search(r"WeightsUnpickler error: \s*(.+)", text)
    detail = detail.group(1).strip() if detail else (text.strip().splitlines() or [""])[0]
    return ("corrupt or truncated, not a readable PyTorch checkpoint "
            f"({type(err).__name__}: {detail})")


#: Environment variable: "1" lets a file that a weights-only load refuses be unpickled in full.
#: Unpickling runs code from the file, so it is opt-in, for files the user trusts.
TRUST_PICKLE_ENV = "MAYOLACT_TRUST_PICKLE"


def load_weights_file(path: str):
    """``torch.load`` of a weights file (``weights_only``, on the CPU), with errors in words.

    A file holding Python objects beyond tensors and plain containers (an mmengine training
    checkpoint's message hub, numpy scalars in its meta) is refused, unless
    ``$MAYOLACT_TRUST_PICKLE`` is "1": then it is unpickled in full (with a warning), since such a
    load can run code.

    Args:
        path (str): a local file or a ``PathManager`` URI (``torchvision://resnet50``, ...).

    Returns:
        the loaded object (for a checkpoint, a dict).

    Raises:
        FileNotFoundError: no such file (for ``torchvision://``: where to put it).
        CheckpointError: naming the file: empty, a text file, corrupt or truncated, or holding
            Python objects that a weights-only load refuses.
    """
    local = PathManager.get_local_path(path)
    if not os.path.isfile(local):
        raise FileNotFoundError(f"{path}: no such weights file")
    try:
        return torch.load(local, map_location="cpu", weights_only=True)
    except Exception as e:
        if os.environ.get(TRUST_PICKLE_ENV) == "1" and "Unsupported global" in str(e):
            logger.warning("%s: unpickled in full (%s=1): it holds Python objects", path,
                           TRUST_PICKLE_ENV)
            return torch.load(local, map_location="cpu", weights_only=False)
        raise CheckpointError(f"{path}: {_describe_read_error(local, e)}") from e


def _is_mmdet_state_dict(state_dict) -> bool:
    """Whether ``state_dict`` (a file's ``"state_dict"`` entry) has mmdetection YOLACT names."""
    return (
        isinstance(state_dict, Mapping)
        and len(state_dict) > 0
        and any(isinstance(k, str) and k.startswith(MMDET_PREFIXES[1:]) for k in state_dict)
    )


def _diff(
    state: Dict[str, torch.Tensor], model_state: Dict[str, torch.Tensor]
) -> Tuple[List[str], List[str], List[Tuple[str, tuple, tuple]]]:
    """(missing, unexpected, (name, file shape, model shape) of shape mismatches) of ``state``
    against ``model_state``, BatchNorm counters left out."""
    missing = [k for k in model_state if k not in state and not k.endswith(_COUNTER)]
    unexpected = [k for k in state if k not in model_state and not k.endswith(_COUNTER)]
    shapes = [
        (k, tuple(v.shape), tuple(model_state[k].shape))
        for k, v in state.items()
        if k in model_state and tuple(v.shape) != tuple(model_state[k].shape)
    ]
    return missing, unexpected, shapes


def _mismatch_message(source, what, n_model, missing, unexpected, shapes, advice) -> str:
    """One error message for a file whose tensors do not fit the model."""
    parts = []
    if missing:
        parts.append(
            f"{len(missing)} of the model's {n_model} tensors are not in the file "
            f"({summarize_names(missing)}; e.g. {missing[0]})"
        )
    if unexpected:
        parts.append(
            f"{len(unexpected)} tensors of the file are not in the model "
            f"({summarize_names(unexpected)}; e.g. {unexpected[0]})"
        )
    if shapes:
        shown = "; ".join(f"{k}: {a} in the file, {b} in the model" for k, a, b in shapes[:3])
        more = f"; and {len(shapes) - 3} more" if len(shapes) > 3 else ""
        parts.append(f"{len(shapes)} tensors have another shape ({shown}{more})")
    return (
        f"{source}: the {what} does not match the model built from the config, nothing was "
        f"loaded: " + "; ".join(parts) + f". {advice}"
    )


#: Names of the checkpoints a training run writes (Detectron2's ``PeriodicCheckpointer``: the
#: iteration in 7 digits, or "final"); only these, and the file ``last_checkpoint`` names, are
#: resumed from, so that other weights kept in the output folder are never taken for a run's state.
_RUN_CHECKPOINT = re.compile(r"^model_(\d+|final)\.pth$")
#: Temporary files of :meth:`YOLACTCheckpointer.stage`: hidden, with the writer's process id.
_PARTIAL = re.compile(r"^\.(.+)\.(\d+)\.tmp$")
_TAG = "last_checkpoint"


class StagedCheckpoint(NamedTuple):
    """A checkpoint written to a temporary file, not yet under its name
    (:meth:`YOLACTCheckpointer.stage`)."""

    temporary: str  # the written file, hidden in the save folder
    path: str  # where :meth:`YOLACTCheckpointer.publish` puts it


def find_checkpoints(folder: str) -> List[str]:
    """The checkpoints of a training run in ``folder``, newest first.

    Those are the files named as a run names them (``model_0004999.pth``, ``model_final.pth``) and
    the file ``last_checkpoint`` names, if it exists; newest by modification time, the tagged one
    first among equals.

    Args:
        folder (str): a run's output folder (need not exist).

    Returns:
        list[str]: paths, newest first (empty when there is none).
    """
    if not os.path.isdir(folder):
        return []
    names = {n for n in os.listdir(folder) if _RUN_CHECKPOINT.match(n)}
    tagged = None
    try:
        with open(os.path.join(folder, _TAG)) as f:
            tagged = f.read().strip() or None
    except OSError:
        pass
    if tagged and os.path.isfile(os.path.join(folder, tagged)):
        names.add(tagged)
    paths = [os.path.join(folder, n) for n in names if os.path.isfile(os.path.join(folder, n))]

    def newness(path):
        # Modification time first (a resumed run writes lower iterations after model_final); the
        # tag, then the iteration in the name, break ties of a coarse file-system clock.
        name = os.path.basename(path)
        match = _RUN_CHECKPOINT.match(name)
        if not match:
            number = -1.0
        else:
            number = float("inf") if match.group(1) == "final" else float(match.group(1))
        return os.path.getmtime(path), name == tagged, number

    return sorted(paths, key=newness, reverse=True)


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


def _write_durably(path: str, write) -> None:
    """Call ``write(binary file)`` on ``path``, then flush and fsync it; remove it on failure."""
    try:
        with open(path, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        if os.path.exists(path):
            os.remove(path)
        raise


def _unreadable_reason(path: str) -> Optional[str]:
    """Why ``path`` is not a complete ``torch.save`` file, or None when it is.

    ``torch.save`` writes a zip archive whose members carry CRC-32 checksums: a file cut short
    (a kill during a write that did not go through :meth:`YOLACTCheckpointer.save`, a full disk)
    has no zip directory, and damaged bytes fail their checksum. Both are found by reading the file
    once, without unpickling it.
    """
    try:
        if os.path.getsize(path) == 0:
            return "the file is empty"
        if not zipfile.is_zipfile(path):
            return "not a complete torch.save archive (truncated, or not a checkpoint)"
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except Exception as e:  # any failure to read it through is a reason not to resume from it
        return f"{type(e).__name__}: {e}"
    return None if bad is None else f"its member {bad} fails its checksum (damaged bytes)"


def save_converted_checkpoint(model: Dict[str, torch.Tensor], path: str, author: str) -> None:
    """Write ``{"model": model, "__author__": author}`` (a Detectron2 checkpoint) to ``path``,
    atomically: through a temporary file beside it, fsync'ed and renamed over ``path``.

    Args:
        model (dict[str, Tensor]): state dict in maYOLACT's parameter names.
        path (str): destination file; its folder is created if needed.
        author (str): the source format (:data:`TORCHVISION_AUTHOR`, :data:`MMDET_AUTHOR`), which
            :class:`YOLACTCheckpointer` reads back to apply that format's rules (a torchvision
            backbone leaves the FPN and the heads fresh).
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    temporary = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    _write_durably(temporary, lambda f: torch.save({"model": model, "__author__": author}, f))
    os.replace(temporary, path)
    _fsync_folder(folder)


class YOLACTCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` for YOLACT / maYOLACT models (see the module docstring)."""

    # ------------------------------------------------------------------------------------ loading
    # Formats of MODEL.WEIGHTS, recognised by content (any file name):
    # * Detectron2: {"model": state dict, ...} or a bare state dict in maYOLACT's names. Every
    #   tensor must fit, except the class layers when skip_class_layers is set.
    # * torchvision ImageNet ResNet (a bare state dict, a torchvision:// path, or a file that
    #   tools/convert_weights.py wrote): the ResNet must fit exactly; the FPN, the heads and the DCN
    #   offset convs start fresh.
    # * mmdetection YOLACT ({"state_dict": ..., "meta": ...}): converted by
    #   mayolact.checkpoint.mmdet, then loaded as a full model.

    def __init__(self, model, save_dir: str = "", *, skip_class_layers: bool = False, **kwargs):
        """
        Args:
            model (nn.Module): the model (a DDP/DP wrapper is unwrapped).
            save_dir (str): folder of saved checkpoints.
            skip_class_layers (bool): a full checkpoint may lack the class layers
                (:data:`CLASS_LAYERS`) or have them for another class count; they then keep
                their fresh initialisation (``MODEL.YOLACT.WEIGHTS_SKIP_CLASS_LAYERS``).
            **kwargs: ``save_to_disk`` and checkpointables, as ``DetectionCheckpointer``.
        """
        super().__init__(model, save_dir, **kwargs)
        self.skip_class_layers = bool(skip_class_layers)

    @classmethod
    def from_config(cls, cfg, model, save_dir: str = "", **kwargs) -> "YOLACTCheckpointer":
        """A checkpointer for ``model`` with the loading options of ``cfg`` (see ``__init__``)."""
        return cls(
            model, save_dir, skip_class_layers=cfg.MODEL.YOLACT.WEIGHTS_SKIP_CLASS_LAYERS, **kwargs
        )

    def load(self, path: str, *args, **kwargs) -> dict:
        """``DetectionCheckpointer.load``; a missing local file raises ``FileNotFoundError`` naming
        it (Detectron2 asserts)."""
        if path and "://" not in path and not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such weights file (MODEL.WEIGHTS)")
        return super().load(path, *args, **kwargs)

    def _load_file(self, filename: str) -> dict:
        """Read ``filename`` and bring it to Detectron2's form ``{"model": state dict, ...}``.

        Raises:
            CheckpointError: naming the file and the problem (empty, text, corrupt, not a dict
                of tensors, an unknown layout, a Caffe2 file, an unconvertible mmdet checkpoint).
        """
        if filename.endswith((".pkl", ".pyth")):
            try:
                loaded = super()._load_file(filename)
            except Exception as e:
                raise CheckpointError(f"{filename}: {_describe_read_error(filename, e)}") from e
            if loaded.get("matching_heuristics", False):
                raise CheckpointError(
                    f"{filename}: a {loaded.get('__author__', 'Caffe2')} model-zoo file, whose "
                    "names Detectron2 can only match by heuristics; maYOLACT loads exact names "
                    f"only. For ImageNet initialisation use {TORCHVISION_PREFIX}resnet50 "
                    "(torchvision-style ResNet: stride in the 3x3 conv, RGB input)"
                )
            loaded[_SOURCE_KEY] = filename
            return loaded
        checkpoint = self._recognise(load_weights_file(filename), filename)
        checkpoint[_SOURCE_KEY] = filename
        return checkpoint

    def _recognise(self, loaded, filename: str) -> dict:
        """Detect the format of a loaded file and convert it (see the comment above)."""
        if not isinstance(loaded, Mapping):
            raise CheckpointError(
                f"{filename}: not a checkpoint: it holds a {type(loaded).__name__}, not a dict"
            )
        if "model" in loaded:
            if not isinstance(loaded["model"], Mapping):
                raise CheckpointError(
                    f"{filename}: 'model' is a {type(loaded['model']).__name__}, not a state dict"
                )
            return dict(loaded)
        if "state_dict" in loaded:
            if not _is_mmdet_state_dict(loaded["state_dict"]):
                raise CheckpointError(
                    f"{filename}: has a 'state_dict' but not an mmdetection YOLACT one (no names "
                    f"start with {', '.join(MMDET_PREFIXES[1:])})"
                )
            return {"model": self._convert_mmdet(loaded["state_dict"], filename),
                    "__author__": MMDET_AUTHOR}
        if is_torchvision_resnet(loaded):
            try:
                model, unused = convert_torchvision_resnet(loaded)
            except ValueError as e:
                raise CheckpointError(f"{filename}: {e}") from e
            return {"model": model, "__author__": TORCHVISION_AUTHOR, _UNUSED_KEY: unused}
        if loaded and all(isinstance(v, (torch.Tensor, np.ndarray)) for v in loaded.values()):
            return {"model": dict(loaded)}  # a bare state dict, in maYOLACT's names or not
        keys = ", ".join(str(k) for k in list(loaded)[:5])
        raise CheckpointError(
            f"{filename}: unrecognised checkpoint layout (top-level keys: {keys or 'none'}); "
            "expected a Detectron2 checkpoint ('model'), an mmdetection one ('state_dict') or a "
            "torchvision ResNet state dict"
        )

    def _convert_mmdet(self, state_dict, filename: str) -> Dict[str, torch.Tensor]:
        """mmdetection names -> maYOLACT names, by ``mayolact.checkpoint.mmdet`` (imported here, so
        that the other formats load without it)."""
        try:
            from .mmdet import convert_mmdet_checkpoint
        except ModuleNotFoundError as e:
            if e.name != f"{__package__}.mmdet":
                raise
            raise CheckpointError(
                f"{filename}: an mmdetection checkpoint, but this installation has no "
                f"{__package__}.mmdet to convert it"
            ) from e
        try:
            return dict(convert_mmdet_checkpoint(dict(state_dict), self.model))
        except (ValueError, KeyError) as e:
            raise CheckpointError(f"{filename}: mmdetection checkpoint: {e}") from e

    def _load_model(self, checkpoint: dict) -> _IncompatibleKeys:
        """Check every tensor against the model, then load; a file that does not fit raises
        before anything is loaded (no silent partial load).

        Returns:
            _IncompatibleKeys: ``missing_keys`` what starts fresh, ``unexpected_keys`` what the
            file has that the model does not use; no ``incorrect_shapes`` (those raise or, for
            skipped class layers, count as fresh).

        Raises:
            CheckpointError: the file's tensors do not fit the model (see the module docstring).
        """
        source = checkpoint.pop(_SOURCE_KEY, "the checkpoint")
        unused = list(checkpoint.pop(_UNUSED_KEY, []))
        state = checkpoint["model"]
        try:
            self._convert_ndarray_to_tensor(state)
        except ValueError as e:
            raise CheckpointError(f"{source}: {e}") from e
        _strip_prefix_if_present(state, "module.")
        model_state = self.model.state_dict()
        if checkpoint.get("__author__") == TORCHVISION_AUTHOR:
            state, fresh = self._check_imagenet_backbone(state, model_state, source)
            what = "torchvision ImageNet ResNet"
        else:
            state, fresh, extra_unused = self._check_full_model(state, model_state, source)
            unused += extra_unused
            what = checkpoint.get("__author__") or "checkpoint"
        checkpoint["model"] = state
        super()._load_model(checkpoint)
        self.logger.info("Loaded %d tensors from %s (%s)", len(state), source, what)
        return _IncompatibleKeys(missing_keys=fresh, unexpected_keys=unused, incorrect_shapes=[])

    def _bottom_up_prefix(self, model_state, source: str) -> str:
        """Module path of the model's (only) Detectron2 ResNet, e.g. "backbone.bottom_up."."""
        stem = "stem.conv1.weight"
        prefixes = [
            k[: -len(stem)] for k in model_state if k == stem or k.endswith("." + stem)
        ]
        if len(prefixes) != 1:
            raise CheckpointError(
                f"{source}: ImageNet ResNet weights need a model with one Detectron2 ResNet "
                f"(a 'stem.conv1'); this {type(self.model).__name__} has {len(prefixes)}"
            )
        return prefixes[0]

    def _check_imagenet_backbone(self, state, model_state, source: str):
        """Rules of an ImageNet backbone: the ResNet must fit exactly (DCN offset convs aside).

        Returns:
            tuple: (state dict in the model's names, names that start fresh).
        """
        prefix = self._bottom_up_prefix(model_state, source)
        foreign = [k for k in state if not k.startswith(BOTTOM_UP_PREFIX)]
        if foreign:
            raise CheckpointError(
                f"{source}: a torchvision-converted file with names outside the ResNet "
                f"({summarize_names(foreign)})"
            )
        state = {prefix + k[len(BOTTOM_UP_PREFIX):]: v for k, v in state.items()}
        for name, block in self.model.named_modules():
            if isinstance(block, BottleneckBlock) and tuple(block.conv1.stride) != (1, 1):
                raise CheckpointError(
                    f"{source}: torchvision ResNets stride in the 3x3 conv, but {name}.conv1 has "
                    f"stride {tuple(block.conv1.stride)}: set MODEL.RESNETS.STRIDE_IN_1X1 False"
                )
        backbone = {k: v for k, v in model_state.items() if k.startswith(prefix)}
        missing, unexpected, shapes = _diff(state, backbone)
        # DCNv2 offset/modulation convs have no ImageNet counterpart: zero-initialised, as the
        # official models start.
        missing = [k for k in missing if ".conv2_offset." not in k]
        if missing or unexpected or shapes:
            raise CheckpointError(_mismatch_message(
                source, "torchvision ImageNet ResNet", len(backbone), missing, unexpected, shapes,
                "Check MODEL.RESNETS.DEPTH (the file's ResNet), NUM_GROUPS, WIDTH_PER_GROUP and "
                "MODEL.YOLACT.RESNET_WIDTH_SCALE (1.0 for ImageNet weights)."))
        state = {k: v for k, v in state.items() if k in model_state}
        fresh = [k for k in model_state if k not in state and not k.endswith(_COUNTER)]
        return state, fresh

    def _check_full_model(self, state, model_state, source: str):
        """Rules of a full checkpoint: every tensor fits, except skipped class layers.

        Returns:
            tuple: (state dict to load, names that start fresh, names of the file left unused).
        """
        missing, unexpected, shapes = _diff(state, model_state)
        has_training_only = any(k.startswith(_TRAINING_ONLY) for k in model_state)
        unused = ([] if has_training_only
                  else [k for k in unexpected if k.startswith(_TRAINING_ONLY)])
        unexpected = [k for k in unexpected if k not in unused]
        skipped = []
        if self.skip_class_layers:
            skipped = [k for k in missing if k.startswith(CLASS_LAYERS)]
            skipped += [k for k, _, _ in shapes if k.startswith(CLASS_LAYERS)]
            missing = [k for k in missing if not k.startswith(CLASS_LAYERS)]
            shapes = [s for s in shapes if not s[0].startswith(CLASS_LAYERS)]
        if missing or unexpected or shapes:
            bad = missing + [k for k, _, _ in shapes]
            if not unexpected and all(k.startswith(CLASS_LAYERS) for k in bad):
                advice = (
                    "Only the class layers differ: to fine-tune with another class count, set "
                    "MODEL.YOLACT.WEIGHTS_SKIP_CLASS_LAYERS True (they then start fresh)."
                )
            elif state and all(k.startswith(BOTTOM_UP_PREFIX) for k in state):
                advice = (
                    "The file holds a backbone only; for ImageNet initialisation use "
                    f"{TORCHVISION_PREFIX}resnet50, a torchvision ResNet state dict or a file of "
                    "tools/convert_weights.py torchvision."
                )
            else:
                advice = "The file was written for another architecture or config."
            raise CheckpointError(_mismatch_message(
                source, "checkpoint", len(model_state), missing, unexpected, shapes, advice))
        state = {k: v for k, v in state.items() if k in model_state and k not in skipped}
        return state, skipped, unused

    def _log_incompatible_keys(self, incompatible: _IncompatibleKeys) -> None:
        """One line for what the file had that the model does not use, one for what starts fresh
        (names grouped by module, :func:`summarize_names`)."""
        if incompatible.unexpected_keys:
            self.logger.info(
                "Unused from the checkpoint (%d tensors): %s",
                len(incompatible.unexpected_keys),
                summarize_names(incompatible.unexpected_keys),
            )
        if incompatible.missing_keys:
            self.logger.info(
                "Initialised fresh, not from the checkpoint (%d tensors): %s",
                len(incompatible.missing_keys),
                summarize_names(incompatible.missing_keys),
            )

    # ---------------------------------------------------------------------- saving and resuming
    # A checkpoint is written to a hidden temporary file in the save folder (flushed and fsync'ed)
    # and renamed over its final name (os.replace: atomic on POSIX and Windows); `last_checkpoint`
    # names it only after the rename and is itself replaced the same way. A kill at any moment
    # leaves the previous checkpoint and tag whole, and at worst a temporary file that resuming
    # ignores. Paths that are not local files (PathManager URIs) are saved by Detectron2 as before.

    def _saves_locally(self) -> bool:
        return bool(self.save_dir) and "://" not in str(self.save_dir)

    def stage(self, name: str, **kwargs) -> Optional[StagedCheckpoint]:
        """Write the model, the checkpointables and ``kwargs`` to a temporary file in the save
        folder; :meth:`publish` then gives it its name, :meth:`discard` drops it.

        Args:
            name (str): the checkpoint's name, without ``.pth``.
            **kwargs: extra data to save (e.g. ``iteration``), as ``Checkpointer.save``.

        Returns:
            StagedCheckpoint, or None where this process does not save (not the main process, or
            no save folder).
        """
        if not self.save_dir or not self.save_to_disk:
            return None
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        if os.path.basename(path) != basename:
            raise ValueError(f"checkpoint name {name!r} must not contain a folder")
        os.makedirs(self.save_dir, exist_ok=True)
        temporary = os.path.join(self.save_dir, f".{basename}.{os.getpid()}.tmp")
        _write_durably(temporary, lambda f: torch.save(data, f))
        return StagedCheckpoint(temporary, path)

    def publish(self, staged: StagedCheckpoint) -> str:
        """Rename a staged checkpoint to its name, then tag it in ``last_checkpoint``.

        Returns:
            str: the checkpoint's path.
        """
        os.replace(staged.temporary, staged.path)
        _fsync_folder(os.path.dirname(staged.path))
        self.tag_last_checkpoint(os.path.basename(staged.path))
        self.logger.info("Saved checkpoint %s", staged.path)
        return staged.path

    def discard(self, staged: StagedCheckpoint) -> None:
        """Remove a staged checkpoint (it never gets its name)."""
        if os.path.exists(staged.temporary):
            os.remove(staged.temporary)

    def save(self, name: str, **kwargs) -> None:
        """``Checkpointer.save``, atomically for a local folder (see the comment above)."""
        if not self._saves_locally():
            super().save(name, **kwargs)
            return
        staged = self.stage(name, **kwargs)
        if staged is not None:
            self.publish(staged)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        """Write ``last_checkpoint`` through a temporary file and a rename."""
        if not self._saves_locally():
            super().tag_last_checkpoint(last_filename_basename)
            return
        path = os.path.join(self.save_dir, _TAG)
        temporary = os.path.join(self.save_dir, f".{_TAG}.{os.getpid()}.tmp")
        _write_durably(temporary, lambda f: f.write(last_filename_basename.encode()))
        os.replace(temporary, path)
        _fsync_folder(self.save_dir)

    def remove_partial_saves(self) -> List[str]:
        """Delete the temporary files that killed processes left in the save folder (those of
        this process are kept).

        Returns:
            list[str]: the removed paths.
        """
        if not self._saves_locally() or not self.save_to_disk or not os.path.isdir(self.save_dir):
            return []
        removed = []
        for name in os.listdir(self.save_dir):
            match = _PARTIAL.match(name)
            if match and int(match.group(2)) != os.getpid():
                os.remove(os.path.join(self.save_dir, name))
                removed.append(os.path.join(self.save_dir, name))
        if removed:
            self.logger.info("Removed %d partial checkpoint file(s) of an interrupted save: %s",
                             len(removed), ", ".join(os.path.basename(p) for p in removed))
        return removed

    def has_checkpoint(self) -> bool:
        """Whether the save folder holds a run's checkpoint (:func:`find_checkpoints`), tagged in
        ``last_checkpoint`` or not (a kill between a rename and the tag leaves it untagged)."""
        if not self._saves_locally():
            return super().has_checkpoint()
        return bool(find_checkpoints(self.save_dir))

    def newest_readable_checkpoint(self) -> str:
        """The newest checkpoint of the save folder that can be read through.

        Newer ones that cannot (cut short, damaged) are skipped with a warning that names them
        and the one used instead.

        Raises:
            CheckpointError: the folder holds checkpoints but none is readable.
        """
        skipped = []
        for path in find_checkpoints(self.save_dir):
            reason = _unreadable_reason(path)
            if reason is None:
                if skipped:
                    self.logger.warning(
                        "Resuming from %s, the newest readable checkpoint: %s",
                        path, "; ".join(f"{p} is unreadable ({why})" for p, why in skipped),
                    )
                return path
            skipped.append((path, reason))
        raise CheckpointError(
            f"{self.save_dir}: no readable checkpoint to resume from ("
            + "; ".join(f"{os.path.basename(p)}: {why}" for p, why in skipped)
            + "). Move them away, or start afresh with SOLVER.YOLACT.OVERWRITE_CHECKPOINTS True"
        )

    def resume_or_load(self, path: str, *, resume: bool = True) -> dict:
        """``Checkpointer.resume_or_load`` that resumes from the newest *readable* checkpoint of
        the save folder (:meth:`newest_readable_checkpoint`), with everything it holds; without
        one (or with ``resume=False``), loads the model alone from ``path``.

        Raises:
            CheckpointError: checkpoints exist but none is readable.
        """
        if resume and self._saves_locally() and self.has_checkpoint():
            return self.load(self.newest_readable_checkpoint())
        return super().resume_or_load(path, resume=resume)
