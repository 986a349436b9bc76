"""Fast NMS speed (``tools/benchmark_fast_nms.py``): the package's ``fast_nms`` against its dense
form, on COCO-like candidate sets.

The dense form, :func:`fast_nms_dense` (the IoUs of all ``top_k`` x ``top_k`` candidates of every
class), is the package's former implementation; ``tests/test_postprocessing.py`` holds ``fast_nms``
to it bit for bit. The benchmark times both in one process after checking that they return the same
detections; times are the median of ``repeats`` calls in CPU seconds of the calling thread
(robust to other processes on the machine).
"""
import statistics
from typing import Tuple

import torch

from mayolact.modeling.postprocessing import fast_nms
from mayolact.structures.box_ops import batched_box_iou
from mayolact.utils.profiling import cpu_time

__all__ = ["coco_like_candidates", "fast_nms_dense", "run_benchmark"]


def fast_nms_dense(boxes, scores, coeffs, iou_thr, score_thr, top_k, max_num):
    """Fast NMS through the IoUs of all ``top_k`` x ``top_k`` candidates of every class.

    Args and returns as :func:`mayolact.modeling.postprocessing.fast_nms`: boxes (n, 4), scores
    (n, K), coeffs (n, C) -> (boxes (m, 4), scores (m,), classes (m,), coeffs (m, C)).
    """
    num_classes = scores.shape[1]
    cls_scores, idx = scores.t().sort(dim=1, descending=True, stable=True)  # (K, n)
    idx = idx[:, :top_k]
    cls_scores = cls_scores[:, :top_k]
    cand_boxes = boxes[idx.reshape(-1)].view(num_classes, idx.shape[1], 4)
    iou = batched_box_iou(cand_boxes, cand_boxes).triu_(diagonal=1)
    keep = (iou.max(dim=1).values <= iou_thr) & (cls_scores > score_thr)
    classes = torch.arange(num_classes)[:, None].expand_as(keep)[keep]
    out_scores, order = cls_scores[keep].sort(dim=0, descending=True, stable=True)
    if max_num > 0:
        order, out_scores = order[:max_num], out_scores[:max_num]
    return cand_boxes[keep][order], out_scores, classes[order], coeffs[idx[keep][order]]


def coco_like_candidates(seed: int, background: float = 6.5, n: int = 1000,
                         num_classes: int = 80, objects: int = 12
                         ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A COCO-like candidate set: ``n`` boxes jittered around ``objects`` objects in a 550 x 550
    image, softmax scores with a dominant background (a lower ``background`` logit bonus puts
    more class scores above 0.05: 6.5 about 200, 3 about 1800), 32 mask coefficients.

    Returns:
        (boxes (n, 4), scores (n, K), coeffs (n, 32)).
    """
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


def run_benchmark(sets: int, repeats: int, background: float) -> int:
    """Print the markdown table of ``tools/benchmark_fast_nms.py``: per candidate set (seeds
    ``0..sets-1``) the class scores above 0.05, the detections, both times and the speed-up.

    Returns:
        int: 0.

    Raises:
        AssertionError: ``fast_nms`` and :func:`fast_nms_dense` differ on a set.
    """
    dense_times, new_times = [], []
    print(f"torch threads: {torch.get_num_threads()}\n")
    print("| set | class scores > 0.05 | detections | dense (ms) | fast_nms (ms) | speed-up |")
    print("|---:|---:|---:|---:|---:|---:|")
    for seed in range(sets):
        call = (*coco_like_candidates(seed, background), 0.5, 0.05, 200, 100)
        got, expected = fast_nms(*call), fast_nms_dense(*call)
        if not all(torch.equal(g, e) for g, e in zip(got, expected)):
            raise AssertionError(f"set {seed}: fast_nms differs from the dense form")
        dense = cpu_time(lambda: fast_nms_dense(*call), repeats)
        new = cpu_time(lambda: fast_nms(*call), repeats)
        dense_times.append(dense)
        new_times.append(new)
        print(f"| {seed} | {int((call[1] > 0.05).sum())} | {len(got[1])} | {1000 * dense:.2f} | "
              f"{1000 * new:.2f} | {dense / new:.0f}x |")
    dense, new = statistics.median(dense_times), statistics.median(new_times)
    print(f"\nMedian over the sets: dense {1000 * dense:.2f} ms, fast_nms {1000 * new:.2f} ms, "
          f"{dense / new:.0f}x faster (same detections, bit for bit).")
    return 0
