"""kdlib.checks.check_distillation_setup: each mistake is reported, a good setup is left in peace."""
import copy
import warnings

import pytest
import torch
from torch import nn

from kdlib.checks import DistillationSetupWarning, check_distillation_setup

C = 5


def mlp(width: int, classes: int = C) -> nn.Sequential:
    return nn.Sequential(nn.Linear(8, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Dropout(0.5),
                         nn.Linear(width, classes))


def good_setup():
    """A teacher frozen and in eval mode, a student in training mode, the same classes."""
    torch.manual_seed(0)
    teacher = mlp(32).eval().requires_grad_(False)
    student = mlp(4)
    return student, teacher


def example() -> torch.Tensor:
    return torch.randn(6, 8, generator=torch.Generator().manual_seed(1))


def messages(student, teacher, **kw):
    """The messages, checking that they were also issued as DistillationSetupWarnings, one each."""
    with pytest.warns(DistillationSetupWarning) as record:
        found = check_distillation_setup(student, teacher, **kw)
    assert [str(w.message) for w in record] == found
    return found


def only(student, teacher, **kw) -> str:
    found = messages(student, teacher, **kw)
    assert len(found) == 1, found
    return found[0]


def snapshot(model: nn.Module):
    return ({name: m.training for name, m in model.named_modules()},
            {k: v.clone() for k, v in model.state_dict().items()},
            {name: p.requires_grad for name, p in model.named_parameters()})


def assert_same(before, after):
    assert before[0] == after[0] and before[2] == after[2]
    assert before[1].keys() == after[1].keys()
    for k in before[1]:
        torch.testing.assert_close(after[1][k], before[1][k], rtol=0, atol=0)


# ------------------------------------------------------------------ a good setup
def test_good_setup_returns_nothing_and_warns_nothing():
    student, teacher = good_setup()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_distillation_setup(student, teacher, T=4, alpha=0.9, example=example()) == []
        assert check_distillation_setup(student, teacher) == []


@pytest.mark.parametrize("alpha", [0, 0.1, 0.5, 1.0])
def test_every_alpha_in_0_1_is_accepted_silently(alpha):
    student, teacher = good_setup()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_distillation_setup(student, teacher, T=1.0, alpha=alpha) == []


# ------------------------------------------------------------------ each problem, alone
def test_teacher_in_training_mode_is_reported_with_its_noisy_layers():
    student, teacher = good_setup()
    msg = only(student, teacher.train())
    assert "training mode" in msg and "teacher.eval()" in msg
    assert "'1'" in msg and "'3'" in msg  # the batch norm and the dropout layers, by name


def test_a_single_dropout_layer_left_in_training_mode_is_reported():
    student, teacher = good_setup()
    teacher[3].train()  # teacher.training is False, its dropout is not
    assert not teacher.training
    msg = only(student, teacher)
    assert "'3'" in msg and "teacher.eval()" in msg


def test_teacher_training_flag_is_reported_even_without_dropout_or_batch_norm():
    student, teacher = good_setup()
    plain = nn.Linear(8, C).requires_grad_(False)  # in training mode by default
    msg = only(student, plain)
    assert "teacher.training is True" in msg


def test_teacher_parameters_that_require_grad_are_reported():
    student, teacher = good_setup()
    teacher[4].requires_grad_(True)  # 2 of the 6 parameter tensors (the last layer's weight and bias)
    msg = only(student, teacher)
    assert msg.startswith("2 of the teacher's 6 parameter tensors require grad")
    assert "torch.no_grad()" in msg and "teacher.requires_grad_(False)" in msg


@pytest.mark.parametrize("T", [0.5, 0.99])
def test_temperature_below_one_is_reported_as_sharpening(T):
    student, teacher = good_setup()
    msg = only(student, teacher, T=T)
    assert f"T={T}" in msg and "sharpens" in msg


def test_temperature_of_exactly_one_is_not_reported():
    student, teacher = good_setup()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_distillation_setup(student, teacher, T=1) == []


def test_student_that_is_the_teacher_object_is_reported():
    _, teacher = good_setup()
    found = messages(teacher, teacher)
    assert found == [m for m in found if "same object" in m]  # not also reported as sharing tensors
    assert len(found) == 1


def test_student_sharing_a_layer_with_the_teacher_is_reported():
    _, teacher = good_setup()
    student = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 32), teacher[1], nn.Linear(32, C))
    msg = only(student, teacher)
    # the batch norm's weight and bias, and its three buffers (running mean, var, count)
    assert "shares 5 parameter or buffer tensor(s)" in msg and "'3.weight'" in msg
    assert "copy.deepcopy" in msg


def test_student_sharing_memory_through_a_new_parameter_is_reported():
    student, teacher = good_setup()
    student[4].weight = nn.Parameter(teacher[4].weight.data[:, :4])  # same memory, another Parameter
    assert "shares 1 parameter or buffer tensor(s)" in only(student, teacher)


def test_student_parameter_viewing_the_teacher_at_an_offset_is_reported():
    student, teacher = good_setup()
    student[0].weight = nn.Parameter(teacher[0].weight.data[3:7])  # a view 3 rows in: another address
    assert "shares 1 parameter or buffer tensor(s)" in only(student, teacher)
    before = teacher[0].weight.detach().clone()
    student(example()).sum().backward()
    torch.optim.SGD(student.parameters(), lr=0.1).step()
    assert not torch.equal(teacher[0].weight, before)  # what the message warns of: the teacher changed


def test_a_model_on_another_device_than_the_example_is_reported_not_run():
    student, teacher = good_setup()
    teacher.to("meta")  # stands in for a GPU: a model whose weights are elsewhere cannot run on example
    msg = only(student, teacher, example=example())
    assert "The teacher's weights are on meta but example is on cpu" in msg and "teacher.to(device)" in msg


def test_a_deep_copy_shares_nothing():
    _, teacher = good_setup()
    student = copy.deepcopy(teacher).train().requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_distillation_setup(student, teacher, example=example()) == []


def test_different_numbers_of_classes_are_reported():
    _, teacher = good_setup()
    student = mlp(4, classes=C + 1)
    msg = only(student, teacher, example=example())
    assert f"student gives {C + 1} logits but the teacher gives {C}" in msg


def test_outputs_that_are_not_2d_are_reported():
    student, teacher = good_setup()
    student = nn.Sequential(student, nn.Unflatten(1, (1, C)))  # (B, 1, C): same classes, wrong shape
    msg = only(student, teacher, example=example())
    assert f"The student returns shape (6, 1, {C}), not logits of shape (B, C)" in msg


def test_one_dimensional_outputs_are_reported_but_not_compared_as_classes():
    student, teacher = good_setup()
    student = nn.Sequential(student, nn.Flatten(0))  # (B * C,): its last dimension is not the classes
    msg = only(student, teacher, example=example())
    assert f"The student returns shape ({6 * C},), not logits of shape (B, C)" in msg


def test_several_problems_are_all_reported_in_order():
    _, teacher = good_setup()
    teacher.train().requires_grad_(True)
    found = messages(mlp(4, classes=3), teacher, T=0.5, example=example())
    assert [m.split()[0:2] for m in found] == [["The", "teacher"], ["6", "of"], ["T=0.5", "is"],
                                               ["The", "student"]]


# ------------------------------------------------------------------ the check changes nothing
def test_check_restores_every_module_mode_and_changes_no_parameter():
    student, teacher = good_setup()
    teacher[1].train()  # mixed modes: teacher.train(was_training) alone would not restore them
    before = snapshot(student), snapshot(teacher)
    grad_mode = torch.is_grad_enabled()
    check_distillation_setup(student, teacher, T=4, alpha=0.9, example=example(), warn=False)
    assert_same(before[0], snapshot(student))
    assert_same(before[1], snapshot(teacher))
    assert torch.is_grad_enabled() == grad_mode


def test_modes_are_restored_even_when_a_forward_pass_fails():
    student, teacher = good_setup()
    before = snapshot(student)
    with pytest.raises(RuntimeError):
        check_distillation_setup(student, teacher, example=torch.randn(6, 7))  # 7 features, not 8
    assert_same(before, snapshot(student))


def test_warn_false_returns_the_messages_without_warning():
    student, teacher = good_setup()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        found = check_distillation_setup(student, teacher.train(), T=0.5, warn=False)
    assert len(found) == 2


def test_warnings_point_at_the_caller():
    student, teacher = good_setup()
    with pytest.warns(DistillationSetupWarning) as record:
        check_distillation_setup(student, teacher, T=0.5)
    assert record[0].filename == __file__


# ------------------------------------------------------------------ bad arguments raise
@pytest.mark.parametrize("T", [0, -1.0, float("nan")])
def test_temperature_not_above_zero_raises_value_error_naming_T(T):
    student, teacher = good_setup()
    with pytest.raises(ValueError, match="T must be"):
        check_distillation_setup(student, teacher, T=T)


@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_alpha_outside_0_1_raises_value_error_naming_alpha(alpha):
    student, teacher = good_setup()
    with pytest.raises(ValueError, match="alpha must be"):
        check_distillation_setup(student, teacher, alpha=alpha)


def test_bad_arguments_raise_before_any_warning():
    student, teacher = good_setup()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="T must be"):
            check_distillation_setup(student, teacher.train(), T=0)


@pytest.mark.parametrize("arg", ["student", "teacher"])
def test_a_model_that_is_not_a_module_raises_type_error_naming_it(arg):
    student, teacher = good_setup()
    models = {"student": student, "teacher": teacher, arg: lambda x: x}
    with pytest.raises(TypeError, match=f"{arg} must be a torch.nn.Module"):
        check_distillation_setup(**models)


def test_an_example_that_is_not_a_tensor_raises_type_error():
    student, teacher = good_setup()
    with pytest.raises(TypeError, match="example must be a torch.Tensor"):
        check_distillation_setup(student, teacher, example=[[0.0] * 8])
