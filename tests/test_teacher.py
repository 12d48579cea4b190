"""Training from a DataLoader: the same loop as in memory, and the teacher's logits in a memory-mapped file."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import kdlib as kd
from kdlib.data import Data, batch_indices
from toys import blobs as toy_blobs

blobs = partial(toy_blobs, n_train=96, n_test=40)  # this file's default size


def mlp(seed: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))


class SameOrder(torch.utils.data.Sampler):
    """The batches of kdlib's in-memory path: batch_indices with the fit's seed, a new permutation per epoch."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size, self.gen = n, batch_size, torch.Generator().manual_seed(seed)

    def __iter__(self):
        return (idx.tolist() for idx in batch_indices(self.n, self.batch_size, self.gen))

    def __len__(self):
        return -(-self.n // self.batch_size)


def loader(data: Data, cfg: kd.FitConfig, indexed: bool) -> DataLoader:
    dataset = TensorDataset(data.x_train, data.y_train)
    dataset = kd.Indexed(dataset) if indexed else dataset
    return DataLoader(dataset, batch_sampler=SameOrder(len(data.y_train), cfg.batch_size, cfg.seed))


@pytest.mark.parametrize("indexed", [False, True], ids=["teacher-per-batch", "logits-by-index"])
def test_fit_from_a_dataloader_trains_the_same_weights_as_from_tensors(tmp_path, monkeypatch, indexed):
    monkeypatch.setenv("KDLIB_CACHE", str(tmp_path))
    data, teacher = blobs(), mlp(seed=7)
    cfg = kd.FitConfig(epochs=3, batch_size=16, lr=0.05, T=3.0, alpha=0.7)
    a, b = mlp(), mlp()
    hist_a = kd.fit(a, data, cfg, teacher=teacher, progress=False)
    hist_b = kd.fit(b, loader(data, cfg, indexed), cfg, teacher=teacher, progress=False, test=data)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)
    assert hist_a.test_errors == hist_b.test_errors
    torch.testing.assert_close(hist_a.step_loss, hist_b.step_loss, rtol=1e-5, atol=1e-6)
    tables = list((tmp_path / "teacher-logits").glob("*.f32"))
    assert len(tables) == (1 if indexed else 0)  # only an indexed data set gives a table


def test_the_test_score_during_fit_builds_no_graph():
    data, model = blobs(), mlp()
    grad_on = []
    model.register_forward_hook(lambda m, a, out: grad_on.append(torch.is_grad_enabled()) if not m.training else None)
    kd.fit(model, data, kd.FitConfig(epochs=2), progress=False)
    assert grad_on and not any(grad_on)  # every forward pass in eval mode ran under no_grad


def test_evaluate_scores_a_dataloader_as_it_scores_tensors():
    data, model = blobs(), mlp()
    batches = DataLoader(TensorDataset(data.x_test, data.y_test), batch_size=7)
    a, b = kd.evaluate(model, data.x_test, data.y_test), kd.evaluate(model, batches)
    assert a.errors == b.errors and a.accuracy == b.accuracy
    assert a.loss == pytest.approx(b.loss, rel=1e-6)


def counted(net: nn.Module) -> list:
    """A list that grows by the batch's size at each forward pass of net (a hook: not part of net's content)."""
    calls = []
    net.register_forward_hook(lambda m, args, out: calls.extend([1] * len(args[0])))
    return calls


def test_logit_table_is_made_once_and_keyed_by_the_teacher_and_every_input(tmp_path, monkeypatch):
    monkeypatch.setenv("KDLIB_CACHE", str(tmp_path))
    data = blobs(n_train=300)
    teacher = mlp(seed=3)
    calls = counted(teacher)
    dataset = kd.Indexed(TensorDataset(data.x_train.clone(), data.y_train))
    table = kd.logit_table(teacher, dataset, batch_size=64)
    assert table.shape == (300, 3)
    torch.testing.assert_close(table, kd.frozen_forward(teacher, data.x_train))
    made = len(calls)
    again = kd.logit_table(teacher, dataset, batch_size=50)  # another batch size: the same inputs
    # read from the file: the teacher sees one input (how many logits it gives), not the data set
    assert len(calls) == made + 1 and torch.equal(again, table)
    files = sorted((tmp_path / "teacher-logits").glob("*.f32"))
    assert len(files) == 1 and files[0].stat().st_size == 300 * 3 * 4
    dataset.dataset.tensors[0][123, 4] += 1e-3  # one number of one input
    kd.logit_table(teacher, dataset)
    assert len(calls) > made and len(list((tmp_path / "teacher-logits").glob("*.f32"))) == 2
    with torch.no_grad():
        teacher[0].bias[0] += 1e-3  # one parameter of the teacher
    kd.logit_table(teacher, dataset)
    assert len(list((tmp_path / "teacher-logits").glob("*.f32"))) == 3


def test_fit_rejects_what_is_neither_data_nor_batches():
    with pytest.raises(TypeError, match="data must be a kdlib Data or an iterable"):
        kd.fit(mlp(), torch.zeros(4, 8), kd.FitConfig())


def test_a_cosine_schedule_needs_a_data_source_with_a_length():
    data = blobs()
    batches = iter([(data.x_train[:16], data.y_train[:16])])
    with pytest.raises(ValueError, match="schedule='cosine' needs the number of steps"):
        kd.fit(mlp(), batches, kd.FitConfig(schedule="cosine"), progress=False)


def test_labels_of_a_dataloader_are_checked_on_its_first_batch():
    data = blobs()
    y = data.y_train.clone()
    y[0] = 5
    with pytest.raises(ValueError, match=r"the labels of data's first batch must lie in \[0, 2\]"):
        kd.fit(mlp(), DataLoader(TensorDataset(data.x_train, y), batch_size=16), kd.FitConfig(epochs=1),
               progress=False)


# A data set larger than the memory the process may take beyond what torch itself holds: fit must stream it.
HEADROOM = 768 << 20       # bytes of data memory (RLIMIT_DATA) the child may add after its imports
IMAGES, SIDE = 12_000, 96  # 12,000 x 3 x 96 x 96 float32: 1.33 GB of inputs
STREAMED = textwrap.dedent(f"""
    import resource, sys, torch
    from torch import nn
    from torch.utils.data import DataLoader, Dataset
    import kdlib as kd

    def status(field):  # kB, from the kernel's account of this process
        return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(field + ":"))

    cap = status("VmData") * 1024 + {HEADROOM}
    resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))
    rss_at_start = status("VmRSS") * 1024

    class Made(Dataset):  # every image made from its index, never all in memory
        def __len__(self):
            return {IMAGES}

        def __getitem__(self, i):
            y = i % 10
            x = torch.randn(3, {SIDE}, {SIDE}, generator=torch.Generator().manual_seed(i)) + 0.05 * y
            return x, y

    if sys.argv[1] == "materialise":  # the check that the cap is real: the whole set does not fit
        torch.stack([Made()[i][0] for i in range({IMAGES})])
        raise SystemExit("materialised: the cap did not hold")

    def net(seed):
        torch.manual_seed(seed)
        return nn.Sequential(nn.AvgPool2d(8), nn.Flatten(), nn.Linear(3 * 12 * 12, 10))

    data = DataLoader(kd.Indexed(Made()), batch_size=256, shuffle=True, generator=torch.Generator().manual_seed(0))
    test = DataLoader(Made(), batch_size=512)
    hist = kd.fit(net(1), data, kd.FitConfig(epochs=1, lr=0.05, T=2.0), teacher=net(2), test=test, progress=False)
    peak = status("VmHWM") * 1024 - rss_at_start  # not ru_maxrss: exec keeps the parent's
    print(f"steps {{len(hist.step_loss)}} accuracy {{hist.test_acc:.3f}} peak {{peak}}")
""")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the memory account of Linux")
def test_fit_streams_a_data_set_larger_than_its_memory_cap(tmp_path):
    script = tmp_path / "streamed.py"
    script.write_text(STREAMED)
    env = dict(os.environ, KDLIB_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    assert IMAGES * 3 * SIDE * SIDE * 4 > HEADROOM
    full = subprocess.run([sys.executable, str(script), "materialise"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert full.returncode != 0 and ("MemoryError" in full.stderr or "can't allocate memory" in full.stderr), \
        full.stderr[-2000:]
    run = subprocess.run([sys.executable, str(script), "stream"], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    steps, peak = int(run.stdout.split()[1]), int(run.stdout.split()[-1])
    assert steps == -(-IMAGES // 256) and peak < HEADROOM
    assert len(list((tmp_path / "cache" / "teacher-logits").glob("*.f32"))) == 1


# ------------------------------------------------------------------ never a wrong table, never lost work
def test_two_writers_of_one_logit_table_each_fill_their_own_file_and_the_table_is_whole(tmp_path, monkeypatch):
    monkeypatch.setenv("KDLIB_CACHE", str(tmp_path))
    data, teacher = blobs(n_train=300), mlp(seed=3)
    dataset = kd.Indexed(TensorDataset(data.x_train, data.y_train))
    inner = []

    def second_writer(m, args, out):  # while the first pass writes, another fills the same table whole
        if len(args[0]) > 1 and not inner:
            inner.append(kd.logit_table(mlp(seed=3), dataset, batch_size=64))

    teacher.register_forward_hook(second_writer)
    outer = kd.logit_table(teacher, dataset, batch_size=64)
    expected = kd.frozen_forward(teacher, data.x_train)
    torch.testing.assert_close(inner[0], expected)
    torch.testing.assert_close(outer, expected)
    files = list((tmp_path / "teacher-logits").iterdir())
    assert [f.suffix for f in files] == [".f32"]  # one whole table, no temporary file left
    torch.testing.assert_close(torch.from_numpy(np.fromfile(files[0], dtype=np.float32)).view(300, 3), expected)


class Flipped(torch.utils.data.Dataset):
    """Inputs under a random transform: each read of item i may give another view."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return (self.x[i].flip(0) if torch.rand(()) < 0.5 else self.x[i]), self.y[i]


def test_a_logit_table_refuses_inputs_that_change_between_reads(tmp_path, monkeypatch):
    monkeypatch.setenv("KDLIB_CACHE", str(tmp_path))
    data = blobs(n_train=200)
    dataset = kd.Indexed(Flipped(data.x_train, data.y_train))
    with pytest.raises(ValueError, match=r"inputs of the data set differed between two reads.*augment=True"):
        kd.logit_table(mlp(seed=3), dataset)
    with pytest.raises(ValueError, match="differed between two reads"):
        kd.fit(mlp(), DataLoader(dataset, batch_size=32), kd.FitConfig(epochs=1), teacher=mlp(seed=3),
               progress=False, test=data)
    assert not list((tmp_path / "teacher-logits").iterdir())  # nothing left behind


def test_a_truncated_logit_table_is_made_again_not_read(tmp_path, monkeypatch):
    monkeypatch.setenv("KDLIB_CACHE", str(tmp_path))
    data, teacher = blobs(n_train=300), mlp(seed=3)
    dataset = kd.Indexed(TensorDataset(data.x_train, data.y_train))
    kd.logit_table(teacher, dataset)
    [path] = (tmp_path / "teacher-logits").glob("*.f32")
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 600)  # 600 bytes short: read as C = 2, every row shifted
    table = kd.logit_table(teacher, dataset)
    assert table.shape == (300, 3) and path.stat().st_size == 300 * 3 * 4
    torch.testing.assert_close(table, kd.frozen_forward(teacher, data.x_train))


FULL_DISK = textwrap.dedent("""
    import sys, warnings, torch
    from torch.utils.data import TensorDataset
    import kdlib as kd

    x, y = torch.randn(10_000, 8), torch.randint(0, 3, (10_000,))  # a table of 120,000 bytes
    teacher = torch.nn.Linear(8, 3)
    try:
        kd.logit_table(teacher, kd.Indexed(TensorDataset(x, y)))
    except OSError as e:
        print("OSError:", e)
""")


def test_a_full_disk_is_an_oserror_with_the_size_needed_and_leaves_no_temporary_file(tmp_path, small_disk):
    disk = small_disk(64 << 10)
    script = tmp_path / "full.py"
    script.write_text(FULL_DISK)
    # in a child: before the fix, the memory map's write to a page with no disk block killed it with SIGBUS
    run = subprocess.run([sys.executable, str(script)], env=dict(os.environ, KDLIB_CACHE=str(disk)),
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "OSError: [Errno 28] cannot write the cache file" in run.stdout
    assert "120,000 bytes needed" in run.stdout and "KDLIB_CACHE" in run.stdout
    assert not list((disk / "teacher-logits").iterdir())


def test_an_empty_indexed_data_set_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("KDLIB_CACHE", str(tmp_path))
    empty = kd.Indexed(TensorDataset(torch.zeros(0, 8), torch.zeros(0, dtype=torch.long)))
    with pytest.raises(ValueError, match="dataset is empty"):
        kd.logit_table(mlp(), empty)
    with pytest.raises(ValueError, match="data gives no batch to train on"):
        kd.fit(mlp(), DataLoader(empty, batch_size=8), kd.FitConfig(epochs=1), teacher=mlp(seed=3), progress=False)


def test_a_teacher_without_parameters_gives_its_logit_table(tmp_path, monkeypatch):
    monkeypatch.setenv("KDLIB_CACHE", str(tmp_path))

    class FirstThree(nn.Module):  # a fixed function: no parameters, no buffers
        def forward(self, x):
            return 2 * x[:, :3]

    data = blobs()
    loader = DataLoader(kd.Indexed(TensorDataset(data.x_train, data.y_train)), batch_size=16)
    table = kd.logit_table(FirstThree(), loader.dataset)
    torch.testing.assert_close(table, 2 * data.x_train[:, :3])
    hist = kd.fit(mlp(), loader, kd.FitConfig(epochs=1), teacher=FirstThree(), progress=False, test=data)
    assert len(hist.step_loss) == 6


def test_indexed_over_items_that_are_not_pairs_says_what_it_needs():
    class Dicts(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return {"image": torch.zeros(8), "label": 0}

    with pytest.raises(TypeError, match=r"Indexed needs a data set whose items are \(x, y, ...\) tuples, got a dict"):
        kd.Indexed(Dicts())[0]


READY = False


def ready_worker(worker_id: int) -> None:  # what a worker_init_fn does: set up each worker's state
    global READY
    READY = True


class NeedsWorkerInit(TensorDataset):
    def __getitem__(self, i):
        if torch.utils.data.get_worker_info() is not None and not READY:
            raise RuntimeError("the worker_init_fn was not called")
        return super().__getitem__(i)


def test_the_table_pass_keeps_the_loaders_worker_init_fn(tmp_path, monkeypatch):
    monkeypatch.setenv("KDLIB_CACHE", str(tmp_path))
    data = blobs()
    loader = DataLoader(kd.Indexed(NeedsWorkerInit(data.x_train, data.y_train)), batch_size=32, num_workers=1,
                        worker_init_fn=ready_worker, multiprocessing_context="fork")
    kd.fit(mlp(), loader, kd.FitConfig(epochs=1), teacher=mlp(seed=3), progress=False, test=data)
    assert len(list((tmp_path / "teacher-logits").glob("*.f32"))) == 1


# ------------------------------------------------------------------ the top k of each row, on disk
def linear_teacher(n: int, seed: int):
    """A teacher of 40 classes and n random inputs: (x (n, 8), teacher, kd.Indexed data set)."""
    torch.manual_seed(seed)
    x, y = torch.randn(n, 8), torch.randint(0, 40, (n,))
    return x, nn.Linear(8, 40), kd.Indexed(TensorDataset(x, y))


def test_a_top_k_table_on_disk_holds_each_rows_k_largest_logits_in_6_bytes_each(tmp_path, monkeypatch):
    monkeypatch.setenv("KDLIB_CACHE", str(tmp_path))
    x, teacher, dataset = linear_teacher(200, seed=0)
    full = kd.frozen_forward(teacher, x)
    table = kd.logit_table(teacher, dataset, batch_size=64, top_k=5)
    [path] = (tmp_path / "teacher-logits").glob("*-top5.bin")
    assert path.stat().st_size == 200 * 5 * (4 + 2) and table.nbytes == path.stat().st_size
    values, where = full.topk(5, dim=-1)  # independent: torch's top k of the full logits
    torch.testing.assert_close(table.values, values)
    assert torch.equal(table.indices.long(), where)
    dense = table[torch.tensor([3, 7])]  # reads as logits: the k in place, -inf elsewhere
    assert (dense.isfinite().sum(-1) == 5).all()
    torch.testing.assert_close(dense.gather(-1, where[[3, 7]]), values[[3, 7]])
    # the same key, another file: the full table is separate, and each is made once
    assert kd.logit_table(teacher, dataset, top_k=5).values.shape == (200, 5)
    assert kd.logit_table(teacher, dataset).shape == (200, 40)
    assert len(list((tmp_path / "teacher-logits").iterdir())) == 2
    with pytest.raises(ValueError, match="top_k must be None"):
        kd.logit_table(teacher, dataset, top_k=0)


def test_a_truncated_top_k_table_is_made_again_not_read(tmp_path, monkeypatch):
    monkeypatch.setenv("KDLIB_CACHE", str(tmp_path))
    data, teacher = blobs(n_train=300), mlp(seed=3)
    dataset = kd.Indexed(TensorDataset(data.x_train, data.y_train))
    kd.logit_table(teacher, dataset, top_k=2)
    [path] = (tmp_path / "teacher-logits").glob("*-top2.bin")
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 6)
    table = kd.logit_table(teacher, dataset, top_k=2)
    assert path.stat().st_size == 300 * 2 * 6
    torch.testing.assert_close(table.values, kd.frozen_forward(teacher, data.x_train).topk(2).values)


def test_fit_from_a_dataloader_with_a_top_k_of_every_class_trains_as_with_the_full_table(tmp_path, monkeypatch):
    monkeypatch.setenv("KDLIB_CACHE", str(tmp_path))
    data, teacher = blobs(), mlp(seed=3)
    dataset = kd.Indexed(TensorDataset(data.x_train, data.y_train))
    runs = []
    for top_k in (None, 3, 1):
        student = mlp(seed=4)
        loader = DataLoader(dataset, batch_sampler=SameOrder(96, 32, seed=0))
        cfg = kd.FitConfig(epochs=2, lr=0.05, T=2.0, alpha=0.5, top_k=top_k)
        runs.append((student, kd.fit(student, loader, cfg, teacher=teacher, test=data, progress=False)))
    (full, hf), (every, he), (one, h1) = runs
    for a, b in zip(full.parameters(), every.parameters()):
        torch.testing.assert_close(a, b)
    assert hf.step_loss == pytest.approx(he.step_loss) and hf.step_loss != pytest.approx(h1.step_loss)
    kinds = sorted(p.name.split("-")[-1] if "-top" in p.name else "full"
                   for p in (tmp_path / "teacher-logits").iterdir())
    assert kinds == ["full", "top1.bin", "top3.bin"]


def test_a_top_k_table_with_a_spread_tail_on_disk_equals_the_one_in_memory(tmp_path, monkeypatch):
    monkeypatch.setenv("KDLIB_CACHE", str(tmp_path))
    x, teacher, dataset = linear_teacher(70, seed=1)
    table = kd.logit_table(teacher, dataset, batch_size=32, top_k=5, tail="spread", T=2.0)
    [path] = (tmp_path / "teacher-logits").glob("*-top5-spread-T2.bin")
    assert path.stat().st_size == table.nbytes == 70 * (5 * 6 + 4)
    memory = kd.TopKLogits.from_logits(kd.frozen_forward(teacher, x), 5, tail="spread", T=2.0)
    torch.testing.assert_close(table[torch.arange(70)], memory[torch.arange(70)])
    at_1 = kd.logit_table(teacher, dataset, top_k=5, tail="spread")  # another T, another file
    assert not torch.allclose(at_1.rest, table.rest) and len(list(path.parent.iterdir())) == 2
