"""One training loop for teachers, students from scratch and distilled students.

    fit(model, data, config)                    cross entropy on the labels
    fit(model, data, config, teacher=teacher)   kdlib's distillation loss, teacher frozen

data is a kdlib Data (tensors on the device; batches are shuffled index slices) or any iterable of
batches, such as a torch DataLoader: the loop is the same, only where the batches come from differs.
The teacher's logits do not change while the student learns from fixed inputs, so they are computed
once (kdlib.teacher) and each batch reads its rows by index; with augmentation every batch is a new
image, and the teacher runs on every batch. Under torchrun the same loop trains on several processes
(kdlib.distributed).
"""
from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from numbers import Real
from typing import Callable, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DistributedSampler
from tqdm.auto import tqdm

from . import distributed
from .cache import cache_dir, discard, temporary_name, unwritable
from .data import Data, augment_crop_flip, batch_indices, mix_images
from .decoding import written_windows
from .features import FeatureLoss, FeatureTerm
from .keys import fingerprint, module_content
from .losses import (IGNORE_INDEX, check_alpha, check_divergence, check_labels, check_temperature,
                     distillation_loss, hard_distillation_loss)
from .models import device_of, eval_mode
from .precision import autocast, check_precision, grad_scaler, resolve_precision
from .profiles import DRY_RUN_EPOCHS, dry_run
from .teacher import Indexed, TopKLogits, check_tail, frozen_forward, logit_table, teacher_logits
from .together import Stack, check_together

__all__ = ["FitConfig", "History", "Score", "fit", "evaluate", "train_or_load", "train_or_load_many",
           "initial_model"]

# a batch: (x (B, ...), y (B,)) or (x, y, index (B,)), index the samples' positions in the data set
Batches = Iterable[Tuple[Tensor, ...]]


TEACHER_VIEWS = ("same", "independent", "fixed")
VIEW_SEED_OFFSET = 1_000_003  # the teacher's own views and mixup draw from seed + this (see fit)


@dataclass
class FitConfig:
    """Everything that decides a training run (and so the key of its checkpoint)."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.01
    optimizer: str = "sgd"          # "sgd" (momentum 0.9) or "adamw"
    weight_decay: float = 0.0
    schedule: str = "constant"      # "constant" or "cosine" (decays to 0 over the run)
    T: float = 4.0                  # distillation only
    alpha: float = 0.9              # weight of the soft term; distillation only
    hard_distillation: bool = False  # DeiT's variant: cross entropy on the teacher's arg-max
    divergence: str = "forward"     # the soft term: "forward" KL, "reverse" KL or "jsd" (kdlib.losses)
    beta: Optional[float] = None    # "jsd" only: the teacher's weight in the mixture (default 0.5)
    top_k: Optional[int] = None     # keep only the teacher's k largest logits per position (TopKLogits)
    top_k_tail: str = "drop"        # the other logits: "drop" (-inf) or "spread" (their mass, evenly)
    prompt: Optional[int] = None    # sequences: the first `prompt` tokens are given, not scored
    on_policy: float = 0.0          # GKD's lambda: the share of batches whose text the student writes
    augment: bool = False           # random crop + flip on the device (CIFAR)
    # what the teacher sees of an augmented batch: "same" view as the student (consistent), its own
    # "independent" view of the same images, or the "fixed" images (its logits once, in a table)
    teacher_view: str = "same"
    mixup: bool = False             # function matching: each input mixed with another (see mix_images)
    eval_each_epoch: bool = True    # test accuracy after every epoch (else only at the end)
    precision: str = "auto"         # "fp32", "bf16", "fp16" or "auto" (see resolve_precision)
    seed: int = 0

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        for name, low in (("lr", "> 0"), ("weight_decay", ">= 0")):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, Real):
                raise TypeError(f"{name} must be a real number {low}, got {type(v).__name__}")
            if not math.isfinite(v) or not (v > 0 if low == "> 0" else v >= 0):
                raise ValueError(f"{name} must be finite and {low}, got {v}")
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"schedule must be 'constant' or 'cosine', got {self.schedule!r}")
        check_precision(self.precision)
        check_temperature(self.T)
        check_alpha(self.alpha)
        check_divergence(self.divergence, self.beta)
        check_tail(self.top_k_tail)
        if self.top_k is not None:
            if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 1:
                raise ValueError(f"top_k must be None (every logit) or an integer >= 1, got {self.top_k!r}")
            if self.divergence == "reverse" and self.top_k_tail == "drop":
                raise ValueError("top_k with top_k_tail='drop' goes with divergence='forward' or 'jsd': "
                                 "KL(q || p) is infinite where the student puts mass outside the teacher's "
                                 "top k (top_k_tail='spread' keeps that mass)")
            if self.augment:
                raise ValueError("top_k keeps a table of the teacher's logits on fixed inputs; with "
                                 "augment=True the teacher runs on every batch: leave top_k None")
        if self.prompt is not None and (isinstance(self.prompt, bool) or not isinstance(self.prompt, int)
                                        or self.prompt < 1):
            raise ValueError(f"prompt must be None or an integer >= 1 (tokens given before the scored "
                             f"ones), got {self.prompt!r}")
        if isinstance(self.on_policy, bool) or not isinstance(self.on_policy, Real) \
                or not 0 <= self.on_policy <= 1:
            raise ValueError(f"on_policy must be a number in [0, 1] (the share of batches the student "
                             f"writes), got {self.on_policy!r}")
        if self.teacher_view not in TEACHER_VIEWS:
            raise ValueError(f"teacher_view must be one of {TEACHER_VIEWS}, got {self.teacher_view!r}")
        if self.teacher_view != "same" and not self.augment:
            raise ValueError(f"teacher_view={self.teacher_view!r} needs augment=True: without augmentation "
                             f"the teacher sees the student's (fixed) images anyway")
        if not isinstance(self.mixup, bool):
            raise TypeError(f"mixup must be True or False, got {type(self.mixup).__name__}")
        if self.mixup and (self.alpha != 1 or self.hard_distillation or self.teacher_view != "same"):
            raise ValueError("mixup=True is function matching: the teacher is the only target (alpha=1, "
                             "the soft loss; a mixed image has no label) and sees the student's mixed image "
                             "(teacher_view='same')")
        if self.on_policy > 0 and (self.prompt is None or self.alpha != 1 or self.hard_distillation):
            raise ValueError("on_policy > 0 needs a prompt (the student writes what follows it) and "
                             "alpha=1 with the soft loss: on the student's own text the labels are its "
                             "own draws, and only the teacher's distribution says what is right")


@dataclass
class History:
    """What a run did: per step (training batch) and per epoch."""

    step_loss: List[float] = field(default_factory=list)
    step_acc: List[float] = field(default_factory=list)   # accuracy on each training batch
    epoch_loss: List[float] = field(default_factory=list)
    epoch_test_acc: List[float] = field(default_factory=list)
    seconds: float = 0.0
    test_acc: float = float("nan")
    test_errors: int = -1
    from_cache: bool = False        # True when train_or_load loaded the run instead of training it


class Score(NamedTuple):
    accuracy: float
    errors: int
    loss: float

def evaluate(model: nn.Module, x: Union[Tensor, Batches], y: Optional[Tensor] = None, batch_size: int = 1024,
             precision: str = "auto") -> Score:
    """Accuracy, number of errors and mean cross entropy of model, in eval mode, on x (N, ...) with
    labels y (N,), or on the batches of x when it is an iterable of (x, y) batches (a DataLoader).

    The products run in `precision` (see kdlib.precision.resolve_precision).
    """
    if isinstance(x, Tensor):
        if y is None or len(x) == 0 or len(x) != len(y):
            raise ValueError(f"x and y must hold the same number (>= 1) of examples, got {len(x)} and "
                             f"{None if y is None else len(y)}")
        return _score(_test_sums(model, _slices(x, y, batch_size), precision))
    return _score(_test_sums(model, x, precision))


def _slices(x: Tensor, y: Tensor, batch_size: int) -> Iterator[Tuple[Tensor, Tensor]]:
    return ((x[i: i + batch_size], y[i: i + batch_size]) for i in range(0, len(x), batch_size))


def unpack(batch, name: str = "data") -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """(x, y, index or None) of a batch (x, y) or (x, y, index); a TypeError naming `name` otherwise."""
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        what = f"a dict with keys {sorted(batch, key=str)}" if isinstance(batch, dict) else type(batch).__name__
        raise TypeError(f"{name} must give batches (x, y) or (x, y, index), got {what}: make the data set's items "
                        f"(input, label) tuples, or give the DataLoader a collate_fn that returns them")
    return batch[0], batch[1], (batch[2] if len(batch) > 2 else None)


@torch.no_grad()
def _test_sums(model: nn.Module, batches: Batches, precision: str) -> Tensor:
    """(errors, summed cross entropy, positions) of model on the batches, as one float64 tensor (3,);
    (3, N) for a Stack of N models, a column per model. A position is an example (y (B,)) or one of
    a sequence's L tokens (y (B, L)); labels equal to IGNORE_INDEX are not counted."""
    device = device_of(model)
    stacked = isinstance(model, Stack)
    sums: Optional[Tensor] = None
    with eval_mode(model), autocast(device, precision):
        for batch in batches:
            x, y, _ = unpack(batch, "the test set")
            x, y = x.to(device), y.to(device)
            logits = model(x).float()  # (B, [L,] C); (N, B, [L,] C) for N models (a kdlib.together.Stack)
            logits = logits if stacked else logits[None]  # one model: a stack of one
            flat = logits.reshape(len(logits), -1, logits.shape[-1])  # (N, positions, C)
            labels = y.reshape(1, -1).expand(len(flat), -1)            # (N, positions)
            right, counted = hits(flat, labels, stacked=True)  # per model
            ce = F.cross_entropy(flat.transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none")
            part = torch.stack([(counted - right).double(), ce.sum(1).double(), counted.double()])
            sums = part if sums is None else sums + part
    if sums is None:
        raise ValueError("the test set must hold at least one example, got none")
    return sums if stacked else sums[:, 0]


def _score(sums: Tensor) -> Union[Score, List[Score]]:
    """The Score of _test_sums's (3,) sums; a list, one per model, of (3, N) sums."""
    if sums.ndim == 2:
        return [_score(column) for column in sums.T]
    errors, loss, n = sums.tolist()
    if n == 0:
        raise ValueError("the test set must hold at least one example, got none")
    return Score(1 - errors / n, int(errors), loss / n)


# ------------------------------------------------------------------ the loop
def backward_step(loss: Tensor, opt: torch.optim.Optimizer, scaler: Optional[torch.amp.GradScaler]) -> None:
    """loss.backward() and opt.step(); with float16, scale the loss so small gradients do not round to zero."""
    if scaler is None:
        loss.backward()
        opt.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()


def make_optimizer(model: nn.Module, cfg: FitConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def check_batch(x: Tensor, y: Tensor, num_classes: int, name: str, positions: Tuple[int, ...] = ()) -> None:
    """The labels y, called `name` in errors, are int64 in [0, num_classes), one per input of x (B, ...),
    of shape (B, *positions): (B,) for classifiers, (B, L) for a language model's L next tokens, where
    IGNORE_INDEX leaves a position out. The inputs are finite (a NaN input would make every weight NaN
    within a step)."""
    if len(x) != len(y) or y.dtype != torch.int64:
        raise ValueError(f"{name} must hold one int64 label per training image, got {len(x)} images "
                         f"and labels {tuple(y.shape)} of dtype {y.dtype}")
    check_labels(y, (len(y), *positions), num_classes, name=name,
                 ignore_index=IGNORE_INDEX if positions else None)
    if x.is_floating_point() and not torch.isfinite(x).all():
        raise ValueError(f"the inputs that go with {name} hold NaN or inf at {int((~torch.isfinite(x)).sum())} "
                         f"places: clean the data (kdlib trains on finite inputs only)")


def check_fit_inputs(model: nn.Module, x: Tensor, y: Tensor, num_classes: Optional[int],
                     teacher: Optional[nn.Module], name: str = "data.y_train") -> Tuple[int, Tuple[int, ...]]:
    """Check the labels y (B,) or (B, L), called `name` in errors, and the inputs x (see check_batch), and
    that model and teacher give logits of the same shape on x, one per class; return (C, positions), the
    number of classes and the label shape after the batch dimension (() or (L,))."""
    if len(x) != len(y):
        check_batch(x, y, 1, name)  # says what is wrong
    # two examples, not one: a batch norm without running statistics needs two values per channel
    probe = x[:2].to(device_of(model))
    with torch.no_grad(), eval_mode(model):
        shape = model(probe).shape  # (2, C), or (2, L, C) for sequences
    C, positions = shape[-1], tuple(shape[1:-1])
    if num_classes is not None and C != num_classes:
        raise ValueError(f"model gives {C} logits but the data has {num_classes} classes")
    check_batch(x, y, C, name, positions)
    if teacher is not None:
        t_shape = frozen_forward(teacher, probe.to(device_of(teacher))).shape
        if t_shape[-1] != C:
            raise ValueError(f"teacher gives {t_shape[-1]} logits but the student gives {C}: "
                             f"teacher and student must share the classes")
        if t_shape != shape:
            raise ValueError(f"teacher gives logits of shape {tuple(t_shape)} for two inputs, the student "
                             f"{tuple(shape)}: they must give one logit vector per position alike")
    return C, positions


def has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


# each source yields, per step, (x, y, index or None, weight): weight scales this process's loss so
# that the step is the one of the global batch (see kdlib.distributed)
def tensor_batches(data: Data, batch_size: int, gen: torch.Generator,
                   min_rows: int = 1) -> Iterator[tuple]:
    """One epoch of data's tensors: shuffled global batches, this process's rows.

    A last batch of fewer than min_rows rows is left out (fewer than one row per process, or than
    two per process for a batch norm, which cannot normalise a single value)."""
    W = distributed.world_size()
    for idx in batch_indices(len(data.y_train), batch_size, gen, data.x_train.device):
        if len(idx) < min_rows:
            continue
        if W > 1:
            mine = distributed.shard(idx)
            yield data.x_train[mine], data.y_train[mine], mine, len(mine) * W / len(idx)
        else:
            yield data.x_train[idx], data.y_train[idx], idx, 1.0


def loader_batches(loader: Batches, epoch: int, device: torch.device,
                   check: Callable[[Tensor, Tensor], None]) -> Iterator[tuple]:
    """One epoch of a DataLoader (or any iterable of batches), each batch checked by check(x, y) where
    it comes from (the CPU, before it moves: no device sync), then moved to device. A DistributedSampler
    gets the epoch, so that each epoch is a new permutation, the same on every process."""
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    for batch in loader:
        x, y, idx = unpack(batch)
        check(x, y)
        yield x.to(device, non_blocking=True), y.to(device, non_blocking=True), idx, 1.0


def fixed_logits(teacher: nn.Module, data: Union[Data, Batches], precision: str,
                 top_k: Optional[int] = None, tail: str = "drop",
                 T: float = 1.0) -> Union[Tensor, TopKLogits, None]:
    """The teacher's logits (N, C) for every training input, read by index during training, or None
    when the data offers no index (then the teacher runs on every batch). top_k: only the k largest
    at each position and what the others read (tail, at the distillation temperature T), a
    TopKLogits that reads like the full table.

    A Data: teacher_logits, in memory (on several processes each computes its strided share).
    A DataLoader over kdlib.Indexed(dataset): logit_table, a memory-mapped file in the cache, read
    with the loader's own collate_fn, workers and worker_init_fn.
    """
    if isinstance(data, Data):
        n = len(data.y_train)
        full = distributed.gather_rows(teacher_logits(teacher, distributed.shard(data.x_train), precision=precision), n)
        return full if top_k is None else TopKLogits.from_logits(full, min(top_k, full.shape[-1]), tail, T)
    dataset = getattr(data, "dataset", None)
    if isinstance(dataset, Indexed):
        return logit_table(teacher, dataset, batch_size=max(getattr(data, "batch_size", None) or 1, 256),
                           num_workers=getattr(data, "num_workers", 0), collate_fn=getattr(data, "collate_fn", None),
                           precision=precision, worker_init_fn=getattr(data, "worker_init_fn", None),
                           top_k=top_k, tail=tail, T=T)
    if top_k is not None:
        raise ValueError("top_k keeps a table of the teacher's logits, read by index: give a kdlib Data or "
                         "a DataLoader over kd.Indexed(dataset)")
    return None


def input_shape(data: Union[Data, Batches]) -> Tuple[int, ...]:
    """One input's shape: of a Data's training images, of a DataLoader's first sample (read from its
    data set: no batch is drawn, so no random number either), or of an iterable's first batch."""
    if isinstance(data, Data):
        return tuple(data.x_train.shape[1:])
    dataset = getattr(data, "dataset", None)
    if dataset is not None:
        return tuple(torch.as_tensor(unpack(dataset[0], "data's data set")[0]).shape)
    return tuple(unpack(next(iter(data)))[0].shape[1:])


def min_batch_rows(model: nn.Module) -> int:
    """The fewest rows a global batch needs: one per process, two with a batch norm."""
    return distributed.world_size() * (2 if has_batch_norm(model) else 1)


def steps_per_epoch(data: Union[Data, Batches], batch_size: int, min_rows: int = 1) -> Optional[int]:
    if isinstance(data, Data):
        full, last = divmod(len(data.y_train), batch_size)
        return full + (last >= min_rows)  # a last batch too small to train on is left out (tensor_batches)
    try:
        return len(data)
    except TypeError:  # an iterable without a length
        return None


def check_loader(data: Batches, model: nn.Module) -> None:
    """A DataLoader whose last batch would hold one sample cannot train a model with batch norm: say so."""
    size = getattr(data, "batch_size", None)
    try:
        n = len(data.dataset)
    except (AttributeError, TypeError):  # no data set with a length: nothing to check ahead
        return
    if has_batch_norm(model) and size and not getattr(data, "drop_last", False) and n % size == 1 \
            and not distributed.active():
        raise ValueError(f"data's last batch holds one sample ({n:,} samples, batch_size {size}), and a batch "
                         f"norm cannot normalise one value: give the DataLoader drop_last=True or another "
                         f"batch_size")


def fit(model: Union[nn.Module, Sequence[nn.Module]], data: Union[Data, Batches],
        cfg: Union[FitConfig, Sequence[FitConfig]],
        teacher: Union[nn.Module, None, Sequence[Optional[nn.Module]]] = None,
        progress: bool = True, desc: str = "",
        loss_fn: Optional[Callable[[Tensor, Tensor, Tensor], Tensor]] = None,
        test: Union[Data, Batches, None] = None,
        features: Optional[FeatureTerm] = None) -> Union[History, List[History]]:
    """Train model on data; with a teacher, distil from it. Returns the History; the model is trained in place.

    data: a kdlib Data, whose training tensors x_train (N, ...) and y_train (N,) sit on the device
    (batches of cfg.batch_size are shuffled index slices), or any iterable of batches, e.g. a torch
    DataLoader (its batch size and order rule; cfg.batch_size is not used): each (x, y) or (x, y, index)
    with index (B,) the samples' positions in data.dataset (kdlib.Indexed adds it). Batches move to
    the model's device; every batch's labels and inputs are checked first, where they come from.
    test: scored after each epoch, a Data or an iterable of (x, y) batches; default: data's own
    test set when data is a Data.
    Loss per batch: cross entropy with the labels alone; with a teacher, distillation_loss(z, v, y,
    cfg.T, cfg.alpha) on its logits v (or hard_distillation_loss when cfg.hard_distillation), or
    loss_fn(z, v, y) when given (z, v: (B, C) logits, y: (B,) labels; e.g. a loss with a known bug).
    Sequences with cfg.prompt: only the tokens after each window's first cfg.prompt are scored, and
    with cfg.on_policy = lambda the student writes them itself on that share of the batches, the
    teacher scoring every token of the student's own text (GKD; see prompted_batch).
    features: a kdlib.features.FeatureTerm adds what the teacher sees to the loss, L = L_logits +
    L_features, from the outputs of the layers it names (forward hooks on both models, removed when
    fit returns or fails); a hint's regressor trains with the student (its initial weights from
    cfg.seed) and is dropped at the end. One model, one process.
    The teacher stays in eval mode under no_grad and is never changed. Its logits come from a table
    made once (fixed_logits) on fixed inputs, from a pass per batch with cfg.augment or features.
    Augmented (cfg.augment), the teacher sees cfg.teacher_view: the student's own view ("same": a
    consistent teacher), an independent view of the same images ("independent"), or the images as
    they are ("fixed": its table, as without augmentation). cfg.mixup mixes each batch's inputs in
    pairs (mix_images) for both models: function matching (Beyer et al., 2022).
    If the loss or the weights stop being finite, fit puts back the weights the model had before
    and raises RuntimeError: it never returns NaN weights.
    Under torchrun, every process calls fit alike and trains one model (kdlib.distributed): a Data's
    global batch of cfg.batch_size is split between the processes; a DataLoader should have a
    DistributedSampler. Only rank 0 shows progress.

    Several models at once: model a list of N models of one architecture, cfg a list of N configs
    (each model's seed, T, alpha and loss settings; every other setting shared), teacher one
    teacher for all or a list of N (None: that model learns from the labels alone), data a Data.
    They train in one pass (kdlib.together.Stack: stacked weights, one vmap), each as it would
    alone: its own batch order, T, alpha and teacher, up to float rounding. Returns N Histories,
    each with its share of the time (the pass's seconds / N).
    """
    together = isinstance(model, (list, tuple))
    models = list(model) if together else [model]
    cfgs = list(cfg) if isinstance(cfg, (list, tuple)) else [cfg] * len(models)
    teachers = list(teacher) if isinstance(teacher, (list, tuple)) else [teacher] * len(models)
    if together:
        check_together(models, cfgs)
        if len(teachers) != len(models):
            raise ValueError(f"teacher must be one model or a list of one per model ({len(models)}), "
                             f"got {len(teachers)}")
        if not isinstance(data, Data) or loss_fn is not None or distributed.active() or cfgs[0].on_policy:
            raise ValueError("models train together from a kdlib Data, with kdlib's losses, in one process, "
                             "on text they do not write: train them one at a time for a DataLoader, a "
                             "loss_fn, torchrun or on_policy > 0")
    elif isinstance(cfg, (list, tuple)):
        raise TypeError("cfg must be a FitConfig for one model (a list of them goes with a list of models)")
    cfg = cfgs[0]  # the settings the models share
    if cfg.on_policy and teacher is None:
        raise ValueError("on_policy > 0 needs a teacher: it scores the text the student writes")
    if cfg.mixup and teacher is None:
        raise ValueError("mixup=True needs a teacher: a mixture of two images has no label, only the "
                         "teacher's answer")
    if loss_fn is not None and teacher is None:
        raise ValueError("loss_fn(z, v, y) needs a teacher to give v")
    if features is not None:
        if not isinstance(features, FeatureTerm):
            raise TypeError(f"features must be a kdlib.features.FeatureTerm, got {type(features).__name__}")
        if teacher is None or together or distributed.active():
            raise ValueError("features needs a teacher (it reads the teacher's layers), one model and "
                             "one process: train models one at a time, without torchrun, for a feature term")
        if cfg.teacher_view != "same":
            raise ValueError(f"features needs teacher_view='same' (got {cfg.teacher_view!r}): the two "
                             f"networks' feature maps are compared position by position, on one view")
    if not any(True for _ in models[0].parameters()):
        raise ValueError("model has no parameters to train")
    in_memory = isinstance(data, Data)
    if in_memory:
        for m, t in zip(models, teachers):
            check_prompt(cfg, check_fit_inputs(m, data.x_train, data.y_train, data.num_classes, t)[1])
        test = data if test is None else test
        if cfg.batch_size < distributed.world_size():
            raise ValueError(f"cfg.batch_size ({cfg.batch_size}) is the global batch, split between the "
                             f"{distributed.world_size()} processes: it must be at least their number")
    elif isinstance(data, Tensor) or not hasattr(data, "__iter__"):
        raise TypeError(f"data must be a kdlib Data or an iterable of (x, y[, index]) batches such as a "
                        f"DataLoader, got {type(data).__name__}")
    else:
        check_loader(data, model)
    device = device_of(models[0])
    torch.manual_seed(cfg.seed)                       # dropout masks
    gens = [torch.Generator().manual_seed(c.seed) for c in cfgs]  # batch order and augmentation
    gen = gens[0]
    # N models: one module whose weights are theirs stacked; the step below is the same
    net = Stack(models) if together else distributed.wrap(model)  # DDP under torchrun
    # a feature term: hooks on both models, and (hints) the regressors, which train with the model
    feat = None if features is None else FeatureLoss(
        features, model, teacher, input_shape(data)).to(device)
    hooks = contextlib.nullcontext() if feat is None else feat.attached()
    opt = make_optimizer(net if together else model if feat is None else nn.ModuleList([model, feat]), cfg)
    epochs = min(cfg.epochs, DRY_RUN_EPOCHS) if dry_run() else cfg.epochs  # KDLIB_DRY_RUN: code paths, not results
    min_rows = min_batch_rows(models[0])
    per_epoch = steps_per_epoch(data, cfg.batch_size, min_rows)
    if per_epoch == 0:
        raise ValueError("data gives no batch to train on: it is empty, or a DataLoader with drop_last=True "
                         "holds fewer samples than one batch")
    if cfg.schedule == "cosine" and per_epoch is None:
        raise ValueError("schedule='cosine' needs the number of steps: data must have a length (a DataLoader has)")
    steps = per_epoch and epochs * per_epoch
    # cosine: lr_t = lr * (1 + cos(pi t / steps)) / 2, from lr down to 0 over the run
    sched = (torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + math.cos(math.pi * t / steps)))
             if cfg.schedule == "cosine" else None)
    precision = resolve_precision(device, cfg.precision)  # of the student, its teacher and the tests
    scaler = grad_scaler(device, precision)
    # put back if training diverges
    before = [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in models]
    hists = [History() for _ in models]
    # TQDM_DISABLE=1 silences the bar too (for executing the book's pages); only rank 0 shows one
    quiet = not progress or os.environ.get("TQDM_DISABLE", "0") not in ("", "0") or not distributed.is_main()
    bar = tqdm(total=steps, desc=desc or "train", disable=quiet, leave=False)
    start = time.perf_counter()
    labels: Optional[Tuple[int, Tuple[int, ...]]] = None  # (classes, positions) once a batch is checked

    def check(x: Tensor, y: Tensor) -> None:  # each batch of a DataLoader; the first also against the model
        nonlocal labels
        if labels is None:
            labels = check_fit_inputs(model, x, y, None, teacher, name="the labels of data's first batch")
            check_prompt(cfg, labels[1])
        else:
            check_batch(x, y, labels[0], "the labels of a batch of data", labels[1])

    def batches(epoch: int) -> Iterator[tuple]:  # the one difference between tensors and a DataLoader
        if together:  # each model its own batch order: (N, B, ...) inputs, (N, B) labels and indices
            return (tuple(torch.stack(parts) if i < 3 else parts[0] for i, parts in enumerate(zip(*step)))
                    for step in zip(*(tensor_batches(data, cfg.batch_size, g, min_rows) for g in gens)))
        if in_memory:
            return tensor_batches(data, cfg.batch_size, gen, min_rows)
        return loader_batches(data, epoch, device, check)

    def test_scores() -> List[Score]:  # one Score per model
        scores = test_score(net if together else model, test, precision)
        return scores if together else [scores]

    writing = torch.Generator(device).manual_seed(cfg.seed)  # the student's draws (on_policy)
    # the teacher's own crops (teacher_view="independent") and mixup's draws: a stream of their own, so
    # that the batches and the student's crops stay those of every other run of the seed
    viewing = torch.Generator().manual_seed(cfg.seed + VIEW_SEED_OFFSET)
    # fixed inputs: the teacher's logits once, read by index; augmented inputs or a feature term
    # (the teacher's features are not in a table): the teacher per batch
    fixed = (not cfg.augment or cfg.teacher_view == "fixed") and not cfg.mixup and feat is None
    # one table per teacher (and per T, where a spread tail depends on it), shared by its models
    table_key = lambda t, c: (id(t), c.T if c.top_k and c.top_k_tail == "spread" else None)
    tables = {table_key(t, c): fixed_logits(t, data, precision, c.top_k, c.top_k_tail, c.T)
              for t, c in zip(teachers, cfgs) if t is not None and fixed}
    cached = [None if t is None else tables.get(table_key(t, c))
              for t, c in zip(teachers, cfgs)]
    net.train()
    with hooks:  # a feature term reads the layers it names (features), only while training
        for epoch in range(epochs):
            losses, correct, sizes = [], [], []
            for x, y, idx, weight in batches(epoch):
                images = x  # as they are: the teacher's own view is drawn from them
                if cfg.augment:
                    x = augment_crop_flip(x, gen)
                if cfg.mixup:  # function matching: student and teacher see the same mixtures
                    x = mix_images(x, viewing)
                if cfg.prompt is not None:  # GKD: whose text follows the prompt
                    x, y, idx = prompted_batch(model, x, y, idx, cfg, gen, writing)
                with autocast(device, precision):
                    z = net(x, each=True) if together else net(x)  # (N, B, C) or (B, C)
                # the labels were checked before the batch moved: no check here syncs a GPU
                if together:  # each model its own loss, as alone; their sum steps all
                    vs = [None if t is None else table[idx[i]].to(device)
                          for i, (t, table) in enumerate(zip(teachers, cached))]
                    loss = torch.stack([batch_loss(z[i], y[i], vs[i], c)
                                        for i, c in enumerate(cfgs)])
                else:
                    v = None
                    if teacher is not None:  # from the table, or (augmented inputs, batches
                        # without an index, a feature term) a pass per batch
                        in_table = cached[0] is not None and idx is not None
                        view = (x if cfg.teacher_view == "same" else images
                                if cfg.teacher_view == "fixed"  # (a batch without an index)
                                else augment_crop_flip(images, viewing))  # a view of its own
                        v = (cached[0][idx].to(device) if in_table
                             else frozen_forward(teacher, view, len(x), precision))
                    loss = batch_loss(z, y, v, cfg, loss_fn)
                    if feat is not None:  # L = L_logits + L_features (kdlib.features)
                        loss = loss + feat()
                opt.zero_grad(set_to_none=True)
                # weight: this process's share of the global batch (1 on one process)
                backward_step(loss.sum() * weight, opt, scaler)
                if sched is not None:
                    sched.step()
                # keep the numbers on the device; one transfer per epoch, not one per step
                losses.append(loss.detach())
                right, counted = hits(z, y, stacked=together)
                correct.append(right)
                sizes.append(counted)
                bar.update()
            try:
                for i, hist in enumerate(hists):
                    params = net.weights_of(i) if together else list(model.parameters())
                    column = (lambda ts: [t[i] for t in ts]) if together else (lambda ts: ts)
                    end_of_epoch(hist, column(losses), column(correct), column(sizes), epoch, cfg.lr, params,
                                 f"model[{i}] (seed {cfgs[i].seed}) " if together else "")
            except RuntimeError:
                for m, state in zip(models, before):
                    m.load_state_dict(state)  # never NaN weights: the models as they came
                raise
            if together:
                net.write_back()
            wants = [c.eval_each_epoch for c in cfgs]  # a test score after this epoch, per model
            if any(wants) and epoch < epochs - 1 and test is not None:  # the last epoch's score comes below
                scores = test_scores()
                for hist, score, want in zip(hists, scores, wants):
                    if want:
                        hist.epoch_test_acc.append(score.accuracy)
                bar.set_postfix(loss=f"{hists[0].epoch_loss[-1]:.3f}", test_acc=f"{scores[0].accuracy:.4f}")
    bar.close()
    seconds = (time.perf_counter() - start) / len(models)  # training time: the final test below is not in it
    if test is not None:
        for hist, score in zip(hists, test_scores()):
            hist.epoch_test_acc.append(score.accuracy)
            hist.test_acc, hist.test_errors = score.accuracy, score.errors
    for hist in hists:
        hist.seconds = seconds
    return hists if together else hists[0]


def check_prompt(cfg: FitConfig, positions: Tuple[int, ...]) -> None:
    """cfg.prompt must leave a position to score in sequences of positions (L,); a ValueError otherwise."""
    if cfg.prompt is not None and not (len(positions) == 1 and cfg.prompt <= positions[0]):
        raise ValueError(f"cfg.prompt ({cfg.prompt}) must be at most the sequences' length (labels of "
                         f"shape (B, L), L = {positions[0] if positions else 'none: not sequences'})")


def prompted_batch(student: nn.Module, x: Tensor, y: Tensor, idx: Optional[Tensor],
                   cfg: FitConfig, gen: torch.Generator,
                   writing: torch.Generator) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """A batch of sequences x, y (B, L) as GKD (Agarwal et al., 2024) sees it.

    The first cfg.prompt tokens are the prompt: their labels (positions 0 .. prompt - 2)
    become IGNORE_INDEX. The tokens after it are the output, scored. With probability
    cfg.on_policy (drawn from gen) the student writes the output itself at T = 1
    (kdlib.decoding.written_windows, drawing from the writing generator), and the index
    becomes None: the teacher must read this new text (a pass, not the table)."""
    if cfg.on_policy and float(torch.rand((), generator=gen)) < cfg.on_policy:
        x, y = written_windows(student, x, y, cfg.prompt, 1.0, writing, len(x))
        idx = None
    y = y.clone()
    y[..., : cfg.prompt - 1] = IGNORE_INDEX  # the prompt is read, not learned
    return x, y, idx


def hits(z: Tensor, y: Tensor, stacked: bool = False) -> Tuple[Tensor, Tensor]:
    """(right answers, positions counted) in a batch, on the device: logits z (B, C) or (B, L, C), labels
    y (B,) or (B, L), positions labelled IGNORE_INDEX not counted; two scalars, or (N,) and (N,) with
    stacked=True for N models' z (N, B, [L,] C) and y (N, B, [L])."""
    keep = y != IGNORE_INDEX
    dims = tuple(range(1 if stacked else 0, y.ndim))
    return ((z.argmax(-1) == y) & keep).sum(dims), keep.sum(dims)


def batch_loss(z: Tensor, y: Tensor, v: Optional[Tensor], cfg: FitConfig,
               loss_fn: Optional[Callable[[Tensor, Tensor, Tensor], Tensor]] = None) -> Tensor:
    """One model's loss on one batch: logits z (B, C) or (B, L, C), labels y (B,) or (B, L), the
    teacher's logits v, z's shape, or None (the labels alone); cross entropy, or loss_fn, hard or soft
    distillation (see fit). Every term is a mean over the positions whose label is not IGNORE_INDEX."""
    if v is not None and loss_fn is not None:
        return loss_fn(z.float(), v, y)
    z, y = z.float().flatten(0, -2), y.flatten()  # (positions, C), (positions,)
    if v is None:
        return F.cross_entropy(z, y, ignore_index=IGNORE_INDEX)
    v = v.flatten(0, -2)
    if cfg.hard_distillation:
        return hard_distillation_loss(z, v, y, cfg.alpha, check=False, ignore_index=IGNORE_INDEX)
    return distillation_loss(z, v, y, cfg.T, cfg.alpha, check=False, divergence=cfg.divergence, beta=cfg.beta,
                             ignore_index=IGNORE_INDEX)


def end_of_epoch(hist: History, losses: List[Tensor], correct: List[Tensor], sizes: List[Tensor], epoch: int,
                 lr: float, params: List[Tensor], which: str = "") -> None:
    """Record an epoch's per-step losses and accuracies in hist, over all processes (one all-reduce);
    a RuntimeError when the loss or the model's weights (params) are no longer finite."""
    if not losses:
        raise ValueError(f"data gave no batch in epoch {epoch + 1}")
    n = torch.stack(sizes).float()
    # per step: summed loss, correct answers and examples, summed over the processes
    loss_sum, right, n = distributed.all_sum(torch.stack([torch.stack(losses).float() * n,
                                                          torch.stack(correct).float(), n]))
    weights_finite = all(bool(torch.isfinite(p).all()) for p in params)
    if not torch.isfinite(loss_sum).all() or not weights_finite:  # a clear error, never a NaN history
        raise RuntimeError(f"training {which}diverged in epoch {epoch + 1}: the "
                           f"{'loss is' if weights_finite else 'weights are'} no longer finite; the model's "
                           f"weights are put back as they were before fit; try a smaller lr than {lr}")
    hist.step_loss += (loss_sum / n).tolist()
    hist.step_acc += (right / n).tolist()
    hist.epoch_loss.append(sum(hist.step_loss[-len(losses):]) / len(losses))


def test_score(model: nn.Module, test: Union[Data, Batches], precision: str) -> Score:
    """The model's score on the test set, over all processes.

    A Data's test tensors, and a DataLoader with a DistributedSampler, are split between the processes:
    each scores its share and the sums are added. Any other test loader is scored whole by every
    process (the same numbers on each; summing them would count every image once per process).
    """
    if isinstance(test, Data):
        test = _slices(distributed.shard(test.x_test), distributed.shard(test.y_test), 1024)
    elif not isinstance(getattr(test, "sampler", None), DistributedSampler):
        return _score(_test_sums(model, test, precision))
    return _score(distributed.all_sum(_test_sums(model, test, precision)))


def initial_model(make_model: Callable[[], nn.Module], seed: int,
                  device: Optional[torch.device] = None) -> nn.Module:
    """The untrained model that train_or_load starts a run with this seed from:
    torch.manual_seed(seed), then make_model(), moved to device."""
    torch.manual_seed(seed)
    model = make_model()
    return model if device is None else model.to(device)


def train_or_load(make_model: Callable[[], nn.Module], data: Data, cfg: FitConfig, teacher: Optional[nn.Module] = None,
                  name: str = "model", cache: bool = True, progress: bool = True,
                  verbose: bool = True, features: Optional[FeatureTerm] = None) -> Tuple[nn.Module, History]:
    """Build make_model() with cfg.seed and train it with fit, or load the checkpoint of the same run.

    The checkpoint's key hashes the content of everything that decides the run: the architecture
    (module_content: every setting of every submodule and the code of the model's classes that are
    not torch's own, so a changed forward is another run), cfg, the training data (name, source,
    labels, every byte of the images), the teacher (the same, with every parameter and buffer) and
    the feature term, if any (fit's features).
    A loaded model is scored again on data's test set. A checkpoint that is damaged or does not
    match is trained again, with a message, from a fresh model with the seed's initial weights, as a
    clean run. Checkpoints are self-describing dicts, loaded with torch.load(..., weights_only=True),
    written under a temporary name of their own and renamed. A checkpoint that cannot be written (a
    read-only or full cache) is a warning: the trained model is returned all the same. The key does
    not cover kdlib's training loop (nor torch's code): after changing it, clear the cache (the
    folder KDLIB_CACHE, by default ~/.cache/kdlib).
    """
    return train_or_load_many(make_model, data, [cfg], [teacher], [name], cache, progress, verbose,
                              features=features)[0]


def train_or_load_many(make_model: Callable[[], nn.Module], data: Data, cfgs: Sequence[FitConfig],
                       teachers: Sequence[Optional[nn.Module]], names: Sequence[str], cache: bool = True,
                       progress: bool = True, verbose: bool = True, together: Optional[bool] = None,
                       features: Optional[FeatureTerm] = None) -> List[Tuple[nn.Module, History]]:
    """train_or_load for several runs of one architecture: run i is (cfgs[i], teachers[i], names[i]).

    Each run loads from the cache as train_or_load would (the same key), and the runs that are not
    there train together in one pass (fit with a list of models, see kdlib.together) when
    together is True and the architecture allows it, otherwise one after another. together=None:
    in one pass on an accelerator, one after another on a CPU, where stacking was measured slower
    (kdlib.together says by how much). A run trained together equals the run
    trained alone up to float rounding, as it would on another CPU: the key is the run's, not the
    group's. features: fit's feature term, for every run (each then trains alone). Returns
    [(model, History)] in the order of cfgs.
    """
    if not (len(cfgs) == len(teachers) == len(names)):
        raise ValueError(f"cfgs, teachers and names must have one entry per run, got {len(cfgs)}, "
                         f"{len(teachers)} and {len(names)}")
    device = data.x_train.device
    say = print if verbose and distributed.is_main() else (lambda *a: None)
    out: List[Optional[Tuple[nn.Module, History]]] = [None] * len(cfgs)
    todo = []  # (i, fresh model, checkpoint path, key) of the runs to train
    for i, (cfg, teacher, name) in enumerate(zip(cfgs, teachers, names)):
        model = initial_model(make_model, cfg.seed, device)  # every run with a seed starts from its weights
        # the fresh model's content: its initial weights and settings, which str(model) does not show
        key = fingerprint([name, str(model), module_content(model), asdict(cfg),
                           resolve_precision(device, cfg.precision), dry_run(),
                           data.name, data.source, data.y_train, data.x_train,
                           module_content(teacher) if teacher is not None else None]
                          + ([] if features is None else [asdict(features)]))  # no term: as before
        path = cache_dir() / "checkpoints" / f"{name}-{key}.pt"
        if cache and path.exists():
            try:
                out[i] = load_checkpoint(path, key, model, data, cfg)
                say(f"{name}: loaded from the cache (trained in {out[i][1].seconds:.1f} s)")
                continue
            except Exception as e:  # damaged, foreign or stale: never a crash, never a wrong model
                say(f"{name}: the cached checkpoint could not be used ({type(e).__name__}: {e}); training again")
                model = initial_model(make_model, cfg.seed, device)  # not the weights a half-done load left behind
        todo.append((i, model, path, key))
    if not todo:
        return out
    models = [m for _, m, _, _ in todo]
    runs = [(cfgs[i], teachers[i]) for i, _, _, _ in todo]
    if together is None:
        together = device.type != "cpu"
    group = together and len(todo) > 1 and not distributed.active() and features is None
    try:
        if group:
            check_together(models, [c for c, _ in runs])
    except ValueError:  # batch norm, dropout, augmentation: one after another
        group = False

    def finish(i: int, model: nn.Module, path: Path, key: str, hist: History) -> None:
        say(f"{names[i]}: trained {len(hist.epoch_loss)} epochs in {hist.seconds:.1f} s, test accuracy "
            f"{hist.test_acc:.2%} ({hist.test_errors} errors)")
        if cache and distributed.is_main():  # one writer, however many processes trained the model
            save_checkpoint(path, {"key": key, "name": names[i], "config": asdict(cfgs[i]),
                                   "model": model.state_dict(), "history": asdict(hist)})
        out[i] = (model, hist)

    if group:
        hists = fit(models, data, [c for c, _ in runs], teacher=[t for _, t in runs], progress=progress,
                    desc=f"{len(todo)} runs")
        for (i, model, path, key), hist in zip(todo, hists):
            finish(i, model, path, key, hist)
    else:  # each run saved as soon as it is trained: a stopped experiment keeps what it finished
        for (i, model, path, key), (c, t) in zip(todo, runs):
            finish(i, model, path, key, fit(model, data, c, teacher=t, progress=progress, desc=names[i],
                                            features=features))
    return out


def load_checkpoint(path: Path, key: str, model: nn.Module, data: Data, cfg: FitConfig) -> Tuple[nn.Module, History]:
    """The run stored at path, into model, scored again on data's test set (the key covers the training
    data, not the test set); an exception when the file is damaged or holds another run."""
    ckpt = torch.load(path, map_location=data.x_train.device, weights_only=True)
    if ckpt.get("key") != key:
        raise ValueError("its key does not match this run")
    model.load_state_dict(ckpt["model"])
    hist = History(**ckpt["history"])
    score = evaluate(model, data.x_test, data.y_test, precision=cfg.precision)
    hist.test_acc, hist.test_errors, hist.from_cache = score.accuracy, score.errors, True
    return model, hist


def save_checkpoint(path: Path, checkpoint: dict) -> None:
    """torch.save under a temporary name of this writer's own, then an atomic rename to path (two
    processes saving the same run at once each write a whole file). A file that cannot be written is
    a warning, not an error: the run is not lost, only not cached."""
    tmp = temporary_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:  # opened here: a read-only folder is an OSError, not torch's RuntimeError
            torch.save(checkpoint, f)
        os.replace(tmp, path)  # atomic: a half-written file never has the final name
    except (OSError, RuntimeError) as e:  # torch.save reports a failed write (a full disk) as a RuntimeError
        reason = unwritable(e, path) if isinstance(e, OSError) else f"cannot write the checkpoint {path}: {e}"
        warnings.warn(f"{reason}; the trained model is returned, not cached", stacklevel=3)
    finally:
        discard(tmp)
