"""The book's own environment: requirements.lock pins every requirement of requirements.txt inside its range."""
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent


def requirement_lines(path: Path):
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):  # "-e ." is kdlib itself
            yield line


def locked_versions() -> dict:
    pins = {}
    for line in requirement_lines(ROOT / "requirements.lock"):
        name, _, version = line.partition("==")
        assert version, f"requirements.lock has an unpinned line: {line!r}"
        pins[canonicalize_name(name)] = Version(version.split(";")[0].strip())
    return pins


def test_every_requirement_is_pinned_in_the_lock_inside_its_range():
    pins = locked_versions()
    for line in requirement_lines(ROOT / "requirements.txt"):
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is in requirements.txt but not in requirements.lock: run scripts/lock.sh"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"requirements.lock pins {req.name}=={pins[name]}, outside requirements.txt's {req.specifier}"


def test_kdlib_itself_is_installed_from_the_working_tree():
    assert "-e ." in (ROOT / "requirements.lock").read_text().splitlines()


def test_kdlib_dependencies_keep_ranges_for_colab():
    # pyproject.toml's ranges, not pins: Colab keeps its own torch and ipywidgets 7
    text = (ROOT / "pyproject.toml").read_text()
    assert '"torch>=' in text and "==" not in text
