"""Numbers in the prose that read right everywhere: in the book, in Colab and in plain Jupyter.

    python scripts/glue_prose.py book/*.ipynb            # convert roles, re-sync numbers, write
    python scripts/glue_prose.py --check book/*.ipynb    # report every stale number; exit 1 if any

A code cell stores a value with ``kd.glue(name, value)`` (MyST-NB's glue: a display_data output
whose metadata is {"scrapbook": {"name": name, ...}} and whose text/plain is the value's repr). The
prose quotes it as the number itself, inside a span that says where it came from::

    the teacher makes <span class="glued" title="ch4_errors">58</span> errors
    and gets <span class="glued" title="ch9_teacher_acc:.1%">92.4%</span> right

The title is what a ``{glue:text}`` role held, ``name`` or ``name:format_spec``; the text is
that glue output formatted as ``{glue:text}`` formats it (format_plain_text below, MyST-NB's
rule). Raw inline HTML renders the same in Jupyter Book, Colab and Jupyter; a role such as
``{glue:text}`name``` renders only in Jupyter Book, and Colab shows it raw.

What the command does to each notebook:

1. convert: every ``{glue:text}`name[:fmt]``` role in a markdown cell becomes a span with the
   formatted number (the book's prose used roles before; new prose may still write roles);
2. sync: the number in every span is formatted again from the notebook's stored glue output, so
   after a chapter is executed again one command refreshes its prose;
3. with --check nothing is written: every role left and every span whose number differs from its
   glue output (or whose name has no glue output) is reported, and the exit status is 1.

Markdown is edited as text; the notebook is written back in the format Jupyter writes (indent 1,
UTF-8), and only when something changed.
"""
from __future__ import annotations

import argparse
import html
import json
import re
import sys
from ast import literal_eval
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

__all__ = ["ROLE", "SPAN", "Problem", "format_plain_text", "glue_values", "span", "process_notebook",
           "process_file", "main"]

# {glue:text}`name` or {glue:text}`name:fmt` (MyST-NB's syntax; also {glue:text}`doc::name`, not used here)
ROLE = re.compile(r"\{glue:text\}`(?P<content>[^`]+)`")
# any other glue role ({glue}, {glue:any}, {glue:md}, {glue:figure}...) or the {eval} role
OTHER_ROLE = re.compile(r"\{(?:glue(?::(?!text\})[\w-]*)?|eval)\}`[^`]*`")
SPAN = re.compile(r'<span class="glued" title="(?P<title>[^"]*)">(?P<text>[^<]*)</span>')
TEXT_PLAIN = "text/plain"


def format_plain_text(text: str, fmt_spec: str) -> str:
    """A glue output's text/plain as {glue:text} shows it (myst_nb.core.variables.format_plain_text).

    The text is the value's repr: literal_eval'd when it can be (a str loses its quotes), then
    formatted by the spec's last character: s a string, b c d o x X an int, e E f F g G n % a float;
    any other spec (",") formats the value as it is; an empty spec is str(value).
    """
    try:
        value = literal_eval(text)
    except (SyntaxError, ValueError):
        value = text
    if fmt_spec == "":
        return str(value)
    type_char = fmt_spec[-1]
    if type_char == "s":
        value = str(value)
    elif type_char in ("b", "c", "d", "o", "x", "X"):
        value = int(value)
    elif type_char in ("e", "E", "f", "F", "g", "G", "n", "%"):
        value = float(value)
    return format(value, fmt_spec)


def split_title(title: str) -> Tuple[str, str]:
    """'name' -> (name, 's'); 'name:fmt' -> (name, fmt): the role's rule (rsplit on the last colon)."""
    parts = title.rsplit(":", 1)
    return (parts[0], parts[1]) if len(parts) == 2 else (parts[0], "s")


def glue_values(nb: dict) -> Dict[str, str]:
    """name -> text/plain of every glue output stored in the notebook's code cells (the last one wins)."""
    values: Dict[str, str] = {}
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        for output in cell.get("outputs", []):
            scrapbook = output.get("metadata", {}).get("scrapbook")
            if not scrapbook:
                continue
            data = output.get("data", {})
            text = data.get(scrapbook.get("mime_prefix", "") + TEXT_PLAIN)
            if text is None:
                continue
            values[scrapbook["name"]] = "".join(text) if isinstance(text, list) else text
    return values


def span(title: str, text: str) -> str:
    """The markup for one glued number: the text escaped for HTML, the title as the role's content."""
    return f'<span class="glued" title="{html.escape(title)}">{html.escape(text, quote=False)}</span>'


@dataclass
class Problem:
    cell: int
    title: str
    shown: Optional[str]    # what the prose says (None: a role, not a number)
    expected: Optional[str]  # what the glue output gives (None: no such glue output / cannot format)
    why: str

    def __str__(self) -> str:
        return f"cell {self.cell}: {self.title!r}: {self.why}"


def _formatted(values: Dict[str, str], title: str) -> Tuple[Optional[str], str]:
    name, fmt = split_title(title)
    if "::" in name:
        return None, "glue from another notebook ('doc::name') is not supported"
    if name not in values:
        return None, f"no glue output named {name!r} in this notebook"
    try:
        return format_plain_text(values[name], fmt), ""
    except Exception as exc:  # what myst-nb would warn about
        return None, f"cannot format {values[name]!r} with {fmt!r}: {exc}"


def _markdown_cells(nb: dict) -> Iterator[Tuple[int, dict, str]]:
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") == "markdown":
            source = cell.get("source", "")
            yield i, cell, "".join(source) if isinstance(source, list) else source


def _set_source(cell: dict, text: str) -> None:
    cell["source"] = text.splitlines(keepends=True) if isinstance(cell.get("source"), list) else text


def process_notebook(nb: dict, check: bool = False) -> Tuple[bool, List[Problem]]:
    """Convert roles and re-sync spans in nb's markdown cells, in place unless check.

    Returns (changed, problems). Under check, every role and every span that differs from its glue
    output is a problem; otherwise only what could not be converted or synced (a missing glue output,
    a value the spec cannot format, a glue role other than {glue:text}, an {eval} role).
    """
    values = glue_values(nb)
    problems: List[Problem] = []
    changed = False
    for i, cell, text in _markdown_cells(nb):

        def convert(m: re.Match) -> str:
            title = m.group("content")
            expected, why = _formatted(values, title)
            if check:
                problems.append(Problem(i, title, None, expected, "a {glue:text} role: Colab shows it raw "
                                        "(run scripts/glue_prose.py without --check)"))
                return m.group(0)
            if expected is None:
                problems.append(Problem(i, title, None, None, why))
                return m.group(0)
            return span(title, expected)

        def sync(m: re.Match) -> str:
            title, shown = html.unescape(m.group("title")), html.unescape(m.group("text"))
            expected, why = _formatted(values, title)
            if expected is None:
                problems.append(Problem(i, title, shown, None, why))
                return m.group(0)
            if expected != shown:
                if check:
                    problems.append(Problem(i, title, shown, expected,
                                            f"the prose says {shown!r}, its glue output gives {expected!r}"))
                    return m.group(0)
                return span(title, expected)
            return m.group(0)

        new = SPAN.sub(sync, text)  # the spans already there, then the roles (which become spans)
        new = ROLE.sub(convert, new)
        for m in OTHER_ROLE.finditer(new):
            problems.append(Problem(i, m.group(0), None, None, "a role that only Jupyter Book renders"))
        if new != text:
            _set_source(cell, new)
            changed = True
    return changed, problems


def dumps(nb: dict) -> str:
    """The notebook as Jupyter (nbformat) writes it."""
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def process_file(path: Path, check: bool = False) -> Tuple[bool, List[Problem]]:
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    changed, problems = process_notebook(nb, check=check)
    if changed and not check:
        Path(path).write_text(dumps(nb), encoding="utf-8")
    return changed, problems


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--check", action="store_true",
                        help="write nothing; report every role left and every stale number, exit 1 if any")
    args = parser.parse_args(argv)
    failed = False
    for path in args.notebooks:
        changed, problems = process_file(path, check=args.check)
        for problem in problems:
            print(f"{path}: {problem}")
        failed |= bool(problems)
        if changed:
            print(f"{path}: prose updated")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
