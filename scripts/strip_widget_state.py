"""Drop the saved widget state of notebooks that show no widget.

A notebook executed by nbclient (``jupyter nbconvert --execute``) saves the state of its ipywidgets
in its metadata (``widgets``). When every widget output is hidden from the page (cell tag
``remove-output``), that state is dead weight: myst-nb still embeds it and loads require.js and
the widget manager from CDNs on the page. A notebook that does show a widget keeps its state.

    python scripts/strip_widget_state.py book/*.ipynb

Run it after executing the chapters (or execute them with
``--ExecutePreprocessor.store_widget_state=False``); tests/test_browser.py fails on a page that
loads the widget manager without showing a widget.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List

import nbformat

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def shown_widget_cells(nb: nbformat.NotebookNode) -> List[int]:
    """Indices of the code cells whose widget outputs reach the page (not tagged remove-output)."""
    return [i for i, cell in enumerate(nb.cells)
            if cell.cell_type == "code" and "remove-output" not in cell.metadata.get("tags", [])
            and any(WIDGET_VIEW in output.get("data", {}) for output in cell.outputs)]


def strip_widget_state(path: Path) -> str:
    """Remove the notebook's saved widget state unless a widget is shown; say what was done."""
    nb = nbformat.read(path, as_version=4)
    if "widgets" not in nb.metadata:
        return f"{path}: no widget state"
    shown = shown_widget_cells(nb)
    if shown:
        return f"{path}: kept its widget state, for the widgets shown by cells {shown}"
    size = len(json.dumps(nb.metadata["widgets"]))
    del nb.metadata["widgets"]
    nbformat.write(nb, path)
    return f"{path}: removed {size / 1000:.0f} KB of widget state"


def main(paths: List[str]) -> None:
    if not paths:
        sys.exit(__doc__)
    for path in paths:
        print(strip_widget_state(Path(path)))


if __name__ == "__main__":
    main(sys.argv[1:])
