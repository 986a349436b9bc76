#!/usr/bin/env python
"""Cost of the integral images in the training data pipeline.

Runs ``YOLACTDatasetMapper`` (training mode, full YOLACT augmentation, S x S output) on the same
images with the same random augmentation, once with ``INPUT.YOLACT.INTEGRAL_IMAGES`` off and once
on, and prints the median time per image of each, the overhead in percent, and the median time of
``integral_images`` alone. Images come from ``coco_mini_train`` (or the procedural shapes set when
coco_mini is absent). The mapper runs with one thread, as in a DataLoader worker.

Example::

    python tools/benchmark_mapper.py --images 100 --size 550
"""
import argparse

# mayolact, torch, OpenCV and Detectron2 are imported in main(): --help needs none of them.


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument(
        "--dataset", default=None,
        help="registered dataset; None: coco_mini_train, else mayolact_shapes_train"
    )
    parser.add_argument("--images", type=int, default=100, help="images to time")
    parser.add_argument("--size", type=int, default=550, help="INPUT.YOLACT.SIZE")
    parser.add_argument("--threads", type=int, default=1, help="torch / OpenCV threads")
    args = parser.parse_args(argv)
    from mayolact.analysis.benchmark_mapper import run_benchmark

    return run_benchmark(args)


if __name__ == "__main__":
    main()
