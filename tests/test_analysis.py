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
