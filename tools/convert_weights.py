#!/usr/bin/env python
"""Convert foreign weights into Detectron2 checkpoints of maYOLACT's models.

Sub-commands:

* ``torchvision SRC DST``: a torchvision ImageNet ResNet (a state-dict file, or
  ``torchvision://resnet50`` / ``resnet101`` / ... from torch.hub's cache) -> the ResNet of a
  maYOLACT model (``backbone.bottom_up.*``); the FPN and the heads start fresh when it is loaded.
* ``mmdet SRC DST --config-file CFG``: an mmdetection YOLACT / maYOLACT checkpoint -> the full model
  of ``CFG``. Every tensor is checked against the model built from ``CFG``.

``DST`` is ``{"model": state dict, "__author__": "torchvision" | "mmdetection"}``, written
atomically; set ``MODEL.WEIGHTS`` to it. ``MODEL.WEIGHTS`` also takes the sources directly (they are
converted on load): converting once saves the conversion at every start and gives a file to share.

Examples::

    python tools/convert_weights.py torchvision torchvision://resnet50 weights/R-50-torchvision.pth
    python tools/convert_weights.py torchvision resnet50-0676ba61.pth weights/R-50-torchvision.pth
    python tools/convert_weights.py mmdet mayolact_550.pth weights/mayolact_R_50_FPN_550.pth \\
        --config-file configs/COCO-InstanceSegmentation/mayolact_R_50_FPN_550.yaml

Config overrides (``KEY VALUE ...``) of ``mmdet`` follow DST or ``--config-file CFG``. Every file is
read without running code from it (``mayolact.checkpoint.weights_file``); ``DST`` is written
atomically (nothing is left behind when a conversion fails).

Exit status: 0 on success, 2 when a file or the config is missing, unreadable or does not match (the
message names the file and the problem).
"""
import argparse
import logging
import os
import sys

# The conversion modules (torch, Detectron2) are imported where they are used: --help needs none.

logger = logging.getLogger("mayolact.convert_weights")


def convert_torchvision(args) -> None:
    """``torchvision SRC DST``."""
    from mayolact.checkpoint.checkpointer import (
        TORCHVISION_AUTHOR,
        CheckpointError,
        load_weights_file,
        save_converted_checkpoint,
        summarize_names,
    )
    from mayolact.checkpoint.torchvision import convert_torchvision_resnet, is_torchvision_resnet

    state = load_weights_file(args.src)
    if not isinstance(state, dict) or not is_torchvision_resnet(state):
        raise CheckpointError(
            f"{args.src}: not a torchvision ResNet state dict (no conv1.weight and layer1.*)"
        )
    try:
        model, unused = convert_torchvision_resnet(state)
    except ValueError as e:
        raise CheckpointError(f"{args.src}: {e}") from e
    save_converted_checkpoint(model, args.dst, TORCHVISION_AUTHOR)
    logger.info("Wrote %s: %d tensors (%s); unused: %s", args.dst, len(model),
                summarize_names(model), summarize_names(unused) or "none")


def convert_mmdet(args) -> None:
    """``mmdet SRC DST --config-file CFG [KEY VALUE ...]``: the checkpointer converts and checks
    the file against the config's model (``mayolact.checkpoint.mmdet``), the result is saved."""
    from detectron2.modeling import build_model

    from mayolact.checkpoint.checkpointer import (
        MMDET_AUTHOR,
        CheckpointError,
        YOLACTCheckpointer,
        save_converted_checkpoint,
    )
    from mayolact.config import load_config
    from mayolact.engine.checks import check_config

    cfg = load_config(args.config_file, ["MODEL.DEVICE", "cpu", *args.opts])
    check_config(cfg, train=False)
    model = build_model(cfg)
    loaded = YOLACTCheckpointer.from_config(cfg, model).load(args.src)
    if loaded.get("__author__") != MMDET_AUTHOR:
        raise CheckpointError(f"{args.src}: not an mmdetection checkpoint (no 'state_dict' of "
                              "backbone./neck./bbox_head./mask_head. tensors)")
    save_converted_checkpoint(model.state_dict(), args.dst, MMDET_AUTHOR)
    logger.info("Wrote %s: %d tensors for %s", args.dst, len(model.state_dict()), args.config_file)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = p.add_subparsers(dest="source", required=True, metavar="{torchvision,mmdet}")
    tv = sub.add_parser("torchvision", help="torchvision ImageNet ResNet -> maYOLACT backbone",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    tv.add_argument("src", help="torchvision state-dict file, or torchvision://resnet50 etc.")
    tv.add_argument("dst", help="output checkpoint (.pth)")
    tv.set_defaults(run=convert_torchvision)
    mm = sub.add_parser("mmdet", help="mmdetection YOLACT / maYOLACT checkpoint -> full model",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    mm.add_argument("src", help="mmdetection checkpoint (.pth with 'state_dict')")
    mm.add_argument("dst", help="output checkpoint (.pth)")
    mm.add_argument("--config-file", required=True, help="the maYOLACT config the model matches")
    # "*" rather than REMAINDER, so that `mmdet SRC DST --config-file CFG` parses (REMAINDER would
    # swallow the option); overrides after the option are collected by main().
    mm.add_argument("opts", nargs="*",
                    help="config overrides (KEY VALUE ...), after DST or after --config-file CFG")
    mm.set_defaults(run=convert_mmdet)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    # `mmdet SRC DST --config-file CFG KEY VALUE`: argparse fills SRC DST [opts] before the option,
    # so the overrides after it come back as extra words.
    args, extra = parser.parse_known_args(argv)
    options = [w for w in extra if w.startswith("--")]
    if options or (extra and args.source != "mmdet"):
        parser.error(f"unrecognized arguments: {' '.join(options or extra)}")
    if extra:
        args.opts = list(args.opts) + extra
    if os.path.isdir(args.dst):  # before any conversion: nothing would be written
        print(f"error: DST {args.dst} is a folder; give the file to write", file=sys.stderr)
        return 2
    from mayolact.checkpoint.checkpointer import CheckpointError
    from mayolact.config import ConfigError
    from mayolact.engine.checks import PreflightError
    from mayolact.utils.logger import setup_logging

    setup_logging(with_detectron2=True)
    try:
        args.run(args)
    except (CheckpointError, ConfigError, PreflightError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)  # once: the log would repeat it
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
