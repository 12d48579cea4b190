"""kdlib.features: named layers read by forward hooks, FitNets' hint and attention transfer, the feature
term added to fit's loss, and the hooks gone when fit returns or fails."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import kdlib as kd
from kdlib.features import FeatureLoss, LayerOutputs, attention_loss, attention_map, hint_loss
from kdlib.train import initial_model


def cnn(width=4, classes=3):
    return nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(2 * width * 16, classes))


def images(n_train=64, n_test=32, classes=3, seed=0) -> kd.Data:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n_train + n_test,), generator=g)
    x = torch.randn(n_train + n_test, 1, 16, 16, generator=g) + y[:, None, None, None].float()
    return kd.Data("toy images", x[:n_train], y[:n_train], x[n_train:], y[n_train:],
                   [str(c) for c in range(classes)], "made up")


@pytest.fixture(autouse=True)
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KDLIB_CACHE", str(tmp_path))


def hooks_of(model):
    return sum(len(m._forward_hooks) for m in model.modules())


def test_attention_map_is_the_normalised_mean_of_squares_over_channels():
    f = torch.randn(2, 5, 3, 4)
    a = (f ** 2).sum(1).reshape(2, 12)  # the sum or the mean: the same map once normalised
    expected = a / a.norm(dim=1, keepdim=True)
    torch.testing.assert_close(attention_map(f), expected)
    assert torch.allclose(attention_map(f).norm(dim=1), torch.ones(2))


def test_attention_loss_compares_layers_of_different_widths_but_not_sizes():
    f_s, f_t = torch.randn(2, 4, 8, 8), torch.randn(2, 16, 8, 8)
    q_s = F.normalize(f_s.pow(2).mean(1).flatten(1), dim=1)
    q_t = F.normalize(f_t.pow(2).mean(1).flatten(1), dim=1)
    torch.testing.assert_close(attention_loss(f_s, f_t), ((q_s - q_t) ** 2).mean())
    assert attention_loss(f_t, f_t) == 0
    with pytest.raises(ValueError, match="same positions"):
        attention_loss(f_s, torch.randn(2, 4, 4, 4))


def test_hint_loss_is_the_mean_squared_difference_and_checks_shapes():
    g, f = torch.randn(3, 6, 2, 2), torch.randn(3, 6, 2, 2)
    torch.testing.assert_close(hint_loss(g, f), F.mse_loss(g, f))
    with pytest.raises(ValueError, match="must match the teacher"):
        hint_loss(g, torch.randn(3, 5, 2, 2))


def test_layer_outputs_records_named_layers_and_removes_its_hooks():
    model = cnn()
    x = torch.randn(2, 1, 16, 16)
    with LayerOutputs(model, ["1", "4"]) as seen:
        model(x)
        assert hooks_of(model) == 2
        torch.testing.assert_close(seen["1"], F.relu(model[0](x)))
        assert seen["4"].shape == (2, 8, 8, 8)
    assert hooks_of(model) == 0
    with pytest.raises(ValueError, match=r"no layer named 'conv'.*'0', '1'"):
        LayerOutputs(model, ["conv"], "the student")


def test_feature_term_refuses_unclear_settings():
    with pytest.raises(ValueError, match="kind must be one of"):
        kd.FeatureTerm((("1", "1"),), kind="fitnet")
    with pytest.raises(ValueError, match="weight must be a finite number > 0"):
        kd.FeatureTerm((("1", "1"),), weight=float("nan"))
    with pytest.raises(TypeError, match="pairs must be"):
        kd.FeatureTerm(("1", "1"))
    assert kd.FeatureTerm([["1", "4"]]).pairs == (("1", "4"),)


def test_a_hint_regressor_maps_the_students_width_to_the_teachers():
    student, teacher = cnn(width=2), cnn(width=6)
    loss = FeatureLoss(kd.FeatureTerm((("4", "4"),)), student, teacher, (1, 16, 16))
    assert isinstance(loss.regressors[0], nn.Conv2d)
    assert (loss.regressors[0].in_channels, loss.regressors[0].out_channels) == (4, 12)
    with pytest.raises(ValueError, match="same height and width"):
        FeatureLoss(kd.FeatureTerm((("1", "4"),), kind="attention"), student, teacher, (1, 16, 16))


def independent_feature_loss(term, student, teacher, regressors, x):
    """The term computed by hand: the layers' outputs by slicing the Sequential models."""
    total = 0.0
    for i, (s, t) in enumerate(term.pairs):
        f_s, f_t = student[: int(s) + 1](x), teacher[: int(t) + 1](x).detach()
        if term.kind == "hint":
            total = total + ((regressors[i](f_s) - f_t) ** 2).mean()
        else:
            q = lambda f: F.normalize(f.pow(2).mean(1).flatten(1), dim=1)
            total = total + ((q(f_s) - q(f_t)) ** 2).mean() / 2
    return term.weight * total


@pytest.mark.parametrize("kind", ["hint", "attention"])
def test_fit_adds_the_feature_term_to_the_loss_of_each_batch(kind):
    data = images()
    teacher = initial_model(lambda: cnn(width=6), 5)
    kd.fit(teacher, data, kd.FitConfig(epochs=1, lr=0.05), progress=False)
    term = kd.FeatureTerm((("1", "1"), ("4", "4")), kind=kind, weight=3.0)
    cfg = kd.FitConfig(epochs=1, batch_size=len(data.y_train), lr=0.05, T=2.0, alpha=0.5)  # one step
    student = initial_model(cnn, 0)
    before = copy.deepcopy(student)  # the step's loss is the initial weights'
    # the regressors fit makes: from cfg.seed, right after the student's weights
    torch.manual_seed(cfg.seed)
    regressors = FeatureLoss(term, student, teacher, (1, 16, 16)).regressors
    hist = kd.fit(student, data, cfg, teacher=teacher, progress=False, features=term)
    x, y = data.x_train, data.y_train
    with torch.no_grad():
        v = teacher.eval()(x)
        expected = kd.distillation_loss(before(x), v, y, T=2.0, alpha=0.5) + independent_feature_loss(
            term, before, teacher, regressors, x)
    assert hist.step_loss[0] == pytest.approx(expected.item(), rel=1e-5)
    assert hooks_of(student) == 0 and hooks_of(teacher) == 0


def test_the_feature_term_changes_training_and_its_regressor_learns():
    data = images()
    teacher = initial_model(lambda: cnn(width=6), 5)
    cfg = kd.FitConfig(epochs=2, lr=0.05, T=2.0, alpha=0.5)
    plain, hinted = initial_model(cnn, 0), initial_model(cnn, 0)
    kd.fit(plain, data, cfg, teacher=teacher, progress=False)
    h = kd.fit(hinted, data, cfg, teacher=teacher, progress=False,
               features=kd.FeatureTerm((("4", "4"),), weight=10.0))
    assert not torch.equal(plain[0].weight, hinted[0].weight)
    assert h.epoch_loss[-1] < h.epoch_loss[0]


def test_hooks_are_removed_when_training_fails():
    data = images()
    teacher, student = initial_model(cnn, 5), initial_model(cnn, 0)
    nan_loss = lambda z, v, y: z.sum() * float("nan")  # a loss that stops being finite: fit raises
    with pytest.raises(RuntimeError, match="not finite|NaN|finite"):
        kd.fit(student, data, kd.FitConfig(epochs=1, lr=0.05), teacher=teacher, progress=False,
               loss_fn=nan_loss, features=kd.FeatureTerm((("4", "4"),), kind="attention"))
    assert hooks_of(student) == 0 and hooks_of(teacher) == 0


def test_fit_refuses_a_feature_term_without_a_teacher_or_with_several_models():
    data = images()
    term = kd.FeatureTerm((("4", "4"),))
    with pytest.raises(ValueError, match="features needs a teacher"):
        kd.fit(initial_model(cnn, 0), data, kd.FitConfig(epochs=1), features=term, progress=False)
    teacher = initial_model(cnn, 5)
    with pytest.raises(ValueError, match="features needs a teacher"):
        kd.fit([initial_model(cnn, 0), initial_model(cnn, 1)], data, [kd.FitConfig(epochs=1)] * 2,
               teacher=teacher, features=term, progress=False)
    with pytest.raises(TypeError, match="FeatureTerm"):
        kd.fit(initial_model(cnn, 0), data, kd.FitConfig(epochs=1), teacher=teacher,
               features={"pairs": ("4", "4")}, progress=False)


def test_a_feature_term_works_with_a_data_loader():
    data = images()
    teacher = initial_model(cnn, 5)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data.x_train, data.y_train),
                                         batch_size=16, shuffle=True)
    h = kd.fit(initial_model(cnn, 0), loader, kd.FitConfig(epochs=1, lr=0.05), teacher=teacher,
               test=data, progress=False, features=kd.FeatureTerm((("4", "4"),)))
    assert len(h.step_loss) == 4 and 0 <= h.test_acc <= 1


def test_train_or_load_keys_the_feature_term():
    data = images()
    teacher = initial_model(cnn, 5)
    cfg = kd.FitConfig(epochs=1, lr=0.05)
    run = lambda term: kd.train_or_load(cnn, data, cfg, teacher=teacher, name="s", progress=False,
                                        verbose=False, features=term)[1]
    assert not run(kd.FeatureTerm((("4", "4"),))).from_cache
    assert run(kd.FeatureTerm((("4", "4"),))).from_cache
    assert not run(kd.FeatureTerm((("4", "4"),), weight=2.0)).from_cache
    assert not run(None).from_cache


def test_a_hint_trains_in_bfloat16_autocast():
    data = images()
    teacher = initial_model(lambda: cnn(width=6), 5)
    h = kd.fit(initial_model(cnn, 0), data, kd.FitConfig(epochs=1, lr=0.05, precision="bf16"),
               teacher=teacher, progress=False, features=kd.FeatureTerm((("4", "4"),)))
    assert all(torch.isfinite(torch.tensor(h.step_loss)))


def test_features_need_the_teacher_to_see_the_students_view():
    data = images()
    cfg = kd.FitConfig(epochs=1, augment=True, teacher_view="independent")
    with pytest.raises(ValueError, match="features needs teacher_view='same'"):
        kd.fit(initial_model(cnn, 0), data, cfg, teacher=initial_model(cnn, 5), progress=False,
               features=kd.FeatureTerm((("4", "4"),)))


def test_attention_transfer_refuses_features_without_space():
    with pytest.raises(ValueError, match=r"feature maps \(C, H, W\)"):
        FeatureLoss(kd.FeatureTerm((("7", "7"),), kind="attention"), cnn(), cnn(), (1, 16, 16))


def test_reading_a_loaders_input_shape_draws_no_random_number():
    from kdlib.train import input_shape
    data = images()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data.x_train, data.y_train),
                                         batch_size=16, shuffle=True)
    state = torch.get_rng_state()
    assert input_shape(loader) == (1, 16, 16)
    assert torch.equal(state, torch.get_rng_state())
