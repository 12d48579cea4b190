"""The book's experiments: their settings per profile, and the runs that compare students.

A comparison trains (or loads) one teacher, then for each seed a student from scratch and the
same student distilled: same architecture, same initial weights, same batches, same epochs.
Only the loss differs, so the difference in test errors is the effect of distillation.

    hinton_setup      Hinton et al.'s MNIST MLPs (chapters 4-7, and the T x alpha map)
    cifar_cnn_setup   labml's large CNN -> small CNN on CIFAR-10 (or its stand-in)
    deit_setup        a CIFAR ResNet-18 -> a small ViT, as in DeiT
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from torch import nn

from .data import Data
from .models import cifar_large_cnn, cifar_resnet18, cifar_small_cnn, hinton_student, hinton_teacher, vit_tiny_cifar
from .profiles import dry_run, pick
from .train import FitConfig, History, train_or_load

__all__ = ["Setup", "hinton_setup", "cifar_cnn_setup", "deit_setup", "map_grid", "Comparison", "compare", "grid",
           "runs_line",
           "deit_variants", "run_variants", "sweep_sizes", "sweep", "sweep_seconds"]


@dataclass
class Setup:
    """One experiment's settings for one profile: the two models, the data sizes, the runs, the seeds."""

    profile: str
    n_train: Optional[int]         # training images; None: all that the source has
    teacher: FitConfig
    student: FitConfig             # from scratch; the distilled student adds T and alpha
    T: float = 20.0                # the paper's temperature for the 800-800 student
    alpha: float = 0.9
    seeds: Tuple[int, ...] = (0, 1, 2)
    make_teacher: Callable[[], nn.Module] = hinton_teacher
    make_student: Callable[[], nn.Module] = hinton_student
    n_test: Optional[int] = None   # test images; None: all (fewer: a quicker, noisier score)

    def describe(self) -> str:
        """The settings in words, for a chapter's output."""
        def run(c: FitConfig) -> str:
            opt = "SGD (momentum 0.9)" if c.optimizer == "sgd" else "AdamW"
            return f"{c.epochs} epochs, batch {c.batch_size}, {opt}, lr {c.lr:g}, {c.schedule} schedule"

        return (f"teacher:  {run(self.teacher)}\nstudents: {run(self.student)}\n"
                f"          distilled with T = {self.T:g}, alpha = {self.alpha:g}\nseeds: {list(self.seeds)}; "
                f"training images: {'all' if self.n_train is None else f'{self.n_train:,}'}")

    def data(self, data: Data) -> Data:
        """The data this profile uses: a class-balanced training subset (and a test subset), or all of it."""
        data = data.subset(self.n_train) if self.n_train is not None and self.n_train < len(data.y_train) else data
        return data.test_subset(self.n_test) if self.n_test is not None and self.n_test < len(data.y_test) else data

    def distilled(self, T: Optional[float] = None, alpha: Optional[float] = None, seed: int = 0) -> FitConfig:
        return replace(self.student, T=self.T if T is None else T, alpha=self.alpha if alpha is None else alpha,
                       seed=seed)


def hinton_setup(profile: str) -> Setup:
    """The Hinton MNIST settings: smoke (seconds, CI), cpu (minutes, a laptop), full (a GPU)."""
    sgd = dict(batch_size=64, lr=0.01, optimizer="sgd", schedule="cosine")
    quick = dict(sgd, lr=0.05, epochs=5)  # smoke: only checks that the code runs and learns something
    return pick(
        profile,
        smoke=Setup("smoke", 500, FitConfig(**quick), FitConfig(**quick), seeds=(0,)),
        # cpu: 4,000 images, as many as the offline MNIST subset has; with network, a subset of full MNIST
        cpu=Setup("cpu", 4000, FitConfig(epochs=30, **sgd), FitConfig(epochs=30, **sgd)),
        full=Setup("full", None, FitConfig(epochs=60, **sgd), FitConfig(epochs=60, **sgd)),
    )


def cifar_cnn_setup(profile: str) -> Setup:
    """labml's CIFAR-10 experiment: large CNN (dropout 0.1) -> small CNN at T = 5.

    full: all 50,000 images, every run with on-device crop + flip. cpu: 5,000 images and 2,000
    test images; the students train without augmentation, so that the teacher's logits are
    computed once (with augmentation the large CNN's forward pass runs on every batch, and on a
    CPU it costs several times the small CNN's whole step).
    """
    # lr 0.01 at batch 64: at lr 0.05, batch 128 the large CNN did not learn in a few CPU epochs
    sgd = dict(batch_size=64, optimizer="sgd", lr=0.01, weight_decay=5e-4, schedule="cosine")
    return pick(
        profile,
        smoke=Setup("smoke", 256, FitConfig(epochs=1, augment=True, **sgd), FitConfig(epochs=2, **sgd), T=5.0,
                    alpha=0.8, seeds=(0,), make_teacher=cifar_large_cnn, make_student=cifar_small_cnn, n_test=256),
        cpu=Setup("cpu", 5000, FitConfig(epochs=8, augment=True, eval_each_epoch=False, **sgd),
                  FitConfig(epochs=8, **sgd), T=5.0, alpha=0.8, seeds=(0, 1, 2),
                  make_teacher=cifar_large_cnn, make_student=cifar_small_cnn, n_test=2000),
        full=Setup("full", None, FitConfig(epochs=30, augment=True, **sgd), FitConfig(epochs=30, augment=True, **sgd),
                   T=5.0, alpha=0.8, seeds=(0, 1, 2), make_teacher=cifar_large_cnn, make_student=cifar_small_cnn),
    )


def deit_setup(profile: str) -> Setup:
    """DeiT on CIFAR-10: a CIFAR ResNet-18 teacher (SGD) -> a small ViT at 32x32 (AdamW).

    Soft distillation at T = 4, alpha = 0.9; DeiT's hard distillation uses alpha = 0.5 (see
    deit_variants). cpu: 3,000 training and 2,000 test images, students without augmentation
    (the ResNet's forward pass on every batch would triple a CPU run). full: 50,000 images, 15 epochs,
everything augmented, 2 seeds: 4 students x 2 seeds is the bulk of the GPU time.
    """
    sgd = dict(batch_size=128, optimizer="sgd", lr=0.05, weight_decay=5e-4, schedule="cosine", augment=True)
    adamw = dict(batch_size=64, optimizer="adamw", lr=1e-3, weight_decay=0.05, schedule="cosine")
    return pick(
        profile,
        smoke=Setup("smoke", 128, FitConfig(epochs=1, **sgd), FitConfig(epochs=1, **adamw), T=4.0, alpha=0.9,
                    seeds=(0,), make_teacher=cifar_resnet18, make_student=vit_tiny_cifar, n_test=256),
        cpu=Setup("cpu", 3000, FitConfig(epochs=5, eval_each_epoch=False, **sgd), FitConfig(epochs=4, **adamw),
                  T=4.0, alpha=0.9, seeds=(0, 1), make_teacher=cifar_resnet18, make_student=vit_tiny_cifar,
                  n_test=2000),
        full=Setup("full", None, FitConfig(epochs=15, **sgd), FitConfig(epochs=15, **dict(adamw, augment=True)),
                   T=4.0, alpha=0.9, seeds=(0, 1), make_teacher=cifar_resnet18, make_student=vit_tiny_cifar),
    )


def map_grid(profile: str) -> Tuple[List[float], List[float], Tuple[int, ...]]:
    """The T x alpha map's axes and seeds: (Ts, alphas, seeds)."""
    Ts, alphas = [1.0, 2.0, 4.0, 8.0, 16.0], [0.0, 0.25, 0.5, 0.75, 0.9, 1.0]
    return Ts, alphas, pick(profile, smoke=(0,), cpu=(0, 1), full=(0, 1, 2))


@dataclass
class Comparison:
    """A teacher and, for each seed, a student from scratch and the same student distilled."""

    teacher: History
    scratch: List[History] = field(default_factory=list)
    distilled: List[History] = field(default_factory=list)

    def errors(self, which: str) -> List[int]:
        """Test errors of "scratch" or "distilled", one per seed."""
        return [h.test_errors for h in getattr(self, which)]

    def gain(self) -> List[int]:
        """Errors saved by distillation, per seed: scratch errors - distilled errors (same seed)."""
        return [s - d for s, d in zip(self.errors("scratch"), self.errors("distilled"))]

    def summary(self, n_test: int) -> str:
        def fmt(errs: Sequence[int]) -> str:
            sd = f" ± {statistics.stdev(errs):.1f}" if len(errs) > 1 else ""
            return f"{statistics.mean(errs):6.1f}{sd} errors ({1 - statistics.mean(errs) / n_test:.2%})"

        return (f"teacher            {self.teacher.test_errors:6d} errors ({self.teacher.test_acc:.2%})\n"
                f"student, scratch   {fmt(self.errors('scratch'))}   seeds: {self.errors('scratch')}\n"
                f"student, distilled {fmt(self.errors('distilled'))}   seeds: {self.errors('distilled')}\n"
                f"gain per seed      {self.gain()} fewer errors with distillation (of {n_test:,} test images)")


def compare(data: Data, setup: Setup, T: Optional[float] = None, alpha: Optional[float] = None,
            progress: bool = True, verbose: bool = True) -> Tuple[nn.Module, Comparison]:
    """Train (or load) the teacher, then a scratch and a distilled student for every seed of the setup."""
    data = setup.data(data)
    teacher, t_hist = train_or_load(setup.make_teacher, data, setup.teacher, name="teacher", progress=progress,
                                    verbose=False)
    result = Comparison(t_hist)
    for seed in setup.seeds:
        _, h = train_or_load(setup.make_student, data, replace(setup.student, seed=seed), name=f"scratch-s{seed}",
                             progress=progress, verbose=False)
        result.scratch.append(h)
        _, h = train_or_load(setup.make_student, data, setup.distilled(T, alpha, seed), teacher=teacher,
                             name=f"distilled-s{seed}", progress=progress, verbose=False)
        result.distilled.append(h)
    if verbose:
        print(runs_line("teacher and students", [t_hist, *result.scratch, *result.distilled]))
    return teacher, result


def runs_line(what: str, runs: Sequence[History]) -> str:
    """One line for an experiment's output: how many of its runs came from the cache, how many trained now."""
    loaded = sum(h.from_cache for h in runs)
    trained = len(runs) - loaded
    return (f"{what}: {len(runs)} runs, {loaded} from the cache, {trained} trained now; "
            f"{sum(h.seconds for h in runs):.0f} s of training")


def grid(data: Data, setup: Setup, teacher: nn.Module, Ts: Sequence[float], alphas: Sequence[float],
         seed: int = 0, progress: bool = False) -> Dict[Tuple[float, float], History]:
    """A distilled student for every (T, alpha) in Ts x alphas; finished cells load from the cache.

    So a grid that was stopped half-way resumes where it stopped, and a wider grid trains only its new cells.
    """
    data = setup.data(data)
    return {(T, a): train_or_load(setup.make_student, data, setup.distilled(T, a, seed), teacher=teacher,
                                  name=f"grid-T{T:g}-a{a:g}-s{seed}", progress=progress, verbose=False)[1]
            for T in Ts for a in alphas}


def deit_variants(setup: Setup) -> Dict[str, Optional[FitConfig]]:
    """The students of the DeiT chapter: name -> config (None: from the labels alone, no teacher).

    soft: kdlib's loss at the setup's T and alpha; hard: DeiT's cross entropy on the teacher's
    arg-max, alpha = 0.5 as in DeiT; T = 0.5: the sharpening temperature of the write-up we follow.
    """
    soft = setup.distilled()
    return {"labels only": None,
            f"soft (T={setup.T:g}, alpha={setup.alpha:g})": soft,
            "hard (DeiT, alpha=0.5)": replace(soft, hard_distillation=True, alpha=0.5),
            f"soft, T=0.5 (alpha={setup.alpha:g})": replace(soft, T=0.5)}


def run_variants(data: Data, setup: Setup, teacher: nn.Module, variants: Dict[str, Optional[FitConfig]],
                 progress: bool = False) -> Dict[str, List[Tuple[nn.Module, History]]]:
    """Train (or load) one student per variant and seed: the same initial weights and batches per seed.

    variants: name -> FitConfig for a distilled student, or None for one trained on labels alone.
    Returns name -> [(model, History) for each seed in setup.seeds].
    """
    data = setup.data(data)
    out: Dict[str, List[Tuple[nn.Module, History]]] = {}
    for name, cfg in variants.items():
        slug = "".join(ch if ch.isalnum() or ch in ".=" else "-" for ch in name)
        out[name] = [train_or_load(setup.make_student, data, replace(cfg or setup.student, seed=seed),
                                   teacher=None if cfg is None else teacher, name=f"{slug}-s{seed}",
                                   progress=progress, verbose=False)
                     for seed in setup.seeds]
    return out


def sweep_sizes(profile: str, available: int) -> List[int]:
    """Training-set sizes for the data-size sweep: the profile's sizes that the data can supply."""
    sizes = pick(profile, smoke=[200, 500], cpu=[1000, 4000, 15000], full=[1000, 5000, 60000])
    if dry_run():  # KDLIB_DRY_RUN: the data is capped; keep the sweep's shape with sizes it can supply
        return sorted({min(n, available // 2 ** (len(sizes) - 1 - i)) for i, n in enumerate(sizes)})
    return [n for n in sizes if n <= available]


def sweep(data: Data, setup: Setup, sizes: Sequence[int], **compare_args) -> Dict[int, Comparison]:
    """compare() at each training-set size (class-balanced subsets of the same data)."""
    return {n: compare(data, replace(setup, n_train=n), **compare_args)[1] for n in sizes}


def sweep_seconds(by_setting: Dict[str, Dict[int, Comparison]]) -> float:
    """Training time of every run behind sweeps of one data set with several distillation settings.

    by_setting: {setting: sweep(...)}. The settings share each size's teacher and students from
    scratch, so those are counted once, from the first setting; every distilled student counts.
    """
    first = next(iter(by_setting.values()))
    shared = sum(r.teacher.seconds + sum(h.seconds for h in r.scratch) for r in first.values())
    return shared + sum(h.seconds for by_size in by_setting.values() for r in by_size.values() for h in r.distilled)
