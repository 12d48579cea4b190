"""kdlib.transfer: transfer sets without classes, validation splits, confusion matrices, the bias fix."""
import pytest
import torch

import kdlib as kd
from kdlib import transfer as tr


def digits(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    x = torch.randn(n, 1, 4, 4, generator=g) + y.view(-1, 1, 1, 1)
    return kd.Data("toy", x, y, x[:50], y[:50], [str(c) for c in range(10)], "made up")


def test_without_classes_removes_every_training_example_of_them_and_keeps_the_test_set():
    data = digits()
    ts = tr.without_classes(data, [3])
    assert 3 not in ts.y_train.tolist() and len(ts.y_train) == 180
    assert torch.equal(ts.y_test, data.y_test) and "without class 3 (20 images removed)" in ts.source
    assert set(tr.without_classes(data, [7, 8]).y_train.tolist()) == set(range(10)) - {7, 8}


def test_without_classes_rejects_bad_classes():
    with pytest.raises(ValueError, match=r"class indices in \[0, 9\]"):
        tr.without_classes(digits(), [10])
    with pytest.raises(ValueError, match="non-empty"):
        tr.without_classes(digits(), [])
    with pytest.raises(ValueError, match="every training image"):
        tr.without_classes(digits(), range(10))


def test_split_validation_holds_out_disjoint_balanced_images():
    data = digits()
    rest, val = tr.split_validation(data, 50)
    assert len(rest.y_train) == 150 and len(val.y_train) == 50
    assert torch.bincount(val.y_train).tolist() == [5] * 10
    rows = {tuple(r.flatten().tolist()) for r in rest.x_train}
    assert not any(tuple(r.flatten().tolist()) in rows for r in val.x_train)  # no image on both sides
    with pytest.raises(ValueError, match="n_val"):
        tr.split_validation(data, 200)


def test_confusion_counts_true_against_predicted():
    logits = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [0, 5.0, 0], [0, 0, 5.0]])
    M = tr.confusion(logits, torch.tensor([0, 1, 2, 2]))
    assert M.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]


def test_add_bias_shifts_one_logit_only():
    logits = torch.zeros(2, 3)
    out = tr.add_bias(logits, 1, 2.5)
    assert out[:, 1].tolist() == [2.5, 2.5] and out[:, [0, 2]].abs().sum() == 0 and logits.abs().sum() == 0
    with pytest.raises(ValueError, match=r"cls must be in \[0, 2\]"):
        tr.add_bias(logits, 3, 1.0)


def test_best_bias_is_chosen_on_the_validation_labels_given():
    # class 2 is under-predicted: a bias of 2 makes every example right; 0 and 10 leave two wrong
    logits = torch.tensor([[3.0, 0, 0], [0, 3.0, 0], [3.0, 0, 2.0], [0, 3.0, 2.0]])
    labels = torch.tensor([0, 1, 2, 2])
    assert tr.best_bias(logits, labels, 2, [0.0, 2.0, 10.0]) == 2.0
    # other labels, other choice (a tie, so the smaller bias): it sees only the labels it is given
    assert tr.best_bias(logits, torch.tensor([0, 1, 0, 2]), 2, [0.0, 2.0, 10.0]) == 0.0


def test_best_bias_raises_without_an_example_of_the_class():
    with pytest.raises(ValueError, match="no example of class 2"):
        tr.best_bias(torch.zeros(2, 3), torch.tensor([0, 1]), 2, [0.0, 1.0])
    with pytest.raises(ValueError, match="at least one candidate"):
        tr.best_bias(torch.zeros(2, 3), torch.tensor([0, 2]), 2, [])
