# maYOLACT: `make demo` and `make test` install whatever is missing first.
# PYTHON=/path/to/python make test  uses that interpreter instead of .venv.
PYTHON ?= $(CURDIR)/.venv/bin/python
export PYTHON
# The tests and the demo are CPU work; keep BLAS from oversubscribing the 2 cores.
export OMP_NUM_THREADS ?= 2

.PHONY: install lint test test-fast demo figures benchmarks gpu-check coco_mini clean

install:
	@bash scripts/install.sh

# The suite runs in two pytest-xdist workers of one thread each (every test is safe in parallel:
# temporary folders, free ports). TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2
PYTEST = OMP_NUM_THREADS=1 $(PYTHON) -m pytest -q $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS))

# The mmdetection peer (tests/test_mmdet_peer.py) goes to .peer/site, outside the venv; when it
# cannot be installed the peer tests skip and the rest still runs.
test: install lint
	@bash scripts/install_peer.sh || echo "[install_peer] not installed: the mmdetection peer tests will skip"
	$(PYTEST) tests

# ruff.toml: pycodestyle, pyflakes and import order, lines of at most 100 characters.
lint: install
	$(PYTHON) -m ruff check .

# The unit tests only: everything but the end-to-end runs marked slow (see CONTRIBUTING.md).
test-fast: install
	$(PYTEST) -m "not slow" tests

# Two threads whatever OMP_NUM_THREADS says: a seeded run reproduces bit for bit only with the same
# thread count (mayolact/utils/determinism.py), and the documented demo numbers are 2 threads'.
demo: install
	OMP_NUM_THREADS=2 $(PYTHON) tools/demo_job.py --output output/demo

# On a CUDA machine: the CUDA tests and the GPU column of Table 4 in one run (docs/BENCHMARKS.md).
gpu-check: install
	bash scripts/gpu_check.sh

# The paper's Figures 1, 3a and 3c on coco_mini (`make coco_mini` builds it from a COCO 2017
# download) and the shapes set; Figure 2 needs a trained model.
figures: install
	$(PYTHON) tools/plot_figures.py mob-histogram --dataset coco_mini_train mayolact_shapes_train --output output/figures/fig3a.png
	$(PYTHON) tools/plot_figures.py iou-vs-maiou --dataset coco_mini_train --output output/figures/fig3c.png
	$(PYTHON) tools/plot_figures.py anchor-disagreement --dataset coco_mini_val --output output/figures/fig1.png

benchmarks: install
	$(PYTHON) tools/benchmark_assigner.py
	$(PYTHON) tools/benchmark_mapper.py
	$(PYTHON) tools/benchmark_inference.py
	OMP_NUM_THREADS=1 $(PYTHON) tools/benchmark_fast_nms.py

# coco_mini (337 + 128 COCO 2017 images, used by the quick configs, `make figures` and the
# benchmarks) from a COCO 2017 download: COCO=/path/to/coco make coco_mini
COCO ?= $(or $(DETECTRON2_DATASETS),datasets)/coco
coco_mini: install
	$(PYTHON) tools/make_coco_mini.py --coco $(COCO)

clean:
	rm -rf output build *.egg-info projects/maYOLACT/*.egg-info
