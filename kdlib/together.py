"""Several models of one architecture, trained in one pass: their weights stacked, one vmap.

A chapter that compares seeds x settings trains many small models of one architecture. Trained
one after another, each step of each model is a handful of small matrix products plus the Python
and dispatch work around them. Stacked, N models take one step together: every weight becomes
one tensor (N, ...), and torch.func.vmap runs the architecture's own forward on all N at once, as
batched matrix products (one product per layer instead of N, and one optimizer step):

    stack = Stack(models)            # N models of one architecture
    z = stack(x, each=True)          # x (N, B, ...): model i reads x[i]        -> z (N, B, C)
    z = stack(x)                     # x (B, ...): every model reads the same x -> z (N, B, C)
    stack.write_back()               # the stacked weights into the N models

kdlib.fit takes a list of models (and one FitConfig per model) and trains them through a Stack;
each model keeps its own seed (initial weights and batch order), T, alpha and teacher, and ends
with the weights it would have had trained alone, up to the rounding of float arithmetic (the
batched products may add in another order).

What it buys, measured (`python -m kdlib.bench --together N`, interleaved, best of 2, torch 2.15):
on the idle 2-core CPU that made the book, N of chapter 8's students trained 0.87x as fast stacked
as one after another for N = 4, 1.05x for N = 8 and 0.59x for N = 25. A step of these MLPs is
arithmetic that torch already spreads over both cores, and 25 models' weights, gradients and
momenta (3 x 25 x 5 MB) no longer fit the CPU's caches. On the same CPU while another chapter ran,
8 students stacked ran 1.48x as fast: there the per-step work between the products waits. Small
ViTs ran 0.86x as fast stacked (torch's fused attention kernel has no vmap rule; the composite
attention is slower on a CPU). So kdlib stacks on an accelerator only (train_or_load_many's
together=None): on a GPU a small model's step is mostly kernel launches, which stacking shares;
that is not measured here (no GPU was at hand). Why vmap and not processes: the two cores are
already busy inside each product, a process needs a picklable model (a notebook's classes are
not), and processes cannot share a GPU's launches.

Refused, with a ValueError that says why: batch norm (its running statistics would need one copy
per model, updated in place under vmap) and dropout with p > 0 (vmap draws all N masks at once,
so no model would get the masks of its run alone, and the result would depend on which other
models trained beside it).
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import fields
from typing import Dict, Iterator, List, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

__all__ = ["Stack", "check_together", "SHARED_SETTINGS"]

# FitConfig fields that may differ between models trained together; all others must be equal
PER_MODEL = ("seed", "T", "alpha", "hard_distillation", "divergence", "beta", "eval_each_epoch")
SHARED_SETTINGS = "every setting but seed, T, alpha, hard_distillation, divergence, beta and eval_each_epoch"


def check_together(models: Sequence[nn.Module], cfgs: Sequence) -> None:
    """Raise ValueError unless the models can train together (see Stack) under cfgs (FitConfigs).

    One model per config; distinct objects of one class with the same settings and parameter
    shapes, on one device; no batch norm, no dropout with p > 0, no augmentation; the configs equal
    in every field but PER_MODEL's, each model's seed, T, alpha, loss and eval_each_epoch (one optimizer steps
    them all)."""
    if len(models) == 0:
        raise ValueError("model must be a model or a non-empty list of models, got an empty list")
    if len(cfgs) != len(models):
        raise ValueError(f"cfg must be one FitConfig, or a list of one per model ({len(models)}), "
                         f"got {len(cfgs)}")
    if len({id(m) for m in models}) != len(models):
        raise ValueError("the models trained together must be distinct objects: the same model twice "
                         "would be trained twice at once")
    first = models[0]
    shapes = [(n, tuple(p.shape), p.dtype, p.device) for n, p in first.named_parameters()]
    for i, m in enumerate(models):
        if not isinstance(m, nn.Module):
            raise TypeError(f"model[{i}] must be an nn.Module, got {type(m).__name__}")
        if type(m) is not type(first) or str(m) != str(first) or \
                [(n, tuple(p.shape), p.dtype, p.device) for n, p in m.named_parameters()] != shapes:
            raise ValueError(f"the models trained together must share one architecture: model[{i}] "
                             f"differs from model[0] in its class, settings or parameters")
        for name, sub in m.named_modules():
            if isinstance(sub, nn.modules.batchnorm._BatchNorm):
                raise ValueError(f"model[{i}].{name} is a batch norm: its running statistics would need a "
                                 f"copy per model, updated in place under vmap; train models with batch "
                                 f"norm one at a time")
            if isinstance(sub, nn.modules.dropout._DropoutNd) and sub.p > 0:
                raise ValueError(f"model[{i}].{name} is a dropout with p = {sub.p}: under vmap all models' "
                                 f"masks are drawn at once, so none would get the masks of its run alone; "
                                 f"train models with dropout one at a time")
    for name in (f.name for f in fields(cfgs[0])):
        if name in PER_MODEL:
            continue
        values = [getattr(c, name) for c in cfgs]
        if any(v != values[0] for v in values):
            raise ValueError(f"models trained together share {SHARED_SETTINGS} (one optimizer steps them "
                             f"all); cfg.{name} differs: {values}")
    if cfgs[0].augment or cfgs[0].mixup:
        raise ValueError("models trained together read fixed inputs: augment=True and mixup=True draw new "
                         "images per batch and run the teacher on each; train such models one at a time")


@contextlib.contextmanager
def fastpath_disabled() -> Iterator[None]:
    """Without nn.MultiheadAttention's and nn.TransformerEncoderLayer's fused inference path."""
    was = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(was)


class Stack(nn.Module):
    """N models of one architecture as one module: each weight a tensor (N, ...), trained as one.

    models: N models that pass check_together (same class and settings, no batch norm, no dropout).
    The stack's parameters are the N models' weights stacked along a new first dimension (copies:
    write_back puts them into the models). forward runs the architecture's own forward under
    torch.func.vmap: a model of the stack is exactly the module it came from.
    """

    def __init__(self, models: Sequence[nn.Module]):
        super().__init__()
        params, buffers = stack_module_state(list(models))
        self.names = list(params)
        self.weights = nn.ParameterList([nn.Parameter(params[n].detach().clone()) for n in self.names])
        self.stacked_buffers = dict(buffers)  # no batch norm: constants, if any
        # the architecture without storage, kept out of the module tree (its parameters are not ours)
        self._base = (copy.deepcopy(models[0]).to("meta"),)
        self._models = tuple(models)

    def __len__(self) -> int:
        return len(self._models)

    def train(self, mode: bool = True) -> "Stack":
        self._base[0].train(mode)
        return super().train(mode)

    def forward(self, x: Tensor, each: bool = False) -> Tensor:
        """Logits (N, B, C) of the N models: on x (B, ...) for all, or x[i] (B, ...) for model i
        when each=True (x: (N, B, ...))."""
        params: Dict[str, Tensor] = dict(zip(self.names, self.weights))
        base = self._base[0]

        def one(p: Dict[str, Tensor], b: Dict[str, Tensor], xi: Tensor) -> Tensor:
            return functional_call(base, (p, b), (xi,))

        # torch's fused attention kernels (the flash kernel, the encoder's inference fast path) have
        # no vmap rule and would run model by model: use the composite ops, which batch
        with sdpa_kernel(SDPBackend.MATH), fastpath_disabled():
            return vmap(one, in_dims=(0, 0, 0 if each else None), randomness="different")(
                params, self.stacked_buffers, x)

    def weights_of(self, i: int) -> List[Tensor]:
        """Model i's parameters, as views into the stacked weights."""
        return [w[i] for w in self.weights]

    @torch.no_grad()
    def write_back(self) -> None:
        """Copy each model's slice of the stacked weights into the model it came from."""
        for i, model in enumerate(self._models):
            for name, w in zip(self.names, self.weights):
                model.get_parameter(name).copy_(w[i])
