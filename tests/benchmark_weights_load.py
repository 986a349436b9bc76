#!/usr/bin/env python
"""What the checks of a weights file cost: ``load_weights_file`` against a bare ``torch.load``.

Not a test (pytest does not collect it; nothing is timed in the test suite). It writes a
checkpoint of a full-size config's model (default: ``mayolact_R_50_FPN_550.yaml``, random weights)
padded with an optimizer-like copy of every tensor (as a training checkpoint holds), so that the
file is over 100 MB, and times, in one process, the median of ``--repeats`` runs of

* ``torch.load(weights_only=True)``: what Detectron2 does;
* the CRC-32 of every member of the archive (``integrity_problem``, cache cleared);
* the finiteness check of every tensor (``first_non_finite``);
* ``load_weights_file``: all of it (integrity, restricted unpickling, finiteness).

Wall-clock seconds, with the file in the page cache (the second read of a file just written), so
that the numbers are the CPU cost of the checks, not the disk's speed. Run it with
``OMP_NUM_THREADS=1``.

Example::

    OMP_NUM_THREADS=1 python tests/benchmark_weights_load.py --repeats 5
"""
import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from detectron2.modeling import build_model

import mayolact  # noqa: F401  (registers everything)
from mayolact.checkpoint.weights_file import (
    _VERIFIED,
    first_non_finite,
    integrity_problem,
    load_weights_file,
)
from mayolact.config import load_config

REPO = Path(__file__).resolve().parents[1]


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config-file", default=str(
        REPO / "configs" / "COCO-InstanceSegmentation" / "mayolact_R_50_FPN_550.yaml"))
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)

    cfg = load_config(args.config_file, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
    torch.manual_seed(0)
    state = build_model(cfg).state_dict()
    momentum = {k: torch.randn_like(v) for k, v in state.items() if v.is_floating_point()}
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.pth")
        torch.save({"model": state, "optimizer": {"state": momentum}, "iteration": 1}, path)
        size_mb = os.path.getsize(path) / 2**20
        loaded = torch.load(path, map_location="cpu", weights_only=True)  # warms the page cache

        def crc():
            _VERIFIED.clear()
            assert integrity_problem(path) is None

        def full():
            _VERIFIED.clear()
            load_weights_file(path)

        rows = [
            ("torch.load(weights_only=True)",
             median_seconds(lambda: torch.load(path, map_location="cpu", weights_only=True),
                            args.repeats)),
            ("CRC-32 of every member", median_seconds(crc, args.repeats)),
            ("finiteness of every tensor",
             median_seconds(lambda: first_non_finite(loaded), args.repeats)),
            ("load_weights_file (all of it)", median_seconds(full, args.repeats)),
        ]
    base = rows[0][1]
    print(f"{os.path.basename(args.config_file)}: {size_mb:.0f} MB checkpoint "
          f"({len(state)} model tensors + optimizer state), median of {args.repeats}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    print(f"| {'step':<32} | {'seconds':>8} | {'x torch.load':>12} |")
    print(f"|{'-' * 34}|{'-' * 9}:|{'-' * 13}:|")
    for name, seconds in rows:
        print(f"| {name:<32} | {seconds:>8.3f} | {seconds / base:>12.2f} |")
    return rows


if __name__ == "__main__":
    main()
