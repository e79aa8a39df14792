"""launch/profile.py and tvts.perf.profiler, whole runs and their report: the report schema, the speed-up
over the official way, the markdown and the PNG, a CPU sweep through the launcher, its config errors and
its projection. Nothing here asserts a speed."""
import copy
import json
import os
import subprocess
import sys

import pytest
import torch

from tvts.perf import profiler
from tvts.engine.distributed import DistInfo

from profiler_helpers import ROOT, TINY, tiny


def test_profile_reference_report_and_schema(tmp_path):
    cfg = tiny()
    setups = [profiler.engine_setup(cfg), profiler.official_setup(cfg, torch.device("cpu"))]
    assert setups[1].attention == "math" and setups[1].strategy == "ddp" and not setups[1].checkpointing
    report = profiler.profile(cfg, DistInfo(), setups, ["synthetic"], steps=2, warmup=1, config_path="tiny",
                              peak=(1e11, "test peak"))
    profiler.validate_report(report)
    json.loads(json.dumps(report))  # JSON-ready
    assert [r["setup"] for r in report["runs"]] == ["engine", "official"]
    for row in report["runs"]:
        assert row["steps"] == 2 and row["phases_s"]["communication"] is None  # one rank: nothing to reduce
        assert row["clips_per_s"] == pytest.approx(2 / row["step_s"])
        assert row["mfu"] == pytest.approx(row["tflops"] * 1e12 / 1e11)
        assert row["tokens_per_s"] == pytest.approx(row["clips_per_s"] * cfg.patch_grid().visible_tokens)
        assert row["peak_mem_bytes"] > 0
    (speedup,) = report["speedups"]
    engine, official = report["runs"]
    assert speedup["speedup"] == pytest.approx(engine["clips_per_s"] / official["clips_per_s"])
    text = profiler.markdown(report)
    assert "Speed-up over the official way" in text and "| engine | synthetic |" in text
    profiler.plot(report, tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    broken = copy.deepcopy(report)
    del broken["runs"][1]["mfu"]
    with pytest.raises(ValueError, match=r"runs\[1\]\.mfu: missing"):
        profiler.validate_report(broken)
    broken = copy.deepcopy(report)
    broken["runs"][0]["phases_s"].pop("optimizer")
    with pytest.raises(ValueError, match="phases_s"):
        profiler.validate_report(broken)


def test_sweep_cli_two_strategies_two_micro_batches(tmp_path):
    out = tmp_path / "prof"
    args = [sys.executable, str(ROOT / "launch" / "profile.py"), "--config", str(ROOT / "configs" / "demo.yaml"),
            "--sweep", "--strategies", "single", "fsdp", "--micro-batches", "1", "2", "--checkpointing", "off",
            "--steps", "2", "--warmup", "1", "--max-batch", "--out", str(out), *TINY]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((out / "profile.json").read_text())
    profiler.validate_report(report)
    runs = report["runs"]
    assert sorted((r["strategy"], r["micro_batch"]) for r in runs) == [("fsdp", 1), ("fsdp", 2), ("single", 1),
                                                                       ("single", 2)]
    fitting = [r for r in runs if r["fits"]]
    assert fitting, "a 2-clip atto model fits on any machine"
    fastest = max(fitting, key=lambda r: r["clips_per_s"])
    assert report["sweep"]["fastest"] == fastest["setup"]
    for r in runs:
        assert r["predicted_mem_bytes"] > 0
        assert r["mem_error"] == pytest.approx(r["predicted_mem_bytes"] / r["peak_mem_bytes"] - 1)
    assert report["largest_micro_batch"]["micro_batch"] > 2
    assert "fastest setup that fits" in proc.stdout
    assert (out / "profile.png").is_file() and (out / "profile.md").is_file()


def test_bad_config_key_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "launch" / "profile.py"),
                           "--config", str(ROOT / "configs" / "demo.yaml"),
                           "train.micro_bach=3"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "config error: train.micro_bach: unknown key; did you mean train.micro_batch?"]


def test_project_prints_the_labelled_projection():
    proc = subprocess.run([sys.executable, str(ROOT / "launch" / "profile.py"),
                           "--config", str(ROOT / "configs" / "demo.yaml"),
                           "--project"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Projection" in proc.stdout and "H100" in proc.stdout  # the format is tvts.perf.projection's
