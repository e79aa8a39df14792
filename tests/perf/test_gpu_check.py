"""launch/gpu_check.py and tvts.perf.gpucheck: the --dry rehearsal of the GPU check runs every section on the CPU and
writes the report; a failing section is recorded and the others run; the budget stops a section that overruns.

The rehearsal runs as the launcher does, in its own process: it hides the GPUs and makes Triton interpret,
which must happen before torch and triton start. The failure and budget tests run in this process with
sections replaced by stand-ins (and the real data section after the failing one)."""
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tvts.perf import gpucheck
from tvts.perf.gpucheck import CheckOptions, run_check
from tvts.perf.gpucheck.core import run_isolated
from tvts.perf import bench_kernels as bench

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "launch" / "gpu_check.py"
PNG = b"\x89PNG\r\n\x1a\n"
pytestmark = pytest.mark.skipif(torch.cuda.is_available(),
                                reason="the CPU rehearsal hides the GPUs; on a GPU run the check itself")


@pytest.fixture(scope="module")
def dry(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry", "--out", str(out)], capture_output=True, text=True,
                          timeout=240, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return proc, out, json.loads((out / "report.json").read_text()), time.perf_counter() - start


def test_dry_run_reports_every_section_ok(dry):
    proc, out, report, seconds = dry
    assert proc.returncode == 0, proc.stderr[-2000:]
    sections = report["sections"]
    assert list(sections) == list(gpucheck.SECTIONS)
    assert {name: r["status"] for name, r in sections.items()} == {name: "ok" for name in gpucheck.SECTIONS}
    # each section stayed inside its share; the budget is split by shares of what is left
    for r in sections.values():
        assert 0 < r["seconds"] <= r["allowance_s"] + 1.0
    assert sections["environment"]["allowance_s"] == pytest.approx(0.03 * (480 - 10), rel=0.02)
    assert sections["environment"]["isolated"] and not sections["training_steps"]["isolated"]
    assert report["seconds"] < seconds < 120
    # the markdown is written, and printed last
    md = (out / "report.md").read_text()
    assert md.startswith("# GPU check") and proc.stdout.rstrip().endswith("steps.png")
    assert all(f"## {s.title}" in md for s in gpucheck.SECTIONS.values()) and "| environment | ok |" in md
    assert all((out / png).read_bytes()[:8] == PNG for png in ("kernels.png", "steps.png"))


def test_dry_run_environment_and_kernels(dry):
    sections = dry[2]["sections"]
    env = sections["environment"]
    assert env["result"]["versions"]["torch"] == torch.__version__ and env["result"]["versions"]["triton_interpret"] == "1"
    assert env["parts"]["gpu"] == {"status": "skipped", "reason": "no CUDA"}
    imports = {r["module"]: r["imports"] for r in env["result"]["imports"]}
    assert imports["av"] and imports["deepspeed"] and not imports["flash_attn"]
    # exactness: shapes from the configs (v1 joint, v2 spatial/temporal/CLS, the sorter), shrunk, head dims kept
    exact = sections["kernel_exactness"]["result"]
    ran = [r for r in exact["rows"] if "skipped" not in r]
    assert {r["backend"] for r in ran} == {"triton", "sdpa"} and {r["dtype"] for r in ran} == {"bf16", "fp16"}
    assert {r["D"] for r in ran} == {64, 80} and any(r["padded"] for r in ran)
    assert {(r["Lq"], r["Lk"]) for r in ran} >= {(12, 13), (24, 25), (1, 40), (4, 40)}
    assert all(r["passed"] and 0 < r["rel_err"] <= r["tol"] for r in ran) and exact["passed"] == len(ran) == 40
    speed = sections["kernel_speed"]["result"]
    timed = {(r["shape"], r["backend"]): r for r in speed["rows"] if "skipped" not in r}
    tiny = bench.TINY[0]
    assert timed[(tiny, "triton")]["fwd_bwd_ms"] > timed[(tiny, "sdpa")]["fwd_bwd_ms"] > 0  # interpreted: slow
    assert [(a["rule"], a["fastest"]) for a in speed["auto"]] == [("sdpa", "sdpa")] * 2  # CPU: auto is sdpa
    assert "v2 L/14 spatial" in speed["missing_from_bench"]


def test_dry_run_steps_data_and_reference(dry):
    sections = dry[2]["sections"]
    rows = sections["training_steps"]["result"]["rows"]
    assert [(r["model"], r["strategy"]) for r in rows] == [("v1 B/16", "single"), ("v2 B/16", "fsdp")]
    for r in rows:
        assert r["clips_per_s"] > 0 and 0 < r["mfu_pct"] and r["peak_gib"] > 0 and r["predicted_gib"] > 0
        assert r["precision"] == "bf16" and r["step_ms"] >= r["forward_ms"] > 0 and 0 < r["loss"] < 100
    data = sections["data"]["result"]
    assert data["loader"]["clips_per_s"] > 0 and 0 < data["step"]["data_wait_fraction"] < 1
    if sections["data"]["parts"]["dali"]["status"] == "ok":
        assert data["dali"]["frames_per_s"] > 0 and data["dali"]["codec"] == "vp9"
    else:
        assert "DALI is not installed" in sections["data"]["parts"]["dali"]["reason"]
    ref = sections["reference"]["result"]
    assert {r["setup"]: r["precision"] for r in ref["rows"]} == {"engine": "bf16", "official": "fp32"}
    assert ref["speedups"][0]["speedup"] == pytest.approx(ref["rows"][0]["clips_per_s"] / ref["rows"][1]["clips_per_s"])


def _replace(monkeypatch, name, run):
    """A stand-in for section ``name`` that runs in this process (the kernel sections would start a process of
    their own, with the real sections, when this one already imported triton compiled)."""
    stand_in = dataclasses.replace(gpucheck.SECTIONS[name], run=run, interpreted=False, isolated=False)
    monkeypatch.setitem(gpucheck.SECTIONS, name, stand_in)


def test_a_failing_section_is_recorded_and_the_next_runs(monkeypatch, tmp_path):
    def boom(ctx):
        ctx.put("before", 1.5)
        raise RuntimeError("kernel exploded\n  at line 2")

    _replace(monkeypatch, "kernel_exactness", boom)
    report = run_check(CheckOptions(dry=True, sections=("kernel_exactness", "data")), tmp_path, log=lambda line: None)
    failed, data = report["sections"]["kernel_exactness"], report["sections"]["data"]
    assert (failed["status"], failed["reason"], failed["result"]) == ("failed", "RuntimeError: kernel exploded at line 2",
                                                                     {"before": 1.5})
    assert data["status"] == "ok" and data["result"]["loader"]["frames_per_s"] > 0
    assert json.loads((tmp_path / "report.json").read_text())["sections"]["kernel_exactness"]["status"] == "failed"
    assert "| kernel_exactness | failed |" in (tmp_path / "report.md").read_text()


def test_the_budget_stops_a_section_that_overruns(monkeypatch, tmp_path):
    def sleeps(ctx):  # never returns to the check: the alarm interrupts it
        ctx.put("measured", 7)
        time.sleep(60)

    def loops(ctx):  # checks its deadline between sub-steps
        while True:
            ctx.check("the next shape")
            time.sleep(0.01)

    _replace(monkeypatch, "kernel_speed", sleeps)
    _replace(monkeypatch, "training_steps", loops)
    _replace(monkeypatch, "reference", lambda ctx: ctx.put("ran", True))
    start = time.perf_counter()
    report = run_check(CheckOptions(dry=True, budget_s=2.0, sections=("kernel_speed", "training_steps", "reference")),
                       tmp_path, log=lambda line: None)
    assert time.perf_counter() - start < 3.5
    speed, steps, ref = (report["sections"][n] for n in ("kernel_speed", "training_steps", "reference"))
    assert (speed["status"], speed["result"]) == ("timeout", {"measured": 7})
    assert (steps["status"], steps["reason"]) == ("timeout", "deadline passed before the next shape")
    assert ref["status"] == "ok" and ref["result"] == {"ran": True}
    # shares of what is left: 0.20 / (0.20 + 0.33 + 0.15) of 2 s less the 5 % reserve
    assert speed["allowance_s"] == pytest.approx(1.9 * 0.20 / 0.68, rel=0.02)
    assert speed["seconds"] == pytest.approx(speed["allowance_s"], abs=0.3)


def test_an_isolated_section_past_its_budget_is_killed(tmp_path):
    # a child process that does not stop by itself (here: still importing torch) is killed at its budget
    start = time.perf_counter()
    record = run_isolated(gpucheck.SECTIONS["environment"], CheckOptions(dry=True, work_dir=str(tmp_path)),
                          kill_at=time.time() + 1.0)
    assert time.perf_counter() - start < 2.0
    assert record["status"] == "timeout"
    assert record["reason"] == "killed at the end of its budget, 0.2 s after its own deadline"


def test_launcher_refuses_bad_input(capsys):
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    launcher = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launcher)
    assert launcher.SECTION_NAMES == list(gpucheck.SECTIONS)
    from tvts.errors import cli

    assert cli(launcher.main, ["--budget-s", "0"]) == 2
    assert cli(launcher.main, ["--out", "/nonexistent/never"]) == 2  # no CUDA and no --dry
    err = capsys.readouterr().err.splitlines()
    assert err == ["error: --budget-s 0: expected a positive number of seconds",
                   f"error: no CUDA device in this torch ({torch.__version__}); pass --dry for the CPU rehearsal"]
