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

Config overrides (``KEY VALUE ...``) may follow any option, ``--format`` included. Exit status: 0
when written; 1 when the sample image cannot be read; 2 for a bad config or a weights file that
cannot be used (unreadable, damaged, holding code, or leaving the heads untrained).
"""
import argparse
import sys

#: The keys of ``mayolact.export.exporter.EXPORT_FORMATS``, spelled out so that ``--help`` imports
#: no torch.
FORMATS = ("onnx", "torchscript")
#: ``mayolact.export.quantize.QUANTIZE_MODES``, spelled out for the same reason.
QUANTIZE_MODES = ("int8",)


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


def main(argv=None):
    parser = get_parser()
    args = parser.parse_args(argv)
    if args.calibration_images < 1:
        parser.error(f"--calibration-images must be >= 1, got {args.calibration_images}")
    from mayolact.export.export_job import run_export

    return run_export(args)


if __name__ == "__main__":
    sys.exit(main())
