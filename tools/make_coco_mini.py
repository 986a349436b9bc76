#!/usr/bin/env python
"""Build coco_mini (337 train2017 + 128 val2017 COCO images) from your COCO 2017 download.

coco_mini is what the quick configs, the CPU smoke runs, ``make figures``, the benchmarks and the
tests that need real photographs use: genuine COCO 2017 images with their official instance
annotations (crowd regions, a grayscale image and images without annotations among them). The
image ids are fixed (``mayolact/data/coco_mini_ids.py``); this tool takes those images and every
annotation of theirs from a COCO 2017 download laid out as Detectron2 expects it::

    coco/annotations/instances_train2017.json   coco/train2017/*.jpg
    coco/annotations/instances_val2017.json     coco/val2017/*.jpg

and writes the same layout to ``--output``, where the package finds it (``$MAYOLACT_COCO_MINI``
when set, else ``datasets/coco_mini`` in the repository).

Examples::

    python tools/make_coco_mini.py --coco /data/coco
    python tools/make_coco_mini.py --coco $DETECTRON2_DATASETS/coco --link

Exit status: 0 when done; 2 when a file of the download is missing or not COCO's (named).
"""
import argparse
import os
import sys

# mayolact is imported in main(): --help needs nothing heavy.

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--coco",
                   default=os.path.join(os.environ.get("DETECTRON2_DATASETS", "datasets"), "coco"),
                   help="the COCO 2017 folder (annotations/, train2017/, val2017/); the default "
                        "is Detectron2's: $DETECTRON2_DATASETS/coco")
    p.add_argument("--output",
                   default=os.environ.get("MAYOLACT_COCO_MINI")
                   or os.path.join(REPO, "datasets", "coco_mini"),
                   help="coco_mini's folder ($MAYOLACT_COCO_MINI when set)")
    p.add_argument("--link", action="store_true",
                   help="symbolic links to the download's images instead of copies (about 75 MB)")
    return p


def main(argv=None):
    args = get_parser().parse_args(argv)
    from mayolact.data.coco_mini import build_coco_mini
    from mayolact.utils.logger import setup_logging

    setup_logging()
    try:
        build_coco_mini(args.coco, args.output, link=args.link)  # logs each split
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"coco_mini written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
