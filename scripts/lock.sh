#!/usr/bin/env bash
# Refresh requirements.lock from requirements.txt: the newest versions inside its ranges, for
# Python 3.11 on x86-64 Linux (CI's machine). Commit the lock, then re-run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/uv ] || .venv/bin/python -m pip install -q uv
.venv/bin/uv pip compile requirements.txt --python-version 3.11 \
  --python-platform x86_64-manylinux_2_28 -o requirements.lock
