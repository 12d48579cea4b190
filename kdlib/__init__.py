"""kdlib: knowledge distillation, small and readable. The package behind the book *Distilling Knowledge*.

    import kdlib as kd
    loss = kd.distillation_loss(student_logits, teacher_logits, labels, T=4.0, alpha=0.9)

    data = kd.load_dataset("mnist")
    teacher, _ = kd.train_or_load(kd.models.hinton_teacher, data, kd.FitConfig(epochs=10), name="teacher")
    student = kd.models.hinton_student()
    history = kd.fit(student, data, kd.FitConfig(epochs=10, T=20, alpha=0.9), teacher=teacher)

    # data that does not fit: any DataLoader; kd.Indexed lets fit read the teacher's logits by index
    loader = DataLoader(kd.Indexed(dataset), batch_size=256, shuffle=True)
    history = kd.fit(student, loader, cfg, teacher=teacher, test=test_loader)
    # several processes: the same call under torchrun (see kdlib.distributed)
    # several students at once (seeds, T, alpha): lists of models and configs (see kdlib.together)
    # what the teacher sees: a feature term on named layers (see kdlib.features)
    history = kd.fit(student, data, cfg, teacher=teacher, features=kd.FeatureTerm((("8", "8"),)))
    histories = kd.fit([s0, s1, s2], data, [cfg0, cfg1, cfg2], teacher=teacher)

The plotting and widget helpers live in ``kd.plots`` and ``kd.widgets`` (imported on first use).
"""
import importlib

from . import analysis, decoding, distributed, experiments, features, models, text, together, transfer
from .book import glue
from .checks import DistillationSetupWarning, check_distillation_setup
from .features import FeatureTerm
from .data import (Data, as_cifar_shape, augment_crop_flip, batch_indices, cifar10_or_standin, load_dataset,
                   mix_images)
from .losses import (DistillationLoss, LossParts, distillation_loss, hard_distillation_loss,
                     log_softmax_t, loss_gradient, mixed_target, soft_divergence, soft_targets, softmax_t)
from .models import count_params
from .profiles import describe_run, dry_run, is_quick, pick, select_device, select_profile
from .teacher import Indexed, TopKLogits, frozen_forward, logit_table, teacher_logits
from .train import FitConfig, History, Score, evaluate, fit, train_or_load, train_or_load_many

__version__ = "0.1.0"

__all__ = [
    # the loss
    "softmax_t", "log_softmax_t", "soft_targets", "mixed_target", "distillation_loss", "DistillationLoss",
    "soft_divergence", "LossParts", "loss_gradient", "hard_distillation_loss", "check_distillation_setup", "DistillationSetupWarning",
    # data, models, training
    "Data", "load_dataset", "cifar10_or_standin", "as_cifar_shape", "batch_indices", "augment_crop_flip", "mix_images",
    "count_params",
    "FitConfig", "History", "Score", "fit", "evaluate", "frozen_forward", "teacher_logits", "train_or_load",
    "train_or_load_many", "FeatureTerm",
    "Indexed", "logit_table", "TopKLogits",
    "select_profile", "select_device", "pick", "describe_run", "dry_run", "is_quick",
    # the book's pages
    "glue",
    # modules
    "analysis", "decoding", "distributed", "experiments", "features", "models", "text", "together", "transfer", "plots", "widgets", "bench",
]

_LAZY = {"plots", "widgets", "bench"}


def __getattr__(name):
    # matplotlib and ipywidgets load only when a chapter asks for them
    if name in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'kdlib' has no attribute {name!r}")
