"""kdlib.together through kd.fit: models trained at once end as they would alone, each with its own
seed, T, alpha and teacher; what cannot train together is refused with a reason."""
from dataclasses import replace
from functools import partial

import pytest
import torch
from torch import nn

import kdlib as kd
from kdlib import bench
from kdlib.train import initial_model
from toys import blobs


def mlp(d=8, classes=3):
    return nn.Sequential(nn.Linear(d, 32), nn.ReLU(), nn.Linear(32, classes))


@pytest.fixture(autouse=True)
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KDLIB_CACHE", str(tmp_path))


def trained_teacher(data):
    teacher = initial_model(mlp, 99)
    kd.fit(teacher, data, kd.FitConfig(epochs=2, lr=0.05), progress=False)
    return teacher


def assert_same_runs(alone, together, atol, x=None):
    """The same weights (or, given inputs x, the same logits on x) and the same history."""
    for (m, h), m2, h2 in alone_and_together(alone, together):
        if x is None:
            for p, q in zip(m.parameters(), m2.parameters()):
                torch.testing.assert_close(q, p, rtol=1e-4, atol=atol)
        else:
            with torch.no_grad():
                torch.testing.assert_close(m2.eval()(x), m.eval()(x), rtol=1e-4, atol=atol)
        assert h2.step_loss == pytest.approx(h.step_loss, rel=1e-4, abs=1e-5)
        assert h2.step_acc == h.step_acc and h2.test_errors == h.test_errors
        assert h2.epoch_test_acc == h.epoch_test_acc


def alone_and_together(alone, together):
    models, hists = together
    return [(a, m, h) for a, m, h in zip(alone, models, hists)]


def test_three_models_trained_together_equal_three_runs_alone():
    # three seeds, three losses: the labels alone, soft distillation at its own T and alpha from one
    # teacher, hard distillation from another; SGD with a cosine schedule
    data = blobs()
    teachers = [None, trained_teacher(data), initial_model(mlp, 7)]
    base = kd.FitConfig(epochs=3, batch_size=32, lr=0.05, schedule="cosine")
    cfgs = [replace(base, seed=0), replace(base, seed=1, T=2.0, alpha=0.6),
            replace(base, seed=2, hard_distillation=True, alpha=0.5)]
    alone = []
    for cfg, teacher in zip(cfgs, teachers):
        model = initial_model(mlp, cfg.seed)
        alone.append((model, kd.fit(model, data, cfg, teacher=teacher, progress=False)))
    models = [initial_model(mlp, cfg.seed) for cfg in cfgs]
    hists = kd.fit(models, data, cfgs, teacher=teachers, progress=False)
    assert isinstance(hists, list) and len(hists) == 3
    assert_same_runs(alone, (models, hists), atol=1e-5)
    # and they are three different runs, not one run three times
    assert len({h.step_loss[-1] for h in hists}) == 3


def test_models_with_a_spread_top_k_tail_at_their_own_t_train_together_as_alone():
    # the tail's logit depends on T: each T its own table, one teacher for both
    data = blobs(classes=6)
    teacher = trained_teacher_of(data, classes=6)
    base = kd.FitConfig(epochs=2, batch_size=32, lr=0.05, top_k=2, top_k_tail="spread")
    cfgs = [replace(base, seed=0, T=1.0), replace(base, seed=1, T=4.0)]
    alone = []
    for cfg in cfgs:
        model = initial_model(partial(mlp, classes=6), cfg.seed)
        alone.append((model, kd.fit(model, data, cfg, teacher=teacher, progress=False)))
    models = [initial_model(partial(mlp, classes=6), cfg.seed) for cfg in cfgs]
    hists = kd.fit(models, data, cfgs, teacher=teacher, progress=False)
    assert_same_runs(alone, (models, hists), atol=1e-5)


def trained_teacher_of(data, classes):
    teacher = initial_model(partial(mlp, classes=classes), 99)
    kd.fit(teacher, data, kd.FitConfig(epochs=2, lr=0.05), progress=False)
    return teacher


def test_a_small_vit_trained_together_equals_its_runs_alone_with_adamw():
    # attention under vmap: the fused kernels are replaced by the composite ones, same numbers.
    # Compared by logits, not weights: the keys' bias has a zero gradient (softmax ignores a shift
    # shared by every key), so AdamW, which divides by the gradient's size, moves it by rounding
    # noise, differently in each implementation, and with no effect on any output
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(48, 3, 8, 8, generator=g), torch.randint(0, 4, (48,), generator=g)
    data = kd.Data("tiny", x[:32], y[:32], x[32:], y[32:], list("abcd"), "made up")
    vit = partial(kd.models.VisionTransformer, image_size=8, patch_size=4, num_classes=4, dim=16,
                  depth=1, heads=2)
    cfgs = [kd.FitConfig(epochs=2, batch_size=16, optimizer="adamw", lr=1e-3, seed=s) for s in (0, 1)]
    alone = []
    for cfg in cfgs:
        model = initial_model(vit, cfg.seed)
        alone.append((model, kd.fit(model, data, cfg, progress=False)))
    models = [initial_model(vit, cfg.seed) for cfg in cfgs]
    assert_same_runs(alone, (models, kd.fit(models, data, cfgs, progress=False)), atol=1e-4, x=x)


def test_train_or_load_many_loads_finished_runs_and_trains_the_rest_together(capsys):
    data = blobs()
    teacher = trained_teacher(data)
    cfgs = [kd.FitConfig(epochs=2, lr=0.05, seed=s, T=T) for s, T in ((0, 2.0), (1, 4.0), (2, 8.0))]
    names = ["a", "b", "c"]
    first, _ = kd.train_or_load(mlp, data, cfgs[0], teacher, name="a")  # one run, alone
    runs = kd.train_or_load_many(mlp, data, cfgs, [teacher] * 3, names, together=True)
    out = capsys.readouterr().out
    assert "a: loaded from the cache" in out and "b: trained" in out and "c: trained" in out
    assert runs[0][1].from_cache and not runs[1][1].from_cache
    torch.testing.assert_close(runs[0][0].state_dict(), first.state_dict())
    # each run trained together is the run train_or_load trains alone (and now loads)
    for (model, hist), cfg, name in zip(runs[1:], cfgs[1:], names[1:]):
        loaded, h = kd.train_or_load(mlp, data, cfg, teacher, name=name)
        assert h.from_cache and h.test_errors == hist.test_errors
        torch.testing.assert_close(loaded.state_dict(), model.state_dict())
        alone = initial_model(mlp, cfg.seed)
        kd.fit(alone, data, cfg, teacher=teacher, progress=False)
        torch.testing.assert_close(alone.state_dict(), model.state_dict(), rtol=1e-4, atol=1e-5)


def test_a_diverging_model_among_several_puts_every_model_back_and_is_named():
    data = blobs()
    cfgs = [kd.FitConfig(epochs=2, lr=lr, seed=s) for s, lr in ((0, 1e12), (1, 1e12))]
    models = [initial_model(mlp, c.seed) for c in cfgs]
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in models]
    with pytest.raises(RuntimeError, match=r"model\[0\] \(seed 0\) diverged"):
        kd.fit(models, data, cfgs, progress=False)
    for m, state in zip(models, before):
        assert all(torch.equal(state[k], v) for k, v in m.state_dict().items())


@pytest.mark.parametrize("make, cfg_change, message", [
    (lambda: nn.Sequential(nn.Linear(8, 4), nn.BatchNorm1d(4), nn.Linear(4, 3)), {}, "batch norm"),
    (lambda: nn.Sequential(nn.Linear(8, 4), nn.Dropout(0.2), nn.Linear(4, 3)), {}, "dropout with p = 0.2"),
    (mlp, {"lr": 0.1}, r"cfg\.lr differs: \[0\.01, 0\.1\]"),
    (mlp, {"augment": True}, "augment=True"),
])
def test_models_that_cannot_train_together_are_refused_with_the_reason(make, cfg_change, message):
    data = blobs()
    models = [initial_model(make, s) for s in (0, 1)]
    both = {"augment": True} if "augment" in cfg_change else {}  # one setting shared, refused alone
    cfgs = [kd.FitConfig(seed=0, **both), kd.FitConfig(seed=1, **cfg_change)]
    with pytest.raises(ValueError, match=message):
        kd.fit(models, data, cfgs, progress=False)


def test_models_of_two_architectures_or_one_model_twice_are_refused():
    data, cfgs = blobs(), [kd.FitConfig(seed=0), kd.FitConfig(seed=1)]
    with pytest.raises(ValueError, match="one architecture"):
        kd.fit([mlp(), nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))], data, cfgs, progress=False)
    model = mlp()
    with pytest.raises(ValueError, match="distinct objects"):
        kd.fit([model, model], data, cfgs, progress=False)
    with pytest.raises(ValueError, match="one per model"):
        kd.fit([mlp(), mlp()], data, cfgs[:1], progress=False)
    with pytest.raises(ValueError, match="a kdlib Data"):
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data.x_train, data.y_train))
        kd.fit([mlp(), mlp()], loader, cfgs, progress=False)


def test_a_stack_reads_one_input_for_all_models_or_one_per_model():
    models = [initial_model(mlp, s) for s in (0, 1, 2)]
    stack = kd.together.Stack(models)
    x = torch.randn(5, 8)
    each = torch.randn(3, 5, 8)
    with torch.no_grad():
        torch.testing.assert_close(stack(x), torch.stack([m(x) for m in models]))
        torch.testing.assert_close(stack(each, each=True), torch.stack([m(xi) for m, xi in zip(models, each)]))


def test_the_bench_case_times_the_grid_one_at_a_time_and_together(capsys):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(96, 1, 28, 28, generator=g), torch.randint(0, 10, (96,), generator=g)
    data = kd.Data("mnist", x[:64], y[:64], x[64:], y[64:], [str(i) for i in range(10)], "made up")
    numbers = bench.together(n=3, epochs=1, repeats=2, device="cpu", data=data)
    out = capsys.readouterr().out
    assert "3 distilled Hinton students" in out and "interleaved" in out and "x as fast" in out
    assert numbers["ratio"] == pytest.approx(numbers["one at a time"] / numbers["together"])
    with pytest.raises(ValueError, match="n must be"):
        bench.together(n=1, data=data)


def test_train_or_load_many_stacks_on_an_accelerator_only_unless_told(monkeypatch):
    # on a CPU stacking was measured slower (kdlib.together), so None trains one after another there
    calls = []
    real = kd.train.fit

    def record(model, *a, **k):
        calls.append(len(model) if isinstance(model, list) else 1)
        return real(model, *a, **k)

    monkeypatch.setattr(kd.train, "fit", record)
    data = blobs()
    cfgs = [kd.FitConfig(epochs=1, seed=s) for s in (0, 1, 2)]
    kd.train_or_load_many(mlp, data, cfgs, [None] * 3, ["a", "b", "c"], cache=False)
    assert calls == [1, 1, 1]
    kd.train_or_load_many(mlp, data, cfgs, [None] * 3, ["a", "b", "c"], cache=False, together=True)
    assert calls == [1, 1, 1, 3]


def test_runs_trained_one_after_another_are_saved_as_each_finishes(monkeypatch, capsys):
    # a killed or failing experiment keeps the runs it finished: the next call loads them
    real, calls = kd.train.fit, []

    def second_fails(model, *a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as if the reader stopped the kernel
        return real(model, *a, **k)

    monkeypatch.setattr(kd.train, "fit", second_fails)
    data = blobs()
    cfgs = [kd.FitConfig(epochs=1, seed=s) for s in (0, 1, 2)]
    with pytest.raises(KeyboardInterrupt):
        kd.train_or_load_many(mlp, data, cfgs, [None] * 3, ["a", "b", "c"], together=False)
    monkeypatch.setattr(kd.train, "fit", real)
    runs = kd.train_or_load_many(mlp, data, cfgs, [None] * 3, ["a", "b", "c"], together=False)
    assert [h.from_cache for _, h in runs] == [True, False, False]
