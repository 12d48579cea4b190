"""kdlib.glue: MyST-NB's glue in the book, nothing where MyST-NB is missing (Colab)."""
import sys

import kdlib as kd


def test_glue_does_nothing_without_myst_nb(monkeypatch):
    monkeypatch.setitem(sys.modules, "myst_nb", None)  # import myst_nb now raises ImportError
    assert kd.glue("key", 1.5) is None


def test_glue_hands_the_value_to_myst_nb(monkeypatch):
    import myst_nb

    calls = []
    monkeypatch.setattr(myst_nb, "glue", lambda name, value, display: calls.append((name, value, display)))
    kd.glue("ch4_gain", 20.5)
    assert calls == [("ch4_gain", 20.5, False)]
