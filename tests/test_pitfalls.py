"""kdlib.pitfalls: each buggy loss differs from kdlib's loss exactly as its docstring says."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdlib import distillation_loss
from kdlib.data import Data
from kdlib.pitfalls import (TrainModeTeacher, Variant, bind, keras_loss, log_target_missing_loss, mean_errors,
                            mean_reduction_loss, no_t2_loss, probs_as_input_loss, run_variant,
                            saved_tensor_bytes, soft_grad_norm, soft_target_noise, swapped_kl_loss)
from kdlib.train import FitConfig

B, C = 6, 10
# "mean" is the bug under test; PyTorch's own warning about it is expected here
pytestmark = pytest.mark.filterwarnings("ignore:reduction. 'mean' divides:UserWarning")


def logits():
    g = torch.Generator().manual_seed(0)
    return (3 * torch.randn(B, C, generator=g), 3 * torch.randn(B, C, generator=g),
            torch.randint(0, C, (B,), generator=g))


def soft(T):
    z, v, y = logits()
    return distillation_loss(z, v, y, T=T, alpha=1.0)


@pytest.mark.parametrize("T", [1.0, 4.0, 20.0])
def test_mean_reduction_is_the_true_soft_term_over_the_number_of_classes(T):
    z, v, y = logits()
    assert torch.allclose(mean_reduction_loss(z, v, y, T=T, alpha=1.0), soft(T) / C, atol=1e-6)


@pytest.mark.parametrize("T", [1.0, 4.0, 20.0])
def test_no_t2_is_the_true_soft_term_over_t_squared(T):
    z, v, y = logits()
    assert torch.allclose(no_t2_loss(z, v, y, T=T, alpha=1.0), soft(T) / T**2, atol=1e-6)


def test_no_t2_gradient_shrinks_as_one_over_t_squared():
    z, v, y = logits()
    for T in (2.0, 8.0):
        right = soft_grad_norm(lambda a, b, c: distillation_loss(a, b, c, T=T, alpha=1.0), z, v, y)
        wrong = soft_grad_norm(bind(no_t2_loss, T=T, alpha=1.0), z, v, y)
        assert wrong == pytest.approx(right / T**2, rel=1e-5)


def test_buggy_losses_keep_the_hard_term_unchanged():
    z, v, y = logits()
    for loss in (mean_reduction_loss, no_t2_loss, swapped_kl_loss, probs_as_input_loss):
        assert torch.allclose(loss(z, v, y, T=4.0, alpha=0.0), F.cross_entropy(z, y))


def test_swapped_arguments_give_the_reverse_kl_not_the_loss():
    z, v, y = logits()
    T = 4.0
    log_q, log_p = F.log_softmax(z / T, 1), F.log_softmax(v / T, 1)
    reverse = T**2 * (log_q.exp() * (log_q - log_p)).sum(1).mean()
    got = swapped_kl_loss(z, v, y, T=T, alpha=1.0)
    assert torch.allclose(got, reverse, atol=1e-5)
    assert not torch.allclose(got, soft(T), atol=1e-3)


def test_probabilities_as_input_can_be_negative_and_differ():
    z, v, y = logits()
    T = 4.0
    p, q = F.softmax(v / T, 1), F.softmax(z / T, 1)
    expected = T**2 * (p * (p.log() - q)).sum(1).mean()
    got = probs_as_input_loss(z, v, y, T=T, alpha=1.0)
    assert torch.allclose(got, expected, atol=1e-5)
    assert got < 0 < soft(T)  # entropy-like term minus p.q: negative for these logits


def test_log_target_missing_gives_nan():
    z, v, y = logits()
    assert torch.isnan(log_target_missing_loss(z, v, y, T=4.0, alpha=1.0))


@pytest.mark.parametrize("alpha", [0.1, 0.5, 0.9])
def test_keras_alpha_is_kdlibs_one_minus_alpha(alpha):
    z, v, y = logits()
    assert torch.allclose(keras_loss(z, v, y, T=10.0, alpha=alpha),
                          distillation_loss(z, v, y, T=10.0, alpha=1 - alpha), atol=1e-6)


def test_bind_fixes_the_keywords():
    z, v, y = logits()
    assert torch.equal(bind(no_t2_loss, T=3.0, alpha=0.5)(z, v, y), no_t2_loss(z, v, y, T=3.0, alpha=0.5))


def net(dropout=0.5):
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 3))


def test_train_mode_teacher_ignores_eval_and_soft_target_noise_measures_it():
    teacher = net()
    wrapped = TrainModeTeacher(teacher).eval()
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
    wrapped(x)
    assert teacher.training
    noise = soft_target_noise(teacher.eval(), x, T=2.0)
    assert noise["kl"] > 0 and noise["abs_diff"] > 0 and not teacher.training
    clean = soft_target_noise(net(dropout=0.0), x, T=2.0)  # no dropout: train mode changes nothing
    assert clean["kl"] == pytest.approx(0, abs=1e-6) and clean["argmax_flips"] == 0


def test_saved_tensor_bytes_is_zero_under_no_grad():
    teacher = net().eval()
    x = torch.randn(8, 4)
    assert saved_tensor_bytes(lambda: teacher(x)) > 0
    with torch.no_grad():
        assert saved_tensor_bytes(lambda: teacher(x)) == 0
    teacher.requires_grad_(False)
    assert saved_tensor_bytes(lambda: teacher(x)) == 0  # no parameter and no input needs a gradient


def test_run_variant_trains_one_student_per_seed():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(60, 4, generator=g), torch.arange(60) % 3
    data = Data("toy", x, y, x[:30], y[:30], ["a", "b", "c"], "random")
    cfg = FitConfig(epochs=1, batch_size=20, eval_each_epoch=False)
    hists = run_variant(Variant("mean", bind(mean_reduction_loss, T=4.0, alpha=0.9)), data, cfg, net(),
                        seeds=(0, 1), make_student=lambda: net(0.0))
    assert len(hists) == 2 and all(h.test_errors >= 0 for h in hists)
    assert mean_errors(hists)[1] == [h.test_errors for h in hists]
