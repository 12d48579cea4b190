"""scripts/reproduce.py: which stored and fresh outputs count as the same result, and how chapters run."""
import asyncio
import copy
import importlib.util
import sys
import time
from pathlib import Path
from queue import Empty

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("reproduce", ROOT / "scripts" / "reproduce.py")
reproduce = importlib.util.module_from_spec(spec)
sys.modules["reproduce"] = reproduce  # dataclasses look their module up
spec.loader.exec_module(reproduce)
from polling_client import polling  # noqa: E402  (reproduce put scripts/ on the path)

CHAPTER_3 = ROOT / "book" / "03_loss_and_gradient.ipynb"
PROFILE = "profile: cpu | device: cpu (2 cores) | torch 2.15.0+cu132\n"


def notebook(*printed: str, trains: bool = True):
    """A notebook whose cells printed these texts; one that trains prints a profile line first."""
    nb = nbformat.v4.new_notebook()
    for text in ((PROFILE,) if trains else ()) + printed:
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
    ("0.30", "0.36", True), ("0.30", "0.45", False),                # small numbers: max(0.05, 25%)
    ("1.3", "1.6", True), ("1.3", "2.0", False),                    # no jump at 1
    ("0.0074", "0.0081", True), ("0.0074", "0.016", False),         # below 0.01: a factor of 2
    ("2.5e-07", "3.1e-07", True), ("2.5e-07", "2.5e-02", False),    # scientific notation: a factor of 2
    ("0.000", "0.001", True),                                        # or one unit of the last digit
    ("-0.0032", "0.0032", False), ("-0.3", "0.2", False), ("-1", "2", False),  # signs must match
    ("0", "-2", True), ("-0.00", "0.01", True),                      # zero has no sign
    ("50%", "50", False), ("1.39x", "1.41x", True), ("2x", "2", False),
])
def test_numbers_are_compared_with_the_stated_tolerance(stored, fresh, ok):
    assert reproduce.within(stored, fresh) is ok
    assert reproduce.within(fresh, stored) is ok  # symmetric


@pytest.mark.parametrize("stored,fresh,ok", [
    ("0.2041", "0.2041", True), ("0.30", "0.3", True), ("1,001", "1001", True), ("-0.0000", "0.0000", True),
    ("0.2041", "0.2042", False), ("77", "78", False), ("94.20%", "94.21%", False), ("2.5e-07", "2.6e-07", False),
])
def test_a_chapter_that_trains_nothing_must_print_the_same_numbers(stored, fresh, ok):
    assert reproduce.within(stored, fresh, exact=True) is ok
    assert reproduce.within(fresh, stored, exact=True) is ok


def test_every_number_of_every_line_is_compared():
    rows = list(reproduce.compare_cells(notebook("teacher 58 errors (94.20%)\nseeds: [76, 80, 78]\n"),
                                        notebook("teacher 59 errors (94.10%)\nseeds: [76, 90, 78]\n")))
    assert [(r.stored, r.fresh, r.ok) for r in rows] == [
        ("58", "59", True), ("94.20%", "94.10%", True),
        ("76", "76", True), ("80", "90", False), ("78", "78", True)]


def test_timings_cache_messages_versions_and_keys_are_not_compared():
    stored = notebook("profile: cpu | device: cpu | torch 2.14.1\nteacher: loaded from the cache (trained in 81.0 s)\n"
                      "seconds per run on cpu: teacher 236.4, students [43, 43]\ntook 12 s\n"
                      "machine load 7.7 on 2 cores at the start (busy: times below are slower than idle)\n"
                      "forward: 18.12 ms per step (1.00 x no_grad), 7 runs, 0 from the cache, 7 trained now\n"
                      "key 3f9a0c1b2d4e5f60, saved teacher-3f9a0c1b2d4e5f60.pt\n")
    fresh = notebook("profile: cpu | device: cuda:0 (NVIDIA H100) | torch 2.15.0+cu132\n"
                     "teacher: trained 30 epochs in 16.0 s, test accuracy 97.10% (58 errors)\n"
                     "seconds per run on cuda: teacher 16.0, students [4, 5]\ntook 3.2s\n"
                     "machine load 0.2 on 16 cores at the start (idle)\n"
                     "forward: 1.3 ms per step (1.73 x no_grad), 7 runs, 7 from the cache, 0 trained now\n"
                     "key 0b1c2d3e4f5a6b7c, saved teacher-0b1c2d3e4f5a6b7c.pt\n")
    assert [r for r in reproduce.compare_cells(stored, fresh) if not r.ok] == []


@pytest.mark.parametrize("line,words,numbers", [
    ("teacher: trained 30 epochs in 16.0 s, test accuracy 97.10% (58 errors)",
     "teacher: trained # epochs in , test accuracy # (# errors)", ["30", "97.10%", "58"]),
    ("share of 3s wrong, before the bias           13%     22%", "share of 3s wrong, before the bias # #",
     ["13%", "22%"]),
    ("test errors, of 1,000 images (86 of them 3s):", "test errors, of # images (# of them 3s):", ["1,000", "86"]),
    ("6 students (distilled and control, seeds [0, 1, 2]): 123 s of training",
     "# students (distilled and control, seeds [#, #, #]): of training", ["6", "0", "1", "2"]),
    ("50 networks; training time, when first trained: 30.8 min", "# networks; training time, when first trained:",
     ["50"]),
    ("27 minutes of training in all on cpu, took 276 s", "of training in all, took", []),
    ("Conv2d(3->32, 3x3) + BN + ReLU   32 x 32 x 32   9,312", "Conv2d(#->#, 3x3) + BN + ReLU # x # x # #",
     ["3", "32", "32", "32", "32", "9,312"]),
    ("alpha = 0.01: +0.0032, the gradient 0.9x longer", "alpha = #: #, the gradient # longer",
     ["0.01", "+0.0032", "0.9x"]),
])
def test_a_line_loses_its_timings_and_keeps_its_words_and_results(line, words, numbers):
    assert reproduce.reading(line) == (words, numbers)


def test_words_that_differ_are_reported():
    rows = list(reproduce.compare_cells(notebook("same gradient: True\n"), notebook("same gradient: False\n")))
    assert [(r.stored, r.fresh, r.ok) for r in rows] == [("True", "False", False)]


def test_a_timing_is_ignored_and_the_accuracy_on_its_line_compared():
    stored = notebook("teacher: trained 30 epochs in 16.0 s, test accuracy 97.10% (58 errors)\n")
    fresh = notebook("teacher: trained 30 epochs in 3.1 s, test accuracy 93.10% (58 errors)\n")
    rows = list(reproduce.compare_cells(stored, fresh))
    assert [(r.stored, r.fresh, r.ok) for r in rows] == [("30", "30", True), ("97.10%", "93.10%", False),
                                                         ("58", "58", True)]


def test_the_share_of_3s_is_a_result_not_a_timing():
    rows = list(reproduce.compare_cells(notebook("share of 3s wrong, before the bias   13%   22%\n"),
                                        notebook("share of 3s wrong, before the bias   63%   22%\n")))
    assert [(r.stored, r.fresh, r.ok) for r in rows] == [("13%", "63%", False), ("22%", "22%", True)]


def test_a_model_loaded_on_one_side_and_trained_on_the_other_is_compared_by_name():
    loaded = notebook("teacher: loaded from the cache (trained in 16.0 s)\n")
    trained = notebook("teacher: trained 30 epochs in 3.1 s, test accuracy 93.10% (58 errors)\n")
    other = notebook("student: trained 30 epochs in 3.1 s, test accuracy 93.10% (58 errors)\n")
    assert list(reproduce.compare_cells(loaded, trained)) == list(reproduce.compare_cells(trained, loaded)) == []
    assert [r.ok for r in reproduce.compare_cells(loaded, other)] == [False]


def edit_output(nb, old: str, new: str) -> None:
    """Replace old by new in the one stored output line of nb that holds old."""
    hits = [out for cell in nb.cells for out in cell.get("outputs", []) if old in out.get("text", "")]
    assert len(hits) == 1, f"{old!r} is printed {len(hits)} times in chapter 3"
    hits[0]["text"] = hits[0]["text"].replace(old, new)


# edits of chapter 3's stored outputs that a re-run must catch: (what it prints, an edit)
CHAPTER_3_EDITS = [
    ("same gradient: True", "same gradient: False"),            # words
    ("without T^2 +2.5e-07", "without T^2 +2.5e-02"),          # a small number
    ("on images [1, 3]", "on images [4, 6]"),                  # whole numbers
    ("alpha = 0.01: +0.0032", "alpha = 0.01: -0.0032"),        # a sign
]


@pytest.mark.parametrize("old,new", CHAPTER_3_EDITS, ids=[new for _, new in CHAPTER_3_EDITS])
def test_each_edit_of_a_stored_chapter_is_reported(old, new):
    fresh = nbformat.read(CHAPTER_3, as_version=4)
    stored = copy.deepcopy(fresh)
    edit_output(stored, old, new)
    bad = [r for r in reproduce.compare_cells(stored, fresh) if not r.ok]
    assert bad and all(new in r.line for r in bad), bad


@pytest.mark.parametrize("chapter", sorted((ROOT / "book").glob("*.ipynb")), ids=lambda p: p.stem)
def test_a_chapter_compared_with_itself_agrees(chapter):
    nb = nbformat.read(chapter, as_version=4)
    rows = list(reproduce.compare_cells(nb, copy.deepcopy(nb)))
    assert rows and [r for r in rows if not r.ok] == []


def test_a_cell_that_prints_other_lines_is_reported():
    rows = list(reproduce.compare_cells(notebook("a 1\nb 2\n"), notebook("a 1\n")))
    assert len(rows) == 1 and not rows[0].ok and "2 lines stored, 1 fresh" in rows[0].line


def test_the_profile_is_read_from_the_stored_outputs():
    assert reproduce.stored_profile(notebook("x\n", "profile: cpu | device: cpu | torch 2.15\n")) == "cpu"
    assert reproduce.stored_profile(notebook("no profile here\n", trains=False)) is None


def test_a_chapter_reproduces_and_a_failed_assert_does_not(tmp_path, capsys):
    good = nbformat.v4.new_notebook()
    good.cells = [nbformat.v4.new_code_cell("print('profile: smoke | device: cpu')\nprint('errors', 40 + 2)")]
    path = tmp_path / "good.ipynb"
    nbformat.write(good, path)
    with pytest.raises(SystemExit, match="no stored outputs to read its profile from: give --profile"):
        reproduce.main([str(path)])  # nothing stored: no profile to read, and no guess
    assert reproduce.main([str(path), "--profile", "smoke"]) == 1  # nothing stored: its lines differ
    assert reproduce.main([str(path), "--profile", "smoke", "--write"]) == 1
    assert reproduce.main([str(path)]) == 0
    bad = nbformat.v4.new_notebook()
    bad.cells = [nbformat.v4.new_code_cell("assert 1 + 1 == 3, 'the claim'")]
    nbformat.write(bad, tmp_path / "bad.ipynb")
    assert reproduce.main([str(tmp_path / "bad.ipynb"), "--profile", "smoke"]) == 1
    assert "FAILED: a cell raised" in capsys.readouterr().out


def test_cells_tagged_timings_are_not_compared():
    stored, fresh = notebook("large  14,728,266  626  6.023  734.2\n"), notebook("large  14,728,266  626  0.5  45.3\n")
    stored.cells[-1].metadata["tags"] = ["timings"]
    assert list(reproduce.compare_cells(stored, fresh)) == []


def test_asserts_run_even_when_the_caller_sets_pythonoptimize(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PYTHONOPTIMIZE", "1")  # the kernel would inherit it: python -O, no asserts
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("assert False, 'the claim'")]
    nbformat.write(nb, tmp_path / "claim.ipynb")
    assert reproduce.main([str(tmp_path / "claim.ipynb"), "--profile", "smoke"]) == 1
    assert "AssertionError: the claim" in capsys.readouterr().out


class MissedWakeUp:
    """A socket that loses its wake-up: a poll sees the reply only if it was there when the poll began."""

    def __init__(self, arrives_in: float):
        self.arrives = time.monotonic() + arrives_in

    async def get_msg(self, timeout: float) -> dict:
        if time.monotonic() >= self.arrives:
            return {"msg_type": "execute_reply"}
        await asyncio.sleep(timeout)  # the reply arrives meanwhile, unseen
        raise Empty


def test_a_missed_reply_is_read_at_the_next_short_poll():
    start = time.monotonic()
    reply = asyncio.run(polling(MissedWakeUp(0.3).get_msg, poll_s=0.2)(timeout=60))
    assert reply == {"msg_type": "execute_reply"} and time.monotonic() - start < 1


def test_a_poll_still_gives_up_at_its_timeout():
    start = time.monotonic()
    with pytest.raises(Empty):
        asyncio.run(polling(MissedWakeUp(60).get_msg, poll_s=0.2)(timeout=0.5))
    assert 0.5 <= time.monotonic() - start < 1


def widget_notebook():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import ipywidgets as w\nw.IntSlider()"),
                nbformat.v4.new_code_cell("@w.interact(x=(0, 10))\ndef double(x):\n    print(2 * x)"),
                nbformat.v4.new_code_cell("w.interactive(lambda T, alpha: T * alpha, T=w.FloatLogSlider(value=4.0),"
                                          " alpha=w.FloatSlider(value=0.5))"),
                nbformat.v4.new_code_cell("print('done')")]
    return nb


def test_cells_with_widgets_finish_in_seconds_not_at_the_timeout(tmp_path):
    # jupyter/nbclient#312: stock nbclient can sit on such a cell's reply until the cell's timeout
    for run in range(5):
        start = time.perf_counter()
        fresh, error = reproduce.execute(widget_notebook(), tmp_path, {}, timeout=60)
        seconds = time.perf_counter() - start
        assert error is None and "done" in fresh.cells[-1].outputs[0]["text"]
        assert seconds < 30, f"run {run}: {seconds:.0f} s, a reply waited for the 60 s timeout"


def test_a_cell_that_runs_past_its_timeout_is_reported(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import time\ntime.sleep(30)")]
    start = time.perf_counter()
    _, error = reproduce.execute(nb, tmp_path, {}, timeout=2)
    assert "past its 2 s timeout" in error and time.perf_counter() - start < 25
