"""Reading what a trained teacher knows (its look-alikes, its sense of which classes are similar), and what
reaches a student from it (the mistakes it copies, the teacher's share of its gradient)."""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .data import Data
from .losses import (check_alpha, check_labels, check_logits, check_pair, check_temperature, loss_gradient,
                     soft_divergence, softmax_t)
from .teacher import teacher_logits
from .train import FitConfig, History, initial_model

__all__ = ["ensemble_accuracy", "fit_unimodal", "top_k_mass", "class_similarity", "lookalike", "lookalikes", "soft_gradient_norms", "copied_mistakes",
           "teacher_share", "student_report", "format_reports"]


def class_similarity(logits: Tensor, labels: Tensor, T: float = 1.0) -> Tensor:
    """The teacher's soft targets averaged over each true class.

        S[a, b] = mean over examples x of class a of p^T_b(x)

    logits: (N, C); labels: (N,). Returns (C, C); row a sums to 1. A large S[a, b] off the
    diagonal says the teacher often sees something of b in an a. A class with no example is a ValueError.
    """
    check_logits(logits, "logits")
    N, C = logits.shape
    y = check_labels(labels, N, C)
    counts = torch.bincount(y, minlength=C)
    if (counts == 0).any():
        raise ValueError(f"labels must contain every class to average over it; missing "
                         f"{torch.nonzero(counts == 0).flatten().tolist()}")
    p = softmax_t(logits, T)
    sums = torch.zeros(C, C, dtype=p.dtype, device=p.device).index_add_(0, y, p)
    return sums / counts.unsqueeze(1).to(p.dtype)


def lookalike(logits: Tensor, labels: Tensor, true_class: int, other_class: int,
              min_confidence: float = 0.0, correct_only: bool = True) -> int:
    """Index of the example of true_class (classified correctly) with the largest ratio p_other / p_true.

    logits: (N, C); labels: (N,). "A 4 that looks like a 9": lookalike(logits, labels, 4, 9).
    min_confidence: only examples whose p_true at T = 1 is at least this, so that the look-alike
    hides at T = 1 and shows at higher T (0.0: the most ambiguous correct example, often a near tie).
    correct_only=False also admits misclassified examples (for a teacher that is not trained yet).
    """
    check_logits(logits, "logits")
    N, C = logits.shape
    y = check_labels(labels, N, C)
    for name, c in (("true_class", true_class), ("other_class", other_class)):
        if not 0 <= c < C:
            raise ValueError(f"{name} must be in [0, {C - 1}], got {c}")
    if not 0.0 <= min_confidence < 1.0:
        raise ValueError(f"min_confidence must be in [0, 1), got {min_confidence}")
    sure = softmax_t(logits, 1.0)[:, true_class] >= min_confidence
    right = logits.argmax(1) == true_class if correct_only else torch.ones_like(sure)
    candidates = torch.nonzero((y == true_class) & right & sure).flatten()
    if len(candidates) == 0:
        raise ValueError(f"no example of class {true_class}"
                         + (" is classified correctly" if correct_only else "")
                         + (f" with confidence >= {min_confidence}" if min_confidence else ""))
    # p_other / p_true = exp((v_other - v_true) / T): the same example has the largest ratio at every T
    gap = logits[candidates, other_class] - logits[candidates, true_class]
    return int(candidates[gap.argmax()])


def lookalikes(logits: Tensor, labels: Tensor, pairs: Sequence[Tuple[int, int]],
               min_confidence: float = 0.0, correct_only: bool = True) -> List[int]:
    """lookalike for each (true_class, other_class) pair."""
    return [lookalike(logits, labels, a, b, min_confidence, correct_only) for a, b in pairs]


# ------------------------------------------------ why the soft term carries T^2

def soft_gradient_norms(student_logits: Tensor, teacher_logits: Tensor,
                        Ts: Sequence[float]) -> Tuple[Tensor, Tensor]:
    """The size of the soft term's gradient at each temperature, with and without the T^2 factor.

        without_T2[k] = || d KL(p^T || q^T) / dz ||        (Frobenius norm over the whole batch)
        with_T2[k]    = T^2 * without_T2[k]                 at T = Ts[k]

    with q^T = softmax(z / T), p^T = softmax(v / T), the KL summed over classes and averaged over
    the batch (batchmean), so each row of the gradient is (q^T - p^T) / (T * B). Measured by
    autograd, independently of kdlib.loss_gradient's closed form.
    student_logits z: (B, C); teacher_logits v: (B, C), treated as constants; Ts: K temperatures > 0.
    Returns (with_T2, without_T2), two tensors of shape (K,). For large T, without_T2 falls like
    1 / T^2 and with_T2 levels off.
    """
    check_pair(student_logits, teacher_logits)
    Ts = list(Ts)
    if not Ts:
        raise ValueError("Ts must hold at least one temperature, got none")
    Ts = [check_temperature(T, name=f"Ts[{i}]") for i, T in enumerate(Ts)]
    v = teacher_logits.detach()
    without = []
    for T in Ts:
        z = student_logits.detach().clone().requires_grad_()
        kl = F.kl_div(torch.log_softmax(z / T, dim=-1), torch.log_softmax(v / T, dim=-1),
                      log_target=True, reduction="batchmean")
        (grad,) = torch.autograd.grad(kl, z)
        without.append(grad.norm())
    without_T2 = torch.stack(without)
    with_T2 = torch.tensor(Ts, dtype=without_T2.dtype) ** 2 * without_T2
    return with_T2, without_T2


def copied_mistakes(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor) -> float:
    """The share of the teacher's mistakes that the student makes too, with the same wrong class.

        copied = |{i : t_i != y_i and s_i = t_i}| / |{i : t_i != y_i}|,   s = argmax z, t = argmax v

    student_logits z, teacher_logits v: (N, C); labels y: (N,). 1: the student repeats every
    mistake of its teacher; 0: none. A teacher without a mistake is a ValueError (nothing to copy).
    """
    check_pair(student_logits, teacher_logits)
    y = check_labels(labels, *teacher_logits.shape)
    s, t = student_logits.argmax(1), teacher_logits.argmax(1)
    wrong = t != y
    if not wrong.any():
        raise ValueError("the teacher makes no mistake on these examples: there is nothing to copy")
    return (s[wrong] == t[wrong]).double().mean().item()


def teacher_share(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, T: float, alpha: float,
                  hard: bool = False, mask: Optional[Tensor] = None) -> float:
    """How much of a distillation loss's gradient comes from the teacher, averaged over the examples.

    The gradient in the student's logits z of one example splits into a teacher part and a label part:

        soft (kd.distillation_loss):       alpha T (q^T - p^T)      +  (1 - alpha)(q - y)
        hard (kd.hard_distillation_loss):  alpha (q - onehot(y_t))  +  (1 - alpha)(q - y)

    with q^T = softmax(z / T), p^T = softmax(v / T), q = q^1, y_t = argmax v. Returns the mean over
    the examples of |teacher part| / (|teacher part| + |label part|): 0 when only the labels pull,
    1 when only the teacher does. Shapes: (N, C), (N, C), (N,) -> float. T is ignored when hard.

    mask: (N,) booleans, the examples to average over (None: all). Where the teacher's arg-max is the
    label, hard distillation's two parts are alpha and (1 - alpha) times the same vector, so its share
    there is alpha by construction; mask=(teacher_logits.argmax(1) != labels) measures it on the
    examples where the teacher says something the label does not. An empty mask is a ValueError.
    """
    check_pair(student_logits, teacher_logits)
    alpha = check_alpha(alpha)
    N = len(student_logits)
    if mask is not None:
        if mask.dtype != torch.bool or mask.shape != (N,):
            raise ValueError(f"mask must be a bool tensor of shape ({N},), got {mask.dtype} {tuple(mask.shape)}")
        if not mask.any():
            raise ValueError("mask selects no example: there is nothing to average over")
    z, v = student_logits.detach().double(), teacher_logits.detach().double()
    per_image = len(z)  # loss_gradient is a batch mean: times B, each row is one example's gradient
    if hard:  # the teacher's arg-max as a second label
        teacher_part = alpha * per_image * loss_gradient(z, v, v.argmax(1), T=1.0, alpha=0.0)
    else:
        teacher_part = alpha * per_image * loss_gradient(z, v, labels, T=T, alpha=1.0)
    label_part = (1 - alpha) * per_image * loss_gradient(z, v, labels, T=1.0, alpha=0.0)
    t, l = teacher_part.norm(dim=1), label_part.norm(dim=1)
    share = t / (t + l).clamp_min(torch.finfo(t.dtype).tiny)
    return (share if mask is None else share[mask.to(share.device)]).mean().item()


def ensemble_accuracy(models: Sequence[nn.Module], x: Tensor, y: Tensor) -> float:
    """Test accuracy of the models' ensemble: the arg-max of their mean probability,

        p(c | x) = (1/M) sum_m softmax(z_m(x))_c,   prediction argmax_c p(c | x)

    models: M trained classifiers (each in eval mode for the pass); x: (N, ...) inputs; y: (N,) labels.
    """
    if len(models) == 0:
        raise ValueError("models must hold at least one model")
    probs = torch.stack([torch.softmax(teacher_logits(m, x).double(), dim=-1) for m in models]).mean(0)
    return (probs.argmax(-1) == y.to(probs.device)).double().mean().item()


# ------------------------------------------------ what reached the students: chapter 10's table
STUDENT_BATCH = 256  # the students' passes: a ViT's eval ran 1.65x faster than at 1,024 on a 2-core CPU

def student_report(runs: Sequence[Tuple[nn.Module, History]], data: Data, teacher: nn.Module,
                   cfg: Optional[FitConfig] = None, make_student: Optional[Callable[[], nn.Module]] = None,
                   seeds: Sequence[int] = ()) -> Dict[str, float]:
    """What reached a set of trained students (one per seed) from their teacher, as means over the seeds.

    runs: [(trained student, its History)] for each seed; data: the students' data (they trained on
    x_train, y_train); cfg: their distillation config (None: trained on the labels alone).
    Returns a dict of floats:

        fit     accuracy on the last epoch's training batches (History.step_acc): how well each
                student fits its own training images, whatever its loss
        agree   the share of test images where the student's arg-max is the teacher's
        copied  copied_mistakes on the test images: the teacher's mistakes the student repeats

    and, with cfg, teacher_share of cfg's loss (soft, or hard when cfg.hard_distillation) on the
    training images:

        end, end_relabelled      for the trained students: over all the images, and only where the
                                 teacher's arg-max differs from the label (where hard distillation's
                                 share is not alpha by construction; NaN if there is no such image)
        start, start_relabelled  the same at each seed's first weights, initial_model(make_student,
                                 seed): only when make_student is given, with seeds in the runs' order
    """
    if make_student is not None and len(seeds) != len(runs):
        raise ValueError(f"seeds must give one seed per run: {len(seeds)} seeds for {len(runs)} runs")
    mean = lambda xs: sum(xs) / len(xs)
    v_test = teacher_logits(teacher, data.x_test)
    z_test = [teacher_logits(model, data.x_test, STUDENT_BATCH) for model, _ in runs]

    def last_epoch(h: History) -> float:  # fit records one accuracy per batch, the same count each epoch
        steps = len(h.step_acc) // len(h.epoch_loss)
        return sum(h.step_acc[-steps:]) / steps

    row = {"fit": mean([last_epoch(h) for _, h in runs]),
           "agree": mean([(z.argmax(1) == v_test.argmax(1)).double().mean().item() for z in z_test]),
           "copied": mean([copied_mistakes(z, v_test, data.y_test) for z in z_test])}
    if cfg is None:
        return row
    x, y = data.x_train, data.y_train
    v = teacher_logits(teacher, x)
    relabelled = v.argmax(1) != y

    def shares(models: Sequence[nn.Module]) -> Tuple[float, float]:  # all images; relabelled ones
        z = [teacher_logits(m, x, STUDENT_BATCH) for m in models]
        share = lambda zi, mask=None: teacher_share(zi, v, y, cfg.T, cfg.alpha, hard=cfg.hard_distillation,
                                                    mask=mask)
        where = mean([share(zi, relabelled) for zi in z]) if relabelled.any() else float("nan")
        return mean([share(zi) for zi in z]), where

    if make_student is not None:
        row["start"], row["start_relabelled"] = shares(
            [initial_model(make_student, seed, x.device) for seed in seeds])
    row["end"], row["end_relabelled"] = shares([model for model, _ in runs])
    return row


def format_reports(table: Dict[str, Dict[str, float]], prefix: str = "") -> str:
    """student_report rows as text: one line per student, then the teacher's share where its arg-max
    differs from the label. table: name -> student_report(...); prefix goes before each name."""
    heads = [[("teacher share", 14), ("fits its", 10), ("agrees with", 13), ("copies its", 12)],
             [("start", 7), ("end", 7), ("images", 10), ("the teacher", 13), ("mistakes", 12)]]
    lines = [" " * 26 + "".join(f"{h:>{w}}" for h, w in row) for row in heads]
    pct = lambda row, key: f"{row[key]:>7.0%}" if key in row else f"{'-':>7}"
    for name, row in table.items():
        lines.append(f"{prefix + name:26}{pct(row, 'start')}{pct(row, 'end')}{row['fit']:>10.1%}"
                     f"{row['agree']:>13.1%}{row['copied']:>12.1%}")
    taught = {name: row for name, row in table.items() if "end_relabelled" in row}
    if taught:
        lines += ["", "the teacher's share only where its arg-max is not the label:"]
        lines += [f"{prefix + name:26}{pct(row, 'start_relabelled')}{pct(row, 'end_relabelled')}"
                  for name, row in taught.items()]
    return "\n".join(lines)


# ------------------------------------------------ which direction of KL: chapter 12's toy
def fit_unimodal(p: Tensor, divergence: str, steps: int = 1000, lr: float = 0.05,
                 mean: Optional[float] = None) -> Tensor:
    """The one-bump distribution closest to p in a divergence: what a student that can hold one mode
    learns from a teacher that has two.

    p: (C,) probabilities over classes 0..C-1, all > 0. q is a discretised Gaussian,
    q_c = softmax_c(-(c - mu)^2 / (2 sigma^2)), whose mu and sigma follow Adam (lr) for `steps` steps
    from mu = mean (default: p's most likely class) and sigma = C / 8, minimising
    soft_divergence(log p, log q, divergence): "forward" KL(p || q) or "reverse" KL(q || p).
    The forward KL has one minimum (q's mean and spread match p's); the reverse KL has one per mode
    of p, and the fit stays in the mode it starts in. Returns q (C,), float64.
    """
    if p.ndim != 1 or not (p > 0).all() or abs(p.sum().item() - 1) > 1e-6:
        raise ValueError(f"p must be a 1-D distribution with every entry > 0, got shape {tuple(p.shape)}")
    C = len(p)
    c = torch.arange(C, dtype=torch.float64)
    start = p.argmax().item() if mean is None else float(mean)
    mu = torch.tensor(float(start), dtype=torch.float64, requires_grad=True)
    log_sigma = torch.tensor(math.log(C / 8), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([mu, log_sigma], lr=lr)
    log_p = p.double().log()
    q = lambda: torch.log_softmax(-(c - mu) ** 2 / (2 * log_sigma.exp() ** 2), 0)
    for _ in range(steps):
        loss = soft_divergence(log_p, q(), divergence)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return q().exp().detach()


@torch.no_grad()
def top_k_mass(logits: Tensor, ks: Sequence[int], T: float = 1.0, batch: int = 4096) -> List[float]:
    """The teacher's probability that its k largest logits hold, on average over the rows, for each k:

        mass(k) = mean over rows of  sum_{c in top k} softmax(v / T)_c

    logits: (..., C), every row a position (an image, or a token of a text); batch rows at a time.
    The share of the distillation target that a table of the top k keeps (kdlib.TopKLogits drops
    the rest and renormalises)."""
    T = check_temperature(T)
    C = logits.shape[-1]
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= C for k in ks):
        raise ValueError(f"ks must be integers in [1, {C}] (the number of classes), got {list(ks)!r}")
    rows = logits.reshape(-1, C)
    totals = torch.zeros(len(ks), dtype=torch.float64)
    for i in range(0, len(rows), batch):
        cumulative = softmax_t(rows[i: i + batch].double(), T).sort(-1, descending=True).values.cumsum(-1)
        totals += cumulative[:, [k - 1 for k in ks]].sum(0)
    return (totals / len(rows)).tolist()
