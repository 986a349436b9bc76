#!/usr/bin/env bash
# Idempotent installer for maYOLACT on a CPU (or CUDA) Linux machine.
#
#   PYTHON=/path/to/python scripts/install.sh   # use that interpreter instead of .venv
#
# Steps: create .venv (unless PYTHON is given), install torch/torchvision, detectron2 (kept if one
# is already importable; otherwise the pure-Python sal-detectron2 wheel, see docs/GETTING_STARTED.md), the other
# dependencies and the project itself in editable mode. Each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

# The project's own venv is created when PYTHON is unset or names it (the Makefile's default).
if [ -z "${PYTHON:-}" ] || [ "$PYTHON" = "$PWD/.venv/bin/python" ] || [ "$PYTHON" = ".venv/bin/python" ]; then
  if [ ! -x .venv/bin/python ]; then
    echo "[install] creating .venv"
    python3 -m venv .venv
  fi
  PYTHON=.venv/bin/python
fi
if ! "$PYTHON" -c "import sys" >/dev/null 2>&1; then
  echo "[install] error: PYTHON=$PYTHON is not a working Python interpreter" >&2
  exit 1
fi
PIP=("$PYTHON" -m pip --disable-pip-version-check)

have() { "$PYTHON" -c "import $1" >/dev/null 2>&1; }

if ! have torch || ! have torchvision; then
  echo "[install] torch, torchvision"
  "${PIP[@]}" install -q "torch" "torchvision"
fi

DEPS=("setuptools<81" fvcore iopath pycocotools omegaconf hydra-core yacs tabulate termcolor
      cloudpickle tqdm matplotlib tensorboard Pillow opencv-python-headless pytest pytest-xdist
      scipy faster-coco-eval onnx onnxruntime ruff)
if ! have fvcore || ! have pycocotools || ! have cv2 || ! have pytest || ! have xdist || ! have hydra || ! have scipy \
   || ! have faster_coco_eval || ! have onnx || ! have onnxruntime || ! have ruff \
   || ! "$PYTHON" -c "import pkg_resources" >/dev/null 2>&1; then
  echo "[install] detectron2's pure-Python dependencies and the tools'"
  "${PIP[@]}" install -q "${DEPS[@]}"
fi

if ! have detectron2; then
  echo "[install] detectron2 (sal-detectron2 0.7.2, Python code only)"
  SITE=$("$PYTHON" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  D2DIR="$SITE/../detectron2_pure"
  mkdir -p "$D2DIR"
  D2DIR=$(cd "$D2DIR" && pwd)
  "${PIP[@]}" install -q --no-deps --only-binary=:all: --python-version 3.10 \
      --target "$D2DIR" --upgrade sal-detectron2==0.7.2
  rm -rf "$D2DIR/tools"            # the wheel ships a stray top-level 'tools' package
  echo "$D2DIR" > "$SITE/detectron2_pure.pth"
fi

if ! "$PYTHON" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('mayolact') is None)" >/dev/null 2>&1; then
  echo "[install] mayolact (editable)"
  "${PIP[@]}" install -q --no-deps --no-build-isolation -e .
fi

"$PYTHON" - <<'PY'
import torch, torchvision, detectron2
try:
    from detectron2 import _C  # noqa: F401
    ops = "compiled ops"
except Exception:
    ops = "no compiled ops (pure Python)"
print(f"[install] ok: torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"detectron2 {detectron2.__version__} ({ops})")
PY
