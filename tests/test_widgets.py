"""kdlib.widgets: the live sliders redraw what kdlib computes; the players hold one frame per setting."""
import re

import pytest
import torch

import kdlib as kd
from kdlib import widgets

Z = torch.tensor([2.0, 10, 3, 0, 5, 4, 7, 9, 1, 2])          # student logits
V = torch.tensor([0.5, -1, 1.5, 6, 1, 4.5, 1.2, 0.8, -0.5, -0.8])  # teacher logits
Y = 3
FRAME = re.compile(r'frames\[\d+\] = "data:image/png;base64,')


def heights(ax):
    return torch.tensor([bar.get_height() for bar in ax.containers[0]], dtype=torch.float32)


def sliders(widget):
    return {child.description: child for child in widget.children[:-1]}


# --------------------------------------------------------------- live explorers
def test_temperature_slider_redraws_the_bars_as_softmax_t():
    w = widgets.temperature_explorer(Z)
    torch.testing.assert_close(heights(w.result.axes[0]), kd.softmax_t(Z, 1.0))
    sliders(w)["T"].value = 4.0
    ax = w.result.axes[0]
    torch.testing.assert_close(heights(ax), kd.softmax_t(Z, 4.0))
    assert "T = 4" in ax.get_title()


def test_loss_explorer_sliders_redraw_targets_and_gradient():
    w = widgets.loss_explorer(Z, V, Y)
    controls = sliders(w)
    controls["T"].value, controls["alpha"].value = 2.0, 0.25
    hard_ax, soft_ax, mixed_ax, grad_ax = w.result.axes[:4]
    torch.testing.assert_close(heights(soft_ax), kd.softmax_t(V, 2.0))
    torch.testing.assert_close(heights(mixed_ax), kd.mixed_target(V[None], torch.tensor([Y]), 0.25, 2.0)[0])
    torch.testing.assert_close(heights(grad_ax),
                               kd.loss_gradient(Z[None], V[None], torch.tensor([Y]), T=2.0, alpha=0.25)[0])
    assert w.result.texts[0].get_text() == "T = 2, alpha = 0.25"


# ----------------------------------------------------------------- players
def test_temperature_player_holds_one_frame_per_T():
    Ts = [0.5, 2, 8]
    html = widgets.temperature_player(Z, Ts).data
    assert len(FRAME.findall(html)) == len(Ts)
    assert len(html) < 2_000_000


def test_loss_player_holds_one_frame_per_T_alpha_pair():
    frames = [(1.0, 0.5), (4.0, 0.9)]
    html = widgets.loss_player(Z, V, Y, frames, class_names=list("abcdefghij")).data
    assert len(FRAME.findall(html)) == len(frames)
    assert len(html) < 2_000_000


def test_loss_frames_title_states_T_and_alpha_and_fix_the_gradient_axis():
    fig, axes = widgets._loss_figure()
    widgets._draw_loss(axes, Z, V, Y, 8.0, 0.75, [str(i) for i in range(10)], grad_limit=3.0)
    assert fig.texts[0].get_text() == "T = 8, alpha = 0.75"
    assert axes[3].get_ylim() == (-3.0, 3.0)


# ------------------------------------------------------------ bad input
@pytest.mark.parametrize("call, name", [
    (lambda: widgets.temperature_player(Z, []), "Ts"),
    (lambda: widgets.temperature_player(Z, [1.0, 0.0]), r"Ts\[1\]"),
    (lambda: widgets.temperature_player(Z, [1.0], class_names=["a"]), "class_names"),
    (lambda: widgets.temperature_explorer(Z, T_range=(5.0, 1.0)), "T_range"),
    (lambda: widgets.temperature_explorer(Z, T_range=(0.0, 1.0)), "T_range"),
    (lambda: widgets.temperature_explorer(Z, class_names=["a", "b"]), "class_names"),
    (lambda: widgets.loss_explorer(Z, V[:5], Y), "teacher_logits"),
    (lambda: widgets.loss_explorer(Z, V, 10), "label"),
    (lambda: widgets.loss_player(Z, V, Y, []), "frames"),
    (lambda: widgets.loss_player(Z, V, Y, [(1.0, 0.5), (-1.0, 0.5)]), r"frames\[1\] T"),
    (lambda: widgets.loss_player(Z, V, Y, [(1.0, 1.5)]), r"frames\[0\] alpha"),
    (lambda: widgets.loss_player(Z, V, Y, [(1.0,)]), r"frames\[0\]"),
])
def test_bad_input_raises_value_error_naming_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()


# ------------------------------------------------------------ the training panel
def test_distill_panel_button_trains_with_the_slider_values_and_records_the_result():
    asked = []

    def fake_train(T, alpha):
        asked.append((T, alpha))
        return kd.History(test_errors=int(100 - T - 10 * alpha))

    panel = widgets.distill_panel(fake_train, n_test=1000, baseline=90)
    T_slider, alpha_slider, button = panel.children[0].children
    T_slider.value, alpha_slider.value = 4.0, 0.5
    button.click()
    alpha_slider.value = 1.0
    button.click()
    assert asked == [(4.0, 0.5), (4.0, 1.0)]
    assert panel.runs == {(4.0, 0.5): 91, (4.0, 1.0): 86}
    assert not button.disabled and button.description == "train a student"


def test_distill_panel_rejects_bad_settings():
    with pytest.raises(ValueError, match="n_test"):
        widgets.distill_panel(lambda T, a: None, n_test=0)
    with pytest.raises(ValueError, match="alpha"):
        widgets.distill_panel(lambda T, a: None, n_test=10, alpha=1.5)


# --------------------------------------------------------------- the T x alpha map
MAP_TS, MAP_ALPHAS = [1.0, 4.0], [0.5, 0.9, 1.0]


def map_runs():
    runs = {(T, a): kd.History(epoch_test_acc=[0.5, 0.8 + 0.01 * i], test_errors=20 - i)
            for i, (T, a) in enumerate((T, a) for T in MAP_TS for a in MAP_ALPHAS)}
    errors = torch.tensor([[runs[T, a].test_errors for a in MAP_ALPHAS] for T in MAP_TS])
    return errors, runs, kd.History(epoch_test_acc=[0.4, 0.7], test_errors=30)


def test_map_explorer_sliders_move_the_marker_and_show_that_cells_run():
    errors, runs, scratch = map_runs()
    w = widgets.map_explorer(errors, MAP_TS, MAP_ALPHAS, runs, scratch, baseline=30, n_test=100)
    s = sliders(w)
    s["T"].value, s["alpha"].value = 1.0, 1.0
    ax_map, ax_run = w.result.axes
    (marker,) = ax_map.patches
    assert marker.get_xy() == (2 - 0.5, 0 - 0.5)  # column alpha = 1.0, row T = 1
    assert "T=1, alpha=1" in ax_run.get_title()
    assert list(ax_run.lines[0].get_ydata()) == pytest.approx([100 * x for x in runs[1.0, 1.0].epoch_test_acc])
    assert list(ax_run.lines[1].get_ydata()) == pytest.approx([40.0, 70.0])


def test_map_player_holds_one_frame_per_cell():
    errors, runs, scratch = map_runs()
    html = widgets.map_player(errors, MAP_TS, MAP_ALPHAS, runs, scratch, 30, 100, cells=[(1.0, 0.5), (4.0, 0.9)]).data
    assert len(FRAME.findall(html)) == 2
    assert len(FRAME.findall(widgets.map_player(errors, MAP_TS, MAP_ALPHAS, runs, scratch, 30, 100).data)) == 6


def test_map_widgets_reject_a_map_that_does_not_match_its_runs():
    errors, runs, scratch = map_runs()
    with pytest.raises(ValueError, match="errors must have shape"):
        widgets.map_player(errors[:1], MAP_TS, MAP_ALPHAS, runs, scratch, 30, 100)
    with pytest.raises(ValueError, match="runs must hold a History for every"):
        widgets.map_explorer(errors, MAP_TS, MAP_ALPHAS, {}, scratch, 30, 100)
    with pytest.raises(ValueError, match="cells must be"):
        widgets.map_player(errors, MAP_TS, MAP_ALPHAS, runs, scratch, 30, 100, cells=[(2.0, 0.5)])


# ------------------------------------------------- ipywidgets 7 (Colab's) as well as 8
@pytest.fixture
def ipywidgets_7_interactive(monkeypatch):
    """ipywidgets 8's interactive made to behave as 7's: no draw in __init__, only when displayed
    (7 registers on_displayed(update) where 8 calls update()); moving a slider still redraws."""
    import ipywidgets

    init, update = ipywidgets.interactive.__init__, ipywidgets.interactive.update

    def init7(self, *args, **kwargs):
        self._constructing = True
        try:
            init(self, *args, **kwargs)
        finally:
            self._constructing = False

    def update7(self, *args):
        if not getattr(self, "_constructing", False):
            update(self, *args)

    monkeypatch.setattr(ipywidgets.interactive, "__init__", init7)
    monkeypatch.setattr(ipywidgets.interactive, "update", update7)


def test_explorers_have_drawn_their_result_under_ipywidgets_7_too(ipywidgets_7_interactive):
    import ipywidgets

    assert ipywidgets.interactive(lambda T: T, T=1.0).result is None  # the emulation holds
    w = widgets.temperature_explorer(Z)
    torch.testing.assert_close(heights(w.result.axes[0]), kd.softmax_t(Z, 1.0))
    sliders(w)["T"].value = 4.0
    torch.testing.assert_close(heights(w.result.axes[0]), kd.softmax_t(Z, 4.0))
    w = widgets.loss_explorer(Z, V, Y)
    assert w.result.texts[0].get_text() == "T = 4, alpha = 0.50"
