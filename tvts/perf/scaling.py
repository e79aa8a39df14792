"""Scaling-law experiments: a grid of registry model sizes x training budgets (clips seen), run locally one
after another or as one command per run for a cluster, then a fit of

    L(N, D) = E + A / N**alpha + B / D**beta

(N: trained parameters, D: clips seen, L: final held-out loss) with bootstrap intervals, the compute-optimal
size for a FLOP budget, a loss-vs-compute plot with the fitted frontier, and a markdown report.

Compute C = training FLOPs per clip x D, with the FLOP convention of :mod:`tvts.engine.metrics` (1
multiply-add = 2 FLOPs, masked patches excluded, 3x forward for trained parts). For the optimum the fit
takes C = k N D with k = the median over the grid of (FLOPs per clip / N); then (Chinchilla's approach 3)
N_opt = G (C/k)^(beta/(alpha+beta)), G = (alpha A / (beta B))^(1/(alpha+beta)).
"""
from __future__ import annotations

import json
import math
import shlex
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from tvts.errors import UserError

PRETRAIN = "launch/pretrain.py"


class ScalingError(UserError):
    """A grid that cannot be collected or fitted (a run not finished, too few runs); one line naming it."""


# ----------------------------------------------------------------------------------------------
# Grid
# ----------------------------------------------------------------------------------------------
@dataclass
class GridRun:
    size: str  # a key of tvts.config.VIT_SIZES
    budget_clips: int  # the requested training budget D
    steps: int
    clips: int  # clips actually seen: steps x global batch (>= budget_clips)
    params: int  # N: trained parameters (a frozen text tower excluded)
    flops_per_clip: float  # training FLOPs of one clip
    run_dir: str
    overrides: list[str] = field(default_factory=list)
    val_loss: Optional[float] = None
    val_sort_acc: Optional[float] = None
    seconds: Optional[float] = None

    @property
    def name(self) -> str:
        return f"{self.size}_{self.budget_clips}"

    @property
    def compute(self) -> float:
        return self.flops_per_clip * self.clips


def size_facts(cfg) -> tuple[int, float]:
    """(trained parameters, training FLOPs per clip) of a config, without building real weights."""
    from tvts.engine.memory import count_parameters
    from tvts.engine.metrics import train_flops_per_clip
    from tvts.models import flops

    t = cfg.model.text
    text_trainable = not t.frozen
    return count_parameters(cfg).trainable, train_flops_per_clip(flops(cfg), text_trainable, t.frozen and t.cache)


def plan(config_path: str, sizes: Sequence[str], budgets: Sequence[int], out_dir: str | Path,
         overrides: Sequence[str] = (), world_size: int = 1) -> list[GridRun]:
    """One run per (size, budget): steps = ceil(budget / global batch), evaluation and a checkpoint at the
    end only, warm-up capped at a tenth of the run. A bad size or override is a one-line ConfigError."""
    from tvts import config

    runs = []
    for size in sizes:
        for budget in budgets:
            cfg = config.load(config_path, [*overrides, f"model.video.size={size}"])
            batch = cfg.train.micro_batch * cfg.train.grad_accum * world_size
            steps = max(1, math.ceil(budget / batch))
            run_dir = str(Path(out_dir) / "runs" / f"{size}_{budget}")
            extra = [f"model.video.size={size}", f"train.steps={steps}", f"train.run_dir={run_dir}",
                     f"name=scaling_{size}_{budget}", f"train.eval_every={steps}", f"train.ckpt_every={steps}",
                     f"train.log_every={min(cfg.train.log_every, steps)}",
                     f"optim.warmup_steps={min(cfg.optim.warmup_steps, steps // 10)}"]
            params, per_clip = size_facts(config.load(config_path, [*overrides, *extra]))
            runs.append(GridRun(size, int(budget), steps, steps * batch, params, per_clip, run_dir, [*overrides, *extra]))
    return runs


def command(run: GridRun, config_path: str, python: str = "python") -> str:
    return " ".join([python, PRETRAIN, "--config", shlex.quote(str(config_path)), *map(shlex.quote, run.overrides)])


def write_cluster_files(runs: Sequence[GridRun], config_path: str, out_dir: str | Path, launcher: str = "python") -> list[Path]:
    """``commands.txt`` (one command per run, for any scheduler) and ``scaling.sbatch`` (a SLURM array whose
    task i runs line i + 1); ``launcher`` replaces ``python`` (e.g. ``torchrun --nproc_per_node 8``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    commands = out / "commands.txt"
    commands.write_text("".join(command(r, config_path, launcher) + "\n" for r in runs))
    sbatch = out / "scaling.sbatch"
    sbatch.write_text(
        "#!/bin/bash\n"
        "# One scaling-law run per array task; collect afterwards with launch/scaling.py ... --collect\n"
        f"#SBATCH --job-name=tvts-scaling\n#SBATCH --array=0-{len(runs) - 1}\n#SBATCH --nodes=1\n"
        "#SBATCH --gpus-per-node=8\n#SBATCH --time=24:00:00\n#SBATCH --requeue\n#SBATCH --output=slurm-%x-%A_%a.out\n"
        "set -euo pipefail\ncd \"${SLURM_SUBMIT_DIR:-.}\"\n"
        f"bash -c \"$(sed -n \"$((SLURM_ARRAY_TASK_ID + 1))p\" {shlex.quote(str(commands))})\"\n")
    return [commands, sbatch]


def collect(run: GridRun) -> GridRun:
    """Read the run's final held-out loss and sort accuracy from its ``metrics.jsonl``."""
    path = Path(run.run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise ScalingError(f"{path}: no metrics for run {run.name} (not run yet, or it failed)")
    last = None
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if "val/loss" in record and record["step"] == run.steps:
            last = record
    if last is None:
        raise ScalingError(f"{path}: no held-out record at step {run.steps} (data.val empty, or the run stopped early)")
    run.val_loss, run.val_sort_acc = float(last["val/loss"]), last.get("val/sort_acc")
    return run


def run_local(runs: Sequence[GridRun], config_path: str, log: Callable[[str], None] = print) -> list[GridRun]:
    """Run the grid here, in this process, one run after another (what ``commands.txt`` would run); each
    run's console output goes to ``<run_dir>/train.log``. A finished run is collected, not run again."""
    import contextlib

    from tvts import config
    from tvts.data.prepare import ensure_demo_corpus
    from tvts.engine.distributed import DistInfo
    from tvts.engine.trainer import Trainer

    for run in runs:
        try:
            collect(run)
            log(f"{run.name}: already done, held-out loss {run.val_loss:.4f}")
            continue
        except ScalingError:
            pass
        start = time.perf_counter()
        cfg = config.load(config_path, run.overrides)
        Path(run.run_dir).mkdir(parents=True, exist_ok=True)
        with open(Path(run.run_dir) / "train.log", "w") as out, contextlib.redirect_stdout(out):
            ensure_demo_corpus(cfg, None)
            Trainer(cfg, DistInfo()).train()
        run.seconds = time.perf_counter() - start
        collect(run)
        log(f"{run.name}: N {run.params / 1e6:.2f} M, D {run.clips} clips, held-out loss {run.val_loss:.4f}, "
            f"sort acc {run.val_sort_acc}, {run.seconds:.0f} s")
    return list(runs)


# ----------------------------------------------------------------------------------------------
# Fit
# ----------------------------------------------------------------------------------------------
PARAMS = ("E", "A", "alpha", "B", "beta")


@dataclass
class LawFit:
    E: float
    A: float
    alpha: float
    B: float
    beta: float
    intervals: dict = field(default_factory=dict)  # name -> (2.5 %, 97.5 %) over bootstrap refits
    rms_log_error: float = float("nan")  # root mean square of log(predicted / observed) on the fitted points
    points: int = 0

    def loss(self, n, d):
        n, d = np.asarray(n, dtype=float), np.asarray(d, dtype=float)
        return self.E + self.A / n**self.alpha + self.B / d**self.beta

    def optimal(self, flops: float, k: float) -> tuple[float, float, float]:
        """(N_opt, D_opt, L) for a FLOP budget under C = k N D."""
        a, b = self.alpha, self.beta
        g = (a * self.A / (b * self.B)) ** (1.0 / (a + b))
        n = g * (flops / k) ** (b / (a + b))
        d = flops / (k * n)
        return float(n), float(d), float(self.loss(n, d))


def _law(theta, log_n, log_d):
    e, a, alpha, b, beta = theta
    return np.exp(e) + np.exp(a - alpha * log_n) + np.exp(b - beta * log_d)


def _fit_once(log_n, log_d, log_l, starts):
    from scipy.optimize import least_squares

    lower, upper = [-20, -20, 0.0, -20, 0.0], [20, 60, 3.0, 60, 3.0]
    best = None
    for theta0 in starts:
        res = least_squares(lambda th: np.log(_law(th, log_n, log_d)) - log_l, theta0, bounds=(lower, upper),
                            loss="huber", f_scale=1e-3)
        if best is None or res.cost < best.cost:
            best = res
    return best.x


def fit_law(n: Sequence[float], d: Sequence[float], loss: Sequence[float], bootstrap: int = 200, seed: int = 0) -> LawFit:
    """Fit L(N, D) = E + A/N^alpha + B/D^beta on log loss (Huber, from a grid of starting points, as
    Hoffmann et al. 2022) and bootstrap the runs ``bootstrap`` times for 95 % intervals."""
    log_n, log_d, log_l = (np.log(np.asarray(x, dtype=float)) for x in (n, d, loss))
    if len(log_l) < 5:
        raise ScalingError(f"fitting 5 parameters needs at least 5 runs, got {len(log_l)}; pass more --sizes x --budgets")
    e0 = math.log(0.5 * float(np.exp(log_l).min()))
    grid = [[e0, a, al, b, be] for a in (0.0, 5.0, 15.0) for al in (0.1, 0.4, 1.0)
            for b in (0.0, 5.0, 15.0) for be in (0.1, 0.4, 1.0)]
    theta = _fit_once(log_n, log_d, log_l, grid)
    fit = LawFit(*_natural(theta), points=len(log_l))
    fit.rms_log_error = float(np.sqrt(np.mean((np.log(_law(theta, log_n, log_d)) - log_l) ** 2)))
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(bootstrap):
        pick = rng.integers(0, len(log_l), len(log_l))
        if len(set(zip(log_n[pick], log_d[pick]))) < 3:
            continue
        samples.append(_natural(_fit_once(log_n[pick], log_d[pick], log_l[pick], [theta])))
    if samples:
        values = np.array(samples)
        fit.intervals = {p: (float(np.percentile(values[:, i], 2.5)), float(np.percentile(values[:, i], 97.5)))
                         for i, p in enumerate(PARAMS)}
        fit.intervals["bootstrap_fits"] = len(samples)
    return fit


def _natural(theta) -> tuple[float, ...]:
    e, a, alpha, b, beta = (float(x) for x in theta)
    return math.exp(e), math.exp(a), alpha, math.exp(b), beta


def flops_per_param(runs: Sequence[GridRun]) -> float:
    return float(np.median([r.flops_per_clip / r.params for r in runs]))


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------
def plot(runs: Sequence[GridRun], fit: LawFit, path: str | Path) -> None:
    """Held-out loss vs training compute: the runs (one colour per size), the fitted law along each size,
    and the compute-optimal frontier (the law at N_opt(C))."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = flops_per_param(runs)
    compute = np.array([r.compute for r in runs])
    span = np.logspace(np.log10(compute.min()) - 0.5, np.log10(compute.max()) + 1.0, 100)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, size in enumerate(dict.fromkeys(r.size for r in runs)):
        mine = [r for r in runs if r.size == size]
        colour = f"C{i}"
        ax.scatter([r.compute for r in mine], [r.val_loss for r in mine], color=colour, zorder=3,
                   label=f"{size} ({mine[0].params / 1e6:.2g} M)")
        along = span[span >= min(r.compute for r in mine) / 3]  # the law along this size, near its runs
        ax.plot(along, fit.loss(mine[0].params, along / mine[0].flops_per_clip), color=colour, alpha=0.5, lw=1)
    frontier = np.array([fit.optimal(c, k)[2] for c in span])
    ax.plot(span, frontier, "k--", lw=1.5, label="compute-optimal frontier (fit)")
    observed = np.array([r.val_loss for r in runs])
    low, high = min(observed.min(), frontier.min()), observed.max()
    margin = 0.15 * max(high - low, 1e-3 * high)
    ax.set_ylim(low - margin, high + 2 * margin)  # the fitted curves can shoot up far from the runs
    ax.set_xscale("log")
    ax.set_xlabel("training compute (FLOPs)")
    ax.set_ylabel("held-out loss")
    ax.set_title(f"L = {fit.E:.3g} + {fit.A:.3g}/N^{fit.alpha:.2f} + {fit.B:.3g}/D^{fit.beta:.2f}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def registry_choice(config_path: str, overrides: Sequence[str], fit: LawFit, flops: float) -> list[dict]:
    """For a FLOP budget, every registry size's predicted loss when trained on C / FLOPs-per-clip clips."""
    from tvts import config
    from tvts.config import VIT_SIZES

    rows = []
    for size in VIT_SIZES:
        try:
            cfg = config.load(config_path, [*overrides, f"model.video.size={size}"])
        except config.ConfigError:
            continue  # e.g. heads that do not divide this width
        params, per_clip = size_facts(cfg)
        clips = flops / per_clip
        rows.append({"size": size, "params": params, "clips": clips, "loss": float(fit.loss(params, clips))})
    return rows


def markdown(runs: Sequence[GridRun], fit: LawFit, predictions: Sequence[dict], plot_name: str, notes: Sequence[str]) -> str:
    from tvts.perf.common import markdown_table

    table = [{**asdict(r), "name": r.name, "params_m": r.params / 1e6, "gflops_clip": r.flops_per_clip / 1e9,
              "compute": r.compute} for r in runs]
    ci = lambda p: "" if p not in fit.intervals else f" [{fit.intervals[p][0]:.3g}, {fit.intervals[p][1]:.3g}]"  # noqa: E731
    out = ["# Scaling-law experiment", "", *notes, "", "## Runs", "",
           markdown_table(table, [("size", "size", ""), ("params_m", "N (M trained)", ".3f"), ("budget_clips", "budget", "d"),
                                  ("steps", "steps", "d"), ("clips", "D (clips seen)", "d"),
                                  ("gflops_clip", "GFLOP/clip", ".3g"), ("compute", "compute (FLOPs)", ".3g"),
                                  ("val_loss", "held-out loss", ".4f"), ("val_sort_acc", "sort acc", ".3f"),
                                  ("seconds", "wall s", ".0f")]),
           "", "## Fit", "",
           f"L(N, D) = E + A/N^alpha + B/D^beta, {fit.points} runs, rms log error {fit.rms_log_error:.4f}; "
           f"95 % bootstrap intervals over {fit.intervals.get('bootstrap_fits', 0)} refits in brackets.", "",
           *[f"- {p} = {getattr(fit, p):.4g}{ci(p)}" for p in PARAMS], "",
           "## Compute-optimal size", "",
           markdown_table(predictions, [("flops", "FLOP budget", ".3g"), ("n_opt_m", "N_opt (M)", ".3g"),
                                        ("d_opt", "D_opt (clips)", ".3g"), ("loss", "predicted loss", ".4f"),
                                        ("best_size", "best registry size", ""), ("best_loss", "its loss", ".4f")]),
           "", f"![loss vs compute]({plot_name})", ""]
    return "\n".join(out)


def predictions(runs: Sequence[GridRun], fit: LawFit, budgets: Sequence[float], config_path: str,
                overrides: Sequence[str]) -> list[dict]:
    k = flops_per_param(runs)
    out = []
    for flops in budgets:
        n, d, loss = fit.optimal(flops, k)
        sizes = registry_choice(config_path, overrides, fit, flops)
        best = min(sizes, key=lambda r: r["loss"]) if sizes else {"size": None, "loss": None}
        out.append({"flops": float(flops), "n_opt_m": n / 1e6, "d_opt": d, "loss": loss,
                    "best_size": best["size"], "best_loss": best["loss"]})
    return out
