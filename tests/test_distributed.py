"""kdlib.fit under torchrun: two processes (gloo, CPU) train what one process trains, each sample once an epoch.

Each run starts tests/distributed_run.py through kd.distributed.launch (torchrun --nproc_per_node=2,
or plain python for one process), in a fresh cache; see that script for what it writes.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import List

import numpy as np
import pytest
import torch

import kdlib as kd

SCRIPT = Path(__file__).with_name("distributed_run.py")
N, EPOCHS = 99, 2  # as in distributed_run.py

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="needs torch.distributed with the gloo backend")


def run(out: Path, processes: int, source: str = "data") -> str:
    """Run the script on `processes` processes (1: plain python) in a fresh cache; return its output."""
    out.mkdir(parents=True)
    env = {"KDLIB_CACHE": str(out / "cache"), "TQDM_DISABLE": "1"}
    return kd.distributed.launch(SCRIPT, processes, [out, source], env=env, timeout=300)


def test_launch_reports_a_failed_run_with_its_stderr(tmp_path):
    script = tmp_path / "fails.py"
    script.write_text("import sys; print('to stderr', file=sys.stderr); sys.exit(3)")
    with pytest.raises(RuntimeError, match="exited with 3:\\nto stderr"):
        kd.distributed.launch(script)
    with pytest.raises(ValueError, match="processes must be an integer >= 1"):
        kd.distributed.launch(script, processes=0)


def epochs(out: Path, rank: int) -> List[List[int]]:
    seen = json.loads((out / f"seen-{rank}.json").read_text())
    per = len(seen) // EPOCHS
    assert per * EPOCHS == len(seen)
    return [seen[k * per: (k + 1) * per] for k in range(EPOCHS)]


def test_two_processes_train_the_weights_of_one_with_the_same_global_batch(tmp_path):
    one = run(tmp_path / "one", 1)
    two = run(tmp_path / "two", 2)
    a = torch.load(tmp_path / "one" / "weights.pt", weights_only=True)
    b = torch.load(tmp_path / "two" / "weights.pt", weights_only=True)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-5)
    # each epoch: the two shards are disjoint and together every sample, once
    for k in range(EPOCHS):
        r0, r1 = epochs(tmp_path / "two", 0)[k], epochs(tmp_path / "two", 1)[k]
        assert not set(r0) & set(r1) and sorted(r0 + r1) == list(range(N))
        assert sorted(epochs(tmp_path / "one", 0)[k]) == list(range(N))
    # only rank 0 printed and wrote the checkpoint
    assert one.count("student: trained") == 1 and two.count("student: trained") == 1
    assert len(list((tmp_path / "two" / "cache" / "checkpoints").glob("*.pt"))) == 1
    assert not list((tmp_path / "two" / "cache" / "checkpoints").glob("*.tmp"))


def test_two_processes_distil_a_language_model_as_one_does(tmp_path):
    run(tmp_path / "one", 1, source="sequences")
    run(tmp_path / "two", 2, source="sequences")
    a = torch.load(tmp_path / "one" / "weights.pt", weights_only=True)
    b = torch.load(tmp_path / "two" / "weights.pt", weights_only=True)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-5)
    assert json.loads((tmp_path / "two" / "run-0.json").read_text())["test_errors"] == \
        json.loads((tmp_path / "one" / "run-0.json").read_text())["test_errors"]


def test_two_processes_from_a_dataloader_share_one_table_of_teacher_logits(tmp_path):
    run(tmp_path / "two", 2, source="loader")
    tables = list((tmp_path / "two" / "cache" / "teacher-logits").glob("*.f32"))
    assert len(tables) == 1
    # each process wrote its share of the rows: together, the teacher's logits for every sample
    spec = importlib.util.spec_from_file_location("distributed_run", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    teacher = script.mlp(seed=7)
    with torch.no_grad():
        teacher[0].weight[:, 0] = 0
    table = torch.from_numpy(np.fromfile(tables[0], dtype=np.float32)).view(N, 3)
    torch.testing.assert_close(table, kd.frozen_forward(teacher, script.blobs().x_train))
    # a DistributedSampler with drop_last: 2 x 49 distinct samples an epoch
    for k in range(EPOCHS):
        r0, r1 = epochs(tmp_path / "two", 0)[k], epochs(tmp_path / "two", 1)[k]
        assert len(r0) == len(r1) == N // 2 and not set(r0) & set(r1) and set(r0 + r1) <= set(range(N))
    assert epochs(tmp_path / "two", 0)[0] != epochs(tmp_path / "two", 0)[1]  # set_epoch: a new order


def test_a_plain_test_loader_is_scored_once_on_two_processes_not_once_per_process(tmp_path):
    run(tmp_path / "two", 2, source="plain-test")
    spec = importlib.util.spec_from_file_location("distributed_run", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    student = script.mlp(seed=1)
    student.load_state_dict(torch.load(tmp_path / "two" / "weights.pt", weights_only=True))
    data = script.blobs()
    true_errors = kd.evaluate(student, data.x_test, data.y_test).errors
    for rank in (0, 1):
        assert json.loads((tmp_path / "two" / f"run-{rank}.json").read_text())["test_errors"] == true_errors


def test_two_processes_warn_that_batch_norm_normalises_over_each_share(tmp_path):
    run(tmp_path / "two", 2, source="batchnorm")
    run(tmp_path / "one", 1, source="batchnorm")
    said = json.loads((tmp_path / "two" / "run-0.json").read_text())["warnings"]
    assert any("BatchNorm layers: on 2 processes each normalises over its own share" in w and
               "SyncBatchNorm" in w for w in said), said
    assert not json.loads((tmp_path / "one" / "run-0.json").read_text())["warnings"]  # one process: no warning
