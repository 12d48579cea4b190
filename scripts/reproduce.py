"""Re-check what a chapter claims: run it again from an empty cache and compare its numbers.

    python scripts/reproduce.py book/04_hinton_mnist.ipynb [more.ipynb ...] [--profile P] [--write]

For each chapter: read the profile its stored outputs came from (the "profile: ..." line every
experiment chapter prints), execute a copy top to bottom in that profile with an empty model cache
(the committed file is left alone unless --write), so every assert, the page's claims, runs again.
Then compare each number the stored outputs print with the fresh run's, line by line, and print a
table. Exit status 1 on a failed cell or a number outside its tolerance.

Not compared: timings, cache messages, the machine's load, library versions (lines that hold
them are skipped), and cells tagged "timings" (tables of measured speeds). The data sets already
downloaded are reused; only trained models start from scratch.
"""
from __future__ import annotations

import argparse
import copy
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))  # its neighbour in scripts/, also when imported
from strip_widget_state import shown_widget_cells  # noqa: E402

PROFILE_LINE = re.compile(r"profile: (smoke|cpu|full)\b")
# lines that print what varies from machine to machine or run to run, never a result
SKIP_LINE = re.compile(r"\d\s*(s|ms|min)\b|\b(seconds?|minutes?|ms|s/epoch|took|elapsed|cache|key)\b|torch \d|"
                       r"device: |machine load", re.I)
ANSI = re.compile(r"\x1b\[[0-9;]*m")
NUMBER = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:e[-+]?\d+)?%?")

TOLERANCES = ("percentages within 0.5 points; whole numbers of 10,000 or more (sizes, parameters) exactly; "
              "other whole numbers (errors, gains) and numbers of 10 or more (means) within max(3, 3%); "
              "smaller numbers (losses, spreads, ratios) within max(0.05, 25%)")


@dataclass
class Row:
    cell: int
    line: str
    stored: str
    fresh: str
    ok: bool


def value(token: str) -> float:
    return float(token.rstrip("%").replace(",", ""))


def within(stored: str, fresh: str) -> bool:
    """Whether fresh is within the tolerance for a number like stored (see TOLERANCES); symmetric."""
    if stored.endswith("%") != fresh.endswith("%"):
        return False
    s, f = value(stored), value(fresh)
    size = max(abs(s), abs(f))
    whole = not any(c in token for token in (stored, fresh) for c in ".e")
    if stored.endswith("%"):
        return abs(s - f) <= 0.5
    if whole and size >= 10_000:
        return s == f
    if whole or size >= 10:
        return abs(s - f) <= max(3.0, 0.03 * size)
    return abs(s - f) <= max(0.05, 0.25 * size)


def output_lines(cell) -> List[str]:
    """The text a code cell printed or returned, one entry per line, without skipped lines."""
    text = []
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream" and out.get("name") == "stdout":
            text.append(out["text"])
        elif out["output_type"] in ("execute_result", "display_data"):
            data = out.get("data", {})
            if "text/plain" in data and not any(k.startswith("image/") or "widget" in k for k in data):
                text.append(data["text/plain"])
    return [ln for ln in "".join(text).splitlines() if ln.strip() and not SKIP_LINE.search(ln)]


def compare_cells(stored_nb, fresh_nb) -> Iterator[Row]:
    """A Row per number printed by a code cell, stored against fresh; one failing Row per cell that differs."""
    for i, (s, f) in enumerate(zip(stored_nb.cells, fresh_nb.cells)):
        if s.cell_type != "code" or "timings" in s.metadata.get("tags", []):
            continue
        s_lines, f_lines = output_lines(s), output_lines(f)
        if len(s_lines) != len(f_lines):
            yield Row(i, f"{len(s_lines)} lines stored, {len(f_lines)} fresh", "-", "-", False)
            continue
        for s_line, f_line in zip(s_lines, f_lines):
            s_nums, f_nums = NUMBER.findall(s_line), NUMBER.findall(f_line)
            if len(s_nums) != len(f_nums):
                yield Row(i, s_line.strip(), f"{len(s_nums)} numbers", f"{len(f_nums)} numbers", False)
                continue
            for a, b in zip(s_nums, f_nums):
                yield Row(i, s_line.strip(), a, b, within(a, b))


def stored_profile(nb) -> Optional[str]:
    """The profile the stored outputs came from, as the chapter printed it; None if it printed none."""
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            m = PROFILE_LINE.search(out.get("text", "") if out["output_type"] == "stream" else "")
            if m:
                return m.group(1)
    return None


def execute(nb, cwd: Path, env: dict, timeout: int = 3600) -> Tuple[object, Optional[str]]:
    """Execute a copy of nb in cwd with env added to the environment; (executed notebook, error or None)."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    fresh = copy.deepcopy(nb)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        NotebookClient(fresh, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(cwd)}}).execute()
        return fresh, None
    except CellExecutionError as e:
        return fresh, failure(fresh) or str(e)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def failure(nb) -> Optional[str]:
    """Which cell raised, what, and the traceback's last lines (without terminal colours)."""
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out["output_type"] == "error":
                trace = ANSI.sub("", "\n".join(out.get("traceback", [])[-2:]))
                return f"cell {i}: {out['ename']}: {out['evalue']}\n{trace}"
    return None


def reuse_downloads(cache: Path) -> None:
    """Let an empty model cache see the data sets already downloaded to the usual one (no new download)."""
    from kdlib.data import cache_dir

    data = cache_dir() / "data"
    if data.is_dir():
        (cache / "data").symlink_to(data, target_is_directory=True)


def reproduce(path: Path, profile: Optional[str] = None, write: bool = False,
              cache: Optional[Path] = None) -> bool:
    """Re-run one chapter and print its table; True when every cell ran and every number is within tolerance.

    cache: a model cache to use and keep (runs trained before load from it); None: an empty one.
    """
    nb = nbformat.read(path, as_version=4)
    profile = profile or stored_profile(nb) or "smoke"
    with tempfile.TemporaryDirectory(prefix="kdlib-cache-") as empty:
        if cache is None:
            cache = Path(empty)
            reuse_downloads(cache)
        env = {"KDLIB_PROFILE": profile, "KDLIB_CACHE": str(cache), "KDLIB_DRY_RUN": "0", "TQDM_DISABLE": "1"}
        start = time.perf_counter()
        fresh, error = execute(nb, path.resolve().parent, env)
        minutes = (time.perf_counter() - start) / 60
    rows = list(compare_cells(nb, fresh))
    bad = [r for r in rows if not r.ok]
    print(f"\n== {path}  profile {profile}, {'empty cache' if cache == Path(empty) else f'cache {cache}'}: "
          f"ran in {minutes:.1f} min")
    print(f"tolerances: {TOLERANCES}")
    print(f"{'cell':>4}  {'stored':>12}  {'fresh':>12}  ok  line")
    for r in rows:
        print(f"{r.cell:>4}  {r.stored:>12}  {r.fresh:>12}  {'yes' if r.ok else 'NO':>3}  {r.line[:70]}")
    if error:
        kept = Path(tempfile.gettempdir()) / f"{path.stem}.failed.ipynb"
        nbformat.write(fresh, kept)  # what ran, to read what went wrong
        print(f"FAILED: a cell raised: {error}\n(the executed notebook, up to that cell: {kept})")
    print(f"{len(rows) - len(bad)} of {len(rows)} numbers within tolerance" + (f"; {len(bad)} not" if bad else ""))
    if write and error is None:
        if not shown_widget_cells(fresh):  # widget outputs all hidden: no saved state, no widget manager
            fresh.metadata.pop("widgets", None)
        nbformat.write(fresh, path)
        print(f"wrote the fresh outputs to {path}")
    return error is None and not bad


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("chapters", nargs="+", type=Path)
    ap.add_argument("--profile", choices=("smoke", "cpu", "full"), help="instead of the stored outputs' profile")
    ap.add_argument("--write", action="store_true", help="store the fresh outputs in the chapter when it ran")
    ap.add_argument("--cache", type=Path, help="a model cache to use and keep, instead of an empty one")
    args = ap.parse_args(argv)
    missing = [str(p) for p in args.chapters if not p.is_file()]
    if missing:
        ap.error(f"no such notebook: {', '.join(missing)}")
    results = {p: reproduce(p, args.profile, args.write, args.cache) for p in args.chapters}
    print("\n" + "\n".join(f"{'reproduced' if ok else 'NOT reproduced'}: {p}" for p, ok in results.items()))
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
