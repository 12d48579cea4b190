"""The book's experiments: their settings per profile, and the runs that compare students.

A comparison trains (or loads) one teacher, then for each seed a student from scratch and the
same student distilled: same architecture, same initial weights, same batches, same epochs.
Only the loss differs, so the difference in test errors is the effect of distillation.

    hinton_setup      Hinton et al.'s MNIST MLPs (chapters 4-7, and the T x alpha map)
    cifar_cnn_setup   labml's large CNN -> small CNN on CIFAR-10 (or its stand-in)
    deit_setup        a CIFAR ResNet-18 -> a small ViT, as in DeiT
    born_again_setup  one MLP distilled into itself, generation after generation (born-again networks)
    patient_setup     a patient and consistent teacher (Beyer et al.): what the teacher sees, and for how long
    features_setup    chapter 9's CNNs again, distilled through their features (FitNets, attention transfer)
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .data import Data, cifar10_or_standin
from .features import FeatureTerm
from .models import (byte_transformer, cifar_large_cnn, cifar_resnet18, cifar_small_cnn, hinton_student, hinton_teacher,
                     vit_tiny_cifar)
from .profiles import DRY_RUN_CONTEXT, DRY_RUN_TEST, DRY_RUN_TRAIN, dry_run, pick
from .text import corpus, text_data
from .train import FitConfig, History, train_or_load, train_or_load_many

__all__ = ["Setup", "hinton_setup", "born_again_setup", "Generations", "born_again", "patient_setup",
           "patience_epochs", "teacher_views", "features_setup", "block_outputs", "feature_terms", "cifar_cnn_setup", "deit_setup", "lm_setup", "map_grid", "Comparison", "compare", "grid",
           "runs_line",
           "labml_alpha", "deit_variants", "run_variants", "sweep_sizes", "sweep", "sweep_seconds",
           "teacher_lead", "lead_verdict", "SMALL_LEAD"]


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
    # the teacher's training images; None: the students' images. More (Hinton et al.'s section 6):
    # the teacher learns from data the students never see, and the students learn from its targets
    teacher_n_train: Optional[int] = None
    # train the students of a comparison, grid or set of variants in one pass (kdlib.together):
    # None, on an accelerator only (on a CPU, one after another was faster; see kdlib.together);
    # where the student cannot (batch norm, dropout), they train one after another anyway
    together: Optional[bool] = None
    # a language model's window of bytes: the data is kdlib.text's corpus, not images (n_train,
    # teacher_n_train and n_test count windows)
    context: Optional[int] = None

    def describe(self) -> str:
        """The settings in words, for a chapter's output."""
        def run(c: FitConfig) -> str:
            opt = ("SGD (momentum 0.9)" if c.optimizer == "sgd" else "Adam" if c.weight_decay == 0
                   else f"AdamW (weight decay {c.weight_decay:g})")
            return (f"{c.epochs} epochs, batch {c.batch_size}, {opt}, lr {c.lr:g}, {c.schedule} schedule"
                    + (", crop + flip" if c.augment else ""))

        def images(n: Optional[int]) -> str:
            return "all" if n is None else f"{n:,}"

        unit = "images" if self.context is None else f"windows of {self.context} bytes"
        teacher_images = ("" if self.teacher_n_train is None
                          else f"; the teacher's: {images(self.teacher_n_train)}")
        return (f"teacher:  {run(self.teacher)}\nstudents: {run(self.student)}\n"
                f"          distilled with T = {self.T:g}, alpha = {self.alpha:g}\nseeds: {list(self.seeds)}; "
                f"training {unit}: {images(self.n_train)}{teacher_images}")

    def load(self, root: Optional[str] = None, device: Optional[torch.device] = None) -> Data:
        """CIFAR-10 or its stand-in (kd.cifar10_or_standin), as many images as teacher and students need;
        with a context, the standard library's bytes in windows (kdlib.text; root: the folder to read)."""
        n_train = self.n_train if self.teacher_n_train is None or self.n_train is None else max(
            self.n_train, self.teacher_n_train)
        if self.context is not None:
            n_test, context = self.n_test, self.context
            if dry_run():  # KDLIB_DRY_RUN: the code paths on a few short windows
                n_train, n_test = min(n_train or DRY_RUN_TRAIN, DRY_RUN_TRAIN), min(n_test or DRY_RUN_TEST, DRY_RUN_TEST)
                context = min(context, DRY_RUN_CONTEXT)
            return text_data(corpus(root=root), context, n_train, n_test, device=device)
        return cifar10_or_standin(n_train, self.n_test, root=root, device=device, verbose=False)

    def teacher_data(self, data: Data) -> Data:
        """The teacher's data: its class-balanced training subset (see teacher_n_train), the test subset."""
        return self._images(data, self.n_train if self.teacher_n_train is None else self.teacher_n_train)

    def data(self, data: Data) -> Data:
        """The students' data: a class-balanced training subset (or all of it), the same test images."""
        return self._images(data, self.n_train)

    def _images(self, data: Data, n_train: Optional[int]) -> Data:
        # the smaller of the two training sets is drawn from the larger, so the students learn from
        # images the teacher saw, or the teacher from images of the students'
        data = data.test_subset(self.n_test) if self.n_test is not None and self.n_test < len(data.y_test) else data
        sizes = (self.n_train, self.teacher_n_train)
        larger = None if None in sizes else max(sizes)  # None: all the images
        for n in (larger, n_train):
            data = data.subset(n) if n is not None and n < len(data.y_train) else data
        return data

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
    """labml's CIFAR-10 experiment, large CNN -> small CNN at T = 5, with labml's Adam at lr 2.5e-4.

    full: labml's settings: the large CNN (dropout 0.1) teaches the small one; batch 64, 20
    epochs, crop + flip, all 50,000 images. cpu: a CPU needs minutes per epoch of 50,000 images
    for the large CNN (chapter 9 measures it), so the teacher is the small CNN itself, trained on
    all of the stand-in's 60,000 training images; the students learn from 5,000 of them (Hinton et al.'s
    section 6: the teacher knows more because it saw more), without augmentation, so that the
    teacher's logits are computed once. alpha = 4/9 gives the two terms' gradients labml's
    balance (see labml_alpha).
    """
    adam = dict(batch_size=64, optimizer="adamw", lr=2.5e-4, weight_decay=0.0)  # labml: Adam, no decay
    alpha = labml_alpha(5.0)
    return pick(
        profile,
        smoke=Setup("smoke", 256, FitConfig(epochs=1, **adam), FitConfig(epochs=2, **adam), T=5.0, alpha=alpha,
                    seeds=(0,), make_teacher=cifar_small_cnn, make_student=cifar_small_cnn, n_test=256,
                    teacher_n_train=512),
        cpu=Setup("cpu", 5000, FitConfig(epochs=3, **adam), FitConfig(epochs=5, **adam), T=5.0, alpha=alpha,
                  seeds=(0, 1, 2), make_teacher=cifar_small_cnn, make_student=cifar_small_cnn, n_test=2000,
                  teacher_n_train=60_000),  # all of the stand-in's (CIFAR-10 has 50,000)
        full=Setup("full", None, FitConfig(epochs=20, augment=True, **adam), FitConfig(epochs=20, augment=True, **adam),
                   T=5.0, alpha=alpha, seeds=(0, 1, 2), make_teacher=cifar_large_cnn, make_student=cifar_small_cnn),
    )


def labml_alpha(T: float, soft_weight: float = 100.0, hard_weight: float = 0.5, num_classes: int = 10) -> float:
    """The alpha at which kdlib's loss balances its two gradients as labml's loss does.

    labml: soft_weight * KLDivLoss(reduction="mean") + hard_weight * CE. "mean" divides by B*C, so
    per image the soft term is (soft_weight / C) KL(p^T || q^T), whose gradient in the logits is
    (soft_weight / C) (q^T - p^T) / T. kdlib's alpha T^2 KL has the gradient alpha T (q^T - p^T), and
    its (1 - alpha) CE the gradient (1 - alpha)(q - y). Equal ratios of the two:

        alpha T / (1 - alpha) = (soft_weight / (C T)) / hard_weight

    Only the ratio is matched: labml's whole loss is larger, which Adam's step does not feel.
    labml's weights at T = 5: alpha = 4/9.
    """
    ratio = soft_weight / (num_classes * T) / hard_weight / T   # alpha / (1 - alpha)
    return ratio / (1 + ratio)


def deit_setup(profile: str) -> Setup:
    """DeiT on CIFAR-10: a CIFAR ResNet-18 teacher -> a ViT that reads the 32x32 images as they are.

    The students' losses are DeiT's: soft distillation at the DeiT paper's setting, T = 3 and
    lambda = 0.1 (kdlib's alpha; the repository's defaults are tau = 1, alpha = 0.5), hard
    distillation at 0.5 (see deit_variants). full: all 50,000 images, everything
    augmented, the ViT of 6 layers of width 192 (vit_tiny_cifar). cpu: the teacher learns from
    6,000 images, the students from 3,000 of them, without augmentation (the ResNet's forward pass
    on every batch would triple a CPU run), and the ViT has 4 layers of width 128: 78 MFLOPs per
    image against the full ViT's 251, trained for 5 epochs (8 took the chapter past 15 minutes on a
    2-core CPU: 19.3 from an empty cache).
    The ViTs train one after another, on every device (together=False): stacked (kdlib.together)
    they ran 0.86x as fast on a 2-core CPU, and torch's fused attention kernel has no vmap rule.
    """
    sgd = dict(batch_size=128, optimizer="sgd", lr=0.05, weight_decay=5e-4, schedule="cosine", augment=True)
    adam = dict(batch_size=64, optimizer="adamw", lr=1e-3, weight_decay=0.0, schedule="cosine")
    adamw = dict(batch_size=64, optimizer="adamw", lr=1e-3, weight_decay=0.05, schedule="cosine")
    small_vit = partial(vit_tiny_cifar, dim=128, depth=4, heads=4)
    deit = dict(T=3.0, alpha=0.1, make_teacher=cifar_resnet18, together=False)
    return pick(
        profile,
        smoke=Setup("smoke", 128, FitConfig(epochs=1, **adam), FitConfig(epochs=1, **adamw), seeds=(0,),
                    make_student=small_vit, n_test=256, teacher_n_train=256, **deit),
        cpu=Setup("cpu", 3000, FitConfig(epochs=2, eval_each_epoch=False, **adam), FitConfig(epochs=5, **adamw),
                  seeds=(0, 1, 2),
                  make_student=small_vit, n_test=2000, teacher_n_train=6000, **deit),
        full=Setup("full", None, FitConfig(epochs=15, **sgd), FitConfig(epochs=15, **dict(adamw, augment=True)),
                   seeds=(0, 1, 2), make_student=vit_tiny_cifar, **deit),
    )


def lm_setup(profile: str) -> Setup:
    """A byte-level language model distilled into one with about a quarter of its parameters.

    Teacher: a ByteTransformer of 4 layers of width 128 (867,328 parameters at a context of 64);
    student: 4 layers of width 64 (237,184, 27%), on windows of 64 bytes of the standard library's
    source (kdlib.text).
    cpu: the teacher reads 16,000 windows (1 MB, of the 20,811 that Python 3.11's files hold) for 2
    epochs; the students read 2,000 of those windows for 10 epochs, so the teacher knows text they
    never see (Hinton et al.'s section 6). The teacher's logits for the students' windows, 2,000 x 64 x 256 floats
    (131 MB), are computed once. full: 8 layers of 256 -> 4 of 128, context 256, every window.
    """
    adamw = dict(optimizer="adamw", lr=3e-3, weight_decay=0.01, schedule="cosine")
    small = dict(T=2.0, alpha=0.9)
    model = lambda dim, depth, context: partial(byte_transformer, dim=dim, depth=depth, heads=4, context=context)
    return pick(
        profile,
        smoke=Setup("smoke", 48, FitConfig(epochs=1, batch_size=16, **adamw), FitConfig(epochs=1, batch_size=16, **adamw),
                    seeds=(0,), make_teacher=model(32, 1, 32), make_student=model(16, 1, 32), n_test=32,
                    teacher_n_train=96, context=32, **small),
        cpu=Setup("cpu", 2000, FitConfig(epochs=2, batch_size=32, eval_each_epoch=False, **adamw),
                  FitConfig(epochs=10, batch_size=32, **adamw), seeds=(0, 1, 2),
                  make_teacher=model(128, 4, 64), make_student=model(64, 4, 64), n_test=1000,
                  teacher_n_train=16_000, context=64, **small),
        full=Setup("full", None, FitConfig(epochs=20, batch_size=64, **adamw), FitConfig(epochs=20, batch_size=64, **adamw),
                   seeds=(0, 1, 2), make_teacher=model(256, 8, 256), make_student=model(128, 4, 256),
                   context=256, **small),
    )


def born_again_setup(profile: str) -> Setup:
    """Born-again networks (Furlanello et al., 2018) on Fashion-MNIST: teacher and student are one
    architecture, Hinton et al.'s 784-800-800-10 student, and each generation learns from the one before.

    Every generation trains as long (SGD, cosine schedule); the students add the soft term at T = 4,
    alpha = 0.9. cpu: 5,000 training images (class-balanced) for 10 epochs, all 10,000 test images;
    full: all 60,000 for 60 epochs. The teacher's settings are the students' (generation 1 is the
    teacher of generation 2).
    """
    sgd = dict(batch_size=64, lr=0.05, optimizer="sgd", schedule="cosine", eval_each_epoch=False)
    same = lambda **kw: dict(make_teacher=hinton_student, make_student=hinton_student, T=4.0, alpha=0.9, **kw)
    return pick(
        profile,
        smoke=Setup("smoke", 500, FitConfig(epochs=2, **sgd), FitConfig(epochs=2, **sgd), seeds=(0, 1),
                    n_test=500, **same()),
        cpu=Setup("cpu", 5000, FitConfig(epochs=10, **sgd), FitConfig(epochs=10, **sgd), **same()),
        full=Setup("full", None, FitConfig(epochs=60, **sgd), FitConfig(epochs=60, **sgd), **same()),
    )


@dataclass
class Generations:
    """One seed's chain of born-again generations and its controls.

    models[g], histories[g]: generation g + 1 (models[0] learned from the labels, models[g] from
    models[g - 1]); control_models[g], controls[g]: the same architecture from the labels alone,
    trained g + 1 times as many epochs, as many as the chain up to generation g + 1 (index 0 is
    generation 1 itself).
    """

    models: List[nn.Module]
    histories: List[History]
    control_models: List[nn.Module]
    controls: List[History]


def born_again(data: Data, setup: Setup, generations: int = 3, seed: int = 0,
               progress: bool = False) -> Generations:
    """Train (or load) a chain of born-again generations and its fair controls for one seed.

    Generation 1 learns from the labels (setup.student); generation g + 1 is setup.student's
    architecture distilled from generation g (setup.distilled: T, alpha), from the same seed's
    initial weights. The control of generation g learns from the labels alone for g times the
    epochs (the cosine schedule stretched over them): it saw as much training as the whole chain,
    so a generation's lead over its control is not more training. data: the students' data.
    """
    if isinstance(generations, bool) or not isinstance(generations, int) or generations < 1:
        raise ValueError(f"generations must be an int >= 1, got {generations!r}")
    scratch = replace(setup.student, seed=seed)
    models, hists, teacher = [], [], None
    for g in range(1, generations + 1):
        if teacher is None:  # generation 1: the labels alone
            cfg, name = scratch, f"scratch-s{seed}"
        else:
            cfg, name = setup.distilled(seed=seed), f"gen{g}-s{seed}"
        model, hist = train_or_load(setup.make_student, data, cfg, teacher=teacher, name=name,
                                    progress=progress, verbose=False)
        models.append(model)
        hists.append(hist)
        teacher = model
    controls = [(models[0], hists[0])] + [
        train_or_load(setup.make_student, data, replace(scratch, epochs=g * scratch.epochs),
                      name=f"scratch-x{g}-s{seed}", progress=progress, verbose=False)
        for g in range(2, generations + 1)]
    return Generations(models, hists, [m for m, _ in controls], [h for _, h in controls])


def patient_setup(profile: str) -> Setup:
    """Beyer et al. (2022)'s "patient and consistent" teacher, on Fashion-MNIST with MLPs.

    Every network sees random crops (4-pixel shifts) and flips. The teacher, Hinton et al.'s
    784-1200-1200-10 with dropout, learns from all 60,000 training images; the students (784-800-800-10)
    from a class-balanced 1,000 of them, with the paper's loss: KL from the teacher at T = 1, no
    label term (alpha = 1). Their schedules: patience_epochs. cpu: the teacher trains 15 epochs;
    full: 60 epochs, and the students learn from 10,000 images.
    """
    sgd = dict(lr=0.05, optimizer="sgd", schedule="cosine", augment=True, eval_each_epoch=False)
    teacher = lambda epochs: FitConfig(epochs=epochs, batch_size=128, **sgd)
    student = FitConfig(epochs=20, batch_size=64, **sgd)
    mlps = dict(make_teacher=hinton_teacher, make_student=hinton_student, T=1.0, alpha=1.0)
    return pick(
        profile,
        smoke=Setup("smoke", 200, teacher(1), student, seeds=(0,), n_test=500, teacher_n_train=1000, **mlps),
        cpu=Setup("cpu", 1000, teacher(15), student, teacher_n_train=60_000, **mlps),
        full=Setup("full", 10_000, teacher(60), student, teacher_n_train=60_000, **mlps),
    )


def patience_epochs(profile: str) -> Tuple[int, ...]:
    """The students' schedules in the patience experiment: short, longer, long (epochs)."""
    return pick(profile, smoke=(1, 2), cpu=(5, 20, 80), full=(30, 300, 1200))


def teacher_views(setup: Setup, epochs: int) -> Dict[str, FitConfig]:
    """The distilled students of the patient-and-consistent chapter at one schedule: name -> config.

    fixed: the teacher's logits on the images as they are (one table; the student sees augmented
    views); independent views: the teacher sees its own crop and flip of each image; consistent:
    the student's own view; function matching: consistent, on mixtures of two images (mixup).
    """
    s = replace(setup.distilled(), epochs=epochs)
    return {"fixed teacher": replace(s, teacher_view="fixed"),
            "independent views": replace(s, teacher_view="independent"),
            "consistent": s,
            "function matching": replace(s, mixup=True)}


def features_setup(profile: str) -> Setup:
    """Chapter 9's CNN experiment (cifar_cnn_setup: labml's models, Adam, T = 5), for feature distillation.

    full: as chapter 9, the large CNN teaching the small one on all of CIFAR-10. cpu: the small CNN
    teaches itself from 20,000 training images against the students' 2,000 (chapter 9's teacher saw
    60,000, its students 5,000: with a feature term the teacher runs on every batch, and six students
    per seed must fit a laptop's quarter of an hour), 5 epochs, 2,000 test images.
    """
    base = cifar_cnn_setup(profile)
    return pick(profile, smoke=base, cpu=replace(base, n_train=2000, teacher_n_train=20_000),
                full=base)


def block_outputs(model: nn.Module) -> List[str]:
    """The names of a VGG-style CNN's block outputs, its max-pool layers, in order: the layers whose
    features a FeatureTerm pairs (kdlib.models' CIFAR CNNs have five; 32x32 inputs give 16x16, 8x8,
    4x4, 2x2 and 1x1 maps)."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.MaxPool2d)]


def feature_terms(student: nn.Module, teacher: nn.Module, hint_weight: float = 1.0,
                  attention_weight: float = 1000.0) -> Dict[str, FeatureTerm]:
    """The chapter's two feature terms for VGG-style CNNs of the same depth (block_outputs):

    hint: FitNets' hint at the middle block (the third of five: 4x4 maps of the 32x32 input), with a
    1x1 regressor; attention: attention transfer at the first three blocks (16x16, 8x8, 4x4), with
    the paper's beta = 1,000.
    """
    s, t = block_outputs(student), block_outputs(teacher)
    if len(s) != len(t) or len(s) < 3:
        raise ValueError(f"student and teacher need the same number (>= 3) of blocks, got {len(s)} and {len(t)}")
    return {"hint": FeatureTerm(((s[2], t[2]),), kind="hint", weight=hint_weight),
            "attention": FeatureTerm(tuple(zip(s[:3], t[:3])), kind="attention", weight=attention_weight)}


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
    scratch_models: List[nn.Module] = field(default_factory=list)     # trained, one per seed
    distilled_models: List[nn.Module] = field(default_factory=list)

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
    """Train (or load) the teacher, then a scratch and a distilled student for every seed of the setup.

    data: what setup.load() gives (or at least it): the teacher trains on setup.teacher_data(data),
    the students on setup.data(data).
    """
    teacher, t_hist = train_or_load(setup.make_teacher, setup.teacher_data(data), setup.teacher, name="teacher",
                                    progress=progress, verbose=False)
    data = setup.data(data)
    result = Comparison(t_hist)
    # per seed a student from scratch and a distilled one, all in one pass where that pays (setup.together)
    cfgs, teachers, names = [], [], []
    for seed in setup.seeds:
        cfgs += [replace(setup.student, seed=seed), setup.distilled(T, alpha, seed)]
        teachers += [None, teacher]
        names += [f"scratch-s{seed}", f"distilled-s{seed}"]
    runs = train_or_load_many(setup.make_student, data, cfgs, teachers, names, progress=progress, verbose=False,
                              together=setup.together)
    for (scratch, h_scratch), (distilled, h_distilled) in zip(runs[0::2], runs[1::2]):
        result.scratch.append(h_scratch)
        result.scratch_models.append(scratch)
        result.distilled.append(h_distilled)
        result.distilled_models.append(distilled)
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

    So a grid that was stopped half-way resumes where it stopped, and a wider grid trains only its new
    cells. The cells to train train in one pass (kdlib.together) where that pays (setup.together).
    alpha = 0 leaves no soft term (0 * T^2 KL is exactly 0, and so is its gradient): every cell of
    that column is the student from scratch of the seed, the run compare() trains, trained (or
    loaded) once under its name, not once per T.
    """
    data = setup.data(data)
    cells = [(T, a) for T in Ts for a in alphas]
    runs = {}  # name -> (cfg, teacher): one run per distinct training
    for T, a in cells:
        if a == 0:
            runs[f"scratch-s{seed}"] = (replace(setup.student, seed=seed), None)
        else:
            runs[f"grid-T{T:g}-a{a:g}-s{seed}"] = (setup.distilled(T, a, seed), teacher)
    names = list(runs)
    done = train_or_load_many(setup.make_student, data, [runs[n][0] for n in names], [runs[n][1] for n in names],
                              names, progress=progress, verbose=False, together=setup.together)
    hist = {name: h for name, (_, h) in zip(names, done)}
    return {(T, a): hist[f"scratch-s{seed}" if a == 0 else f"grid-T{T:g}-a{a:g}-s{seed}"] for T, a in cells}


def deit_variants(setup: Setup) -> Dict[str, Optional[FitConfig]]:
    """The students of the DeiT chapter: name -> config (None: from the labels alone, no teacher).

    DeiT's two losses: soft at the setup's T and alpha (the DeiT paper's tau = 3, lambda = 0.1;
    the repository's defaults are tau = 1, alpha = 0.5), and hard,
    cross entropy on the teacher's arg-max with weight 0.5.
    """
    soft = setup.distilled()
    return {"labels only": None,
            f"soft (T={setup.T:g}, alpha={setup.alpha:g})": soft,
            "hard (alpha=0.5)": replace(soft, hard_distillation=True, alpha=0.5)}


def run_variants(data: Data, setup: Setup, teacher: Optional[nn.Module], variants: Dict[str, Optional[FitConfig]],
                 progress: bool = False, features: Optional[FeatureTerm] = None
                 ) -> Dict[str, List[Tuple[nn.Module, History]]]:
    """Train (or load) one student per variant and seed: the same initial weights and batches per seed.

    variants: name -> FitConfig for a distilled student, or None for one trained on labels alone.
    features: a feature term for every distilled variant (fit's features; kdlib.features).
    Returns name -> [(model, History) for each seed in setup.seeds].
    The test score after every epoch (eval_each_epoch) is kept for the first seed only, whose
    curves a chapter draws; the other seeds are scored at the end (scoring does not change training,
    and a pass over the test set after every epoch costs chapter 10 a fifth of its ViTs' training).
    """
    if features is not None and any(cfg is None for cfg in variants.values()):
        raise ValueError("features goes with distilled variants only (a feature term needs the teacher): "
                         "train the labels-only variants in a call without features")
    data = setup.data(data)
    keys = [(name, seed) for name in variants for seed in setup.seeds]
    slug = {name: "".join(ch if ch.isalnum() or ch in ".=" else "-" for ch in name) for name in variants}
    # every variant and seed in one pass where that pays (setup.together, kdlib.together)
    runs = train_or_load_many(setup.make_student, data,
                              [replace(variants[name] or setup.student, seed=seed,
                                       eval_each_epoch=(variants[name] or setup.student).eval_each_epoch
                                       and seed == setup.seeds[0])
                               for name, seed in keys],
                              [None if variants[name] is None else teacher for name, _ in keys],
                              [f"{slug[name]}-s{seed}" for name, seed in keys], progress=progress, verbose=False,
                              together=setup.together, features=features)
    out: Dict[str, List[Tuple[nn.Module, History]]] = {name: [] for name in variants}
    for (name, _), run in zip(keys, runs):
        out[name].append(run)
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


# chapter 5: a lead below this many errors per 1,000 test images is "small". In its stored cpu run
# the Fashion-MNIST teachers lead by 1.3 to 6.6 and the MNIST-subset teachers by 9.3 and 20.3
SMALL_LEAD = 8.0


def teacher_lead(teacher_errors: float, scratch_errors: Sequence[float], n_test: int) -> float:
    """The teacher's lead over the student from scratch, in errors per 1,000 test images.

    lead = 1000 / n_test * (mean_s E_scratch_s - E_teacher), with E the test errors of the teacher
    and of the student from scratch of each seed s, all on the same n_test images. Positive: the
    teacher makes fewer errors than the student would without it.
    """
    if n_test <= 0 or not scratch_errors:
        raise ValueError(f"need n_test > 0 and at least one student, got {n_test} and {list(scratch_errors)}")
    return 1000 * (statistics.mean(scratch_errors) - teacher_errors) / n_test


def lead_verdict(lead: float, small: float = SMALL_LEAD) -> str:
    """Chapter 5's reading of a teacher's lead (errors per 1,000 test images, see teacher_lead).

    "behind": lead <= 0, the teacher is no better than the student from scratch: there is no lead
      to transfer, and distillation can only act as a regulariser, whose sign T and alpha decide;
    "small": 0 < lead < small (Fashion-MNIST in chapter 5): T and alpha decide whether
      distillation helps or hurts;
    "large": lead >= small (the MNIST subset): the distilled student gained about the lead on
      every seed, with both settings tried.
    The lead is a yardstick, not a ceiling: a distilled student can gain more than it (chapter 5's
    Fashion-MNIST at 15,000 images) and end up better than its teacher.
    """
    return "behind" if lead <= 0 else "small" if lead < small else "large"
