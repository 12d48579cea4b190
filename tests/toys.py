"""Toy problems for the tests: small enough to train in a second, separable enough to learn."""
import torch

import kdlib as kd


def blobs(n_train: int = 200, n_test: int = 56, d: int = 8, classes: int = 3, seed: int = 0) -> kd.Data:
    """Gaussian blobs as a kd.Data: x (n, d) around `classes` random centres, y (n,) their labels.
    A linear model learns them in a few epochs."""
    g = torch.Generator().manual_seed(seed)
    centres = 3 * torch.randn(classes, d, generator=g)
    y = torch.randint(0, classes, (n_train + n_test,), generator=g)
    x = centres[y] + torch.randn(n_train + n_test, d, generator=g)
    return kd.Data("blobs", x[:n_train], y[:n_train], x[n_train:], y[n_train:],
                   [str(c) for c in range(classes)], "made up")
