"""How fast is kdlib's loop? ``python -m kdlib.bench [--dataset fashion-mnist] [--epochs 3] [--repeats 3]``

Four loops do the same work: distil Hinton's teacher (784-1200-1200-10) into the student
(784-800-800-10) with the same data, batch size, optimiser (SGD, momentum 0.9), T and alpha,
for the same epochs, each counting every pass of the teacher it makes.

    tutorial       the PyTorch knowledge-distillation tutorial's loop (train_knowledge_distillation):
                   a TensorDataset and a DataLoader, the teacher's forward pass on every batch
    per-image PIL  a torchvision-style Dataset (one image at a time through PIL, ToTensor,
                   Normalize), a DataLoader, and the teacher on every batch
    kdlib          kdlib.fit: tensors on the device, index-slice batches, the teacher's logits in one pass
    floor          the student's forward, backward and step alone, on batches made in advance:
                   a plain PyTorch step, without even the teacher

The loops run interleaved (tutorial, per-image PIL, kdlib, floor, tutorial, ...), so that a slow or fast
phase of the machine meets all of them, and the best of the repeats counts. It prints each loop's
time, its ratio to the floor and kdlib's speed-up over it, and the test accuracy each reached.
A benchmark, not a test.

For the CIFAR chapters, the speed of one model on CIFAR-shaped tensors (no data needed):
forward_flops, inference_ms, epoch_seconds (teacher logits cached or recomputed per batch),
and estimated_seconds, a FLOP-count estimate for a GPU that is not at hand.

``python -m kdlib.bench --together 8 [--epochs 1]`` times several models trained at once
(kdlib.together) against the same models one at a time: together().
"""
from __future__ import annotations

import argparse
import copy
import math
import statistics
import time
from dataclasses import dataclass, replace
from typing import Callable, Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .data import DATASETS, Data, load_dataset
from .experiments import hinton_setup, map_grid
from .models import count_params, eval_mode, hinton_student, hinton_teacher, probe
from .profiles import dry_run, select_device
from .losses import distillation_loss
from .precision import autocast, grad_scaler
from .teacher import frozen_forward
from .train import FitConfig, backward_step, evaluate, fit, initial_model, train_or_load

__all__ = ["tutorial_epochs", "per_image_pil_epochs", "floor_epochs", "run", "together", "step_seconds", "forward_flops",
           "inference_ms", "epoch_seconds", "estimated_seconds", "T4_ASSUMED_TFLOPS", "Speed", "speed_table",
           "format_speed", "estimated_setup_seconds"]

# An assumption, not a measurement: the float16 throughput a Colab T4 sustains when training
# these small CIFAR models (its tensor-core peak is 65 TFLOP/s; small convolutions and
# attention reach a small fraction of it). Used only for estimates labelled as such.
T4_ASSUMED_TFLOPS = 5.0


def tutorial_epochs(student: nn.Module, teacher: nn.Module, data: Data, cfg: FitConfig) -> float:
    """The loop of PyTorch's knowledge-distillation tutorial (its train_knowledge_distillation, as
    published), with kdlib's optimiser, T and alpha so that the work is the same. Returns seconds.
    Trains student in place."""
    from torch.utils.data import DataLoader, TensorDataset

    device = data.x_train.device
    train_loader = DataLoader(TensorDataset(data.x_train, data.y_train), batch_size=cfg.batch_size, shuffle=True,
                              generator=torch.Generator().manual_seed(cfg.seed))
    T, soft_target_loss_weight, ce_loss_weight = cfg.T, cfg.alpha, 1 - cfg.alpha
    ce_loss = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(student.parameters(), lr=cfg.lr, momentum=0.9)  # the tutorial: Adam
    teacher.eval()
    student.train()
    start = time.perf_counter()
    for _ in range(cfg.epochs):
        running_loss = 0.0
        for inputs, labels in train_loader:
            inputs, labels = inputs.to(device), labels.to(device)
            optimizer.zero_grad()
            with torch.no_grad():
                teacher_logits = teacher(inputs)
            student_logits = student(inputs)
            soft_targets = F.softmax(teacher_logits / T, dim=-1)
            soft_prob = F.log_softmax(student_logits / T, dim=-1)
            soft_targets_loss = (torch.sum(soft_targets * (soft_targets.log() - soft_prob))
                                 / soft_prob.size()[0] * (T**2))
            label_loss = ce_loss(student_logits, labels)
            loss = soft_target_loss_weight * soft_targets_loss + ce_loss_weight * label_loss
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
    sync(device)
    return time.perf_counter() - start


def per_image_pil_epochs(student: nn.Module, teacher: nn.Module, data: Data, cfg: FitConfig) -> float:
    """The loop most tutorials write. Returns seconds. Trains student in place."""
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    # back to the uint8 images the files hold, so that the transforms do their usual per-image work
    (mean,), (std,) = DATASETS[data.name][1:3]
    raw = ((data.x_train.cpu() * std + mean) * 255).round().clamp(0, 255).to(torch.uint8)[:, 0].numpy()

    class Images(Dataset):  # as torchvision's MNIST: an uint8 array, PIL, then the transforms, per sample
        tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((mean,), (std,))])

        def __len__(self):
            return len(raw)

        def __getitem__(self, i):
            return self.tf(Image.fromarray(raw[i], mode="L")), int(data.y_train[i])

    device = data.x_train.device
    loader = DataLoader(Images(), batch_size=cfg.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(cfg.seed))
    opt = torch.optim.SGD(student.parameters(), lr=cfg.lr, momentum=0.9)
    scaler = grad_scaler(device)  # kdlib.fit's default precision (fp32 on a CPU)
    kl = nn.KLDivLoss(reduction="batchmean")
    teacher.eval()
    student.train()
    start = time.perf_counter()
    for _ in range(cfg.epochs):
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            with torch.no_grad(), autocast(device):
                v = teacher(x).float()
            with autocast(device):
                z = student(x).float()
            loss = (cfg.alpha * cfg.T**2 * kl(F.log_softmax(z / cfg.T, 1), F.softmax(v / cfg.T, 1))
                    + (1 - cfg.alpha) * F.cross_entropy(z, y))
            opt.zero_grad()
            backward_step(loss, opt, scaler)
    sync(device)
    return time.perf_counter() - start


def floor_epochs(student: nn.Module, data: Data, cfg: FitConfig) -> float:
    """Forward, backward and step of the student alone, on batches sliced in advance. Returns seconds."""
    g = torch.Generator().manual_seed(cfg.seed)
    batches = []
    for _ in range(cfg.epochs):
        order = torch.randperm(len(data.y_train), generator=g).to(data.x_train.device)
        batches += [(data.x_train[i], data.y_train[i]) for i in order.split(cfg.batch_size)]
    opt = torch.optim.SGD(student.parameters(), lr=cfg.lr, momentum=0.9)
    device = data.x_train.device
    scaler = grad_scaler(device)  # kdlib.fit's default precision (fp32 on a CPU)
    student.train()
    sync(device)
    start = time.perf_counter()
    for x, y in batches:
        with autocast(device):
            z = student(x)
        loss = F.cross_entropy(z.float(), y)
        opt.zero_grad()
        backward_step(loss, opt, scaler)
    sync(device)
    return time.perf_counter() - start


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------ one model's speed, CIFAR-shaped
def step_seconds(fn: Callable[[], None], repeat: int = 30, warmup: int = 3) -> float:
    """The median wall-clock seconds of fn() over repeat calls, after warmup calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def forward_flops(model: nn.Module, shape: Sequence[int] = (3, 32, 32)) -> int:
    """Floating-point operations of one forward pass on one image of `shape`, from the layer shapes.

    The convention: a multiply-add is 2 FLOPs, and only the products are counted:
        nn.Linear            2 * in_features * out_features per output row
        nn.Conv1d/2d/3d      2 * (C_in / groups) * prod(kernel) per output value
        nn.MultiheadAttention, for L queries, S keys and width E: the input projections
                             2 * (L E + S kdim + S vdim) * E (2 * (L + 2S) * E^2 when kdim = vdim = E),
                             the two attention products Q K^T and softmax(.) V,
                             2 * L * S * E each (all heads together), and the output projection 2 * L * E^2
    Biases, activations, normalisation, pooling and softmax are not counted (a few percent at most).
    The count depends only on the architecture, not on the PyTorch version: a profiler such as
    torch.utils.flop_counter changes its rules between releases (it added the attention products).
    """
    attention = [m for m in model.modules() if isinstance(m, nn.MultiheadAttention)]
    inside_attention = {id(sub) for m in attention for sub in m.modules() if sub is not m}
    total = 0

    def linear(m: nn.Linear, args, kwargs, out: Tensor) -> None:
        nonlocal total
        total += 2 * m.in_features * out.numel()

    def conv(m: nn.Conv2d, args, kwargs, out: Tensor) -> None:
        nonlocal total
        total += 2 * (m.in_channels // m.groups) * math.prod(m.kernel_size) * out.numel()

    def attend(m: nn.MultiheadAttention, args, kwargs, out) -> None:
        nonlocal total
        q = args[0] if args else kwargs["query"]            # (B, L, E) with batch_first, else (L, B, E)
        k = args[1] if len(args) > 1 else kwargs["key"]     # (B, S, kdim)
        L, S = (q.shape[1], k.shape[1]) if m.batch_first else (q.shape[0], k.shape[0])
        B, E = q.numel() // (L * m.embed_dim), m.embed_dim
        total += B * (2 * L * E * E + 2 * S * (m.kdim + m.vdim) * E  # projections of queries, keys, values
                      + 2 * 2 * L * S * E                   # Q K^T and softmax(Q K^T / sqrt(d)) V
                      + 2 * L * E * E)                      # output projection

    hooks = {}
    for m in model.modules():
        if id(m) in inside_attention:
            continue  # attention's own projections are counted by attend (its forward bypasses their hooks)
        if isinstance(m, nn.Linear):
            hooks[m] = linear
        elif isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):  # not the transposed ones
            hooks[m] = conv
        elif isinstance(m, nn.MultiheadAttention):
            hooks[m] = attend
    # with gradients enabled: PyTorch's fused inference path for transformer layers skips the hooks
    probe(model, shape, hooks, grad=True)
    return total


def inference_ms(model: nn.Module, batch_size: int = 256, shape: Sequence[int] = (3, 32, 32),
                 repeat: int = 5) -> float:
    """Milliseconds per image of a forward pass in eval mode, batch_size images at a time, on the model's device."""
    device = next(model.parameters()).device
    x = torch.randn(batch_size, *shape, device=device)

    def forward():
        with torch.no_grad(), autocast(device):
            model(x)
        sync(device)

    with eval_mode(model):
        seconds = step_seconds(forward, repeat=repeat, warmup=1)
    return 1000 * seconds / batch_size


def epoch_seconds(student: nn.Module, teacher: Optional[nn.Module] = None, cached: bool = True,
                  n_images: int = 50_000, batch_size: int = 128, steps: int = 5,
                  shape: Sequence[int] = (3, 32, 32)) -> float:
    """Seconds for one training epoch of n_images, from the median of `steps` timed steps (random tensors).

    The step is kdlib.fit's: forward (in its default precision), loss, backward, SGD step. With a teacher,
    cached=True reads its logits from a table (as fit does on fixed inputs; the one pass that makes
    the table is not counted) and cached=False runs the teacher on every batch (as with augmentation).
    """
    if steps < 1 or n_images < 1 or batch_size < 1:
        raise ValueError(f"steps, n_images and batch_size must be >= 1, got {steps}, {n_images}, {batch_size}")
    device = next(student.parameters()).device
    x = torch.randn(batch_size, *shape, device=device)
    y = torch.randint(0, 10, (batch_size,), device=device)
    table = frozen_forward(teacher, x) if teacher is not None else None
    opt = torch.optim.SGD(student.parameters(), lr=1e-3, momentum=0.9)
    scaler = grad_scaler(device)
    student.train()

    def step():
        with autocast(device):
            z = student(x).float()
        if teacher is None:
            loss = F.cross_entropy(z, y)
        else:
            v = table if cached else frozen_forward(teacher, x, batch_size)
            loss = distillation_loss(z, v, y, T=4.0, alpha=0.9, check=False)
        opt.zero_grad(set_to_none=True)
        backward_step(loss, opt, scaler)
        sync(device)

    return step_seconds(step, repeat=steps, warmup=1) * -(-n_images // batch_size)


def estimated_seconds(flops: float, images: int, tflops: float = T4_ASSUMED_TFLOPS) -> float:
    """An estimate, not a measurement: seconds to process `images` at `flops` each, at `tflops` sustained.

    For training, pass 3x the forward FLOPs (the backward pass costs about twice the forward).
    """
    if not tflops > 0:
        raise ValueError(f"tflops must be > 0, got {tflops}")
    return flops * images / (tflops * 1e12)


LOOPS = ("tutorial", "per-image PIL", "kdlib", "floor")


def run(dataset: str = "fashion-mnist", epochs: int = 3, batch_size: int = 64, device: Optional[str] = None,
        repeats: int = 3) -> Dict[str, Dict[str, float]]:
    """Time the four loops on the same work, interleaved, `repeats` times each; print the best times.

    Returns {loop: {"seconds": best time, "accuracy": test accuracy}} for the loops in LOOPS.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    dev = select_device(device)
    data = load_dataset(dataset, device=dev, verbose=False)
    cfg = FitConfig(epochs=epochs, batch_size=batch_size, lr=0.01, T=20.0, alpha=0.9, eval_each_epoch=False)
    # a teacher trained briefly (and cached), so that the accuracies mean something
    teacher, _ = train_or_load(hinton_teacher, data, FitConfig(epochs=2), name=f"bench-teacher-{dataset}",
                               progress=False)

    def fresh_student() -> nn.Module:
        torch.manual_seed(1)
        return hinton_student().to(dev)

    def kdlib_seconds(student: nn.Module) -> float:
        # a copy of the teacher is a new object: fit makes its logits again, and the time counts that pass
        return fit(student, data, cfg, teacher=copy.deepcopy(teacher), progress=False).seconds

    loops = {"tutorial": lambda s: tutorial_epochs(s, teacher, data, cfg),
             "per-image PIL": lambda s: per_image_pil_epochs(s, teacher, data, cfg),
             "kdlib": kdlib_seconds,
             "floor": lambda s: floor_epochs(s, data, cfg)}
    # warm up the kernels and the allocator before any clock starts
    floor_epochs(fresh_student(), data.with_train(torch.arange(min(2048, len(data.y_train))), "warm-up"),
                 FitConfig(epochs=1))
    times: Dict[str, list] = {name: [] for name in loops}
    accuracy: Dict[str, float] = {}
    for _ in range(repeats):
        for name, loop in loops.items():  # interleaved: each repeat runs every loop once
            student = fresh_student()
            times[name].append(loop(student))
            accuracy[name] = evaluate(student, data.x_test, data.y_test).accuracy
    best = {name: min(t) for name, t in times.items()}  # the least disturbed run of each

    print(f"{dataset} ({len(data.y_train):,} images), {epochs} epoch(s), batch {batch_size}, Hinton MLPs, "
          f"device {dev.type}, torch {torch.__version__}; best of {repeats}, interleaved")
    print(f"{'loop':<46}{'seconds':>8}{'x floor':>8}{'kdlib x':>8}{'test acc':>9}")
    names = {"tutorial": "PyTorch tutorial (DataLoader, teacher/batch)",
             "per-image PIL": "per-image PIL Dataset (teacher/batch)",
             "kdlib": "kdlib.fit (teacher's one pass counted)",
             "floor": "floor (student forward/backward/step)"}
    for name in loops:
        sec = best[name]
        print(f"{names[name]:<46}{sec:8.2f}{sec / best['floor']:8.2f}{sec / best['kdlib']:8.2f}"
              f"{accuracy[name]:9.4f}")
    print(f"kdlib.fit is {best['tutorial'] / best['kdlib']:.2f}x as fast as the PyTorch tutorial's loop and "
          f"{best['kdlib'] / best['floor']:.2f}x the floor")
    return {name: {"seconds": best[name], "accuracy": accuracy[name]} for name in loops}


def together(n: int = 8, epochs: int = 1, repeats: int = 3, device: Optional[str] = None,
             data: Optional[Data] = None) -> Dict[str, float]:
    """Chapter 8's grid: n of its distilled students (seed 0, its first n (T, alpha) cells, the cpu
    profile's settings for `epochs` epochs) trained one at a time, then all n at once (fit with a list
    of models, kdlib.together), interleaved, `repeats` times each; print the best times and their ratio.

    data: the students' images (default: the cpu profile's 4,000 MNIST images). The teacher is a
    Hinton teacher trained for one epoch (cached), so the soft targets are a trained model's.
    Returns {"one at a time": seconds, "together": seconds, "ratio": one at a time / together}.
    """
    if n < 2 or repeats < 1:
        raise ValueError(f"n must be >= 2 and repeats >= 1, got n={n}, repeats={repeats}")
    dev = select_device(device)
    setup = hinton_setup("cpu")
    data = setup.data(load_dataset("mnist", device=dev, verbose=False)) if data is None else data
    Ts, alphas, _ = map_grid("cpu")
    cells = [(T, a) for T in Ts for a in alphas][:n]
    if len(cells) < n:
        raise ValueError(f"n must be at most the grid's {len(Ts) * len(alphas)} cells, got {n}")
    cfgs = [replace(setup.distilled(T, a, 0), epochs=epochs, eval_each_epoch=False) for T, a in cells]
    teacher, _ = train_or_load(setup.make_teacher, data, FitConfig(epochs=1), name="bench-grid-teacher",
                               progress=False, verbose=False)

    def students() -> list:
        return [initial_model(setup.make_student, c.seed, dev) for c in cfgs]

    def one_at_a_time() -> float:
        return sum(fit(m, data, c, teacher=teacher, progress=False).seconds for m, c in zip(students(), cfgs))

    def at_once() -> float:
        return sum(h.seconds for h in fit(students(), data, cfgs, teacher=teacher, progress=False))

    at_once()  # warm up the kernels and the allocator before any clock starts
    times: Dict[str, list] = {"one at a time": [], "together": []}
    for _ in range(repeats):  # interleaved: A, B, A, B ...
        times["one at a time"].append(one_at_a_time())
        times["together"].append(at_once())
    best = {name: min(t) for name, t in times.items()}
    ratio = best["one at a time"] / best["together"]
    print(f"chapter 8's grid: {n} distilled Hinton students, {len(data.y_train):,} images, {epochs} epoch(s), "
          f"device {dev.type}, {torch.get_num_threads()} threads, torch {torch.__version__}; best of "
          f"{repeats}, interleaved")
    print(f"one at a time {best['one at a time']:7.2f} s   together {best['together']:7.2f} s   "
          f"together is {ratio:.2f}x as fast")
    return {**best, "ratio": ratio}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion-mnist", choices=["mnist", "fashion-mnist"])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default=None)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--together", type=int, metavar="N", default=0,
                   help="instead: N students of chapter 8's grid, one at a time and all at once")
    a = p.parse_args()
    if a.together:
        together(a.together, a.epochs, a.repeats, a.device)
    else:
        run(a.dataset, a.epochs, a.batch_size, a.device, a.repeats)


if __name__ == "__main__":
    main()


# ------------------------------------------------------------------ a teacher and a student, side by side
CIFAR_TRAIN_IMAGES = 50_000


@dataclass
class Speed:
    """One row of a speed table: measured on this device, and estimated for a T4."""

    params: int
    forward_flops: int            # per image
    ms_per_image: Optional[float]  # inference, measured (None: same model as the row above)
    s_per_epoch: float            # training, measured: median step time x steps per epoch
    t4_s_per_epoch: float         # an estimate (estimated_seconds), not a measurement


def speed_table(teacher: nn.Module, student: nn.Module, names: Sequence[str] = ("teacher", "student"),
                steps: int = 5, batch_size: int = 128,
                n_images: int = CIFAR_TRAIN_IMAGES) -> Dict[str, Speed]:
    """What a teacher and a student cost per image and per epoch, and what distilling one into the other costs.

    Rows: the teacher trained alone; the student on labels; the student distilled with the
    teacher's logits cached (fixed inputs) and with the teacher run on every batch (augmented
    inputs). Models on the same device; random CIFAR-shaped tensors; both models are trained a
    few steps in place (pass copies).
    """
    t_name, s_name = names
    if dry_run():  # KDLIB_DRY_RUN: one small timed step of each, so the code runs in seconds
        steps, batch_size = 1, min(batch_size, 16)
    f_t, f_s = forward_flops(teacher), forward_flops(student)
    n_t, n_s = count_params(teacher), count_params(student)

    def epoch(model, with_teacher=None, cached=True):
        return epoch_seconds(model, with_teacher, cached, n_images, batch_size, steps)

    def est(train_flops):
        return estimated_seconds(train_flops, n_images)

    infer = {m: inference_ms(m, batch_size, repeat=steps) for m in (teacher, student)}
    return {
        f"{t_name}": Speed(n_t, f_t, infer[teacher], epoch(teacher), est(3 * f_t)),
        f"{s_name}, labels only": Speed(n_s, f_s, infer[student], epoch(student), est(3 * f_s)),
        f"{s_name}, distilled, teacher cached": Speed(n_s, f_s, None, epoch(student, teacher), est(3 * f_s)),
        f"{s_name}, distilled, teacher per batch": Speed(n_s, f_s, None, epoch(student, teacher, cached=False),
                                                         est(3 * f_s + f_t)),
    }


def format_speed(table: Dict[str, Speed]) -> str:
    """speed_table's rows as a text table."""
    # 88 columns: the T4 column is an estimate from FLOPs (T4_ASSUMED_TFLOPS), not a measurement
    lines = [f"{'':35}{'params':>11}{'MFLOPs':>7}{'ms/image':>9}{'s/epoch':>9}{'T4 s/epoch, est.':>17}"]
    for name, r in table.items():
        ms = "" if r.ms_per_image is None else f"{r.ms_per_image:.3f}"
        lines.append(f"{name[:35]:35}{r.params:>11,}{r.forward_flops / 1e6:>7.0f}{ms:>9}{r.s_per_epoch:>9.1f}"
                     f"{r.t4_s_per_epoch:>17.1f}")
    return "\n".join(lines)


def estimated_setup_seconds(setup, teacher_flops: float, student_flops: float, distilled_per_seed: int,
                            labels_only_per_seed: int = 1, n_images: int = CIFAR_TRAIN_IMAGES,
                            tflops: float = T4_ASSUMED_TFLOPS) -> float:
    """An estimate of a whole experiment's training time: the teacher, then per seed the students.

    setup: a kdlib.experiments.Setup. A distilled student costs the teacher's forward pass too when
    its inputs are augmented (the teacher runs on every batch); otherwise its logits come once.
    """
    t = setup.teacher.epochs * estimated_seconds(3 * teacher_flops, n_images, tflops)
    per_batch_teacher = teacher_flops if setup.student.augment else 0
    per_seed = setup.student.epochs * (
        labels_only_per_seed * estimated_seconds(3 * student_flops, n_images, tflops)
        + distilled_per_seed * estimated_seconds(3 * student_flops + per_batch_teacher, n_images, tflops))
    return t + len(setup.seeds) * per_seed
