"""Explorers for the book: move T (and alpha) and watch the distributions and the gradient change.

Each explorer comes in two forms that draw through the same private function:

    temperature_explorer / loss_explorer   live ipywidgets sliders (need a running kernel:
                                           Jupyter, Colab)
    temperature_player / loss_player       a matplotlib animation embedded as HTML: a play
                                           button and frame stepper that work on the static
                                           page, with no kernel

Shapes: one example at a time. logits are 1-D, length C; label is an int in [0, C).
"""
from __future__ import annotations

import math
import textwrap
from typing import Callable, Dict, Optional, Sequence, Tuple

import ipywidgets
import matplotlib.pyplot as plt
import torch
from IPython.display import HTML, display
from matplotlib.animation import FuncAnimation
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor, nn

from . import losses, plots, text
from .models import device_of, eval_mode
from .train import History
from .plots import ArrayLike, _as_vector, _check_label, _check_temperatures, _class_names

__all__ = ["temperature_explorer", "loss_explorer", "temperature_player", "loss_player", "distill_panel",
           "map_explorer", "map_player", "next_byte_explorer", "next_byte_player"]

PLAYER_DPI = 100         # the book's: a frame shows at the size of the figures around it
PLAYER_INTERVAL_MS = 900  # time per frame when playing


# --------------------------------------------------- what one (T, alpha) looks like
def _draw_temperature(ax: Axes, z: Tensor, T: float, names: Sequence[str]) -> None:
    """Draw softmax(z / T) on ax, replacing what was there."""
    ax.clear()
    plots.bars(losses.softmax_t(z, T), names, ax=ax, title=f"softmax(z / T) at T = {T:.3g}")


def _temperature_figure() -> Tuple[Figure, Axes]:
    """The figure and axes one temperature frame is drawn on."""
    return plt.subplots(figsize=(plots.FIGURE_WIDTH, 3.2), layout="constrained")


def _one_gradient(z: Tensor, v: Tensor, y: int, T: float, alpha: float) -> Tensor:
    """dL/dz for one example, (C,), from kdlib.loss_gradient."""
    return losses.loss_gradient(z[None], v[None], torch.tensor([y]), T=T, alpha=alpha)[0]


def _draw_loss(axes: Sequence[Axes], z: Tensor, v: Tensor, y: int, T: float, alpha: float,
               names: Sequence[str], grad_limit: Optional[float] = None) -> None:
    """Draw the three targets (hard, soft, mixed) and the student's gradient on four axes."""
    for ax in axes:
        ax.clear()
    plots.targets(v, y, alpha, T, names, axes=axes[:3])
    axes[2].set_ylabel("probability")  # the first of its row
    plots.gradient_bars(_one_gradient(z, v, y, T, alpha), names, ax=axes[3], limit=grad_limit,
                        title="gradient dL/dz of the student")
    axes[0].figure.suptitle(f"T = {T:.3g}, alpha = {alpha:.2f}")


def _loss_figure() -> Tuple[Figure, Sequence[Axes]]:
    """The figure and four axes one loss frame is drawn on: hard and soft targets above, the mixed
    target and the gradient it gives below."""
    fig, axes = plt.subplots(2, 2, figsize=(plots.FIGURE_WIDTH, 5.4), layout="constrained")
    return fig, list(axes.flat)


def _check_example(student_logits: ArrayLike, teacher_logits: ArrayLike, label: int,
                   class_names: Optional[Sequence[str]]):
    """Validated (z, v, y, names) for one example: two (C,) logit vectors, a label, C names."""
    z = _as_vector(student_logits, "student_logits")
    v = _as_vector(teacher_logits, "teacher_logits")
    if v.shape != z.shape:
        raise ValueError(f"teacher_logits must have the student's {len(z)} classes, got {len(v)}")
    return z, v.to(z.dtype), _check_label(label, len(z)), _class_names(class_names, len(z))


def _check_range(T_range: Tuple[float, float], name: str = "T_range") -> Tuple[float, float]:
    """(low, high) temperatures with 0 < low < high."""
    lo, hi = (losses.check_temperature(T, name=name) for T in T_range)
    if lo >= hi:
        raise ValueError(f"{name} must be (low, high) with low < high, got {tuple(T_range)}")
    return lo, hi


def _check_frames(frames: Sequence[Tuple[float, float]]) -> list:
    """frames as a non-empty list of (T, alpha) pairs with T > 0 and 0 <= alpha <= 1."""
    frames = list(frames)
    if not frames:
        raise ValueError("frames must hold at least one (T, alpha) pair, got none")
    checked = []
    for i, frame in enumerate(frames):
        if len(frame) != 2:
            raise ValueError(f"frames[{i}] must be a (T, alpha) pair, got {frame!r}")
        checked.append((losses.check_temperature(frame[0], name=f"frames[{i}] T"),
                        losses.check_alpha(frame[1], name=f"frames[{i}] alpha")))
    return checked


def _T_slider(T_range: Tuple[float, float], value: float) -> ipywidgets.FloatLogSlider:
    """A slider for T on a log scale (equal steps from 0.1 to 1 as from 1 to 10)."""
    lo, hi = T_range
    return ipywidgets.FloatLogSlider(value=min(max(value, lo), hi), base=10, min=math.log10(lo),
                                     max=math.log10(hi), step=0.01, description="T",
                                     readout_format=".2f", continuous_update=False)


def _player(fig: Figure, draw_frame, n_frames: int) -> HTML:
    """A kernel-free frame player: one PNG per frame, embedded in HTML with play/step buttons."""
    anim = FuncAnimation(fig, draw_frame, frames=n_frames, interval=PLAYER_INTERVAL_MS)
    plt.close(fig)  # the frames are the output; not the figure as well
    with plt.rc_context({"savefig.dpi": PLAYER_DPI}):  # to_jshtml saves frames at savefig.dpi
        return HTML(anim.to_jshtml(default_mode="once"))


def _interactive(show: Callable[..., Figure], **controls) -> ipywidgets.interactive:
    """ipywidgets.interactive(show, **controls) with ``.result`` drawn already, on ipywidgets 7 as on 8.

    ipywidgets 8 draws in interactive.__init__; 7 (Colab's) draws only when the widget is
    displayed (it registers ``on_displayed(update)``), so ``.result`` was None until then. On 7 this
    draws once more, off-screen: the figure is closed, or the inline backend would show it a second
    time below the widget; displaying the widget still draws into it, as 7 always did.
    """
    w = ipywidgets.interactive(show, **controls)
    if w.result is None:  # ipywidgets 7: nothing drawn yet
        w.result = show(**{c._kwarg: c.get_interact_value() for c in w.kwargs_widgets})
        plt.close(w.result)
    return w


# ------------------------------------------------------------ live explorers
def temperature_explorer(logits: ArrayLike, class_names: Optional[Sequence[str]] = None,
                         T_range: Tuple[float, float] = (0.1, 20.0)) -> ipywidgets.interactive:
    """A slider for T that redraws the bar chart of softmax(z / T). Needs a running kernel.

    logits z: (C,). T_range: (low, high), 0 < low < high; the slider starts at T = 1.
    Returns the widget; its ``.result`` is the figure last drawn.
    """
    z = _as_vector(logits, "logits")
    names = _class_names(class_names, len(z))
    T_range = _check_range(T_range)

    def show(T: float) -> Figure:
        fig, ax = _temperature_figure()
        _draw_temperature(ax, z, T, names)
        return fig

    return _interactive(show, T=_T_slider(T_range, 1.0))


def loss_explorer(student_logits: ArrayLike, teacher_logits: ArrayLike, label: int,
                  class_names: Optional[Sequence[str]] = None,
                  T_range: Tuple[float, float] = (0.5, 20.0)) -> ipywidgets.interactive:
    """Sliders for T and alpha showing the targets (hard, soft, mixed) and the gradient dL/dz.

    student_logits z: (C,); teacher_logits v: (C,); label y: an int in [0, C).
    The gradient is kdlib.loss_gradient for this one example. Needs a running kernel.
    Returns the widget; its ``.result`` is the figure last drawn.
    """
    z, v, y, names = _check_example(student_logits, teacher_logits, label, class_names)
    T_range = _check_range(T_range)

    def show(T: float, alpha: float) -> Figure:
        fig, axes = _loss_figure()
        _draw_loss(axes, z, v, y, T, alpha, names)
        return fig

    alpha = ipywidgets.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05, description="alpha",
                                   readout_format=".2f", continuous_update=False)
    return _interactive(show, T=_T_slider(T_range, 4.0), alpha=alpha)


# ----------------------------------------------------- kernel-free players
def temperature_player(logits: ArrayLike, Ts: Sequence[float],
                       class_names: Optional[Sequence[str]] = None) -> HTML:
    """softmax(z / T) as an animation with one frame per T in Ts, playable with no kernel.

    logits z: (C,). Ts: one or more temperatures > 0. Returns IPython HTML (play, step, loop).
    """
    z = _as_vector(logits, "logits")
    Ts = _check_temperatures(Ts)
    names = _class_names(class_names, len(z))
    fig, ax = _temperature_figure()
    return _player(fig, lambda i: _draw_temperature(ax, z, Ts[i], names), len(Ts))


def loss_player(student_logits: ArrayLike, teacher_logits: ArrayLike, label: int,
                frames: Sequence[Tuple[float, float]],
                class_names: Optional[Sequence[str]] = None) -> HTML:
    """The loss explorer as an animation with one frame per (T, alpha) in frames, playable with no kernel.

    student_logits z: (C,); teacher_logits v: (C,); label y: an int in [0, C);
    frames: one or more (T, alpha) pairs. The gradient axis is the same in every frame.
    """
    z, v, y, names = _check_example(student_logits, teacher_logits, label, class_names)
    frames = _check_frames(frames)
    limit = 1.15 * max(_one_gradient(z, v, y, T, a).abs().max().item() for T, a in frames) or 1.0

    fig, axes = _loss_figure()
    return _player(fig, lambda i: _draw_loss(axes, z, v, y, *frames[i], names, grad_limit=limit),
                   len(frames))


# ------------------------------------------------- a panel that trains students
def distill_panel(train: Callable[[float, float], History], n_test: int, baseline: Optional[int] = None,
                  T_range: Tuple[float, float] = (0.5, 50.0), T: float = 20.0,
                  alpha: float = 0.9) -> ipywidgets.VBox:
    """Sliders for T and alpha and a button that trains a distilled student with them. Needs a kernel.

    train(T, alpha) runs a real distillation and returns its kdlib History. Each result joins a
    plot of test errors against T (one colour per alpha; the dashed line is `baseline`, the
    student from scratch) and a table. The panel's ``runs`` dict maps (T, alpha) to test errors.
    """
    if not (isinstance(n_test, int) and n_test >= 1):
        raise ValueError(f"n_test must be an integer >= 1, got {n_test!r}")
    T_slider = _T_slider(_check_range(T_range), T)
    alpha_slider = ipywidgets.FloatSlider(value=losses.check_alpha(alpha), min=0.0, max=1.0, step=0.05,
                                          description="alpha", readout_format=".2f", continuous_update=False)
    button = ipywidgets.Button(description="train a student", button_style="primary")
    out = ipywidgets.Output()
    runs: Dict[Tuple[float, float], int] = {}

    def draw() -> None:
        fig = _runs_figure(runs, n_test, baseline)
        rows = "".join(f"<tr><td>{t:g}</td><td>{a:g}</td><td>{e}</td><td>{1 - e / n_test:.2%}</td></tr>"
                       for (t, a), e in sorted(runs.items()))
        with out:
            out.clear_output(wait=True)
            display(fig)
            display(HTML("<table><tr><th>T</th><th>alpha</th><th>test errors</th><th>accuracy</th></tr>"
                         f"{rows}</table>"))
        plt.close(fig)

    def on_click(_) -> None:
        button.disabled, button.description = True, "training…"
        try:
            t, a = round(T_slider.value, 2), round(alpha_slider.value, 2)
            runs[(t, a)] = train(t, a).test_errors
            draw()
        finally:
            button.disabled, button.description = False, "train a student"

    button.on_click(on_click)
    panel = ipywidgets.VBox([ipywidgets.HBox([T_slider, alpha_slider, button]), out])
    panel.runs = runs
    return panel


def _runs_figure(runs: Dict[Tuple[float, float], int], n_test: int, baseline: Optional[int]) -> Figure:
    """The distill_panel's plot: test errors of each (T, alpha) run against T, one line per alpha."""
    fig, ax = plt.subplots(figsize=(plots.FIGURE_WIDTH, 3.4), layout="constrained")
    for k, a in enumerate(sorted({a for _, a in runs})):
        pts = sorted((t, e) for (t, aa), e in runs.items() if aa == a)
        ax.plot([t for t, _ in pts], [e for _, e in pts], "o-", color=f"C{k}", label=f"alpha = {a:g}")
    if baseline is not None:
        ax.axhline(baseline, ls="--", color="gray", label="student from scratch")
    ax.set(xscale="log", xlabel="T", ylabel=f"test errors (of {n_test:,})", title="Distilled students")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=plots.MIN_FONT_SIZE)
    return fig


# ---------------------------------------------- the T x alpha map, one cell at a time
def _check_map(errors: ArrayLike, Ts: Sequence[float], alphas: Sequence[float],
               runs: Dict[Tuple[float, float], History]) -> Tensor:
    v = torch.as_tensor(errors, dtype=torch.float64)
    if v.shape != (len(Ts), len(alphas)):
        raise ValueError(f"errors must have shape (len(Ts), len(alphas)) = {(len(Ts), len(alphas))}, "
                         f"got {tuple(v.shape)}")
    missing = [(T, a) for T in Ts for a in alphas if (T, a) not in runs]
    if missing:
        raise ValueError(f"runs must hold a History for every (T, alpha) cell; missing {missing[:3]}")
    return v


def _map_figure() -> Tuple[Figure, Sequence[Axes]]:
    """The figure and two axes one map frame is drawn on: the map above, the chosen cell's run below."""
    fig, axes = plt.subplots(2, 1, figsize=(plots.FIGURE_WIDTH, 6.6), layout="constrained",
                             gridspec_kw={"height_ratios": [1.2, 1]})
    return fig, list(axes)


def _draw_map(axes: Sequence[Axes], errors: Tensor, Ts: Sequence[float], alphas: Sequence[float],
              runs: Dict[Tuple[float, float], History], scratch: History, baseline: float, n_test: int,
              cell: Tuple[float, float]) -> None:
    ax_map, ax_run = axes
    ax_map.clear()
    ax_run.clear()
    plots.heatmap(errors, Ts, alphas, baseline=baseline, marker=cell, ax=ax_map,
                  title=f"Test errors of the distilled student (of {n_test:,})")
    T, a = cell
    run = runs[cell]
    for label, h, style in ((f"distilled, T={T:g}, alpha={a:g}", run, "o-"), ("from scratch", scratch, "s--")):
        ax_run.plot(range(1, len(h.epoch_test_acc) + 1), [100 * x for x in h.epoch_test_acc], style, ms=3,
                    label=f"{label}: {h.test_errors} errors")
    ax_run.set(xlabel="epoch", ylabel="test accuracy (%)", title=f"The run at T={T:g}, alpha={a:g} (one seed)")
    ax_run.grid(alpha=0.3)
    ax_run.legend(fontsize=plots.MIN_FONT_SIZE, loc="lower right")


def map_explorer(errors: ArrayLike, Ts: Sequence[float], alphas: Sequence[float],
                 runs: Dict[Tuple[float, float], History], scratch: History, baseline: float,
                 n_test: int) -> ipywidgets.interactive:
    """Sliders for T and alpha that move a marker over the map and show that cell's run. Needs a kernel.

    errors: (len(Ts), len(alphas)) test errors (e.g. the mean over seeds); baseline: the student
    from scratch on the same scale; runs: (T, alpha) -> History of one run per cell, drawn against
    `scratch`, the History of the student from scratch with the same seed.
    """
    v = _check_map(errors, Ts, alphas, runs)

    def show(T: float, alpha: float) -> Figure:
        fig, axes = _map_figure()
        _draw_map(axes, v, Ts, alphas, runs, scratch, baseline, n_test, (T, alpha))
        return fig

    return _interactive(
        show, T=ipywidgets.SelectionSlider(options=list(Ts), value=Ts[len(Ts) // 2], description="T"),
        alpha=ipywidgets.SelectionSlider(options=list(alphas), value=alphas[-2 if len(alphas) > 1 else 0],
                                         description="alpha"))


def map_player(errors: ArrayLike, Ts: Sequence[float], alphas: Sequence[float],
               runs: Dict[Tuple[float, float], History], scratch: History, baseline: float, n_test: int,
               cells: Optional[Sequence[Tuple[float, float]]] = None) -> HTML:
    """The map_explorer as a kernel-free frame player: one frame per cell in `cells` (default: every cell)."""
    v = _check_map(errors, Ts, alphas, runs)
    cells = list(cells) if cells is not None else [(T, a) for T in Ts for a in alphas]
    unknown = [c for c in cells if c not in runs]
    if not cells or unknown:
        raise ValueError(f"cells must be a non-empty list of (T, alpha) cells of the map; unknown: {unknown[:3]}")
    fig, axes = _map_figure()
    return _player(fig, lambda i: _draw_map(axes, v, Ts, alphas, runs, scratch, baseline, n_test, cells[i]),
                   len(cells))


# ------------------------------------------- a language model's next byte, and its text, at T
TOP_BYTES = 16  # the bars drawn: the most likely next bytes


def _next_byte_figure() -> Tuple[Figure, Sequence[Axes]]:
    """The figure of one next-byte frame: the distribution above, the sampled text below."""
    fig, axes = plt.subplots(2, 1, figsize=(plots.FIGURE_WIDTH, 4.8), height_ratios=(3, 2),
                             layout="constrained")
    return fig, list(axes)


def _draw_next_byte(axes: Sequence[Axes], z: Tensor, T: float, names: Sequence[str], text: str) -> None:
    """softmax(z / T)'s TOP_BYTES most likely bytes as bars, and text (sampled at T) below them."""
    ax, box = axes
    ax.clear()
    box.clear()
    top = losses.softmax_t(z, T).topk(TOP_BYTES)
    plots.bars(top.values, [names[i] for i in top.indices.tolist()], ax=ax,
               title=f"next byte at T = {T:.2g}: the {TOP_BYTES} most likely")
    box.axis("off")
    box.text(0.0, 1.0, f"sampled at T = {T:.2g}:\n{_shown(text)}", family="monospace", va="top",
             ha="left", fontsize=plots.MIN_FONT_SIZE, transform=box.transAxes,
             parse_math=False)  # a "$" in sampled code is a dollar sign, not mathtext


def _shown(text: str, width: int = 70, lines: int = 9) -> str:
    """text as the figure shows it: characters other than printable ASCII as "·" (the font has no
    glyph for most others), lines wrapped at width characters (a monospace line at 9 points that
    fits the column), at most `lines` of them."""
    text = "".join(ch if " " <= ch <= "~" or ch == "\n" else "·" for ch in text)
    wrapped = [part for line in text.split("\n") for part in (textwrap.wrap(line, width) or [""])]
    return "\n".join(wrapped[:lines])


def _next_byte_parts(model, prompt: str, n: int, seed: int):
    """(z, names, sample_at): the model's next-byte logits after prompt (V,), the bytes' names, and a
    function T -> the prompt continued by n bytes sampled at T, with a generator seeded by seed."""
    device = device_of(model)
    with torch.no_grad(), eval_mode(model):  # the model's own mode is put back
        z = model(text.encode(prompt)[None, -model.context:].to(device))[0, -1].float().cpu()

    def sample_at(T: float) -> str:
        gen = torch.Generator(device=device).manual_seed(seed)
        return text.sample(model, prompt, n, T=T, generator=gen)

    return z, text.byte_names(), sample_at


def next_byte_explorer(model: nn.Module, prompt: str, n: int = 160, seed: int = 0,
                       T_range: Tuple[float, float] = (0.1, 5.0)) -> ipywidgets.interactive:
    """A slider for T: a language model's next-byte distribution after prompt, softmax(z / T), and the
    prompt continued by n bytes sampled at that T (the same seed at every T). Needs a running kernel.

    model: a kdlib.models.ByteTransformer (x (1, L) bytes -> logits (1, L, 256)).
    Returns the widget; its ``.result`` is the figure last drawn.
    """
    z, names, sample_at = _next_byte_parts(model, prompt, n, seed)
    T_range = _check_range(T_range)

    def show(T: float) -> Figure:
        fig, axes = _next_byte_figure()
        _draw_next_byte(axes, z, T, names, sample_at(T))
        return fig

    return _interactive(show, T=_T_slider(T_range, 1.0))


def next_byte_player(model: nn.Module, prompt: str, Ts: Sequence[float], n: int = 160, seed: int = 0) -> HTML:
    """next_byte_explorer as an animation, one frame per T in Ts, playable with no kernel."""
    Ts = _check_temperatures(Ts)
    z, names, sample_at = _next_byte_parts(model, prompt, n, seed)
    texts = [sample_at(T) for T in Ts]
    fig, axes = _next_byte_figure()
    return _player(fig, lambda i: _draw_next_byte(axes, z, Ts[i], names, texts[i]), len(Ts))

