"""tvts.perf.scaling and launch/scaling.py: the law fit on points from a known law, the compute-optimal
size, the cluster command files, and a real (tiny) grid that ends in a report and a plot."""
import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tvts import config
from tvts.data.prepare import ensure_demo_corpus
from tvts.perf import scaling

ROOT = Path(__file__).resolve().parents[2]
DEMO = str(ROOT / "configs" / "demo.yaml")
# 32 px frames, a 1-layer CLIP text tower (no weights to read), 2 clips per step, 1 thread
TINY = ["model.video.patch_size=8", "sample.image_size=32", "model.sort.heads=2", "data.resize_short=32",
        "data.num_workers=0", "train.micro_batch=2", "data.decoded_cache_mb=0", "model.text.kind=clip",
        "model.text.width=32", "model.text.layers=1", "model.text.heads=2", "model.text.output_dim=32",
        "model.text.context_length=16", "model.text.frozen=false", "model.text.cache=false",
        "model.sort.transcript_norm=none", "train.threads=1", "data.synthetic_stream=false"]
LAW = dict(E=1.7, A=120.0, alpha=0.34, B=410.0, beta=0.28)


def test_fit_recovers_a_known_law():
    rng = np.random.default_rng(0)
    n = np.repeat(np.logspace(5, 8, 5), 4)
    d = np.tile(np.logspace(4, 7, 4), 5)
    truth = scaling.LawFit(**LAW)
    loss = truth.loss(n, d) * np.exp(rng.normal(0.0, 0.002, n.shape))  # 0.2 % noise
    fit = scaling.fit_law(n, d, loss, bootstrap=30)
    assert fit.alpha == pytest.approx(LAW["alpha"], abs=0.02)
    assert fit.beta == pytest.approx(LAW["beta"], abs=0.02)
    assert fit.E == pytest.approx(LAW["E"], abs=0.1)
    assert fit.rms_log_error < 0.005
    for name in ("alpha", "beta"):
        lo, hi = fit.intervals[name]
        assert lo <= getattr(fit, name) <= hi and hi - lo < 0.05
    with pytest.raises(ValueError, match="at least 5 runs"):
        scaling.fit_law(n[:4], d[:4], loss[:4])


def test_compute_optimal_size_minimises_the_law():
    law, k, flops = scaling.LawFit(**LAW), 6.0, 1e21
    n_opt, d_opt, best = law.optimal(flops, k)
    assert k * n_opt * d_opt == pytest.approx(flops)
    sizes = np.logspace(np.log10(n_opt) - 2, np.log10(n_opt) + 2, 4001)
    losses = law.loss(sizes, flops / (k * sizes))
    assert sizes[np.argmin(losses)] == pytest.approx(n_opt, rel=0.01)
    assert best == pytest.approx(losses.min(), rel=1e-6)


def test_plan_and_cluster_files(tmp_path):
    runs = scaling.plan(DEMO, ["atto", "nano"], [20, 50], tmp_path, TINY, world_size=2)
    assert [r.name for r in runs] == ["atto_20", "atto_50", "nano_20", "nano_50"]
    assert [r.steps for r in runs] == [5, 13, 5, 13]  # ceil(budget / (2 clips x 2 ranks))
    assert runs[1].clips == 52 and runs[0].params < runs[2].params and runs[0].flops_per_clip < runs[2].flops_per_clip
    commands, sbatch = scaling.write_cluster_files(runs, DEMO, tmp_path, "torchrun --nproc_per_node 2")
    lines = commands.read_text().splitlines()
    assert len(lines) == 4 and all(line.startswith("torchrun --nproc_per_node 2 launch/pretrain.py --config ") for line in lines)
    assert "model.video.size=nano" in shlex.split(lines[3]) and "train.steps=13" in shlex.split(lines[3])
    assert "#SBATCH --array=0-3" in sbatch.read_text()
    with pytest.raises(config.ConfigError, match="model.video.size"):
        scaling.plan(DEMO, ["tiniest"], [10], tmp_path, TINY)
    with pytest.raises(scaling.ScalingError, match="atto_20"):
        scaling.collect(runs[0])


@pytest.mark.slow
def test_smoke_grid_writes_report_and_plot(tmp_path):
    """3 registry sizes x 2 budgets trained here on a tiny synthetic corpus, then fit, report and plot."""
    cfg = config.load(DEMO, TINY + [f"data.root={tmp_path / 'corpus'}"])
    ensure_demo_corpus(cfg, None, num_videos=6, downstream=(2, 2), workers=1)
    data = [f"data.train=[{cfg.data.train[0]}]", f"data.val=[{cfg.data.val[0]}]", "data.synthetic=false", "data.synthetic_stream=false"]
    out = tmp_path / "grid"
    proc = subprocess.run([sys.executable, str(ROOT / "launch" / "scaling.py"), "--config", DEMO, "--sizes", "atto", "nano",
                           "micro", "--budgets", "4", "8", "--bootstrap", "10", "--out", str(out), *TINY, *data],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((out / "scaling.json").read_text())
    assert len(result["runs"]) == 6 and all(np.isfinite(r["val_loss"]) for r in result["runs"])
    assert [r["steps"] for r in result["runs"]] == [2, 4] * 3
    assert all(np.isfinite(result["fit"][p]) for p in scaling.PARAMS)
    report = (out / "report.md").read_text()
    assert "## Fit" in report and "| micro |" in report and "![loss vs compute](loss_vs_compute.png)" in report
    assert (out / "loss_vs_compute.png").read_bytes()[:4] == b"\x89PNG"
    # a second call collects the finished runs instead of training again
    again = subprocess.run([sys.executable, str(ROOT / "launch" / "scaling.py"), "--config", DEMO, "--sizes", "atto", "nano",
                            "micro", "--budgets", "4", "8", "--bootstrap", "0", "--collect", "--out", str(out), *TINY, *data],
                           capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert again.returncode == 0, again.stderr[-2000:]
