"""How fast is kdlib's loop? ``python -m kdlib.bench [--dataset fashion-mnist] [--epochs 1]``

Three loops do the same work: distil Hinton's teacher (784-1200-1200-10) into the student
(784-800-800-10) with the same data, batch size, optimiser, T and alpha, for the same epochs.

    seed style  a torchvision-style Dataset (one image at a time through PIL, ToTensor, Normalize),
                a DataLoader, and the teacher's forward pass on every batch
    kdlib       kdlib.fit: tensors on the device, index-slice batches, the teacher's logits once
    floor       the student's forward, backward and step alone, on batches made in advance:
                no loop does less than this

It prints the three times, their ratios and the accuracy each reached. A benchmark, not a test.
"""
from __future__ import annotations

import argparse
import time
from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn

from .data import DATASETS, Data, load_dataset
from .models import hinton_student, hinton_teacher
from .profiles import select_device
from .train import (FitConfig, autocast, backward_step, evaluate, fit, frozen_forward, grad_scaler, teacher_logits,
                    train_or_load)

__all__ = ["seed_style_epochs", "floor_epochs", "run"]


def seed_style_epochs(student: nn.Module, teacher: nn.Module, data: Data, cfg: FitConfig) -> float:
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
    scaler = grad_scaler(device)  # the same precision as kdlib.fit: float16 on CUDA
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
    scaler = grad_scaler(device)  # the same precision as kdlib.fit: float16 on CUDA
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


def run(dataset: str = "fashion-mnist", epochs: int = 1, batch_size: int = 64, device: str = None,
        repeats: int = 3) -> Dict[str, float]:
    """Time the three loops on the same work, `repeats` times each, interleaved; print the best times."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    dev = select_device(device)
    data = load_dataset(dataset, device=dev)
    cfg = FitConfig(epochs=epochs, batch_size=batch_size, lr=0.01, T=20.0, alpha=0.9, eval_each_epoch=False)
    # a teacher trained briefly (and cached), so that the accuracies mean something
    teacher, _ = train_or_load(hinton_teacher, data, FitConfig(epochs=2), name=f"bench-teacher-{dataset}",
                               progress=False)

    def fresh_student():
        torch.manual_seed(1)
        return hinton_student().to(dev)

    # warm up the kernels and the allocator before any clock starts
    floor_epochs(fresh_student(), data.with_train(torch.arange(min(2048, len(data.y_train))), "warm-up"),
                 FitConfig(epochs=1))
    teacher_logits(teacher, data.x_train)  # remembered: every fit below reads it
    times: Dict[str, list] = {"seed": [], "kdlib": [], "teacher_logits": [], "floor": []}
    for _ in range(repeats):
        s = fresh_student()
        times["seed"].append(seed_style_epochs(s, teacher, data, cfg))
        acc_seed = evaluate(s, data.x_test, data.y_test).accuracy
        start = time.perf_counter()
        frozen_forward(teacher, data.x_train)  # the teacher's one pass, as teacher_logits makes it
        sync(dev)
        times["teacher_logits"].append(time.perf_counter() - start)
        hist = fit(fresh_student(), data, cfg, teacher=teacher, progress=False)
        times["kdlib"].append(hist.seconds)
        times["floor"].append(floor_epochs(fresh_student(), data, cfg))
    t = {k: min(v) for k, v in times.items()}  # best of the repeats: the least disturbed run

    print(f"{dataset} ({len(data.y_train):,} images), {epochs} epoch(s), batch {batch_size}, Hinton MLPs, "
          f"device {dev.type}, torch {torch.__version__}; best of {repeats}")
    print(f"{'loop':<40}{'seconds':>9}{'x floor':>9}{'test acc':>10}")
    rows = [("seed style (DataLoader, teacher/batch)", t["seed"], acc_seed),
            ("kdlib.fit (teacher logits cached)", t["kdlib"], hist.test_acc),
            ("kdlib.fit + the teacher's one pass", t["kdlib"] + t["teacher_logits"], None),
            ("floor (student f/b/step alone)", t["floor"], None)]
    for name, sec, acc in rows:
        print(f"{name:<40}{sec:9.2f}{sec / t['floor']:9.2f}" + (f"{acc:10.4f}" if acc is not None else ""))
    print(f"kdlib is {t['seed'] / t['kdlib']:.2f}x faster than the seed style "
          f"({t['seed'] / (t['kdlib'] + t['teacher_logits']):.2f}x counting the teacher's one pass)")
    return dict(t, acc_seed=acc_seed, acc_kdlib=hist.test_acc)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion-mnist", choices=["mnist", "fashion-mnist"])
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default=None)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    run(a.dataset, a.epochs, a.batch_size, a.device, a.repeats)


if __name__ == "__main__":
    main()
