"""Checkpoints of maYOLACT: reading foreign weights and writing runs that survive faults.

:class:`YOLACTCheckpointer` is Detectron2's ``DetectionCheckpointer`` with two concerns added, each
in its own methods:

* loading: every file goes through :func:`~mayolact.checkpoint.weights_file.load_weights_file`
  (no code runs from a file, damaged bytes and non-finite values are refused, Detectron2's
  ``.pkl`` files included); the format of ``MODEL.WEIGHTS`` (a Detectron2 checkpoint, a torchvision
  ImageNet ResNet, an mmdetection YOLACT checkpoint) is recognised and converted on load, refusing
  silent partial loads and, for inference, freshly initialised heads;
* saving: writes checkpoints atomically (:mod:`mayolact.utils.file_io`) and resumes from the newest
  readable one of its own folder (``last_checkpoint`` may only name a file inside it).
"""
import logging
import os
import re
from collections.abc import Mapping
from typing import Dict, Iterable, List, NamedTuple, Optional, Tuple

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling.backbone.resnet import BottleneckBlock
from fvcore.common.checkpoint import _IncompatibleKeys, _strip_prefix_if_present

from mayolact.checkpoint.torchvision import (
    BOTTOM_UP_PREFIX,
    TORCHVISION_PREFIX,
    convert_torchvision_resnet,
    is_torchvision_resnet,
)
from mayolact.checkpoint.weights_file import (
    TRUST_PICKLE_ENV,
    CheckpointError,
    integrity_problem,
    load_weights_file,
)
from mayolact.utils.file_io import (
    TEMPORARY_NAME,
    atomic_open,
    publish_staged,
    write_staged,
    write_text_atomic,
)

__all__ = [
    "CLASS_LAYERS",
    "MMDET_PREFIXES",
    "TRUST_PICKLE_ENV",
    "CheckpointError",
    "CheckpointWriteError",
    "summarize_names",
    "load_weights_file",
    "save_converted_checkpoint",
    "StagedCheckpoint",
    "find_checkpoints",
    "read_last_checkpoint_tag",
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


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (a full disk, a lost mount): named in the message; the
    previous checkpoints and ``last_checkpoint`` are unchanged."""


#: Names of the checkpoints a training run writes (Detectron2's ``PeriodicCheckpointer``: the
#: iteration in 7 digits, or "final"); only these, and the file ``last_checkpoint`` names, are
#: resumed from, so that other weights kept in the output folder are never taken for a run's state.
_RUN_CHECKPOINT = re.compile(r"^model_(\d+|final)\.pth$")
_TAG = "last_checkpoint"


class StagedCheckpoint(NamedTuple):
    """A checkpoint written to a temporary file, not yet under its name
    (:meth:`YOLACTCheckpointer.stage`)."""

    temporary: str  # the written file, hidden in the save folder
    path: str  # where :meth:`YOLACTCheckpointer.publish` puts it


def _outside(folder: str, name: str) -> Optional[str]:
    """Why ``name`` does not name a file inside ``folder``, or None when it does.

    A run's checkpoints are plain names in its folder: not absolute, no folder part, no ``..``,
    and (after links are followed) still in the folder, so that nothing in the folder can point a
    resume at a file elsewhere.
    """
    if not name or os.path.isabs(name) or name in (".", "..") or "\0" in name or any(
            sep and sep in name for sep in (os.sep, os.altsep)):
        return "not a plain file name in the folder"
    real_folder = os.path.realpath(folder)
    real = os.path.realpath(os.path.join(folder, name))
    if os.path.dirname(real) != real_folder:
        return f"a link to {real}, outside the folder"
    return None


def read_last_checkpoint_tag(folder: str) -> Optional[str]:
    """The checkpoint name that ``folder``'s ``last_checkpoint`` holds, or None without a tag.

    Raises:
        CheckpointError: the tag names anything but a file inside ``folder`` (an absolute path,
            a folder part, ``..``, a link leaving it).
    """
    try:
        with open(os.path.join(folder, _TAG)) as f:
            tagged = f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not tagged:
        return None
    why = _outside(folder, tagged)
    if why is not None:
        raise CheckpointError(
            f"{os.path.join(folder, _TAG)} names {tagged!r}: {why}. A run's tag names one of its "
            "own checkpoints; nothing was loaded. Write the name of a checkpoint of this folder "
            "into it, or remove it"
        )
    return tagged


def find_checkpoints(folder: str) -> List[str]:
    """The checkpoints of a training run in ``folder``, newest first.

    Those are the files named as a run names them (``model_0004999.pth``, ``model_final.pth``) and
    the file ``last_checkpoint`` names, if it exists; newest by modification time, the tagged one
    first among equals. Only files inside ``folder`` count: links that leave it, and a tag that
    names anything else, are left out (:func:`read_last_checkpoint_tag` reports such a tag).

    Args:
        folder (str): a run's output folder (need not exist).

    Returns:
        list[str]: paths, newest first (empty when there is none).
    """
    if not os.path.isdir(folder):
        return []
    names = {n for n in os.listdir(folder) if _RUN_CHECKPOINT.match(n)}
    try:
        tagged = read_last_checkpoint_tag(folder)
    except CheckpointError:
        tagged = None
    if tagged:
        names.add(tagged)
    paths = [os.path.join(folder, n) for n in names
             if os.path.isfile(os.path.join(folder, n)) and _outside(folder, n) is None]

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


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (on this machine)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, owned by someone else
        return True
    return True


def save_converted_checkpoint(model: Dict[str, torch.Tensor], path: str, author: str) -> None:
    """Write ``{"model": model, "__author__": author}`` (a Detectron2 checkpoint) to ``path``,
    atomically and durably (:func:`mayolact.utils.file_io.atomic_open`): nothing is left behind
    when it fails.

    Args:
        model (dict[str, Tensor]): state dict in maYOLACT's parameter names.
        path (str): destination file; its folder is created if needed.
        author (str): the source format (:data:`TORCHVISION_AUTHOR`, :data:`MMDET_AUTHOR`), which
            :class:`YOLACTCheckpointer` reads back to apply that format's rules (a torchvision
            backbone leaves the FPN and the heads fresh).

    Raises:
        IsADirectoryError: ``path`` is a folder.
    """
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path}: is a folder; give the file to write (e.g. "
                                f"{os.path.join(path, 'model.pth')})")
    with atomic_open(path, "wb", durable=True) as f:
        torch.save({"model": model, "__author__": author}, f)


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

    def __init__(self, model, save_dir: str = "", *, skip_class_layers: bool = False,
                 inference: bool = False, **kwargs):
        """
        Args:
            model (nn.Module): the model (a DDP/DP wrapper is unwrapped).
            save_dir (str): folder of saved checkpoints.
            skip_class_layers (bool): a full checkpoint may lack the class layers
                (:data:`CLASS_LAYERS`) or have them for another class count; they then keep
                their fresh initialisation (``MODEL.YOLACT.WEIGHTS_SKIP_CLASS_LAYERS``).
            inference (bool): the model is for evaluation or drawing, not training: a file that
                leaves any tensor freshly initialised (backbone-only ImageNet weights, skipped
                class layers) is refused, naming them.
            **kwargs: ``save_to_disk`` and checkpointables, as ``DetectionCheckpointer``.
        """
        super().__init__(model, save_dir, **kwargs)
        self.skip_class_layers = bool(skip_class_layers)
        self.inference = bool(inference)

    @classmethod
    def from_config(cls, cfg, model, save_dir: str = "", **kwargs) -> "YOLACTCheckpointer":
        """A checkpointer for ``model`` with the loading options of ``cfg`` (see ``__init__``;
        ``inference`` and the others pass through ``kwargs``)."""
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
        """Read ``filename`` (:func:`load_weights_file`: no code runs from it, damaged and
        non-finite files are refused) and bring it to Detectron2's form
        ``{"model": state dict, ...}``.

        Detectron2 reads ``.pkl`` files with a plain ``pickle.load``; here they go through the same
        restricted reader as every other file, and then follow Detectron2's rules for them.

        Raises:
            CheckpointError: naming the file and the problem (empty, text, damaged, code in it, a
                non-finite tensor, not a dict of tensors, an unknown layout, a Caffe2 file, an
                unconvertible mmdet checkpoint).
        """
        loaded = load_weights_file(filename)
        if filename.endswith((".pkl", ".pyth")):
            # Detectron2's model-zoo files hold "model" and "__author__"; other .pkl files are
            # Caffe2 / Detectron1 blobs and .pyth files pycls ones, whose names Detectron2 only
            # matches by heuristics.
            zoo = isinstance(loaded, Mapping) and "model" in loaded and "__author__" in loaded
            if filename.endswith(".pyth") or not zoo or loaded.get("matching_heuristics", False):
                author = loaded.get("__author__", "Caffe2") if zoo else (
                    "pycls" if filename.endswith(".pyth") else "Caffe2")
                raise CheckpointError(
                    f"{filename}: a {author} model-zoo file, whose "
                    "names Detectron2 can only match by heuristics; maYOLACT loads exact names "
                    f"only. For ImageNet initialisation use {TORCHVISION_PREFIX}resnet50 "
                    "(torchvision-style ResNet: stride in the 3x3 conv, RGB input)"
                )
        checkpoint = self._recognise(loaded, filename)
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
        if self.inference and fresh:
            self._refuse_fresh_tensors(source, what, fresh, len(model_state))
        checkpoint["model"] = state
        super()._load_model(checkpoint)
        self.logger.info("Loaded %d tensors from %s (%s)", len(state), source, what)
        if checkpoint.get("__author__") == TORCHVISION_AUTHOR:
            self.logger.info(
                "ImageNet initialisation: the ResNet from %s; the FPN, the heads and the DCN "
                "offset convs start fresh (%d tensors), to be trained", source, len(fresh))
        return _IncompatibleKeys(missing_keys=fresh, unexpected_keys=unused, incorrect_shapes=[])

    def _refuse_fresh_tensors(self, source: str, what: str, fresh: List[str], n_model: int):
        """For inference: a file that leaves tensors at their random initialisation (an ImageNet
        backbone, skipped class layers) would give predictions from random heads.

        Raises:
            CheckpointError: naming the file and the fresh tensors.
        """
        if what == "torchvision ImageNet ResNet":
            why = ("It holds a classification backbone only (ImageNet initialisation, for "
                   "training with tools/train_net.py); evaluate or draw the model_final.pth that "
                   "training writes, or a converted trained model")
        else:
            why = ("MODEL.YOLACT.WEIGHTS_SKIP_CLASS_LAYERS lets the class layers start fresh, "
                   "which is for fine-tuning; evaluate or draw the fine-tuned checkpoint")
        raise CheckpointError(
            f"{source}: the {what} leaves {len(fresh)} of the model's {n_model} tensors freshly "
            f"initialised ({summarize_names(fresh)}; e.g. {fresh[0]}): evaluating or drawing "
            f"needs trained heads, nothing was loaded. {why}."
        )

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
    # names it only after the rename and is itself replaced the same way (all through
    # mayolact.utils.file_io). A kill at any moment leaves the previous checkpoint and tag whole,
    # and at worst a temporary file that resuming ignores. Paths that are not local files
    # (PathManager URIs) are saved by Detectron2 as before.

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

        Raises:
            CheckpointWriteError: the file could not be written (a full disk), naming it; nothing
                is left behind and the previous checkpoints are unchanged.
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
        try:
            temporary = write_staged(path, lambda f: torch.save(data, f))
        except (OSError, RuntimeError) as e:  # torch's zip writer reports some as RuntimeError
            raise self._write_error(path, "write", e) from e
        return StagedCheckpoint(temporary, path)

    def _write_error(self, path: str, what: str, err: Exception) -> CheckpointWriteError:
        reason = getattr(err, "strerror", None) or str(err).strip().splitlines()[0]
        error = CheckpointWriteError(
            f"could not {what} the checkpoint {path} ({reason}); the previous checkpoints and "
            f"{_TAG} in {self.save_dir} are unchanged")
        error.errno = getattr(err, "errno", None)
        return error

    def publish(self, staged: StagedCheckpoint) -> str:
        """Rename a staged checkpoint to its name, then tag it in ``last_checkpoint``.

        Returns:
            str: the checkpoint's path.

        Raises:
            CheckpointWriteError: naming the checkpoint (the rename or the tag failed).
        """
        try:
            publish_staged(staged.temporary, staged.path)
            self.tag_last_checkpoint(os.path.basename(staged.path))
        except OSError as e:
            raise self._write_error(staged.path, "publish", e) from e
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
        write_text_atomic(os.path.join(self.save_dir, _TAG), last_filename_basename, durable=True)

    def remove_partial_saves(self) -> List[str]:
        """Delete the temporary files that processes which no longer run left in the save folder
        (those of a live process, this one or another, are kept).

        Returns:
            list[str]: the removed paths.
        """
        if not self._saves_locally() or not self.save_to_disk or not os.path.isdir(self.save_dir):
            return []
        removed = []
        for name in os.listdir(self.save_dir):
            match = TEMPORARY_NAME.match(name)
            if match and not _pid_alive(int(match.group("pid"))):
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

    def get_checkpoint_file(self) -> str:
        """The checkpoint a resume loads (:meth:`newest_readable_checkpoint`), "" without one."""
        if not self._saves_locally():
            return super().get_checkpoint_file()
        return self.newest_readable_checkpoint() if self.has_checkpoint() else ""

    def newest_readable_checkpoint(self) -> str:
        """The newest checkpoint of the save folder that can be read through.

        Newer ones that cannot (cut short, damaged) are skipped with a warning that names them
        and the one used instead; so is a tag that names a file no longer there.

        Raises:
            CheckpointError: the tag names a file outside the folder, or the folder holds
                checkpoints but none is readable.
        """
        tagged = read_last_checkpoint_tag(self.save_dir)
        skipped = []
        missing_tag = tagged and not os.path.isfile(os.path.join(self.save_dir, tagged))
        if missing_tag:
            skipped.append((os.path.join(self.save_dir, tagged), f"named by {_TAG}, missing"))
        for path in find_checkpoints(self.save_dir):
            reason = integrity_problem(path, archive_only=True)
            if reason is None:
                if skipped:
                    self.logger.warning(
                        "Resuming from %s, the newest readable checkpoint: %s",
                        path, "; ".join(f"{p} is unreadable ({why})" for p, why in skipped),
                    )
                return path
            skipped.append((path, reason))
        if missing_tag and len(skipped) == 1:
            raise CheckpointError(
                f"{os.path.join(self.save_dir, _TAG)} names {tagged}, which does not exist, and "
                "the folder holds no other checkpoint: there is nothing to resume (were the "
                "run's checkpoints moved?). Restore the file, or run without --resume to start "
                "afresh"
            )
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
            CheckpointError: ``last_checkpoint`` names a file outside the folder, or one that is
                missing while the folder holds no other checkpoint (a run was here: starting
                afresh would lose it silently), or checkpoints exist but none is readable.
        """
        if resume and self._saves_locally():
            if self.has_checkpoint() or read_last_checkpoint_tag(self.save_dir):
                return self.load(self.newest_readable_checkpoint())
        return super().resume_or_load(path, resume=resume)
