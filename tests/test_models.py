"""kdlib.models: shapes, exact parameter counts (worked by hand or published), dropout behaviour,
gradient flow and argument checks. Big models run on a batch of 2 to stay fast on a CPU."""
import pytest
import torch
from torch import nn

from kdlib import models as km

MNIST_MODELS = ["hinton_teacher", "hinton_student"]
CIFAR_MODELS = ["cifar_large_cnn", "cifar_small_cnn", "cifar_resnet18", "vit_tiny_cifar"]

# Published counts (Hinton MLPs: worked by hand below; labml's CNNs: labml's own logs;
# ResNet-18: the well-known CIFAR number), plus the ViT's, worked out in test_vit_count_by_hand.
EXPECTED_PARAMS = {
    "hinton_teacher": 2_395_210,
    "hinton_student": 1_276_810,
    "cifar_large_cnn": 14_728_266,
    "cifar_small_cnn": 437_034,
    "cifar_resnet18": 11_173_962,
    "vit_tiny_cifar": 1_806_538,
    "byte_transformer": 875_520,
}


def mlp_params(widths):
    """Weights plus biases of a chain of Linear layers through the given widths."""
    return sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ---------------------------------------------------------------- shapes and counts
@pytest.mark.parametrize("name", MNIST_MODELS)
def test_mnist_mlps_return_logits_for_images_and_flat_vectors(name):
    model = km.make_model(name).eval()
    images = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        from_images = model(images)
        from_flat = model(images.reshape(3, 784))
    assert from_images.shape == (3, 10)
    torch.testing.assert_close(from_images, from_flat)  # flattening inside is all that differs


@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_cifar_models_map_32x32_images_to_10_logits(name):
    model = km.make_model(name)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_parameter_count_is_exact(name):
    assert km.count_params(km.make_model(name)) == EXPECTED_PARAMS[name]


def test_byte_transformer_count_by_hand():
    d, V, ctx, ff, L = 128, 256, 128, 512, 4
    layer = (3 * d * d + 3 * d + d * d + d) + 2 * 2 * d + (d * ff + ff) + (ff * d + d)
    assert V * d + ctx * d + L * layer + 2 * d + d * V + V == EXPECTED_PARAMS["byte_transformer"]


def test_mlp_counts_match_a_hand_computation():
    assert mlp_params([784, 1200, 1200, 10]) == EXPECTED_PARAMS["hinton_teacher"]
    assert mlp_params([784, 800, 800, 10]) == EXPECTED_PARAMS["hinton_student"]


def test_vit_count_by_hand():
    d, p, n, ff, L, C = 192, 4, 64, 384, 6, 10
    patch = 3 * p * p * d + d
    tokens = d + (n + 1) * d                           # class token + positions
    attn = 3 * d * d + 3 * d + d * d + d               # in_proj + out_proj
    layer = attn + 2 * 2 * d + (d * ff + ff) + (ff * d + d)
    assert patch + tokens + L * layer + 2 * d + d * C + C == EXPECTED_PARAMS["vit_tiny_cifar"]


def test_mlps_take_in_features_and_num_classes():
    teacher = km.hinton_teacher(in_features=3 * 32 * 32, num_classes=100)
    student = km.hinton_student(in_features=20, num_classes=3)
    assert teacher(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    assert student(torch.randn(2, 20)).shape == (2, 3)
    assert km.count_params(student) == mlp_params([20, 800, 800, 3])


def test_num_classes_sets_the_head_of_every_cifar_model():
    for name in ("cifar_small_cnn", "cifar_resnet18", "vit_tiny_cifar"):
        assert km.make_model(name, num_classes=7)(torch.randn(2, 3, 32, 32)).shape == (2, 7)


def test_count_params_trainable_only_skips_frozen_parameters():
    model = km.hinton_student()
    for p in model.net[1].parameters():  # freeze the first Linear: 784*800 + 800
        p.requires_grad_(False)
    assert km.count_params(model) == 1_276_810
    assert km.count_params(model, trainable_only=True) == 1_276_810 - (784 * 800 + 800)


def test_count_params_excludes_batchnorm_buffers():
    bn = nn.BatchNorm2d(5)  # weight and bias are parameters; running mean/var are buffers
    assert km.count_params(bn) == 10


# ------------------------------------------------------------------------ dropout
def test_teacher_dropout_varies_in_train_mode_and_is_deterministic_in_eval():
    teacher = km.hinton_teacher()
    x = torch.randn(4, 784)
    teacher.train()
    assert not torch.equal(teacher(x), teacher(x))
    teacher.eval()
    with torch.no_grad():
        assert torch.equal(teacher(x), teacher(x))


def test_teacher_drops_inputs_and_both_hidden_layers():
    rates = [m.p for m in km.hinton_teacher(dropout=0.3, input_dropout=0.1).modules()
             if isinstance(m, nn.Dropout)]
    assert rates == [0.1, 0.3, 0.3]


def test_student_has_no_dropout_so_train_mode_is_deterministic():
    student = km.hinton_student().train()
    assert not any(isinstance(m, nn.Dropout) for m in student.modules())
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(student(x), student(x))


def test_zero_dropout_teacher_has_no_dropout_layers():
    teacher = km.hinton_teacher(dropout=0.0, input_dropout=0.0)
    assert not any(isinstance(m, nn.Dropout) for m in teacher.modules())


def test_large_cnn_has_dropout_and_small_cnn_has_none():
    large, small = km.cifar_large_cnn(), km.cifar_small_cnn()
    assert sum(isinstance(m, nn.Dropout) for m in large.modules()) == 13  # one per conv
    assert not any(isinstance(m, nn.Dropout) for m in small.modules())


def test_cnn_batchnorm_can_use_batch_statistics_like_labml():
    model = km.cifar_small_cnn(track_running_stats=False)
    assert all(not m.track_running_stats for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert km.count_params(model) == EXPECTED_PARAMS["cifar_small_cnn"]


# ---------------------------------------------------------------------------- ViT
def test_vit_gradient_reaches_patch_embedding_and_tokens():
    vit = km.vit_tiny_cifar(depth=2)
    vit(torch.randn(2, 3, 32, 32)).sum().backward()
    for p in (vit.patch_embed.weight, vit.cls_token, vit.pos_embed):
        assert p.grad is not None and p.grad.abs().sum() > 0


@pytest.mark.parametrize("patch_size", [2, 8, 16])
def test_vit_accepts_any_patch_size_dividing_32(patch_size):
    vit = km.vit_tiny_cifar(patch_size=patch_size, dim=32, depth=1, heads=2)
    assert vit.pos_embed.shape == (1, (32 // patch_size) ** 2 + 1, 32)
    assert vit(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_vit_is_deterministic_in_eval_mode():
    vit = km.vit_tiny_cifar(depth=1, dropout=0.1).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(vit(x), vit(x))


# ------------------------------------------------------------------- bad arguments
@pytest.mark.parametrize("builder, kwargs, argument", [
    (km.hinton_teacher, {"dropout": 1.0}, "dropout"),
    (km.hinton_teacher, {"dropout": -0.1}, "dropout"),
    (km.hinton_teacher, {"input_dropout": 1.5}, "input_dropout"),
    (km.hinton_teacher, {"dropout": float("nan")}, "dropout"),
    (km.hinton_student, {"num_classes": 0}, "num_classes"),
    (km.hinton_student, {"in_features": 0}, "in_features"),
    (km.cifar_large_cnn, {"dropout": 1.0}, "dropout"),
    (km.cifar_small_cnn, {"num_classes": 0}, "num_classes"),
    (km.cifar_resnet18, {"num_classes": -1}, "num_classes"),
    (km.vit_tiny_cifar, {"patch_size": 5}, "patch_size"),
    (km.vit_tiny_cifar, {"dim": 100, "heads": 3}, "dim"),
    (km.vit_tiny_cifar, {"num_classes": 0}, "num_classes"),
    (km.vit_tiny_cifar, {"dropout": 1.0}, "dropout"),
    (km.vit_tiny_cifar, {"mlp_ratio": 0.0}, "mlp_ratio"),
])
def test_bad_constructor_argument_raises_value_error_naming_it(builder, kwargs, argument):
    with pytest.raises(ValueError, match=argument) as info:
        builder(**kwargs)
    message = str(info.value)
    assert any(word in message for word in ("[0, 1)", ">= 1", "divide", "divisible", "> 0"))


def test_bad_patch_size_error_lists_the_allowed_sizes():
    with pytest.raises(ValueError, match=r"\[1, 2, 4, 8, 16, 32\]"):
        km.vit_tiny_cifar(patch_size=3)


def test_non_numeric_dropout_raises_type_error():
    with pytest.raises(TypeError, match="dropout"):
        km.hinton_teacher(dropout="0.5")


def test_mlp_rejects_input_of_the_wrong_size_with_a_clear_message():
    with pytest.raises(ValueError, match="784"):
        km.hinton_student()(torch.randn(2, 3, 32, 32))


# ------------------------------------------------------------------------ registry
def test_registry_builds_each_model_by_name_and_passes_kwargs():
    assert set(km.MODELS) == set(EXPECTED_PARAMS)
    teacher = km.make_model("hinton_teacher", dropout=0.25)
    assert [m.p for m in teacher.modules() if isinstance(m, nn.Dropout)] == [0.2, 0.25, 0.25]


def test_unknown_model_name_error_lists_the_known_ones():
    with pytest.raises(ValueError, match="resnet50") as info:
        km.make_model("resnet50")
    for name in km.MODELS:
        assert name in str(info.value)


def test_layer_table_lists_each_layer_with_its_output_shape_and_sums_the_parameters():
    table = km.layer_table(km.cifar_small_cnn())
    lines = table.splitlines()
    assert all(len(line) <= 88 for line in lines)
    assert lines[1].startswith("Conv2d(3->32, 3x3) + BN + ReLU") and "32 x 32 x 32" in lines[1]
    assert lines[-1].split()[-1] == "437,034"
    rows = [int(line.split()[-1].replace(",", "")) for line in lines[1:-1]]
    assert sum(rows) == km.count_params(km.cifar_small_cnn())  # folded rows keep their parameters


def test_layer_table_restores_the_modes():
    model = km.hinton_teacher()
    model.train()
    km.layer_table(model, (1, 28, 28))
    assert all(m.training for m in model.modules())


def test_layer_table_of_a_vit_adds_up_and_counts_attention_as_one_layer():
    table = km.layer_table(km.vit_tiny_cifar())
    lines = table.splitlines()
    rows = [int(line.split()[-1].replace(",", "")) for line in lines[1:-1]]
    assert sum(rows) == km.count_params(km.vit_tiny_cifar()) == 1_806_538
    assert sum("MultiheadAttention" in line for line in lines) == 6
    assert lines[-2].startswith("parameters outside these layers")  # the class token and positions


def test_layer_table_needs_a_model_with_parameters():
    with pytest.raises(ValueError, match="model must have parameters"):
        km.layer_table(nn.ReLU(), (4,))
