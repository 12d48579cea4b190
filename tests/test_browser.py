"""The built book in a real browser, offline: what a reader on a train with no network sees.

Headless Chromium (Debian's ``chromium``, driven by ``playwright``) opens every page of the book
from _build/html, served by a Python http.server on 127.0.0.1; any request to another host is
aborted, so a page passes only if it reads whole without the network. Each page is opened once at
1280 px (a laptop) and once at 390 px (a phone held upright), and each check below reads what one
of those visits recorded, so that a failure names its page and its check. A full-page screenshot of
each page goes to _build/screenshots/ (the phone's to _build/screenshots/phone/; ignored by git).

Without chromium or playwright the tests are skipped, unless the environment variable CI is set:
there they fail. scripts/build.sh builds the pages first.
"""
from __future__ import annotations

import functools
import http.server
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List
from urllib.parse import unquote, urlsplit

import pytest
import yaml

from browsers import HOST, PHONE, VIEWPORT

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
SHRUNK = 0.6           # an image shown at less than this fraction of its natural width is too small
OVERFLOW_SHARE = 0.05  # at most this share of a page's code blocks and outputs may scroll sideways (formulas: none)
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # any control character but tab and newlines

# Console errors that are the theme's, not the book's: the text they contain, and why they are let be.
THEME_CONSOLE_ERRORS = {
    "Identifier 'THEBE_JS_URL' has already been declared":
        "sphinx-book-theme declares THEBE_JS_URL in two of its own scripts on every page; nothing breaks",
}
# Requests to other hosts a page may make (aborted here all the same): how the URL starts, and why.
OUTSIDE_REQUESTS = {
    "https://maxcdn.bootstrapcdn.com/font-awesome/4.4.0/":
        "matplotlib's to_jshtml player links Font Awesome 4 for its icons in Jupyter; on the book the "
        "theme's own Font Awesome draws them (test_frame_players_step checks that they are drawn)",
}
WIDGET_MANAGER = re.compile(r"@jupyter-widgets/html-manager|require(\.min)?\.js")


def toc_pages() -> List[str]:
    """The book's pages in the order of _toc.yml: the root, then every chapter."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())

    def files(node) -> Iterator[str]:
        if isinstance(node, dict):
            if "file" in node:
                yield node["file"]
            for value in node.values():
                yield from files(value)
        elif isinstance(node, list):
            for item in node:
                yield from files(item)

    return [toc["root"], *files(toc.get("parts", []))]


PAGES = toc_pages()


@dataclass
class Visit:
    """What one page showed and did in the browser."""

    source: str                                                 # the HTML as served
    console_errors: List[str] = field(default_factory=list)
    outside: List[str] = field(default_factory=list)            # requests to other hosts (aborted)
    facts: Dict = field(default_factory=dict)                   # what the page's DOM says (FACTS)
    players: List[Dict] = field(default_factory=list)           # one per frame player: stepped, icons
    phone: Dict = field(default_factory=dict)                   # what the page's DOM says at 390 px (PHONE_FACTS)


# Read in the page once it has loaded and MathJax has finished typesetting.
FACTS = r"""async () => {
  const mathjax = window.MathJax && MathJax.startup;
  if (mathjax) await Promise.race([MathJax.startup.promise, new Promise(r => setTimeout(r, 15000))]);
  const short = el => (el.textContent || el.getAttribute("src") || "").trim().replace(/\s+/g, " ").slice(0, 70);
  const article = document.querySelector("article.bd-article");
  const style = getComputedStyle(article);
  const column = article.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);

  const skip = "pre, code, script, style, textarea, mjx-container";
  const walker = document.createTreeWalker(article, NodeFilter.SHOW_TEXT);
  const raw = [];
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (/\\\(|\\\)|\\\[|\\\]|\$\$/.test(n.textContent) && !n.parentElement.closest(skip)) {
      raw.push(n.textContent.trim().slice(0, 70));
    }
  }
  const maths = [...article.querySelectorAll(".math")];
  const tex = new Map(mathjax ? Array.from(MathJax.startup.document.math, m => [m.typesetRoot, m.math]) : []);
  const blocks = [...new Set(article.querySelectorAll("div.highlight pre, .cell_output pre, mjx-container[display]"))];
  return {
    mathjax: Boolean(mathjax),
    math: maths.length,
    untypeset: maths.filter(m => !m.querySelector("mjx-container")).map(short).concat(raw),
    math_errors: [...article.querySelectorAll("mjx-container")].filter(c => c.querySelector("mjx-merror"))
      .map(c => (c.querySelector("[data-mjx-error]")?.getAttribute("data-mjx-error") || "error") + " in "
                + JSON.stringify(tex.get(c) ?? c.textContent)),
    column: column,
    images: [...article.querySelectorAll("img")].map(img => ({
      src: img.id || (img.getAttribute("src") || "").slice(0, 70), loaded: img.complete && img.naturalWidth > 0,
      natural: img.naturalWidth, shown: img.getBoundingClientRect().width})),
    blocks: blocks.map((block, i) => ({
      kind: tex.has(block) || block.matches("mjx-container") ? "formula"
        : block.closest(".cell_output") ? "output" : "code",
      index: i, first: (tex.get(block) ?? block.textContent).trim().split("\n")[0].slice(0, 60),
      // a formula's rendered width: the typeset maths itself, however its container clips or scrolls it
      scroll: Math.max(block.scrollWidth,
                       Math.ceil(block.querySelector(":scope > mjx-math")?.getBoundingClientRect().width ?? 0)),
      client: block.clientWidth})),
    citing: [...article.querySelectorAll("a.reference.internal")].map(a => [a.href, a.textContent.trim()]),
    scripts: [...document.querySelectorAll("script[src]")].map(s => s.src),
    widget_views: document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]').length,
    links: [...document.querySelectorAll("a[href]")].map(a => a.href),
  };
}"""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files from a directory without logging each request."""

    def log_message(self, format: str, *args) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """The root URL of _build/html, served on 127.0.0.1 by a thread of this process."""
    if not (HTML / "index.html").exists():
        pytest.fail(f"{HTML.relative_to(ROOT)} is missing: build the book first (bash scripts/build.sh)")
    httpd = http.server.ThreadingHTTPServer((HOST, 0), functools.partial(_QuietHandler, directory=str(HTML)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://{HOST}:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def visits() -> Dict[str, Visit]:
    """Each page's visit, made once for all the checks of this module."""
    return {}


@pytest.fixture
def seen(page: str, visits: Dict[str, Visit], browser, server: str) -> Visit:
    """The visit of `page` (the test's parameter), made on first use."""
    if page not in visits:
        visits[page] = visit(browser, server, page)
    return visits[page]


def visit(browser, root: str, page: str) -> Visit:
    """Open one page offline, read its facts, screenshot it and step its frame players."""
    path = HTML / f"{page}.html"
    if not path.exists():
        pytest.fail(f"{path.relative_to(ROOT)} is missing: build the book first (bash scripts/build.sh)")
    context = browser.new_context(viewport=VIEWPORT)
    tab = context.new_page()
    outside: List[str] = []

    def route(r) -> None:
        if urlsplit(r.request.url).hostname == HOST:
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    errors: List[str] = []
    tab.route("**/*", route)
    tab.on("console", lambda m: errors.append(f"{m.text} ({m.location.get('url', '')})") if m.type == "error" else None)
    tab.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
    response = tab.goto(root + f"{page}.html", wait_until="load")
    result = Visit(source=response.text(), console_errors=errors, outside=outside)
    result.facts = tab.evaluate(FACTS)
    SHOTS.mkdir(parents=True, exist_ok=True)  # before the clicks below scroll the page
    tab.screenshot(path=SHOTS / f"{page.replace('/', '_')}.png", full_page=True)
    result.players = [step_player(tab, img) for img in tab.query_selector_all("article img[id^='_anim_img']")]
    context.close()
    result.phone = visit_phone(browser, root, page)
    return result


# Read at 390 px, once MathJax has typeset the page: how wide the document is, what reaches past the
# screen's right edge (the innermost such elements, leaving out what a scrolling box holds or what is
# fixed to the screen), and how wide each frame player is against the article's column.
PHONE_FACTS = r"""async () => {
  const mathjax = window.MathJax && MathJax.startup;
  if (mathjax) await Promise.race([MathJax.startup.promise, new Promise(r => setTimeout(r, 15000))]);
  const screen = document.documentElement.clientWidth;
  const article = document.querySelector("article.bd-article");
  const style = getComputedStyle(article);
  const column = article.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  const name = el => el.tagName.toLowerCase() + (el.id ? "#" + el.id : "")
    + [...el.classList].slice(0, 2).map(c => "." + c).join("");
  // held by a box that scrolls (a code cell) or fixed to the screen (the drawers): widens no page
  const held = el => { for (let a = el; a; a = a.parentElement) {
      const s = getComputedStyle(a);
      if (s.position === "fixed") return true;
      if (a !== el && s.overflowX !== "visible" && a.getBoundingClientRect().right <= screen + 1) return true; }
    return false; };
  // an element past the edge, or one whose text runs out of it past the edge (an unbreakable word)
  const reaches = el => Math.max(el.getBoundingClientRect().right,
    getComputedStyle(el).overflowX === "visible" ? el.getBoundingClientRect().left + el.scrollWidth : 0);
  const past = [...document.body.querySelectorAll("*")]
    .filter(el => reaches(el) > screen + 1 && el.checkVisibility() && !held(el));
  const innermost = past.filter(el => !past.some(other => other !== el && el.contains(other)));
  const width = el => el ? Math.ceil(el.getBoundingClientRect().width) : 0;
  return {
    screen: screen,
    document: document.documentElement.scrollWidth,
    past: innermost.slice(0, 8).map(el => `${name(el)} (reaches ${Math.round(reaches(el))} px): `
      + JSON.stringify((el.textContent || el.getAttribute("src") || "").trim().replace(/\s+/g, " ").slice(0, 50))),
    column: column,
    players: [...article.querySelectorAll(".animation")].map(p => ({
      id: p.querySelector("img")?.id, player: width(p), frame: width(p.querySelector("img")),
      controls: Math.max(width(p.querySelector(".anim-controls")), p.querySelector(".anim-controls")?.scrollWidth ?? 0),
      slider: width(p.querySelector("input.anim-slider"))})),
  };
}"""


def visit_phone(browser, root: str, page: str) -> Dict:
    """Open one page offline on a phone's screen (390 px), read PHONE_FACTS and screenshot it."""
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2)
    tab = context.new_page()
    tab.route("**/*", lambda r: r.continue_() if urlsplit(r.request.url).hostname == HOST else r.abort())
    tab.goto(root + f"{page}.html", wait_until="load")
    facts = tab.evaluate(PHONE_FACTS)
    (SHOTS / "phone").mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=SHOTS / "phone" / f"{page.replace('/', '_')}.png", full_page=True)
    context.close()
    return facts


def step_player(tab, img) -> Dict:
    """Click a to_jshtml player's "next frame" button: did its frame (the img src) change?"""
    from playwright.sync_api import TimeoutError as Timeout

    player = img.evaluate_handle("img => img.closest('.animation')")
    before = img.get_attribute("src")
    player.as_element().query_selector("button[title='Next frame']").click()
    try:
        tab.wait_for_function("([img, src]) => img.getAttribute('src') !== src", arg=[img, before], timeout=3000)
        stepped = True
    except Timeout:  # the frame stayed
        stepped = False
    icons = player.evaluate("p => [...p.querySelectorAll('button')].every(b => b.querySelector('svg') || "
                            "(b.querySelector('i') && getComputedStyle(b.querySelector('i'), '::before').content "
                            "!== 'none'))")
    return {"id": img.get_attribute("id"), "stepped": stepped, "icons": icons}


@functools.lru_cache(maxsize=None)
def ids_in(path: Path) -> frozenset:
    """The id attributes of one built HTML file."""
    return frozenset(re.findall(r'\bid="([^"]+)"', path.read_text(errors="replace")))


@functools.lru_cache(maxsize=None)
def bibliography_labels(path: Path) -> Dict[str, str]:
    """The labels of the bibliography entries of one built HTML file: {entry id: label, without brackets}."""
    entries = re.findall(r'<div class="citation" id="([^"]+)"[^>]*>\s*<span class="label">(.*?)</span>\s*</span>',
                         path.read_text(errors="replace"), re.S)
    return {id_: re.sub(r"<[^>]+>", "", label).strip().strip("[]") for id_, label in entries}


# ------------------------------------------------------------------ the checks, page by page
@pytest.mark.parametrize("page", PAGES)
def test_math_is_typeset_offline_without_errors(page: str, seen: Visit) -> None:
    facts = seen.facts
    if facts["math"]:
        assert facts["mathjax"], "MathJax did not load from the book's own files"
    assert not facts["math_errors"], f"MathJax errors: {facts['math_errors']}"
    assert not facts["untypeset"], f"TeX left as text: {facts['untypeset'][:10]}"


@pytest.mark.parametrize("page", PAGES)
def test_text_has_no_control_characters(page: str, seen: Visit) -> None:
    found = [repr(seen.source[max(m.start() - 30, 0):m.end() + 30]) for m in CONTROL.finditer(seen.source)]
    assert not found, f"control characters in the page: {found[:10]}"


@pytest.mark.parametrize("page", PAGES)
def test_images_load_and_are_not_shrunk_out_of_reading(page: str, seen: Visit) -> None:
    images, column = seen.facts["images"], seen.facts["column"]
    broken = [i["src"] for i in images if not i["loaded"]]
    assert not broken, f"images that did not load: {broken}"
    shrunk = [f"{i['src']}: {i['natural']} px shown at {i['shown']:.0f} px ({i['shown'] / i['natural']:.2f})"
              for i in images if i["natural"] > column and i["shown"] < SHRUNK * i["natural"]]
    assert not shrunk, f"images shrunk below {SHRUNK} of their width (column: {column:.0f} px): {shrunk}"


@pytest.mark.parametrize("page", PAGES)
def test_code_and_outputs_fit_the_column(page: str, seen: Visit) -> None:
    blocks = [b for b in seen.facts["blocks"] if b["kind"] != "formula"]
    wide = [b for b in blocks if b["scroll"] > b["client"] + 1]
    offenders = "\n".join(f"  {b['kind']} #{b['index']} ({b['scroll']} px in {b['client']}): {b['first']!r}"
                          for b in wide)
    assert len(wide) <= OVERFLOW_SHARE * len(blocks), \
        f"{len(wide)} of {len(blocks)} code blocks and outputs scroll sideways:\n{offenders}"


@pytest.mark.parametrize("page", PAGES)
def test_every_displayed_formula_fits_the_column(page: str, seen: Visit) -> None:
    # at 1280 px no formula is cut at the column's edge or scrolls: its typeset width <= its container's
    wide = [b for b in seen.facts["blocks"] if b["kind"] == "formula" and b["scroll"] > b["client"] + 1]
    offenders = "\n".join(f"  formula #{b['index']} ({b['scroll']} px in {b['client']}): {b['first']!r}" for b in wide)
    assert not wide, f"{len(wide)} displayed formulas wider than the column:\n{offenders}"


@pytest.mark.parametrize("page", PAGES)
def test_no_page_is_wider_than_a_phone(page: str, seen: Visit) -> None:
    phone = seen.phone
    assert phone["document"] <= PHONE["width"] and phone["document"] <= phone["screen"], \
        (f"at {PHONE['width']} px the page is {phone['document']} px wide (it scrolls sideways); what reaches past "
         f"the screen's edge:\n  " + "\n  ".join(phone["past"]))


@pytest.mark.parametrize("page", PAGES)
def test_frame_players_fit_a_phone_column(page: str, seen: Visit) -> None:
    column = seen.phone["column"]
    wide = [f"{p['id']}: player {p['player']} px, frame {p['frame']}, controls {p['controls']}, slider {p['slider']}"
            for p in seen.phone["players"] if max(p["player"], p["frame"], p["controls"], p["slider"]) > column + 1]
    assert not wide, f"players wider than the {column:.0f} px column at {PHONE['width']} px:\n  " + "\n  ".join(wide)


@pytest.mark.parametrize("page", PAGES)
def test_frame_players_step(page: str, seen: Visit) -> None:
    stuck = [p["id"] for p in seen.players if not p["stepped"]]
    assert not stuck, f"players whose 'next frame' button does not change the frame: {stuck}"
    blank = [p["id"] for p in seen.players if not p["icons"]]
    assert not blank, f"players whose buttons show no icon: {blank}"


@pytest.mark.parametrize("page", PAGES)
def test_no_widget_manager_without_a_live_widget(page: str, seen: Visit) -> None:
    managers = [s for s in seen.facts["scripts"] if WIDGET_MANAGER.search(s)]
    assert not managers or seen.facts["widget_views"], \
        f"the page loads a widget manager but shows no widget (saved widget state?): {managers}"


@pytest.mark.parametrize("page", PAGES)
def test_no_console_error_of_ours(page: str, seen: Visit) -> None:
    # an allowed request to another host, aborted here, logs a failed load: not an error of ours either
    known = [*THEME_CONSOLE_ERRORS, *(f"({url}" for url in OUTSIDE_REQUESTS)]
    ours = [e for e in seen.console_errors if not any(k in e for k in known)]
    assert not ours, "console errors:\n  " + "\n  ".join(ours)


@pytest.mark.parametrize("page", PAGES)
def test_nothing_is_fetched_from_outside(page: str, seen: Visit) -> None:
    outside = [u for u in seen.outside if not any(u.startswith(known) for known in OUTSIDE_REQUESTS)]
    assert not outside, f"requests to other hosts (the page needs the network): {outside}"


@pytest.mark.parametrize("page", PAGES)
def test_bibliography_labels_read_as_the_text_cites(page: str, seen: Visit) -> None:
    # a citation "Buciluă et al., 2006" leads to the entry labelled "Buciluă et al., 2006", not "BuciluuaCNM06"
    unlike = []
    for href, text in seen.facts["citing"]:
        url = urlsplit(href)
        target = HTML / unquote(url.path).lstrip("/")
        if url.hostname == HOST and url.fragment and target.suffix == ".html" and target.is_file():
            label = bibliography_labels(target).get(unquote(url.fragment))
            if label is not None and label != text:
                unlike.append(f"{text!r} -> {label!r}")
    assert not unlike, f"citations whose entry is labelled otherwise (cited -> label): {sorted(set(unlike))}"


@pytest.mark.parametrize("page", PAGES)
def test_local_links_resolve(page: str, seen: Visit) -> None:
    broken = []
    for href in seen.facts["links"]:
        url = urlsplit(href)
        if url.hostname != HOST:
            continue
        target = HTML / unquote(url.path).lstrip("/")
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            broken.append(href)
        elif url.fragment and target.suffix == ".html" and unquote(url.fragment) not in ids_in(target):
            broken.append(href)
    assert not broken, f"local links to no file (or no such #id): {sorted(set(broken))}"


# ------------------------------------------------------------------ the wider column
def test_page_toc_button_opens_the_on_this_page_drawer(browser, server: str) -> None:
    # _static/wide-article.css gives the right-hand column's width to the article below 1440 px;
    # the list button of the article header must still show the page's table of contents
    context = browser.new_context(viewport=VIEWPORT)
    tab = context.new_page()
    tab.route("**/*", lambda r: r.continue_() if urlsplit(r.request.url).hostname == HOST else r.abort())
    tab.goto(server + f"{PAGES[1]}.html", wait_until="load")
    assert tab.evaluate("document.querySelector('article.bd-article').clientWidth") >= 860
    tab.click(".bd-header-article .secondary-toggle")
    tab.wait_for_function("document.getElementById('pst-secondary-sidebar-modal').open", timeout=3000)
    assert tab.locator("#pst-secondary-sidebar-modal nav.page-toc a").count() >= 2
    context.close()
