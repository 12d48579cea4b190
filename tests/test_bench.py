"""kdlib.bench runs its four loops on the same work (a benchmark, so no timing is asserted)."""
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import kdlib as kd
from kdlib import bench


def tiny_images(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return kd.Data("mnist", x, y, x[:32], y[:32], [str(i) for i in range(10)], "made up")


def test_tutorial_per_image_pil_and_floor_loops_train_the_student():
    data, cfg = tiny_images(), kd.FitConfig(epochs=1, batch_size=32)
    teacher = kd.models.hinton_teacher()
    for loop in (lambda s: bench.tutorial_epochs(s, teacher, data, cfg),
                 lambda s: bench.per_image_pil_epochs(s, teacher, data, cfg),
                 lambda s: bench.floor_epochs(s, data, cfg)):
        student = kd.models.hinton_student()
        before = [p.detach().clone() for p in student.parameters()]
        assert loop(student) > 0
        assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters()))


def test_tutorial_loop_gives_the_loss_of_kdlib_on_the_same_batches():
    # the tutorial's soft term sum(p (log p - log q)) / B * T^2 is kdlib's KL term, so on the same
    # batches in the same order both loops train the same weights
    data, cfg = tiny_images(), kd.FitConfig(epochs=1, batch_size=32, T=3.0, alpha=0.6, lr=0.05)
    teacher = kd.models.hinton_teacher().eval()
    a, b = kd.models.hinton_student(), kd.models.hinton_student()
    b.load_state_dict(a.state_dict())
    a.eval(), b.eval()  # no dropout: the two loops draw their masks from different streams
    a.train = b.train = lambda mode=True: None  # keep them in eval mode inside the loops
    bench.tutorial_epochs(a, teacher, data, cfg)
    # the tutorial's batch order: a DataLoader made alike draws the same permutation
    order = DataLoader(TensorDataset(torch.arange(len(data.y_train))), batch_size=cfg.batch_size, shuffle=True,
                       generator=torch.Generator().manual_seed(cfg.seed))
    opt = torch.optim.SGD(b.parameters(), lr=cfg.lr, momentum=0.9)
    with torch.no_grad():
        v = teacher(data.x_train)
    for (idx,) in order:
        loss = kd.distillation_loss(b(data.x_train[idx]), v[idx], data.y_train[idx], cfg.T, cfg.alpha)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-5)


def test_run_prints_the_four_loops_and_the_ratios(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("KDLIB_CACHE", str(tmp_path))
    monkeypatch.setattr(bench, "load_dataset", lambda name, device=None, verbose=True: tiny_images())
    numbers = bench.run("mnist", epochs=1, batch_size=32, device="cpu", repeats=2)
    out = capsys.readouterr().out
    assert all(word in out for word in ("PyTorch tutorial", "per-image PIL", "kdlib.fit", "floor", "interleaved"))
    assert "as fast as the PyTorch tutorial's loop" in out
    assert list(numbers) == list(bench.LOOPS)
    assert all(r["seconds"] > 0 and 0 <= r["accuracy"] <= 1 for r in numbers.values())


def test_run_rejects_zero_repeats():
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        bench.run(repeats=0)


# ------------------------------------------------------------------ one model's speed, CIFAR-shaped
def test_forward_flops_counts_a_linear_layer_as_two_per_multiply_add():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5))
    assert bench.forward_flops(model, shape=(3, 2, 2)) == 2 * 12 * 5
    assert model.training  # the mode is restored


def test_forward_flops_counts_a_convolution_per_output_value():
    model = torch.nn.Conv2d(3, 8, kernel_size=3, padding=1)  # 8 x 4 x 4 outputs, 3 * 3 * 3 products each
    assert bench.forward_flops(model, shape=(3, 4, 4)) == 2 * 27 * 8 * 16


def test_forward_flops_counts_attention_projections_and_both_attention_products():
    L, E = 5, 8  # a sequence of 5 tokens of width 8, self-attention: S = L
    layer = torch.nn.TransformerEncoderLayer(E, nhead=2, dim_feedforward=16, batch_first=True, norm_first=True)
    projections, products, mlp = 2 * 4 * L * E * E, 2 * 2 * L * L * E, 2 * 2 * L * E * 16
    assert bench.forward_flops(layer, shape=(L, E)) == projections + products + mlp
    assert layer.training


def test_forward_flops_of_the_book_models_are_fixed_by_their_shapes():
    # the numbers chapters 8 and 9 print: a property of the architectures, the same under every PyTorch
    assert bench.forward_flops(kd.models.cifar_resnet18()) == 1_110_845_440
    assert bench.forward_flops(kd.models.vit_tiny_cifar()) == 250_683_648
    assert bench.forward_flops(kd.models.hinton_teacher(), shape=(1, 28, 28)) == 2 * (784 * 1200 + 1200 * 1200
                                                                                        + 1200 * 10)


def test_forward_flops_of_the_cifar_models_rank_teacher_above_student():
    large, small = kd.models.cifar_large_cnn(), kd.models.cifar_small_cnn()
    assert bench.forward_flops(large) > 5 * bench.forward_flops(small) > 0


def test_epoch_seconds_scales_with_images_and_a_teacher_per_batch_costs_more():
    torch.manual_seed(0)
    student = kd.models.cifar_small_cnn()
    teacher = kd.models.cifar_large_cnn()
    one = bench.epoch_seconds(student, n_images=64, batch_size=16, steps=2)
    assert one > 0
    cached = bench.epoch_seconds(student, teacher, cached=True, n_images=64, batch_size=16, steps=3)
    per_batch = bench.epoch_seconds(student, teacher, cached=False, n_images=64, batch_size=16, steps=3)
    assert per_batch > cached  # the large CNN's forward pass on every batch is not free
    with pytest.raises(ValueError, match="must be >= 1"):
        bench.epoch_seconds(student, steps=0)


def test_inference_ms_is_positive_and_leaves_the_mode_alone():
    model = kd.models.cifar_small_cnn()
    assert bench.inference_ms(model, batch_size=8, repeat=2) > 0 and model.training


def test_estimated_seconds_is_flops_over_throughput():
    assert bench.estimated_seconds(2e12, 10, tflops=4.0) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="tflops must be > 0"):
        bench.estimated_seconds(1.0, 1, tflops=0)


def test_speed_table_has_the_four_rows_and_the_teacher_per_batch_costs_its_flops():
    torch.manual_seed(0)
    teacher, student = kd.models.cifar_large_cnn(), kd.models.cifar_small_cnn()
    table = bench.speed_table(teacher, student, names=("large", "small"), steps=1, batch_size=8, n_images=16)
    assert list(table) == ["large", "small, labels only", "small, distilled, teacher cached",
                           "small, distilled, teacher per batch"]
    large, alone, cached, per_batch = table.values()
    assert large.params == 14_728_266 and alone.params == 437_034 and large.ms_per_image > 0
    assert cached.ms_per_image is None and cached.t4_s_per_epoch == alone.t4_s_per_epoch
    flops = per_batch.t4_s_per_epoch * bench.T4_ASSUMED_TFLOPS * 1e12 / 16
    assert flops == pytest.approx(3 * alone.forward_flops + large.forward_flops)
    text = bench.format_speed(table)
    assert "T4 s/epoch, est." in text and max(map(len, text.splitlines())) <= 88 and "14,728,266" in text and len(text.splitlines()) == 5


def test_estimated_setup_seconds_counts_the_teacher_per_batch_only_with_augmentation():
    from dataclasses import replace

    cfg = kd.FitConfig(epochs=2)
    setup = kd.experiments.Setup("full", None, cfg, cfg, seeds=(0, 1))
    one = lambda flops: bench.estimated_seconds(flops, 50_000)
    plain = bench.estimated_setup_seconds(setup, 10.0, 1.0, distilled_per_seed=3)
    assert plain == pytest.approx(2 * one(30) + 2 * 2 * (one(3) + 3 * one(3)))
    augmented = replace(setup, student=replace(cfg, augment=True))
    assert bench.estimated_setup_seconds(augmented, 10.0, 1.0, 3) == pytest.approx(plain + 2 * 2 * 3 * one(10))


def test_forward_flops_counts_attention_called_with_keywords_and_other_key_widths():
    class Cross(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = torch.nn.MultiheadAttention(8, 2, kdim=4, vdim=6, batch_first=True)

        def forward(self, x):  # x: (B, 5, 8) queries; keys and values of other widths, 3 of them
            k, v = torch.zeros(x.shape[0], 3, 4), torch.zeros(x.shape[0], 3, 6)
            return self.attn(query=x, key=k, value=v, need_weights=False)[0]

    L, S, E = 5, 3, 8
    expected = 2 * L * E * E + 2 * S * (4 + 6) * E + 2 * 2 * L * S * E + 2 * L * E * E
    assert bench.forward_flops(Cross(), shape=(L, E)) == expected
