"""The synthetic benchmark (issue 7, Deliver 3): does transcript sorting teach the encoder time?

Four frozen encoders, one linear-probe protocol (:mod:`tvts.eval.linear`), on the synthetic
direction-of-change set (:func:`tvts.data.synthetic.make_downstream`: classes differ only by the
direction of a change, so one frame cannot tell them apart):

- ``tvts``: the recipe's encoder pre-trained with sorting + VTC;
- ``random``: the same recipe at its step-0 initialisation (``random:<tvts run>``);
- ``vtc``: pre-trained by the same recipe with ``model.sort_weight=0`` (VTC only);
- ``single_frame``: the ``tvts`` encoder fed the clip's middle frame M times (no motion visible).

Each row also gets v2v R@1 from the same features, and the pre-training run's last training and
held-out sort accuracy when the run logged them.

One pre-training seed is one draw: on this benchmark the demo's learning onset (and so every row but
random init) moves by several points from seed to seed and from machine to machine (docs/evaluation.md).
:func:`summarize` pools the per-seed results: mean and spread per row, and the paired TVTS - VTC difference
per seed, which is what the claim is about.
"""
from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

from tvts.eval.loading import RANDOM, load_eval_model
from tvts.eval.options import EvalOptions
from tvts.eval.report import markdown_table
from tvts.eval.tasks import evaluate

ROWS = {
    "tvts": "TVTS (sort + VTC)",
    "random": "random init (step 0)",
    "vtc": "VTC only (sort_weight=0)",
    "single_frame": "single frame (TVTS encoder, middle frame x M)",
}
COLUMNS = ["encoder", "linear top-1", "top-1 95% CI", "linear top-5", "wd", "v2v R@1", "train sort acc",
           "held-out sort acc"]


def run_summary(run_dir) -> dict:
    """Last step, training sort accuracy and held-out sort accuracy from ``<run>/metrics.jsonl``."""
    out: dict = {"step": None, "train_sort_acc": None, "val_sort_acc": None}
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        out["step"] = rec.get("step", out["step"])
        if "sort_acc" in rec:
            out["train_sort_acc"] = rec["sort_acc"]
        if "val/sort_acc" in rec:
            out["val_sort_acc"] = rec["val/sort_acc"]
    return out


def benchmark(tvts_run, vtc_run, data, out_dir, options: Optional[EvalOptions] = None) -> dict:
    """Evaluate the four rows; returns {"rows": {key: {...}}, "table": markdown}."""
    options = options or EvalOptions()
    specs = {"tvts": (str(tvts_run), options), "random": (f"{RANDOM}{tvts_run}", options),
             "vtc": (str(vtc_run), options), "single_frame": (str(tvts_run), _replace(options, single_frame=True))}
    rows, table = {}, []
    for key, (spec, opts) in specs.items():
        model = load_eval_model(spec, opts.device)
        where = Path(out_dir) / "eval" / key
        linear = evaluate("linear", spec, data, where, opts, model=model)
        v2v = evaluate("v2v", spec, data, where, opts, model=model)
        summary = {} if key == "random" else run_summary(vtc_run if key == "vtc" else tvts_run)
        top1, probe = linear["metrics"]["top1"], linear["probe"]
        low, high = (100.0 * x for x in wilson_interval(top1 / 100.0, probe["num_eval"]))
        rows[key] = {"name": ROWS[key], "spec": spec, "linear": linear["metrics"], "top1_ci95": [low, high],
                     "weight_decay": probe["weight_decay"], "v2v": v2v["metrics"], "run": summary,
                     "model": linear["model"], "protocol": linear["protocol"]}
        table.append([ROWS[key], top1, f"{low:.1f}-{high:.1f}", linear["metrics"]["top5"], f"{probe['weight_decay']:g}",
                      v2v["metrics"]["R@1"], _acc(summary.get("train_sort_acc")), _acc(summary.get("val_sort_acc"))])
    chance = 100.0 / linear["probe"]["num_classes"]
    return {"rows": rows, "chance_top1": chance, "num_train": linear["probe"]["num_train"],
            "num_eval": linear["probe"]["num_eval"], "table": markdown_table(COLUMNS, table)}


SUMMARY_COLUMNS = ["encoder", "linear top-1, mean", "sd", "range", "per seed", "v2v R@1, mean",
                   "held-out sort acc, mean"]


def summarize(per_seed: Mapping[int, dict]) -> dict:
    """Pool :func:`benchmark` results of several pre-training seeds (same downstream set).

    Returns {"seeds", "rows": {key: {"top1": [...], "mean", "sd", "min", "max", "v2v_r1_mean",
    "val_sort_acc_mean"}}, "tvts_minus_vtc": {"per_seed", "mean", "sd", "wins", "n"}, "table": markdown}.
    ``sd`` is the sample standard deviation over seeds (None for one seed); it measures training noise, which
    the per-run Wilson interval (evaluation clips only) does not.
    """
    seeds = sorted(per_seed)
    if not seeds:
        raise ValueError("summarize: no seed results")
    rows, table = {}, []
    for key, name in ROWS.items():
        top1 = [per_seed[s]["rows"][key]["linear"]["top1"] for s in seeds]
        v2v = [per_seed[s]["rows"][key]["v2v"]["R@1"] for s in seeds]
        sort_acc = [per_seed[s]["rows"][key]["run"].get("val_sort_acc") for s in seeds]
        sort_acc = [a for a in sort_acc if a is not None and not math.isnan(a)]
        row = {"top1": top1, "mean": statistics.fmean(top1), "sd": _sd(top1), "min": min(top1), "max": max(top1),
               "v2v_r1_mean": statistics.fmean(v2v), "val_sort_acc_mean": statistics.fmean(sort_acc) if sort_acc else None}
        rows[key] = row
        table.append([name, row["mean"], _num(row["sd"]), f"{row['min']:.2f} to {row['max']:.2f}",
                      " / ".join(f"{x:.2f}" for x in top1), row["v2v_r1_mean"], _acc(row["val_sort_acc_mean"])])
    diff = [a - b for a, b in zip(rows["tvts"]["top1"], rows["vtc"]["top1"])]
    paired = {"per_seed": diff, "mean": statistics.fmean(diff), "sd": _sd(diff), "wins": sum(d > 0 for d in diff),
              "n": len(diff)}
    table.append(["TVTS - VTC only (paired by seed)", paired["mean"], _num(paired["sd"]),
                  f"{min(diff):+.2f} to {max(diff):+.2f}", " / ".join(f"{d:+.2f}" for d in diff),
                  f"TVTS ahead on {paired['wins']} of {paired['n']}", ""])
    return {"seeds": seeds, "rows": rows, "tvts_minus_vtc": paired, "table": markdown_table(SUMMARY_COLUMNS, table)}


def _sd(values: list[float]) -> Optional[float]:
    return statistics.stdev(values) if len(values) > 1 else None


def _num(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2f}"


@dataclass
class PretrainJob:
    """One pre-training subprocess of the benchmark: ``command`` writes ``run_dir``, its output goes to ``log``."""

    name: str
    run_dir: Path
    log: Path
    command: list[str]


def pretrain_jobs(seeds: Sequence[int], home: Path, config_path: str, overrides: Sequence[str], steps: int = 0,
                  threads: int = 0, skip: Sequence[str] = ()) -> list[PretrainJob]:
    """The TVTS and VTC-only runs of every seed: ``<home>/seed<S>/{tvts,vtc}``, ``launch/pretrain.py`` with the
    config, its overrides, then ``train.threads`` (when > 0), ``seed=S`` and, for VTC only,
    ``model.sort_weight=0`` (later key=value overrides win). ``skip``: kinds ("tvts", "vtc") given, not trained."""
    script = Path(__file__).resolve().parents[2] / "launch" / "pretrain.py"
    jobs = []
    for seed in seeds:
        for kind, extra in (("tvts", []), ("vtc", ["model.sort_weight=0"])):
            if kind in skip:
                continue
            run_dir = home / f"seed{seed}" / kind
            command = [sys.executable, str(script), "--config", str(config_path), *overrides,
                       *([f"train.threads={threads}"] if threads else []), f"seed={seed}", *extra,
                       f"train.run_dir={run_dir}", f"name=bench_{kind}_seed{seed}"]
            if steps:
                command.append(f"train.steps={steps}")
            jobs.append(PretrainJob(f"{kind}_seed{seed}", run_dir, run_dir.parent / f"{kind}.log", command))
    return jobs


def run_jobs(jobs: Sequence[PretrainJob], at_once: int = 1) -> None:
    """Run ``jobs``, ``at_once`` at a time (each a subprocess in the current directory, so relative paths in the
    config resolve alike). After the first failure nothing new starts; raises SystemExit naming every failed
    job and the last lines of its log."""
    stop = threading.Event()

    def run(job: PretrainJob) -> None:
        if stop.is_set():
            return
        job.log.parent.mkdir(parents=True, exist_ok=True)
        print(f"[{job.name}] training: {' '.join(job.command[1:])}\n[{job.name}] log: {job.log}", flush=True)
        t0 = time.perf_counter()
        with open(job.log, "a") as log:
            code = subprocess.call(job.command, stdout=log, stderr=subprocess.STDOUT)
        if code:
            stop.set()
            tail = "\n".join(job.log.read_text().splitlines()[-20:])
            raise RuntimeError(f"[{job.name}] launch/pretrain.py exited with {code}; last lines of {job.log}:\n{tail}")
        print(f"[{job.name}] done in {time.perf_counter() - t0:.0f} s", flush=True)

    pool = ThreadPoolExecutor(max(1, at_once))
    futures = [pool.submit(run, job) for job in jobs]
    try:
        wait(futures, return_when=FIRST_EXCEPTION)
    finally:  # a failure or Ctrl-C: queued jobs never start; running ones end on their own
        pool.shutdown(wait=True, cancel_futures=True)
    failed = [str(f.exception()) for f in futures if not f.cancelled() and f.exception() is not None]
    if failed:
        raise SystemExit("\n".join(failed))


def wilson_interval(accuracy: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of an accuracy measured on ``n`` clips: how far apart two rows must be
    before the evaluation set's size stops explaining the difference."""
    if n <= 0:
        return 0.0, 1.0
    centre = (accuracy + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _acc(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def _replace(options: EvalOptions, **changes) -> EvalOptions:
    import dataclasses

    return dataclasses.replace(options, **changes)
