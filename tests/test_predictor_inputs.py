"""The predictor's and the demo's image contract: a uint8 (H, W, 3) image, anything else a
``ValueError`` naming dtype and shape; a huge image shrunk before the network, so memory stays
bounded (checked under a memory cap the test sets)."""
import os
import subprocess

import numpy as np
import pytest
import torch

from mayolact.engine.demo import Demo
from mayolact.engine.image_input import check_image, fit_image
from mayolact.engine.predictor import YOLACTPredictor

from common import PYTHON, build_tiny_model, tiny_config


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    cfg = tiny_config(size=64)
    cfg.DATASETS.TEST = ()
    path = tmp_path_factory.mktemp("weights") / "tiny.pth"
    torch.save({"model": build_tiny_model(cfg).state_dict()}, path)
    cfg.MODEL.WEIGHTS = str(path)
    return YOLACTPredictor(cfg)


RGB = np.zeros((20, 30, 3), np.uint8)

BAD_INPUTS = [
    (None, "is None (cv2.imread returns None"),
    (RGB.astype(np.float32) / 255.0, "dtype float32 (shape (20, 30, 3)); uint8"),
    (np.full((20, 30, 3), np.nan, np.float32), "dtype float32"),
    (RGB.astype(np.uint16) * 257, "dtype uint16 (shape (20, 30, 3))"),
    (RGB.astype(bool), "dtype bool"),
    (RGB.astype(np.int64), "dtype int64"),
    (np.zeros((0, 0, 3), np.uint8), "is empty (shape (0, 0, 3))"),
    (np.zeros((20, 30), np.uint8), "shape (20, 30) (dtype uint8)"),
    (np.zeros((20, 30, 4), np.uint8), "COLOR_BGRA2BGR"),
    (np.zeros((20, 30, 3, 1), np.uint8), "shape (20, 30, 3, 1)"),
    (torch.zeros(20, 30, 3, dtype=torch.uint8), "got Tensor"),
    ("image.jpg", "got str"),
]


@pytest.mark.parametrize("image, words", BAD_INPUTS)
def test_anything_but_a_uint8_bgr_image_is_a_named_value_error(predictor, image, words):
    with pytest.raises(ValueError) as exc:
        predictor(image)
    assert words in str(exc.value), str(exc.value)


def test_a_bad_image_in_a_batch_is_named_by_its_position(predictor):
    with pytest.raises(ValueError, match="image 1 of the batch is None"):
        predictor([RGB, None])
    with pytest.raises(ValueError, match="empty list"):
        predictor([])
    assert len(predictor([RGB, RGB])) == 2 and "instances" in predictor(RGB)


def test_demo_takes_the_same_contract(predictor):
    demo = Demo(predictor.cfg, predictor=predictor)
    with pytest.raises(ValueError, match="dtype float64"):
        demo.draw(np.zeros((20, 30, 3)))
    instances, drawing = demo.draw(RGB)
    assert drawing.shape == (20, 30, 3)


def test_fit_image_bounds_the_pixels_and_keeps_the_aspect():
    image = np.zeros((3000, 4000, 3), np.uint8)
    small, scale = fit_image(image, 1_000_000)
    assert small.shape[0] * small.shape[1] <= 1_000_000 and small.shape[2] == 3
    assert abs(small.shape[1] / small.shape[0] - 4 / 3) < 0.01 and scale == small.shape[1] / 4000
    assert fit_image(image, 0)[0] is image and fit_image(image, 12_000_000)[0] is image
    assert check_image(image) is image


def test_outputs_of_a_shrunk_image_are_at_the_shrunk_size(predictor):
    cfg = predictor.cfg.clone()
    cfg.TEST.YOLACT.MAX_IMAGE_PIXELS = 100 * 100
    shrinking = YOLACTPredictor(cfg)
    out = shrinking(np.zeros((300, 200, 3), np.uint8))["instances"]
    assert out.image_size == (122, 81)
    assert tuple(out.pred_masks.shape[1:]) == (122, 81)


CAPPED = """
import resource, sys
import numpy as np, torch
import mayolact
from mayolact.engine.predictor import YOLACTPredictor
sys.path.insert(0, {tests!r})
from common import build_tiny_model, tiny_config

def vm_bytes():
    for line in open("/proc/self/status"):
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024

cfg = tiny_config(size=64)
cfg.DATASETS.TEST = ()
cfg.MODEL.YOLACT.SCORE_THRESH_TEST = 0.0  # every candidate scores: the full 20 detections
cfg.TEST.YOLACT.MAX_IMAGE_PIXELS = int(sys.argv[1])
cfg.TEST.YOLACT.OPTIMIZE = False  # the unfolded model: the state dict below loads as it is
predictor = YOLACTPredictor(cfg)
predictor.model.load_state_dict(build_tiny_model(cfg).state_dict())
image = np.random.default_rng(0).integers(0, 255, (10000, 10000, 3), dtype=np.uint8)
predictor(image[:64, :64].copy())  # warm up the allocator
cap = vm_bytes() + (3 << 30)  # 3 GB beyond the model and the 300 MB image
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
try:
    out = predictor(image)["instances"]
    print("DONE", len(out), out.image_size)
except (MemoryError, RuntimeError) as e:
    print("OUT OF MEMORY", type(e).__name__)
"""


@pytest.mark.slow
def test_a_10000_pixel_image_is_predicted_under_a_memory_cap(tmp_path):
    code = CAPPED.format(tests=os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, OMP_NUM_THREADS="1")

    def run(max_pixels):
        proc = subprocess.run([PYTHON, "-c", code, str(max_pixels)], capture_output=True,
                              text=True, timeout=600, env=env, cwd=str(tmp_path))
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    out = run(2048 * 2048)  # the default bound
    assert "DONE 20 (2048, 2048)" in out, out
    # Without the bound, the 20 full-size masks (float, 1e8 pixels each) exceed the cap.
    assert "OUT OF MEMORY" in run(0)
