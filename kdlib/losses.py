"""The distillation loss, with the math beside the code.

Symbols, as in the book:

    z      student logits, shape (B, C); (B, L, C) for a language model's L positions
    v      teacher logits, the same shape
    y      integer labels, shape (B,); (B, L), where -100 (ignore_index) marks a position left out
    T      temperature, 1e-6 <= T <= 1e6 (check_temperature)
    alpha  weight of the teacher's soft term, 0 <= alpha <= 1

    q^T = softmax(z / T)        the student's distribution at temperature T
    p^T = softmax(v / T)        the teacher's soft targets

    L = alpha * T^2 * KL(p^T || q^T)  +  (1 - alpha) * CE(onehot(y), q^1)

Both terms are averaged over the batch ("batchmean"): a sum over the C classes,
a mean over the B examples (over the positions not ignored, for sequences), so the
value does not depend on C. The KL divergence can be swapped for its reverse or a
generalised Jensen-Shannon divergence (distillation_loss's divergence=).

Convention: alpha weights the *soft* term everywhere in kdlib. Some write-ups let
alpha weight the hard term instead; that is the same family with alpha -> 1 - alpha.
"""
from __future__ import annotations

import math
from numbers import Real
from typing import NamedTuple, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "softmax_t",
    "log_softmax_t",
    "soft_targets",
    "mixed_target",
    "LossParts",
    "distillation_loss",
    "soft_divergence",
    "DIVERGENCES",
    "DistillationLoss",
    "loss_gradient",
    "hard_distillation_loss",
]


# ---------------------------------------------------------------- input checks
T_MIN, T_MAX = 1e-6, 1e6  # the temperatures accepted, wider than any useful one
IGNORE_INDEX = -100       # a label that leaves its position out (torch's convention; the defaults below)


def check_temperature(T: float, name: str = "T") -> float:
    """Return T as a float; raise unless it is a real number in [T_MIN, T_MAX] = [1e-6, 1e6].

    Inside that range the loss and its gradient are finite for float16, bfloat16, float32
    and float64 logits (distillation_loss takes the soft term in float64). Far beyond it
    T^2 KL is a rounding error times T^2 (NaN at T = 1e20 before the range), and nothing
    changes anyway: softmax(z / T) is numerically one-hot or uniform.
    """
    if isinstance(T, Tensor) and T.numel() == 1:
        T = T.item()
    if isinstance(T, bool) or not isinstance(T, Real):
        raise TypeError(f"{name} must be a real number > 0, got {type(T).__name__}")
    if not (T_MIN <= T <= T_MAX):  # also False for NaN
        raise ValueError(f"{name} must be finite and > 0, in [{T_MIN:g}, {T_MAX:g}], got {T}")
    return float(T)


def check_alpha(alpha: float, name: str = "alpha") -> float:
    """Return alpha as a float; raise unless 0 <= alpha <= 1."""
    if isinstance(alpha, Tensor) and alpha.numel() == 1:
        alpha = alpha.item()
    if isinstance(alpha, bool) or not isinstance(alpha, Real):
        raise TypeError(f"{name} must be a real number in [0, 1], got {type(alpha).__name__}")
    if not (0.0 <= alpha <= 1.0):  # also False for NaN
        raise ValueError(f"{name} must be in [0, 1], got {alpha}")
    return float(alpha)


def check_logits(x: Tensor, name: str, minus_inf: bool = False) -> Tensor:
    """Raise unless x is a floating-point tensor with at least one dimension and no NaN/inf; with
    minus_inf=True, -inf is allowed (a class with probability 0, as in a top-k table) as long as
    every row keeps a finite logit."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.ndim < 1 or x.shape[-1] < 1:
        raise ValueError(f"{name} must have a class dimension of size >= 1, got shape {tuple(x.shape)}")
    if minus_inf:
        if torch.isnan(x).any() or (x == float("inf")).any() or not torch.isfinite(x).any(-1).all():
            raise ValueError(f"{name} must hold no NaN or +inf, and a finite logit in every row "
                             f"(-inf is allowed: a class with probability 0)")
    elif not torch.isfinite(x).all():
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return x


def check_labels(labels: Tensor, batch: Union[int, Tuple[int, ...]], num_classes: int,
                 name: str = "labels", ignore_index: Optional[int] = None) -> Tensor:
    """Raise unless labels is an integer tensor of shape `batch` ((batch,) for an int) with values
    in [0, num_classes), or equal to ignore_index where that is given; return it as int64."""
    shape = (batch,) if isinstance(batch, int) else tuple(batch)
    if not isinstance(labels, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of integer class indices, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class indices (e.g. torch.int64), got dtype {labels.dtype}")
    if labels.shape != shape:
        what = f"({shape[0]},)" if len(shape) == 1 else str(shape)
        raise ValueError(f"{name} must have shape {what} to match the logits, got {tuple(labels.shape)}")
    kept = labels if ignore_index is None else labels[labels != ignore_index]
    if kept.numel() and (kept.min() < 0 or kept.max() >= num_classes):
        also = "" if ignore_index is None else f" (or {ignore_index}, ignore_index, to leave a position out)"
        raise ValueError(
            f"{name} must lie in [0, {num_classes - 1}]{also}, got values from "
            f"{kept.min().item()} to {kept.max().item()}")
    return labels.long()


def check_pair(student_logits: Tensor, teacher_logits: Tensor, sequences: bool = False) -> None:
    """Raise unless both logits are valid, 2-D (B, C) with B >= 1, and of the same shape; with
    sequences=True, (..., C) with at least two dimensions, e.g. (B, L, C)."""
    check_logits(student_logits, "student_logits")
    check_logits(teacher_logits, "teacher_logits", minus_inf=True)
    if student_logits.ndim != 2 and not (sequences and student_logits.ndim > 2):
        shape = "(B, C) or (B, L, C)" if sequences else "(B, C)"
        raise ValueError(f"student_logits must have shape {shape}, got {tuple(student_logits.shape)}")
    if len(student_logits) == 0:  # a mean over no examples is NaN
        raise ValueError(f"student_logits must hold at least one example (B >= 1), got shape "
                         f"{tuple(student_logits.shape)}: the loss of an empty batch is undefined")
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(
            f"teacher_logits must have the student's shape {tuple(student_logits.shape)}, "
            f"got {tuple(teacher_logits.shape)} (the same shape: same batch, same number of classes)")


# ------------------------------------------------------- softmax with temperature
def log_softmax_t(logits: Tensor, T: float = 1.0) -> Tensor:
    """log softmax(logits / T) over the last dimension.

    Shifting by the maximum *before* dividing by T keeps every exponent <= 0,
    so neither huge logits nor a tiny T can overflow:
        log q_i = (z_i - max z) / T - log sum_j exp((z_j - max z) / T)
    """
    return _log_softmax_t(check_logits(logits, "logits"), check_temperature(T))


def _log_softmax_t(logits: Tensor, T: float) -> Tensor:
    # unchecked: the public functions have validated their inputs once already
    return torch.log_softmax((logits - logits.amax(dim=-1, keepdim=True)) / T, dim=-1)


def _wide(x: Tensor) -> Tensor:
    """x in float64, where the device has it (Apple's MPS has not: float32 there)."""
    return x.float() if x.device.type == "mps" else x.double()


def _upcast(x: Tensor) -> Tensor:
    """float16/bfloat16 -> float32 (their range overflows at z / T); other dtypes unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def softmax_t(logits: Tensor, T: float = 1.0) -> Tensor:
    """Temperature softmax over the last dimension: q_i = exp(z_i / T) / sum_j exp(z_j / T).

    logits: (..., C). Returns probabilities of the same shape that sum to 1.
    T > 1 softens the distribution (T -> inf: uniform), T < 1 sharpens it (T -> 0: arg-max).
    """
    return log_softmax_t(logits, T).exp()


def soft_targets(teacher_logits: Tensor, T: float) -> Tensor:
    """The teacher's soft targets p^T = softmax(v / T); no gradient flows to the teacher.

    teacher_logits: (..., C). Returns (..., C).
    """
    return softmax_t(teacher_logits.detach(), T)


def mixed_target(teacher_logits: Tensor, labels: Tensor, alpha: float, T: float = 1.0) -> Tensor:
    """The mixture alpha * p^T + (1 - alpha) * onehot(y).

    teacher_logits: (B, C); labels: (B,) integers. Returns (B, C), each row summing to 1.
    At T = 1, cross entropy against this target has exactly the gradient of the mixed loss.
    """
    alpha = check_alpha(alpha)
    check_logits(teacher_logits, "teacher_logits")
    if teacher_logits.ndim != 2:
        raise ValueError(f"teacher_logits must have shape (B, C), got {tuple(teacher_logits.shape)}")
    B, C = teacher_logits.shape
    y = F.one_hot(check_labels(labels, B, C), C).to(teacher_logits.dtype)
    return alpha * soft_targets(teacher_logits, T) + (1 - alpha) * y


# ------------------------------------------------------------ the loss itself
class LossParts(NamedTuple):
    """The loss and its two terms before weighting: total = alpha * soft + (1 - alpha) * hard."""

    total: Tensor
    soft: Tensor  # T^2 * KL(p^T || q^T), batchmean
    hard: Tensor  # CE(onehot(y), q^1), mean over the batch


DIVERGENCES = ("forward", "reverse", "jsd")


def check_divergence(divergence: str, beta: Optional[float]) -> Optional[float]:
    """Raise unless divergence is one of DIVERGENCES and beta fits it; return beta as a float (0.5 by
    default for "jsd", None for the others, which take no beta)."""
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {', '.join(map(repr, DIVERGENCES))}, got {divergence!r}")
    if divergence != "jsd":
        if beta is not None:
            raise ValueError(f"beta goes with divergence='jsd' only, got beta={beta} with {divergence!r}")
        return None
    if beta is None:
        return 0.5
    if isinstance(beta, bool) or not isinstance(beta, Real):
        raise TypeError(f"beta must be a real number in (0, 1), got {type(beta).__name__}")
    if not (0.0 < beta < 1.0):  # also False for NaN
        raise ValueError(f"beta must be in (0, 1) for divergence='jsd', got {beta}: at 0 and 1 the "
                         f"generalised JSD is 0 for any two distributions; its limits (divided by beta, "
                         f"by 1 - beta) are divergence='forward' and divergence='reverse'")
    return float(beta)


def soft_divergence(log_p: Tensor, log_q: Tensor, divergence: str = "forward",
                    beta: Optional[float] = None) -> Tensor:
    """A divergence between the teacher's p and the student's q at each position: log-probabilities
    (..., C), (..., C) -> (...), a sum over the C classes.

        "forward"  KL(p || q) = sum_c p_c (log p_c - log q_c)    Hinton et al.'s: q must cover every
                                                                 class where p has mass
        "reverse"  KL(q || p) = sum_c q_c (log q_c - log p_c)    MiniLLM's (Gu et al., 2024): q may
                                                                 settle on one of p's modes
        "jsd"      beta KL(p || m) + (1 - beta) KL(q || m),  m = beta p + (1 - beta) q,  0 < beta < 1

    "jsd" is the generalised Jensen-Shannon divergence of GKD (Agarwal et al., 2024), beta the
    teacher's weight in the mixture m, as in TRL's GKDTrainer since trl PR #3043 (before it, TRL mixed
    beta * q + (1 - beta) * p: the same family with beta -> 1 - beta); beta = 0.5 is the symmetric JSD.
    It is at most the entropy of (beta, 1 - beta), log 2 at beta = 0.5. Its limits, as trl issue #6780
    untangled: JSD_beta / beta -> KL(p || q) as beta -> 0, and JSD_beta / (1 - beta) -> KL(q || p) as
    beta -> 1; at beta = 0 or 1 itself it is 0 for any p and q. TRL switches to the forward (beta = 0)
    and the reverse KL (beta = 1) there; kdlib asks for divergence="forward" or "reverse" instead.
    """
    beta = check_divergence(divergence, beta)
    p, q = log_p.exp(), log_q.exp()
    if divergence == "reverse":
        return (q * (log_q - log_p)).sum(-1)
    # 0 log 0 = 0: a teacher logit of -inf (a class outside a top-k table) adds nothing
    kl = lambda a, log_a, log_b: torch.where(a > 0, a * (log_a - log_b), 0.0).sum(-1)
    if divergence == "forward":
        return kl(p, log_p, log_q)
    # log m = log(beta p + (1 - beta) q), from the logs: no exp of a large number, no log of 0
    log_m = torch.logaddexp(log_p + math.log(beta), log_q + math.log1p(-beta))
    return beta * kl(p, log_p, log_m) + (1 - beta) * kl(q, log_q, log_m)


def distillation_loss(student_logits: Tensor, teacher_logits: Tensor,
                      labels: Optional[Tensor], T: float = 4.0, alpha: float = 0.9,
                      return_parts: bool = False, check: bool = True,
                      divergence: str = "forward", beta: Optional[float] = None,
                      ignore_index: int = -100):
    """Hinton et al.'s distillation loss, averaged over the batch.

        L = alpha * T^2 * KL(p^T || q^T) + (1 - alpha) * CE(onehot(y), q^1)

    student_logits z: (B, C), or (B, L, C) for a language model (any (..., C));
    teacher_logits v: the same shape, treated as constants (detached);
    labels y: z's shape without C, integers in [0, C), ignore_index where a position is left out
    of both terms (padding, a prompt); or None when alpha == 1 (soft targets only, every position).
    Each term is a mean over the positions kept: for (B, C), over the batch.
    T^2 keeps the soft term's gradient the same size at every T (it scales as 1/T^2).
    divergence: "forward" (the KL above), "reverse" or "jsd" with beta (soft_divergence);
    the T^2 is the same for each. Returns a scalar tensor, or LossParts(total, soft, hard) with
    return_parts=True. check=False skips the checks of the tensors (finite logits, labels in
    range), which cost a device synchronisation each: for a training loop that validated its data
    once (kdlib.fit does).
    """
    T, alpha = check_temperature(T), check_alpha(alpha)
    beta = check_divergence(divergence, beta)
    if check:
        check_pair(student_logits, teacher_logits, sequences=True)
        if divergence == "reverse" and torch.isinf(teacher_logits).any():
            raise ValueError("teacher_logits hold -inf (a class with probability 0), where KL(q || p) "
                             "is infinite: use divergence='forward' or 'jsd', or a top-k table with "
                             "tail='spread'")
    C = student_logits.shape[-1]
    # the loss's dtype: float32 for float16/bfloat16 logits, float64 for float64 ones
    dtype = torch.promote_types(torch.result_type(student_logits, teacher_logits), torch.float32)
    if labels is None and alpha != 1.0:
        raise ValueError(f"labels may be None only when alpha == 1 (soft targets "
                         f"only), got alpha={alpha}")
    if labels is not None and check:
        labels = check_labels(labels, student_logits.shape[:-1], C, ignore_index=ignore_index)
        if not (labels != ignore_index).any():
            raise ValueError(f"labels leave out every position (all are ignore_index, {ignore_index}): "
                             f"the loss over no position is undefined")
    keep = None if labels is None else (labels != ignore_index)  # (...,) the positions that count

    # soft term: the divergence at each position (summed over classes), mean over the positions
    # kept; in float64 (_wide), where z / T stays finite at T = 1e-6 and T^2 times the rounding of
    # the logs stays small at T = 1e6
    log_q = _log_softmax_t(_wide(student_logits), T)
    log_p = _log_softmax_t(_wide(teacher_logits.detach()), T)
    per_position = soft_divergence(log_p, log_q, divergence, beta)
    mean = per_position.mean() if keep is None else (
        (per_position * keep).sum() / keep.sum().clamp_min(1))
    soft = (T**2 * mean).to(dtype)

    # hard term: ordinary cross entropy at T = 1, over the positions kept
    if labels is None:
        hard = soft.new_zeros(())
    else:
        hard = F.cross_entropy(student_logits.reshape(-1, C).to(dtype), labels.reshape(-1),
                               ignore_index=ignore_index)

    total = alpha * soft + (1 - alpha) * hard
    return LossParts(total, soft, hard) if return_parts else total


class DistillationLoss(nn.Module):
    """distillation_loss as a module, for your own training loop.

    >>> criterion = DistillationLoss(T=4.0, alpha=0.9)
    >>> loss = criterion(student(x), teacher_logits, y)   # (B, C), (B, C), (B,) -> scalar
    """

    def __init__(self, T: float = 4.0, alpha: float = 0.9, divergence: str = "forward",
                 beta: Optional[float] = None, ignore_index: int = -100):
        super().__init__()
        self.T, self.alpha = check_temperature(T), check_alpha(alpha)
        self.divergence, self.beta = divergence, check_divergence(divergence, beta)
        self.ignore_index = ignore_index

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, labels: Optional[Tensor]) -> Tensor:
        return distillation_loss(student_logits, teacher_logits, labels, T=self.T, alpha=self.alpha,
                                 divergence=self.divergence, beta=self.beta, ignore_index=self.ignore_index)

    def extra_repr(self) -> str:
        extra = "" if self.divergence == "forward" else f", divergence={self.divergence!r}"
        return f"T={self.T}, alpha={self.alpha}" + extra + ("" if self.beta is None else f", beta={self.beta}")


def loss_gradient(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor,
                  T: float = 4.0, alpha: float = 0.9) -> Tensor:
    """The gradient of distillation_loss with respect to the student's logits, in closed form.

        dL/dz = [ alpha * T * (q^T - p^T) + (1 - alpha) * (q^1 - onehot(y)) ] / B

    (d KL(p||q^T)/dz = (q^T - p^T) / T, and the T^2 in front leaves one factor T.)
    Shapes: (B, C), (B, C), (B,) -> (B, C). Each row sums to zero.
    """
    T, alpha = check_temperature(T), check_alpha(alpha)
    check_pair(student_logits, teacher_logits)
    B, C = student_logits.shape
    student_logits, teacher_logits = _upcast(student_logits), _upcast(teacher_logits)  # float32
    y = F.one_hot(check_labels(labels, B, C), C).to(student_logits.dtype)
    soft = T * (_log_softmax_t(student_logits, T).exp() - _log_softmax_t(teacher_logits.detach(), T).exp())
    hard = _log_softmax_t(student_logits, 1.0).exp() - y
    return (alpha * soft + (1 - alpha) * hard) / B


def hard_distillation_loss(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor,
                           alpha: float = 0.5, check: bool = True,
                           ignore_index: int = -100) -> Tensor:
    """DeiT's hard-label distillation: cross entropy on the teacher's arg-max.

        L = alpha * CE(onehot(argmax v), q^1) + (1 - alpha) * CE(onehot(y), q^1)

    Shapes: (B, C), (B, C), (B,) -> scalar. DeiT uses alpha = 0.5. check: as in distillation_loss.
    A label equal to ignore_index leaves its example out of both terms.
    """
    alpha = check_alpha(alpha)
    if check:
        check_pair(student_logits, teacher_logits)
        labels = check_labels(labels, *student_logits.shape, ignore_index=ignore_index)
    teacher_labels = teacher_logits.detach().argmax(dim=-1)
    teacher_labels = teacher_labels.masked_fill(labels == ignore_index, ignore_index)
    return (alpha * F.cross_entropy(student_logits, teacher_labels, ignore_index=ignore_index)
            + (1 - alpha) * F.cross_entropy(student_logits, labels, ignore_index=ignore_index))
