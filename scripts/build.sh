#!/usr/bin/env bash
# Set up, fetch MathJax (the pages serve it themselves), then build the book into _build/html.
# Warnings are errors.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/fetch_mathjax.sh
.venv/bin/jupyter-book build . -W -n --keep-going
