"""Peak memory of ``YOLACTPredictor`` on large images, with and without
``TEST.YOLACT.MAX_IMAGE_PIXELS`` (the bound on the size the outputs are computed at).

Each row runs in a fresh process: the tiny test model (quarter-width R-18) with the score
threshold at 0 so that every image gets the full ``TEST.DETECTIONS_PER_IMAGE`` detections, one
random uint8 image; it prints the peak resident memory (``VmHWM``) above the process's level
after a warm-up on a small image, and the time. The masks dominate: ``pred_masks`` (N, H, W)
bool plus the float (N, H, W) masks they are thresholded from.

Usage::

    OMP_NUM_THREADS=1 python tests/benchmark_predictor_memory.py
"""
import os
import subprocess
import sys

CHILD = """
import sys, time
import numpy as np
import mayolact
from mayolact.engine.predictor import YOLACTPredictor
sys.path.insert(0, {tests!r})
from common import tiny_config

def hwm_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

side, max_pixels, detections = (int(v) for v in sys.argv[1:4])
cfg = tiny_config(size=64)
cfg.DATASETS.TEST = ()
cfg.MODEL.YOLACT.SCORE_THRESH_TEST = 0.0
cfg.TEST.DETECTIONS_PER_IMAGE = detections
cfg.TEST.YOLACT.MAX_IMAGE_PIXELS = max_pixels
predictor = YOLACTPredictor(cfg)
predictor(np.zeros((64, 64, 3), np.uint8))
image = np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8)
base = hwm_mb()
start = time.perf_counter()
out = predictor(image)["instances"]
print(len(out), out.image_size[0], out.image_size[1], hwm_mb() - base,
      time.perf_counter() - start)
"""


def main():
    tests = os.path.dirname(os.path.abspath(__file__))
    code = CHILD.format(tests=tests)
    rows = [(4000, 0, 20), (4000, 2048 * 2048, 20), (4000, 2048 * 2048, 100),
            (10000, 2048 * 2048, 20), (10000, 2048 * 2048, 100), (2048, 0, 100)]
    print("| image | MAX_IMAGE_PIXELS | detections | outputs at | peak memory above the "
          "model (MB) | time (s) |")
    print("|---|---:|---:|---|---:|---:|")
    for side, max_pixels, dets in rows:
        proc = subprocess.run([sys.executable, "-c", code, str(side), str(max_pixels), str(dets)],
                              capture_output=True, text=True, timeout=900,
                              env=dict(os.environ, OMP_NUM_THREADS="1"))
        if proc.returncode != 0:
            print(f"| {side}x{side} | {max_pixels} | {dets} | failed: "
                  f"{proc.stderr.strip().splitlines()[-1][:80]} | | |")
            continue
        n, h, w, mb, seconds = proc.stdout.split()
        print(f"| {side}x{side} | {max_pixels:,} | {n} | {w}x{h} | {float(mb):,.0f} | "
              f"{float(seconds):.1f} |")


if __name__ == "__main__":
    main()
