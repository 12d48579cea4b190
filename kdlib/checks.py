"""Check a distillation setup before training: the mistakes that raise no error but spoil the result.

    problems = check_distillation_setup(student, teacher, T=4.0, alpha=0.9, example=x[:8])

Each problem comes back as one message (and is issued as a DistillationSetupWarning):
    - the teacher is in training mode (dropout, batch norm)   -> teacher.eval()
    - the teacher's parameters require grad                   -> teacher.requires_grad_(False)
    - T < 1 sharpens instead of softening                     -> T > 1
    - student and teacher are, or share, the same tensors     -> two separate models
    - their outputs disagree on the classes, or are not (B, C) -> matching output layers
    - a model is on another device than the example           -> model.to(example.device)
Wrong types and values of T and alpha raise, as in kdlib.losses.
"""
from __future__ import annotations

import warnings
from typing import List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from .losses import check_alpha, check_temperature
from .models import eval_mode

__all__ = ["DistillationSetupWarning", "check_distillation_setup"]

# the private bases cover every variant: Dropout1d/2d/3d, AlphaDropout, BatchNorm1d/2d/3d, SyncBatchNorm, lazy ones
_DROPOUT = nn.modules.dropout._DropoutNd
_BATCH_NORM = nn.modules.batchnorm._BatchNorm


class DistillationSetupWarning(UserWarning):
    """A distillation setup that runs but teaches the student the wrong thing, or wastes memory."""


def check_distillation_setup(student: nn.Module, teacher: nn.Module, T: Optional[float] = None,
                             alpha: Optional[float] = None, example: Optional[Tensor] = None,
                             warn: bool = True) -> List[str]:
    """One message per problem found in a distillation setup; [] when none is found.

    student, teacher: the two models. T: the temperature (must be > 0; T < 1 is reported).
    alpha: the weight of the *soft* term, as everywhere in kdlib::

        L = alpha * T^2 * KL(p^T || q^T) + (1 - alpha) * CE(onehot(y), q^1)

    Any alpha in [0, 1] is accepted. Careful when porting: the Keras example weights the *hard*
    term with alpha, so its alpha=0.1 is kdlib's alpha=0.9.
    example: a small input batch (B, ...). Both models run on it once, in eval mode and under
    no_grad, to compare their number of classes; every module's train/eval mode is restored.
    A model whose weights are on another device than example is reported, not run.
    warn: also issue each message as a DistillationSetupWarning.
    Raises TypeError for a student or teacher that is not an nn.Module or an example that is not
    a Tensor, and TypeError/ValueError for a T or alpha that kdlib's losses would reject.
    """
    for name, model in (("student", student), ("teacher", teacher)):
        if not isinstance(model, nn.Module):
            raise TypeError(f"{name} must be a torch.nn.Module, got {type(model).__name__}")
    if example is not None and not isinstance(example, Tensor):
        raise TypeError(f"example must be a torch.Tensor (a small input batch), got {type(example).__name__}")
    # validate both numbers before reporting anything: a bad argument raises, never half a report
    if T is not None:
        T = check_temperature(T)
    if alpha is not None:
        check_alpha(alpha)  # every value in [0, 1] is a legitimate choice: nothing to report

    problems = [msg for msg in (_teacher_mode(teacher), _teacher_grad(teacher),
                                _temperature(T), _shared(student, teacher)) if msg]
    if example is not None:
        problems += _outputs(student, teacher, example)
    if warn:
        for msg in problems:
            warnings.warn(msg, DistillationSetupWarning, stacklevel=2)
    return problems


# ------------------------------------------------------------------ one check each
def _teacher_mode(teacher: nn.Module) -> Optional[str]:
    layers = [name for name, m in teacher.named_modules()
              if m.training and isinstance(m, (_DROPOUT, _BATCH_NORM))]
    if not teacher.training and not layers:
        return None
    where = f"layers {_some(layers)}" if layers else "teacher.training is True"
    return (f"The teacher is in training mode ({where}): dropout makes its soft targets noisy and "
            f"batch norm makes them shift with the batch. Call teacher.eval() before distilling.")


def _teacher_grad(teacher: nn.Module) -> Optional[str]:
    params = list(teacher.parameters())
    n = sum(p.requires_grad for p in params)
    if n == 0:
        return None
    return (f"{n} of the teacher's {len(params)} parameter tensors require grad: unless its forward pass "
            f"runs under torch.no_grad(), autograd records it (memory and time), and an optimizer built "
            f"from the wrong parameters could update it. Freeze it with teacher.requires_grad_(False) "
            f"(and run its forward pass under torch.no_grad()).")


def _temperature(T: Optional[float]) -> Optional[str]:
    if T is None or T >= 1:
        return None
    return (f"T={T} is below 1: it sharpens the teacher's distribution instead of softening it, hiding "
            f"the small probabilities of wrong classes that distillation transfers. Use T > 1 (kdlib's default is 4).")


def _shared(student: nn.Module, teacher: nn.Module) -> Optional[str]:
    if student is teacher:
        return ("The student and the teacher are the same object: training the student would change the "
                "teacher, and its targets would move with it. Pass the student model you mean to train.")
    teacher_memory = [mem for _, mem in _memory(teacher)]
    shared = [name for name, mem in _memory(student) if any(_overlap(mem, other) for other in teacher_memory)]
    if not shared:
        return None
    return (f"The student shares {len(shared)} parameter or buffer tensor(s) with the teacher ({_some(shared)}): "
            f"training the student would change the teacher too. Give the student its own copy "
            f"(copy.deepcopy or a new model), and check that you train the intended model object.")


_Memory = Union[int, Tuple[torch.device, int, int]]


def _memory(model: nn.Module) -> List[Tuple[str, _Memory]]:
    """Every parameter and buffer of model, with the memory it lives in: (device, first byte, end) of its storage.

    The whole storage, not the tensor's own address: nn.Parameter(teacher.w.data[3:]), a view at an
    offset, shares the teacher's memory too. Lazy, meta and empty tensors have no memory of their
    own: they are known by identity.
    """
    out = []
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        storage = None if nn.parameter.is_lazy(t) or t.is_meta else t.untyped_storage()
        if storage is None or storage.nbytes() == 0:
            out.append((name, id(t)))
        else:
            out.append((name, (t.device, storage.data_ptr(), storage.data_ptr() + storage.nbytes())))
    return out


def _overlap(a: _Memory, b: _Memory) -> bool:
    """Do two tensors' memories, as _memory gives them, share a byte?"""
    if isinstance(a, int) or isinstance(b, int):
        return a == b
    return a[0] == b[0] and a[1] < b[2] and b[1] < a[2]


@torch.no_grad()
def _outputs(student: nn.Module, teacher: nn.Module, example: Tensor) -> List[str]:
    """Run both models once on example (eval mode, no grad) and compare what they return."""
    outs, problems = {}, []
    for name, model in (("student", student), ("teacher", teacher)):
        devices = sorted({str(t.device) for t in [*model.parameters(), *model.buffers()]})
        if devices and str(example.device) not in devices:  # it would raise: report it instead
            problems.append(f"The {name}'s weights are on {' and '.join(devices)} but example is on "
                            f"{example.device}: a model runs on the device its weights are on. Put the models "
                            f"and their inputs on one device ({name}.to(device), x.to(device)).")
            continue
        with eval_mode(model):  # per module: train(mode) would flatten the modes
            outs[name] = model(example)
    for name, out in outs.items():
        if not isinstance(out, Tensor) or out.ndim != 2:
            got = f"shape {tuple(out.shape)}" if isinstance(out, Tensor) else f"a {type(out).__name__}"
            problems.append(f"The {name} returns {got}, not logits of shape (B, C): kdlib's losses compare "
                            f"one row of class logits per example. Make its forward return (B, C) logits.")
    z, v = outs.get("student"), outs.get("teacher")
    # (B, C) or (B, ..., C): the classes are last; a 1-D output has none, and is reported above
    if isinstance(z, Tensor) and isinstance(v, Tensor) and min(z.ndim, v.ndim) >= 2 and z.shape[-1] != v.shape[-1]:
        problems.append(f"The student gives {z.shape[-1]} logits but the teacher gives {v.shape[-1]}: "
                        f"distillation matches the two distributions class by class, so both must predict "
                        f"the same classes in the same order. Give the student the teacher's output size.")
    return problems


def _some(names: List[str], most: int = 3) -> str:
    """'a', 'b', 'c' and 2 more: a readable list of module or tensor names."""
    shown = ", ".join(repr(n) for n in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")
