#!/usr/bin/env bash
# Make (or reuse) .venv with the book's own environment: the exact versions in requirements.lock
# (compiled from requirements.txt's ranges; refresh it with `bash scripts/lock.sh`).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements.lock
