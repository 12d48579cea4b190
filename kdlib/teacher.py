"""The teacher's side: its logits, computed without gradient, once where the inputs do not change.

    frozen_forward(teacher, x)        logits (N, C) in eval mode, in large batches
    teacher_logits(teacher, x)        the same, remembered in memory (data that fits on the device)
    Indexed(dataset)                  a data set whose items carry their index: (x, y, i)
    logit_table(teacher, dataset)     logits of a whole Indexed data set, computed once and kept in a
                                      memory-mapped file in the cache (data that does not fit)

The teacher's logits do not change while a student learns from fixed inputs, so kdlib.fit reads each
batch's rows from such a table. With augmentation every batch is a new image, and the teacher runs
on every batch.
"""
from __future__ import annotations

import hashlib
import math
import os
import weakref
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset, default_collate

from . import distributed
from .cache import cache_dir, discard, reserve, temporary_name
from .keys import fingerprint, module_content
from .losses import check_temperature
from .models import device_of, eval_mode
from .precision import autocast, resolve_precision

__all__ = ["frozen_forward", "teacher_logits", "TopKLogits", "Indexed", "logit_table"]


@torch.no_grad()
def frozen_forward(teacher: nn.Module, x: Tensor, batch_size: int = 1024,
                   precision: str = "auto") -> Tensor:
    """The teacher's logits (N, C) for x (N, ...), in eval mode, without gradient, in large batches.

    The products run in `precision` (see resolve_precision); the logits come back as float32.
    """
    with eval_mode(teacher), autocast(x.device, precision):
        return torch.cat([teacher(x[i: i + batch_size]).float() for i in range(0, len(x), batch_size)])


_LOGIT_CACHE: Dict[tuple, tuple] = {}  # key -> (weak reference to the teacher, logits), oldest use first
LOGIT_CACHE_BYTES = 512 * 2**20  # the logits remembered, at most (the last entry is kept whatever its size)


def teacher_logits(teacher: nn.Module, x: Tensor, batch_size: int = 1024, precision: str = "auto") -> Tensor:
    """frozen_forward(teacher, x, precision=...), remembered: the same teacher, unchanged, on the same
    images, in the same precision, skips the pass.

    The key is content, not identity: fingerprint(module_content(teacher)), every byte of every
    parameter and buffer, every setting of each submodule (see kdlib.keys) and the code of its
    classes that are not torch's own (a changed forward is a miss), and every byte of x with its
    dtype, shape and device. So any change is a miss, however it is made (an optimiser step,
    ``p.data.mul_``, ``p.data = t``, vector_to_parameters, a new nn.Parameter, batch-norm statistics,
    teacher.opts["act"] = ..., x.data, the numpy array under torch.from_numpy), and an equal copy of
    x is a hit. A hit also needs the same teacher object (a weak reference). Not in the key: hooks
    and torch's own code.
    Cost: one pass over the bytes, 0.1 s for 60,000 Fashion-MNIST images (188 MB) on a 2-core CPU;
    kdlib.fit pays it once per call, never per step. Returns a copy: changing it leaves the cache intact.
    What is remembered is bounded by size, not by count: the least recently used logits go first once
    all of them pass LOGIT_CACHE_BYTES, and those of a teacher that no longer exists at once. So a
    teacher used between the passes of many students (chapter 10's analysis) is not passed again.
    """
    precision = resolve_precision(x.device, precision)
    key = (id(teacher), fingerprint([module_content(teacher), x, str(x.device), precision]))
    hit = _LOGIT_CACHE.pop(key, None)
    if hit is None or hit[0]() is not teacher:
        hit = (weakref.ref(teacher), frozen_forward(teacher, x, batch_size, precision))
    _LOGIT_CACHE[key] = hit  # the most recently used: last
    for old in [k for k, (ref, _) in _LOGIT_CACHE.items() if ref() is None]:
        del _LOGIT_CACHE[old]
    while len(_LOGIT_CACHE) > 1 and sum(v.nbytes for _, v in _LOGIT_CACHE.values()) > LOGIT_CACHE_BYTES:
        del _LOGIT_CACHE[next(iter(_LOGIT_CACHE))]
    return hit[1].clone()



class TopKLogits:
    """The teacher's k largest logits at each position, kept instead of all C of them.

    values (N, ..., k) float32 and indices (N, ..., k) int16 (int32 when C > 32,767): 6k bytes per
    position against 4C for the full table, 10.7x fewer at k = 16 of C = 256. It reads like the full
    table: table[idx] gives (B, ..., C) logits, the k kept values in their places. What the other
    C - k classes read, the tail:

    tail="drop": -inf, so that softmax(v / T) spreads the teacher's mass over its k classes only,
        p_c = exp(v_c / T) / sum_{j in top k} exp(v_j / T) for c in the top k, 0 elsewhere.
        The kept teacher is sharper than the real one, and the forward KL pushes every other class
        down (its gradient there is T·q_c, the student's own probability, since p_c = 0): a student
        learns to give ~0 to what the teacher ranks below k, and pays for it wherever such a class
        happens. KL(q || p) is infinite there: FitConfig refuses reverse KL with a dropped tail.
    tail="spread": one more float32 per position, rest (N, ...), the tail's mean logit at the
        distillation temperature T in the log-sum-exp sense,

            u = T log( sum_{c not in top k} exp(v_c / T) / (C - k) ),

        read in every other place: at that T the kept classes keep their probabilities and the
        tail its total mass exactly, spread evenly over its classes, and no class has
        probability 0. 6k + 4 bytes. (At another temperature both hold only approximately: the
        rest is made for one T.)
    """

    TAILS = ("drop", "spread")

    def __init__(self, values: Tensor, indices: Tensor, num_classes: int, rest: Optional[Tensor] = None):
        if values.shape != indices.shape or indices.is_floating_point():
            raise ValueError(f"values and indices must have one shape, indices integers; got {tuple(values.shape)} "
                             f"{values.dtype} and {tuple(indices.shape)} {indices.dtype}")
        if rest is not None and rest.shape != values.shape[:-1]:
            raise ValueError(f"rest must have one value per position, shape {tuple(values.shape[:-1])}, got "
                             f"{tuple(rest.shape)}")
        self.values, self.indices, self.num_classes, self.rest = values, indices, num_classes, rest

    @classmethod
    def from_logits(cls, logits: Tensor, k: int, tail: str = "drop", T: float = 1.0) -> "TopKLogits":
        """The k largest of logits (N, ..., C) at each position, and with tail="spread" the tail's
        mean logit at temperature T (see the class); k = C keeps them all."""
        C = logits.shape[-1]
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= C:
            raise ValueError(f"k must be an integer in [1, {C}] (the number of classes), got {k!r}")
        check_tail(tail)
        T = check_temperature(T)
        logits = logits.float()
        values, indices = logits.topk(k, dim=-1)
        rest = None
        if tail == "spread":  # T (logsumexp of the tail's v / T, less log(C - k))
            outside = logits.scatter(-1, indices, float("-inf")) / T
            rest = (T * (outside.logsumexp(-1) - math.log(C - k))
                    if k < C else logits.new_full(values.shape[:-1], float("-inf")))
        return cls(values, indices.to(torch.int16 if C <= 32_767 else torch.int32), C, rest)

    @staticmethod
    def index_bytes(num_classes: int) -> int:
        """Bytes per kept index: 2 (int16) up to 32,767 classes, 4 (int32) above."""
        return 2 if num_classes <= 32_767 else 4

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, idx) -> Tensor:
        values, indices = self.values[idx], self.indices[idx]
        shape = (*values.shape[:-1], self.num_classes)
        dense = (values.new_full(shape, float("-inf")) if self.rest is None
                 else self.rest[idx][..., None].to(values.dtype).expand(shape).clone())
        return dense.scatter_(-1, indices.long(), values)

    @property
    def nbytes(self) -> int:
        """The table's size in bytes: values, indices and the tail's logits."""
        return sum(t.numel() * t.element_size() for t in (self.values, self.indices, self.rest) if t is not None)


def check_tail(tail: str) -> str:
    if tail not in TopKLogits.TAILS:
        raise ValueError(f"tail must be one of {TopKLogits.TAILS} (what a top-k table reads outside its k), "
                         f"got {tail!r}")
    return tail


# ------------------------------------------------------------------ data that does not fit
class Indexed(Dataset):
    """A map-style data set whose item i is (x, y, i): dataset[i]'s input and label, and its index.

    Wrap a data set in it and kdlib.fit reads each batch's teacher logits by index from a table made
    once (logit_table), instead of running the teacher on every batch. Only for inputs that are the
    same every epoch: with random transforms, the teacher must see each new version (do not wrap;
    logit_table refuses inputs that change between reads).
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        item = self.dataset[i]
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise TypeError(f"Indexed needs a data set whose items are (x, y, ...) tuples, got a "
                            f"{type(item).__name__} at index {i}: wrap it so that each item is (input, label)")
        return item[0], item[1], i


def _my_share(dataset: Indexed, loading: Dict[str, object]) -> DataLoader:
    """This process's strided share of the data set (items rank, rank + W, ...), in order, in batches.

    loading: the DataLoader's batch_size, num_workers, collate_fn and worker_init_fn.
    """
    share = Subset(dataset, range(distributed.rank(), len(dataset), distributed.world_size()))
    return DataLoader(share, **loading)


def _row_digests(x: Tensor) -> Tensor:
    """(B, 5) int32: the SHA-1 of each sample's input bytes in x (B, ...), with its dtype and shape."""
    head = f"{x.dtype} {tuple(x.shape[1:])}".encode()
    rows = x.detach().cpu().contiguous().reshape(len(x), -1).view(torch.uint8).numpy()
    return torch.stack([torch.from_numpy(np.frombuffer(hashlib.sha1(head + row.tobytes()).digest(), np.int32).copy())
                        for row in rows])


def input_digests(dataset: Indexed, batch_size: int = 1024, num_workers: int = 0,
                  collate_fn: Optional[Callable] = None, worker_init_fn: Optional[Callable] = None) -> Tensor:
    """(N, 5) int32: the SHA-1 of every sample's input bytes (with its dtype and shape), at its index.

    The content key of a data set seen in any order, one pass over it. On several processes each
    hashes its share and the rows are summed over the ranks (each row is one rank's, zeros elsewhere).
    """
    loading = dict(batch_size=batch_size, num_workers=num_workers, collate_fn=collate_fn,
                   worker_init_fn=worker_init_fn)
    digests = torch.zeros(len(dataset), 5, dtype=torch.int32)
    for x, _, idx in _my_share(dataset, loading):
        digests[idx] = _row_digests(x)
    return distributed.all_sum(digests)


def logit_table(teacher: nn.Module, dataset: Indexed, batch_size: int = 1024, num_workers: int = 0,
                collate_fn: Optional[Callable] = None, precision: str = "auto",
                worker_init_fn: Optional[Callable] = None,
                top_k: Optional[int] = None, tail: str = "drop", T: float = 1.0) -> Union[Tensor, TopKLogits]:
    """The teacher's logits (N, C) for every sample of dataset, read from a memory-mapped file; (N, L, C)
    for a language model's L positions (any (N, ...) the teacher gives per sample).

    The file, in the cache's folder teacher-logits/, is named by the content of everything that
    decides it: fingerprint(module_content(teacher)), the precision, and input_digests(dataset). So
    the first call makes it with one pass of the teacher (each process its share, all writing into
    the same file), and any later call with the same teacher and inputs reads it after one hashing
    pass over the data. Rows are read from disk as they are indexed: N x C floats never need to fit
    in memory (ImageNet's 1.28M x 1,000 would be 5.1 GB).

    top_k: keep only the k largest logits of each row, a TopKLogits read from one file of
    6·N·k bytes (values float32, then indices int16, int32 past 32,767 classes; 6·N·L·k for
    sequences), named {key}-top{k}.bin: the same key, a table 4C / 6k times smaller (10.7x at
    k = 16 of C = 256). tail="spread" adds the tail's logit at temperature T, 4 more bytes per
    row (TopKLogits), in a file named for T.

    Never a wrong row: a file whose size is not 4·N·C bytes (4·N·L·C) for this teacher is made again; the
    pass that makes it hashes every input again and refuses (ValueError) when an input differs from
    the first read (a random transform in the data set); each writer fills its own temporary file
    and renames it whole; a full disk is an OSError before the pass, with the bytes needed.
    """
    if len(dataset) == 0:
        raise ValueError("dataset is empty: the teacher's logit table needs at least one sample")
    device = device_of(teacher)
    precision = resolve_precision(device, precision)
    loading = dict(batch_size=batch_size, num_workers=num_workers, collate_fn=collate_fn,
                   worker_init_fn=worker_init_fn)
    digests = input_digests(dataset, **loading)
    key = fingerprint([module_content(teacher), precision, str(device), digests])
    shape = (len(dataset), *_row_shape(teacher, dataset, collate_fn, precision, device))
    C = shape[-1]
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be None (every logit) or an integer >= 1, got {top_k!r}")
        top_k = min(top_k, C)  # k >= C keeps every logit, in the top-k layout
    check_tail(tail)
    T = check_temperature(T)
    suffix = ".f32" if top_k is None else f"-top{top_k}{f'-spread-T{T:g}' if tail == 'spread' else ''}.bin"
    path = cache_dir() / "teacher-logits" / f"{key}{suffix}"
    # a whole table has exactly its size in bytes: a truncated or foreign file is made again
    whole = path.exists() and path.stat().st_size == _table_bytes(shape, top_k, tail)
    # every process must take the same branch: the file counts as there only if all of them see it whole
    if int(distributed.all_sum(torch.tensor([int(whole)]))) < distributed.world_size():
        _write_table(teacher, dataset, path, digests, loading, shape, precision, device, top_k, tail, T)
    # copy-on-write: the tensors are writable (no warning), but nothing written to them reaches the file
    parts = [None if a is None else torch.from_numpy(a) for a in _table_arrays(path, shape, top_k, tail, "c")]
    return parts[0] if top_k is None else TopKLogits(parts[0], parts[1], C, parts[2])


def _table_bytes(shape: Tuple[int, ...], top_k: Optional[int], tail: str) -> int:
    """The size of a table file: 4 bytes per logit; or per position 4 + index bytes per kept logit,
    and 4 for the tail's logit when tail == "spread"."""
    if top_k is None:
        return 4 * math.prod(shape)
    positions = math.prod(shape[:-1])
    return positions * (top_k * (4 + TopKLogits.index_bytes(shape[-1])) + (4 if tail == "spread" else 0))


def _table_arrays(path: Path, shape: Tuple[int, ...], top_k: Optional[int], tail: str,
                  mode: str) -> Tuple[np.memmap, Optional[np.memmap], Optional[np.memmap]]:
    """The memory-mapped parts of a table file, one after the other in it: the logits (shape); or
    the top k's values (..., k) float32, their indices (..., k) and the tail's logits (...) float32."""
    if top_k is None:
        return np.memmap(path, dtype=np.float32, mode=mode, shape=shape), None, None
    kept = (*shape[:-1], top_k)
    int_type = np.int16 if TopKLogits.index_bytes(shape[-1]) == 2 else np.int32
    values = np.memmap(path, dtype=np.float32, mode=mode, shape=kept)
    indices = np.memmap(path, dtype=int_type, mode=mode, shape=kept, offset=values.nbytes)
    rest = None if tail != "spread" else np.memmap(path, dtype=np.float32, mode=mode, shape=shape[:-1],
                                                   offset=values.nbytes + indices.nbytes)
    return values, indices, rest


def _row_shape(teacher: nn.Module, dataset: Indexed, collate_fn: Optional[Callable], precision: str,
               device: torch.device) -> Tuple[int, ...]:
    """The shape of the teacher's logits for one sample, (C,) or (L, C): one forward pass of the data
    set's first input."""
    x = (collate_fn or default_collate)([dataset[0]])[0]
    return tuple(frozen_forward(teacher, x[:1].to(device), precision=precision).shape[1:])


def _write_table(teacher: nn.Module, dataset: Indexed, path: Path, digests: Tensor, loading: Dict[str, object],
                 shape: Tuple[int, ...], precision: str, device: torch.device, top_k: Optional[int] = None,
                 tail: str = "drop", T: float = 1.0) -> None:
    """Fill path with the teacher's logits (N, C) or (N, L, C), each process writing its share's rows;
    with top_k, the parts of a TopKLogits (_table_arrays).

    The processes of this run share one temporary file of their own (another run filling the same
    table at the same time has another); it is renamed to path when every share is written.
    """
    tmp = temporary_name(path, distributed.shared_token())
    try:
        made = True
        if distributed.is_main():
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                reserve(tmp, _table_bytes(shape, top_k, tail))  # the file at its full size, every block on disk
            except OSError as e:
                made, error = False, e
        if int(distributed.all_sum(torch.tensor([int(made)]))) < distributed.world_size():
            raise error if distributed.is_main() else OSError(f"rank 0 could not make {tmp}")
        parts = _table_arrays(tmp, shape, top_k, tail, "r+")
        changed = 0
        for x, _, idx in _my_share(dataset, loading):
            changed += int((_row_digests(x) != digests[idx]).any(1).sum())
            logits = frozen_forward(teacher, x.to(device), len(x), precision).float()
            if top_k is None:
                rows = [logits]
            else:
                best = TopKLogits.from_logits(logits, top_k, tail, T)
                rows = [best.values, best.indices, best.rest]
            for part, row in zip(parts, rows):
                if part is not None:
                    part[idx.numpy()] = row.cpu().numpy()
        for part in parts:
            if part is not None:
                part.flush()
        del parts
        changed = int(distributed.all_sum(torch.tensor([changed])))
        if changed:
            raise ValueError(f"{changed} of {shape[0]} inputs of the data set differed between two reads (a "
                             f"random transform?): a table of teacher logits would pair them with other views "
                             f"than the student sees. Do not wrap such a data set in kd.Indexed (the teacher "
                             f"then runs on every batch), or move the augmentation to FitConfig(augment=True)")
        distributed.barrier()  # every share written
        if distributed.is_main():
            os.replace(tmp, path)  # atomic: a half-written table never has the final name
    finally:
        if distributed.is_main():
            discard(tmp)  # a failed pass leaves nothing behind
    distributed.barrier()
