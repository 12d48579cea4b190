"""Learning a class the student never saw: transfer sets without some classes, and the bias fix.

Hinton et al. (2015, section 3) distil an MNIST teacher into a student whose transfer set has no 3s
at all. The student still recognises most 3s, from the small probability of "3" that the teacher
gives to other digits; what it lacks is the right *bias* for the class, and one number added to
the 3 logit, chosen on held-out data, fixes most of the rest.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
from torch import Tensor

from .data import Data
from .losses import check_labels, check_logits

__all__ = ["split_validation", "without_classes", "confusion", "add_bias", "best_bias"]


def split_validation(data: Data, n_val: int, seed: int = 0) -> Tuple[Data, Data]:
    """Split the training images into (rest, validation), both class-balanced draws; the test set is untouched.

    Choices such as the bias below are made on the validation set, never on the test set.
    Returns two Data: the first trains on the other images, the second holds the n_val as its training set.
    """
    N = len(data.y_train)
    if not 1 <= n_val < N:
        raise ValueError(f"n_val must be in [1, {N - 1}], got {n_val}")
    val = data.balanced_indices(n_val, seed)
    rest = torch.ones(N, dtype=torch.bool, device=data.y_train.device)
    rest[val] = False
    return (data.with_train(rest, f"{N - n_val:,} training images, {n_val:,} held out for validation"),
            data.with_train(val, f"{n_val:,} validation images"))


def without_classes(data: Data, classes: Sequence[int]) -> Data:
    """A transfer set: the training images of every class except `classes` (the test set keeps all)."""
    classes = sorted(set(int(c) for c in classes))
    if not classes or not all(0 <= c < data.num_classes for c in classes):
        raise ValueError(f"classes must be a non-empty list of class indices in [0, {data.num_classes - 1}], "
                         f"got {classes}")
    keep = ~torch.isin(data.y_train, torch.tensor(classes, device=data.y_train.device))
    if not keep.any():
        raise ValueError("classes would remove every training image")
    names = ", ".join(data.classes[c] for c in classes)
    return data.with_train(keep, f"without class {names} ({int((~keep).sum()):,} images removed)")


def confusion(logits: Tensor, labels: Tensor) -> Tensor:
    """Confusion matrix M (C, C): M[a, b] = how many examples of true class a are predicted as b.

    logits: (N, C); labels: (N,) -> (C, C) int64; the errors are the off-diagonal entries.
    """
    check_logits(logits, "logits")
    N, C = logits.shape
    y = check_labels(labels, N, C)
    return torch.bincount(y * C + logits.argmax(1), minlength=C * C).view(C, C)


def add_bias(logits: Tensor, cls: int, bias: float) -> Tensor:
    """The logits with `bias` added to class cls: (N, C) -> (N, C). Probabilities of the class scale by e^bias."""
    check_logits(logits, "logits")
    if not 0 <= cls < logits.shape[-1]:
        raise ValueError(f"cls must be in [0, {logits.shape[-1] - 1}], got {cls}")
    out = logits.clone()
    out[..., cls] += bias
    return out


def best_bias(val_logits: Tensor, val_labels: Tensor, cls: int, biases: Sequence[float]) -> float:
    """The bias for class cls, among `biases`, that makes the fewest errors on the validation set.

    val_logits: (N, C) on held-out images; val_labels: (N,). Ties go to the smallest bias.
    The validation set must contain the class: otherwise nothing could tell a good bias from a bad one.
    """
    check_logits(val_logits, "val_logits")
    N, C = val_logits.shape
    y = check_labels(val_labels, N, C, name="val_labels")
    if not 0 <= cls < C:
        raise ValueError(f"cls must be in [0, {C - 1}], got {cls}")
    if not (y == cls).any():
        raise ValueError(f"val_labels holds no example of class {cls}: the bias cannot be chosen without one")
    biases = sorted(float(b) for b in biases)
    if not biases:
        raise ValueError("biases must hold at least one candidate")
    errors = [int((add_bias(val_logits, cls, b).argmax(1) != y).sum()) for b in biases]
    return biases[errors.index(min(errors))]
