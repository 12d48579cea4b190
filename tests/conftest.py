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


@pytest.fixture
def small_disk(tmp_path):
    """mount(size, read_only=False): a folder on a tmpfs of `size` bytes (a disk that fills up, or one that
    cannot be written even by root). Needs root (CI runs as root); skipped where mounting is not allowed."""
    import subprocess

    mounted = []

    def mount(size: int, read_only: bool = False):
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        options = f"size={size}" + (",ro" if read_only else "")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)
