#!/usr/bin/env bash
# MathJax 3 for the offline book: taken from the npm registry (npm pack) into _vendor/mathjax/,
# which _config.yml copies into the build (html_extra_path) and points mathjax_path at.
# Not committed (about 9 MB); fetched again only when VERSION changes. Needs npm and the registry
# (or npm's cache); nothing else from outside.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=3.2.2
DEST=_vendor/mathjax

[ "$(cat "$DEST/VERSION" 2>/dev/null)" = "$VERSION" ] && exit 0
command -v npm >/dev/null || { echo "fetch_mathjax: npm is needed (apt-get install npm)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
npm pack --silent "mathjax@$VERSION" --pack-destination "$tmp" >/dev/null
tar -xzf "$tmp/mathjax-$VERSION.tgz" -C "$tmp"

# the combined loader the pages use, and what it loads on demand: TeX extensions (autoload),
# the CHTML fonts, the menu and its accessibility options
es5="$tmp/package/es5"
rm -rf "$DEST"
mkdir -p "$DEST/output"
cp -r "$es5/tex-mml-chtml.js" "$es5/input" "$es5/ui" "$es5/a11y" "$es5/sre" "$DEST/"
cp -r "$es5/output/chtml" "$DEST/output/"
cp "$tmp/package/LICENSE" "$DEST/"
echo "$VERSION" > "$DEST/VERSION"
echo "fetch_mathjax: MathJax $VERSION in $DEST"
