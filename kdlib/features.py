"""Distilling what the teacher sees: the outputs of named layers, read with forward hooks, and the two
classic feature terms, FitNets' hints (Romero et al., 2015) and attention transfer (Zagoruyko &
Komodakis, 2017).

    term = kd.FeatureTerm(pairs=(("8", "8"),), kind="attention", weight=1000.0)
    history = kd.fit(student, data, cfg, teacher=teacher, features=term)

fit adds the term to the loss of every batch, L = L_logits + L_features, and removes its hooks when
training ends (or fails). With a feature term the teacher runs on every batch (its features are not
cached), and a hint's regressor trains with the student (and is dropped afterwards).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterator, List, Sequence, Tuple

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .models import probe

__all__ = ["FeatureTerm", "LayerOutputs", "FeatureLoss", "attention_map", "attention_loss", "hint_loss",
           "layer_names"]

KINDS = ("hint", "attention")


@dataclass(frozen=True)
class FeatureTerm:
    """Which layers' features a student learns from its teacher, compared how, with what weight.

    pairs: ((student_layer, teacher_layer), ...), names as model.named_modules() gives them
    (kd.features.layer_names lists them); kind: "hint" or "attention"; weight: beta below.

        hint       beta * sum_pairs mean((r(f_s) - f_t)^2)          FitNets; r a learned 1x1
                   convolution (a Linear for (B, C) features) from the student's channels to the
                   teacher's, which trains with the student (jointly, in one stage: FitNets
                   trains the hint first, in a stage of its own, then distils)
        attention  beta / 2 * sum_pairs mean((Q_s - Q_t)^2)          attention transfer, with
                   Q = a(f) / ||a(f)||_2 and a(f) = mean_c f_c^2, the (B, H*W) attention map
                   (attention_map); the paper's beta is 1,000

    f_s, f_t: the student's and the teacher's outputs (B, C, H, W) at a pair's layers, which must
    have the same height and width (and, for attention, no regressor is needed: only H*W counts).
    """

    pairs: Tuple[Tuple[str, str], ...]
    kind: str = "hint"
    weight: float = 1.0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if isinstance(self.weight, bool) or not isinstance(self.weight, (int, float)) or not (
                self.weight > 0 and self.weight < float("inf")):
            raise ValueError(f"weight must be a finite number > 0, got {self.weight!r}")
        pairs = tuple(tuple(p) for p in self.pairs) if isinstance(self.pairs, (list, tuple)) else ()
        if not pairs or any(len(p) != 2 or not all(isinstance(n, str) for n in p) for p in pairs):
            raise TypeError(f"pairs must be a non-empty sequence of (student_layer, teacher_layer) names, "
                            f"got {self.pairs!r}")
        object.__setattr__(self, "pairs", pairs)  # lists become tuples: the term is hashable, keys stable


def layer_names(model: nn.Module) -> List[str]:
    """The names of model's layers that a FeatureTerm can name: every submodule but the model itself."""
    return [name for name, _ in model.named_modules() if name]


def _find(model: nn.Module, name: str, which: str) -> nn.Module:
    modules = dict(model.named_modules())
    if not name or name not in modules:
        names = layer_names(model)
        shown = ", ".join(repr(n) for n in names[:12]) + (", ..." if len(names) > 12 else "")
        raise ValueError(f"{which} has no layer named {name!r}; its layers: {shown}")
    return modules[name]


class LayerOutputs:
    """The outputs of a model's named layers on its last forward pass, recorded by forward hooks.

        with LayerOutputs(model, ["8"]) as seen:
            model(x)
            f = seen["8"]        # (B, C, H, W): layer "8"'s output, with its graph

    The hooks exist only inside the with block (or until remove()): afterwards the model is as it was.
    """

    def __init__(self, model: nn.Module, names: Sequence[str], which: str = "model"):
        self.modules = {name: _find(model, name, which) for name in names}
        self.outputs: Dict[str, Tensor] = {}
        self.handles: List[torch.utils.hooks.RemovableHandle] = []

    def attach(self) -> "LayerOutputs":
        if not self.handles:
            for name, module in self.modules.items():
                self.handles.append(module.register_forward_hook(self._recorder(name)))
        return self

    def _recorder(self, name: str):
        def record(module: nn.Module, args, output) -> None:
            self.outputs[name] = output[0] if isinstance(output, tuple) else output
        return record

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()
        self.outputs.clear()  # no graph kept alive after training

    def __enter__(self) -> "LayerOutputs":
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.remove()

    def __getitem__(self, name: str) -> Tensor:
        if name not in self.outputs:
            raise KeyError(f"layer {name!r} has no recorded output: run a forward pass with the hooks attached")
        return self.outputs[name]


def attention_map(f: Tensor) -> Tensor:
    """Zagoruyko & Komodakis's spatial attention map of features f (B, C, H, W) -> (B, H*W):

        a(f) = mean_c f_c^2,  then  Q = a(f) / ||a(f)||_2   (each image's map has unit length)

    Where the layer's units are active, whatever their number C: so maps of layers of different
    widths compare. (B, C) features have no space: a map of one value, which normalises to 1.
    """
    if f.ndim < 2:
        raise ValueError(f"features must be (B, C, ...), got shape {tuple(f.shape)}")
    a = f.float().pow(2).mean(1).flatten(1)  # (B, H*W)
    return F.normalize(a, dim=1)


def attention_loss(f_s: Tensor, f_t: Tensor) -> Tensor:
    """mean over the batch and positions of (Q_s - Q_t)^2, Q = attention_map; a scalar.
    f_s (B, C_s, H, W), f_t (B, C_t, H, W): the widths may differ, the positions H*W may not."""
    q_s, q_t = attention_map(f_s), attention_map(f_t)
    if q_s.shape != q_t.shape:
        raise ValueError(f"attention maps must cover the same positions: the student's layer gives "
                         f"{tuple(f_s.shape)}, the teacher's {tuple(f_t.shape)}")
    return (q_s - q_t).pow(2).mean()


def hint_loss(g_s: Tensor, f_t: Tensor) -> Tensor:
    """FitNets' hint: mean((g_s - f_t)^2) over every element, g_s = r(f_s) the regressed student
    features, f_t the teacher's, both (B, C_t, ...); a scalar."""
    if g_s.shape != f_t.shape:
        raise ValueError(f"the regressed student features {tuple(g_s.shape)} must match "
                         f"the teacher's {tuple(f_t.shape)}")
    return (g_s.float() - f_t.float()).pow(2).mean()


def _regressor(s: Sequence[int], t: Sequence[int]) -> nn.Module:
    """A learned map from features of shape s (per example) to shape t: a 1x1 convolution for
    (C, H, W) features of the same H, W, a Linear for (C,) features."""
    if len(s) == len(t) == 3 and s[1:] == t[1:]:
        return nn.Conv2d(s[0], t[0], kernel_size=1, bias=False)
    if len(s) == len(t) == 1:
        return nn.Linear(s[0], t[0], bias=False)
    raise ValueError(f"a hint needs features of the same height and width (C, H, W), or (C,) both: the "
                     f"student's layer gives {tuple(s)}, the teacher's {tuple(t)}")


class FeatureLoss(nn.Module):
    """A FeatureTerm at work for one student and one teacher: their hooks, the regressors, the loss.

    shape: one input's shape (e.g. (3, 32, 32)), to read the layers' output shapes once (a probe
    pass of each model). Call attached() around training; each batch, after the student's and the
    teacher's forward passes, forward() returns the term (a scalar with the student's graph).
    The regressors (hints only) are this module's parameters: train them with the student's.
    """

    def __init__(self, term: FeatureTerm, student: nn.Module, teacher: nn.Module, shape: Sequence[int]):
        super().__init__()
        self.term = term
        self.student = LayerOutputs(student, [s for s, _ in term.pairs], "the student")
        self.teacher = LayerOutputs(teacher, [t for _, t in term.pairs], "the teacher")
        shapes: Dict[Tuple[str, str], Tuple[int, ...]] = {}
        for which, model, seen in (("s", student, self.student), ("t", teacher, self.teacher)):
            hooks = {m: (lambda name: lambda mod, args, kwargs, out: shapes.__setitem__(
                (which, name), tuple(out.shape[1:])))(name) for name, m in seen.modules.items()}
            probe(model, shape, hooks)
        self.regressors = nn.ModuleList()
        for s, t in term.pairs:
            shape_s, shape_t = shapes[("s", s)], shapes[("t", t)]
            if term.kind == "hint":
                self.regressors.append(_regressor(shape_s, shape_t))
            elif len(shape_s) < 2 or len(shape_t) < 2:
                raise ValueError(f"attention transfer needs feature maps (C, H, W): the student's {s!r} "
                                 f"gives {shape_s}, the teacher's {t!r} gives {shape_t}")
            elif shape_s[1:] != shape_t[1:]:
                raise ValueError(f"attention transfer needs layers of the same height and width: the "
                                 f"student's {s!r} gives {shape_s}, the teacher's {t!r} gives {shape_t}")

    @contextlib.contextmanager
    def attached(self) -> Iterator["FeatureLoss"]:
        """The hooks on both models inside the block; removed afterwards, also after an error."""
        try:
            self.student.attach()
            self.teacher.attach()
            yield self
        finally:
            self.student.remove()
            self.teacher.remove()

    def forward(self) -> Tensor:
        parts = []
        for i, (s, t) in enumerate(self.term.pairs):
            f_s, f_t = self.student[s], self.teacher[t].detach()
            if self.term.kind == "hint":  # the regressor in its own precision (autocast ends before)
                r = self.regressors[i]
                parts.append(hint_loss(r(f_s.to(next(r.parameters()).dtype)), f_t))
            else:
                parts.append(attention_loss(f_s, f_t) / 2)
        return self.term.weight * torch.stack(parts).sum()
