"""One training loop for teachers, students from scratch and distilled students.

    fit(model, data, config)                    cross entropy on the labels
    fit(model, data, config, teacher=teacher)   kdlib's distillation loss, teacher frozen

The teacher's logits do not change while the student learns, so on un-augmented data they
are computed once (in large batches, no gradient) and each batch reads its rows by index.
With augmentation every batch is a new image, so the teacher runs on every batch.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from numbers import Integral, Real
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from .data import Data, augment_crop_flip, batch_indices, cache_dir
from .models import eval_mode
from .losses import check_alpha, check_labels, check_temperature, distillation_loss, hard_distillation_loss
from .profiles import DRY_RUN_EPOCHS, dry_run

__all__ = ["FitConfig", "History", "Score", "fit", "evaluate", "frozen_forward", "teacher_logits", "train_or_load"]


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


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
    augment: bool = False           # random crop + flip on the device (CIFAR)
    eval_each_epoch: bool = True    # test accuracy after every epoch (else only at the end)
    precision: str = "auto"         # "fp32", "bf16", "fp16" or "auto" (see resolve_precision)
    seed: int = 0

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"schedule must be 'constant' or 'cosine', got {self.schedule!r}")
        check_precision(self.precision)
        check_temperature(self.T)
        check_alpha(self.alpha)


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


# ------------------------------------------------------------------ the teacher's side
@torch.no_grad()
def frozen_forward(teacher: nn.Module, x: Tensor, batch_size: int = 1024,
                   precision: str = "auto") -> Tensor:
    """The teacher's logits (N, C) for x (N, ...), in eval mode, without gradient, in large batches.

    The products run in `precision` (see resolve_precision); the logits come back as float32.
    """
    with eval_mode(teacher), autocast(x.device, precision):
        return torch.cat([teacher(x[i: i + batch_size]).float() for i in range(0, len(x), batch_size)])


_LOGIT_CACHE: Dict[tuple, tuple] = {}


def teacher_logits(teacher: nn.Module, x: Tensor, batch_size: int = 1024, precision: str = "auto") -> Tensor:
    """frozen_forward(teacher, x, precision=...), remembered: the same teacher, unchanged, on the same
    images, in the same precision, skips the pass.

    The key is content, not identity: fingerprint(module_content(teacher)), every byte of every
    parameter, buffer and tensor attribute with each submodule's class and settings, and every byte
    of x with its dtype, shape and device. So any change is a miss, however it is made (an optimiser
    step, p.data.mul_, p.data = t, vector_to_parameters, a new nn.Parameter, batch-norm statistics,
    x.data, the numpy array under torch.from_numpy), and an equal copy of x is a hit. A hit also
    needs the same teacher object (a weak reference). Not in the key: the teacher's code and hooks.
    Cost: one pass over the bytes, 0.1 s for 60,000 Fashion-MNIST images (188 MB) on a 2-core CPU;
    kdlib.fit pays it once per call, never per step. Returns a copy: changing it leaves the cache intact.
    """
    precision = resolve_precision(x.device, precision)
    key = (id(teacher), fingerprint([module_content(teacher), x, str(x.device), precision]))
    hit = _LOGIT_CACHE.get(key)
    if hit is None or hit[0]() is not teacher:
        if len(_LOGIT_CACHE) >= 8:
            _LOGIT_CACHE.pop(next(iter(_LOGIT_CACHE)))
        hit = _LOGIT_CACHE[key] = (weakref.ref(teacher), frozen_forward(teacher, x, batch_size, precision))
    return hit[1].clone()


def resolve_precision(device: torch.device, precision: str = "auto") -> str:
    """The precision of the matrix products: precision itself, or for "auto" the device's best.

    "auto" is bf16 on a GPU that supports it (Ampere and later: as fast as fp16, and no gradient
    scaling, since bf16 has float32's range), fp16 on older GPUs, and fp32 on a CPU (where bf16
    matrix products are slower than fp32 on most processors).
    """
    if check_precision(precision) != "auto":
        return precision
    if device.type == "cuda":  # bf16 in hardware from compute capability 8 (Ampere) on
        return "bf16" if torch.cuda.get_device_capability(device)[0] >= 8 else "fp16"
    return "fp32"


def autocast(device: torch.device, precision: str = "auto"):
    """Mixed precision (torch.autocast) for bf16 and fp16, plain float32 for fp32; on any device.

    For fp32 it is a null context, not a disabled autocast: entering even a disabled one costs
    about half a millisecond on a CPU, which is a tenth of a small training step.
    """
    precision = resolve_precision(device, precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 1024,
             precision: str = "auto") -> Score:
    """Accuracy, number of errors and mean cross entropy of model on (x (N, ...), y (N,)), in eval mode.

    The products run in `precision` (see resolve_precision).
    """
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(f"x and y must hold the same number (>= 1) of examples, got {len(x)} and {len(y)}")
    with eval_mode(model), autocast(x.device, precision):
        logits = torch.cat([model(x[i: i + batch_size]).float() for i in range(0, len(x), batch_size)])
    errors = int((logits.argmax(1) != y).sum())
    return Score(1 - errors / len(y), errors, F.cross_entropy(logits, y).item())


# ------------------------------------------------------------------ the loop
def grad_scaler(device: torch.device, precision: str = "auto") -> Optional[torch.amp.GradScaler]:
    """A gradient scaler for fp16 training, on any device; None (a plain step) for fp32 and bf16.

    fp16's smallest normal number is 6e-5: small gradients would round to zero unless the loss is
    scaled up before backward() and the gradients scaled back down before the step.
    """
    if resolve_precision(device, precision) != "fp16":
        return None
    return torch.amp.GradScaler(device.type)


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


def check_fit_inputs(model: nn.Module, data: Data, teacher: Optional[nn.Module]) -> None:
    if len(data.x_train) != len(data.y_train) or data.y_train.dtype != torch.int64:
        raise ValueError(f"data must have one int64 label per training image, got {len(data.x_train)} images "
                         f"and labels {tuple(data.y_train.shape)} of dtype {data.y_train.dtype}")
    check_labels(data.y_train, len(data.y_train), data.num_classes, name="data.y_train")
    # two examples, not one: a batch norm without running statistics needs two values per channel
    probe = data.x_train[:2]
    with torch.no_grad(), eval_mode(model):
        C = model(probe).shape[-1]
    if C != data.num_classes:
        raise ValueError(f"model gives {C} logits but the data has {data.num_classes} classes")
    if teacher is not None:
        Ct = frozen_forward(teacher, probe).shape[-1]
        if Ct != C:
            raise ValueError(f"teacher gives {Ct} logits but the student gives {C}: "
                             f"teacher and student must share the classes")


def fit(model: nn.Module, data: Data, cfg: FitConfig, teacher: Optional[nn.Module] = None,
        progress: bool = True, desc: str = "",
        loss_fn: Optional[Callable[[Tensor, Tensor, Tensor], Tensor]] = None) -> History:
    """Train model on data.x_train (N, ...) and labels (N,); with a teacher, distil from it.

    Loss per batch: cross entropy with the labels alone; with a teacher, distillation_loss(z, v, y,
    cfg.T, cfg.alpha) on its logits v (or hard_distillation_loss when cfg.hard_distillation), or
    loss_fn(z, v, y) when given (z, v: (B, C) logits, y: (B,) labels; e.g. a loss with a known bug).
    The teacher stays in eval mode under no_grad and is never changed. Returns the History;
    the model is trained in place.
    """
    check_fit_inputs(model, data, teacher)
    if loss_fn is not None and teacher is None:
        raise ValueError("loss_fn(z, v, y) needs a teacher to give v")
    device = data.x_train.device
    torch.manual_seed(cfg.seed)                       # dropout masks
    gen = torch.Generator().manual_seed(cfg.seed)     # batch order and augmentation
    opt = make_optimizer(model, cfg)
    epochs = min(cfg.epochs, DRY_RUN_EPOCHS) if dry_run() else cfg.epochs  # KDLIB_DRY_RUN: code paths, not results
    steps = epochs * -(-len(data.y_train) // cfg.batch_size)
    # cosine: lr_t = lr * (1 + cos(pi t / steps)) / 2, from lr down to 0 over the run
    sched = (torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + math.cos(math.pi * t / steps)))
             if cfg.schedule == "cosine" else None)
    precision = resolve_precision(device, cfg.precision)  # of the student, its teacher and the tests
    scaler = grad_scaler(device, precision)
    hist = History()
    # TQDM_DISABLE=1 silences the bar too (for executing the book's pages)
    quiet = not progress or os.environ.get("TQDM_DISABLE", "0") not in ("", "0")
    bar = tqdm(total=steps, desc=desc or "train", disable=quiet, leave=False)
    start = time.perf_counter()
    # fixed inputs: the teacher's logits once, read by index; augmented: the teacher per batch
    fixed = teacher is not None and not cfg.augment
    cached = teacher_logits(teacher, data.x_train, precision=precision) if fixed else None
    model.train()
    for epoch in range(epochs):
        losses, accs = [], []
        for idx in batch_indices(len(data.y_train), cfg.batch_size, gen, device):
            x, y = data.x_train[idx], data.y_train[idx]
            if cfg.augment:
                x = augment_crop_flip(x, gen)
            with autocast(device, precision):
                z = model(x)
            # the labels were checked once, up front: no per-step checks (each syncs a GPU)
            if teacher is None:
                loss = F.cross_entropy(z.float(), y)
            else:
                v = cached[idx] if fixed else frozen_forward(teacher, x, len(x), precision)
                if loss_fn is not None:
                    loss = loss_fn(z.float(), v, y)
                elif cfg.hard_distillation:
                    loss = hard_distillation_loss(z.float(), v, y, cfg.alpha, check=False)
                else:
                    loss = distillation_loss(z.float(), v, y, cfg.T, cfg.alpha, check=False)
            opt.zero_grad(set_to_none=True)
            backward_step(loss, opt, scaler)
            if sched is not None:
                sched.step()
            # keep the numbers on the device; one transfer per epoch, not one per step
            losses.append(loss.detach())
            accs.append((z.argmax(1) == y).float().mean())
            bar.update()
        if not torch.isfinite(torch.stack(losses)).all():  # a clear error, never a NaN history
            raise RuntimeError(f"training diverged in epoch {epoch + 1}: the loss is no longer finite; "
                               f"try a smaller lr than {cfg.lr}")
        hist.step_loss += torch.stack(losses).tolist()
        hist.step_acc += torch.stack(accs).tolist()
        hist.epoch_loss.append(sum(hist.step_loss[-len(losses):]) / len(losses))
        if cfg.eval_each_epoch and epoch < epochs - 1:  # the last epoch's score comes below
            score = evaluate(model, data.x_test, data.y_test, precision=precision)
            hist.epoch_test_acc.append(score.accuracy)
            bar.set_postfix(loss=f"{hist.epoch_loss[-1]:.3f}", test_acc=f"{hist.epoch_test_acc[-1]:.4f}")
    bar.close()
    hist.seconds = time.perf_counter() - start  # training time: the final test below is not in it
    score = evaluate(model, data.x_test, data.y_test, precision=precision)
    hist.epoch_test_acc.append(score.accuracy)
    hist.test_acc, hist.test_errors = score.accuracy, score.errors
    return hist


# ------------------------------------------------------------------ train once, then load
def fingerprint(obj) -> str:
    """A short hash of the content of tensors, dicts, lists, tuples, numbers and strings: a cache key.

    Every byte of every tensor goes in (bfloat16 too), with its dtype and shape, as does every
    number, with 4 and 4.0 alike. Each item is framed by its type and size, so no two different
    objects feed the same bytes. SHA-1; a tensor over 16 MB is hashed in 16 MB pieces on up to
    8 threads (each copies its piece off the GPU, if any), then their digests: 60,000 Fashion-MNIST
    images (60,000 x 784 float32, 188 MB) take 0.10 s on a 2-core CPU (0.14 s on one thread).
    """
    h = hashlib.sha1()

    def feed(o):
        if isinstance(o, Tensor):
            h.update(f"tensor {o.dtype} {tuple(o.shape)}\n".encode())
            flat = o.detach().resolve_conj().resolve_neg().contiguous().reshape(-1).view(torch.uint8)
            if len(flat) <= _PIECE:
                h.update(flat.cpu().numpy())  # every byte, whatever the dtype
            else:  # hashlib lets go of the GIL: the pieces are copied and hashed side by side
                with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
                    for digest in pool.map(_sha1, flat.split(_PIECE)):
                        h.update(digest)
        elif isinstance(o, dict):
            h.update(f"dict {len(o)}\n".encode())
            for k in sorted(o, key=str):
                feed(str(k))
                feed(o[k])
        elif isinstance(o, (list, tuple)):
            h.update(f"list {len(o)}\n".encode())
            for v in o:
                feed(v)
        else:
            if isinstance(o, Real) and not isinstance(o, bool):  # T=4 and T=4.0 are the same run
                o = int(o) if isinstance(o, Integral) or float(o).is_integer() else float(o)
            h.update(json.dumps(o, sort_keys=True, default=str).encode() + b"\n")

    feed(obj)
    return h.hexdigest()[:16]


_PIECE = 1 << 24  # bytes


def _sha1(piece: Tensor) -> bytes:
    return hashlib.sha1(piece.cpu().numpy()).digest()


_SETTING = (bool, int, float, str, type(None), Tensor)


def module_content(module: nn.Module) -> Dict[str, list]:
    """What decides a module's output besides its code, per submodule (by name): for fingerprint.

    Each submodule's class, its settings (its plain attributes that are numbers, strings, flags or
    tensors, or tuples and lists of them; not the training flag) and its own parameters and buffers,
    persistent or not (a state_dict leaves out the others).
    """
    content = {}
    for name, m in module.named_modules():
        settings = {k: v for k, v in vars(m).items() if not k.startswith("_") and k != "training" and (
            isinstance(v, _SETTING) or isinstance(v, (tuple, list)) and all(isinstance(e, _SETTING) for e in v))}
        content[name] = [f"{type(m).__module__}.{type(m).__qualname__}", settings,
                         dict(m.named_parameters(recurse=False)), dict(m.named_buffers(recurse=False))]
    return content


def train_or_load(make_model: Callable[[], nn.Module], data: Data, cfg: FitConfig, teacher: Optional[nn.Module] = None,
                  name: str = "model", cache: bool = True, progress: bool = True,
                  verbose: bool = True) -> Tuple[nn.Module, History]:
    """Build make_model() with cfg.seed and train it with fit, or load the checkpoint of the same run.

    The checkpoint's key hashes the content of everything that decides the run: the architecture,
    cfg, the training data (name, source, labels, every byte of the images) and the teacher
    (module_content: every parameter and buffer). A loaded model is scored again on data's test set.
    A checkpoint that is damaged or does not match is trained again, with a message, from a fresh
    model with the seed's initial weights, as a clean run. Checkpoints are self-describing dicts, loaded
    with torch.load(..., weights_only=True). The key does not cover kdlib's own code: after changing
    the training code, clear the cache (the folder KDLIB_CACHE, by default ~/.cache/kdlib).
    """
    device = data.x_train.device

    def fresh() -> nn.Module:  # every run with this seed starts from the same initial weights
        torch.manual_seed(cfg.seed)
        return make_model().to(device)

    model = fresh()
    # the fresh model's content: its initial weights and settings, which str(model) does not show
    key = fingerprint([name, str(model), module_content(model), asdict(cfg),
                       resolve_precision(device, cfg.precision), dry_run(),
                       data.name, data.source, data.y_train, data.x_train,
                       module_content(teacher) if teacher is not None else None])
    path = cache_dir() / "checkpoints" / f"{name}-{key}.pt"
    say = print if verbose else (lambda *a: None)
    if cache and path.exists():
        try:
            ckpt = torch.load(path, map_location=device, weights_only=True)
            if ckpt.get("key") != key:
                raise ValueError("its key does not match this run")
            model.load_state_dict(ckpt["model"])
            hist = History(**ckpt["history"])
            # the key covers the training data, not the test set: score the model on the one at hand
            score = evaluate(model, data.x_test, data.y_test, precision=cfg.precision)
            hist.test_acc, hist.test_errors, hist.from_cache = score.accuracy, score.errors, True
            say(f"{name}: loaded from the cache (trained in {hist.seconds:.1f} s)")
            return model, hist
        except Exception as e:  # damaged, foreign or stale: never a crash, never a wrong model
            say(f"{name}: the cached checkpoint could not be used ({type(e).__name__}: {e}); training again")
            model = fresh()  # not the weights a half-done load left behind
    hist = fit(model, data, cfg, teacher=teacher, progress=progress, desc=name)
    say(f"{name}: trained {len(hist.epoch_loss)} epochs in {hist.seconds:.1f} s, test accuracy {hist.test_acc:.2%} "
        f"({hist.test_errors} errors)")
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"key": key, "name": name, "config": asdict(cfg), "model": model.state_dict(),
                    "history": asdict(hist)}, tmp)
        tmp.replace(path)  # atomic: a half-written file never has the final name
    return model, hist
