"""One distillation run for tests/test_distributed.py: under torchrun (several processes) or plain python (one).

    python distributed_run.py OUT            a Data in memory, through kd.train_or_load
    python distributed_run.py OUT loader     a DataLoader over kd.Indexed with a DistributedSampler
    python distributed_run.py OUT plain-test the same, scored on a plain test DataLoader (no sampler)
    python distributed_run.py OUT batchnorm  a Data in memory, a student with batch norm
    python distributed_run.py OUT sequences  byte windows (N, 8) in memory, small language models

Writes OUT/weights.pt (rank 0 only, as a user's script would), OUT/seen-<rank>.json: the indices
of the samples this process trained on, in order, and OUT/run-<rank>.json: the test errors fit
reported and the warnings it gave. Each sample's first feature is its index, read by
a forward pre-hook on the student.
"""
import json
import os
import sys
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import kdlib as kd

N, D, EPOCHS, BATCH = 99, 8, 2, 16  # 99 = 6 x 16 + 3: a last batch that two processes split 2 + 1


def blobs() -> kd.Data:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (N + 30,), generator=g)
    x = 2 * torch.randn(3, D, generator=g)[y] + torch.randn(N + 30, D, generator=g)
    x[:N, 0] = torch.arange(N, dtype=torch.float32)  # each training sample says which it is
    return kd.Data("blobs", x[:N], y[:N], x[N:], y[N:], ["a", "b", "c"], "distributed_run.py")


def byte_windows() -> kd.Data:
    """N windows of 8 bytes of a fixed text, and 30 more to score on."""
    text = b"".join(b"def f%d(x):\n    return x * %d\n" % (i, i * i) for i in range(60))
    x, y = kd.text.to_sequences(text, 8, n=N + 30, seed=0)
    return kd.Data("bytes", x[:N], y[:N], x[N:], y[N:], [str(b) for b in range(256)], "distributed_run.py")


def byte_model(seed: int, dim: int) -> nn.Module:
    torch.manual_seed(seed)
    return kd.models.byte_transformer(dim=dim, depth=1, heads=2, context=8)


def mlp(seed: int, batch_norm: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(D, 16), nn.BatchNorm1d(16) if batch_norm else nn.Identity(), nn.ReLU(),
                         nn.Linear(16, 3))


def main(out: Path, source: str) -> None:
    if "RANK" in os.environ:  # started by torchrun
        dist.init_process_group("gloo")
    if source == "sequences":
        data, teacher = byte_windows(), byte_model(seed=7, dim=16)
    else:
        data, teacher = blobs(), mlp(seed=7)
        with torch.no_grad():
            teacher[0].weight[:, 0] = 0  # the index feature means nothing to the teacher
    cfg = kd.FitConfig(epochs=EPOCHS, batch_size=BATCH, lr=0.05, T=3.0, alpha=0.7, seed=3)
    seen = []  # the indices of the samples trained on, in order

    def make() -> nn.Module:
        if source == "sequences":  # no index feature to record: only the weights are compared
            return byte_model(seed=1, dim=8)
        student = mlp(seed=1, batch_norm=source == "batchnorm")
        student.register_forward_pre_hook(lambda m, args: seen.extend(args[0][:, 0].long().tolist())
                                          if m.training else None)
        return student

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if source in ("loader", "plain-test"):
            dataset = kd.Indexed(TensorDataset(data.x_train, data.y_train))
            sampler = DistributedSampler(dataset, seed=0, drop_last=True) if dist.is_initialized() else None
            batches = DataLoader(dataset, batch_size=BATCH // kd.distributed.world_size(), sampler=sampler,
                                 shuffle=sampler is None)
            test = data if source == "loader" else DataLoader(TensorDataset(data.x_test, data.y_test), batch_size=7)
            student = make()
            hist = kd.fit(student, batches, cfg, teacher=teacher, test=test, progress=False)
        else:
            student, hist = kd.train_or_load(make, data, cfg, teacher=teacher, name="student")
    rank = kd.distributed.rank()
    (out / f"seen-{rank}.json").write_text(json.dumps(seen))
    (out / f"run-{rank}.json").write_text(json.dumps({"test_errors": hist.test_errors,
                                                       "warnings": [str(w.message) for w in caught]}))
    if kd.distributed.is_main():
        torch.save(student.state_dict(), out / "weights.pt")
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "data")
