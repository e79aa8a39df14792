"""Multi-node on localhost: two torchrun "nodes" of one process each, as on two machines sharing a run
directory. They train with FSDP (deferred initialisation), only rank 0 logs, and a second launch of both
nodes resumes from the checkpoint both wrote."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from test_trainer import PRETRAIN, ROOT, TINY, _env, _steps, shards  # noqa: F401  (shards: fixture)
from tvts.testing import free_port


def _launch_nodes(shards, run_dir, *extra) -> list[subprocess.CompletedProcess]:
    """``torchrun --nnodes 2 --nproc_per_node 1 --node_rank {0,1} --rdzv-endpoint localhost:PORT``."""
    port = free_port()
    procs = []
    for node in (0, 1):
        args = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                "--node_rank", str(node), "--rdzv-endpoint", f"localhost:{port}", PRETRAIN, *TINY,
                f"data.train=[{shards}]", f"train.run_dir={run_dir}", "train.strategy=fsdp", *extra]
        procs.append(subprocess.Popen(args, env=_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        out.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
    return out


@pytest.mark.slow
def test_two_nodes_train_and_resume(shards, tmp_path):  # noqa: F811
    first = _launch_nodes(shards, tmp_path, "train.steps=3", "train.ckpt_every=2")
    for node, res in enumerate(first):
        assert res.returncode == 0, f"node {node}: {res.stderr[-3000:]}"
    head, other = first
    assert "(2 rank(s) on 2 node(s), fsdp)" in head.stdout
    assert "run directory" not in other.stdout and "loss" not in other.stdout  # rank 0 logs, alone
    assert set(_steps(tmp_path)) == {1, 2, 3}
    # every rank wrote its shard of the states into the shared run directory
    assert (tmp_path / "checkpoints" / "step_00000003" / "dcp" / "__1_0.distcp").is_file()

    second = _launch_nodes(shards, tmp_path, "train.steps=5", "train.ckpt_every=2")
    for node, res in enumerate(second):
        assert res.returncode == 0, f"node {node}: {res.stderr[-3000:]}"
    assert "resumed from" in second[0].stdout and "step_00000003" in second[0].stdout
    steps = _steps(tmp_path)
    assert set(steps) == {1, 2, 3, 4, 5}
    # the trainer's memory figures, measured per rank (max over ranks) beside the prediction
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    for key in ("params", "grads", "optim"):
        measured, predicted = record[f"mem/{key}_gib"], record[f"mem/pred_{key}_gib"]
        assert measured == pytest.approx(predicted, rel=0.15), key
    assert record["mem/activations_gib"] > 0 and record["mem/peak_rss_gib"] > record["mem/params_gib"]
