"""Figures for the book: one distribution, a distribution over temperatures, targets, gradients.

Every function returns the matplotlib Figure it drew on. Those that take ``ax=`` (or ``axes=``)
draw onto the given axes instead of making a new figure. Every probability is computed by
kdlib.losses (softmax_t, mixed_target), never by a second copy of the softmax here.

Every figure fits the book's text column at its natural size: at most FIGURE_WIDTH inches wide
(6.9 in, 690 px at the book's 100 dpi, once saved with the notebook's tight bounding box) and no
text smaller than MIN_FONT_SIZE points. Panels that would not fit side by side go in rows.

Shapes: one example at a time. ``logits`` and ``probs`` are 1-D, length C (the classes);
``class_names`` is a sequence of C strings (default "0", "1", ..., "C-1").
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import matplotlib
import matplotlib.patches
import matplotlib.transforms
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.container import BarContainer
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from torch import Tensor

from . import losses

__all__ = ["bars", "temperatures", "targets", "gradient_bars", "gradient_scaling", "digit_soft_targets", "similarity",
           "curves", "batch_accuracy", "augmentations", "heatmap", "gain_vs_size", "gain_vs_lead", "confusion_matrix",
           "confusion_matrices", "mode_fits", "top_k_tradeoff", "score_pairs"]

ArrayLike = Union[Tensor, np.ndarray, Sequence[float]]

BAR_COLOR = "tab:blue"
HIGHLIGHT_COLOR = "tab:orange"
POSITIVE_COLOR = "tab:red"    # gradient > 0: gradient descent lowers this logit
NEGATIVE_COLOR = "tab:blue"   # gradient < 0: gradient descent raises this logit
FIGURE_WIDTH = 6.7            # inches: with the 0.1-in margins of a tight save, 6.9 in = 690 px at 100 dpi
MIN_FONT_SIZE = 9             # points: the smallest text a figure writes
PANEL_SIZE = (FIGURE_WIDTH / 3, 2.2)  # inches per panel in the multi-panel figures: three to a row


# ---------------------------------------------------------------- input checks
def _as_vector(x: ArrayLike, name: str) -> Tensor:
    """x as a detached 1-D floating-point tensor of length >= 1 with finite entries."""
    t = torch.as_tensor(x).detach().cpu()
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    if t.ndim != 1 or t.numel() < 1:
        raise ValueError(f"{name} must be 1-D with one entry per class, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return t


def _class_names(class_names: Optional[Sequence[str]], num_classes: int) -> list:
    """The C tick labels: class_names as strings, or "0" .. "C-1" when None."""
    if class_names is None:
        return [str(i) for i in range(num_classes)]
    names = [str(n) for n in class_names]
    if len(names) != num_classes:
        raise ValueError(f"class_names has {len(names)} names but there are {num_classes} classes")
    return names


def _check_label(label: Union[int, Tensor], num_classes: int, name: str = "label") -> int:
    """label as an int in [0, num_classes)."""
    if isinstance(label, Tensor) and label.numel() == 1 and not label.is_floating_point():
        label = label.item()
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
        raise ValueError(f"{name} must be an integer class index, got {label!r}")
    if not 0 <= label < num_classes:
        raise ValueError(f"{name} must lie in [0, {num_classes - 1}], got {label}")
    return int(label)


def _check_temperatures(Ts: Sequence[float], name: str = "Ts") -> list:
    """Ts as a non-empty list of floats, each finite and > 0."""
    Ts = list(Ts)
    if not Ts:
        raise ValueError(f"{name} must hold at least one temperature, got none")
    return [losses.check_temperature(T, name=f"{name}[{i}]") for i, T in enumerate(Ts)]


# ------------------------------------------------------------- drawing helper
def _draw_bars(ax: Axes, values: Tensor, names: Sequence[str], colors: Sequence[str],
               title: str, ylabel: str) -> BarContainer:
    """One bar per class on ax, with tick labels, title and y label; the one bar-drawing routine."""
    x = np.arange(len(names))
    container = ax.bar(x, values.numpy(), color=colors, width=0.75)
    long_names = max(len(n) for n in names) > 3
    ax.set_xticks(x, names, rotation=45 if long_names else 0, ha="right" if long_names else "center",
                  rotation_mode="anchor")
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    return container


def _new_axes(ax: Optional[Axes], figsize: Tuple[float, float]) -> Axes:
    """ax itself, or the axes of a new figure of the given size."""
    if ax is not None:
        return ax
    _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def _log_floor(values: Tensor) -> float:
    """A power of ten at or below the smallest positive value: the bottom of a log-scale axis."""
    positive = values[values > 0]
    smallest = positive.min().item() if positive.numel() else 1e-12
    return 10.0 ** math.floor(math.log10(max(smallest, 1e-30)))


# ------------------------------------------------------------------ the plots
def bars(probs: ArrayLike, class_names: Optional[Sequence[str]] = None, ax: Optional[Axes] = None,
         title: str = "Probabilities", ylim: Tuple[float, float] = (0.0, 1.0), log: bool = False,
         highlight: Optional[int] = None) -> Figure:
    """Bar chart of one distribution.

    probs: (C,) probabilities (tensor, array or list). class_names: C labels for the x axis.
    ylim is fixed (default [0, 1]) so charts side by side compare; with log=True the axis is
    logarithmic and a lower limit <= 0 becomes the power of ten below the smallest probability.
    highlight: index of a class (e.g. the true label) drawn in another colour.
    """
    p = _as_vector(probs, "probs")
    names = _class_names(class_names, len(p))
    if highlight is not None:
        highlight = _check_label(highlight, len(p), "highlight")
    ax = _new_axes(ax, (6.4, 3.2))
    colors = [HIGHLIGHT_COLOR if i == highlight else BAR_COLOR for i in range(len(p))]
    _draw_bars(ax, p, names, colors, title, "probability")
    bottom, top = ylim
    if log:
        ax.set_yscale("log")
        if bottom <= 0:
            bottom = _log_floor(p)
    ax.set_ylim(bottom, top)
    return ax.figure


def temperatures(logits: ArrayLike, Ts: Sequence[float], class_names: Optional[Sequence[str]] = None,
                 log: bool = False) -> Figure:
    """Small multiples of softmax(z / T), one panel per temperature in Ts, all on the same y axis.

    logits: (C,). Ts: one or more temperatures > 0. With log=True the shared y axis is logarithmic,
    which shows the small probabilities that a linear axis flattens to zero.
    """
    z = _as_vector(logits, "logits")
    Ts = _check_temperatures(Ts)
    names = _class_names(class_names, len(z))
    probs = [losses.softmax_t(z, T) for T in Ts]
    ylim = (_log_floor(torch.stack(probs)) if log else 0.0, 1.0)

    ncols = min(len(Ts), 3)
    nrows = math.ceil(len(Ts) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(PANEL_SIZE[0] * ncols, PANEL_SIZE[1] * nrows),
                             sharey=True, squeeze=False, layout="constrained")
    for ax, T, p in zip(axes.flat, Ts, probs):
        bars(p, names, ax=ax, title=f"T = {T:g}", ylim=ylim, log=log)
    for ax in axes.flat[len(Ts):]:
        ax.set_visible(False)
    for ax in axes[:, 1:].flat:
        ax.set_ylabel("")
    fig.suptitle("softmax(z / T): the same logits at different temperatures")
    return fig


def targets(teacher_logits: ArrayLike, label: int, alpha: float, T: float,
            class_names: Optional[Sequence[str]] = None, axes: Optional[Sequence[Axes]] = None) -> Figure:
    """Three panels: the hard target onehot(y), the soft target p^T = softmax(v / T), and their mix.

        mixed = alpha * p^T + (1 - alpha) * onehot(y)        (kdlib.mixed_target)

    teacher_logits v: (C,); label y: an int in [0, C); 0 <= alpha <= 1; T > 0.
    axes: three axes to draw on (default: a new figure). The true class is highlighted.
    """
    v = _as_vector(teacher_logits, "teacher_logits")
    y = _check_label(label, len(v))
    alpha, T = losses.check_alpha(alpha), losses.check_temperature(T)
    names = _class_names(class_names, len(v))
    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(FIGURE_WIDTH, PANEL_SIZE[1] + 0.5), sharey=True,
                               layout="constrained")
    elif len(axes) != 3:
        raise ValueError(f"axes must hold three axes (hard, soft, mixed), got {len(axes)}")

    v, labels = v[None], torch.tensor([y])
    panels = [(0.0, "hard target: onehot(y)"),                  # alpha = 0: the label alone
              (1.0, f"soft target: teacher at T = {T:.3g}"),      # alpha = 1: the teacher alone
              (alpha, f"mixed: {alpha:g}·soft + {1 - alpha:g}·hard")]
    for ax, (a, title) in zip(axes, panels):
        bars(losses.mixed_target(v, labels, a, T)[0], names, ax=ax, title=title, highlight=y)
    for ax in axes[1:]:
        ax.set_ylabel("")
    return axes[0].figure


def gradient_bars(grad: ArrayLike, class_names: Optional[Sequence[str]] = None, ax: Optional[Axes] = None,
                  title: str = "Gradient of the loss with respect to the logits",
                  limit: Optional[float] = None) -> Figure:
    """Bars of one gradient dL/dz, coloured by sign, on a y axis symmetric about a zero line.

    grad: (C,). Red bars (> 0): a gradient-descent step lowers that logit; blue bars (< 0): raises it.
    limit: the half-height of the y axis (default: 1.15 * max |grad|), fixed to compare several plots.
    """
    g = _as_vector(grad, "grad")
    names = _class_names(class_names, len(g))
    if limit is None:
        limit = 1.15 * g.abs().max().item() or 1.0
    elif not (math.isfinite(limit) and limit > 0):
        raise ValueError(f"limit must be finite and > 0, got {limit}")
    ax = _new_axes(ax, (6.4, 3.2))
    colors = [POSITIVE_COLOR if x > 0 else NEGATIVE_COLOR if x < 0 else "gray" for x in g.tolist()]
    _draw_bars(ax, g, names, colors, title, "dL / dz")
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_ylim(-limit, limit)
    ax.legend(handles=[Patch(color=POSITIVE_COLOR, label="> 0: step lowers z"),
                       Patch(color=NEGATIVE_COLOR, label="< 0: step raises z")],
              fontsize=MIN_FONT_SIZE, loc="upper right", framealpha=0.8, handlelength=1.0)
    return ax.figure


# ------------------------------------------------------------ the experiments' figures
def _show_image(ax: Axes, image: Tensor) -> None:
    """A (1, H, W) or (3, H, W) image, rescaled to [0, 1] for display, without ticks."""
    img = image.detach().float().cpu()
    img = (img - img.min()) / (img.max() - img.min() + 1e-12)
    ax.imshow((img[0] if img.shape[0] == 1 else img.permute(1, 2, 0)).numpy(),
              cmap="gray_r" if img.shape[0] == 1 else None)
    ax.set_xticks([])
    ax.set_yticks([])


def digit_soft_targets(images: Tensor, logits: Tensor, Ts: Sequence[float],
                       class_names: Optional[Sequence[str]] = None,
                       highlight: Optional[Sequence[int]] = None,
                       row_titles: Optional[Sequence[str]] = None) -> Figure:
    """One row per example: its image, then its soft targets softmax(v / T) at each T in Ts.

    images: (K, channels, H, W); logits v: (K, C); highlight: K class indices drawn in another colour
    (e.g. the look-alike class of each example); row_titles: K titles shown above the images.
    The panels share the column's width: up to four temperatures read well.
    """
    Ts = _check_temperatures(Ts)
    if images.ndim != 4 or logits.ndim != 2 or len(images) != len(logits):
        raise ValueError(f"images must be (K, channels, H, W) and logits (K, C) with the same K, got "
                         f"{tuple(images.shape)} and {tuple(logits.shape)}")
    K, C = logits.shape
    names = _class_names(class_names, C)
    highlight = [None] * K if highlight is None else list(highlight)
    if len(highlight) != K:
        raise ValueError(f"highlight must give one class per example ({K}), got {len(highlight)}")
    fig, axes = plt.subplots(K, 1 + len(Ts), figsize=(FIGURE_WIDTH, 1.7 * K), squeeze=False,
                             gridspec_kw={"width_ratios": [0.7] + [1] * len(Ts)}, layout="constrained")
    for k in range(K):
        _show_image(axes[k, 0], images[k])
        if row_titles is not None:
            axes[k, 0].set_title(row_titles[k], fontsize=10)
        for ax, T in zip(axes[k, 1:], Ts):
            bars(losses.softmax_t(logits[k].detach().float().cpu(), T), names, ax=ax, highlight=highlight[k],
                 title=f"T = {T:g}")
            ax.set_ylabel("")
            if ax is not axes[k, 1]:
                ax.tick_params(labelleft=False)  # the same 0-1 axis as the first panel of the row
    return fig


def similarity(S: Tensor, class_names: Optional[Sequence[str]] = None,
               title: str = "Average soft targets") -> Figure:
    """Heatmap of S (C, C): row a = true class, column b = the probability given to b, averaged.

    The diagonal is masked (grey) and the colour scale is logarithmic, so that the small
    off-diagonal similarities are visible next to each other.
    """
    S = torch.as_tensor(S).detach().float().cpu()
    if S.ndim != 2 or S.shape[0] != S.shape[1]:
        raise ValueError(f"S must be a square (C, C) matrix, got shape {tuple(S.shape)}")
    names = _class_names(class_names, len(S))
    off = S.clone()
    off.fill_diagonal_(float("nan"))
    positive = off[torch.isfinite(off) & (off > 0)]
    lo = positive.min().item() if positive.numel() else 1e-6
    hi = positive.max().item() if positive.numel() else 1.0
    fig, ax = plt.subplots(figsize=(6.4, 5.4), layout="constrained")
    image = ax.imshow(off.numpy(), cmap="viridis", norm=matplotlib.colors.LogNorm(lo, max(hi, lo * 10)))
    ax.set_facecolor("0.85")
    ax.set_xticks(range(len(names)), names, rotation=45 if max(map(len, names)) > 3 else 0, ha="right"
                  if max(map(len, names)) > 3 else "center")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("probability given to class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, label="mean probability (log scale)")
    return fig


def curves(histories: "dict", steps_per_epoch: int, smooth: int = 20) -> Figure:
    """Training loss per step (moving average over `smooth` steps) and test accuracy per epoch.

    histories: {label: kdlib.train.History}. Losses of different kinds (cross entropy, the
    distillation loss) are not on the same scale: compare their shapes, and the accuracies.
    """
    if not histories:
        raise ValueError("histories must hold at least one run")
    if smooth < 1:
        raise ValueError(f"smooth must be >= 1, got {smooth}")
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(FIGURE_WIDTH, 3.2), layout="constrained")
    for label, h in histories.items():
        loss = torch.tensor(h.step_loss)
        k = min(smooth, len(loss))
        avg = torch.nn.functional.avg_pool1d(loss[None, None], k, stride=1)[0, 0]
        ax_loss.plot((torch.arange(len(avg)) + k) / steps_per_epoch, avg.numpy(), label=label)
        ax_acc.plot(range(1, len(h.epoch_test_acc) + 1), [100 * a for a in h.epoch_test_acc], marker=".",
                    label=label)
    ax_loss.set(xlabel="epoch", ylabel="training loss", yscale="log")
    ax_loss.set_title("Training loss\n(moving average)", fontsize=10)
    ax_acc.set(xlabel="epoch", ylabel="test accuracy (%)")
    ax_acc.set_title("Test accuracy\nafter each epoch", fontsize=10)
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    _shared_legend(fig, ax_loss)
    return fig


def batch_accuracy(histories: "dict", steps_per_epoch: int, smooth: int = 10) -> Figure:
    """Accuracy on each training batch: the whole run (moving average over `smooth` batches) and the
    first epoch zoomed in, batch by batch, where a wrongly started run shows at once.

    histories: {label: kdlib.train.History}. Training-batch accuracy counts the student's arg-max
    against the true labels, whatever loss it was trained with.
    """
    if not histories:
        raise ValueError("histories must hold at least one run")
    if steps_per_epoch < 1 or smooth < 1:
        raise ValueError(f"steps_per_epoch and smooth must be >= 1, got {steps_per_epoch} and {smooth}")
    fig, (ax_all, ax_first) = plt.subplots(1, 2, figsize=(FIGURE_WIDTH, 3.2), layout="constrained")
    for label, h in histories.items():
        acc = 100 * torch.tensor(h.step_acc)
        k = min(smooth, len(acc))
        avg = torch.nn.functional.avg_pool1d(acc[None, None], k, stride=1)[0, 0]
        ax_all.plot((torch.arange(len(avg)) + k) / steps_per_epoch, avg.numpy(), label=label)
        ax_first.plot(range(1, min(steps_per_epoch, len(acc)) + 1), acc[:steps_per_epoch].numpy(), lw=1, label=label)
    ax_all.set(xlabel="epoch", ylabel="training-batch accuracy (%)")
    ax_all.set_title(f"Accuracy on training batches\n(moving average of {smooth})", fontsize=10)
    ax_first.set(xlabel="batch", ylabel="training-batch accuracy (%)")
    ax_first.set_title("The first epoch,\nbatch by batch", fontsize=10)
    for ax in (ax_all, ax_first):
        ax.grid(alpha=0.3)
    _shared_legend(fig, ax_all)
    return fig


def _shared_legend(fig: Figure, ax: Axes, ncols: int = 2) -> None:
    """One legend of ax's labelled artists, below all the axes of fig (in ncols columns)."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(ncols, len(labels)), fontsize=MIN_FONT_SIZE)


def augmentations(x: Tensor, draws: int = 3, seed: int = 0, title: str = "") -> Figure:
    """A grid of images: the originals on top, then `draws` rows of kdlib.augment_crop_flip(x).

    x: (N, C, H, W) normalised images (C = 1 or 3); each image is rescaled to [0, 1] to be shown.
    The draws come from a generator seeded with `seed`, so the figure is the same each time.
    """
    from .data import augment_crop_flip

    if x.ndim != 4 or x.shape[1] not in (1, 3) or draws < 1:
        raise ValueError(f"x must be (N, 1 or 3, H, W) and draws >= 1, got {tuple(x.shape)} and {draws}")
    g = torch.Generator().manual_seed(seed)
    x = x.detach().cpu()
    rows = [x] + [augment_crop_flip(x, g) for _ in range(draws)]
    side = min(1.3, (FIGURE_WIDTH - 0.4) / len(x))  # inches per image; 0.4 for the row labels
    fig, axes = plt.subplots(len(rows), len(x), figsize=(0.4 + side * len(x), 0.3 + 1.05 * side * len(rows)),
                             layout="constrained", squeeze=False)
    for r, batch in enumerate(rows):
        for c, image in enumerate(batch):
            image = (image - image.min()) / (image.max() - image.min() + 1e-12)
            axes[r, c].imshow(image.permute(1, 2, 0).numpy().squeeze(), cmap="gray")
            axes[r, c].set_xticks([]), axes[r, c].set_yticks([])
        axes[r, 0].set_ylabel("original" if r == 0 else f"draw {r}", fontsize=MIN_FONT_SIZE)
    fig.suptitle(title or "Random crop + flip on the device", fontsize=10)
    return fig


def heatmap(values: Tensor, Ts: Sequence[float], alphas: Sequence[float], baseline: Optional[float] = None,
            title: str = "Test errors of the distilled student", marker: Optional[Tuple[float, float]] = None,
            ax: Optional[Axes] = None) -> Figure:
    """A (len(Ts), len(alphas)) grid of numbers (e.g. test errors) as a heatmap, each cell written in.

    baseline: the student from scratch; cells are coloured by their difference from it
    (blue: fewer errors, red: more). marker: a (T, alpha) cell to outline.
    """
    v = torch.as_tensor(values, dtype=torch.float64)
    if v.shape != (len(Ts), len(alphas)):
        raise ValueError(f"values must have shape (len(Ts), len(alphas)) = {(len(Ts), len(alphas))}, "
                         f"got {tuple(v.shape)}")
    ax = _new_axes(ax, (min(FIGURE_WIDTH, 1.2 + 1.1 * len(alphas)), 1.0 + 0.6 * len(Ts)))
    diff = v - (baseline if baseline is not None else v.mean())
    lim = diff.abs().max().item() or 1.0
    image = ax.imshow(diff.numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    for i in range(len(Ts)):
        for j in range(len(alphas)):
            ax.text(j, i, f"{v[i, j]:g}", ha="center", va="center", fontsize=MIN_FONT_SIZE,
                    color=_text_color_on(image.to_rgba(diff[i, j].item())))
    ax.set_xticks(range(len(alphas)), [f"{a:g}" for a in alphas])
    ax.set_yticks(range(len(Ts)), [f"{T:g}" for T in Ts])
    ax.set(xlabel="alpha (weight of the soft term)", ylabel="T")
    ax.set_title(title + (f"\n(colour: difference from scratch = {baseline:g})" if baseline is not None else ""),
                 fontsize=10, wrap=True)
    if marker is not None:
        i, j = list(Ts).index(marker[0]), list(alphas).index(marker[1])
        ax.add_patch(matplotlib.patches.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=3, ec="black"))
    return ax.figure


def _relative_luminance(color) -> float:
    """WCAG 2 relative luminance of a matplotlib colour: 0 for black, 1 for white."""
    def linear(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in matplotlib.colors.to_rgb(color))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _text_color_on(face) -> str:
    """Black or white, whichever reads better on `face` (the higher WCAG contrast ratio).

    One of the two always reaches 4.5:1 (WCAG AA for text): the better of them is at least
    sqrt(21) = 4.58:1 on any colour.
    """
    lum = _relative_luminance(face)
    return "black" if (lum + 0.05) / 0.05 >= 1.05 / (lum + 0.05) else "white"


def gain_vs_size(results: "dict", n_test: "dict") -> Figure:
    """Test error of teacher and students, and the distillation gain, against training-set size.

    results: {dataset: {setting: {n_train: kdlib.experiments.Comparison}}}, where a setting is a
    label such as "T=20, alpha=0.9" and every setting of a data set shares its teacher and its
    students from scratch; n_test: {dataset: number of test images}.
    Left: test error (%). Right: errors saved per 1,000 test images, mean over seeds, with bars
    of one standard deviation of the per-seed gain. One legend below serves both panels: a gain
    has the colour and marker of its distilled student.
    """
    if not results:
        raise ValueError("results must hold at least one data set")
    fig, (ax_err, ax_gain) = plt.subplots(1, 2, figsize=(FIGURE_WIDTH, 4.4), layout="constrained")
    markers = "^vD*P"
    for k, (name, settings) in enumerate(results.items()):
        color, pct = f"C{k}", 100 / n_test[name]
        first = next(iter(settings.values()))
        sizes = sorted(first)
        ax_err.plot(sizes, [first[n].teacher.test_errors * pct for n in sizes], ":", marker="s", color=color,
                    label=f"{name}: teacher")
        ax_err.plot(sizes, [_mean_sd(first[n].errors("scratch"))[0] * pct for n in sizes], "--", marker="o",
                    color=color, label=f"{name}: student from scratch")
        for j, (setting, by_size) in enumerate(settings.items()):
            marker = markers[j % len(markers)]
            ax_err.plot(sizes, [_mean_sd(by_size[n].errors("distilled"))[0] * pct for n in sizes], "-",
                        marker=marker, color=color, label=f"{name}: distilled, {setting}")
            gains = [_mean_sd(by_size[n].gain()) for n in sizes]
            ax_gain.errorbar(sizes, [10 * pct * g for g, _ in gains], yerr=[10 * pct * sd for _, sd in gains],
                             marker=marker, capsize=4, color=color)
    ax_err.set(xscale="log", xlabel="training images", ylabel="test error (%)")
    ax_err.set_title("Test error", fontsize=10)
    ax_gain.axhline(0, color="black", lw=0.8)
    ax_gain.set(xscale="log", xlabel="training images", ylabel="errors saved per 1,000 test images")
    ax_gain.set_title("Gain from distillation\n(scratch − distilled, per seed)", fontsize=10)
    for ax in (ax_err, ax_gain):
        ax.grid(alpha=0.3)
    _shared_legend(fig, ax_err)
    return fig


def _mean_sd(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    t = torch.tensor(values, dtype=torch.float64)
    return t.mean().item(), (t.std().item() if len(t) > 1 else 0.0)


# ------------------------------------------------ why the soft term carries T^2


def gradient_scaling(Ts: Sequence[float], with_T2: ArrayLike, without_T2: ArrayLike,
                     ax: Optional[Axes] = None) -> Figure:
    """Log-log plot of the soft term's gradient norm against T, with and without the T^2 factor.

    Ts: K temperatures > 0; with_T2, without_T2: (K,) positive norms, as returned by
    kdlib.analysis.soft_gradient_norms. A dashed reference line proportional to 1 / T^2 passes
    through the last point of without_T2: without the factor the norm follows it, with it the
    norm stays level.
    """
    Ts = _check_temperatures(Ts)
    curves = {"with_T2": _as_vector(with_T2, "with_T2"), "without_T2": _as_vector(without_T2, "without_T2")}
    for name, values in curves.items():
        if len(values) != len(Ts):
            raise ValueError(f"{name} must have one norm per temperature ({len(Ts)}), got {len(values)}")
        if not (values > 0).all():
            raise ValueError(f"{name} must be > 0 everywhere to be drawn on a log axis")
    ax = _new_axes(ax, (6.4, 3.6))
    T = np.array(Ts)
    ax.loglog(T, curves["with_T2"].numpy(), "o-", label=r"with $T^2$: $T^2\,\nabla\,\mathrm{KL}$")
    ax.loglog(T, curves["without_T2"].numpy(), "s-", label=r"without: $\nabla\,\mathrm{KL}$")
    ax.loglog(T, curves["without_T2"][-1].item() * (T[-1] / T) ** 2, "k--", lw=1, label=r"$\propto 1/T^2$")
    ax.set_xlabel("temperature T")
    ax.set_ylabel("gradient norm")
    ax.set_title("The soft term's gradient, with and without the T² factor")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return ax.figure


def gain_vs_lead(results: "dict", n_test: "dict") -> Figure:
    """The distillation gain against how far the teacher is ahead of the student from scratch.

    results, n_test: as for gain_vs_size. One point per data set, setting and size: x = teacher's
    lead (scratch errors - teacher errors), y = gain (scratch errors - distilled errors), both per
    1,000 test images and averaged over seeds; bars: one standard deviation of the per-seed gain.
    On the diagonal the distilled student is as good as its teacher.
    """
    if not results:
        raise ValueError("results must hold at least one data set")
    fig, ax = plt.subplots(figsize=(FIGURE_WIDTH, 5.0), layout="constrained")
    markers = "^vD*P"
    lo, hi = 0.0, 0.0
    points = []  # (lead, gain, label): each point is labelled with its training-set size
    for k, (name, settings) in enumerate(results.items()):
        per_1000 = 1000 / n_test[name]
        for j, (setting, by_size) in enumerate(settings.items()):
            for n, r in sorted(by_size.items()):
                lead = (_mean_sd(r.errors("scratch"))[0] - r.teacher.test_errors) * per_1000
                gain, sd = (per_1000 * x for x in _mean_sd(r.gain()))
                ax.errorbar(lead, gain, yerr=sd, marker=markers[j % len(markers)], color=f"C{k}", capsize=3,
                            label=f"{name}, {setting}" if n == min(by_size) else None)
                points.append((lead, gain, f"{n:,}"))
                lo, hi = min(lo, lead, gain - sd), max(hi, lead, gain + sd)
    pad = 0.05 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], ":", color="gray", label="distilled = teacher")
    ax.axhline(0, color="black", lw=0.8)
    ax.set(xlabel="teacher's lead over the student from scratch (errors per 1,000)",
           ylabel="gain from distillation (errors per 1,000)")
    ax.set_title("Gain against the teacher's lead (numbers: training images)", fontsize=10)
    ax.grid(alpha=0.3)
    _shared_legend(fig, ax)
    _label_points(ax, points)
    return fig


def _label_points(ax: Axes, points: Sequence[Tuple[float, float, str]]) -> None:
    """Write each point's label next to it where it overlaps no other label and no other point.

    Points are (x, y, label) in data coordinates. A point whose label is already written next to
    a point less than a line of text away (the same training-set size of two settings that land
    on the same spot) shares that label. Each label takes the first place of `offsets` that is
    free and inside the axes (the first, if none is). The figure is laid out first, so that
    what is measured here is what is drawn; the labels stay out of the layout.
    """
    # where a label may go, in points from its point, in order of preference: right, left, above, below
    offsets = [((5, 4), "left", "bottom"), ((5, -4), "left", "top"), ((-5, 4), "right", "bottom"),
               ((-5, -4), "right", "top"), ((0, 7), "center", "bottom"), ((0, -7), "center", "top"),
               ((12, 0), "left", "center"), ((-12, 0), "right", "center"), ((5, 14), "left", "bottom"),
               ((5, -14), "left", "top"), ((-5, 14), "right", "bottom"), ((-5, -14), "right", "top")]
    fig = ax.figure
    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer() if hasattr(fig.canvas, "get_renderer") else fig._get_renderer()
    to_px = ax.transData.transform
    frame = ax.get_window_extent(renderer)
    line = MIN_FONT_SIZE * fig.dpi / 72  # one line of text, in pixels
    dots = [matplotlib.transforms.Bbox.from_bounds(px - line / 3, py - line / 3, 2 * line / 3, 2 * line / 3)
            for px, py in (to_px((x, y)) for x, y, _ in points)]
    placed = []  # (anchor in pixels, text, bbox)
    for k, (x, y, text) in enumerate(points):
        anchor = to_px((x, y))
        if any(t == text and np.hypot(*(anchor - a)) < line for a, t, _ in placed):
            continue
        label = None
        for offset, ha, va in offsets:
            candidate = ax.annotate(text, (x, y), textcoords="offset points", xytext=offset, ha=ha, va=va,
                                    fontsize=MIN_FONT_SIZE, in_layout=False)
            box = candidate.get_window_extent(renderer)
            free = (frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1)
                    and not any(box.overlaps(b) for _, _, b in placed)
                    and not any(box.overlaps(d) for i, d in enumerate(dots) if i != k))
            if free or label is None:
                if label is not None:
                    label.remove()
                label = candidate
                if free:
                    break
            else:
                candidate.remove()
        placed.append((anchor, text, label.get_window_extent(renderer)))


def confusion_matrix(M: Tensor, class_names: Optional[Sequence[str]] = None, title: str = "Confusion matrix",
                     ax: Optional[Axes] = None, highlight: Optional[int] = None) -> Figure:
    """A confusion matrix M (C, C) of counts (row: true class, column: predicted), each count written in.

    Colours show the errors only (the diagonal is grey), so that a row of mistakes stands out;
    highlight: a class whose row and column are outlined. Several matrices: confusion_matrices.
    """
    M = torch.as_tensor(M).detach().cpu()
    if M.ndim != 2 or M.shape[0] != M.shape[1]:
        raise ValueError(f"M must be a square (C, C) matrix, got shape {tuple(M.shape)}")
    names = _class_names(class_names, len(M))
    C = len(M)
    errors = M.double().clone()
    errors.fill_diagonal_(float("nan"))
    ax = _new_axes(ax, (5.2, 4.6))
    image = ax.imshow(errors.numpy(), cmap="Reds", vmin=0, vmax=max(1.0, float(errors.nan_to_num(0).max())))
    ax.set_facecolor("0.9")
    for i in range(C):
        for j in range(C):
            if M[i, j]:  # a count on the diagonal is dark grey on the light grey of the axes (5.6:1)
                ax.text(j, i, str(int(M[i, j])), ha="center", va="center", fontsize=MIN_FONT_SIZE,
                        color=_text_color_on(image.to_rgba(errors[i, j].item())) if i != j else "0.35")
    ax.set_xticks(range(C), names)
    ax.set_yticks(range(C), names)
    ax.set(xlabel="predicted class", ylabel="true class")
    ax.set_title(f"{title}\n{int(M.sum() - M.trace())} errors of {int(M.sum()):,}", fontsize=10)
    if highlight is not None:
        k = _check_label(highlight, C, "highlight")
        for rect in ((-0.5, k - 0.5, C, 1), (k - 0.5, -0.5, 1, C)):
            ax.add_patch(matplotlib.patches.Rectangle(rect[:2], *rect[2:], fill=False, lw=1.5, ec="tab:blue"))
    return ax.figure



def confusion_matrices(matrices: Sequence[Tensor], titles: Sequence[str], class_names: Optional[Sequence[str]] = None,
                       highlight: Optional[int] = None, ncols: int = 2) -> Figure:
    """Several confusion matrices (each (C, C), as for confusion_matrix), `ncols` to a row.

    Two to a row leave each count of a 10-class matrix legible at the column's width.
    """
    if not matrices or len(titles) != len(matrices) or ncols < 1:
        raise ValueError(f"give one title per matrix (at least one) and ncols >= 1, got {len(matrices)} matrices, "
                         f"{len(titles)} titles and ncols={ncols}")
    ncols = min(ncols, len(matrices))
    nrows = math.ceil(len(matrices) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(FIGURE_WIDTH, 0.4 + nrows * FIGURE_WIDTH / ncols),
                             squeeze=False, layout="constrained")
    for ax, M, title in zip(axes.flat, matrices, titles):
        confusion_matrix(M, class_names, title=title, ax=ax, highlight=highlight)
    for ax in axes.flat[len(matrices):]:
        ax.set_visible(False)
    return fig


# ------------------------------------------------ the source articles' figures, remade
__all__ += ["temperature_lines", "temperature_groups", "prediction_and_gradient"]


def temperature_lines(logits: ArrayLike, Ts: Sequence[float], class_names: Optional[Sequence[str]] = None,
                      ax: Optional[Axes] = None,
                      title: str = "softmax(z / T): one line per temperature") -> Figure:
    """softmax(z / T) drawn as one line per temperature across the classes, with a legend of T.

        q_i^T = exp(z_i / T) / sum_j exp(z_j / T)        (kdlib.losses.softmax_t)

    This is how "(Attempt at) Knowledge Distillation" draws softmax' of [-1, 0, 4, 3] at
    T = 1 ... 5: the class index on the x axis, one line per T. logits: (C,); Ts: temperatures
    > 0, in the order of the legend. The y axis runs from 0 to 1.
    """
    z = _as_vector(logits, "logits")
    Ts = _check_temperatures(Ts)
    names = _class_names(class_names, len(z))
    ax = _new_axes(ax, (4.6, 3.0))
    x = np.arange(len(z))
    for T in Ts:
        ax.plot(x, losses.softmax_t(z, T).numpy(), "o-", markersize=4, label=f"{T:g}")
    ax.set_xticks(x, names)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("class")
    ax.set_ylabel("probability")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(title="T", fontsize=MIN_FONT_SIZE, title_fontsize=MIN_FONT_SIZE, framealpha=0.8)
    return ax.figure


def temperature_groups(logits: ArrayLike, Ts: Sequence[float], class_names: Optional[Sequence[str]] = None,
                       ax: Optional[Axes] = None,
                       title: str = "softmax(z / T) at several temperatures") -> Figure:
    """Grouped bars: for every class, one bar per temperature, of q^T = softmax(z / T).

    logits: (C,); Ts: K temperatures > 0 (one colour each, left to right within a group).
    One figure for one example, so that each class's probability can be read at every T side by
    side (kdlib.plots.temperatures gives one panel per T instead). The y axis runs from 0 to 1.
    """
    z = _as_vector(logits, "logits")
    Ts = _check_temperatures(Ts)
    names = _class_names(class_names, len(z))
    ax = _new_axes(ax, (FIGURE_WIDTH, 3.0))
    x = np.arange(len(z))
    width = 0.8 / len(Ts)
    for k, T in enumerate(Ts):
        ax.bar(x + (k - (len(Ts) - 1) / 2) * width, losses.softmax_t(z, T).numpy(), width=width,
               label=f"T = {T:g}")
    long_names = max(len(n) for n in names) > 3
    ax.set_xticks(x, names, rotation=45 if long_names else 0, ha="right" if long_names else "center",
                  rotation_mode="anchor")
    ax.set_xlim(-0.6, len(z) - 0.4)
    ax.set_ylim(0.0, 1.0)
    ax.set_ylabel("probability")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(fontsize=MIN_FONT_SIZE, framealpha=0.8, ncols=min(len(Ts), 4))
    return ax.figure


def prediction_and_gradient(student_logits: ArrayLike, teacher_logits: ArrayLike, label: int, alpha: float,
                            class_names: Optional[Sequence[str]] = None) -> Figure:
    """Two panels for one example at T = 1: the student's prediction, and the gradient against the mix.

        q = softmax(z),   t = alpha * softmax(v) + (1 - alpha) * onehot(y)   (kdlib.mixed_target)
        dL/dz = q - t      (kdlib.loss_gradient at T = 1, for a batch of one)

    student_logits z: (C,); teacher_logits v: (C,); label y: an int in [0, C); 0 <= alpha <= 1.
    Left, q with the true class highlighted; right, q - t coloured by sign (gradient_bars).
    This is the teacher-student article's pair of figures: predicted probabilities, then the
    gradient "p - t" with respect to the scores for its 50-50 mixed target.
    """
    z = _as_vector(student_logits, "student_logits")
    v = _as_vector(teacher_logits, "teacher_logits")
    if len(z) != len(v):
        raise ValueError(f"student_logits and teacher_logits must have the same length, got {len(z)} and {len(v)}")
    y = _check_label(label, len(z))
    alpha = losses.check_alpha(alpha)
    names = _class_names(class_names, len(z))
    grad = losses.loss_gradient(z[None], v[None], torch.tensor([y]), T=1.0, alpha=alpha)[0]
    fig, (ax_q, ax_g) = plt.subplots(1, 2, figsize=(FIGURE_WIDTH, 3.0), layout="constrained")
    bars(losses.softmax_t(z, 1.0), names, ax=ax_q, title="student's prediction q (T = 1)", highlight=y)
    gradient_bars(grad, names, ax=ax_g, title=f"gradient q - t, t = {alpha:g}·soft + {1 - alpha:g}·hard")
    # the legend where the bars are shortest: below zero if the largest bar is above it
    ax_g.get_legend().set_loc("lower right" if grad.max() >= -grad.min() else "upper right")
    return fig


def mode_fits(p: ArrayLike, fits: "dict", title: str = "") -> Figure:
    """A teacher's distribution p (C,) as grey bars and the distributions fitted to it, name -> q (C,),
    as lines over the same classes (kdlib.analysis.fit_unimodal)."""
    p = _as_vector(p, "p")
    fig, ax = plt.subplots(figsize=(FIGURE_WIDTH, 2.8), layout="constrained")
    x = np.arange(len(p))
    ax.bar(x, p.numpy(), color="0.8", width=1.0, label="teacher p (two modes)")
    for (name, q), color in zip(fits.items(), [BAR_COLOR, HIGHLIGHT_COLOR, "tab:green", "tab:purple"]):
        ax.plot(x, _as_vector(q, name).numpy(), color=color, lw=2.2, label=name)
    ax.set_xlabel("class")
    ax.set_ylabel("probability")
    ax.set_xlim(-0.5, len(p) - 0.5)
    ax.legend(frameon=False, fontsize=MIN_FONT_SIZE + 1)
    if title:
        ax.set_title(title, fontsize=MIN_FONT_SIZE + 1)
    return fig


def top_k_tradeoff(ks: Sequence[int], mass: "dict", sizes: "dict", bits: "dict",
                   scratch: Optional[float] = None) -> Figure:
    """Two panels: what a top-k table keeps, and what a student distilled from it scores.

    Left: mass[label] (one value per k of ks), the teacher's probability in its top k at a
    temperature (kdlib.analysis.top_k_mass), against k. Right: for each table, label -> bytes per
    position (sizes) and the validation bits per character of its students (bits: label -> one per
    seed, dots; their mean, a bar), bytes on a log axis; scratch, the students without a teacher,
    as a dashed line."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(FIGURE_WIDTH, 3.0), layout="constrained")
    for (label, values), color in zip(mass.items(), [BAR_COLOR, HIGHLIGHT_COLOR, "tab:green"]):
        left.plot(list(ks), list(values), "o-", color=color, lw=1.8, ms=4, label=label)
    left.set_xscale("log", base=2)
    ticks = [k for k in (1, 4, 16, 64, 256, 1024, 4096) if min(ks) <= k <= max(ks)]
    left.set_xticks(ticks, [str(k) for k in ticks])
    left.set_xlabel("k, logits kept per position")
    left.set_ylabel("teacher's mass in its top k")
    left.set_ylim(0, 1.02)
    left.legend(frameon=False, fontsize=MIN_FONT_SIZE, loc="lower right")
    for label, per_seed in bits.items():
        x, middle = sizes[label], float(np.mean(per_seed))
        right.plot([x] * len(per_seed), list(per_seed), "o", color=BAR_COLOR, ms=4, alpha=0.7)
        right.plot([x * 0.8, x * 1.25], [middle] * 2, color="black", lw=2)
        right.annotate(label, (x * 1.3, middle), textcoords="offset points", xytext=(2, 0), ha="left",
                       va="center", fontsize=MIN_FONT_SIZE)
    if scratch is not None:
        right.axhline(scratch, color="0.5", ls="--", lw=1)
        right.annotate("no teacher", (min(sizes.values()), scratch), textcoords="offset points",
                       xytext=(0, 4), fontsize=MIN_FONT_SIZE, color="0.4")
    right.set_xscale("log")
    right.set_xlim(min(sizes.values()) / 2.5, max(sizes.values()) * 12)  # room for the labels
    right.set_xlabel("bytes per position in the table")
    right.set_ylabel("validation bits per character")
    return fig


def score_pairs(points: "dict", xlabel: str, ylabel: str, title: str = "") -> Figure:
    """Models as points on two scores: points[label] is a list of (x, y), one per seed, drawn as
    small dots with their mean as a large marker and the label beside it. Lower-left is better
    when both scores are costs (bits per character, say)."""
    fig, ax = plt.subplots(figsize=(FIGURE_WIDTH, 3.6), layout="constrained")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for (label, pairs), color in zip(points.items(), colors * 3):
        xs, ys = zip(*pairs)
        ax.plot(xs, ys, "o", color=color, ms=4, alpha=0.6)
        mx, my = float(np.mean(xs)), float(np.mean(ys))
        ax.plot([mx], [my], "D", color=color, ms=8, mec="black", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(frameon=False, fontsize=MIN_FONT_SIZE, loc="center left", bbox_to_anchor=(1.0, 0.5))
    if title:
        ax.set_title(title, fontsize=MIN_FONT_SIZE + 1)
    return fig


def generations(lines: "dict", epochs: int, ylabel: str = "test errors") -> Figure:
    """Models against the training behind them: lines[label] is a list, one per seed, of the scores of
    generations 1, 2, ... (or of the controls trained 1x, 2x, ... as many epochs), drawn at 1, 2, ...
    times `epochs`. Each seed a thin line, the mean over seeds a thick one with its values marked."""
    fig, ax = plt.subplots(figsize=(FIGURE_WIDTH, 3.2), layout="constrained")
    colors = [BAR_COLOR, HIGHLIGHT_COLOR, "tab:green", "tab:purple"]
    for (label, per_seed), color in zip(lines.items(), colors * 2):
        steps = [epochs * (g + 1) for g in range(len(per_seed[0]))]
        for values in per_seed:
            ax.plot(steps, values, "-", color=color, lw=0.8, alpha=0.45)
        mean = np.mean(np.array(per_seed, dtype=float), axis=0)
        ax.plot(steps, mean, "o-", color=color, lw=2.2, ms=5, label=label)
    ax.set_xticks([epochs * (g + 1) for g in range(max(len(s[0]) for s in lines.values()))])
    ax.set_xlabel("epochs of training behind the model (the chain's, in total)")
    ax.set_ylabel(ylabel)
    ax.legend(frameon=False, fontsize=MIN_FONT_SIZE)
    return fig


def patience(results: "dict", baseline: Optional[str] = None, ylabel: str = "test errors") -> Figure:
    """Scores against the length of the schedule: results[label][epochs] is a list of scores, one per
    seed. Each label a line through its means (epochs on a log axis), its seeds as small dots.
    With a baseline (one of the labels), each seed's score is drawn as its lead over the baseline's
    run of the same seed and schedule, baseline - score (errors saved), and the baseline is the
    dashed line at 0."""
    fig, ax = plt.subplots(figsize=(FIGURE_WIDTH, 3.4), layout="constrained")
    colors = [BAR_COLOR, HIGHLIGHT_COLOR, "tab:green", "tab:purple", "tab:red", "tab:brown"]
    if baseline is not None:
        if baseline not in results:
            raise ValueError(f"baseline must be one of {list(results)}, got {baseline!r}")
        base = results[baseline]
        results = {label: {e: [b - v for b, v in zip(base[e], values)] for e, values in by_epochs.items()}
                   for label, by_epochs in results.items() if label != baseline}
        ax.axhline(0, color="0.45", ls="--", lw=1.5, label=baseline)
    for (label, by_epochs), color in zip(results.items(), colors * 2):
        epochs = sorted(by_epochs)
        means = [float(np.mean(by_epochs[e])) for e in epochs]
        for e in epochs:
            ax.plot([e] * len(by_epochs[e]), by_epochs[e], "o", color=color, ms=3, alpha=0.5)
        ax.plot(epochs, means, marker="o", color=color, lw=2, ms=5, label=label)
    all_epochs = sorted({e for by_epochs in results.values() for e in by_epochs})
    ax.set_xscale("log")
    ax.set_xticks(all_epochs, [str(e) for e in all_epochs])
    ax.minorticks_off()
    ax.set_xlabel("epochs of the student's schedule")
    ax.set_ylabel(ylabel)
    ax.legend(frameon=False, fontsize=MIN_FONT_SIZE, ncols=2)
    return fig


def attention_maps(images: Tensor, maps: "dict", title: str = "") -> Figure:
    """Images and, under each, what several networks attend to: maps[label] is (N, h, w), e.g. one
    layer's kdlib.features.attention_map reshaped, for the N images (N, C, H, W). One column per
    image, one row per network; each map is scaled to its own maximum and drawn over the image's
    size, so rows compare where, not how much."""
    n = len(images)
    fig, axes = plt.subplots(1 + len(maps), n, figsize=(FIGURE_WIDTH, 1.25 * (1 + len(maps)) + 0.3),
                             layout="constrained", squeeze=False)
    for j in range(n):
        _show_image(axes[0, j], images[j])
        for i, (label, m) in enumerate(maps.items(), start=1):
            ax = axes[i, j]
            a = m[j].detach().float().cpu()
            ax.imshow(a / a.max().clamp_min(1e-12), cmap="magma", vmin=0, vmax=1,
                      extent=(0, images.shape[-1], images.shape[-2], 0), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(label, fontsize=MIN_FONT_SIZE, rotation=0, ha="right", va="center")
    axes[0, 0].set_ylabel("image", fontsize=MIN_FONT_SIZE, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title, fontsize=MIN_FONT_SIZE + 1)
    return fig
