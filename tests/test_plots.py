"""kdlib.plots: what is drawn equals what kdlib.losses computes (or an independent torch formula)."""
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgba

import kdlib as kd
from kdlib import plots

Z = torch.tensor([2.0, 10, 3, 0, 5, 4, 7, 9, 1, 2])
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def heights(ax):
    return torch.tensor([bar.get_height() for bar in ax.containers[0]], dtype=torch.float32)


def colors(ax):
    return [bar.get_facecolor() for bar in ax.containers[0]]


# ------------------------------------------------------------------ bars
def test_bars_heights_are_the_given_probabilities_on_a_0_1_axis():
    q = kd.softmax_t(Z)
    fig = plots.bars(q, title="T = 1")
    (ax,) = fig.axes
    torch.testing.assert_close(heights(ax), q)
    assert ax.get_ylim() == (0.0, 1.0)
    assert ax.get_title() == "T = 1"


def test_bars_accepts_lists_and_labels_the_classes():
    fig = plots.bars([0.1, 0.2, 0.7], class_names=["a", "b", "c"])
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["a", "b", "c"]


def test_bars_draws_on_the_given_axes_and_returns_their_figure():
    fig, (left, right) = plt.subplots(1, 2)
    assert plots.bars([0.5, 0.5], ax=right) is fig
    assert len(right.containers) == 1 and len(left.containers) == 0


def test_bars_highlight_colours_only_that_class():
    cs = colors(plots.bars(kd.softmax_t(Z), highlight=3).axes[0])
    assert cs[3] == to_rgba(plots.HIGHLIGHT_COLOR)
    assert all(c == to_rgba(plots.BAR_COLOR) for i, c in enumerate(cs) if i != 3)


def test_bars_log_axis_starts_at_the_power_of_ten_below_the_smallest_probability():
    q = kd.softmax_t(Z)  # smallest is about 3e-5
    ax = plots.bars(q, log=True).axes[0]
    assert ax.get_yscale() == "log"
    assert ax.get_ylim() == pytest.approx((1e-5, 1.0))


# ---------------------------------------------------------- temperatures
def test_temperature_panels_heights_equal_softmax_t_at_each_T():
    Ts = [0.5, 1, 2, 5, 10, 20]
    fig = plots.temperatures(Z, Ts)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == len(Ts)
    for ax, T in zip(panels, Ts):
        torch.testing.assert_close(heights(ax), kd.softmax_t(Z, T))
        torch.testing.assert_close(heights(ax), torch.softmax(Z / T, dim=-1))  # independent
        assert ax.get_title() == f"T = {T:g}"


def test_temperature_panels_share_the_same_y_limits():
    fig = plots.temperatures(Z, [1, 4, 16], log=True)
    limits = {ax.get_ylim() for ax in fig.axes}
    assert len(limits) == 1


# --------------------------------------------------------------- targets
def test_targets_panels_are_hard_soft_and_their_alpha_mixture():
    v, y, alpha, T = torch.randn(10, generator=torch.Generator().manual_seed(0)), 3, 0.3, 4.0
    hard_ax, soft_ax, mixed_ax = plots.targets(v, y, alpha, T, CLASSES).axes
    hard = torch.nn.functional.one_hot(torch.tensor(y), 10).float()
    soft = torch.softmax(v / T, dim=-1)
    torch.testing.assert_close(heights(hard_ax), hard)
    torch.testing.assert_close(heights(soft_ax), soft)
    torch.testing.assert_close(heights(mixed_ax), alpha * soft + (1 - alpha) * hard)
    assert colors(mixed_ax)[y] == to_rgba(plots.HIGHLIGHT_COLOR)


def test_targets_mixed_panel_sums_to_one_at_any_alpha():
    for alpha in (0.0, 0.5, 1.0):
        mixed_ax = plots.targets(Z, 1, alpha, 2.0).axes[2]
        assert heights(mixed_ax).sum().item() == pytest.approx(1.0, abs=1e-6)


# --------------------------------------------------------- gradient_bars
def test_gradient_bar_colours_follow_the_sign():
    g = torch.tensor([0.3, -0.2, 0.0, -0.1])
    ax = plots.gradient_bars(g).axes[0]
    torch.testing.assert_close(heights(ax), g)
    assert colors(ax) == [to_rgba(c) for c in
                          (plots.POSITIVE_COLOR, plots.NEGATIVE_COLOR, "gray", plots.NEGATIVE_COLOR)]


def test_gradient_bars_have_symmetric_limits_and_a_zero_line():
    ax = plots.gradient_bars(torch.tensor([0.3, -0.1])).axes[0]
    low, high = ax.get_ylim()
    assert low == pytest.approx(-high) and high >= 0.3
    assert any(list(line.get_ydata()) == [0, 0] for line in ax.get_lines())
    assert plots.gradient_bars([0.3, -0.1], limit=2.0).axes[0].get_ylim() == (-2.0, 2.0)


def test_gradient_bars_of_loss_gradient_sum_to_zero():
    v, z = Z.flip(0), Z
    g = kd.loss_gradient(z[None], v[None], torch.tensor([1]), T=4.0, alpha=0.5)[0]
    assert heights(plots.gradient_bars(g).axes[0]).sum().item() == pytest.approx(0.0, abs=1e-6)


# ------------------------------------------------------------ bad input
@pytest.mark.parametrize("call, name", [
    (lambda: plots.bars([0.5, 0.5], class_names=["a", "b", "c"]), "class_names"),
    (lambda: plots.bars(torch.ones(2, 3) / 3), "probs"),
    (lambda: plots.bars([]), "probs"),
    (lambda: plots.bars([0.5, float("nan")]), "probs"),
    (lambda: plots.bars([0.5, 0.5], highlight=2), "highlight"),
    (lambda: plots.temperatures(Z, []), "Ts"),
    (lambda: plots.temperatures(Z, [1.0, 0.0]), r"Ts\[1\]"),
    (lambda: plots.temperatures(Z, [1.0, -2.0]), r"Ts\[1\]"),
    (lambda: plots.temperatures(Z, [1.0], class_names=CLASSES[:3]), "class_names"),
    (lambda: plots.targets(Z, 10, 0.5, 4.0), "label"),
    (lambda: plots.targets(Z, 1, 1.5, 4.0), "alpha"),
    (lambda: plots.targets(Z, 1, 0.5, 0.0), "T"),
    (lambda: plots.gradient_bars([0.1, -0.1], limit=0.0), "limit"),
])
def test_bad_input_raises_value_error_naming_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()


# ------------------------------------------------------------ the experiments' figures
def test_digit_soft_targets_draws_each_image_and_its_soft_targets_per_T():
    images, logits = torch.randn(2, 1, 28, 28), torch.randn(2, 10)
    fig = plots.digit_soft_targets(images, logits, [1, 5], highlight=[9, 2], row_titles=["a", "b"])
    axes = fig.axes
    assert len(axes) == 2 * 3
    torch.testing.assert_close(heights(axes[4]), kd.softmax_t(logits[1], 1.0))
    torch.testing.assert_close(heights(axes[5]), kd.softmax_t(logits[1], 5.0))
    assert colors(axes[4])[2] == to_rgba(plots.HIGHLIGHT_COLOR) and axes[3].get_title() == "b"
    with pytest.raises(ValueError, match="highlight must give one class per example"):
        plots.digit_soft_targets(images, logits, [1], highlight=[1])


def test_similarity_masks_the_diagonal_and_uses_a_log_scale():
    S = torch.softmax(torch.randn(4, 4), 1)
    fig = plots.similarity(S, ["a", "b", "c", "d"])
    shown = fig.axes[0].images[0].get_array()
    assert shown.mask.diagonal().all() and not shown.mask[0, 1]
    assert fig.axes[0].images[0].norm.__class__.__name__ == "LogNorm"
    with pytest.raises(ValueError, match="square"):
        plots.similarity(torch.ones(2, 3))


def test_curves_draw_one_line_per_run_in_both_panels():
    h = kd.History(step_loss=[1.0, 0.5, 0.25, 0.2], epoch_test_acc=[0.5, 0.9])
    fig = plots.curves({"a": h, "b": h}, steps_per_epoch=2, smooth=2)
    loss_ax, acc_ax = fig.axes
    assert len(loss_ax.lines) == 2 and len(acc_ax.lines) == 2
    assert list(acc_ax.lines[0].get_ydata()) == [50.0, 90.0]
    with pytest.raises(ValueError, match="at least one run"):
        plots.curves({}, 2)


def test_heatmap_writes_each_value_and_outlines_the_marker():
    fig = plots.heatmap(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), [1, 20], [0.5, 1.0], baseline=2.5, marker=(20, 0.5))
    ax = fig.axes[0]
    assert sorted(t.get_text() for t in ax.texts) == ["1", "2", "3", "4"] and len(ax.patches) == 1
    with pytest.raises(ValueError, match="values must have shape"):
        plots.heatmap(torch.ones(3, 2), [1, 20], [0.5, 1.0])


def wcag_contrast(a, b) -> float:
    """The WCAG 2 contrast ratio of two colours, from 1 (the same) to 21 (black on white)."""
    def luminance(color) -> float:
        r, g, b = (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in to_rgba(color)[:3])
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def unreadable_cells(ax) -> list:
    """The numbers written on an image's cells whose colour is under 4.5:1 against their cell (WCAG AA).

    Each text sits at the centre of its cell (x = column, y = row); the cell's colour is what the
    image's colormap and norm give its value, or the axes' face colour where the value is masked
    (NaN): what the reader sees behind the number.
    """
    plt.figure(ax.figure.number).canvas.draw()  # rendered with Agg, as the book's figures are
    (image,) = ax.images
    values = image.get_array()
    masked = np.ma.getmaskarray(values) | np.isnan(np.ma.getdata(values))
    bad = []
    for text in ax.texts:
        x, y = text.get_position()
        i, j = int(round(y)), int(round(x))
        face = ax.get_facecolor() if masked[i, j] else image.cmap(image.norm(values[i, j]))
        ratio = wcag_contrast(text.get_color(), face)
        if ratio < 4.5:
            bad.append(f"{text.get_text()!r} at row {i}, column {j}: {ratio:.2f}:1")
    return bad


def test_heatmap_numbers_read_at_4_5_to_1_on_their_cells():
    # chapters 4 and 8: errors from far below the baseline (navy) to far above it (dark red)
    values = torch.tensor([[52.0, 60, 75, 90], [48, 55, 70, 120], [45, 58, 80, 140]])
    fig = plots.heatmap(values, [1, 4, 20], [0.1, 0.5, 0.9, 1.0], baseline=80)
    assert len(fig.axes[0].texts) == 12
    assert not unreadable_cells(fig.axes[0])
    plt.close(fig)


def test_gain_vs_size_plots_errors_and_gain_with_error_bars():
    from kdlib.experiments import Comparison

    def comp(t, s, d):
        return Comparison(kd.History(test_errors=t), [kd.History(test_errors=e) for e in s],
                          [kd.History(test_errors=e) for e in d])

    results = {"mnist": {"T=20": {100: comp(50, [80, 90], [60, 70]), 1000: comp(20, [30, 34], [28, 30])},
                         "T=4": {100: comp(50, [80, 90], [85, 85]), 1000: comp(20, [30, 34], [32, 32])}}}
    fig = plots.gain_vs_size(results, {"mnist": 1000})
    err_ax, gain_ax = fig.axes
    assert len(err_ax.lines) == 2 + 2  # teacher, scratch, one distilled line per setting
    assert list(gain_ax.containers[0].lines[0].get_ydata()) == [20.0, 3.0]
    assert list(gain_ax.containers[1].lines[0].get_ydata()) == [0.0, 0.0]
    with pytest.raises(ValueError, match="at least one data set"):
        plots.gain_vs_size({}, {})


# ------------------------------------------------------------------ gradient_scaling
def test_gradient_scaling_draws_both_norms_and_a_one_over_T_squared_line_on_log_axes():
    Ts = [1.0, 2.0, 4.0]
    with_T2, without_T2 = [0.5, 0.6, 0.6], [0.5, 0.15, 0.0375]
    fig = plots.gradient_scaling(Ts, with_T2, without_T2)
    (ax,) = fig.axes
    assert ax.get_xscale() == ax.get_yscale() == "log"
    lines = ax.get_lines()
    assert len(lines) == 3
    torch.testing.assert_close(torch.tensor(lines[0].get_ydata(), dtype=torch.float32), torch.tensor(with_T2))
    torch.testing.assert_close(torch.tensor(lines[1].get_ydata(), dtype=torch.float32), torch.tensor(without_T2))
    reference = torch.tensor(lines[2].get_ydata(), dtype=torch.float32)
    torch.testing.assert_close(reference, 0.0375 * (4 / torch.tensor(Ts)) ** 2)   # through the last point, 1/T^2
    plt.close(fig)


def test_gradient_scaling_rejects_mismatched_or_non_positive_norms():
    with pytest.raises(ValueError, match=r"without_T2 must have one norm per temperature \(2\)"):
        plots.gradient_scaling([1.0, 2.0], [1.0, 1.0], [1.0])
    with pytest.raises(ValueError, match="with_T2 must be > 0"):
        plots.gradient_scaling([1.0, 2.0], [1.0, 0.0], [1.0, 0.5])
    with pytest.raises(ValueError, match="Ts must hold at least one temperature"):
        plots.gradient_scaling([], [], [])


def test_gain_vs_lead_puts_one_point_per_size_at_lead_and_gain():
    from kdlib.experiments import Comparison

    r = Comparison(kd.History(test_errors=20), [kd.History(test_errors=e) for e in (30, 34)],
                   [kd.History(test_errors=e) for e in (28, 30)])
    fig = plots.gain_vs_lead({"mnist": {"T=20": {1000: r}}}, {"mnist": 1000})
    x, y = fig.axes[0].containers[0].lines[0].get_data()
    assert (list(x), list(y)) == ([12.0], [3.0])  # lead 32 - 20, gain (2 + 4) / 2


def chapter_5_results() -> dict:
    """gain_vs_lead's input as chapter 5's stored run gives it: (teacher, scratch per seed, gain per seed)."""
    from kdlib.experiments import Comparison

    run = {"mnist": {"T=20, alpha=0.9": {1000: (106, [116, 115, 115], [11, 4, 8]),
                                         4000: (57, [78, 77, 77], [19, 22, 18])},
                     "T=4, alpha=0.5": {1000: (106, [116, 115, 115], [9, 7, 9]),
                                        4000: (57, [78, 77, 77], [20, 22, 17])}},
           "fashion-mnist": {
               "T=20, alpha=0.9": {1000: (1889, [1939, 1937, 1937], [-79, -85, -77]),
                                   4000: (1552, [1619, 1618, 1618], [1, -6, 7]),
                                   15000: (1234, [1248, 1247, 1247], [-15, -33, -7])},
               "T=4, alpha=0.5": {1000: (1889, [1939, 1937, 1937], [21, 3, 15]),
                                  4000: (1552, [1619, 1618, 1618], [39, 40, 13]),
                                  15000: (1234, [1248, 1247, 1247], [29, 30, 33])}}}
    return {name: {setting: {n: Comparison(kd.History(test_errors=t), [kd.History(test_errors=e) for e in scratch],
                                            [kd.History(test_errors=e - g) for e, g in zip(scratch, gains)])
                             for n, (t, scratch, gains) in by_size.items()}
                   for setting, by_size in settings.items()}
            for name, settings in run.items()}


def test_gain_vs_lead_labels_do_not_overlap():
    fig = plots.gain_vs_lead(chapter_5_results(), {"mnist": 1000, "fashion-mnist": 10000})
    fig.canvas.draw()
    (ax,) = fig.axes
    renderer = fig.canvas.get_renderer()
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in ax.texts]
    # every size is named near its points: two settings on the same spot may share one label
    assert sorted({text for text, _ in boxes}) == ["1,000", "15,000", "4,000"] and len(boxes) >= 7
    overlapping = [(a, b) for k, (a, box_a) in enumerate(boxes) for b, box_b in boxes[k + 1:] if box_a.overlaps(box_b)]
    assert not overlapping, f"labels printed over each other: {overlapping}"
    frame = ax.get_window_extent(renderer)
    assert all(frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1) for _, box in boxes)
    plt.close(fig)


def test_confusion_matrix_writes_counts_and_counts_the_errors_in_the_title():
    M = torch.tensor([[5, 1, 0], [0, 4, 0], [2, 0, 3]])
    fig = plots.confusion_matrix(M, ["a", "b", "c"], title="t", highlight=2)
    ax = fig.axes[0]
    assert sorted(t.get_text() for t in ax.texts) == sorted(["5", "1", "4", "2", "3"])
    assert "3 errors of 15" in ax.get_title() and len(ax.patches) == 2
    with pytest.raises(ValueError, match="square"):
        plots.confusion_matrix(torch.ones(2, 3))


def test_confusion_matrix_counts_read_at_4_5_to_1_on_their_cells():
    # chapter 6: a row of mistakes (31, 30 and 8 on dark red) beside counts of 0 to 3 on pale red
    M = torch.diag(torch.full((10,), 95)) + torch.tensor([[(i * 7 + j * 3) % 4 for j in range(10)] for i in range(10)])
    M[3] = torch.tensor([0, 1, 8, 0, 0, 31, 0, 1, 30, 3])
    fig = plots.confusion_matrices([M, M.flip(0)], ["before", "after"])
    for ax in fig.axes:
        assert len(ax.texts) == int((M != 0).sum())
        assert not unreadable_cells(ax)
    plt.close(fig)


def test_batch_accuracy_draws_the_whole_run_and_the_first_epoch_batch_by_batch():
    h = kd.History(step_acc=[0.1, 0.2, 0.4, 0.6, 0.7, 0.8])
    fig = plots.batch_accuracy({"a": h, "b": h}, steps_per_epoch=3, smooth=2)
    whole, first = fig.axes
    assert len(whole.lines) == 2 and len(first.lines) == 2
    assert list(first.lines[0].get_ydata()) == pytest.approx([10.0, 20.0, 40.0])
    assert list(whole.lines[0].get_ydata()) == pytest.approx([15.0, 30.0, 50.0, 65.0, 75.0])
    with pytest.raises(ValueError, match="at least one run"):
        plots.batch_accuracy({}, 3)
    with pytest.raises(ValueError, match="steps_per_epoch and smooth must be >= 1"):
        plots.batch_accuracy({"a": h}, 0)


def test_augmentations_show_the_originals_then_each_draw_of_crop_and_flip():
    x = torch.randn(4, 3, 32, 32)
    fig = plots.augmentations(x, draws=2, title="t")
    assert len(fig.axes) == 3 * 4 and fig.axes[0].get_ylabel() == "original" and fig.axes[4].get_ylabel() == "draw 1"
    shown = fig.axes[0].images[0].get_array()
    assert shown.shape == (32, 32, 3) and float(shown.min()) == 0.0 and float(shown.max()) == pytest.approx(1.0)
    again = plots.augmentations(x, draws=2)
    assert (again.axes[5].images[0].get_array() == fig.axes[5].images[0].get_array()).all()  # seeded
    with pytest.raises(ValueError, match="draws >= 1"):
        plots.augmentations(x, draws=0)


def test_confusion_matrices_draw_each_matrix_in_rows_of_two():
    Ms = [torch.eye(3, dtype=torch.long) * k for k in (1, 2, 3)]
    fig = plots.confusion_matrices(Ms, ["a", "b", "c"], highlight=0)
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert len(fig.axes) == 4 and len(shown) == 3
    assert [ax.get_title().split("\n")[0] for ax in shown] == ["a", "b", "c"]
    assert [t.get_text() for t in shown[2].texts] == ["3", "3", "3"]
    assert shown[2].get_position().y0 < shown[0].get_position().y0  # the third starts a second row
    with pytest.raises(ValueError, match="one title per matrix"):
        plots.confusion_matrices(Ms, ["a"])


# ------------------------------------------------ the source articles' figures, remade
def test_temperature_lines_draw_softmax_t_at_each_T_in_legend_order():
    z = torch.tensor([-1.0, 0, 4, 3])  # "(Attempt at) Knowledge Distillation"'s logits
    Ts = [1, 2, 3, 4, 5]
    ax = plots.temperature_lines(z, Ts).axes[0]
    assert len(ax.lines) == len(Ts)
    for line, T in zip(ax.lines, Ts):
        y = torch.tensor(line.get_ydata(), dtype=torch.float32)
        torch.testing.assert_close(y, torch.softmax(z / T, dim=-1))  # independent
        assert line.get_label() == f"{T:g}"
    assert ax.get_ylim() == (0.0, 1.0)


def test_temperature_groups_put_one_bar_per_class_for_each_T():
    z = torch.tensor([10.87, 12.86, 9.51, 11.36, 8.91, 9.47, 9.42, 7.61, 8.90, 11.10])
    Ts = [0.5, 1, 2, 4]
    ax = plots.temperature_groups(z, Ts, CLASSES).axes[0]
    assert len(ax.containers) == len(Ts)
    for container, T in zip(ax.containers, Ts):
        h = torch.tensor([bar.get_height() for bar in container], dtype=torch.float32)
        torch.testing.assert_close(h, torch.softmax(z / T, dim=-1))
    lefts = [[bar.get_x() for bar in c] for c in ax.containers]
    assert all(a < b for a, b in zip(lefts[0], lefts[1]))  # T side by side within a class
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [f"T = {T:g}" for T in Ts]


def test_prediction_and_gradient_draw_q_and_q_minus_the_mixed_target():
    g = torch.Generator().manual_seed(1)
    z, v, y, alpha = 3 * torch.randn(10, generator=g), 3 * torch.randn(10, generator=g), 7, 0.5
    ax_q, ax_g = plots.prediction_and_gradient(z, v, y, alpha, CLASSES).axes
    q = torch.softmax(z, dim=-1)
    t = alpha * torch.softmax(v, dim=-1) + (1 - alpha) * torch.nn.functional.one_hot(
        torch.tensor(y), 10).float()
    torch.testing.assert_close(heights(ax_q), q)
    torch.testing.assert_close(heights(ax_g), q - t)
    # the same as autograd through kdlib's loss at T = 1, for a batch of one
    z_ = z[None].clone().requires_grad_()
    kd.distillation_loss(z_, v[None], torch.tensor([y]), T=1.0, alpha=alpha).backward()
    torch.testing.assert_close(heights(ax_g), z_.grad[0])
    assert abs(heights(ax_g).sum().item()) < 1e-6
    with pytest.raises(ValueError, match="same length"):
        plots.prediction_and_gradient(z, v[:9], y, alpha)
