#!/usr/bin/env bash
# Set up, then build the book into _build/html. Warnings are errors.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/jupyter-book build . -W -n --keep-going
