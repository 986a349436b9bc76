#!/usr/bin/env bash
# The GPU column of Table 4 and the CUDA tests in one run, sized for a short lease of a CUDA machine
# (docs/BENCHMARKS.md, "GPU"). Everything it prints also goes to files under $OUT (default
# output/gpu_check): nvidia-smi.txt, cuda_tests.txt, table4_cuda.md.
#
#   bash scripts/gpu_check.sh            # after `make install` (or PYTHON=/path/to/python)
#
# Exit status: 0 when both steps ran; 2 when PyTorch sees no CUDA device (nothing is run);
# otherwise the status of the step that failed.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
command -v "$PYTHON" > /dev/null || PYTHON=python
OUT=${OUT:-output/gpu_check}

if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: PyTorch ($PYTHON) sees no CUDA device; nothing to measure" >&2
    exit 2
fi
mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true

# 1. Every test that exercises CUDA (the DCN and CARAFE kernels against torchvision's, the device
#    tests of the model); -rs lists what skipped and why.
"$PYTHON" -m pytest -q -rs -k cuda -p no:cacheprovider tests 2>&1 | tee "$OUT/cuda_tests.txt"
status=${PIPESTATUS[0]}
[ "$status" -eq 0 ] || [ "$status" -eq 5 ] || exit "$status"

# 2. Every Table 4 row on the GPU, the bit-exact paths and the matched-load rows beside them.
"$PYTHON" tools/benchmark_inference.py --device cuda --images 20 --warmup 5 --compare-paths \
    --deviation 4 --matched-load 2>/dev/null | tee "$OUT/table4_cuda.md"
exit "${PIPESTATUS[0]}"
