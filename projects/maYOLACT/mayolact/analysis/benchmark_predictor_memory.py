"""The predictor-memory benchmark of ``tools/benchmark_predictor_memory.py``: peak memory of
``YOLACTPredictor`` on large images, with and without ``TEST.YOLACT.MAX_IMAGE_PIXELS``."""
import os
import subprocess
import sys

__all__ = ["ROWS", "run_benchmark"]

#: (image side, TEST.YOLACT.MAX_IMAGE_PIXELS (0: no bound), TEST.DETECTIONS_PER_IMAGE).
ROWS = [(4000, 0, 20), (4000, 2048 * 2048, 20), (4000, 2048 * 2048, 100),
        (10000, 2048 * 2048, 20), (10000, 2048 * 2048, 100), (2048, 0, 100)]

# One row, in a fresh process so that its peak memory (VmHWM) is its own.
_CHILD = """
import sys, time
import numpy as np
from mayolact.config import load_config
from mayolact.engine.predictor import YOLACTPredictor

def hwm_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

config_file = sys.argv[1]
side, max_pixels, detections = (int(v) for v in sys.argv[2:5])
cfg = load_config(config_file, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "",
                                "MODEL.YOLACT.NUM_CLASSES", "80", "DATASETS.TRAIN", "()",
                                "DATASETS.TEST", "()", "MODEL.YOLACT.SCORE_THRESH_TEST", "0.0",
                                "TEST.DETECTIONS_PER_IMAGE", str(detections),
                                "TEST.YOLACT.MAX_IMAGE_PIXELS", str(max_pixels)])
predictor = YOLACTPredictor(cfg)
predictor(np.zeros((64, 64, 3), np.uint8))
image = np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8)
base = hwm_mb()
start = time.perf_counter()
out = predictor(image)["instances"]
print(len(out), out.image_size[0], out.image_size[1], hwm_mb() - base,
      time.perf_counter() - start)
"""


def run_benchmark(config_file: str, rows=ROWS, timeout: float = 900.0):
    """Run each row in a fresh process (one thread) and print the table."""
    print("| image | MAX_IMAGE_PIXELS | detections | outputs at | peak memory above the "
          "model (MB) | time (s) |")
    print("|---|---:|---:|---|---:|---:|")
    for side, max_pixels, dets in rows:
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, config_file, str(side), str(max_pixels), str(dets)],
            capture_output=True, text=True, timeout=timeout,
            env=dict(os.environ, OMP_NUM_THREADS="1"))
        if proc.returncode != 0:
            print(f"| {side}x{side} | {max_pixels} | {dets} | failed: "
                  f"{proc.stderr.strip().splitlines()[-1][:80]} | | |")
            continue
        n, h, w, mb, seconds = proc.stdout.split()[-5:]
        print(f"| {side}x{side} | {max_pixels:,} | {n} | {w}x{h} | {float(mb):,.0f} | "
              f"{float(seconds):.1f} |")
