"""kdlib.losses against independent references: autograd, torch's own softmax/KL, hand-worked numbers."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import kdlib as kd

F64 = torch.float64  # exact comparisons; float32 is covered where it matters


def batch(B=4, C=10, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    z = scale * torch.randn(B, C, generator=g, dtype=F64)
    v = scale * torch.randn(B, C, generator=g, dtype=F64)
    y = torch.randint(0, C, (B,), generator=g)
    return z, v, y


# ------------------------------------------------------------------ softmax_t
def test_softmax_t_matches_torch_softmax_of_scaled_logits():
    z, _, _ = batch()
    for T in (0.5, 1.0, 4.0, 20.0):
        torch.testing.assert_close(kd.softmax_t(z, T), torch.softmax(z / T, dim=-1))


def test_softmax_t_worked_example_at_T1():
    z = torch.tensor([2.0, 10, 3, 0, 5, 4, 7, 9, 1, 2])
    expected = torch.exp(z) / torch.exp(z).sum()
    torch.testing.assert_close(kd.softmax_t(z), expected)
    assert round(kd.softmax_t(z)[1].item(), 4) == 0.7000


def test_softmax_t_is_stable_for_huge_logits_and_tiny_T():
    z = torch.tensor([1e30, 1e30 - 1e25, -1e30, 0.0], dtype=torch.float32)
    q = kd.softmax_t(z, T=1e-3)
    assert torch.isfinite(q).all()
    torch.testing.assert_close(q, torch.tensor([1.0, 0, 0, 0]))


def test_softmax_t_tends_to_uniform_for_large_T_and_argmax_for_small_T():
    z = torch.tensor([-1.0, 0, 4, 3])
    torch.testing.assert_close(kd.softmax_t(z, 1e6), torch.full((4,), 0.25), atol=1e-5, rtol=0)
    torch.testing.assert_close(kd.softmax_t(z, 1e-3), torch.tensor([0.0, 0, 1, 0]))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e4, 1e4), min_size=1, max_size=20), st.floats(1e-3, 1e3))
def test_softmax_t_sums_to_one_and_is_nonnegative(logits, T):
    q = kd.softmax_t(torch.tensor(logits, dtype=F64), T)
    assert (q >= 0).all()
    assert math.isclose(q.sum().item(), 1.0, rel_tol=1e-9)


def test_soft_targets_do_not_carry_gradient_to_the_teacher():
    v = torch.randn(3, 5, dtype=F64, requires_grad=True)
    p = kd.soft_targets(v, 2.0)
    assert not p.requires_grad
    torch.testing.assert_close(p, torch.softmax(v.detach() / 2.0, dim=-1))


# ------------------------------------------------------------------ mixed_target
def test_mixed_target_is_alpha_soft_plus_one_minus_alpha_onehot():
    _, v, y = batch()
    t = kd.mixed_target(v, y, alpha=0.3, T=2.0)
    expected = 0.3 * torch.softmax(v / 2.0, -1) + 0.7 * F.one_hot(y, 10).to(F64)
    torch.testing.assert_close(t, expected)
    torch.testing.assert_close(t.sum(-1), torch.ones(4, dtype=F64))


def test_mixed_target_at_alpha_bounds_is_onehot_or_soft():
    _, v, y = batch()
    torch.testing.assert_close(kd.mixed_target(v, y, 0.0), F.one_hot(y, 10).to(F64))
    torch.testing.assert_close(kd.mixed_target(v, y, 1.0, T=3.0), torch.softmax(v / 3.0, -1))


# ------------------------------------------------------------------ the loss
def reference_loss(z, v, y, T, alpha):
    """Written independently: torch's kl_div on probabilities, summed over classes, averaged over batch."""
    p = torch.softmax(v / T, -1)
    kl = (p * (p.log() - torch.log_softmax(z / T, -1))).sum(-1).mean()
    return alpha * T * T * kl + (1 - alpha) * F.cross_entropy(z, y)


@pytest.mark.parametrize("T,alpha", [(1.0, 0.5), (4.0, 0.9), (20.0, 0.9), (0.5, 0.3), (2.0, 0.0), (3.0, 1.0)])
def test_distillation_loss_matches_independent_formula(T, alpha):
    z, v, y = batch()
    torch.testing.assert_close(kd.distillation_loss(z, v, y, T=T, alpha=alpha), reference_loss(z, v, y, T, alpha))


def test_distillation_loss_parts_add_up():
    z, v, y = batch()
    total, soft, hard = kd.distillation_loss(z, v, y, T=5.0, alpha=0.7, return_parts=True)
    torch.testing.assert_close(total, 0.7 * soft + 0.3 * hard)
    torch.testing.assert_close(hard, F.cross_entropy(z, y))
    torch.testing.assert_close(soft, 25.0 * F.kl_div(torch.log_softmax(z / 5, -1), torch.softmax(v / 5, -1),
                                                     reduction="batchmean"))


def test_kl_term_is_batchmean_not_mean_over_classes():
    z, v, y = batch(C=100)
    soft = kd.distillation_loss(z, v, y, T=1.0, alpha=1.0)
    p = torch.softmax(v, -1)
    mean_over_all = (p * (p.log() - torch.log_softmax(z, -1))).mean()  # what reduction="mean" computes
    torch.testing.assert_close(soft, 100 * mean_over_all)


def test_loss_is_zero_when_student_equals_teacher_and_alpha_is_one():
    _, v, y = batch()
    assert kd.distillation_loss(v.clone(), v, y, T=4.0, alpha=1.0).abs().item() < 1e-12


def test_alpha_one_accepts_no_labels_and_other_alphas_need_them():
    z, v, y = batch()
    torch.testing.assert_close(kd.distillation_loss(z, v, None, alpha=1.0), kd.distillation_loss(z, v, y, alpha=1.0))
    with pytest.raises(ValueError, match="labels"):
        kd.distillation_loss(z, v, None, alpha=0.5)


def test_loss_does_not_backpropagate_into_teacher_logits():
    z, v, y = batch()
    z.requires_grad_(True)
    v.requires_grad_(True)
    kd.distillation_loss(z, v, y).backward()
    assert z.grad is not None and v.grad is None


def test_float32_loss_agrees_with_float64():
    z, v, y = batch()
    l64 = kd.distillation_loss(z, v, y, T=4.0, alpha=0.9)
    l32 = kd.distillation_loss(z.float(), v.float(), y, T=4.0, alpha=0.9)
    assert l32.dtype == torch.float32
    assert math.isclose(l32.item(), l64.item(), rel_tol=1e-5)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 6), st.integers(2, 12), st.floats(0.1, 50.0), st.floats(0.0, 1.0), st.integers(0, 10_000))
def test_loss_is_nonnegative_and_invariant_to_duplicating_the_batch(B, C, T, alpha, seed):
    z, v, y = batch(B, C, seed)
    loss = kd.distillation_loss(z, v, y, T=T, alpha=alpha)
    assert loss.item() >= -1e-12
    doubled = kd.distillation_loss(torch.cat([z, z]), torch.cat([v, v]), torch.cat([y, y]), T=T, alpha=alpha)
    assert math.isclose(doubled.item(), loss.item(), rel_tol=1e-9, abs_tol=1e-12)


def test_module_equals_function_and_shows_its_settings():
    z, v, y = batch()
    crit = kd.DistillationLoss(T=3.0, alpha=0.6)
    torch.testing.assert_close(crit(z, v, y), kd.distillation_loss(z, v, y, T=3.0, alpha=0.6))
    assert "T=3.0, alpha=0.6" in repr(crit)


# ------------------------------------------------------------------ the gradient
@settings(max_examples=50, deadline=None)
@given(st.integers(1, 6), st.integers(2, 12), st.floats(0.1, 50.0), st.floats(0.0, 1.0), st.integers(0, 10_000))
def test_loss_gradient_equals_autograd(B, C, T, alpha, seed):
    z, v, y = batch(B, C, seed)
    z.requires_grad_(True)
    kd.distillation_loss(z, v, y, T=T, alpha=alpha).backward()
    torch.testing.assert_close(kd.loss_gradient(z.detach(), v, y, T=T, alpha=alpha), z.grad)


def test_loss_gradient_rows_sum_to_zero():
    z, v, y = batch()
    g = kd.loss_gradient(z, v, y, T=4.0, alpha=0.9)
    torch.testing.assert_close(g.sum(-1), torch.zeros(4, dtype=F64))


def test_T_squared_keeps_soft_gradient_size_roughly_constant_across_T():
    z, v, y = batch(scale=1.0)
    norms = [kd.loss_gradient(z, v, y, T=T, alpha=1.0).norm().item() for T in (5.0, 10.0, 20.0)]
    # with T^2 the soft gradient tends to (z - v - mean) / (C B T^0): the three norms stay within 20%
    assert max(norms) / min(norms) < 1.2


def test_cross_entropy_on_mixed_target_has_the_mixed_loss_gradient_at_T1():
    z, v, y = batch()
    z.requires_grad_(True)
    t = kd.mixed_target(v, y, alpha=0.4, T=1.0)
    (-(t * torch.log_softmax(z, -1)).sum(-1).mean()).backward()
    torch.testing.assert_close(z.grad, kd.loss_gradient(z.detach(), v, y, T=1.0, alpha=0.4))


# ------------------------------------------------------------------ DeiT's hard distillation
def test_hard_distillation_loss_is_cross_entropy_on_teacher_argmax():
    z, v, y = batch()
    expected = 0.5 * F.cross_entropy(z, v.argmax(-1)) + 0.5 * F.cross_entropy(z, y)
    torch.testing.assert_close(kd.hard_distillation_loss(z, v, y), expected)
    torch.testing.assert_close(kd.hard_distillation_loss(z, v, y, alpha=1.0), F.cross_entropy(z, v.argmax(-1)))


def test_hard_distillation_loss_rejects_bad_input():
    z, v, y = batch()
    with pytest.raises(ValueError, match="alpha"):
        kd.hard_distillation_loss(z, v, y, alpha=2.0)
    with pytest.raises(ValueError, match="teacher_logits"):
        kd.hard_distillation_loss(z, v[:, :5], y)


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("T", ["4", None, True])
def test_non_numeric_temperature_is_a_type_error(T):
    z, _, _ = batch()
    with pytest.raises(TypeError, match="T must be a real number"):
        kd.softmax_t(z, T)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan")])
def test_alpha_outside_unit_interval_is_a_value_error(alpha):
    z, v, y = batch()
    for call in (lambda: kd.distillation_loss(z, v, y, alpha=alpha), lambda: kd.loss_gradient(z, v, y, alpha=alpha),
                 lambda: kd.DistillationLoss(alpha=alpha), lambda: kd.mixed_target(v, y, alpha)):
        with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
            call()


def test_student_teacher_shape_mismatch_is_a_value_error():
    z, v, y = batch()
    with pytest.raises(ValueError, match="teacher_logits must have the student's shape"):
        kd.distillation_loss(z, v[:, :9], y)
    with pytest.raises(ValueError, match="teacher_logits must have the student's shape"):
        kd.distillation_loss(z, v[:3], y)
    with pytest.raises(ValueError, match=r"student_logits must have shape \(B, C\)"):
        kd.distillation_loss(z[0], v[0], y[:1])


def test_empty_batch_is_a_value_error_naming_the_logits_not_a_nan():
    z, v, y = batch()
    for call in (lambda: kd.distillation_loss(z[:0], v[:0], y[:0]), lambda: kd.DistillationLoss()(z[:0], v[:0], y[:0]),
                 lambda: kd.hard_distillation_loss(z[:0], v[:0], y[:0]), lambda: kd.loss_gradient(z[:0], v[:0], y[:0])):
        with pytest.raises(ValueError, match=r"student_logits must hold at least one example \(B >= 1\)"):
            call()


def test_labels_out_of_range_wrong_dtype_or_shape_are_value_errors():
    z, v, y = batch()
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 9\]"):
        kd.distillation_loss(z, v, torch.tensor([0, 1, 2, 10]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 9\]"):
        kd.loss_gradient(z, v, torch.tensor([0, -1, 2, 3]))
    with pytest.raises(ValueError, match="integer class indices"):
        kd.distillation_loss(z, v, y.double())
    with pytest.raises(ValueError, match=r"labels must have shape \(4,\)"):
        kd.distillation_loss(z, v, y[:2])
    with pytest.raises(TypeError, match="labels must be a torch.Tensor"):
        kd.distillation_loss(z, v, [0, 1, 2, 3])


def test_labels_of_any_integer_dtype_are_accepted():
    z, v, y = batch()
    torch.testing.assert_close(kd.distillation_loss(z, v, y.int()), kd.distillation_loss(z, v, y))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_logits_are_value_errors(bad):
    z, v, y = batch()
    z_bad, v_bad = z.clone(), v.clone()
    z_bad[1, 2] = bad
    v_bad[0, 0] = bad
    with pytest.raises(ValueError, match="student_logits must be finite"):
        kd.distillation_loss(z_bad, v, y)
    if bad == -float("inf"):  # a teacher's class of probability 0 (a top-k table): allowed
        assert torch.isfinite(kd.distillation_loss(z, v_bad, y))
    else:
        with pytest.raises(ValueError, match=r"teacher_logits must hold no NaN or \+inf"):
            kd.distillation_loss(z, v_bad, y)
    with pytest.raises(ValueError, match="logits must be finite"):
        kd.softmax_t(z_bad)


def test_a_teacher_row_without_a_finite_logit_or_reverse_kl_against_minus_inf_is_refused():
    z, v, y = batch()
    v_bad = v.clone()
    v_bad[1] = -float("inf")
    with pytest.raises(ValueError, match="a finite logit in every row"):
        kd.distillation_loss(z, v_bad, y)
    v_bad[1] = v[1]
    v_bad[1, 0] = -float("inf")
    with pytest.raises(ValueError, match="KL\\(q \\|\\| p\\) is infinite"):
        kd.distillation_loss(z, v_bad, y, divergence="reverse")


def test_integer_logits_are_rejected():
    with pytest.raises(ValueError, match="floating-point"):
        kd.softmax_t(torch.tensor([1, 2, 3]))


def test_check_false_gives_the_same_loss_without_the_checks():
    z, v, y = batch()
    torch.testing.assert_close(kd.distillation_loss(z, v, y, check=False), kd.distillation_loss(z, v, y))
    torch.testing.assert_close(kd.hard_distillation_loss(z, v, y, check=False), kd.hard_distillation_loss(z, v, y))


# ------------------------------------------------------------------ the accepted range of T, and half precision
T_RANGE = [1e-6, 1e-3, 1.0, 1e3, 1e6]  # both ends of the accepted range [1e-6, 1e6], and between
HALF = [torch.float16, torch.bfloat16]


def extreme_batch(dtype, scale, B=4, C=10, seed=0):
    """Logits of the given dtype spread over (-scale, scale): scale * tanh of a normal draw."""
    z, v, y = batch(B, C, seed)
    z, v = scale * torch.tanh(z), scale * torch.tanh(v)  # spread over (-scale, scale)
    return z.to(dtype), v.to(dtype), y


@pytest.mark.parametrize("T", T_RANGE)
@pytest.mark.parametrize("dtype,scale", [(torch.float32, 3.0), (torch.float32, 1e4), (torch.float16, 3.0),
                                         (torch.float16, 6e4), (torch.bfloat16, 3.0), (torch.bfloat16, 1e30)])
def test_the_loss_and_its_gradient_are_finite_over_the_whole_accepted_range_of_T(T, dtype, scale):
    z, v, y = extreme_batch(dtype, scale)
    z.requires_grad_(True)
    total, soft, hard = kd.distillation_loss(z, v, y, T=T, alpha=0.5, return_parts=True)
    total.backward()
    for part in (total, soft, hard):
        assert part.dtype == torch.float32 and torch.isfinite(part) and part >= 0
    assert torch.isfinite(z.grad).all()
    z.grad = None
    kd.hard_distillation_loss(z, v, y).backward()
    assert torch.isfinite(z.grad).all()
    g = kd.loss_gradient(z.detach(), v, y, T=T, alpha=0.5)
    assert g.dtype == torch.float32 and torch.isfinite(g).all()


def limit_at_large_T(z, v):
    """T^2 KL(p^T || q^T) -> sum_i ((z_i - mean z) - (v_i - mean v))^2 / (2 C), batch mean, in float64."""
    d = z.double() - v.double()
    return ((d - d.mean(-1, keepdim=True)) ** 2).mean(-1).mean() / 2


def limit_at_small_T(z, v, T):
    """T^2 KL -> T (max z - z at the teacher's arg-max), batch mean, in float64 (no ties)."""
    z = z.double()
    return T * (z.amax(-1) - z.gather(-1, v.argmax(-1, keepdim=True)).squeeze(-1)).mean()


@pytest.mark.parametrize("T", [20.0, 100.0, 1e4])
def test_the_float32_soft_term_is_as_accurate_as_float32_allows_at_large_T(T):
    # float64 by the textbook formula is accurate at these T (to ~1e-16 T^2): the reference
    z, v, y = batch()
    ref = reference_loss(z, v, y, T, alpha=1.0)
    got = kd.distillation_loss(z.float(), v.float(), y, T=T, alpha=1.0)
    assert math.isclose(got.item(), ref.item(), rel_tol=1e-6)


def test_the_soft_term_meets_its_limits_at_the_ends_of_the_accepted_range():
    z, v, _ = batch()
    for dtype in (torch.float32, torch.float64):
        big = kd.distillation_loss(z.to(dtype), v.to(dtype), None, T=1e6, alpha=1.0)
        small = kd.distillation_loss(z.to(dtype), v.to(dtype), None, T=1e-6, alpha=1.0)
        # at T = 1e6 the limit is off by O(logits / T) ~ 1e-5 relative
        assert math.isclose(big.item(), limit_at_large_T(z, v).item(), rel_tol=1e-4)
        assert math.isclose(small.item(), limit_at_small_T(z, v, 1e-6).item(), rel_tol=1e-6)


@pytest.mark.parametrize("dtype", HALF)
def test_half_precision_logits_give_a_float32_loss(dtype):
    z, v, y = batch()
    z, v = z.to(dtype), v.to(dtype)
    z32, v32 = z.float(), v.float()  # the same numbers, upcast
    for T in (1e-3, 4.0):
        total, soft, hard = kd.distillation_loss(z, v, y, T=T, alpha=0.7, return_parts=True)
        assert total.dtype == soft.dtype == hard.dtype == torch.float32
        torch.testing.assert_close(total, kd.distillation_loss(z32, v32, y, T=T, alpha=0.7))
        g = kd.loss_gradient(z, v, y, T=T, alpha=0.7)
        assert g.dtype == torch.float32
        torch.testing.assert_close(g, kd.loss_gradient(z32, v32, y, T=T, alpha=0.7))


@pytest.mark.parametrize("T", [0.0, -1.0, float("nan"), float("inf"), 1e-38, 1e-7, 1.01e6, 1e20, 1e300])
def test_a_temperature_outside_the_range_is_a_value_error_naming_it(T):
    # not positive, not finite, or outside [1e-6, 1e6]: every function that takes T refuses it
    z, v, y = batch()
    for call in (lambda: kd.softmax_t(z, T), lambda: kd.distillation_loss(z, v, y, T=T),
                 lambda: kd.loss_gradient(z, v, y, T=T), lambda: kd.DistillationLoss(T=T),
                 lambda: kd.mixed_target(v, y, 0.5, T=T)):
        with pytest.raises(ValueError, match=r"^T must be finite and > 0, in \[1e-06, 1e\+06\], got "):
            call()
    with pytest.raises(ValueError, match=r"^Ts\[2\] must be .* in \[1e-06, 1e\+06\]"):
        kd.losses.check_temperature(T, name="Ts[2]")


def test_the_ends_of_the_range_are_accepted():
    z, v, y = batch()
    for T in (1e-6, 1e6):
        assert kd.losses.check_temperature(T) == T
        assert torch.isfinite(kd.distillation_loss(z, v, y, T=T))


# ------------------------------------------- sequences, ignored positions, divergences
def by_hand(z, v, y, T, alpha, divergence="forward", beta=None, ignore_index=-100):
    """The loss from its definition, position by position, in float64 numpy-free Python floats:
    an independent computation (no kdlib, no torch softmax or KL)."""
    rows_z, rows_v = z.reshape(-1, z.shape[-1]).tolist(), v.reshape(-1, v.shape[-1]).tolist()
    rows_y = [None] * len(rows_z) if y is None else y.reshape(-1).tolist()

    def softmax(row, t):
        top = max(row)
        e = [math.exp((r - top) / t) for r in row]
        return [x / sum(e) for x in e]

    def kl(a, b):
        return sum(ai * math.log(ai / bi) for ai, bi in zip(a, b) if ai > 0)

    soft, hard = [], []
    for zr, vr, yr in zip(rows_z, rows_v, rows_y):
        if yr == ignore_index:
            continue
        p, q = softmax(vr, T), softmax(zr, T)
        if divergence == "forward":
            d = kl(p, q)
        elif divergence == "reverse":
            d = kl(q, p)
        else:
            m = [beta * pi + (1 - beta) * qi for pi, qi in zip(p, q)]
            d = beta * kl(p, m) + (1 - beta) * kl(q, m)
        soft.append(T * T * d)
        if yr is not None:
            hard.append(-math.log(softmax(zr, 1.0)[yr]))
    s = sum(soft) / len(soft)
    h = sum(hard) / len(hard) if hard else 0.0
    return alpha * s + (1 - alpha) * h


def sequences(B=3, L=5, C=7, seed=0, scale=3.0, ignored=4):
    g = torch.Generator().manual_seed(seed)
    z = scale * torch.randn(B, L, C, generator=g, dtype=F64)
    v = scale * torch.randn(B, L, C, generator=g, dtype=F64)
    y = torch.randint(0, C, (B, L), generator=g)
    y.view(-1)[torch.randperm(B * L, generator=g)[:ignored]] = -100  # padding / prompt positions
    return z, v, y


@pytest.mark.parametrize("divergence,beta", [("forward", None), ("reverse", None), ("jsd", 0.5),
                                             ("jsd", 0.1), ("jsd", 0.9)])
@pytest.mark.parametrize("T,alpha", [(1.0, 0.5), (4.0, 0.9), (0.5, 0.3)])
def test_each_divergence_matches_its_definition_on_sequences_with_ignored_positions(divergence, beta, T, alpha):
    z, v, y = sequences()
    got = kd.distillation_loss(z, v, y, T=T, alpha=alpha, divergence=divergence, beta=beta)
    assert got.item() == pytest.approx(by_hand(z, v, y, T, alpha, divergence, beta), rel=1e-12)


def test_sequence_logits_give_the_loss_of_the_same_positions_as_a_batch():
    z, v, y = sequences(ignored=0)
    flat = kd.distillation_loss(z.reshape(-1, 7), v.reshape(-1, 7), y.reshape(-1), T=3.0, alpha=0.7)
    torch.testing.assert_close(kd.distillation_loss(z, v, y, T=3.0, alpha=0.7), flat)


def test_ignored_positions_change_neither_term_whatever_their_logits():
    z, v, y = sequences(ignored=5)
    parts = kd.distillation_loss(z, v, y, T=2.0, alpha=0.6, return_parts=True)
    z2, v2 = z.clone(), v.clone()
    z2[y == -100], v2[y == -100] = 1e4, -1e4  # anything at the ignored positions
    again = kd.distillation_loss(z2, v2, y, T=2.0, alpha=0.6, return_parts=True)
    for a, b in zip(parts, again):
        torch.testing.assert_close(a, b)
    kept = y != -100
    direct = kd.distillation_loss(z[kept], v[kept], y[kept], T=2.0, alpha=0.6, return_parts=True)
    for a, b in zip(parts, direct):
        torch.testing.assert_close(a, b)
    z.requires_grad_(True)
    kd.distillation_loss(z, v, y, T=2.0, alpha=0.6).backward()
    assert (z.grad[~kept] == 0).all() and (z.grad[kept] != 0).any()


def test_a_batch_of_classifier_logits_keeps_its_batch_mean():
    z, v, y = batch(B=6, C=10)
    log_q, log_p = F.log_softmax(z / 4.0, 1), F.log_softmax(v / 4.0, 1)
    expected = 0.9 * 16 * F.kl_div(log_q, log_p, log_target=True, reduction="batchmean") \
        + 0.1 * F.cross_entropy(z, y)
    torch.testing.assert_close(kd.distillation_loss(z, v, y, T=4.0, alpha=0.9), expected)


def test_jsd_tends_to_forward_kl_over_beta_and_to_reverse_kl_over_one_minus_beta():
    z, v, _ = batch(B=5, C=6)
    log_q, log_p = F.log_softmax(z, 1), F.log_softmax(v, 1)
    forward = kd.soft_divergence(log_p, log_q, "forward")
    reverse = kd.soft_divergence(log_p, log_q, "reverse")
    for limit, beta_at, exact in (("forward", lambda e: e, forward), ("reverse", lambda e: 1 - e, reverse)):
        gaps = [((kd.soft_divergence(log_p, log_q, "jsd", beta_at(eps)) / eps - exact) / exact).abs().max().item()
                for eps in (1e-4, 1e-6, 1e-8)]
        # the relative gap shrinks with eps (towards 100x a step), under 1e-3 at eps = 1e-8
        assert all(b < a / 5 for a, b in zip(gaps, gaps[1:])) and gaps[-1] < 1e-3, (limit, gaps)
    assert (forward != reverse).all()  # the two limits are two different divergences


@pytest.mark.parametrize("beta", [0.01, 0.3, 0.5, 0.9])
def test_jsd_is_at_most_the_entropy_of_beta_even_for_disjoint_distributions(beta):
    v = torch.tensor([[50.0, -50, -50], [0, 0, 0]], dtype=F64)
    z = torch.tensor([[-50.0, 50, -50], [3, -1, 0]], dtype=F64)
    d = kd.soft_divergence(F.log_softmax(v, 1), F.log_softmax(z, 1), "jsd", beta)
    entropy = -(beta * math.log(beta) + (1 - beta) * math.log(1 - beta))
    assert (d >= 0).all() and (d <= entropy + 1e-12).all()
    assert d[0].item() == pytest.approx(entropy, rel=1e-9)  # disjoint supports reach the bound


@pytest.mark.parametrize("divergence", kd.losses.DIVERGENCES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_each_divergence_and_its_gradient_stay_finite_at_extreme_logits_and_temperatures(divergence, dtype):
    big = 6e4 if dtype == torch.float16 else 1e4
    z = torch.tensor([[big, -big, 0.0], [0.0, 0.0, 0.0]], dtype=dtype, requires_grad=True)
    v = torch.tensor([[-big, big, 0.0], [big, 0.0, -big]], dtype=dtype)
    y = torch.tensor([0, 2])
    for T in (1e-6, 1.0, 1e6):
        loss = kd.distillation_loss(z, v, y, T=T, alpha=0.5, divergence=divergence)
        grad, = torch.autograd.grad(loss, z)
        assert torch.isfinite(loss) and torch.isfinite(grad).all(), (divergence, T)


@pytest.mark.parametrize("divergence,beta", [("forward", None), ("reverse", None), ("jsd", 0.5)])
def test_T_squared_keeps_each_divergences_gradient_the_same_size_at_high_T(divergence, beta):
    z, v, y = batch(B=8, C=10)
    norms = []
    for T in (50.0, 500.0):
        zz = z.clone().requires_grad_(True)
        kd.distillation_loss(zz, v, None, T=T, alpha=1.0, divergence=divergence, beta=beta).backward()
        norms.append(zz.grad.norm().item())
    assert norms[1] == pytest.approx(norms[0], rel=0.02)


def test_a_wrong_divergence_or_beta_is_refused_with_the_allowed_values():
    z, v, y = batch()
    with pytest.raises(ValueError, match="'forward', 'reverse', 'jsd'"):
        kd.distillation_loss(z, v, y, divergence="kl")
    for beta in (0.0, 1.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"beta must be in \(0, 1\)"):
            kd.distillation_loss(z, v, y, divergence="jsd", beta=beta)
    with pytest.raises(TypeError, match="beta must be a real number"):
        kd.distillation_loss(z, v, y, divergence="jsd", beta="0.5")
    with pytest.raises(ValueError, match="beta goes with divergence='jsd' only"):
        kd.distillation_loss(z, v, y, divergence="reverse", beta=0.5)
    assert kd.distillation_loss(z, v, y, divergence="jsd").item() == pytest.approx(
        kd.distillation_loss(z, v, y, divergence="jsd", beta=0.5).item())


def test_sequence_labels_are_checked_against_the_logits_and_the_ignore_index():
    z, v, y = sequences()
    with pytest.raises(ValueError, match=r"must have shape \(3, 5\)"):
        kd.distillation_loss(z, v, y[:, :4])
    bad = y.clone()
    bad[0, 0] = -1
    with pytest.raises(ValueError, match="ignore_index"):
        kd.distillation_loss(z, v, bad)
    with pytest.raises(ValueError, match="leave out every position"):
        kd.distillation_loss(z, v, torch.full_like(y, -100))
    other = y.clone()
    other[y == -100] = 7  # a custom ignore index, one past the classes
    torch.testing.assert_close(kd.distillation_loss(z, v, other, ignore_index=7),
                               kd.distillation_loss(z, v, y))
    with pytest.raises(ValueError, match=r"\(B, C\) or \(B, L, C\)"):
        kd.distillation_loss(z[0, 0], v[0, 0], y[0, 0])


def test_distillation_loss_module_passes_divergence_beta_and_ignore_index():
    z, v, y = sequences()
    crit = kd.DistillationLoss(T=2.0, alpha=0.8, divergence="jsd", beta=0.3)
    assert "divergence='jsd'" in repr(crit) and "beta=0.3" in repr(crit)
    torch.testing.assert_close(crit(z, v, y), kd.distillation_loss(z, v, y, T=2.0, alpha=0.8,
                                                                  divergence="jsd", beta=0.3))
