"""The live sliders in a real front-end: JupyterLab and a kernel, driven by a browser as a reader drives them.

The book's pages show each explorer's first figure and a kernel-free frame player (tests/test_browser.py);
the live ipywidgets sliders only work where a kernel runs (Jupyter, Colab), and nothing else checks that
moving one redraws the figure. Here JupyterLab serves copies of chapters 1 and 3 (outputs stripped, so
every figure comes from this run and the committed notebooks are never written) on 127.0.0.1, in the
smoke profile with an empty kdlib cache. Headless Chromium (Debian's ``chromium``, driven by
``playwright``; any request to another host is aborted) opens each chapter, runs all its cells from the
Run menu, moves the T slider (and in chapter 3 alpha) with the keyboard on the slider's handle and by
dragging it with the mouse, and checks after each move that

- the slider's readout shows the value the move should give, and
- the explorer's figure (the PNG its output area shows) is redrawn, i.e. the kernel answered.

It fails on any cell that raised (read from the notebook as JupyterLab saves it, into the copy), on a
widget error shown in the page ("Error displaying widget", "model not found", ...) or the text fallback
of a front-end without a widget manager, and on any console error that is not a known, harmless one.

All of it runs in two front-ends (FRONT_ENDS): the book's own environment (JupyterLab 4, ipywidgets 8,
from requirements.lock), and Colab's ipywidgets 7.7.1 in JupyterLab 3.6, installed at test time from
PyPI into a throwaway venv layered over .venv (so torch and kdlib are not installed twice). kdlib keeps
`ipywidgets>=7.6` for Colab; this is what keeps that range honest.

Screenshots of each explorer before and after each move go to _build/screenshots/live-*.png (ignored by
git). Without chromium, playwright or jupyterlab, or where the ipywidgets 7 front-end cannot be
installed, the tests are skipped, unless the environment variable CI is set: there they fail.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import nbformat
import pytest

from browsers import HOST, VIEWPORT, required

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "_build" / "screenshots"
OUTSIDE = re.compile(r"^(?!(https?|wss?)://127\.0\.0\.1[:/])")  # any URL but this machine's
JUPYTER = Path(sys.executable).parent / "jupyter"  # .venv's: its kernel is .venv's Python, with kdlib

# Generous, for a loaded 2-core machine; an idle one needs a tenth of each.
SERVER_UP_S = 90     # jupyter lab answers on its port
LAB_UP_S = 120       # the page has loaded JupyterLab and the notebook's kernel is idle
RUN_ALL_S = 240      # every cell of a chapter has run (chapter 1 or 3: seconds in the smoke profile)
REDRAW_S = 60        # the kernel has redrawn the figure after a move
SAVE_S = 60          # the notebook has been saved to the copy
INSTALL_S = 300      # the ipywidgets 7 front-end is installed (seconds with uv, about half a minute with pip)

# What a front-end shows when a widget cannot be displayed (ipywidgets 7 and 8, JupyterLab 3 and 4).
WIDGET_ERRORS = re.compile(r"Error displaying widget|Failed to load model class|model not found|"
                           r"Could not create (a )?(model|view)|Error (creating|rendering) (widget|view)")
# The widget's text/plain fallback, shown by a front-end that has no widget manager at all.
NO_WIDGET_MANAGER = re.compile(r"interactive\(children=")
# Requests to other hosts a chapter's page makes (aborted here all the same): how the URL starts, and why.
OUTSIDE_REQUESTS = {
    "https://maxcdn.bootstrapcdn.com/font-awesome/4.4.0/":
        "the chapters' to_jshtml frame players link Font Awesome 4 for their icons; offline the buttons "
        "keep their text, and the failed load is logged as a console error, which is not the widgets'",
}


@dataclass(frozen=True)
class Move:
    """One move of a slider through the UI: a key pressed on its handle, or a drag of the handle by dx px."""

    slider: str                      # the slider's description: "T" or "alpha"
    readout: Tuple[str, ...]         # what its readout may show after the move (one value but at a log end)
    key: Optional[str] = None        # a key for playwright's press ("ArrowRight", "End", ...)
    drag_px: Optional[int] = None    # or a mouse drag of the handle, this many px (far past an end: the end)

    @property
    def name(self) -> str:
        return f"{self.slider}-{self.key or f'drag{self.drag_px:+d}px'}"


# Each chapter's explorer and the moves made on it. The expected readouts are exact: a single step
# from the start value (T = 1 on a log slider with step 0.01 in log10 T gives 10**0.01 = 1.02;
# alpha = 0.5 with step 0.05 gives 0.55) or an end of the slider's range (End, Home, a long drag).
# The top of a T slider has two values: ipywidgets 8's noUiSlider goes to T_range's high end, while
# ipywidgets 7's jQuery UI slider stops at the last whole step from the low end, log10(low) + k * 0.01:
# 10**(-1 + 2.30) = 19.95 in chapter 1 and 10**(log10(0.5) + 1.60) = 19.91 in chapter 3.
CHAPTERS: Dict[str, List[Move]] = {
    "01_softmax_temperature": [             # temperature_explorer(z, T_range=(0.1, 20)), T starts at 1
        Move("T", ("1.02",), key="ArrowRight"),
        Move("T", ("20.00", "19.95"), key="End"),
        Move("T", ("0.10",), drag_px=-600),
    ],
    "03_loss_and_gradient": [               # loss_explorer(...): T in (0.5, 20) starts at 4, alpha at 0.5
        Move("T", ("20.00", "19.91"), key="End"),
        Move("alpha", ("0.55",), key="ArrowRight"),
        Move("alpha", ("0.00",), drag_px=-600),
        Move("T", ("0.50",), key="Home"),
    ],
}


@dataclass(frozen=True)
class FrontEnd:
    """A JupyterLab with its widget manager, and the ipywidgets of the kernel, in which the sliders are moved."""

    name: str
    why: str
    packages: Tuple[str, ...] = ()   # installed into a venv over .venv (which gives torch, kdlib, ...); () = .venv
    settings: Dict[str, Dict] = field(default_factory=dict)  # JupyterLab settings, by plugin
    args: Tuple[str, ...] = ()       # more options for `jupyter lab`
    # console errors of the front-end itself, not of the widgets: text they contain, and why they are let be
    known_console_errors: Dict[str, str] = field(default_factory=dict)


# Colab ships ipywidgets 7 with a front-end of its own that cannot run here; the nearest is ipywidgets 7
# in the last JupyterLab whose widget manager (jupyterlab_widgets 1.x) is made for it. That checks
# kdlib's widgets against ipywidgets 7's Python API and its views (jQuery UI sliders, not noUiSlider).
FRONT_ENDS: List[FrontEnd] = [
    FrontEnd(
        "lab4-ipywidgets8",
        why="the book's own environment (requirements.lock): `jupyter lab book/` as the README says",
        settings={
            # JupyterLab 4 leaves cells outside the viewport out of the DOM by default ("windowing")
            "@jupyterlab/notebook-extension:tracker": {"windowingMode": "none"},
            # no toast asking about news over the notebook, and no request for it
            "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False},
            # the test saves once, on purpose; the copy is temporary anyway
            "@jupyterlab/docmanager-extension:plugin": {"autosave": False},
        },
        args=("--LabApp.extension_manager=readonly",)),  # the default one asks PyPI for extensions
    FrontEnd(
        "lab3-ipywidgets7",
        why="Colab's ipywidgets (7.7.1) in JupyterLab 3.6 with jupyterlab_widgets 1.1",
        # ipywidgets 7.7.1's own widget manager and nbextension (the releases made with it: later 1.1.x
        # managers are built for JupyterLab 4), and the Pygments theme's last release for JupyterLab 3
        packages=("ipywidgets==7.7.1", "jupyterlab_widgets==1.1.1", "widgetsnbextension==3.6.1",
                  "jupyterlab==3.6.8", "jupyterlab-pygments==0.2.2"),
        settings={
            "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False},
            "@jupyterlab/docmanager-extension:plugin": {"autosave": False},
        },
        known_console_errors=dict.fromkeys(
            ["Access to font at 'about:blank'", "net::ERR_FAILED (about:blank)"],
            "JupyterLab 3's MathJax 2 probes for a web font at about:blank, which Chromium refuses; it does so "
            "in any notebook with a formula, widgets or none")),
]


def _free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now (the server is told not to try another)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _strip_outputs(source: Path, target: Path) -> None:
    """Copy a chapter without its stored outputs and widget state: every figure then comes from this run."""
    nb = nbformat.read(source, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, target)


def _write_settings(settings: Path, overrides: Dict[str, Dict]) -> None:
    """JupyterLab user settings, one file per plugin ("@scope/package:plugin")."""
    for plugin, values in overrides.items():
        path = settings / (plugin.replace(":", "/") + ".jupyterlab-settings")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


@dataclass
class Lab:
    """A running JupyterLab: its URL, the directory it serves, and its log."""

    url: str
    root: Path
    log: Path
    process: subprocess.Popen = field(repr=False)

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


def _stop(process: subprocess.Popen) -> None:
    """Stop the server and its kernels: SIGTERM (it shuts its kernels down), then SIGKILL to its group."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
    try:  # the server's own process group (start_new_session): kernels it left behind go too
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=20)


def _overlay(venv: Path, packages: Tuple[str, ...]) -> Path:
    """A venv holding `packages` in front of .venv's own: the jupyter it runs, and its kernels, import
    those packages from it and everything else (torch, matplotlib, kdlib) from .venv, installed once."""
    # uv (scripts/lock.sh installs it) takes seconds, pip about half a minute; either installs into the
    # new venv only, before .venv is put behind it, so nothing of .venv counts as installed or is touched
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    subprocess.run([sys.executable, "-m", "venv", *(["--without-pip"] if uv else []), str(venv)],
                   check=True, capture_output=True)
    python = venv / "bin" / "python"
    command = ([uv, "pip", "install", "-q", "--python", str(python)] if uv else
               [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"])
    result = subprocess.run([*command, *packages], capture_output=True, text=True, timeout=INSTALL_S)
    if result.returncode != 0:
        required(f"could not install {' '.join(packages)} (no package index?):\n{result.stderr[-2000:]}")
    site_packages = Path(sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["purelib"])
    # addsitedir, not a bare path: .venv's own .pth files (kdlib's editable install) must be read too
    book = sysconfig.get_paths()["purelib"]  # .venv's: pytest runs in it
    (site_packages / "book_venv.pth").write_text(f"import site; site.addsitedir({book!r})\n")
    return venv / "bin" / "jupyter"


@pytest.fixture(scope="module", params=FRONT_ENDS, ids=[f.name for f in FRONT_ENDS])
def frontend(request) -> FrontEnd:
    return request.param


@pytest.fixture(scope="module")
def jupyter(frontend: FrontEnd, tmp_path_factory) -> Path:
    """The `jupyter` command of the front-end: .venv's, or that of a venv made for it over .venv."""
    if importlib.util.find_spec("jupyterlab") is None or not JUPYTER.exists():
        required("jupyterlab is not installed in this environment (pip install -r requirements.lock)")
    if not frontend.packages:
        return JUPYTER
    return _overlay(tmp_path_factory.mktemp("venv"), frontend.packages)


@pytest.fixture(scope="module")
def lab(frontend: FrontEnd, jupyter: Path, tmp_path_factory) -> Iterator[Lab]:
    """JupyterLab on 127.0.0.1, serving stripped copies of the chapters from a temporary directory.

    Everything it writes (settings, workspaces, runtime files, the kdlib cache, the saved notebooks)
    goes under that temporary directory, never into the repository or the home directory.
    """
    tmp = tmp_path_factory.mktemp("live-widgets")
    root = tmp / "notebooks"
    root.mkdir()
    for chapter in CHAPTERS:
        _strip_outputs(ROOT / "book" / f"{chapter}.ipynb", root / f"{chapter}.ipynb")
    _write_settings(tmp / "settings", frontend.settings)
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # the kernel must use the inline backend
    env.update(KDLIB_PROFILE="smoke", KDLIB_CACHE=str(tmp / "kdlib-cache"), IPYTHONDIR=str(tmp / "ipython"),
               JUPYTER_CONFIG_DIR=str(tmp / "jupyter-config"), JUPYTER_DATA_DIR=str(tmp / "jupyter-data"),
               JUPYTER_RUNTIME_DIR=str(tmp / "jupyter-runtime"))
    port = _free_port()
    log = tmp / "jupyter-lab.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(jupyter), "lab", "--no-browser", "--allow-root", f"--port={port}", "--ServerApp.port_retries=0",
             f"--ServerApp.ip={HOST}", "--ServerApp.token=", "--ServerApp.password=",
             f"--ServerApp.root_dir={root}", f"--LabApp.user_settings_dir={tmp / 'settings'}",
             f"--LabApp.workspaces_dir={tmp / 'workspaces'}", *frontend.args],
            cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = Lab(url=f"http://{HOST}:{port}/", root=root, log=log, process=process)
    try:
        deadline = time.monotonic() + SERVER_UP_S
        while True:
            try:
                with urllib.request.urlopen(server.url + "api/status", timeout=5):
                    break
            except OSError:
                if process.poll() is not None:
                    pytest.fail(f"jupyter lab exited with {process.returncode}:\n{server.log_tail()}")
                if time.monotonic() > deadline:
                    pytest.fail(f"jupyter lab did not answer within {SERVER_UP_S} s:\n{server.log_tail()}")
                time.sleep(0.3)
        yield server
    finally:
        _stop(process)


# ------------------------------------------------------------------ reading the page
# True once Run All has finished: no cell is queued or running ("[*]") and at least one has run.
# A cell that raises stops the run; the cells after it lose their "[*]", so this is true then too.
RUN_FINISHED = r"""() => {
  const prompts = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')]
    .map(p => p.textContent.trim());
  return prompts.length > 0 && !prompts.some(p => p.includes('*')) && prompts.some(p => /\d/.test(p));
}"""
# The explorer's figure: the PNG shown in the output area of the interactive widget (null while redrawn).
FIGURE_SRC = "w => w.querySelector('.widget-output img')?.getAttribute('src') ?? null"


@dataclass
class Session:
    """One chapter open in a tab, with what the page logged."""

    chapter: str
    label: str       # front-end and chapter: names the screenshots and the failures
    tab: object
    console_errors: List[str] = field(default_factory=list)

    def shot(self, element, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        element.screenshot(path=SHOTS / f"live-{self.label}-{name}.png")

    def page_text(self) -> str:
        return self.tab.evaluate("document.body.innerText")

    def widget_errors(self) -> List[str]:
        text = self.page_text()
        found = [line.strip() for line in text.splitlines() if WIDGET_ERRORS.search(line)]
        if NO_WIDGET_MANAGER.search(text):
            found.append("the widget shows as text (interactive(children=...)): the front-end has no widget manager")
        return found

    def diagnosis(self) -> str:
        """What to read when a wait fails: the page's widget errors and console errors, and a screenshot."""
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / f"live-{self.label}-failure.png"
        self.tab.screenshot(path=path)
        return (f"\nwidget errors: {self.widget_errors()}\nconsole errors: {self.console_errors}"
                f"\nscreenshot: {path.relative_to(ROOT)}")


def _open(browser, lab: Lab, chapter: str, label: str, known_errors: Dict[str, str]) -> Session:
    """Open a chapter in JupyterLab in a fresh tab, offline, and wait for its kernel to be idle.

    Console errors are recorded but those that contain a text of `known_errors`."""
    from playwright.sync_api import TimeoutError as Timeout

    context = browser.new_context(viewport=VIEWPORT)
    tab = context.new_page()
    session = Session(chapter=chapter, label=label, tab=tab)

    def console(message) -> None:
        where = message.location.get("url", "")
        text = f"{message.text} ({where})"
        if (message.type == "error" and not any(where.startswith(known) for known in OUTSIDE_REQUESTS)
                and not any(known in text for known in known_errors)):
            session.console_errors.append(text)

    # Only requests to other hosts are routed (matched by the browser, not here), and aborted: a request
    # routed to Python waits until playwright next runs, and JupyterLab's own requests must not wait.
    tab.route(OUTSIDE, lambda r: r.abort())
    tab.on("console", console)
    tab.on("pageerror", lambda e: session.console_errors.append(f"uncaught: {e}"))
    tab.set_default_timeout(30_000)
    # a workspace of its own: the default one would reopen the other chapter's tab beside this one
    tab.goto(lab.url + f"lab/workspaces/live-{chapter}/tree/{chapter}.ipynb", wait_until="load",
             timeout=LAB_UP_S * 1000)
    try:
        # The status bar reads "No Kernel | Initializing" until the kernel has started, then
        # "<kernel name> | Idle": Run All before that may be lost.
        tab.wait_for_function(r"""() => (document.getElementById('jp-main-statusbar')?.innerText ?? '')
                                 .split('\n').some(line => /^(?!No Kernel).+ \| Idle$/.test(line.trim()))""",
                              timeout=LAB_UP_S * 1000, polling=250)
    except Timeout:
        pytest.fail(f"{label}: JupyterLab or its kernel did not become ready within {LAB_UP_S} s"
                    f"{session.diagnosis()}\nserver log:\n{lab.log_tail()}")
    return session


def _menu(tab, menu: str, item: str) -> None:
    """Click an item of JupyterLab's menu bar, as a reader does."""
    tab.locator(".lm-MenuBar-itemLabel", has_text=re.compile(f"^{re.escape(menu)}$")).click()
    tab.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{re.escape(item)}$")).click()


def _run_all(session: Session, lab: Lab) -> None:
    """Run > Run All Cells, wait for the run to finish, save, and fail on any cell that raised or did not run."""
    from playwright.sync_api import TimeoutError as Timeout

    tab, path = session.tab, lab.root / f"{session.chapter}.ipynb"
    _menu(tab, "Run", "Run All Cells")
    try:
        tab.wait_for_function(RUN_FINISHED, timeout=RUN_ALL_S * 1000, polling=500)
    except Timeout:
        pytest.fail(f"{session.label}: Run All Cells had not finished after {RUN_ALL_S} s{session.diagnosis()}")
    # The outputs as the notebook holds them: an error output is an "error" there, while the page
    # draws it like any stderr text. Saving writes only the temporary copy.
    before = path.stat().st_mtime_ns
    _menu(tab, "File", "Save Notebook")
    nb = _saved(tab, path, before)
    if nb is None:
        pytest.fail(f"{session.label}: the notebook was not saved within {SAVE_S} s{session.diagnosis()}")
    code = [c for c in nb.cells if c.cell_type == "code"]
    raised = [f"cell {code.index(c) + 1} ({c.source.splitlines()[0][:60]!r}): {o.ename}: {o.evalue}"
              for c in code for o in c.outputs if o.output_type == "error"]
    assert not raised, f"{session.label}: cells raised:\n  " + "\n  ".join(raised)
    not_run = [i + 1 for i, c in enumerate(code) if c.execution_count is None]
    assert not not_run, f"{session.label}: code cells that did not run: {not_run}"


def _saved(tab, path: Path, before: int) -> Optional[nbformat.NotebookNode]:
    """The notebook once the server has written it anew (its mtime is no longer `before`), or None."""
    deadline = time.monotonic() + SAVE_S
    while time.monotonic() < deadline:
        if path.stat().st_mtime_ns != before:
            try:
                return nbformat.read(path, as_version=4)
            except (json.JSONDecodeError, nbformat.reader.NotJSONError):  # still being written
                pass
        tab.wait_for_timeout(200)  # not time.sleep: playwright keeps serving the page meanwhile
    return None


def _slider(explorer, name: str):
    """The slider of the explorer whose description is `name`."""
    # a filter's inner locator is matched inside each outer match, so it is built from the page
    label = explorer.page.locator(".widget-label", has_text=re.compile(f"^{re.escape(name)}$"))
    return explorer.locator(".widget-slider").filter(has=label)


def _move(session: Session, explorer, move: Move) -> None:
    """Make one move through the UI: a key on the slider's handle (noUiSlider in ipywidgets 8, jQuery UI
    in 7), or a mouse drag of that handle."""
    slider = _slider(explorer, move.slider)
    handle = slider.locator(".noUi-handle, .ui-slider-handle").first
    handle.scroll_into_view_if_needed()
    if move.key is not None:
        handle.focus()
        handle.press(move.key)
    else:
        box = handle.bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        session.tab.mouse.move(x, y)
        session.tab.mouse.down()
        session.tab.mouse.move(x + move.drag_px, y, steps=12)
        session.tab.mouse.up()


# ------------------------------------------------------------------ the check
@pytest.mark.parametrize("chapter", list(CHAPTERS))
def test_sliders_redraw_the_figure(chapter: str, frontend: FrontEnd, lab: Lab, browser) -> None:
    from playwright.sync_api import TimeoutError as Timeout

    label = f"{frontend.name}-{chapter}"
    for old in SHOTS.glob(f"live-{label}-*.png"):  # the screenshots left are all from this run
        old.unlink()
    session = _open(browser, lab, chapter, label, frontend.known_console_errors)
    tab = session.tab
    try:
        _run_all(session, lab)
        explorer = tab.locator(".jp-NotebookPanel:visible .widget-interact").first
        try:  # the explorer's figure, or a widget error (then at once, not after the timeout)
            tab.wait_for_function("([shown, errors]) => document.querySelector(shown) !== null || "
                                  "new RegExp(errors).test(document.body.innerText)",
                                  arg=[".jp-NotebookPanel:not(.lm-mod-hidden) .widget-interact .widget-output img",
                                       f"{WIDGET_ERRORS.pattern}|{NO_WIDGET_MANAGER.pattern}"],
                                  timeout=REDRAW_S * 1000, polling=250)
        except Timeout:
            pass
        if not explorer.locator(".widget-output img").count():
            pytest.fail(f"{label}: the explorer's slider and figure did not show{session.diagnosis()}")
        explorer.scroll_into_view_if_needed()
        session.shot(explorer, "0-before")
        figure = explorer.element_handle()
        drawn: List[str] = []  # the figure after each move
        for i, move in enumerate(CHAPTERS[chapter], start=1):
            before = figure.evaluate(FIGURE_SRC)
            _move(session, explorer, move)
            readout = _slider(explorer, move.slider).locator(".widget-readout")
            try:
                tab.wait_for_function("([el, texts]) => texts.includes(el.textContent.trim())",
                                      arg=[readout.element_handle(), list(move.readout)], timeout=10_000, polling=100)
            except Timeout:
                pytest.fail(f"{label}: after {move.name} the {move.slider} readout shows "
                            f"{readout.text_content().strip()!r}, not {' or '.join(move.readout)}{session.diagnosis()}")
            try:  # the kernel ran the explorer again and its new figure replaced the old one
                tab.wait_for_function(f"([w, old]) => {{ const src = ({FIGURE_SRC})(w); "
                                      "return src !== null && src !== old; }",
                                      arg=[figure, before], timeout=REDRAW_S * 1000, polling=100)
            except Timeout:
                pytest.fail(f"{label}: the figure did not change within {REDRAW_S} s after {move.name} "
                            f"(readout {readout.text_content().strip()}){session.diagnosis()}")
            session.shot(explorer, f"{i}-after-{move.name}")
            figures = explorer.locator(".widget-output img").count()
            assert figures == 1, f"{label}: after {move.name} the explorer shows {figures} figures, not one"
            drawn.append(figure.evaluate(FIGURE_SRC))
        # every setting drew its own figure (a redraw that repeated an earlier figure would hide a stuck slider)
        assert len(set(drawn)) == len(drawn), f"{label}: two moves drew the same figure"
        assert not session.widget_errors(), f"{label}: widget errors in the page: {session.widget_errors()}"
        assert not session.console_errors, f"{label}: console errors:\n  " + "\n  ".join(session.console_errors)
    finally:
        tab.context.close()
