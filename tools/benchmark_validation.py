#!/usr/bin/env python
"""Cost of the up-front annotation check (``mayolact.data.validation.validate_coco_json``).

Times, per json: the first check (json parse + every check, verdict written to the cache), a
later process's check (the verdict read back: the file is only hashed) and a repeated call in
the same process (nothing read), plus the image-file lookup. The jsons are coco_mini's and a
synthetic one of COCO train2017's size (coco_mini train's images and annotations repeated with
fresh ids until 118,287 images / 860,001 annotations at ``--scale 1``), written to a temporary
folder. "first check" includes reading the json (``json.load`` alone is timed too). Prints a
table.

Usage::

    OMP_NUM_THREADS=1 python tools/benchmark_validation.py            # COCO-train size
    OMP_NUM_THREADS=1 python tools/benchmark_validation.py --scale 0.25
"""
import argparse

# mayolact is imported in main(): --help needs nothing heavy.


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0,
                        help="size of the synthetic json relative to COCO train2017")
    args = parser.parse_args(argv)
    from mayolact.analysis.benchmark_validation import run_benchmark

    run_benchmark(args.scale)


if __name__ == "__main__":
    main()
