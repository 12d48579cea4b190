"""The full profile, executed on the CPU: every experiment chapter's `full` branch runs under KDLIB_DRY_RUN=1
(data capped at a few hundred images, one epoch a run), so no code meets its first execution on a GPU."""
import importlib.util
import sys
from pathlib import Path

import nbformat
import pytest

BOOK = Path(__file__).resolve().parent.parent / "book"
spec = importlib.util.spec_from_file_location("reproduce", BOOK.parent / "scripts" / "reproduce.py")
reproduce = importlib.util.module_from_spec(spec)
sys.modules["reproduce"] = reproduce
spec.loader.exec_module(reproduce)

EXPERIMENTS = [p for p in sorted(BOOK.glob("*.ipynb")) if reproduce.stored_profile(nbformat.read(p, as_version=4))]


def test_a_dry_run_caps_the_data_and_the_epochs(monkeypatch, tmp_path):
    import torch
    import kdlib as kd
    from kdlib.profiles import DRY_RUN_EPOCHS, DRY_RUN_TEST, DRY_RUN_TRAIN

    monkeypatch.setenv("KDLIB_CACHE", str(tmp_path))
    monkeypatch.setenv("KDLIB_DRY_RUN", "1")
    data = kd.load_dataset("mnist", verbose=False)
    assert (len(data.y_train), len(data.y_test)) == (DRY_RUN_TRAIN, DRY_RUN_TEST)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    hist = kd.fit(model, data, kd.FitConfig(epochs=60), progress=False)
    assert len(hist.epoch_loss) == DRY_RUN_EPOCHS
    assert "DRY RUN" in kd.describe_run("full", torch.device("cpu"))
    assert kd.is_quick("full") and kd.is_quick("cpu")  # no claims about results in a dry run
    monkeypatch.delenv("KDLIB_DRY_RUN")
    assert kd.is_quick("smoke") and not kd.is_quick("cpu") and not kd.is_quick("full")


def test_dry_run_switch_rejects_unclear_values(monkeypatch):
    from kdlib.profiles import dry_run

    monkeypatch.setenv("KDLIB_DRY_RUN", "maybe")
    with pytest.raises(ValueError, match="KDLIB_DRY_RUN must be"):
        dry_run()
    monkeypatch.setenv("KDLIB_DRY_RUN", "0")
    assert not dry_run()


def test_the_experiment_chapters_are_found():
    assert len(EXPERIMENTS) >= 6, EXPERIMENTS


@pytest.mark.parametrize("chapter", EXPERIMENTS, ids=lambda p: p.stem)
def test_the_full_profile_runs_end_to_end_in_a_dry_run(chapter, tmp_path):
    nb = nbformat.read(chapter, as_version=4)
    reproduce.reuse_downloads(tmp_path)
    env = {"KDLIB_PROFILE": "full", "KDLIB_DRY_RUN": "1", "KDLIB_CACHE": str(tmp_path), "TQDM_DISABLE": "1"}
    # a dry run's cells take seconds on an idle machine, and over two minutes (chapter 10's
    # ResNet cell) on one shared with other jobs: five minutes is a fault. (A reply that nbclient's
    # socket poll missed, jupyter/nbclient#312, once held CI for 10 idle minutes here;
    # reproduce.execute now polls every second, see scripts/polling_client.py.)
    fresh, error = reproduce.execute(nb, BOOK, env, timeout=300)
    assert error is None, f"{chapter.name} failed in the full profile's dry run: {error}"
    printed = "".join(out.get("text", "") for cell in fresh.cells for out in cell.get("outputs", []))
    assert "profile: full" in printed and "DRY RUN" in printed
