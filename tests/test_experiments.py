"""kdlib.experiments on a tiny problem: the comparison is fair, the grid and the sweep resume from the cache."""
from dataclasses import replace

import pytest
import torch
from torch import nn

import kdlib as kd
from kdlib import experiments as ex
from kdlib import train as ktrain


def tiny_data(n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = 2 * torch.randn(3, 6, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    x = centers[y] + torch.randn(n, 6, generator=g)
    return kd.Data("tiny", x[:240], y[:240], x[240:], y[240:], ["a", "b", "c"], "made up")


def tiny_setup(**kw):
    cfg = kd.FitConfig(epochs=2, batch_size=32, lr=0.05)
    return replace(ex.HintonSetup("smoke", None, cfg, cfg, seeds=(0, 1)), **kw)


def net():
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))


@pytest.fixture(autouse=True)
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KDLIB_CACHE", str(tmp_path))


@pytest.fixture
def count_fits(monkeypatch):
    calls = []
    real = ktrain.fit

    def counting(*a, **k):
        calls.append(a[2])
        return real(*a, **k)

    monkeypatch.setattr(ktrain, "fit", counting)
    return calls


def test_hinton_setup_has_every_profile_and_the_paper_temperature():
    for profile in kd.profiles.PROFILES:
        s = ex.hinton_setup(profile)
        assert s.profile == profile and s.T == 20.0 and s.alpha == 0.9
    assert ex.hinton_setup("smoke").n_train < 1000 and len(ex.hinton_setup("cpu").seeds) >= 3
    with pytest.raises(ValueError, match="profile must be one of"):
        ex.hinton_setup("huge")


def test_distilled_config_differs_from_scratch_only_in_T_alpha_and_seed():
    s = tiny_setup()
    d = s.distilled(T=4.0, alpha=0.5, seed=7)
    assert replace(d, T=s.student.T, alpha=s.student.alpha, seed=s.student.seed) == s.student
    assert (d.T, d.alpha, d.seed) == (4.0, 0.5, 7)


def test_setup_data_takes_a_subset_only_when_asked_for_fewer_images():
    data = tiny_data()
    assert tiny_setup().data(data) is data
    assert tiny_setup(n_train=240).data(data) is data
    assert len(tiny_setup(n_train=30).data(data).y_train) == 30


def test_compare_trains_one_teacher_and_two_students_per_seed(count_fits):
    teacher, result = ex.compare(tiny_data(), tiny_setup(), make_teacher=net, make_student=net, progress=False)
    assert len(count_fits) == 1 + 2 * 2
    assert len(result.scratch) == len(result.distilled) == 2
    assert result.gain() == [s - d for s, d in zip(result.errors("scratch"), result.errors("distilled"))]
    assert "gain per seed" in result.summary(60) and isinstance(teacher, nn.Module)


def test_students_of_one_seed_start_from_the_same_weights(monkeypatch):
    starts = []
    real = ktrain.fit

    def record(model, *a, **k):
        starts.append([p.detach().clone() for p in model.parameters()])
        return real(model, *a, **k)

    monkeypatch.setattr(ktrain, "fit", record)
    ex.compare(tiny_data(), tiny_setup(seeds=(3,)), make_teacher=net, make_student=net, progress=False)
    _, scratch, distilled = starts
    assert all(torch.equal(a, b) for a, b in zip(scratch, distilled))


def test_alpha_zero_distillation_equals_the_student_from_scratch():
    data = tiny_data()
    setup = tiny_setup(seeds=(0,))
    teacher, result = ex.compare(data, setup, make_teacher=net, make_student=net, progress=False)
    runs = ex.grid(data, setup, teacher, [4.0], [0.0], make_student=net)
    assert runs[4.0, 0.0].step_loss == pytest.approx(result.scratch[0].step_loss, rel=1e-5)


def test_grid_is_resumable_a_finished_cell_is_not_rerun(count_fits):
    data, setup = tiny_data(), tiny_setup()
    teacher = net()
    first = ex.grid(data, setup, teacher, [1.0, 4.0], [0.5, 1.0], make_student=net)
    assert set(first) == {(1.0, 0.5), (1.0, 1.0), (4.0, 0.5), (4.0, 1.0)} and len(count_fits) == 4
    again = ex.grid(data, setup, teacher, [1.0, 4.0, 8.0], [0.5, 1.0], make_student=net)
    assert len(count_fits) == 6  # only the new row trained
    assert again[1.0, 0.5].step_loss == first[1.0, 0.5].step_loss


def test_sweep_sizes_keep_only_what_the_data_can_supply():
    assert ex.sweep_sizes("cpu", 4000) == [1000, 4000]
    assert ex.sweep_sizes("cpu", 60000) == [1000, 4000, 15000]
    assert ex.sweep_sizes("full", 60000)[-1] == 60000


def test_sweep_compares_at_each_size(count_fits):
    result = ex.sweep(tiny_data(), tiny_setup(seeds=(0,)), [60, 120], make_teacher=net, make_student=net,
                      progress=False, verbose=False)
    assert sorted(result) == [60, 120] and len(count_fits) == 2 * 3


def test_describe_states_epochs_temperature_and_seeds():
    text = ex.hinton_setup("cpu").describe()
    assert "30 epochs" in text and "T = 20" in text and "alpha = 0.9" in text and "[0, 1, 2]" in text


def test_sweep_seconds_counts_shared_runs_once():
    def comp(t, s, d):
        return ex.Comparison(kd.History(seconds=t), [kd.History(seconds=x) for x in s],
                             [kd.History(seconds=x) for x in d])

    by_setting = {"a": {10: comp(5, [1, 1], [2, 2])}, "b": {10: comp(5, [1, 1], [3, 3])}}
    assert ex.sweep_seconds(by_setting) == 5 + 2 + 4 + 6
