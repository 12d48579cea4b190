"""The book's experiments: their settings per profile, and the runs that compare students.

A comparison trains (or loads) one teacher, then for each seed a student from scratch and the
same student distilled: same architecture, same initial weights, same batches, same epochs.
Only the loss differs, so the difference in test errors is the effect of distillation.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from torch import nn

from .data import Data
from .models import hinton_student, hinton_teacher
from .profiles import pick
from .train import FitConfig, History, train_or_load

__all__ = ["HintonSetup", "hinton_setup", "Comparison", "compare", "grid", "sweep_sizes", "sweep", "sweep_seconds"]


@dataclass
class HintonSetup:
    """Settings of Hinton et al.'s MNIST experiment for one profile."""

    profile: str
    n_train: Optional[int]         # training images; None: all that the source has
    teacher: FitConfig
    student: FitConfig             # from scratch; the distilled student adds T and alpha
    T: float = 20.0                # the paper's temperature for the 800-800 student
    alpha: float = 0.9
    seeds: Tuple[int, ...] = (0, 1, 2)

    def describe(self) -> str:
        """The settings in words, for a chapter's output."""
        def run(c: FitConfig) -> str:
            opt = "SGD (momentum 0.9)" if c.optimizer == "sgd" else "AdamW"
            return f"{c.epochs} epochs, batch {c.batch_size}, {opt}, lr {c.lr:g}, {c.schedule} schedule"

        return (f"teacher: {run(self.teacher)}\nstudents: {run(self.student)}; distilled with T = {self.T:g}, "
                f"alpha = {self.alpha:g}\nseeds: {list(self.seeds)}; training images: "
                f"{'all' if self.n_train is None else f'{self.n_train:,}'}")

    def data(self, data: Data) -> Data:
        """The training data this profile uses: a class-balanced subset, or all of it."""
        return data.subset(self.n_train) if self.n_train is not None and self.n_train < len(data.y_train) else data

    def distilled(self, T: Optional[float] = None, alpha: Optional[float] = None, seed: int = 0) -> FitConfig:
        return replace(self.student, T=self.T if T is None else T, alpha=self.alpha if alpha is None else alpha,
                       seed=seed)


def hinton_setup(profile: str) -> HintonSetup:
    """The Hinton MNIST settings: smoke (seconds, CI), cpu (minutes, a laptop), full (a GPU)."""
    sgd = dict(batch_size=64, lr=0.01, optimizer="sgd", schedule="cosine")
    quick = dict(sgd, lr=0.05, epochs=5)  # smoke: only checks that the code runs and learns something
    return pick(
        profile,
        smoke=HintonSetup("smoke", 500, FitConfig(**quick), FitConfig(**quick), seeds=(0,)),
        # cpu: 4,000 images, as many as the offline MNIST subset has; with network, a subset of full MNIST
        cpu=HintonSetup("cpu", 4000, FitConfig(epochs=30, **sgd), FitConfig(epochs=30, **sgd)),
        full=HintonSetup("full", None, FitConfig(epochs=60, **sgd), FitConfig(epochs=60, **sgd)),
    )


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


def compare(data: Data, setup: HintonSetup, make_teacher: Callable[[], nn.Module] = hinton_teacher,
            make_student: Callable[[], nn.Module] = hinton_student, T: Optional[float] = None,
            alpha: Optional[float] = None, progress: bool = True,
            verbose: bool = True) -> Tuple[nn.Module, Comparison]:
    """Train (or load) the teacher, then a scratch and a distilled student for every seed of the setup."""
    data = setup.data(data)
    teacher, t_hist = train_or_load(make_teacher, data, setup.teacher, name="teacher", progress=progress,
                                    verbose=verbose)
    result = Comparison(t_hist)
    for seed in setup.seeds:
        _, h = train_or_load(make_student, data, replace(setup.student, seed=seed), name=f"scratch-s{seed}",
                             progress=progress, verbose=verbose)
        result.scratch.append(h)
        _, h = train_or_load(make_student, data, setup.distilled(T, alpha, seed), teacher=teacher,
                             name=f"distilled-s{seed}", progress=progress, verbose=verbose)
        result.distilled.append(h)
    return teacher, result


def grid(data: Data, setup: HintonSetup, teacher: nn.Module, Ts: Sequence[float], alphas: Sequence[float],
         make_student: Callable[[], nn.Module] = hinton_student, seed: int = 0,
         progress: bool = False) -> Dict[Tuple[float, float], History]:
    """A distilled student for every (T, alpha) in Ts x alphas; finished cells load from the cache."""
    data = setup.data(data)
    return {(T, a): train_or_load(make_student, data, setup.distilled(T, a, seed), teacher=teacher,
                                  name=f"grid-T{T:g}-a{a:g}-s{seed}", progress=progress, verbose=False)[1]
            for T in Ts for a in alphas}


def sweep_sizes(profile: str, available: int) -> List[int]:
    """Training-set sizes for the data-size sweep: the profile's sizes that the data can supply."""
    sizes = pick(profile, smoke=[200, 500], cpu=[1000, 4000, 15000], full=[1000, 5000, 60000])
    return [n for n in sizes if n <= available]


def sweep(data: Data, setup: HintonSetup, sizes: Sequence[int], **compare_args) -> Dict[int, Comparison]:
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
