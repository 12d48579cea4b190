"""kdlib.fit's precisions, executed on the CPU: the branches a GPU takes never meet their first run there."""
import pytest
import torch
from torch import nn

import kdlib as kd
from kdlib.train import autocast, grad_scaler, resolve_precision


def blobs(n=320, d=8, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = 3 * torch.randn(classes, d, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    x = centers[y] + torch.randn(n, d, generator=g)
    return kd.Data("blobs", x[:256], y[:256], x[256:], y[256:], [str(c) for c in range(classes)], "made up")


def mlp(d=8, classes=3):
    return nn.Sequential(nn.Linear(d, 32), nn.ReLU(), nn.Linear(32, classes))


@pytest.fixture(autouse=True)
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KDLIB_CACHE", str(tmp_path))


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_each_precision_trains_a_distilled_student_on_the_cpu(precision):
    data = blobs()
    torch.manual_seed(0)
    teacher = mlp()
    kd.fit(teacher, data, kd.FitConfig(epochs=4, batch_size=32, lr=0.05), progress=False)
    torch.manual_seed(1)
    student = mlp()
    cfg = kd.FitConfig(epochs=6, batch_size=32, lr=0.05, precision=precision)
    hist = kd.fit(student, data, cfg, teacher=teacher, progress=False)
    assert all(torch.isfinite(torch.tensor(hist.step_loss)))
    assert hist.epoch_loss[-1] < 0.5 * hist.epoch_loss[0]  # the loss falls
    assert hist.test_acc > 0.9
    # the student's weights stay float32 (autocast casts the products, not the parameters)
    assert all(p.dtype == torch.float32 for p in student.parameters())
    # the teacher's logits that fit cached are float32, whatever the student's precision
    assert kd.teacher_logits(teacher, data.x_train).dtype == torch.float32


@pytest.mark.parametrize("precision,dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16),
                                             ("fp16", torch.float16)])
def test_autocast_runs_the_matrix_products_in_the_chosen_precision(precision, dtype):
    layer = nn.Linear(4, 3)
    with autocast(torch.device("cpu"), precision):
        assert layer(torch.randn(2, 4)).dtype == dtype


def test_only_fp16_gets_a_gradient_scaler():
    cpu = torch.device("cpu")
    assert isinstance(grad_scaler(cpu, "fp16"), torch.amp.GradScaler)
    assert grad_scaler(cpu, "bf16") is None and grad_scaler(cpu, "fp32") is None


def test_auto_precision_is_fp32_on_the_cpu():
    assert resolve_precision(torch.device("cpu")) == "fp32"
    assert kd.FitConfig().precision == "auto"


def test_an_unknown_precision_is_a_clear_error():
    with pytest.raises(ValueError, match="precision must be one of"):
        kd.FitConfig(precision="fp8")
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision(torch.device("cpu"), "half")
