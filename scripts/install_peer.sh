#!/usr/bin/env bash
# Installs the peer that tests/test_mmdet_peer.py compares maYOLACT against: mmdetection 3.3.0 with
# mmengine and mmcv-lite (no compiled ops) and their pure-Python dependencies, into .peer/site,
# OUTSIDE the project's environment (pip --target; nothing is added to the venv). The tests run the
# peer in a subprocess with PYTHONPATH=.peer/site and the project's torch.
#
#   PYTHON=/path/to/python scripts/install_peer.sh   # the interpreter the tests run with
#
# Idempotent: a stamp file records the installed set; a second run with the same set does nothing.
# `make test` runs it and carries on when it fails (no registry, no wheel): the peer tests then skip.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
SITE=.peer/site
STAMP=.peer/installed.txt
# Exactly what mmdetection's YOLACT needs to import and run inference; numpy, opencv, pycocotools,
# scipy, matplotlib, termcolor and tqdm come from the project's environment.
PACKAGES=(mmdet==3.3.0 mmengine==0.10.7 mmcv-lite==2.1.0 addict==2.4.0 yapf==0.43.0
          platformdirs==4.3.6 rich==13.9.4 markdown-it-py==3.0.0 mdurl==0.1.2 pygments==2.18.0
          shapely==2.0.6 terminaltables==3.1.10 six==1.17.0)
WANT="${PACKAGES[*]} for $("$PYTHON" -c 'import sys; print(sys.version.split()[0])')"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && [ -d "$SITE/mmdet" ]; then
  echo "[install_peer] mmdetection peer already in $SITE"
  exit 0
fi
echo "[install_peer] installing the mmdetection 3.3.0 peer into $SITE (outside the venv)"
rm -rf "$SITE" "$STAMP"
mkdir -p "$SITE"
"$PYTHON" -m pip --disable-pip-version-check install -q --no-deps --no-compile --target "$SITE" \
  "${PACKAGES[@]}"
PYTHONPATH="$SITE:tests/peer" "$PYTHON" -c \
  "import mmcv_ext_stub, mmdet.models, mmengine.config; print('[install_peer] ok: mmdet', mmdet.__version__)"
echo "$WANT" > "$STAMP"
