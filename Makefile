# maYOLACT: `make demo` and `make test` install whatever is missing first.
# PYTHON=/path/to/python make test  uses that interpreter instead of .venv.
PYTHON ?= $(CURDIR)/.venv/bin/python
export PYTHON
# The tests and the demo are CPU work; keep BLAS from oversubscribing the 2 cores.
export OMP_NUM_THREADS ?= 2

.PHONY: install test demo benchmarks clean

install:
	@bash scripts/install.sh

# The mmdetection peer (tests/test_mmdet_peer.py) goes to .peer/site, outside the venv; when it
# cannot be installed the peer tests skip and the rest still runs.
test: install
	@bash scripts/install_peer.sh || echo "[install_peer] not installed: the mmdetection peer tests will skip"
	$(PYTHON) -m pytest -q tests

demo: install
	$(PYTHON) tools/demo_job.py --output output/demo

benchmarks: install
	$(PYTHON) tools/benchmark_assigner.py
	$(PYTHON) tools/benchmark_mapper.py
	$(PYTHON) tools/benchmark_inference.py

clean:
	rm -rf output build *.egg-info projects/maYOLACT/*.egg-info
