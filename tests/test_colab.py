"""The chapters as Colab and plain Jupyter show them: the notebook's own markdown, no Jupyter Book.

Colab renders a markdown cell as CommonMark with inline HTML. A MyST role such as
``{glue:text}`name``` is shown raw there ("{glue:text}" and the name in code font), so the prose
holds its numbers literally, each in a span that names its glue output
(``<span class="glued" title="name:fmt">92.4%</span>``), and scripts/glue_prose.py keeps the two in
step. Also: the setup cell's repository is the one in _config.yml.
"""
import importlib.util
import json
import re
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
CHAPTERS = sorted((ROOT / "book").glob("*.ipynb"))

spec = importlib.util.spec_from_file_location("glue_prose", ROOT / "scripts" / "glue_prose.py")
glue_prose = importlib.util.module_from_spec(spec)
sys.modules["glue_prose"] = glue_prose  # dataclasses look their module up there
spec.loader.exec_module(glue_prose)

# MyST roles that the chapters may still use, with what Colab shows for each: none. A citation is a
# link Colab renders, "([Hinton et al., 2015](https://arxiv.org/abs/1503.02531))", and the book's
# bibliography lists every entry of references.bib (":all:" in book/intro.md).
ALLOWED_ROLES: set = set()


def notebook(path):
    return json.loads(path.read_text(encoding="utf-8"))


def markdown_cells(nb):
    return [(i, "".join(c["source"])) for i, c in enumerate(nb["cells"]) if c["cell_type"] == "markdown"]


def roles_as_colab_sees_them(markdown):
    """The MyST roles in `markdown` as a CommonMark renderer meets them: '{name}' at the end of a text
    run, then an inline code span (so '{x}' inside code, or in '$...$' math, is not a role)."""
    from markdown_it import MarkdownIt

    found = []
    for token in MarkdownIt("commonmark").enable("table").parse(markdown):
        children = token.children or []
        for text, code in zip(children, children[1:]):
            m = re.search(r"\{([A-Za-z][\w:+-]*)\}$", text.content) if text.type == "text" else None
            if m and code.type == "code_inline":
                found.append(f"{{{m.group(1)}}}`{code.content}`")
    return found


# ------------------------------------------------------------------ the chapters
@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_prose_has_no_role_that_colab_shows_raw(path):
    for i, text in markdown_cells(notebook(path)):
        refused = [r for r in roles_as_colab_sees_them(text) if r[1:r.index("}")] not in ALLOWED_ROLES]
        assert not refused, (f"cell {i}: {refused[:5]}: Colab shows these raw "
                             f"(glue roles: python scripts/glue_prose.py {path.relative_to(ROOT)})")


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_every_number_in_the_prose_is_its_glue_output(path):
    # a number quoted in the prose, formatted from the stored glue output, must say what the prose says
    changed, problems = glue_prose.process_notebook(notebook(path), check=True)
    assert not problems, ("\n".join(map(str, problems)) +
                          f"\nrefresh the prose: python scripts/glue_prose.py {path.relative_to(ROOT)}")


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_glued_numbers_are_whole_spans(path):
    # a span the tool cannot read (another attribute order, a nested tag) would never be checked
    for i, text in markdown_cells(notebook(path)):
        loose = text.count('class="glued"') - len(glue_prose.SPAN.findall(text))
        assert loose == 0, f"cell {i}: a glued span not in the form {glue_prose.span('name:fmt', '1.0')!r}"


def test_the_setup_cells_install_from_the_repository_in_config():
    url = CONFIG["repository"]["url"]
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", url), url
    for path in CHAPTERS:
        cells = [c for c in notebook(path)["cells"] if c["cell_type"] == "code" and "".join(c["source"]).strip()]
        first = "".join(cells[0]["source"])
        assert re.findall(r'^REPOSITORY = "([^"]*)"$', first, re.M) == [url], path.name
        assert '"kdlib[data] @ git+{REPOSITORY}"' in first, path.name  # IPython expands {REPOSITORY}
        later = ["".join(c["source"]) for c in cells[1:]]
        assert not [s for s in later if "REPOSITORY =" in s], f"{path.name}: REPOSITORY set again"


def test_links_into_the_book_repository_use_the_url_in_config():
    # prose links to kdlib's files and the README: their owner/name must be the configured one
    url = CONFIG["repository"]["url"]
    owner, name = urlparse(url).path.strip("/").split("/")
    sources = [(p.name, "".join(c["source"])) for p in CHAPTERS for c in notebook(p)["cells"]]
    sources.append(("intro.md", (ROOT / "book" / "intro.md").read_text()))
    for where, text in sources:
        for link_owner, link_name in re.findall(r"github\.com/([\w.-]+)/([\w.-]+)", text):
            if link_owner == owner or link_name == name:
                assert (link_owner, link_name) == (owner, name), f"{where}: github.com/{link_owner}/{link_name}"


# ------------------------------------------------------------------ the tool, on a small notebook
def small_notebook(acc="0.9237", n="4000", label="'2 of 3'"):
    def glue_output(name, text):
        return {"output_type": "display_data", "data": {"application/papermill.record/text/plain": text},
                "metadata": {"scrapbook": {"name": name, "mime_prefix": "application/papermill.record/"}}}

    return {
        "cells": [
            {"cell_type": "code", "execution_count": 1, "metadata": {}, "source": ["kd.glue(...)"],
             "outputs": [glue_output("acc", acc), glue_output("n", n), glue_output("which", label)]},
            {"cell_type": "markdown", "metadata": {}, "source": [
                "The teacher gets {glue:text}`acc:.1%` of {glue:text}`n:,` images right,\n",
                "better in {glue:text}`which` seeds; raw: {glue:text}`acc`; `{glue:text}` in code.\n"]},
        ],
        "metadata": {}, "nbformat": 4, "nbformat_minor": 5,
    }


def prose(nb):
    return "".join(nb["cells"][1]["source"])


def test_roles_become_numbers_in_spans():
    nb = small_notebook()
    changed, problems = glue_prose.process_notebook(nb)
    assert changed and not problems
    assert prose(nb) == (
        'The teacher gets <span class="glued" title="acc:.1%">92.4%</span> of '
        '<span class="glued" title="n:,">4,000</span> images right,\n'
        'better in <span class="glued" title="which">2 of 3</span> seeds; raw: '
        '<span class="glued" title="acc">0.9237</span>; `{glue:text}` in code.\n')
    assert nb["cells"][1]["source"][1].endswith("in code.\n")  # still a list of lines
    assert glue_prose.process_notebook(nb) == (False, [])    # converting twice changes nothing
    assert glue_prose.process_notebook(nb, check=True) == (False, [])


def test_a_new_glue_output_fails_the_check_and_sync_fixes_the_prose():
    nb = small_notebook()
    glue_prose.process_notebook(nb)
    rerun = small_notebook(acc="0.9311")  # the chapter ran again: new outputs, the old prose
    rerun["cells"][1] = nb["cells"][1]
    changed, problems = glue_prose.process_notebook(rerun, check=True)
    assert not changed and [(p.title, p.shown, p.expected) for p in problems] == [
        ("acc:.1%", "92.4%", "93.1%"), ("acc", "0.9237", "0.9311")]
    changed, problems = glue_prose.process_notebook(rerun)
    assert changed and not problems
    assert '<span class="glued" title="acc:.1%">93.1%</span>' in prose(rerun)
    assert glue_prose.process_notebook(rerun, check=True) == (False, [])


def test_check_reports_roles_left_and_names_without_glue_output():
    nb = small_notebook()
    changed, problems = glue_prose.process_notebook(nb, check=True)
    assert not changed and len(problems) == 4 and all(p.shown is None for p in problems)
    nb["cells"][1]["source"] = ['<span class="glued" title="gone:.1f">1.0</span> and {glue:md}`x`\n']
    changed, problems = glue_prose.process_notebook(nb)
    assert not changed and ["no glue output named 'gone'" in p.why for p in problems] == [True, False]
    assert "{glue:md}" in problems[1].title


def test_text_is_escaped_for_html_and_read_back():
    nb = small_notebook(label="'a < b & c'")
    glue_prose.process_notebook(nb)
    assert '<span class="glued" title="which">a &lt; b &amp; c</span>' in prose(nb)
    assert glue_prose.process_notebook(nb, check=True) == (False, [])


@pytest.mark.parametrize("text", ["4000", "0.8681666666666666", "-944.0637817382812", "0.0", "60", "'1.39'",
                                  "'13, 78, 11'", "1.0517241379310345", "np.float64(0.5)"])
@pytest.mark.parametrize("fmt", ["", "s", ",", ".0%", ".1%", ".1f", ".2f", ".3f", ".0f", ".2g", "d"])
def test_numbers_are_formatted_as_myst_nb_formats_them(text, fmt):
    from myst_nb.core.variables import format_plain_text

    try:
        expected = format_plain_text(text, fmt)
    except (TypeError, ValueError) as exc:
        with pytest.raises(type(exc)):
            glue_prose.format_plain_text(text, fmt)
    else:
        assert glue_prose.format_plain_text(text, fmt) == expected


def test_main_writes_only_what_changed_and_check_exits_1(tmp_path, capsys):
    path = tmp_path / "ch.ipynb"
    path.write_text(glue_prose.dumps(small_notebook()), encoding="utf-8")
    assert glue_prose.main(["--check", str(path)]) == 1
    assert "{glue:text} role" in capsys.readouterr().out
    assert glue_prose.main([str(path)]) == 0
    converted = path.read_text(encoding="utf-8")
    assert "{glue:text}`acc" not in converted and glue_prose.main(["--check", str(path)]) == 0
    mtime = path.stat().st_mtime_ns
    assert glue_prose.main([str(path)]) == 0 and path.stat().st_mtime_ns == mtime  # nothing to write


def test_kd_glue_stores_what_the_tool_reads(tmp_path):
    # the real thing: a kernel runs kd.glue, nbclient stores its output, the tool reads the value
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import kdlib as kd\nkd.glue('acc', 0.9237)\nkd.glue('label', '2 of 3')"),
                nbformat.v4.new_markdown_cell("{glue:text}`acc:.1%` and {glue:text}`label`")]
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT)}}).execute()
    nb = json.loads(nbformat.writes(nb))
    assert glue_prose.glue_values(nb) == {"acc": "0.9237", "label": "'2 of 3'"}
    glue_prose.process_notebook(nb)
    assert prose(nb) == ('<span class="glued" title="acc:.1%">92.4%</span> and '
                         '<span class="glued" title="label">2 of 3</span>')
