"""scripts/reproduce.py: which stored and fresh numbers count as the same result."""
import importlib.util
import sys
from pathlib import Path

import nbformat
import pytest

spec = importlib.util.spec_from_file_location("reproduce", Path(__file__).resolve().parent.parent / "scripts" /
                                              "reproduce.py")
reproduce = importlib.util.module_from_spec(spec)
sys.modules["reproduce"] = reproduce  # dataclasses look their module up
spec.loader.exec_module(reproduce)


def notebook(*printed: str):
    nb = nbformat.v4.new_notebook()
    for text in printed:
        cell = nbformat.v4.new_code_cell("print(...)")
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
        nb.cells.append(cell)
    return nb


@pytest.mark.parametrize("stored,fresh,ok", [
    ("94.20%", "94.60%", True), ("94.20%", "94.80%", False),      # percentages: 0.5 points
    ("2,395,210", "2,395,210", True), ("2,395,210", "2,395,211", False),  # sizes: exactly
    ("77", "80", True), ("77", "81", False), ("472", "486", True),   # counts: max(3, 3%)
    ("0", "2", True), ("998", "1,001", True), ("1,001", "998", True),  # counts, however printed
    ("77.3", "80.1", True), ("77.3", "81.0", False),                # means: max(3, 3%)
    ("0.0074", "0.0081", True), ("0.30", "0.45", False),            # small numbers: max(0.05, 25%)
    ("1.3", "1.6", True), ("1.3", "2.0", False),                    # no jump at 1
    ("50%", "50", False),
])
def test_numbers_are_compared_with_the_stated_tolerance(stored, fresh, ok):
    assert reproduce.within(stored, fresh) is ok
    assert reproduce.within(fresh, stored) is ok  # symmetric


def test_every_number_of_every_line_is_compared():
    rows = list(reproduce.compare_cells(notebook("teacher 58 errors (94.20%)\nseeds: [76, 80, 78]\n"),
                                        notebook("teacher 59 errors (94.10%)\nseeds: [76, 90, 78]\n")))
    assert [(r.stored, r.fresh, r.ok) for r in rows] == [
        ("58", "59", True), ("94.20%", "94.10%", True),
        ("76", "76", True), ("80", "90", False), ("78", "78", True)]


def test_timings_cache_lines_and_versions_are_not_compared():
    stored = notebook("profile: cpu | device: cpu | torch 2.14.1\nteacher: loaded from the cache (key ab12)\n"
                      "seconds per run: 236.4\ntook 12 s\nmachine load 7.7 on 2 cores at the start\n")
    fresh = notebook("profile: cpu | device: cpu | torch 2.15.0\nteacher: trained 30 epochs in 16.0 s\n"
                     "seconds per run: 16.0\ntook 3 s\nmachine load 0.2 on 2 cores at the start\n")
    assert list(reproduce.compare_cells(stored, fresh)) == []


def test_a_cell_that_prints_other_lines_is_reported():
    rows = list(reproduce.compare_cells(notebook("a 1\nb 2\n"), notebook("a 1\n")))
    assert len(rows) == 1 and not rows[0].ok and "2 lines stored, 1 fresh" in rows[0].line


def test_the_profile_is_read_from_the_stored_outputs():
    assert reproduce.stored_profile(notebook("x\n", "profile: cpu | device: cpu | torch 2.15\n")) == "cpu"
    assert reproduce.stored_profile(notebook("no profile here\n")) is None


def test_a_chapter_reproduces_and_a_failed_assert_does_not(tmp_path, capsys):
    good = nbformat.v4.new_notebook()
    good.cells = [nbformat.v4.new_code_cell("print('profile: smoke | device: cpu')\nprint('errors', 40 + 2)")]
    path = tmp_path / "good.ipynb"
    nbformat.write(good, path)
    assert reproduce.main([str(path)]) == 1  # nothing stored yet: its lines differ
    assert reproduce.main([str(path), "--write"]) == 1 and reproduce.main([str(path)]) == 0
    bad = nbformat.v4.new_notebook()
    bad.cells = [nbformat.v4.new_code_cell("assert 1 + 1 == 3, 'the claim'")]
    nbformat.write(bad, tmp_path / "bad.ipynb")
    assert reproduce.main([str(tmp_path / "bad.ipynb")]) == 1
    assert "FAILED: a cell raised" in capsys.readouterr().out


def test_cells_tagged_timings_are_not_compared():
    stored, fresh = notebook("large  14,728,266  626  6.023  734.2\n"), notebook("large  14,728,266  626  0.5  45.3\n")
    stored.cells[0].metadata["tags"] = ["timings"]
    assert list(reproduce.compare_cells(stored, fresh)) == []
