"""Every figure kdlib draws fits the book's text column at its natural size, with legible text.

Each figure is saved as the notebook's inline backend saves it (100 dpi, tight bounding box with
0.1-in margins, so a title or legend that spills out of the figure widens the picture), then
measured: at most 6.9 in (690 px) wide, and no text under 9 pt. The players' frames are measured
in the HTML they embed. The inputs are the book's sizes: ten classes with long names, four
temperatures, the chapters' long titles.
"""
import base64
import io
import re
import struct
from typing import Callable, Dict

import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.text import Text

import kdlib as kd
from kdlib import plots, widgets
from kdlib.experiments import Comparison

MAX_WIDTH_IN = 6.9   # the text column: 690 px at the book's dpi
DPI = 100
MIN_POINTS = 9
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
G = torch.Generator().manual_seed(0)
Z, V = torch.randn(10, generator=G) * 3, torch.randn(10, generator=G) * 3
TS, ALPHAS = [1.0, 2.0, 4.0, 8.0, 20.0], [0.0, 0.25, 0.5, 0.75, 0.9, 1.0]


def history(errors: int, epochs: int = 10) -> kd.History:
    """A made-up run with a loss and an accuracy per step, and a test accuracy per epoch."""
    steps = torch.linspace(1, 0, 20 * epochs)
    return kd.History(step_loss=(steps + 0.05).tolist(), step_acc=(1 - 0.8 * steps).tolist(),
                      epoch_test_acc=torch.linspace(0.8, 0.98, epochs).tolist(), test_errors=errors)


def comparisons() -> Dict:
    """gain_vs_size's results for chapter 5's two data sets, two settings and four sizes."""
    def comp(n: int, shift: int) -> Comparison:
        return Comparison(history(40 + shift), [history(e + shift) for e in (300 // n + 60, 300 // n + 64)],
                          [history(e + shift) for e in (300 // n + 50, 300 // n + 55)])

    settings = ("T=20, alpha=0.9", "T=4, alpha=0.5")
    return {name: {s: {n: comp(n, 10 * k + j) for n in (1_000, 3_000, 10_000, 60_000)} for j, s in enumerate(settings)}
            for k, name in enumerate(("mnist", "fashion-mnist"))}


def confusion() -> torch.Tensor:
    """A 10-class confusion matrix of a 1,000-image test set, with a row of mistakes."""
    M = torch.diag(torch.full((10,), 95)) + torch.randint(0, 4, (10, 10), generator=G)
    M[3] = torch.tensor([0, 1, 12, 30, 0, 25, 0, 1, 28, 3])
    return M


def map_args() -> tuple:
    runs = {(T, a): history(100 + i) for i, (T, a) in enumerate((T, a) for T in TS for a in ALPHAS)}
    errors = torch.tensor([[runs[T, a].test_errors for a in ALPHAS] for T in TS], dtype=torch.float64)
    return errors, TS, ALPHAS, runs, history(150), 150.0, 10_000


def byte_model() -> torch.nn.Module:
    """An untrained language model: its samples are the widest text a frame can show."""
    torch.manual_seed(0)
    return kd.models.byte_transformer(dim=16, depth=1, heads=2, context=32)


LONG = "Test errors of the distilled student, mean of 2 seeds (of 10,000; mnist, profile cpu)"
FIGURES: Dict[str, Callable[[], Figure]] = {
    "bars": lambda: plots.bars(kd.softmax_t(Z), CLASSES, log=True, highlight=3),
    "temperatures": lambda: plots.temperatures(Z, [0.5, 1, 2, 5, 10], CLASSES),
    "targets": lambda: plots.targets(V, 3, 0.9, 4.0, CLASSES),
    "gradient_bars": lambda: plots.gradient_bars(kd.loss_gradient(Z[None], V[None], torch.tensor([3]))[0], CLASSES),
    "gradient_scaling": lambda: plots.gradient_scaling([1, 2, 4, 8], [1.0, 1.1, 1.1, 1.1], [1.0, 0.3, 0.07, 0.02]),
    "digit_soft_targets": lambda: plots.digit_soft_targets(
        torch.rand(3, 1, 28, 28, generator=G), torch.randn(3, 10, generator=G) * 5, [1, 5, 10, 20],
        highlight=[9, 2, 0], row_titles=["a 4 like a 9", "a 7 like a 2", "a 6 like a 0"]),
    "similarity": lambda: plots.similarity(torch.softmax(torch.randn(10, 10, generator=G), 1), CLASSES,
                                           title="Average soft targets at T = 5 (true class → given class)"),
    "curves": lambda: plots.curves({"teacher (cross entropy)": history(70), "student from scratch": history(140),
                                    "distilled student (T = 20, alpha = 0.9)": history(90)}, 20),
    "batch_accuracy": lambda: plots.batch_accuracy({"distilled, fresh ViT": history(300),
                                                    "ViT from scratch": history(400)}, 20),
    "augmentations": lambda: plots.augmentations(torch.randn(6, 3, 32, 32, generator=G), draws=3,
                                                 title="Random crop + flip on the device (stand-in for cifar10)"),
    "heatmap": lambda: plots.heatmap(torch.rand(len(TS), len(ALPHAS), generator=G) * 100, TS, ALPHAS,
                                     baseline=120.5, title=LONG, marker=(4.0, 0.9)),
    "gain_vs_size": lambda: plots.gain_vs_size(comparisons(), {"mnist": 10_000, "fashion-mnist": 10_000}),
    "gain_vs_lead": lambda: plots.gain_vs_lead(comparisons(), {"mnist": 10_000, "fashion-mnist": 10_000}),
    "confusion_matrix": lambda: plots.confusion_matrix(confusion(), title="control (no teacher)", highlight=3),
    "confusion_matrices": lambda: plots.confusion_matrices(
        [confusion()] * 3, ["control (no teacher)", "distilled, no 3s seen", "distilled, bias of 3 raised by 2.5"],
        highlight=3),
    "temperature_lines": lambda: plots.temperature_lines([-1.0, 0.0, 4.0, 3.0], [1, 2, 3, 4, 5]),
    "temperature_groups": lambda: plots.temperature_groups(Z, [0.5, 1, 2, 4], CLASSES),
    "prediction_and_gradient": lambda: plots.prediction_and_gradient(Z, V, 3, 0.5, CLASSES),
    "widgets.temperature_explorer": lambda: widgets.temperature_explorer(Z, CLASSES).result,
    "widgets.loss_explorer": lambda: widgets.loss_explorer(Z, V, 3, CLASSES).result,
    "widgets.distill_panel": lambda: widgets._runs_figure({(T, a): 100 + int(T) for T in TS for a in (0.5, 0.9)},
                                                          10_000, 130),
    "widgets.map_explorer": lambda: widgets.map_explorer(*map_args()).result,
    "mode_fits": lambda: plots.mode_fits(torch.softmax(torch.randn(60, generator=G), 0),
                                         {"student, forward KL": torch.full((60,), 1 / 60),
                                          "student, reverse KL": torch.softmax(torch.randn(60, generator=G), 0)},
                                         title="a one-bump student, a two-mode teacher"),
    "top_k_tradeoff": lambda: plots.top_k_tradeoff(
        [1, 2, 4, 8, 16, 64, 256], {"T = 1": [0.5, 0.6, 0.7, 0.8, 0.9, 0.97, 1.0],
                                    "T = 2": [0.3, 0.4, 0.5, 0.6, 0.75, 0.9, 1.0]},
        {"k = 1": 10, "k = 4": 28, "k = 16": 100, "k = 16, tail dropped": 96, "all 256": 1024},
        {"k = 1": [3.61, 3.74, 3.69], "k = 4": [2.96, 2.98, 2.95], "k = 16": [2.55, 2.56, 2.5],
         "k = 16, tail dropped": [2.8, 2.82, 2.79], "all 256": [2.54, 2.55, 2.46]}, scratch=2.63),
    "score_pairs": lambda: plots.score_pairs(
        {name: [(2.5 + 0.1 * i + 0.01 * s, 3.0 + 0.2 * i - 0.02 * s) for s in range(3)]
         for i, name in enumerate(["text alone", "teacher's text", "token-level KD",
                                   "teacher's text + token-level KD", "on-policy, lambda = 0",
                                   "on-policy, lambda = 0.5", "on-policy, lambda = 1"])},
        "validation bits per character (the corpus's text)", "teacher's bits per character\n(the student's text)",
        title="Two ways to score a student"),
    "generations": lambda: plots.generations(
        {"born again": [[1469, 1524, 1545], [1481, 1525, 1536]],
         "labels only, as long": [[1469, 1466, 1460], [1481, 1464, 1483]]}, 10),
    "patience": lambda: plots.patience(
        {name: {5: [2600 - 10 * i, 2610 - 10 * i], 20: [2500 - 20 * i, 2520], 80: [2450 - 30 * i, 2440]}
         for i, name in enumerate(["labels only", "fixed teacher", "independent views", "consistent",
                                   "function matching"])}, baseline="labels only",
        ylabel="test errors saved against\nthe labels alone"),
    "attention_maps": lambda: plots.attention_maps(
        torch.rand(5, 3, 32, 32, generator=G),
        {name: torch.rand(5, 16, 16, generator=G) for name in ["teacher", "from scratch",
                                                               "attention transfer"]}),
    "widgets.next_byte_explorer": lambda: widgets.next_byte_explorer(byte_model(), "import ").result,
}
PLAYERS = {
    "temperature_player": lambda: widgets.temperature_player(Z, [1, 4], CLASSES),
    "loss_player": lambda: widgets.loss_player(Z, V, 3, [(1.0, 0.5), (4.0, 0.9)], CLASSES),
    "map_player": lambda: widgets.map_player(*map_args(), cells=[(4.0, 0.9), (1.0, 0.5)]),
    "next_byte_player": lambda: widgets.next_byte_player(byte_model(), "import ", [0.5, 4.0]),
}


def png_width(png: bytes) -> int:
    """The width in pixels written in a PNG's header."""
    return struct.unpack(">I", png[16:20])[0]


def saved_width_in(fig: Figure) -> float:
    """The width, in inches, of the picture the inline backend would store for fig."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return png_width(buffer.getvalue()) / DPI


def small_text(fig: Figure) -> list:
    """The visible, non-empty texts of fig written smaller than MIN_POINTS."""
    return [f"{t.get_text()!r}: {t.get_fontsize():g} pt" for t in fig.findobj(Text)
            if t.get_visible() and t.get_text().strip() and t.get_fontsize() < MIN_POINTS]


def test_every_figure_function_is_measured_here():
    assert set(plots.__all__) <= set(FIGURES)
    drawn = {n for n in widgets.__all__ if n.endswith(("_explorer", "_panel", "_player"))}
    assert drawn <= {k.split(".")[1] for k in FIGURES if k.startswith("widgets.")} | set(PLAYERS)


@pytest.mark.parametrize("name", FIGURES)
def test_figure_fits_the_column_with_no_text_under_9_points(name):
    fig = FIGURES[name]()
    assert fig.get_size_inches()[0] <= MAX_WIDTH_IN
    fig.canvas.draw()  # the texts get their final sizes and places
    assert small_text(fig) == []
    assert saved_width_in(fig) <= MAX_WIDTH_IN
    plt.close(fig)


@pytest.mark.parametrize("name", PLAYERS)
def test_player_frames_fit_the_column(name):
    html = PLAYERS[name]().data
    frames = re.findall(r'frames\[\d+\] = "data:image/png;base64,([^"]+)"', html)
    assert frames
    first = base64.b64decode(frames[0].replace("\\\n", ""))
    assert png_width(first) <= MAX_WIDTH_IN * widgets.PLAYER_DPI
