"""launch/bench_kernels.py (tables in tvts.perf.bench_kernels): lists every shape of issue 5 and runs on CPU,
writing JSON and markdown."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from tvts.perf.bench_kernels import KERNEL_SHAPES, bench_divided, bench_sort

SCRIPT = Path(__file__).resolve().parents[2] / "launch" / "bench_kernels.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_kernels", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_issue_shape_is_listed():
    listed = {(lq, lk, d) for _, _, _, lq, lk, d in KERNEL_SHAPES}
    # v1 B/16 joint; v2 B/16 spatial 99/197 keys and temporal 12-13 (and 16 frames); v2 H/14 913 tokens at
    # head dim 80 and its spatial groups (77, 257 keys); the sorter: 4 queries and the full sequence of ~917
    issue = {(393, 393, 64), (98, 99, 64), (196, 197, 64), (12, 13, 64), (16, 17, 64), (913, 913, 80),
             (76, 77, 80), (256, 257, 80), (12, 13, 80), (4, 917, 64), (917, 917, 64)}
    assert issue <= listed


def test_runs_on_cpu_and_writes_json_and_markdown(bench, tmp_path):
    out, md = tmp_path / "bench.json", tmp_path / "bench.md"
    threads = torch.get_num_threads()
    try:  # one thread, as the documented runs use: on a busy 2-core machine two threads stall each other
        bench.main(["--device", "cpu", "--only", "kernels", "--shapes", "H/14 temporal", "--backends", "einsum",
                    "sdpa", "--reps", "1", "--threads", "1", "--out", str(out), "--md", str(md)])
    finally:
        torch.set_num_threads(threads)
    result = json.loads(out.read_text())
    rows = [r for r in result["rows"] if "skipped" not in r]
    assert {r["backend"] for r in rows} == {"einsum", "sdpa"} and {"date", "commit", "device"} <= set(result)
    assert all(r["fwd_ms"] > 0 and r["saved_mib"] > 0 for r in rows)
    assert "| v2 H/14 temporal | sdpa |" in md.read_text()


def test_sort_and_divided_tables_on_tiny_shapes():
    cpu = torch.device("cpu")
    sort = bench_sort(cpu, torch.float32, reps=1, cpu_batch_div=1, shapes=[("tiny", 2, 32, 2, 20)])
    by_path = {r["path"]: r for r in sort}
    assert set(by_path) == {"full", "readout, official input", "readout", "input: sums + cat", "input: fused"}
    # the readout computes the last block on K of the 24 rows: fewer FLOPs, same for both of its inputs
    assert by_path["readout"]["gflops_per_clip"] == by_path["readout, official input"]["gflops_per_clip"]
    assert 0 < by_path["readout"]["gflops_per_clip"] < by_path["full"]["gflops_per_clip"]
    assert all(r["fwd_ms"] > 0 and r["fwd_bwd_ms"] > 0 and r["tokens"] == 24 for r in sort)
    divided = bench_divided(cpu, torch.float32, ["math", "sdpa"], reps=1, cpu_batch_div=1,
                            shapes=[("tiny", 2, 32, 2, 3, 5)])
    assert {(r["over"], r["backend"]) for r in divided} == {(o, b) for o in ("time", "space") for b in ("math", "sdpa")}
    assert all(r["tokens"] == 16 and r["fwd_ms"] > 0 for r in divided)
