"""kdlib.bench runs its three loops on the same work (a benchmark, so no timing is asserted)."""
import torch

import kdlib as kd
from kdlib import bench


def tiny_images(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return kd.Data("mnist", x, y, x[:32], y[:32], [str(i) for i in range(10)], "made up")


def test_seed_style_and_floor_loops_train_the_student():
    data, cfg = tiny_images(), kd.FitConfig(epochs=1, batch_size=32)
    teacher = kd.models.hinton_teacher()
    for loop in (lambda s: bench.seed_style_epochs(s, teacher, data, cfg), lambda s: bench.floor_epochs(s, data, cfg)):
        student = kd.models.hinton_student()
        before = [p.detach().clone() for p in student.parameters()]
        assert loop(student) > 0
        assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters()))


def test_run_prints_the_three_loops_and_their_ratios(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("KDLIB_CACHE", str(tmp_path))
    monkeypatch.setattr(bench, "load_dataset", lambda name, device=None: tiny_images())
    numbers = bench.run("mnist", epochs=1, batch_size=32, device="cpu", repeats=2)
    out = capsys.readouterr().out
    assert "seed style" in out and "kdlib.fit" in out and "floor" in out and "faster than the seed style" in out
    assert set(numbers) == {"seed", "kdlib", "teacher_logits", "floor", "acc_seed", "acc_kdlib"}
    assert all(v > 0 for k, v in numbers.items() if not k.startswith("acc"))


def test_run_rejects_zero_repeats():
    import pytest

    with pytest.raises(ValueError, match="repeats must be >= 1"):
        bench.run(repeats=0)
