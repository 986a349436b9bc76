#!/usr/bin/env python
"""Export a YOLACT / maYOLACT model to TorchScript (tracing) and ONNX, post-processing included.

The command-line shell over ``mayolact.export.exporter`` (laid out like Detectron2's
``tools/deploy/export_model.py``): the model is built from the config, its weights loaded, traced
through Detectron2's ``TracingAdapter`` on one sample image, and written as ``model.ts`` and / or
``model.onnx`` in ``--output``. ``--check`` runs the written files (ONNX in onnxruntime on the CPU)
on the sample image and prints how far they are from the eager model.

Examples::

    CFG=configs/COCO-InstanceSegmentation/mayolact_R_50_FPN_550.yaml
    python tools/export_model.py --config-file $CFG --output output/export --check 5 \
        MODEL.WEIGHTS model_final.pth
    python tools/export_model.py --config-file <cfg> --format onnx \
        --sample-image ../shared/data/coco_mini/val2017/000000000139.jpg --output output/export
    python tools/demo.py --config-file <cfg> --exported output/export/model.onnx --input image.jpg \
        --output output/vis

Config overrides (``KEY VALUE ...``) may follow any option, ``--format`` included. Exit status: 0
when written; 1 when the sample image cannot be read; 2 for a bad config or a weights file that
cannot be used (unreadable, damaged, holding code, or leaving the heads untrained).
"""
import argparse
import os
import sys

#: The keys of ``mayolact.export.exporter.EXPORT_FORMATS``, spelled out so that ``--help`` imports
#: no torch.
FORMATS = ("onnx", "torchscript")


def _count_or_word(text):
    """``--check``'s value: a count, or the first word of the overrides (``--check KEY VALUE``),
    which main() gives back to them."""
    try:
        return int(text)
    except ValueError:
        return text


def get_parser():
    parser = argparse.ArgumentParser(description="Export a YOLACT / maYOLACT model for deployment.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE",
                        help="path to a config file")
    # No `choices`: nargs="+" also takes the KEY VALUE overrides that may follow (main() gives
    # them back), and the formats are checked there.
    parser.add_argument("--format", nargs="+", default=list(FORMATS),
                        metavar="{" + ",".join(FORMATS) + "}",
                        help="output formats (default: both)")
    parser.add_argument("--sample-image", default=None,
                        help="image to trace with (default: the first image of DATASETS.TEST[0])")
    parser.add_argument("--output", required=True, help="output folder for model.ts / model.onnx")
    parser.add_argument("--check", nargs="?", type=_count_or_word, const=1, default=0, metavar="N",
                        help="compare the exported models, and the eager model in float64, with "
                             "the eager model on N images (default 1): the sample image and the "
                             "next ones of its folder")
    parser.add_argument("opts", default=[], nargs=argparse.REMAINDER,
                        help="config overrides as KEY VALUE pairs")
    return parser


def sample_image_path(cfg, sample_image):
    """``sample_image``, else the first image of the config's first test set."""
    from detectron2.data import DatasetCatalog

    if sample_image:
        return sample_image
    if not cfg.DATASETS.TEST:
        raise ValueError("no --sample-image and the config has no DATASETS.TEST to take one from")
    dicts = DatasetCatalog.get(cfg.DATASETS.TEST[0])
    if not dicts:
        raise ValueError(f"DATASETS.TEST[0] ({cfg.DATASETS.TEST[0]}) is empty; give --sample-image")
    return dicts[0]["file_name"]


def main(argv=None):
    parser = get_parser()
    args = parser.parse_args(argv)
    # Heavy imports after the parse, so that --help answers at once.
    import copy

    import torch
    from detectron2.data.detection_utils import read_image

    from mayolact.checkpoint import CheckpointError
    from mayolact.config import ConfigError, load_config, take_overrides
    from mayolact.engine.checks import PreflightError, check_config
    from mayolact.engine.demo import expand_inputs
    from mayolact.engine.predictor import YOLACTPredictor
    from mayolact.export.exporter import (
        ExportedYOLACTPredictor,
        compare_instances,
        export_model,
        sample_inputs,
        summarize_comparisons,
    )
    from mayolact.utils.logger import setup_logging

    # `--format onnx KEY VALUE` and `--check KEY VALUE`: the overrides go back to opts.
    if isinstance(args.check, str):
        args.opts, args.check = [args.check] + list(args.opts), 1
    args.format, args.opts = take_overrides(args.format, args.opts)
    unknown = [f for f in args.format if f not in FORMATS] or ([] if args.format else ["none"])
    if unknown:
        parser.error(f"argument --format: invalid choice: {unknown[0]!r} (choose from "
                     f"{', '.join(FORMATS)})")
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
