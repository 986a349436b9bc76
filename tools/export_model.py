#!/usr/bin/env python
"""Export a YOLACT / maYOLACT model to TorchScript (tracing) and ONNX, post-processing included.

The command-line shell over ``mayolact.export.exporter`` (laid out like Detectron2's
``tools/deploy/export_model.py``): the model is built from the config, its weights loaded, traced
through Detectron2's ``TracingAdapter`` on one sample image, and written as ``model.ts`` and / or
``model.onnx`` in ``--output``. ``--check`` runs the written files (ONNX in onnxruntime on the CPU)
on the sample image and prints how far they are from the eager model. ``--quantize int8`` also
writes ``model_int8.onnx``, onnxruntime's static int8 quantization calibrated on the first
``--calibration-images`` images of ``DATASETS.TEST[0]`` (``mayolact.export.quantize``);
``--evaluate`` prints the COCO AP and oLRP of the eager model and of every written model on
``DATASETS.TEST``.

Examples::

    CFG=configs/COCO-InstanceSegmentation/mayolact_R_50_FPN_550.yaml
    python tools/export_model.py --config-file $CFG --output output/export --check 5 \
        MODEL.WEIGHTS model_final.pth
    python tools/export_model.py --config-file <cfg> --format onnx \
        --sample-image ../shared/data/coco_mini/val2017/000000000139.jpg --output output/export
    python tools/demo.py --config-file <cfg> --exported output/export/model.onnx --input image.jpg \
        --output output/vis
    python tools/export_model.py --config-file configs/shapes/mayolact_shapes_demo.yaml \
        --format onnx --quantize int8 --evaluate --output output/export_int8 \
        MODEL.WEIGHTS output/demo/model_final.pth
"""
import argparse
import os
import sys

#: The keys of ``mayolact.export.exporter.EXPORT_FORMATS``, spelled out so that ``--help`` imports
#: no torch.
FORMATS = ("onnx", "torchscript")
#: ``mayolact.export.quantize.QUANTIZE_MODES``, spelled out for the same reason.
QUANTIZE_MODES = ("int8",)


def get_parser():
    parser = argparse.ArgumentParser(description="Export a YOLACT / maYOLACT model for deployment.")
    parser.add_argument("--config-file", required=True, metavar="FILE",
                        help="path to a config file")
    parser.add_argument("--format", nargs="+", choices=FORMATS, default=list(FORMATS),
                        help="output formats (default: both)")
    parser.add_argument("--sample-image", default=None,
                        help="image to trace with (default: the first image of DATASETS.TEST[0])")
    parser.add_argument("--output", required=True, help="output folder for model.ts / model.onnx")
    parser.add_argument("--check", nargs="?", type=int, const=1, default=0, metavar="N",
                        help="compare the exported models, and the eager model in float64, with "
                             "the eager model on N images (default 1): the sample image and the "
                             "next ones of its folder")
    parser.add_argument("--quantize", choices=QUANTIZE_MODES, default=None,
                        help="also write model_int8.onnx: onnxruntime static int8 quantization "
                             "of model.onnx (needs --format onnx)")
    parser.add_argument("--calibration-images", type=int, default=50, metavar="N",
                        help="--quantize: calibrate on the first N images of DATASETS.TEST[0] "
                             "(default 50)")
    parser.add_argument("--evaluate", action="store_true",
                        help="print COCO AP and oLRP of the eager model and of each written model "
                             "on DATASETS.TEST")
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
    if args.quantize and "onnx" not in args.format:
        parser.error("--quantize needs --format onnx (it quantizes model.onnx)")
    if args.calibration_images < 1:
        parser.error(f"--calibration-images must be >= 1, got {args.calibration_images}")
    # Heavy imports after the parse, so that --help answers at once.
    import copy

    import torch
    from detectron2.data.detection_utils import read_image

    from mayolact.config import ConfigError, load_config
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

    logger = setup_logging(with_detectron2=True)  # Detectron2's format for every line
    try:
        # Exports are traced on the CPU: the graphs keep the tracing device in their constants.
        cfg = load_config(args.config_file, list(args.opts) + ["MODEL.DEVICE", "cpu"])
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cfg.freeze()
    try:
        path = sample_image_path(cfg, args.sample_image)
        image = read_image(path, format="BGR")  # raises naming the file if unreadable
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1

    predictor = YOLACTPredictor(cfg)
    x = predictor.preprocess(image)
    paths = export_model(cfg, predictor.model, sample_inputs(x["image"], x["height"], x["width"]),
                         args.output, args.format)
    for fmt, written in paths.items():
        logger.info("wrote %s (%s, traced on %s)", written, fmt, path)
    if args.quantize:
        paths["onnx int8"] = quantize(cfg, paths["onnx"], args.calibration_images, logger)

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
        evaluate(cfg, predictor.model, paths, args.output)
    return 0


def quantize(cfg, onnx_path, num_images, logger):
    """``model_int8.onnx`` beside ``onnx_path``, calibrated on the first ``num_images`` images of
    ``DATASETS.TEST[0]``."""
    from detectron2.data import DatasetCatalog
    from detectron2.data.detection_utils import read_image

    from mayolact.export.quantize import quantize_int8

    if not cfg.DATASETS.TEST:
        raise ValueError("--quantize calibrates on DATASETS.TEST[0], and the config has none")
    dicts = DatasetCatalog.get(cfg.DATASETS.TEST[0])[:num_images]
    logger.info("int8: calibrating on %d images of %s", len(dicts), cfg.DATASETS.TEST[0])
    images = [read_image(d["file_name"], format="BGR") for d in dicts]
    written = quantize_int8(onnx_path, os.path.join(os.path.dirname(onnx_path),
                                                    "model_int8.onnx"), images)
    logger.info("wrote %s (onnx, int8)", written)
    return written


def evaluate(cfg, model, paths, output_dir):
    """The accuracy table: the eager model and each written model on ``DATASETS.TEST``."""
    from mayolact.export.quantize import evaluate as evaluate_model
    from mayolact.export.quantize import evaluate_exported

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


if __name__ == "__main__":
    sys.exit(main())
