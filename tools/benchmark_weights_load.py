#!/usr/bin/env python
"""What the checks of a weights file cost: ``load_weights_file`` against a bare ``torch.load``.

It writes a
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

    OMP_NUM_THREADS=1 python tools/benchmark_weights_load.py --repeats 5
"""
import argparse
import os

# mayolact, torch and Detectron2 are imported in main(): --help needs none of them.

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config-file", default=os.path.join(
        REPO, "configs", "COCO-InstanceSegmentation", "mayolact_R_50_FPN_550.yaml"),
        help="the config whose model (random weights) is saved and loaded")
    p.add_argument("--repeats", type=int, default=5, help="timed loads per row (median)")
    args = p.parse_args(argv)
    from mayolact.analysis.benchmark_weights_load import run_benchmark

    return run_benchmark(args.config_file, args.repeats)


if __name__ == "__main__":
    main()
