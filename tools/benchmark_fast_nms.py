#!/usr/bin/env python
"""Fast NMS speed: the package's ``fast_nms`` against its former dense form, same detections.

The dense form (the IoUs of all ``top_k`` x ``top_k`` candidates of every class,
``mayolact.analysis.benchmark_fast_nms.fast_nms_dense``) is also the reference
``tests/test_postprocessing.py`` holds ``fast_nms`` to. Both are timed in one process on COCO-like
candidate sets (1000 boxes around 12 objects in a 550 x 550 image, 80 classes, softmax scores with
a dominant background, 32 mask coefficients), after a check that they return the same detections
bit for bit. Times: the median of ``--repeats`` calls, in CPU seconds of the calling thread; run it
with ``OMP_NUM_THREADS=1``.

Example::

    OMP_NUM_THREADS=1 python tools/benchmark_fast_nms.py --sets 5 --repeats 20
"""
import argparse
import sys

# mayolact and torch are imported in main(): --help needs neither.


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--sets", type=int, default=5, help="candidate sets (seeds 0..sets-1)")
    p.add_argument("--repeats", type=int, default=20, help="timed calls per set and version")
    p.add_argument("--background", type=float, default=6.5,
                   help="background logit bonus: 6.5 gives about 200 class scores above 0.05, "
                        "3 about 1800")
    args = p.parse_args(argv)
    from mayolact.analysis.benchmark_fast_nms import run_benchmark

    return run_benchmark(args.sets, args.repeats, args.background)


if __name__ == "__main__":
    sys.exit(main())
