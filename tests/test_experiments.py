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
    return replace(ex.Setup("smoke", None, cfg, cfg, seeds=(0, 1), make_teacher=net, make_student=net), **kw)


def net():
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))


@pytest.fixture(autouse=True)
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KDLIB_CACHE", str(tmp_path))


@pytest.fixture
def count_fits(monkeypatch):
    calls = []
    real = ktrain.fit

    def counting(*a, **k):  # one entry per run, whether it trained alone or with others
        calls.extend(a[2] if isinstance(a[2], list) else [a[2]])
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
    assert tiny_setup(n_train=240, n_test=60).data(data) is data
    assert len(tiny_setup(n_train=30).data(data).y_train) == 30
    fewer = tiny_setup(n_test=20).data(data)
    assert len(fewer.y_test) == 20 and len(fewer.y_train) == 240 and "test subset of 20" in fewer.source


@pytest.mark.parametrize("make", [ex.cifar_cnn_setup, ex.deit_setup])
def test_cifar_setups_have_every_profile_and_their_papers_models_in_full(make):
    for profile in kd.profiles.PROFILES:
        s = make(profile)
        assert s.profile == profile and s.T > 1 and 0 < s.alpha < 1
        assert kd.count_params(s.make_teacher()) >= kd.count_params(s.make_student())
    full, cpu = make("full"), make("cpu")
    assert full.n_train is None and full.n_test is None and full.student.augment and full.teacher.augment
    assert len(cpu.seeds) >= 3 and not cpu.student.augment  # cpu: the teacher's logits once, not per batch
    with pytest.raises(ValueError, match="profile must be one of"):
        make("huge")


def test_labml_experiment_keeps_labml_models_and_optimiser_in_full_and_a_better_informed_teacher_on_cpu():
    full, cpu = ex.cifar_cnn_setup("full"), ex.cifar_cnn_setup("cpu")
    assert kd.count_params(full.make_teacher()) == 14_728_266 and kd.count_params(full.make_student()) == 437_034
    for cfg in (full.teacher, full.student, cpu.teacher, cpu.student):  # labml: Adam, lr 2.5e-4, batch 64
        assert (cfg.optimizer, cfg.weight_decay, cfg.lr, cfg.batch_size) == ("adamw", 0.0, 2.5e-4, 64)
    assert full.teacher.epochs == full.student.epochs == 20 and full.T == 5.0
    assert cpu.teacher_n_train > 10 * cpu.n_train  # the cpu teacher's lead: more data, not more size
    assert kd.count_params(ex.deit_setup("full").make_teacher()) == 11_173_962


def test_labml_alpha_gives_kdlibs_loss_the_direction_of_labmls_gradient():
    torch.manual_seed(0)
    z, v, y = torch.randn(8, 10, requires_grad=True), 3 * torch.randn(8, 10), torch.randint(0, 10, (8,))
    T = 5.0
    ours = kd.distillation_loss(z, v, y, T=T, alpha=ex.labml_alpha(T))
    kl = nn.KLDivLoss(log_target=True)  # labml's: reduction "mean"
    theirs = 100 * kl(torch.log_softmax(z / T, -1), torch.log_softmax(v / T, -1)) + 0.5 * nn.functional.cross_entropy(z, y)
    g_ours, = torch.autograd.grad(ours, z)
    g_theirs, = torch.autograd.grad(theirs, z)
    scale = (g_theirs.norm() / g_ours.norm()).item()
    assert torch.allclose(g_theirs, scale * g_ours, atol=1e-6)
    assert ex.labml_alpha(5.0) == pytest.approx(4 / 9)
    wrong = kd.distillation_loss(z, v, y, T=T, alpha=0.8)  # another balance: not parallel
    g_wrong, = torch.autograd.grad(wrong, z)
    assert not torch.allclose(g_theirs, (g_theirs.norm() / g_wrong.norm()) * g_wrong, atol=1e-3)


def test_teacher_learns_from_more_images_and_the_students_from_a_subset_of_them(monkeypatch):
    seen = []
    real = ktrain.fit

    def record(model, data, *a, **k):
        seen.append((model, data))
        return real(model, data, *a, **k)

    monkeypatch.setattr(ktrain, "fit", record)
    setup = tiny_setup(n_train=60, teacher_n_train=180, n_test=30, seeds=(0,))
    ex.compare(tiny_data(), setup, progress=False, verbose=False)
    (_, teacher), *students = seen  # on a CPU the students train one after another
    scratch = students[0][1]
    assert len(students) == 2 and all(d is scratch for _, d in students)
    assert len(teacher.y_train) == 180 and len(scratch.y_train) == 60
    rows = {tuple(r.tolist()) for r in teacher.x_train}
    assert all(tuple(r.tolist()) in rows for r in scratch.x_train)  # a subset of the teacher's images
    assert torch.equal(teacher.x_test, scratch.x_test) and len(scratch.y_test) == 30
    assert "the teacher's: 180" in setup.describe()
    assert "the teacher's" not in tiny_setup(n_train=60).describe()


def test_a_teacher_with_fewer_images_learns_from_a_subset_of_the_students_images():
    data = tiny_data()
    fewer = tiny_setup(n_train=120, teacher_n_train=30)
    students, teacher = fewer.data(data), fewer.teacher_data(data)
    assert len(students.y_train) == 120 and len(teacher.y_train) == 30
    rows = {tuple(r.tolist()) for r in students.x_train}
    assert all(tuple(r.tolist()) in rows for r in teacher.x_train)
    # the students are the same as with a teacher on their own images: their runs are shared
    assert torch.equal(students.x_train, tiny_setup(n_train=120).data(data).x_train)


def test_map_grid_spans_the_issue_axes_and_more_seeds_with_a_bigger_profile():
    Ts, alphas, seeds = ex.map_grid("cpu")
    assert Ts == [1, 2, 4, 8, 16] and alphas[0] == 0 and alphas[-1] == 1 and len(alphas) == 6
    assert len(ex.map_grid("smoke")[2]) <= len(seeds) <= len(ex.map_grid("full")[2])


def test_compare_trains_one_teacher_and_two_students_per_seed(count_fits):
    teacher, result = ex.compare(tiny_data(), tiny_setup(), progress=False)
    assert len(count_fits) == 1 + 2 * 2
    assert len(result.scratch) == len(result.distilled) == 2
    assert result.gain() == [s - d for s, d in zip(result.errors("scratch"), result.errors("distilled"))]
    assert "gain per seed" in result.summary(60) and isinstance(teacher, nn.Module)


def test_students_of_one_seed_start_from_the_same_weights(monkeypatch):
    starts = []
    real = ktrain.fit

    def record(model, *a, **k):
        for m in model if isinstance(model, list) else [model]:
            starts.append([p.detach().clone() for p in m.parameters()])
        return real(model, *a, **k)

    monkeypatch.setattr(ktrain, "fit", record)
    ex.compare(tiny_data(), tiny_setup(seeds=(3,)), progress=False)
    _, scratch, distilled = starts
    assert all(torch.equal(a, b) for a, b in zip(scratch, distilled))


def test_alpha_zero_distillation_trains_exactly_the_student_from_scratch():
    # why grid may use the student from scratch for its alpha = 0 column: the same weights, bit for bit
    data, setup = tiny_data(), tiny_setup(seeds=(0,))
    teacher = net()
    scratch, distilled = (kd.train.initial_model(net, 0) for _ in range(2))
    h_scratch = kd.fit(scratch, data, setup.student, progress=False)
    h_distilled = kd.fit(distilled, data, setup.distilled(8.0, 0.0), teacher=teacher, progress=False)
    assert h_scratch.step_loss == h_distilled.step_loss
    assert all(torch.equal(a, b) for a, b in zip(scratch.parameters(), distilled.parameters()))


def test_grid_takes_its_alpha_zero_column_from_the_student_from_scratch(count_fits):
    data, setup = tiny_data(), tiny_setup(seeds=(0,))
    teacher, result = ex.compare(data, setup, progress=False)
    assert len(count_fits) == 3  # the teacher, a student from scratch, a distilled one
    runs = ex.grid(data, setup, teacher, [1.0, 4.0], [0.0, 0.5])
    assert len(count_fits) == 5  # only the two cells with alpha > 0 trained
    assert runs[1.0, 0.0].step_loss == runs[4.0, 0.0].step_loss == result.scratch[0].step_loss


def test_grid_is_resumable_a_finished_cell_is_not_rerun(count_fits):
    data, setup = tiny_data(), tiny_setup()
    teacher = net()
    first = ex.grid(data, setup, teacher, [1.0, 4.0], [0.5, 1.0])
    assert set(first) == {(1.0, 0.5), (1.0, 1.0), (4.0, 0.5), (4.0, 1.0)} and len(count_fits) == 4
    again = ex.grid(data, setup, teacher, [1.0, 4.0, 8.0], [0.5, 1.0])
    assert len(count_fits) == 6  # only the new row trained
    assert again[1.0, 0.5].step_loss == first[1.0, 0.5].step_loss


def test_sweep_sizes_keep_only_what_the_data_can_supply():
    assert ex.sweep_sizes("cpu", 4000) == [1000, 4000]
    assert ex.sweep_sizes("cpu", 60000) == [1000, 4000, 15000]
    assert ex.sweep_sizes("full", 60000)[-1] == 60000


def test_sweep_compares_at_each_size(count_fits):
    result = ex.sweep(tiny_data(), tiny_setup(seeds=(0,)), [60, 120],
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


def test_deit_variants_differ_from_the_soft_student_in_one_setting_each():
    s = replace(tiny_setup(), T=3.0, alpha=0.1)
    v = ex.deit_variants(s)
    labels_only, soft, hard = v.values()
    assert labels_only is None and (soft.T, soft.alpha, soft.hard_distillation) == (3.0, 0.1, False)
    assert replace(hard, hard_distillation=False, alpha=0.1) == soft and hard.alpha == 0.5


def test_deit_setup_uses_deits_soft_distillation_settings():
    for profile in kd.profiles.PROFILES:
        s = ex.deit_setup(profile)
        assert (s.T, s.alpha) == (3.0, 0.1)  # DeiT: tau = 3, lambda = 0.1
    assert kd.count_params(ex.deit_setup("full").make_student()) == 1_806_538


def test_run_variants_trains_each_variant_and_seed_once_then_loads(count_fits):
    data, setup = tiny_data(), tiny_setup()
    teacher = net()
    variants = {"labels only": None, "soft": setup.distilled(T=4.0, alpha=0.9)}
    first = ex.run_variants(data, setup, teacher, variants)
    assert len(count_fits) == 2 * 2 and [len(v) for v in first.values()] == [2, 2]
    assert count_fits[0].seed == 0 and count_fits[1].seed == 1
    again = ex.run_variants(data, setup, teacher, variants)
    assert len(count_fits) == 4  # loaded, not retrained
    assert again["soft"][1][1].step_loss == first["soft"][1][1].step_loss
    # a test score after every epoch for the first seed (its curves are drawn), the last one for the others
    epochs = setup.student.epochs
    assert all(len(runs[0][1].epoch_test_acc) == epochs and len(runs[1][1].epoch_test_acc) == 1
               for runs in first.values())


def test_models_trained_together_may_differ_in_their_test_scores_per_epoch():
    data, setup = tiny_data(), tiny_setup()
    cfgs = [replace(setup.student, seed=0), replace(setup.student, seed=1, eval_each_epoch=False)]
    hists = kd.fit([kd.train.initial_model(net, c.seed) for c in cfgs], data, cfgs, progress=False)
    assert [len(h.epoch_test_acc) for h in hists] == [setup.student.epochs, 1]


def test_run_variants_labels_only_student_ignores_the_teacher(monkeypatch):
    seen = []
    real = ktrain.fit

    def record(model, data, cfg, teacher=None, **k):
        seen.extend(teacher if isinstance(teacher, list) else [teacher])
        return real(model, data, cfg, teacher=teacher, **k)

    monkeypatch.setattr(ktrain, "fit", record)
    teacher = net()
    ex.run_variants(tiny_data(), tiny_setup(seeds=(0,)), teacher, {"labels only": None,
                                                                   "soft": tiny_setup().distilled()})
    assert seen == [None, teacher]


def test_compare_prints_one_line_for_the_whole_experiment(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("KDLIB_CACHE", str(tmp_path))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(120, 1, 4, 4, generator=g), torch.randint(0, 3, (120,), generator=g)
    data = kd.Data("blobs", x[:96], y[:96], x[96:], y[96:], ["a", "b", "c"], "made up")
    make = lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))  # noqa: E731
    quick = kd.FitConfig(epochs=1, batch_size=32)
    setup = ex.Setup("smoke", None, quick, quick, seeds=(0, 1), make_teacher=make, make_student=make)
    ex.compare(data, setup, progress=False)
    ex.compare(data, setup, progress=False)
    first, second = capsys.readouterr().out.splitlines()
    assert first.startswith("teacher and students: 5 runs, 0 from the cache, 5 trained now")
    assert second.startswith("teacher and students: 5 runs, 5 from the cache, 0 trained now")


def test_born_again_distils_each_generation_from_the_one_before(count_fits):
    data, setup = tiny_data(), tiny_setup()
    chain = ex.born_again(data, setup, generations=3, seed=1)
    assert len(count_fits) == 3 + 2  # three generations, the controls of generations 2 and 3
    # generation 2 is the student distilled from generation 1, from the seed's first weights
    again = ktrain.initial_model(net, 1)
    hist = kd.fit(again, data, setup.distilled(seed=1), teacher=chain.models[0], progress=False)
    assert hist.step_loss == pytest.approx(chain.histories[1].step_loss, rel=1e-6)
    # the control of generation g trains g times as many epochs, from the labels alone
    assert [len(h.epoch_loss) for h in chain.controls] == [2, 4, 6]
    assert chain.controls[0] is chain.histories[0] and chain.control_models[0] is chain.models[0]
    assert ex.born_again(data, setup, generations=3, seed=1).histories[2].from_cache


def test_born_again_refuses_a_chain_without_generations():
    with pytest.raises(ValueError, match="generations must be an int >= 1"):
        ex.born_again(tiny_data(), tiny_setup(), generations=0)


def test_born_again_setup_keeps_one_architecture_for_every_generation():
    for profile in ("smoke", "cpu", "full"):
        s = ex.born_again_setup(profile)
        assert s.make_teacher is s.make_student and s.teacher == s.student
        assert len(s.seeds) >= 2  # the chapter compares chains of different seeds


def test_teacher_views_differ_from_the_consistent_student_in_one_setting_each():
    setup = ex.patient_setup("cpu")
    views = ex.teacher_views(setup, epochs=7)
    same = views["consistent"]
    assert same.teacher_view == "same" and same.augment and same.epochs == 7
    assert (same.T, same.alpha) == (1.0, 1.0)  # Beyer et al.: the teacher's distribution alone
    assert views["fixed teacher"] == replace(same, teacher_view="fixed")
    assert views["independent views"] == replace(same, teacher_view="independent")
    assert views["function matching"] == replace(same, mixup=True)


def test_patience_schedules_grow_and_every_profile_has_them():
    for profile in ("smoke", "cpu", "full"):
        epochs = ex.patience_epochs(profile)
        assert list(epochs) == sorted(set(epochs)) and len(epochs) >= 2
    assert ex.patience_epochs("cpu") == (5, 20, 80)


def test_block_outputs_pair_the_cnns_blocks_and_the_feature_terms_use_them():
    small, large = kd.models.cifar_small_cnn(), kd.models.cifar_large_cnn()
    s, t = ex.block_outputs(small), ex.block_outputs(large)
    assert len(s) == len(t) == 5
    terms = ex.feature_terms(small, large)
    assert terms["hint"].pairs == ((s[2], t[2]),) and terms["hint"].kind == "hint"
    assert terms["attention"].pairs == tuple(zip(s[:3], t[:3])) and terms["attention"].weight == 1000.0
    with pytest.raises(ValueError, match="same number"):
        ex.feature_terms(net(), small)


def test_features_setup_is_chapter_9s_experiment_with_a_cheaper_cpu_run():
    for profile in ("smoke", "full"):
        assert ex.features_setup(profile) == ex.cifar_cnn_setup(profile)
    cpu, ch9 = ex.features_setup("cpu"), ex.cifar_cnn_setup("cpu")
    assert (cpu.teacher, cpu.student, cpu.T, cpu.alpha) == (ch9.teacher, ch9.student, ch9.T, ch9.alpha)
    assert cpu.n_train < ch9.n_train and cpu.teacher_n_train < ch9.teacher_n_train


def test_run_variants_passes_a_feature_term_to_every_distilled_student(count_fits, monkeypatch):
    seen = []
    real = ktrain.fit

    def spy(*a, **k):
        seen.append(k.get("features"))
        return real(*a, **k)

    monkeypatch.setattr(ktrain, "fit", spy)
    cnn = lambda: nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                nn.Flatten(), nn.Linear(4 * 16, 3))
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (80,), generator=g)
    x = torch.randn(80, 1, 8, 8, generator=g) + y.view(-1, 1, 1, 1)
    data = kd.Data("imgs", x[:64], y[:64], x[64:], y[64:], ["a", "b", "c"], "made up")
    setup = tiny_setup(make_student=cnn, seeds=(0,))
    teacher = ktrain.initial_model(cnn, 9)
    term = kd.FeatureTerm((("2", "2"),), kind="attention", weight=10.0)
    ex.run_variants(data, setup, teacher, {"at": setup.distilled()}, features=term)
    assert seen == [term]


def test_run_variants_refuses_a_feature_term_for_labels_only_variants():
    term = kd.FeatureTerm((("0", "0"),), kind="hint")
    with pytest.raises(ValueError, match="distilled variants only"):
        ex.run_variants(tiny_data(), tiny_setup(), net(), {"labels only": None}, features=term)
