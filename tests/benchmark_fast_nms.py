#!/usr/bin/env python
"""Fast NMS speed: the package's ``fast_nms`` against the former dense implementation.

Not a test (pytest does not collect it; nothing is timed in the test suite). The dense form of
Fast NMS, the IoUs of all ``top_k`` x ``top_k`` candidates of every class, is kept only as the
test reference ``_fast_nms_dense_reference`` of ``test_postprocessing.py``; this script times both
in one process on COCO-like candidate sets, after checking that they return the same detections
bit for bit.

A candidate set: 1000 boxes jittered around 12 objects in a 550 x 550 image, 80 classes, softmax
scores with a dominant background, so that a few hundred class scores exceed 0.05 (as for a trained
model; ``--background 3`` gives about 1800), 32 mask coefficients. Times are the median of
``--repeats`` calls, in CPU seconds of the calling thread (robust to other processes on the
machine); run it with ``OMP_NUM_THREADS=1``.

Example::

    OMP_NUM_THREADS=1 python tests/benchmark_fast_nms.py --sets 5 --repeats 20
"""
import argparse
import statistics

import torch
from test_postprocessing import _fast_nms_dense_reference

from mayolact.modeling.postprocessing import fast_nms

from common import cpu_time


def coco_like_candidates(seed: int, background: float = 6.5, n: int = 1000, num_classes: int = 80,
                         objects: int = 12):
    """(boxes (n, 4), scores (n, K), coeffs (n, 32)) of a COCO-like candidate set; a lower
    ``background`` logit bonus puts more class scores above the threshold."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.rand(objects, 2, generator=gen) * 450 + 50
    sizes = torch.rand(objects, 2, generator=gen) * 200 + 20
    labels = torch.randint(num_classes, (objects,), generator=gen)
    obj = torch.randint(objects, (n,), generator=gen)
    xy = centres[obj] + 0.2 * sizes[obj] * torch.randn(n, 2, generator=gen)
    wh = sizes[obj] * (1 + 0.3 * torch.randn(n, 2, generator=gen)).abs()
    boxes = torch.cat([xy - wh / 2, xy + wh / 2], dim=1).clamp(0, 550)
    logits = torch.randn(n, num_classes + 1, generator=gen)
    logits[:, num_classes] += background
    rows = torch.arange(n)
    logits[rows, labels[obj]] += 4 * torch.rand(n, generator=gen)
    logits[rows, (labels[obj] + 1) % num_classes] += 2 * torch.rand(n, generator=gen)  # confusion
    scores = logits.softmax(dim=1)[:, :num_classes]
    return boxes, scores, torch.randn(n, 32, generator=gen)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sets", type=int, default=5, help="candidate sets (seeds 0..sets-1)")
    p.add_argument("--repeats", type=int, default=20, help="timed calls per set and version")
    p.add_argument("--background", type=float, default=6.5,
                   help="background logit bonus: 6.5 gives about 200 class scores above 0.05, "
                        "3 about 1800")
    args = p.parse_args(argv)
    dense_times, new_times = [], []
    print(f"torch threads: {torch.get_num_threads()}\n")
    print("| set | class scores > 0.05 | detections | dense (ms) | fast_nms (ms) | speed-up |")
    print("|---:|---:|---:|---:|---:|---:|")
    for seed in range(args.sets):
        call = (*coco_like_candidates(seed, args.background), 0.5, 0.05, 200, 100)
        got, expected = fast_nms(*call), _fast_nms_dense_reference(*call)
        if not all(torch.equal(g, e) for g, e in zip(got, expected)):
            raise AssertionError(f"set {seed}: fast_nms differs from the dense reference")
        dense = cpu_time(lambda: _fast_nms_dense_reference(*call), args.repeats)
        new = cpu_time(lambda: fast_nms(*call), args.repeats)
        dense_times.append(dense)
        new_times.append(new)
        print(f"| {seed} | {int((call[1] > 0.05).sum())} | {len(got[1])} | {1000 * dense:.2f} | "
              f"{1000 * new:.2f} | {dense / new:.0f}x |")
    dense, new = statistics.median(dense_times), statistics.median(new_times)
    print(f"\nMedian over the sets: dense {1000 * dense:.2f} ms, fast_nms {1000 * new:.2f} ms, "
          f"{dense / new:.0f}x faster (same detections, bit for bit).")


if __name__ == "__main__":
    main()
