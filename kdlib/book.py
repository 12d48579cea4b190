"""What the book's pages need beyond the experiments: numbers glued into the prose.

In the book, MyST-NB's ``glue`` stores a value with the notebook, and a sentence quotes it with
``{glue:text}`key``` so that text and run cannot drift apart. Elsewhere (Colab, your own Jupyter)
``myst_nb`` is usually not installed, and ``glue`` does nothing: the cell still prints and asserts
the number.
"""
from __future__ import annotations

from typing import Any

__all__ = ["glue"]


def glue(name: str, value: Any, display: bool = False) -> None:
    """myst_nb.glue(name, value, display) when MyST-NB is installed; nothing otherwise."""
    try:
        from myst_nb import glue as myst_glue
    except ImportError:  # Colab and plain Jupyter: no page to glue into
        return
    myst_glue(name, value, display=display)
