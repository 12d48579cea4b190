"""Shared by the tests: figures render off-screen and are closed after each test; one browser per module."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def browser():
    """Headless Debian chromium (tests/browsers.py), one per test module."""
    from browsers import chromium

    yield from chromium()
