#!/usr/bin/env bash
# MathJax 3 for the offline book: copied from the PyPI package django-static-mathjax (MathJax's
# own files, pinned in requirements.lock; Django is not needed) into _vendor/mathjax/, which
# _config.yml copies into the build (html_extra_path) and points mathjax_path at. Not committed
# (about 9 MB); copied again only when the version changes.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=_vendor/mathjax
src=$(.venv/bin/python -c "import importlib.util as u; print(u.find_spec('mathjax').submodule_search_locations[0])")
VERSION=$(.venv/bin/python -c "from importlib.metadata import version; print(version('django-static-mathjax'))")

[ "$(cat "$DEST/VERSION" 2>/dev/null)" = "$VERSION" ] && exit 0
# the combined loader the pages use, and what it loads on demand: TeX extensions (autoload),
# the CHTML fonts, the menu and its accessibility options
es5="$src/static/mathjax/es5"
rm -rf "$DEST"
mkdir -p "$DEST/output"
cp -r "$es5/tex-mml-chtml.js" "$es5/input" "$es5/ui" "$es5/a11y" "$es5/sre" "$DEST/"
cp -r "$es5/output/chtml" "$DEST/output/"
cp "$src/static/mathjax/LICENSE" "$DEST/"
echo "$VERSION" > "$DEST/VERSION"
echo "fetch_mathjax: MathJax from django-static-mathjax $VERSION in $DEST"
