"""What the book's pages need beyond the experiments: numbers glued into the prose.

A code cell stores a value with ``glue(name, value)`` (MyST-NB's glue: an output holding the
value's repr, tagged with its name), and the prose quotes it as the number itself, in a span that
names it: ``<span class="glued" title="name:.1%">92.4%</span>``. Inline HTML reads the same in
the book, in Colab and in plain Jupyter (a ``{glue:text}`` role would show raw outside the book).
``python scripts/glue_prose.py CHAPTER.ipynb`` writes the number from the stored output (and turns
any ``{glue:text}`name:fmt``` role into such a span); ``--check``, and tests/test_colab.py, fail
when a number in the prose is not its output's. Where ``myst_nb`` is missing (Colab) ``glue``
stores nothing: the number is already in the prose, and the cell still prints and asserts it.
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
