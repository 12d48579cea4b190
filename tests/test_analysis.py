"""kdlib.analysis against hand-worked cases."""
import pytest
import torch

import kdlib as kd
from kdlib import analysis


def test_class_similarity_averages_soft_targets_per_true_class():
    logits = torch.tensor([[2.0, 0.0, 0.0], [4.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.0, 0.0, 5.0]])
    labels = torch.tensor([0, 0, 1, 2])
    S = analysis.class_similarity(logits, labels, T=2.0)
    p = kd.softmax_t(logits, 2.0)
    torch.testing.assert_close(S[0], (p[0] + p[1]) / 2)
    torch.testing.assert_close(S[2], p[3])
    torch.testing.assert_close(S.sum(1), torch.ones(3))


def test_class_similarity_needs_every_class():
    with pytest.raises(ValueError, match=r"missing \[1\]"):
        analysis.class_similarity(torch.zeros(2, 3), torch.tensor([0, 2]))


def test_lookalike_picks_the_correct_example_closest_to_the_other_class():
    logits = torch.tensor([[5.0, 0.0, 1.0], [5.0, 0.0, 4.0], [1.0, 0.0, 6.0], [5.0, 3.0, 0.0]])
    labels = torch.tensor([0, 0, 0, 0])  # example 2 is misclassified: never chosen
    assert analysis.lookalike(logits, labels, 0, 2) == 1
    assert analysis.lookalikes(logits, labels, [(0, 2), (0, 1)]) == [1, 3]


def test_lookalike_rejects_bad_classes_and_hopeless_teachers():
    logits = torch.tensor([[0.0, 1.0]])
    with pytest.raises(ValueError, match=r"other_class must be in \[0, 1\]"):
        analysis.lookalike(logits, torch.tensor([1]), 1, 2)
    with pytest.raises(ValueError, match="no example of class 0"):
        analysis.lookalike(logits, torch.tensor([0]), 0, 1)


def test_lookalike_with_min_confidence_skips_near_ties():
    logits = torch.tensor([[5.0, 0.0, 4.9], [5.0, 0.0, 1.0], [5.0, 0.0, 0.0]])
    labels = torch.tensor([0, 0, 0])
    assert analysis.lookalike(logits, labels, 0, 2) == 0
    assert analysis.lookalike(logits, labels, 0, 2, min_confidence=0.9) == 1
    with pytest.raises(ValueError, match="with confidence >= 0.999"):
        analysis.lookalike(logits, labels, 0, 1, min_confidence=0.999)
    with pytest.raises(ValueError, match=r"min_confidence must be in \[0, 1\)"):
        analysis.lookalike(logits, labels, 0, 1, min_confidence=1.0)


# ------------------------------------------------ soft_gradient_norms
def _random_batch(B=8, C=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 3 * torch.randn(B, C, generator=g), 3 * torch.randn(B, C, generator=g), torch.randint(0, C, (B,), generator=g)


def test_soft_gradient_norms_match_the_closed_form_gradient():
    z, v, y = _random_batch()
    Ts = [1.0, 2.0, 5.0, 20.0]
    with_T2, without_T2 = analysis.soft_gradient_norms(z, v, Ts)
    assert with_T2.shape == without_T2.shape == (4,)
    for k, T in enumerate(Ts):
        # loss_gradient with alpha = 1 is the soft term with its T^2: T (q^T - p^T) / B
        closed = kd.loss_gradient(z, v, y, T=T, alpha=1.0)
        torch.testing.assert_close(with_T2[k], closed.norm())
        q, p = kd.softmax_t(z, T), kd.softmax_t(v, T)
        torch.testing.assert_close(without_T2[k], ((q - p) / (T * 8)).norm())


def test_soft_gradient_norms_fall_like_one_over_T_squared_without_the_factor():
    z, v, _ = _random_batch()
    with_T2, without_T2 = analysis.soft_gradient_norms(z, v, [10.0, 20.0, 40.0])
    assert abs(without_T2[0] / without_T2[1] - 4) < 0.2 and abs(without_T2[1] / without_T2[2] - 4) < 0.1
    assert with_T2.max() < 1.1 * with_T2.min()


def test_soft_gradient_norms_leave_the_inputs_without_gradient():
    z, v, _ = _random_batch()
    z.requires_grad_()
    analysis.soft_gradient_norms(z, v, [2.0])
    assert z.grad is None


def test_soft_gradient_norms_reject_bad_temperatures_and_shapes():
    z, v, _ = _random_batch()
    with pytest.raises(ValueError, match="Ts must hold at least one temperature"):
        analysis.soft_gradient_norms(z, v, [])
    with pytest.raises(ValueError, match=r"Ts\[1\] must be finite and > 0"):
        analysis.soft_gradient_norms(z, v, [1.0, 0.0])
    with pytest.raises(ValueError, match="teacher_logits must have the student's shape"):
        analysis.soft_gradient_norms(z, v[:, :5], [1.0])


def test_lookalike_can_admit_misclassified_examples_for_an_untrained_teacher():
    logits = torch.tensor([[0.0, 2.0], [0.0, 1.0]])  # both labelled 0, both classified as 1
    labels = torch.tensor([0, 0])
    with pytest.raises(ValueError, match="classified correctly"):
        kd.analysis.lookalike(logits, labels, 0, 1)
    assert kd.analysis.lookalike(logits, labels, 0, 1, correct_only=False) == 0  # the larger p_1 / p_0


def test_copied_mistakes_counts_the_teachers_wrong_answers_the_student_repeats():
    y = torch.tensor([0, 1, 2, 0, 1])
    teacher = torch.nn.functional.one_hot(torch.tensor([0, 2, 1, 1, 1]), 3).float()  # wrong at 1, 2, 3
    student = torch.nn.functional.one_hot(torch.tensor([0, 2, 2, 2, 0]), 3).float()  # repeats 1 only
    assert analysis.copied_mistakes(student, teacher, y) == pytest.approx(1 / 3)
    assert analysis.copied_mistakes(teacher, teacher, y) == 1.0


def test_copied_mistakes_rejects_a_perfect_teacher_and_mismatched_shapes():
    y = torch.tensor([0, 1])
    right = torch.nn.functional.one_hot(y, 3).float()
    with pytest.raises(ValueError, match="no mistake"):
        analysis.copied_mistakes(right, right, y)
    with pytest.raises(ValueError, match="same shape"):
        analysis.copied_mistakes(right[:, :2], right, y)


@pytest.mark.parametrize("hard", [False, True])
def test_teacher_share_splits_the_losss_own_gradient(hard):
    torch.manual_seed(0)
    z, v, y = torch.randn(16, 5, requires_grad=True), 3 * torch.randn(16, 5), torch.randint(0, 5, (16,))
    T, alpha = 3.0, 0.3
    loss = (kd.hard_distillation_loss(z, v, y, alpha=alpha) if hard
            else kd.distillation_loss(z, v, y, T=T, alpha=alpha))
    g, = torch.autograd.grad(loss, z)
    # the two parts add up to the loss's gradient (times the batch: the loss is a batch mean)
    q = torch.softmax(z.detach(), 1)
    target = torch.nn.functional.one_hot(v.argmax(1), 5) if hard else None
    t_part = (alpha * (q - target) if hard
              else alpha * T * (torch.softmax(z.detach() / T, 1) - torch.softmax(v / T, 1)))
    l_part = (1 - alpha) * (q - torch.nn.functional.one_hot(y, 5))
    torch.testing.assert_close(16 * g, t_part + l_part, atol=1e-5, rtol=1e-4)
    expected = (t_part.norm(dim=1) / (t_part.norm(dim=1) + l_part.norm(dim=1))).mean().item()
    assert analysis.teacher_share(z, v, y, T, alpha, hard=hard) == pytest.approx(expected, rel=1e-5)


def test_teacher_share_is_zero_without_the_teacher_and_one_without_the_labels():
    torch.manual_seed(1)
    z, v, y = torch.randn(8, 4), torch.randn(8, 4), torch.randint(0, 4, (8,))
    assert analysis.teacher_share(z, v, y, 2.0, 0.0) == 0.0
    assert analysis.teacher_share(z, v, y, 2.0, 1.0) == 1.0
    with pytest.raises(ValueError, match="alpha"):
        analysis.teacher_share(z, v, y, 2.0, 1.5)
    with pytest.raises(ValueError, match="T"):
        analysis.teacher_share(z, v, y, 0.0, 0.5)


def _share_by_autograd(z, v, y, T, alpha, hard):
    """Each example's teacher share from autograd: the gradient of the loss without its label term
    (alpha = 1) and of the label term alone (alpha = 0), per example, weighted as in the loss."""
    def grad(loss_alpha, row):
        zi = z[row:row + 1].clone().requires_grad_()
        loss = (kd.hard_distillation_loss(zi, v[row:row + 1], y[row:row + 1], alpha=loss_alpha) if hard
                else kd.distillation_loss(zi, v[row:row + 1], y[row:row + 1], T=T, alpha=loss_alpha))
        return torch.autograd.grad(loss, zi)[0]
    shares = []
    for row in range(len(z)):
        t, l = alpha * grad(1.0, row).norm(), (1 - alpha) * grad(0.0, row).norm()
        shares.append((t / (t + l)).item())
    return torch.tensor(shares, dtype=torch.float64)


@pytest.mark.parametrize("hard", [False, True])
def test_teacher_share_with_a_mask_averages_only_the_masked_examples(hard):
    torch.manual_seed(2)
    z, v = torch.randn(12, 4, dtype=torch.float64), 3 * torch.randn(12, 4, dtype=torch.float64)
    y = v.argmax(1).clone()
    y[:5] = (y[:5] + 1) % 4  # the teacher's arg-max differs from the label on the first five
    differs = v.argmax(1) != y
    per_example = _share_by_autograd(z, v, y, 3.0, 0.3, hard)
    share = analysis.teacher_share(z, v, y, 3.0, 0.3, hard=hard, mask=differs)
    assert share == pytest.approx(per_example[:5].mean().item(), rel=1e-9)
    assert analysis.teacher_share(z, v, y, 3.0, 0.3, hard=hard) == pytest.approx(per_example.mean().item(),
                                                                                 rel=1e-9)


def test_hard_teacher_share_is_alpha_wherever_the_teachers_arg_max_is_the_label():
    torch.manual_seed(3)
    z, v = torch.randn(10, 5), 2 * torch.randn(10, 5)
    y = v.argmax(1)
    y[:3] = (y[:3] + 2) % 5
    agrees = v.argmax(1) == y
    assert analysis.teacher_share(z, v, y, 1.0, 0.5, hard=True, mask=agrees) == pytest.approx(0.5, abs=1e-12)
    assert analysis.teacher_share(z, v, y, 1.0, 0.2, hard=True, mask=agrees) == pytest.approx(0.2, abs=1e-12)
    # by hand on one relabelled example: q = (1/2, 1/2), teacher says class 1, label class 0:
    # |q - e_1| = |q - e_0| = 1/sqrt(2), so the share is alpha again; with q = (0.9, 0.1) it is not
    z1, v1, y1 = torch.log(torch.tensor([[0.9, 0.1]])), torch.tensor([[0.0, 1.0]]), torch.tensor([0])
    t, l = 0.5 * torch.tensor([0.9, -0.9]).norm(), 0.5 * torch.tensor([0.1, 0.1]).norm()
    assert analysis.teacher_share(z1, v1, y1, 1.0, 0.5, hard=True) == pytest.approx((t / (t + l)).item(), rel=1e-6)


def test_teacher_share_rejects_a_wrong_or_empty_mask():
    z, v, y = torch.zeros(4, 3), torch.zeros(4, 3), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="bool tensor of shape"):
        analysis.teacher_share(z, v, y, 2.0, 0.5, mask=torch.ones(4))
    with pytest.raises(ValueError, match="bool tensor of shape"):
        analysis.teacher_share(z, v, y, 2.0, 0.5, mask=torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="selects no example"):
        analysis.teacher_share(z, v, y, 2.0, 0.5, mask=torch.zeros(4, dtype=torch.bool))


# ------------------------------------------------ student_report
def _tiny_data(seed=0):
    g = torch.Generator().manual_seed(seed)
    x_train, x_test = torch.randn(40, 6, generator=g), torch.randn(30, 6, generator=g)
    y_train, y_test = torch.randint(0, 3, (40,), generator=g), torch.randint(0, 3, (30,), generator=g)
    return kd.Data("tiny", x_train, y_train, x_test, y_test, ["a", "b", "c"], "test")


def test_initial_model_is_the_model_train_or_load_starts_from(monkeypatch):
    from kdlib import train
    started = []

    def no_training(model, data, cfg, **kwargs):  # record the weights fit would start from
        started.append({k: t.clone() for k, t in model.state_dict().items()})
        return kd.History(test_acc=0.0, test_errors=0)

    monkeypatch.setattr(train, "fit", no_training)
    make = lambda: torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    kd.train_or_load(make, _tiny_data(), kd.FitConfig(epochs=1, seed=7), cache=False, verbose=False)
    torch.manual_seed(123)  # whatever the global state before, the seed decides
    mine = kd.train.initial_model(make, 7).state_dict()
    assert started[0].keys() == mine.keys()
    assert all(torch.equal(started[0][k], mine[k]) for k in mine)
    assert not torch.equal(kd.train.initial_model(make, 8).state_dict()["0.weight"], mine["0.weight"])


def test_student_report_matches_its_definitions():
    data = _tiny_data()
    make = lambda: torch.nn.Linear(6, 3)
    teacher = kd.train.initial_model(make, 100)
    students = [kd.train.initial_model(make, s) for s in (1, 2)]
    hists = [kd.History(step_acc=[0.1, 0.2, 0.3, 0.5, 0.7, 0.9], epoch_loss=[1.0, 0.5]),  # 3 steps per epoch
             kd.History(step_acc=[0.4, 0.4, 0.6, 0.6], epoch_loss=[1.0, 0.5])]           # 2 steps per epoch
    runs = list(zip(students, hists))
    with torch.no_grad():
        v, v_test = teacher(data.x_train), teacher(data.x_test)
        z_test = [s(data.x_test) for s in students]
    fit = ((0.5 + 0.7 + 0.9) / 3 + (0.6 + 0.6) / 2) / 2
    agree = sum((z.argmax(1) == v_test.argmax(1)).double().mean().item() for z in z_test) / 2
    copied = sum(analysis.copied_mistakes(z, v_test, data.y_test) for z in z_test) / 2

    plain = analysis.student_report(runs, data, teacher)
    assert plain.keys() == {"fit", "agree", "copied"}
    assert plain["fit"] == pytest.approx(fit) and plain["agree"] == pytest.approx(agree)
    assert plain["copied"] == pytest.approx(copied)

    cfg = kd.FitConfig(T=3.0, alpha=0.5, hard_distillation=True)
    row = analysis.student_report(runs, data, teacher, cfg, make_student=make, seeds=(1, 2))
    differs = v.argmax(1) != data.y_train
    assert differs.any() and not differs.all()
    with torch.no_grad():
        z = [s(data.x_train) for s in students]
    share = lambda mask: sum(analysis.teacher_share(zi, v, data.y_train, 3.0, 0.5, hard=True, mask=mask)
                             for zi in z) / 2
    assert row["end"] == pytest.approx(share(None)) and row["end_relabelled"] == pytest.approx(share(differs))
    # the students above are their own first weights: start and end agree
    assert row["start"] == pytest.approx(row["end"]) and row["start_relabelled"] == pytest.approx(
        row["end_relabelled"])
    text = analysis.format_reports({"labels": plain, "hard": row}, prefix="net, ")
    assert "net, labels" in text and "only where its arg-max is not the label" in text
    assert text.splitlines()[-1].startswith("net, hard")
    with pytest.raises(ValueError, match="one seed per run"):
        analysis.student_report(runs, data, teacher, cfg, make_student=make, seeds=(1,))


def test_ensemble_accuracy_takes_the_arg_max_of_the_mean_probability():
    from torch import nn
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 3, (50,), generator=torch.Generator().manual_seed(1))
    models = [nn.Linear(4, 3) for _ in range(3)]
    with torch.no_grad():
        probs = torch.stack([m(x).softmax(-1) for m in models]).mean(0)
    expected = (probs.argmax(-1) == y).double().mean().item()
    assert kd.analysis.ensemble_accuracy(models, x, y) == pytest.approx(expected)
    alone = (models[0](x).argmax(-1) == y).double().mean().item()
    assert kd.analysis.ensemble_accuracy(models[:1], x, y) == pytest.approx(alone)
    with pytest.raises(ValueError, match="at least one model"):
        kd.analysis.ensemble_accuracy([], x, y)
