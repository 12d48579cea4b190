#!/usr/bin/env bash
# Run every chapter under Colab's versions: Python 3.13, torch 2.11, torchvision 0.26,
# ipywidgets 7.7.1, numpy 2.1, matplotlib 3.10 (Colab's runtime as of this script; update PINS
# when Colab moves). A venv with those pins (COLAB_VENV, default _build/colab-venv), kdlib installed
# into it without touching the pins, then each chapter executed top to bottom in the quick
# "smoke" profile with nbclient: every cell must run and every assert hold; outputs are not
# compared and the notebooks are not written. Then the tests of what the pins touch most (the
# widgets and the figures' sizes) under the same versions.
#
#   bash scripts/colab_pins.sh                       # every chapter in book/
#   bash scripts/colab_pins.sh book/04_hinton_mnist.ipynb book/07_pitfalls.ipynb
#
# Needs a python3.13 (COLAB_PYTHON; falls back to python3 with a warning) and PyPI. torch from
# PyPI is the CUDA build (about 3 GB with its nvidia-* wheels); it runs on CPU too.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS

PINS=(torch==2.11.0 torchvision==0.26.0 ipywidgets==7.7.1 "numpy==2.1.*" "matplotlib==3.10.*")
VENV="${COLAB_VENV:-_build/colab-venv}"  # _build/ is ignored by git and by the book
PY="${COLAB_PYTHON:-}"
if [ -z "$PY" ]; then
  for candidate in python3.13 /root/.pyenv/versions/3.13.0/bin/python3.13; do
    if "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 13)' 2>/dev/null; then PY=$candidate; break; fi
  done
fi
if [ -z "$PY" ]; then
  PY=python3
  echo "warning: no python3.13 found, using $("$PY" --version) (Colab runs 3.13)" >&2
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi
pip_quiet() { grep -v "is ignored: it is neither a file nor a directory" || true; }  # this machine's pip.conf
constraints="$(mktemp)"
printf '%s\n' "${PINS[@]}" >"$constraints"
# the pins first, then kdlib and what the chapters and the runner need, never moving a pin
"$VENV/bin/python" -m pip install -q "${PINS[@]}" 2>&1 | pip_quiet
"$VENV/bin/python" -m pip install -q -c "$constraints" -e ".[data]" nbclient ipykernel pytest 2>&1 | pip_quiet
rm -f "$constraints"
"$VENV/bin/python" - <<'EOF'
import sys, torch, torchvision, ipywidgets, numpy, matplotlib
print(f"colab pins: python {sys.version.split()[0]}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"ipywidgets {ipywidgets.__version__}, numpy {numpy.__version__}, matplotlib {matplotlib.__version__}")
EOF

if [ "$#" -gt 0 ]; then chapters=("$@"); else chapters=(book/*.ipynb); fi
export KDLIB_PROFILE=smoke
export KDLIB_CACHE="${KDLIB_CACHE:-$(mktemp -d)}"  # a fresh cache: every chapter really trains
export MPLBACKEND=Agg
failed=0
for chapter in "${chapters[@]}"; do
  t0=$SECONDS
  if "$VENV/bin/python" - "$chapter" 2> >(grep -v "running over TCP without encryption" >&2) <<'EOF'
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

path = Path(sys.argv[1])
nb = nbformat.read(path, as_version=4)
client = NotebookClient(nb, kernel_name="python3", timeout=900, resources={"metadata": {"path": str(path.parent)}})
try:
    client.execute()
except CellExecutionError as exc:
    print(str(exc)[-3000:], file=sys.stderr)
    sys.exit(1)
EOF
  then echo "ok    $chapter ($((SECONDS - t0)) s)"
  else echo "FAIL  $chapter ($((SECONDS - t0)) s)"; failed=$((failed + 1))
  fi
done
if [ "$#" -eq 0 ]; then
  t0=$SECONDS
  if "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/test_widgets.py tests/test_figure_sizes.py
  then echo "ok    tests/test_widgets.py tests/test_figure_sizes.py ($((SECONDS - t0)) s)"
  else echo "FAIL  tests/test_widgets.py tests/test_figure_sizes.py ($((SECONDS - t0)) s)"; failed=$((failed + 1))
  fi
fi
echo "colab pins: ${#chapters[@]} chapters$([ "$#" -eq 0 ] && echo " and the widget tests"), $failed failed, $((SECONDS - start)) s"
[ "$failed" -eq 0 ]
