#!/usr/bin/env python
"""Check a dataset as training and evaluation will use it, before a long run does.

Every annotation is validated before any library sees it (polygons finite and within one image
size of the image with at least 3 points, RLE counts that decode and sum to h x w, boxes inside
their image, unique image and annotation ids, known category ids, image files present); then
every image goes through the config's training mapper --draws times (random augmentation, a
seed per draw) and through the test mapper once. The report lists the failures (file, annotation
id, field, reason; or file, dataset index, seed, error), instances and positive anchors per
draw (the config's anchors and matcher), the MOB-ratio distribution and the images that lose
all GTs to INPUT.YOLACT.MIN_GT_SIZE.

Examples::

    python tools/check_dataset.py \
        --config-file configs/COCO-InstanceSegmentation/yolact_R_50_FPN_550_atss_maiou.yaml
    python tools/check_dataset.py --dataset data/train.json --image-root data/images
    python tools/check_dataset.py --config-file <cfg> --replay 1234:98765   # an error's draw

Exit status: 0 when everything maps; 1 when anything failed (each failure is listed); 2 for a bad
config or argument.
"""
import argparse
import logging
import os
import sys

# mayolact, torch and Detectron2 are imported in main(): --help needs none of them.

BASE_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "configs", "COCO-InstanceSegmentation", "Base-YOLACT.yaml")


def parse_args(argv=None):
    description, examples = __doc__.split("Examples::")
    parser = argparse.ArgumentParser(
        description=description.split("\n")[0], epilog="examples:" + examples.split("Exit")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default=BASE_CONFIG, metavar="FILE",
                        help="the config whose mappers, anchors and matcher are used (default: "
                             "Base-YOLACT.yaml, ATSS w. maIoU at 550)")
    parser.add_argument("--dataset", nargs="+", metavar="NAME",
                        help="registered datasets or COCO json files (default: the config's "
                             "DATASETS.TRAIN and DATASETS.TEST)")
    parser.add_argument("--image-root", help="images of a --dataset json (default: its folder)")
    parser.add_argument("--draws", type=int, default=3,
                        help="training draws per image (random augmentation; default 3)")
    parser.add_argument("--seed", type=int, default=0, help="base seed of the draws")
    parser.add_argument("--images", type=int, default=None,
                        help="check only the first N images of each dataset")
    parser.add_argument("--replay", metavar="INDEX:SEED",
                        help="map one training draw again (the index and seed an error named; "
                             "with --dataset, an index of that dataset as this tool reports it)")
    parser.add_argument("--output", help="also write the report as json here (atomically)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("opts", nargs=argparse.REMAINDER,
                        help="config overrides at the end: KEY VALUE pairs")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    replay = None
    if args.replay:
        try:
            index, seed = (int(v) for v in args.replay.split(":"))
            replay = (index, seed)
        except ValueError:
            print(f"error: --replay {args.replay!r}: expected INDEX:SEED (two integers)",
                  file=sys.stderr)
            return 2
    from detectron2.data import DatasetCatalog

    from mayolact.config import ConfigError, load_config
    from mayolact.data import dataset_check
    from mayolact.data.datasets import dataset_arguments, dataset_classes
    from mayolact.utils.file_io import write_json_atomic
    from mayolact.utils.logger import setup_logging

    setup_logging(with_detectron2=True)
    # Each image without a GT left would log a line: the report counts them instead.
    logging.getLogger("mayolact.data.dataset_mapper").setLevel(logging.INFO)
    try:
        names = dataset_arguments(args.dataset, args.image_root) if args.dataset else None
        cfg = load_config(args.config_file, args.opts)
        if names and cfg.MODEL.YOLACT.NUM_CLASSES == 0 and names[0] in DatasetCatalog.list():
            cfg.MODEL.YOLACT.NUM_CLASSES = len(dataset_classes(names[0]) or ())
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if replay is not None:
        try:
            record, out = dataset_check.replay(cfg, *replay, dataset=names[0] if names else None)
        except Exception as e:  # noqa: BLE001  (the point is to show it)
            print(dataset_check.format_traceback(e), file=sys.stderr)
            return 1
        what = ("no ground truth left (the training loader draws another image)" if out is None
                else f"{len(out['instances'])} instances, image {tuple(out['image'].shape)}")
        print(f"{record.get('file_name')}: {what}")
        return 0
    if names is None:
        names = list(dict.fromkeys(list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)))
    unknown = [n for n in names if n not in DatasetCatalog.list()]
    if unknown:
        print(f"error: dataset(s) not registered: {unknown}", file=sys.stderr)
        return 2
    reports = dataset_check.check_datasets(
        cfg, names, draws=args.draws, seed=args.seed, num_images=args.images,
        evaluation=[n for n in names if n in cfg.DATASETS.TEST and n not in cfg.DATASETS.TRAIN],
        progress=not args.no_progress)
    print(dataset_check.format_reports(reports, cfg))
    if args.output:
        write_json_atomic(args.output, dataset_check.report_dict(reports), indent=1)
    return 1 if any(r.failed for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
