"""Several processes, one run: what kdlib.fit needs from torch.distributed, and nothing when it is not in use.

Under ``torchrun --nproc_per_node=N script.py`` (or any launcher that initialises the default process
group before kdlib.fit is called), fit trains one model on N processes with DistributedDataParallel:

    rank r of world W   takes rows r, r + W, r + 2W, ... of every global batch (strided, so the N
                        shards of a batch are exactly that batch: the same samples as one process)
    gradients           DDP averages them over the ranks; each rank's loss is weighted by its share
                        of the global batch, len(shard) * W / len(batch), so the step is the
                        single-process step on the same global batch, up to float rounding
    metrics             summed over the ranks once per epoch (no extra communication per step)
    output              only rank 0 prints, shows progress and writes checkpoints
    test set            a Data's test set and a DataLoader with a DistributedSampler are split
                        between the ranks and their counts summed; any other test loader is scored
                        whole on every rank (the same numbers, counted once)

One difference remains: batch norm. Each rank normalises over its own share of the batch, so a
model with BatchNorm layers does not train what one process trains (wrap warns). On GPUs,
nn.SyncBatchNorm.convert_sync_batchnorm(model) before fit normalises over the global batch;
torch has no SyncBatchNorm for CPU tensors.

Without an initialised process group every function here is the single-process identity: rank 0 of 1.
"""
from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["active", "rank", "world_size", "is_main", "shard", "all_sum", "gather_rows", "barrier", "wrap",
           "shared_token", "launch"]


def active() -> bool:
    """True inside an initialised process group with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """True on the process that prints, shows progress and writes files (rank 0)."""
    return rank() == 0


def shard(batch: Tensor) -> Tensor:
    """This rank's part of a global batch (B, ...): rows rank, rank + W, rank + 2W, ..."""
    return batch[rank()::world_size()]


def all_sum(t: Tensor) -> Tensor:
    """t summed over the ranks (a new tensor; t itself on one process)."""
    if not active():
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def gather_rows(rows: Tensor, n: int) -> Tensor:
    """The (n, ...) tensor whose rows r, r + W, ... are rank r's `rows` (its shard(range(n)) rows).

    Each rank computes its strided share of a table (e.g. the teacher's logits), and every rank gets
    the whole table back.
    """
    if not active():
        return rows
    W = world_size()
    per = -(-n // W)  # all_gather needs equal sizes: pad every share to ceil(n / W) rows
    padded = rows.new_zeros((per, *rows.shape[1:]))
    padded[: len(rows)] = rows
    parts = [torch.empty_like(padded) for _ in range(W)]
    dist.all_gather(parts, padded)
    out = rows.new_empty((n, *rows.shape[1:]))
    for r, part in enumerate(parts):
        out[r::W] = part[: len(range(r, n, W))]
    return out


def barrier() -> None:
    if active():
        dist.barrier()


def shared_token() -> str:
    """A random hex token, the same on every rank (rank 0's): the name of a file the ranks write together."""
    return f"{int(all_sum(torch.tensor([secrets.randbits(62) if is_main() else 0]))):016x}"


def wrap(model: nn.Module) -> nn.Module:
    """model inside DistributedDataParallel when several processes train it; model itself otherwise.

    DDP broadcasts rank 0's weights when it wraps the model, so every rank starts from the same ones,
    and averages the gradients over the ranks during backward().
    """
    if not active():
        return model
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) and not isinstance(m, nn.SyncBatchNorm)
           for m in model.modules()):
        warnings.warn(f"the model has BatchNorm layers: on {world_size()} processes each normalises over its "
                      f"own share of the batch, so they do not train what one process trains; on GPUs, "
                      f"nn.SyncBatchNorm.convert_sync_batchnorm(model) before fit normalises over the "
                      f"global batch", stacklevel=3)
    device = next(model.parameters()).device
    ids = [device] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def launch(script: Union[str, Path], processes: int = 1, args: Sequence[object] = (),
           env: Optional[Mapping[str, str]] = None, timeout: float = 1200) -> str:
    """Run a Python script on `processes` processes of this machine and return what it printed.

    One process: ``python script args``. Several: ``python -m torch.distributed.run
    --nproc_per_node=N`` (torchrun) on 127.0.0.1 and a free port. Each process gets
    OMP_NUM_THREADS = cores // processes, so one process and N use the same cores. env adds to
    this process's environment. A failed run raises RuntimeError with the end of its stderr.
    """
    if not (isinstance(processes, int) and processes >= 1):
        raise ValueError(f"processes must be an integer >= 1, got {processes!r}")
    threads = max(1, (os.cpu_count() or 1) // processes)
    run_env = dict(os.environ, OMP_NUM_THREADS=str(threads), **(env or {}))
    command = [sys.executable]
    if processes > 1:
        with socket.socket() as s:  # a free port for the processes to meet on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        command += ["-m", "torch.distributed.run", f"--nproc_per_node={processes}", "--master_addr=127.0.0.1",
                    f"--master_port={port}"]
    done = subprocess.run(command + [str(script), *map(str, args)], env=run_env, capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{script} on {processes} process(es) exited with {done.returncode}:\n"
                           f"{done.stderr[-3000:]}")
    return done.stdout
