"""kdlib.text and language models through kdlib.fit: the corpus, byte windows, a causal transformer,
sequence batches (ignored positions, a DataLoader with a table of teacher logits, bfloat16), sampling."""
import dataclasses
import hashlib
import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import kdlib as kd
from kdlib import text

TEXT = b"".join(b"def f%d(x):\n    return x * %d\n" % (i, i * i) for i in range(200))


def windows(n=48, context=16, seed=0):
    x, y = text.to_sequences(TEXT, context, n=n + 16, seed=seed)
    return kd.Data("bytes", x[:n], y[:n], x[n:], y[n:], [str(b) for b in range(256)], "test_text.py")


def small_lm(seed=0, dim=16, context=16):
    torch.manual_seed(seed)
    return kd.models.byte_transformer(dim=dim, depth=1, heads=2, context=context)


# ------------------------------------------------------------------ the corpus
def test_corpus_reads_each_file_in_order_and_keeps_its_last_tenth_for_validation(tmp_path):
    (tmp_path / "a.py").write_bytes(b"0123456789" * 10)
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_bytes(b"abcdefghij" * 5)
    corp = text.corpus(["a.py", "pkg/__init__.py"], valid_share=0.1, root=tmp_path)
    assert corp.train == b"0123456789" * 9 + b"abcdefghij" * 4 + b"abcde"
    assert corp.valid == b"0123456789" + b"fghij"
    assert corp.sha256 == hashlib.sha256(b"0123456789" * 10 + b"abcdefghij" * 5).hexdigest()
    assert "2 modules" in corp.describe() and "a, pkg" in corp.describe()


def test_the_standard_library_corpus_is_found_and_described_within_88_columns():
    corp = text.corpus()
    assert len(corp.files) == 26 and len(corp.train) > 1_000_000 and len(corp.valid) > 100_000
    assert all(len(line) <= 88 for line in corp.describe().splitlines())


def test_a_missing_corpus_file_or_bad_share_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.py"):
        text.corpus(["nothere.py"], root=tmp_path)
    with pytest.raises(ValueError, match="valid_share"):
        text.corpus(valid_share=1.0)


def test_each_window_pairs_every_byte_with_the_next_one():
    x, y = text.to_sequences(TEXT, 10)
    assert x.shape == y.shape == ((len(TEXT) - 1) // 10, 10) and x.dtype == torch.int64
    assert (y[:, :-1] == x[:, 1:]).all() and (y[:-1, -1] == x[1:, 0]).all()
    assert bytes(x[0].tolist()) == TEXT[:10] and bytes(y[0].tolist()) == TEXT[1:11]
    xs, ys = text.to_sequences(TEXT, 10, n=5, seed=1)  # 5 of the same windows, at random
    rows = {tuple(r) for r in x.tolist()}
    assert len(xs) == 5 and all(tuple(r) in rows for r in xs.tolist())
    with pytest.raises(ValueError, match=r"n must be an integer in \[1, "):
        text.to_sequences(TEXT, 10, n=10**6)
    with pytest.raises(ValueError, match="more than context=10 bytes"):
        text.to_sequences(b"short", 10)


def test_text_data_holds_training_and_validation_windows_of_the_corpus(tmp_path):
    (tmp_path / "m.py").write_bytes(TEXT)
    corp = text.corpus(["m.py"], root=tmp_path)
    data = text.text_data(corp, 16, n_train=20, n_valid=5)
    assert data.x_train.shape == (20, 16) and data.x_test.shape == (5, 16) and data.num_classes == 256
    assert "20 train / 5 test sequences" in data.describe()
    assert all(bytes(r) in corp.valid for r in data.x_test.tolist())


def test_encode_and_decode_round_trip_unicode():
    s = "naïve → λ"
    assert text.decode(text.encode(s)) == s and len(text.encode(s)) == len(s.encode())


# ------------------------------------------------------------------ the model
def test_the_byte_transformer_never_looks_ahead():
    model = small_lm().eval()
    x = text.encode("def f(x): return")[None]
    z = model(x)
    x2 = x.clone()
    x2[0, 8] = ord("#")  # change one byte: no logit before it may move
    z2 = model(x2)
    assert z.shape == (1, x.shape[1], 256)
    torch.testing.assert_close(z2[:, :8], z[:, :8])
    assert not torch.allclose(z2[:, 8:], z[:, 8:])


def test_the_byte_transformer_refuses_a_sequence_longer_than_its_context():
    with pytest.raises(ValueError, match="context=16"):
        small_lm()(torch.zeros(1, 17, dtype=torch.long))
    assert kd.count_params(kd.models.byte_transformer()) == 875_520
    assert kd.count_params(kd.models.byte_transformer(dim=64)) == 241_280


# ------------------------------------------------------------------ through fit
def test_fit_trains_a_language_model_and_bits_per_character_fall():
    data = windows()
    model = small_lm()
    before = text.bits_per_character(model, data)
    hist = kd.fit(model, data, kd.FitConfig(epochs=8, batch_size=16, optimizer="adamw", lr=1e-2),
                  progress=False)
    after = text.bits_per_character(model, data)
    assert 6 < before < 9 and after < before - 2  # about log2(256) = 8 untrained
    assert hist.test_errors < 0.7 * data.y_test.numel() and len(hist.step_acc) == 8 * 3


def test_a_student_distils_from_a_language_model_teacher():
    data = windows()
    teacher = small_lm(seed=1, dim=32)
    kd.fit(teacher, data, kd.FitConfig(epochs=8, batch_size=16, optimizer="adamw", lr=1e-2), progress=False)
    student = small_lm(seed=2, dim=8)
    cfg = kd.FitConfig(epochs=2, batch_size=16, optimizer="adamw", lr=1e-2, T=2.0, alpha=0.8)
    hist = kd.fit(student, data, cfg, teacher=teacher, progress=False)
    assert math.isfinite(hist.epoch_loss[-1]) and hist.epoch_loss[-1] < hist.epoch_loss[0]


class Tail(torch.nn.Module):
    """A model's logits from position 5 on: the reference for a run that ignores positions 0-4."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)[:, 5:]


def test_positions_labelled_minus_100_train_and_score_as_if_they_were_not_there():
    data = windows()
    masked = [t.clone() for t in (data.y_train, data.y_test)]
    for t in masked:
        t[:, :5] = -100  # e.g. a prompt: no loss, no score on its first five positions
    cfg = kd.FitConfig(epochs=2, batch_size=16, optimizer="adamw", lr=1e-2)
    a = small_lm()
    ha = kd.fit(a, kd.Data("a", data.x_train, *masked[:1], data.x_test, masked[1], data.classes, "t"),
                cfg, progress=False)
    b = Tail(small_lm())  # the same first weights, shown only positions 5 on
    hb = kd.fit(b, kd.Data("b", data.x_train, data.y_train[:, 5:], data.x_test, data.y_test[:, 5:],
                           data.classes, "t"), cfg, progress=False)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb)
    assert ha.step_loss == pytest.approx(hb.step_loss, rel=1e-5)
    assert ha.step_acc == pytest.approx(hb.step_acc) and ha.test_errors == hb.test_errors


def test_labels_of_the_wrong_shape_for_a_language_model_are_refused():
    data = windows()
    bad = kd.Data("bad", data.x_train, data.y_train[:, 0], data.x_test, data.y_test, data.classes, "t")
    with pytest.raises(ValueError, match=r"must have shape \(48, 16\)"):
        kd.fit(small_lm(), bad, kd.FitConfig(epochs=1), progress=False)


def test_a_dataloader_of_windows_distils_from_a_memory_mapped_table_of_shape_n_l_v(tmp_path, monkeypatch):
    monkeypatch.setenv("KDLIB_CACHE", str(tmp_path))
    data, teacher = windows(), small_lm(seed=1, dim=32)
    dataset = kd.Indexed(TensorDataset(data.x_train, data.y_train))
    table = kd.logit_table(teacher, dataset)
    assert table.shape == (48, 16, 256)
    torch.testing.assert_close(table, kd.frozen_forward(teacher, data.x_train))
    student = small_lm(seed=2, dim=8)
    cfg = kd.FitConfig(epochs=2, optimizer="adamw", lr=1e-2, T=2.0, alpha=0.8)
    hist = kd.fit(student, DataLoader(dataset, batch_size=16, shuffle=True), cfg, teacher=teacher,
                  test=data, progress=False)
    assert math.isfinite(hist.epoch_loss[-1]) and 0 <= hist.test_errors <= data.y_test.numel()
    assert len(list((tmp_path / "teacher-logits").glob("*.f32"))) == 1


def test_a_language_model_distils_in_bfloat16_with_a_finite_loss():
    data = windows()
    teacher, student = small_lm(seed=1, dim=32), small_lm(seed=2, dim=8)
    cfg = kd.FitConfig(epochs=2, batch_size=16, optimizer="adamw", lr=1e-2, precision="bf16")
    hist = kd.fit(student, data, cfg, teacher=teacher, progress=False)
    assert all(math.isfinite(v) for v in hist.step_loss)
    assert all(p.dtype == torch.float32 for p in student.parameters())  # weights stay float32


# ------------------------------------------------------------------ sampling
def test_sampling_continues_the_prompt_and_repeats_with_the_same_generator():
    model = small_lm()
    with torch.no_grad():  # all the mass on "a": the sample must be "a"s at any T
        model.head.weight.zero_()
        model.head.bias.fill_(-30.0)
        model.head.bias[ord("a")] = 30.0
    assert text.sample(model, "def ", 20, T=1.0) == "def " + "a" * 20  # longer than the context
    fresh = small_lm(seed=3)
    one = text.sample(fresh, "x", 12, T=1.5, generator=torch.Generator().manual_seed(5))
    two = text.sample(fresh, "x", 12, T=1.5, generator=torch.Generator().manual_seed(5))
    assert one == two and one.startswith("x")
    with pytest.raises(ValueError, match="T must be"):
        text.sample(model, "x", 3, T=0.0)
    with pytest.raises(ValueError, match="prompt"):
        text.sample(model, "", 3)


# ------------------------------------------------------------------ divergences and top-k in fit
def test_fit_distils_with_each_divergence_and_refuses_a_bad_combination():
    data, teacher = windows(), small_lm(seed=1, dim=32)
    for divergence, beta in (("forward", None), ("reverse", None), ("jsd", 0.3)):
        student = small_lm(seed=2, dim=8)
        cfg = kd.FitConfig(epochs=1, batch_size=16, optimizer="adamw", lr=1e-2, T=2.0, alpha=1.0,
                           divergence=divergence, beta=beta)
        hist = kd.fit(student, data, cfg, teacher=teacher, progress=False)
        z, v = student.eval()(data.x_train[:16]), teacher(data.x_train[:16])
        expected = kd.distillation_loss(z, v, data.y_train[:16], T=2.0, alpha=1.0, divergence=divergence,
                                        beta=beta)
        assert math.isfinite(hist.epoch_loss[0]) and math.isfinite(expected.item())
    with pytest.raises(ValueError, match="beta goes with divergence='jsd' only"):
        kd.FitConfig(beta=0.5)
    with pytest.raises(ValueError, match="top_k with top_k_tail='drop' goes with divergence='forward' or 'jsd'"):
        kd.FitConfig(divergence="reverse", top_k=4)
    with pytest.raises(ValueError, match="top_k must be None"):
        kd.FitConfig(top_k=0)


def test_a_top_k_table_reads_as_the_teachers_logits_with_minus_infinity_outside_the_k():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 7, 256, generator=g)
    top = kd.TopKLogits.from_logits(logits, 16)
    assert top.nbytes * 10 < logits.numel() * 4  # 96 bytes a position against 1,024
    dense = top[torch.tensor([3, 1])]
    assert dense.shape == (2, 7, 256) and (torch.isfinite(dense).sum(-1) == 16).all()
    kept = torch.isfinite(dense)
    torch.testing.assert_close(dense[kept], logits[[3, 1]][kept])
    # softmax over the table: the teacher's mass renormalised over its k classes
    p = torch.softmax(dense / 2.0, -1)
    q = torch.softmax(logits[[3, 1]] / 2.0, -1)
    torch.testing.assert_close(p[kept], (q * kept / (q * kept).sum(-1, keepdim=True))[kept])
    torch.testing.assert_close(kd.TopKLogits.from_logits(logits, 256)[torch.arange(5)], logits)
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, 256\]"):
        kd.TopKLogits.from_logits(logits, 0)


@pytest.mark.parametrize("divergence", ["forward", "jsd"])
def test_the_loss_against_a_top_k_teacher_is_finite_and_is_the_renormalised_kl(divergence):
    g = torch.Generator().manual_seed(1)
    z = torch.randn(4, 6, 32, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(4, 6, 32, generator=g, dtype=torch.float64)
    dense = kd.TopKLogits.from_logits(v, 4)[torch.arange(4)].double()
    y = torch.randint(0, 32, (4, 6), generator=g)
    loss = kd.distillation_loss(z, dense, y, T=2.0, alpha=0.7, divergence=divergence, check=False)
    grad, = torch.autograd.grad(loss, z)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    if divergence == "forward":  # by hand: sum over the k kept classes of p (log p - log q)
        p = torch.softmax(dense / 2.0, -1)
        log_q = torch.log_softmax(z.detach() / 2.0, -1)
        kl = torch.where(p > 0, p * (p.log() - log_q), torch.zeros(())).sum(-1).mean()
        ce = torch.nn.functional.cross_entropy(z.detach().reshape(-1, 32), y.reshape(-1))
        torch.testing.assert_close(loss.detach(), 0.7 * 4 * kl + 0.3 * ce)


def test_fit_with_top_k_of_every_class_trains_exactly_as_with_the_full_table():
    data, teacher = windows(), small_lm(seed=1, dim=32)
    runs = []
    for top_k in (None, 256, 4):
        student = small_lm(seed=2, dim=8)
        cfg = kd.FitConfig(epochs=1, batch_size=16, optimizer="adamw", lr=1e-2, T=2.0, alpha=0.8, top_k=top_k)
        runs.append((student, kd.fit(student, data, cfg, teacher=teacher, progress=False)))
    (full, hf), (every, he), (four, h4) = runs
    for a, b in zip(full.parameters(), every.parameters()):
        torch.testing.assert_close(a, b)
    assert hf.step_loss == pytest.approx(he.step_loss) and hf.step_loss != pytest.approx(h4.step_loss)
    assert all(math.isfinite(v) for v in h4.step_loss)


# ------------------------------------------------------------------ what a language model writes
def test_samples_draw_several_texts_at_once_each_as_it_would_alone():
    model = small_lm(seed=3)
    texts = text.samples(model, "def ", 20, T=1.0, count=4, generator=torch.Generator().manual_seed(1))
    assert len(texts) == 4 and all(t.startswith("def ") for t in texts) and len(set(texts)) > 1
    with pytest.raises(ValueError, match="count"):
        text.samples(model, "def ", 5, count=0)


def test_next_byte_entropy_is_8_bits_for_a_uniform_model_and_0_for_a_certain_one():
    data = windows()
    model = small_lm()
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()  # every byte equally likely
    assert text.next_byte_entropy(model, data) == pytest.approx(8.0)
    with torch.no_grad():
        model.head.bias[ord("a")] = 1e4  # always "a"
    assert text.next_byte_entropy(model, data) == pytest.approx(0.0, abs=1e-9)


def test_distinct_ngrams_counts_the_share_of_n_grams_that_do_not_repeat():
    assert text.distinct_ngrams(["abcd"], n=2) == 1.0                   # ab bc cd
    assert text.distinct_ngrams(["aaaa", "aaaa"], n=2) == pytest.approx(1 / 6)
    with pytest.raises(ValueError, match="at least one run of 5"):
        text.distinct_ngrams(["abc"], n=5)


def test_byte_names_are_one_readable_label_per_byte():
    names = text.byte_names()
    assert len(names) == 256 and len(set(names)) == 256
    assert names[ord("a")] == "a" and names[ord(" ")] == "␣" and names[10] == "\\n" and names[200] == "\\xc8"


def test_the_language_model_setup_reads_windows_the_students_a_subset_of_the_teachers(tmp_path):
    (tmp_path / "m.py").write_bytes(TEXT * 3)
    setup = dataclasses.replace(kd.experiments.lm_setup("smoke"), n_train=20, teacher_n_train=60)
    corp = text.corpus(["m.py"], root=tmp_path)
    windows_ = text.text_data(corp, setup.context, 60, setup.n_test)
    students = setup.data(windows_)
    assert students.x_train.shape == (20, setup.context)
    teacher_rows = {tuple(r) for r in setup.teacher_data(windows_).x_train.tolist()}
    assert all(tuple(r) in teacher_rows for r in students.x_train.tolist())
    assert "windows of 32 bytes" in setup.describe()
    cpu = kd.experiments.lm_setup("cpu")
    assert kd.count_params(cpu.make_student()) / kd.count_params(cpu.make_teacher()) < 0.3


def test_a_unimodal_fit_covers_two_modes_with_forward_kl_and_picks_one_with_reverse():
    c = torch.arange(60, dtype=torch.float64)
    bump = lambda centre, width: torch.softmax(-(c - centre) ** 2 / (2 * width**2), 0)
    p = 0.6 * bump(16, 4) + 0.4 * bump(42, 5)
    forward, reverse = (kd.analysis.fit_unimodal(p, d) for d in ("forward", "reverse"))
    near = lambda q, centre: q[(c - centre).abs() <= 10].sum().item()
    assert near(forward, 16) > 0.25 and near(forward, 42) > 0.25
    assert near(reverse, 16) > 0.9
    # each fit is a minimum of its own divergence: the other fit scores worse on it
    log_p = p.log()
    div = lambda q, d: kd.soft_divergence(log_p, q.log(), d).item()
    assert div(forward, "forward") < div(reverse, "forward")
    assert div(reverse, "reverse") < div(forward, "reverse")
    with pytest.raises(ValueError, match="every entry > 0"):
        kd.analysis.fit_unimodal(torch.tensor([1.0, 0.0]), "forward")


def test_a_dry_run_of_the_language_model_setup_reads_few_short_windows(tmp_path, monkeypatch):
    from kdlib.profiles import DRY_RUN_CONTEXT, DRY_RUN_TEST, DRY_RUN_TRAIN
    for name in text.CORPUS_FILES:  # the setup reads the standard library's files: here, copies of one
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(TEXT * 40)
    monkeypatch.setenv("KDLIB_DRY_RUN", "1")
    data = kd.experiments.lm_setup("full").load(root=tmp_path)
    assert data.x_train.shape == (DRY_RUN_TRAIN, DRY_RUN_CONTEXT) and len(data.y_test) == DRY_RUN_TEST



def test_hard_distillation_leaves_ignored_positions_out_of_both_terms():
    g = torch.Generator().manual_seed(0)
    z, v = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    y = torch.tensor([0, 1, 2, -100, 4, -100])
    kept = y != -100
    torch.testing.assert_close(kd.hard_distillation_loss(z, v, y, alpha=0.5),
                               kd.hard_distillation_loss(z[kept], v[kept], y[kept], alpha=0.5))


def test_the_next_byte_explorer_puts_the_models_mode_back():
    model = small_lm().train()
    kd.widgets.next_byte_explorer(model, "def ", n=5)
    assert model.training


# ------------------------------------------------------------------ whose text: prompts, on-policy, rewriting
def certain_of(byte, seed=0, dim=16):
    """A model that puts all its mass on one byte, whatever it reads."""
    model = small_lm(seed=seed, dim=dim)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.fill_(-30.0)
        model.head.bias[byte] = 30.0
    return model


def test_a_prompt_leaves_its_positions_out_of_the_loss_as_labels_of_minus_100_would():
    data, teacher = windows(), small_lm(seed=1, dim=32)
    masked = dataclasses.replace(data, y_train=data.y_train.clone())
    masked.y_train[:, :5] = -100  # positions 0..4 predict prompt bytes 1..5
    runs = []
    for d, prompt in ((data, 6), (masked, None)):
        student = small_lm(seed=2, dim=8)
        cfg = kd.FitConfig(epochs=1, batch_size=16, optimizer="adamw", lr=1e-2, T=2.0, alpha=0.7, prompt=prompt)
        runs.append((student, kd.fit(student, d, cfg, teacher=teacher, progress=False)))
    (a, ha), (b, hb) = runs
    assert ha.step_loss == pytest.approx(hb.step_loss)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q)


def test_on_policy_batches_are_the_students_own_text_and_the_teacher_reads_that_text(monkeypatch):
    data, teacher = windows(), small_lm(seed=1, dim=32)
    written, seen = [], []
    real = kd.train.written_windows

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        written.append(out)
        return out

    def loss(z, v, y):  # the soft term only, and a record of what the teacher gave
        seen.append((v.detach(), y.clone()))
        return kd.distillation_loss(z, v, y, T=1.0, alpha=1.0, check=False)

    monkeypatch.setattr(kd.train, "written_windows", spy)
    for share, expect in ((0.0, 0), (1.0, 3), (0.5, None)):
        written.clear(), seen.clear()
        cfg = kd.FitConfig(epochs=1, batch_size=16, optimizer="adamw", lr=1e-2, T=1.0, alpha=1.0, prompt=10,
                           on_policy=share)
        kd.fit(small_lm(seed=2, dim=8), data, cfg, teacher=teacher, progress=False, loss_fn=loss)
        assert len(seen) == 3 and all((y[:, :9] == -100).all() and (y[:, 9:] >= 0).all() for _, y in seen)
        if expect is not None:
            assert len(written) == expect
    # seed 0's draws at lambda = 0.5: some batches written, some not, and each written batch's
    # teacher logits are the teacher's on the student's text, not the corpus's
    assert 0 < len(written) < 3
    matched = 0
    for v, labels in seen:
        mine = [x for x, y in written if torch.equal(y[:, 9:], labels[:, 9:])]
        if mine:
            matched += 1
            torch.testing.assert_close(v, kd.frozen_forward(teacher, mine[0]))
    assert matched == len(written)


def test_on_policy_needs_a_prompt_alpha_1_a_teacher_and_one_model_at_a_time():
    data = windows()
    for bad in (dict(on_policy=0.5), dict(on_policy=0.5, prompt=4, alpha=0.9), dict(on_policy=1.5, prompt=4),
                dict(prompt=0), dict(on_policy=0.5, prompt=4, alpha=1.0, hard_distillation=True)):
        with pytest.raises(ValueError, match="on_policy|prompt"):
            kd.FitConfig(**bad)
    cfg = kd.FitConfig(epochs=1, batch_size=16, alpha=1.0, prompt=4, on_policy=0.5)
    with pytest.raises(ValueError, match="needs a teacher"):
        kd.fit(small_lm(), data, cfg, progress=False)
    with pytest.raises(ValueError, match="on_policy > 0"):
        kd.fit([small_lm(), small_lm(seed=1)], data, [cfg, dataclasses.replace(cfg, seed=1)],
               teacher=small_lm(seed=2), progress=False)
    with pytest.raises(ValueError, match=r"cfg.prompt \(17\) must be at most the sequences' length"):
        kd.fit(small_lm(), data, dataclasses.replace(cfg, prompt=17), teacher=small_lm(seed=2), progress=False)


def test_on_policy_distillation_trains_from_a_dataloader_with_the_table_for_the_corpus_batches(tmp_path,
                                                                                             monkeypatch):
    monkeypatch.setenv("KDLIB_CACHE", str(tmp_path))
    data, teacher = windows(), small_lm(seed=1, dim=32)
    loader = DataLoader(kd.Indexed(TensorDataset(data.x_train, data.y_train)), batch_size=16, shuffle=True)
    cfg = kd.FitConfig(epochs=2, optimizer="adamw", lr=1e-2, T=1.0, alpha=1.0, prompt=8, on_policy=0.5)
    hist = kd.fit(small_lm(seed=2, dim=8), loader, cfg, teacher=teacher, test=data, progress=False)
    assert all(math.isfinite(v) for v in hist.step_loss) and len(hist.step_loss) == 6


def test_rewrite_lets_the_teacher_write_the_training_windows_after_the_prompt():
    data = windows()
    rewritten = text.rewrite(certain_of(ord("z")), data, prompt=4, seed=0)
    assert torch.equal(rewritten.x_train[:, :4], data.x_train[:, :4])
    assert (rewritten.x_train[:, 4:] == ord("z")).all() and (rewritten.y_train[:, 3:] == ord("z")).all()
    assert torch.equal(rewritten.x_test, data.x_test) and "written by a model at T=1.0" in rewritten.source


def test_judged_bits_are_0_for_text_the_judge_is_sure_of_and_8_for_a_uniform_judge():
    data = windows()
    writer = certain_of(ord("q"))
    sure = text.judged_bits(certain_of(ord("q"), seed=1), writer, data, prompt=6)
    assert sure.bits == pytest.approx(0.0, abs=1e-6) and sure.texts[0] == "q" * 11 and len(sure.texts) == 16
    uniform = certain_of(0, seed=2)
    with torch.no_grad():
        uniform.head.bias.zero_()  # every byte's logit 0: p = 1/256, 8 bits
    assert text.judged_bits(uniform, small_lm(seed=3), data, prompt=6, n=5).bits == pytest.approx(8.0)


@pytest.mark.parametrize("T", [1.0, 2.0, 5.0])
def test_a_spread_tail_keeps_the_mass_outside_the_top_k_at_its_t_evenly_over_those_classes(T):
    torch.manual_seed(0)
    logits = torch.randn(5, 7, 40, dtype=torch.float64) * 3
    table = kd.TopKLogits.from_logits(logits, 6, tail="spread", T=T)
    dense = table[torch.arange(5)].double()
    p, kept = torch.softmax(logits / T, -1), torch.softmax(dense / T, -1)
    top = logits.topk(6, -1).indices
    # the top 6 keep their probabilities at T = 1, and the tail its total mass, split evenly
    torch.testing.assert_close(kept.gather(-1, top), p.gather(-1, top), rtol=1e-5, atol=1e-6)
    outside = torch.ones_like(p, dtype=torch.bool).scatter(-1, top, False)
    tail_mass = (p * outside).sum(-1, keepdim=True)
    torch.testing.assert_close(torch.where(outside, kept, 0).sum(-1, keepdim=True), tail_mass, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.where(outside, kept, tail_mass / 34), tail_mass / 34 + 0 * kept,
                               rtol=1e-5, atol=1e-7)
    assert table.nbytes == 5 * 7 * (6 * 6 + 4)
    every = kd.TopKLogits.from_logits(logits, 40, tail="spread")  # no tail: nothing to spread
    torch.testing.assert_close(every[torch.arange(5)].double(), logits.float().double())
    with pytest.raises(ValueError, match="tail must be one of"):
        kd.TopKLogits.from_logits(logits, 6, tail="uniform")


def test_reverse_kl_against_a_top_k_teacher_needs_its_tail_spread():
    with pytest.raises(ValueError, match="top_k_tail='spread'"):
        kd.FitConfig(top_k=4, divergence="reverse")
    data, teacher = windows(), small_lm(seed=1, dim=32)
    cfg = kd.FitConfig(epochs=1, batch_size=16, optimizer="adamw", lr=1e-2, T=2.0, top_k=4,
                       top_k_tail="spread", divergence="reverse")
    hist = kd.fit(small_lm(seed=2, dim=8), data, cfg, teacher=teacher, progress=False)
    assert all(math.isfinite(v) for v in hist.step_loss)
