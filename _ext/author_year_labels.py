"""The bibliography's labels as the text cites: "Buciluă et al., 2006", not "[BuciluuaCNM06]".

A Sphinx extension that _config.yml loads (sphinx: local_extensions). It registers with pybtex
a label style that writes each entry's label with the very template of sphinxcontrib-bibtex's
author_year citations (the authors' last names, "et al." from three on, a comma, the year) and
a formatting style, ``author_year``, that is pybtex's ``alpha`` (sorted by author, year and title)
with those labels; _config.yml makes it the default style of every bibliography. Two entries
whose labels would read the same get "a", "b", ... after the year, so that a label names one entry.
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable, Iterator

from pybtex.plugin import register_plugin
from pybtex.style.formatting.alpha import Style as AlphaStyle
from pybtex.style.labels import BaseLabelStyle
from sphinx.application import Sphinx
from sphinx.errors import ExtensionError
from sphinxcontrib.bibtex.plugin import find_plugin
from sphinxcontrib.bibtex.style.template import join, year

NAME = "author_year"  # the in-text citation style these labels follow, and the name of both styles


class AuthorYearLabelStyle(BaseLabelStyle):
    """Labels that read like the parenthetical author-year citation of the same entry."""

    def format_labels(self, sorted_entries: Iterable) -> Iterator[str]:
        cite = find_plugin("sphinxcontrib.bibtex.style.referencing", NAME)()
        template = join(sep=cite.author_year_sep)[cite.person.author_or_editor_or_title(full=False), year]
        labels = [template.format_data({"entry": entry, "style": cite}).render_as("text") for entry in sorted_entries]
        seen, total = Counter(), Counter(labels)
        for label in labels:
            if total[label] > 1:
                seen[label] += 1
                label += "abcdefghijklmnopqrstuvwxyz"[seen[label] - 1]
            yield label


class AuthorYearStyle(AlphaStyle):
    """pybtex's alpha style (entries sorted by author, year, title) with author-year labels."""

    default_label_style = AuthorYearLabelStyle


def check_config(app: Sphinx, config) -> None:
    """The list's labels follow the in-text citations only where those are author-year."""
    if config.bibtex_default_style == NAME and config.bibtex_reference_style != NAME:
        raise ExtensionError(f"bibtex_default_style {NAME!r} labels entries as {NAME!r} citations read: "
                             f"set bibtex_reference_style to {NAME!r} too (it is "
                             f"{config.bibtex_reference_style!r})")


def setup(app: Sphinx) -> dict:
    register_plugin("pybtex.style.labels", NAME, AuthorYearLabelStyle)
    register_plugin("pybtex.style.formatting", NAME, AuthorYearStyle)
    app.connect("config-inited", check_config)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
