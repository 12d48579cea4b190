"""What the teacher sees of an augmented batch (FitConfig.teacher_view) and function matching
(FitConfig.mixup): the teacher's input is checked against the student's, batch by batch."""
import pytest
import torch
from torch import nn

import kdlib as kd


def images(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    return kd.Data("imgs", x, y, x[:8], y[:8], ["a", "b"], "made up")


def net():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 2))


@pytest.fixture(autouse=True)
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KDLIB_CACHE", str(tmp_path))


def inputs_seen(cfg, data):
    """(the student's inputs, the teacher's inputs) of every training batch, in order."""
    student, teacher = net(), net()
    seen = {"student": [], "teacher": []}

    def record(who):
        def hook(m, i, o):  # training passes (not fit's 2-example checks, nor the test passes)
            if len(i[0]) > 2 and (who == "teacher" or m.training):
                seen[who].append(i[0].clone())
        return hook

    student.register_forward_hook(record("student"))
    teacher.register_forward_hook(record("teacher"))
    kd.fit(student, data, cfg, teacher=teacher, progress=False)
    return seen["student"], seen["teacher"]


def is_a_view_of(view, images):
    """Every image of view is a crop + flip of one of images (the same index in the batch)."""
    for v, x in zip(view, images):
        padded = nn.functional.pad(x, (4, 4, 4, 4))
        found = any(torch.equal(v, cand) for dy in range(9) for dx in range(9)
                    for cand in (padded[:, dy:dy + 8, dx:dx + 8], padded[:, dy:dy + 8, dx:dx + 8].flip(-1)))
        if not found:
            return False
    return True


def test_a_consistent_teacher_sees_the_students_augmented_view():
    s, t = inputs_seen(kd.FitConfig(epochs=1, batch_size=16, augment=True), images())
    assert len(s) == len(t) == 4 and all(torch.equal(a, b) for a, b in zip(s, t))


def test_an_independent_teacher_sees_its_own_view_of_the_same_images():
    data = images()
    cfg = kd.FitConfig(epochs=1, batch_size=64, augment=True, teacher_view="independent")
    (s,), (t,) = inputs_seen(cfg, data)
    assert not torch.equal(s, t)
    # one batch of all 64 images: both views are crops and flips of the same (shuffled) images
    order = next(kd.batch_indices(64, 64, torch.Generator().manual_seed(cfg.seed)))
    assert is_a_view_of(s, data.x_train[order]) and is_a_view_of(t, data.x_train[order])


def test_a_fixed_teacher_is_read_from_its_table_on_the_images_as_they_are():
    data = images()
    cfg = kd.FitConfig(epochs=2, batch_size=16, augment=True, teacher_view="fixed")
    s, t = inputs_seen(cfg, data)
    assert len(s) == 8 and len(t) == 1 and torch.equal(t[0], data.x_train)  # one pass: the table


def test_function_matching_mixes_each_image_with_another_for_both_models():
    data = images()
    cfg = kd.FitConfig(epochs=1, batch_size=64, alpha=1.0, mixup=True)
    (s,), (t,) = inputs_seen(cfg, data)
    assert torch.equal(s, t)
    order = next(kd.batch_indices(64, 64, torch.Generator().manual_seed(cfg.seed)))
    assert not torch.equal(s, data.x_train[order])  # mixed, not the images themselves


def test_mix_images_weighs_each_image_with_a_partner_by_a_weight_in_0_1():
    x = torch.arange(6.0).view(6, 1)
    g = torch.Generator().manual_seed(3)
    mixed = kd.mix_images(x, g)
    g = torch.Generator().manual_seed(3)
    perm, lam = torch.randperm(6, generator=g), torch.rand(6, generator=g)
    torch.testing.assert_close(mixed[:, 0], lam * x[:, 0] + (1 - lam) * x[perm, 0])
    with pytest.raises(ValueError, match="x must have shape"):
        kd.mix_images(torch.ones(3))


def test_teacher_views_and_mixup_refuse_settings_that_mean_nothing():
    with pytest.raises(ValueError, match="teacher_view must be one of"):
        kd.FitConfig(augment=True, teacher_view="other")
    with pytest.raises(ValueError, match="needs augment=True"):
        kd.FitConfig(teacher_view="independent")
    with pytest.raises(ValueError, match="function matching"):
        kd.FitConfig(mixup=True, alpha=0.9)
    with pytest.raises(ValueError, match="function matching"):
        kd.FitConfig(mixup=True, alpha=1.0, augment=True, teacher_view="fixed")
    with pytest.raises(TypeError, match="mixup must be True or False"):
        kd.FitConfig(mixup=1, alpha=1.0)


def test_the_teachers_own_draws_leave_the_batches_and_the_students_crops_alone():
    data = images()
    same = kd.FitConfig(epochs=2, batch_size=16, augment=True)
    s_same, _ = inputs_seen(same, data)
    s_own, t_own = inputs_seen(kd.FitConfig(epochs=2, batch_size=16, augment=True,
                                            teacher_view="independent"), data)
    assert all(torch.equal(a, b) for a, b in zip(s_same, s_own))  # every batch, both epochs
    assert not any(torch.equal(a, b) for a, b in zip(s_own, t_own))


def test_mixup_needs_a_teacher_and_cannot_train_models_together():
    data = images()
    cfg = kd.FitConfig(epochs=1, alpha=1.0, mixup=True)
    with pytest.raises(ValueError, match="mixup=True needs a teacher"):
        kd.fit(net(), data, cfg, progress=False)
    with pytest.raises(ValueError, match="mixup=True draw new images"):
        kd.fit([net(), net()], data, [cfg, cfg], teacher=net(), progress=False)
