"""Distillation pitfalls, as code: the buggy losses found in tutorials and libraries, and tools to measure them.

Symbols as in kdlib.losses: z student logits (B, C), v teacher logits (B, C), y labels (B,),
T the temperature, alpha the weight of the soft term (kdlib's convention). The correct loss is

    L = alpha * T^2 * KL(p^T || q^T) + (1 - alpha) * CE(onehot(y), q^1),   KL summed over C, mean over B.

Each buggy loss below takes (z, v, y, T, alpha) like kdlib.distillation_loss and differs from it in one
line; `bind` turns one into the loss_fn(z, v, y) that kdlib.fit accepts. The book's chapter 7 measures
what each one does to the loss, the gradient and the student's test accuracy.
"""
from __future__ import annotations

import copy
import statistics
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .data import Data
from .models import hinton_student
from .bench import step_seconds  # re-exported: chapter 7 times its steps with it
from .train import FitConfig, History, fit

__all__ = ["LossFn", "mean_reduction_loss", "no_t2_loss", "swapped_kl_loss", "probs_as_input_loss",
           "log_target_missing_loss", "keras_loss", "code_of", "bind", "soft_grad_norm", "TrainModeTeacher",
           "soft_target_noise", "saved_tensor_bytes", "step_seconds", "Variant", "run_variant", "mean_errors"]

LossFn = Callable[[Tensor, Tensor, Tensor], Tensor]


def _hard(z: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(z, y)


# ------------------------------------------------------------------ the buggy losses
def mean_reduction_loss(z: Tensor, v: Tensor, y: Tensor, T: float = 4.0, alpha: float = 0.9) -> Tensor:
    """Pitfall 1: nn.KLDivLoss()'s default reduction "mean" averages over B*C entries, not over B.

        soft = T^2 * sum_{b,i} p_bi (log p_bi - log q_bi) / (B * C)  =  correct soft / C
    Shapes: (B, C), (B, C), (B,) -> scalar.
    """
    kl = F.kl_div(F.log_softmax(z / T, dim=1), F.softmax(v.detach() / T, dim=1), reduction="mean")  # the bug
    return alpha * T**2 * kl + (1 - alpha) * _hard(z, y)


def no_t2_loss(z: Tensor, v: Tensor, y: Tensor, T: float = 4.0, alpha: float = 0.9) -> Tensor:
    """Pitfall 2: the T^2 factor forgotten; the soft term and its gradient shrink by 1/T^2.

        soft = KL(p^T || q^T)  =  correct soft / T^2
    Shapes: (B, C), (B, C), (B,) -> scalar.
    """
    kl = F.kl_div(F.log_softmax(z / T, dim=1), F.softmax(v.detach() / T, dim=1), reduction="batchmean")
    return alpha * kl + (1 - alpha) * _hard(z, y)  # the bug: no T**2


def swapped_kl_loss(z: Tensor, v: Tensor, y: Tensor, T: float = 4.0, alpha: float = 0.9) -> Tensor:
    """Pitfall 5a: F.kl_div's arguments swapped, the teacher as input and the student as target.

        soft = T^2 * KL(q^T || p^T) = T^2 * sum_i q_i (log q_i - log p_i) / B   (the reverse KL)
    Shapes: (B, C), (B, C), (B,) -> scalar.
    """
    kl = F.kl_div(F.log_softmax(v.detach() / T, dim=1), F.softmax(z / T, dim=1), reduction="batchmean")
    return alpha * T**2 * kl + (1 - alpha) * _hard(z, y)


def probs_as_input_loss(z: Tensor, v: Tensor, y: Tensor, T: float = 4.0, alpha: float = 0.9) -> Tensor:
    """Pitfall 5b: probabilities passed where F.kl_div expects log-probabilities (its input).

        soft = T^2 * sum_i p_i (log p_i - q_i) / B      (q_i where log q_i belongs: often negative)
    Its gradient with respect to q is -T^2 p / B: it rewards q for matching p's large entries only.
    Shapes: (B, C), (B, C), (B,) -> scalar.
    """
    kl = F.kl_div(F.softmax(z / T, dim=1), F.softmax(v.detach() / T, dim=1), reduction="batchmean")  # the bug
    return alpha * T**2 * kl + (1 - alpha) * _hard(z, y)


def log_target_missing_loss(z: Tensor, v: Tensor, y: Tensor, T: float = 4.0, alpha: float = 0.9) -> Tensor:
    """Pitfall 5c: the teacher's log-probabilities passed as target without log_target=True.

    F.kl_div then reads log p (<= 0) as probabilities and takes their logarithm: the loss is NaN.
    Shapes: (B, C), (B, C), (B,) -> scalar.
    """
    kl = F.kl_div(F.log_softmax(z / T, dim=1), F.log_softmax(v.detach() / T, dim=1), reduction="batchmean")
    return alpha * T**2 * kl + (1 - alpha) * _hard(z, y)


def keras_loss(z: Tensor, v: Tensor, y: Tensor, T: float = 10.0, alpha: float = 0.1) -> Tensor:
    """Pitfall 7 (a convention, not a bug): the Keras example's alpha weights the *hard* term.

        L = alpha * CE(onehot(y), q^1) + (1 - alpha) * T^2 * KL(p^T || q^T)
          = kdlib.distillation_loss(z, v, y, T, alpha=1 - alpha)
    Shapes: (B, C), (B, C), (B,) -> scalar.
    """
    kl = F.kl_div(F.log_softmax(z / T, dim=1), F.softmax(v.detach() / T, dim=1), reduction="batchmean")
    return alpha * _hard(z, y) + (1 - alpha) * T**2 * kl


def code_of(fn: Callable) -> str:
    """fn's source without its docstring: the lines a chapter shows."""
    import inspect
    src = inspect.getsource(fn)
    doc = fn.__doc__
    if doc:
        start = src.index('"""')
        src = src[:start].rstrip() + "\n" + src[src.index('"""', start + 3) + 3:].lstrip("\n")
    return src.rstrip()


def bind(loss: Callable[..., Tensor], **kwargs) -> LossFn:
    """loss with T, alpha (or other keywords) fixed: the loss_fn(z, v, y) that kdlib.fit takes."""
    def loss_fn(z: Tensor, v: Tensor, y: Tensor) -> Tensor:
        return loss(z, v, y, **kwargs)

    loss_fn.__name__ = f"{getattr(loss, '__name__', 'loss')}({', '.join(f'{k}={v}' for k, v in kwargs.items())})"
    return loss_fn


def soft_grad_norm(loss_fn: LossFn, z: Tensor, v: Tensor, y: Tensor) -> float:
    """The Frobenius norm of d loss_fn(z, v, y) / dz, by autograd. z, v: (B, C); y: (B,)."""
    z = z.detach().clone().requires_grad_(True)
    loss_fn(z, v, y).backward()
    return z.grad.norm().item()


# ------------------------------------------------------------------ the teacher's side
class TrainModeTeacher(nn.Module):
    """Pitfall 3: a teacher that stays in training mode whatever .eval() says (dropout stays on).

    Wraps teacher; forward puts it back in training mode, as a loop that forgot teacher.eval() would.
    x: (B, ...) -> logits (B, C).
    """

    def __init__(self, teacher: nn.Module):
        super().__init__()
        self.teacher = teacher

    def forward(self, x: Tensor) -> Tensor:
        self.teacher.train()
        return self.teacher(x)


@torch.no_grad()
def soft_target_noise(teacher: nn.Module, x: Tensor, T: float, draws: int = 5, seed: int = 0) -> Dict[str, float]:
    """How far a train-mode teacher's soft targets are from its eval-mode ones, on x (N, ...).

    Returns the mean over draws and images of KL(p_eval^T || p_train^T) (summed over classes),
    the mean absolute difference of the probabilities, and the fraction of images whose arg-max changes.
    The teacher's mode is restored.
    """
    was = teacher.training
    teacher.eval()
    p_eval = F.softmax(teacher(x) / T, dim=1)
    top = p_eval.argmax(1)
    torch.manual_seed(seed)
    teacher.train()
    kl, diff, flips = [], [], []
    for _ in range(draws):
        log_p_train = F.log_softmax(teacher(x) / T, dim=1)
        kl.append(F.kl_div(log_p_train, p_eval, reduction="batchmean").item())
        diff.append((log_p_train.exp() - p_eval).abs().mean().item())
        flips.append((log_p_train.argmax(1) != top).float().mean().item())
    teacher.train(was)
    return {"kl": statistics.mean(kl), "abs_diff": statistics.mean(diff), "argmax_flips": statistics.mean(flips)}


def saved_tensor_bytes(fn: Callable[[], Tensor], skip: Sequence[Tensor] = ()) -> int:
    """Bytes of the tensors autograd saves for the backward pass while fn() runs (0 under no_grad).

    Counted with torch.autograd.graph.saved_tensors_hooks; a tensor saved twice counts twice.
    skip: tensors that live anyway (a model's parameters): those saved are not counted, so the
    result is the extra memory held for the backward pass, mostly activations.
    """
    total = 0
    live = {t.data_ptr() for t in skip}

    def pack(t: Tensor) -> Tensor:
        nonlocal total
        if t.data_ptr() not in live:
            total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


# ------------------------------------------------------------------ the accuracy runs
@dataclass
class Variant:
    """One way to train the student: a loss_fn (None: kdlib's own loss, or scratch without a teacher)."""

    name: str
    loss_fn: Optional[LossFn] = None
    use_teacher: bool = True
    T: Optional[float] = None        # overrides cfg.T for kdlib's own loss
    alpha: Optional[float] = None    # overrides cfg.alpha for kdlib's own loss
    teacher_wrapper: Optional[Callable[[nn.Module], nn.Module]] = None  # e.g. TrainModeTeacher


def run_variant(variant: Variant, data: Data, cfg: FitConfig, teacher: nn.Module, seeds: Sequence[int],
                make_student: Callable[[], nn.Module] = hinton_student) -> List[History]:
    """Train one student per seed with the variant's loss; the same initial weights and batches per seed.

    torch.manual_seed(seed) before building the student, cfg.seed = seed. Returns one History per seed.
    """
    out = []
    for seed in seeds:
        c = replace(cfg, seed=seed, T=cfg.T if variant.T is None else variant.T,
                    alpha=cfg.alpha if variant.alpha is None else variant.alpha)
        t = None
        if variant.use_teacher:
            t = variant.teacher_wrapper(copy.deepcopy(teacher)) if variant.teacher_wrapper else teacher
        torch.manual_seed(seed)
        student = make_student().to(data.x_train.device)
        out.append(fit(student, data, c, teacher=t, loss_fn=variant.loss_fn, progress=False))
    return out


def mean_errors(histories: Sequence[History]) -> Tuple[float, List[int]]:
    """The mean test errors over seeds, and the errors per seed."""
    errs = [h.test_errors for h in histories]
    return statistics.mean(errs), errs
