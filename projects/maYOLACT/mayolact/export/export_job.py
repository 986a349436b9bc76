"""The export job of ``tools/export_model.py``: trace and write the model (TorchScript, ONNX),
optionally quantize the ONNX model to int8, compare every written model with the eager one, and
evaluate them."""
import argparse
import copy
import logging
import os
import sys

import torch
from detectron2.data import DatasetCatalog
from detectron2.data.detection_utils import read_image

from mayolact.checkpoint import CheckpointError
from mayolact.config import ConfigError, load_config, take_overrides
from mayolact.engine.checks import PreflightError, check_config
from mayolact.engine.demo import expand_inputs
from mayolact.engine.predictor import YOLACTPredictor
from mayolact.export.exporter import (
    EXPORT_FORMATS,
    ExportedYOLACTPredictor,
    compare_instances,
    export_model,
    sample_inputs,
    summarize_comparisons,
)
from mayolact.export.quantize import evaluate as evaluate_model
from mayolact.export.quantize import evaluate_exported, quantize_int8
from mayolact.utils.logger import setup_logging

__all__ = ["run_export", "sample_image_path"]


def sample_image_path(cfg, sample_image):
    """``sample_image``, else the first image of the config's first test set."""
    if sample_image:
        return sample_image
    if not cfg.DATASETS.TEST:
        raise ValueError("no --sample-image and the config has no DATASETS.TEST to take one from")
    dicts = DatasetCatalog.get(cfg.DATASETS.TEST[0])
    if not dicts:
        raise ValueError(f"DATASETS.TEST[0] ({cfg.DATASETS.TEST[0]}) is empty; give --sample-image")
    return dicts[0]["file_name"]


def run_export(args: argparse.Namespace) -> int:
    """Run the export of ``tools/export_model.py``'s parsed arguments (``config_file``,
    ``format``, ``sample_image``, ``output``, ``check``, ``quantize``, ``calibration_images``,
    ``evaluate``, ``opts``).

    Returns:
        int: the exit status: 0 when written; 1 when the sample image cannot be read; 2 for a bad
        argument, config or weights file (named on stderr).
    """
    # `--format onnx KEY VALUE` and `--check KEY VALUE`: the overrides go back to opts.
    if isinstance(args.check, str):
        args.opts, args.check = [args.check] + list(args.opts), 1
    args.format, args.opts = take_overrides(args.format, args.opts)
    unknown = [f for f in args.format if f not in EXPORT_FORMATS] or (
        [] if args.format else ["none"])
    if unknown:
        print(f"error: argument --format: invalid choice: {unknown[0]!r} (choose from "
              f"{', '.join(EXPORT_FORMATS)})", file=sys.stderr)
        return 2
    if args.quantize and "onnx" not in args.format:
        print("error: --quantize needs --format onnx (it quantizes model.onnx)", file=sys.stderr)
        return 2
    logger = setup_logging(with_detectron2=True)  # Detectron2's format for every line
    try:
        # Exports are traced on the CPU: the graphs keep the tracing device in their constants.
        cfg = load_config(args.config_file, list(args.opts) + ["MODEL.DEVICE", "cpu"])
        check_config(cfg, train=False)
    except (ConfigError, PreflightError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cfg.freeze()
    try:
        path = sample_image_path(cfg, args.sample_image)
        image = read_image(path, format="BGR")  # raises naming the file if unreadable
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1

    try:
        predictor = YOLACTPredictor(cfg)
    except (CheckpointError, FileNotFoundError) as e:  # MODEL.WEIGHTS, named in the message
        print(f"error: {e}", file=sys.stderr)
        return 2
    x = predictor.preprocess(image)
    paths = export_model(cfg, predictor.model, sample_inputs(x["image"], x["height"], x["width"]),
                         args.output, args.format)
    for fmt, written in paths.items():
        logger.info("wrote %s (%s, traced on %s)", written, fmt, path)
    if args.quantize:
        paths["onnx int8"] = _quantize(cfg, paths["onnx"], args.calibration_images, logger)

    if args.check > 0:
        folder = sorted(expand_inputs([os.path.dirname(os.path.abspath(path))]))
        start = folder.index(os.path.abspath(path)) if os.path.abspath(path) in folder else 0
        images = [read_image(f, format="BGR") for f in folder[start:start + args.check]]
        with torch.no_grad():
            expected = [predictor(im)["instances"] for im in images]
        runs = {fmt: ExportedYOLACTPredictor(written) for fmt, written in paths.items()}
        # The yardstick: the eager network in float64 against float32, its own rounding error.
        model64 = copy.deepcopy(predictor.model).double()
        runs["eager float64"] = lambda im: model64([predictor.preprocess(im)])[0]
        for name, run in runs.items():
            with torch.no_grad():
                diff = summarize_comparisons(
                    [compare_instances(e, run(im)["instances"]) for e, im in zip(expected, images)])
            print(f"{name} vs eager on {len(images)} images: "
                  + ", ".join(f"{k} {v:.3g}" for k, v in diff.items()))
    if args.evaluate:
        _evaluate(cfg, predictor.model, paths, args.output)
    return 0




def _quantize(cfg, onnx_path, num_images, logger: logging.Logger):
    """``model_int8.onnx`` beside ``onnx_path``, calibrated on the first ``num_images`` images of
    ``DATASETS.TEST[0]``."""
    if not cfg.DATASETS.TEST:
        raise ValueError("--quantize calibrates on DATASETS.TEST[0], and the config has none")
    dicts = DatasetCatalog.get(cfg.DATASETS.TEST[0])[:num_images]
    logger.info("int8: calibrating on %d images of %s", len(dicts), cfg.DATASETS.TEST[0])
    images = [read_image(d["file_name"], format="BGR") for d in dicts]
    written = quantize_int8(onnx_path, os.path.join(os.path.dirname(onnx_path),
                                                    "model_int8.onnx"), images)
    logger.info("wrote %s (onnx, int8)", written)
    return written


def _evaluate(cfg, model, paths, output_dir):
    """The accuracy table: the eager model and each written model on ``DATASETS.TEST``."""
    rows = [("eager (float32)", evaluate_model(cfg, model, os.path.join(output_dir, "eval_eager")))]
    for name, written in paths.items():
        out = os.path.join(output_dir, "eval_" + name.replace(" ", "_"))
        rows.append((f"{name} ({os.path.basename(written)})",
                     evaluate_exported(cfg, written, out)))
    print(f"\nAccuracy on {', '.join(cfg.DATASETS.TEST)}:\n")
    print("| model | mask AP | box AP | mask oLRP | box oLRP |")
    print("|---|---:|---:|---:|---:|")
    for name, r in rows:
        segm, bbox = r.get("segm", {}), r.get("bbox", {})
        cells = [segm.get("AP"), bbox.get("AP"), segm.get("oLRP"), bbox.get("oLRP")]
        print(f"| {name} | " + " | ".join("-" if c is None else f"{c:.2f}" for c in cells) + " |")
