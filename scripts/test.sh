#!/usr/bin/env bash
# Set up, then run every test: kdlib's unit tests, the checks of the built pages, and every
# chapter under nbval (stored outputs against a fresh run, in the quick "smoke" profile).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

# tests/test_book.py reads the built pages: build them when missing or older than a source
if [ ! -f _build/html/index.html ] || \
   [ -n "$(find book _static _toc.yml _config.yml references.bib -newer _build/html/index.html -print -quit)" ]; then
  bash scripts/fetch_mathjax.sh
  .venv/bin/jupyter-book build . -W -n --keep-going
fi

export KDLIB_PROFILE="${KDLIB_PROFILE:-smoke}"
# a fresh cache, so every chapter really trains (and never reuses a model from another run)
export KDLIB_CACHE="${KDLIB_CACHE:-$(mktemp -d)}"
set +e
.venv/bin/python -m pytest tests book --nbval --nbval-current-env --nbval-cell-timeout=300 \
  -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
exit "$rc"
