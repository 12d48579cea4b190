"""Re-check what a chapter claims: run it again from an empty cache and compare what it prints.

    python scripts/reproduce.py book/04_hinton_mnist.ipynb [more.ipynb ...] [--profile P] [--write]
                                [--cache DIR] [--cell-timeout SECONDS]

--write stores the fresh outputs, and the numbers they glue into the prose (glue_prose.py).

For each chapter: read the profile its stored outputs came from (the "profile: ..." line every
experiment chapter prints), execute a copy top to bottom in that profile with an empty model cache
(the committed file is left alone unless --write), so every assert, the page's claims, runs again:
the kernel never inherits PYTHONOPTIMIZE, which would switch asserts off. A cell may run for
--cell-timeout seconds (default 3600; nbclient's timeout is per cell), and the client polls the
kernel every second, so a reply that nbclient would miss (jupyter/nbclient#312) costs a second, not
the timeout (polling_client.py). Then compare the stored outputs with the fresh run's, line by line,
and print a table. Exit status 1 on a failed cell, a number outside its tolerance or words that differ.

How a line is compared: first remove what varies between runs and machines, token by token, never
the whole line: timings (a number with a time unit: "16.0 s", "12 s", "3.2s", "18 ms", "30.8 min";
"3s" is a plural and stays), the numbers after "seconds per ...", speed ratios ("1.73 x") on a line
with a timing, the machine's load, "device: ...", library versions, keys (hex like 3f9a0c1b, or the
word after "key"), the cache's state ("0 from the cache, 7 trained now"). A model loaded from the
cache on one side and trained on the other compares only by its name; trained on both sides, its
accuracy and errors are compared. What is left must say the same words (True is not False); its
numbers are compared one by one with TOLERANCES: equal as printed in a chapter that trains nothing
(no profile line: the same code gives the same numbers), within a tolerance for their kind in one
that trains, with the same sign. Cells tagged "timings" (tables of measured speeds) are not compared.
The data sets already downloaded are reused; only trained models start from scratch.
"""
from __future__ import annotations

import argparse
import copy
import itertools
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
from glue_prose import process_file as sync_prose  # noqa: E402
from polling_client import PollingNotebookClient  # noqa: E402
from strip_widget_state import shown_widget_cells  # noqa: E402

CELL_TIMEOUT_S = 3600  # one cell of an experiment chapter trains for up to half an hour on a busy CPU
PROFILE_LINE = re.compile(r"profile: (smoke|cpu|full)\b")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# a number stands alone, with its unit if it is "%" or "x" (a ratio: "0.9x longer"): "3s" (a plural),
# "3x3", "cu132" or a key's "3f9a..." are words
NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:e[-+]?\d+)?[%x]?(?!\.?\w)")
# what varies from machine to machine or run to run, never a result: removed from a line before comparing
VARYING = [
    re.compile(r"machine load .*"),                      # the load, the cores, busy or idle: to the line's end
    re.compile(r"device: [^|]*"),                        # device: cpu (2 cores)
    re.compile(r" on (?:cpu|cuda(?::\d+)?|mps)\b"),      # where a time was measured
    re.compile(r"\btorch \d\S*|\b\d+\.\d+\.\d+\S*"),     # library versions: torch 2.15.0+cu132
    re.compile(r"(?<=\bkey )\S+"),                       # key 3f9a0c1b2d4e5f60, key ab12
    re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{8,}\b", re.I),  # a hex key: teacher-3f9a0c1b.pt
    re.compile(r"\d+ from the cache, \d+ trained now"),  # the cache's state: "7 runs, 0 from the cache, 7 ..."
]
# a timing: a number and a time unit. A bare "s" needs a space or a decimal ("16.0 s", "12 s", "3.2s"),
# so the plural in "share of 3s wrong" or "86 of them 3s" stays a word that is compared
TIME = re.compile(r"(?<![\w.])(?:\d+(?:\.\d+)?\s*(?:ms|mins?|minutes?|secs?|seconds?|hours?)"
                  r"|(?:\d+\.\d+\s*|\d+\s+)[sh])\b")
SPEEDUP = re.compile(r"(?<![\w.])\d+(?:\.\d+)?\s*x\b")  # "(1.73 x no_grad)": timings' ratio, on a line with a time
TIME_LABEL = re.compile(r"\b(?:seconds|minutes) per\b")  # "seconds per run: teacher 24.1, ...": times follow
# a model's cache message: loaded (no result printed) or trained (with its result), whichever the cache held
LOADED = re.compile(r"(.*?): loaded from the cache \(trained in [\d.]+ s\)")
TRAINED = re.compile(r"(.*?): trained \d+ epochs in [\d.]+ s, test accuracy .*")

TOLERANCES = ("chapters that train nothing (no 'profile:' line): every number equal as printed; chapters that "
              "train: signs equal; percentages within 0.5 points; whole numbers of 10,000 or more (sizes, "
              "parameters) exactly; other whole numbers (errors, gains) and numbers of 10 or more (means) within "
              "max(3, 3%); numbers in scientific notation or below 0.01 on either side (gradients, probabilities) "
              "within a factor of 2 (50% of the larger) or one unit of the last printed digit; other small numbers "
              "(losses, spreads, ratios) within max(0.05, 25%). Every line's words equal; timings, cache messages, "
              "the machine's load, the device, library versions and keys removed first")


@dataclass
class Row:
    cell: int
    line: str
    stored: str
    fresh: str
    ok: bool


def value(token: str) -> float:
    return float(token.rstrip("%x").replace(",", ""))


def unit(token: str) -> str:
    return token[-1] if token[-1] in "%x" else ""


def last_digit(token: str) -> float:
    """One unit of the last digit printed: 0.001 for "0.004", 1e-08 for "2.5e-07"."""
    mantissa, _, exponent = token.rstrip("%x").lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    return 10.0 ** (int(exponent or 0) - decimals)


def within(stored: str, fresh: str, exact: bool = False) -> bool:
    """Whether fresh is within the tolerance for a number like stored (see TOLERANCES); symmetric.

    exact: a chapter that trains nothing, so the same code gives the same numbers (-0 and 0 are equal).
    """
    if unit(stored) != unit(fresh):
        return False
    s, f = value(stored), value(fresh)
    if exact:
        return s == f
    if s * f < 0:  # signs must match (zero has none)
        return False
    size = max(abs(s), abs(f))
    whole = not any(c in token for token in (stored, fresh) for c in ".e")
    if stored.endswith("%"):
        return abs(s - f) <= 0.5
    if whole and size >= 10_000:
        return s == f
    if whole or size >= 10:
        return abs(s - f) <= max(3.0, 0.03 * size)
    if min(abs(s), abs(f)) < 0.01 or "e" in stored + fresh:  # tiny: a fixed margin would allow any value
        return abs(s - f) <= max(last_digit(stored), last_digit(fresh), 0.5 * size)
    return abs(s - f) <= max(0.05, 0.25 * size)


def output_lines(cell) -> List[str]:
    """The text a code cell printed or returned, one entry per non-blank line."""
    text = []
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream" and out.get("name") == "stdout":
            text.append(out["text"])
        elif out["output_type"] in ("execute_result", "display_data"):
            data = out.get("data", {})
            if "text/plain" in data and not any(k.startswith("image/") or "widget" in k for k in data):
                text.append(data["text/plain"])
    return [ln for ln in "".join(text).splitlines() if ln.strip()]


def reading(line: str) -> Tuple[str, List[str]]:
    """What a line says once what varies is removed: its words (each number a '#') and its numbers."""
    for pattern in VARYING:
        line = pattern.sub("", line)
    if TIME.search(line):
        line = SPEEDUP.sub("", TIME.sub("", line))
    label = TIME_LABEL.search(line)
    if label:
        line = line[:label.end()] + NUMBER.sub("", line[label.end():])
    return " ".join(NUMBER.sub("#", line).split()), NUMBER.findall(line)


def as_cache_message(stored: str, fresh: str) -> Tuple[str, str]:
    """A model loaded on one side and trained on the other: both lines say only the model's name.

    Trained on both sides, or loaded on both, the lines stay as they are (results and all).
    """
    for a, b in ((stored, fresh), (fresh, stored)):
        loaded, trained = LOADED.fullmatch(a.strip()), TRAINED.fullmatch(b.strip())
        if loaded and trained:
            return loaded.group(1), trained.group(1)
    return stored, fresh


def first_difference(stored: str, fresh: str) -> Tuple[str, str]:
    """The first word that differs between two lines' words."""
    for a, b in itertools.zip_longest(stored.split(), fresh.split(), fillvalue="-"):
        if a != b:
            return a, b
    return "-", "-"


def compare_lines(cell: int, stored: str, fresh: str, exact: bool) -> Iterator[Row]:
    """A Row per number of a line; a single failing Row instead if the line's words differ."""
    (s_words, s_nums), (f_words, f_nums) = (reading(line) for line in as_cache_message(stored, fresh))
    if s_words != f_words:
        yield Row(cell, stored.strip(), *first_difference(s_words, f_words), False)
        return
    for a, b in zip(s_nums, f_nums):
        yield Row(cell, stored.strip(), a, b, within(a, b, exact))


def compare_cells(stored_nb, fresh_nb) -> Iterator[Row]:
    """A Row per number printed by a code cell, stored against fresh, and one per line whose words differ.

    A chapter whose stored outputs print no profile trains nothing: its numbers must be equal.
    """
    exact = stored_profile(stored_nb) is None
    for i, (s, f) in enumerate(zip(stored_nb.cells, fresh_nb.cells)):
        if s.cell_type != "code" or "timings" in s.metadata.get("tags", []):
            continue
        s_lines, f_lines = output_lines(s), output_lines(f)
        if len(s_lines) != len(f_lines):
            yield Row(i, f"{len(s_lines)} lines stored, {len(f_lines)} fresh", "-", "-", False)
            continue
        for s_line, f_line in zip(s_lines, f_lines):
            yield from compare_lines(i, s_line, f_line, exact)


def stored_profile(nb) -> Optional[str]:
    """The profile the stored outputs came from, as the chapter printed it; None if it printed none."""
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            m = PROFILE_LINE.search(out.get("text", "") if out["output_type"] == "stream" else "")
            if m:
                return m.group(1)
    return None


def execute(nb, cwd: Path, env: dict, timeout: int = CELL_TIMEOUT_S) -> Tuple[object, Optional[str]]:
    """Execute a copy of nb in cwd, env added to the kernel's environment; (executed notebook, error or None).

    timeout: seconds one cell may run (nbclient's timeout is per cell). Every chapter runs through here,
    with a client that polls for the kernel's replies (polling_client) and a kernel whose asserts run.
    """
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    fresh = copy.deepcopy(nb)
    kernel_env = {**os.environ, **env}
    kernel_env.pop("PYTHONOPTIMIZE", None)  # -O would switch off every assert, the chapter's claims
    try:
        PollingNotebookClient(fresh, timeout=timeout, kernel_name="python3",
                              resources={"metadata": {"path": str(cwd)}}).execute(env=kernel_env)
        return fresh, None
    except CellExecutionError as e:
        return fresh, failure(fresh) or str(e)
    except CellTimeoutError as e:  # a report like any failed cell, not a traceback
        return fresh, f"a cell ran past its {timeout} s timeout: {e}"


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
              cache: Optional[Path] = None, cell_timeout: int = CELL_TIMEOUT_S) -> bool:
    """Re-run one chapter and print its table; True when every cell ran and every row of the table agrees.

    cache: a model cache to use and keep (runs trained before load from it); None: an empty one.
    cell_timeout: seconds one cell may run before the chapter counts as failed.
    """
    nb = nbformat.read(path, as_version=4)
    if profile is None and not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"):
        # no output, so no profile line to read: smoke would be a guess that looks like an answer
        raise SystemExit(f"{path} holds no stored outputs to read its profile from: give --profile")
    profile = profile or stored_profile(nb) or "smoke"
    with tempfile.TemporaryDirectory(prefix="kdlib-cache-") as empty:
        if cache is None:
            cache = Path(empty)
            reuse_downloads(cache)
        env = {"KDLIB_PROFILE": profile, "KDLIB_CACHE": str(cache), "KDLIB_DRY_RUN": "0", "TQDM_DISABLE": "1"}
        start = time.perf_counter()
        fresh, error = execute(nb, path.resolve().parent, env, cell_timeout)
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
    print(f"{len(rows) - len(bad)} of {len(rows)} rows agree (numbers within tolerance, words equal)"
          + (f"; {len(bad)} do not" if bad else ""))
    if write and error is None:
        if not shown_widget_cells(fresh):  # widget outputs all hidden: no saved state, no widget manager
            fresh.metadata.pop("widgets", None)
        nbformat.write(fresh, path)
        sync_prose(path)  # the numbers in the prose, from the fresh glue outputs
        print(f"wrote the fresh outputs to {path}, and their numbers into its prose")
    return error is None and not bad


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("chapters", nargs="+", type=Path)
    ap.add_argument("--profile", choices=("smoke", "cpu", "full"), help="instead of the stored outputs' profile")
    ap.add_argument("--write", action="store_true", help="store the fresh outputs in the chapter when it ran")
    ap.add_argument("--cache", type=Path, help="a model cache to use and keep, instead of an empty one")
    ap.add_argument("--cell-timeout", type=int, default=CELL_TIMEOUT_S, metavar="SECONDS",
                    help=f"how long one cell may run before the chapter fails (default {CELL_TIMEOUT_S})")
    args = ap.parse_args(argv)
    missing = [str(p) for p in args.chapters if not p.is_file()]
    if missing:
        ap.error(f"no such notebook: {', '.join(missing)}")
    results = {p: reproduce(p, args.profile, args.write, args.cache, args.cell_timeout) for p in args.chapters}
    print("\n" + "\n".join(f"{'reproduced' if ok else 'NOT reproduced'}: {p}" for p, ok in results.items()))
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
