#!/usr/bin/env bash
# Re-check what chapters claim: each runs again top to bottom, in the profile its stored outputs
# came from, on an empty model cache; its asserts run and its printed numbers are compared with
# the stored ones (see scripts/reproduce.py). The committed notebooks are left alone.
#   bash scripts/reproduce.sh book/04_hinton_mnist.ipynb [more ...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/reproduce.py "$@"
