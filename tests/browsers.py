"""What the two browser tests share: Debian's chromium, launched by playwright, and the rule that CI must run them.

tests/test_browser.py reads the built pages; tests/test_live_widgets.py moves the live sliders in
JupyterLab. Both use the `browser` fixture of tests/conftest.py.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

CHROMIUM = "/usr/bin/chromium"  # Debian's: playwright's own browser download is not reachable
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
HOST = "127.0.0.1"
VIEWPORT = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}   # a phone held upright (CSS pixels)


def required(reason: str) -> None:
    """Skip for want of the browser (or what it drives), or fail where CI is set: there the test must run."""
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(f"{reason}, and CI is set: the browser tests must run here")
    pytest.skip(reason)


def chromium() -> Iterator:
    """Headless Debian chromium, launched by playwright; closed when the generator is."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        required("playwright is not installed (pip install playwright)")
    if not Path(CHROMIUM).exists():
        required(f"{CHROMIUM} is missing (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
