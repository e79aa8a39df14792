"""The profiler's report: one row per (setup, batch source) with seconds per phase and per step, rates,
measured and predicted memory; the speed-ups over the official way; the JSON schema check; the markdown
tables and the PNG."""
from __future__ import annotations

import math
from dataclasses import asdict
from typing import Optional

import numpy as np
import torch

from tvts.perf.profiler.rates import throughput
from tvts.perf.profiler.runner import Runner

SCHEMA = "tvts.profile/1"
PHASES = ("data_wait", "forward", "backward", "optimizer", "communication")
STEP_PHASES = PHASES[:4]  # communication overlaps backward: it is inside the backward time, not added to it


def new_report(cfg, config_path: str, info, peak: tuple[float, str], flops_clip: float) -> dict:
    from tvts.perf.common import environment

    return {"schema": SCHEMA, "environment": environment(info.device), "config": str(config_path),
            "device": info.device.type if info.device.type == "cpu" else torch.cuda.get_device_name(info.device),
            "peak_flops": float(peak[0]), "peak_name": peak[1], "flops_per_clip": float(flops_clip),
            "visible_tokens_per_clip": cfg.patch_grid().visible_tokens, "world_size": info.world_size,
            "runs": [], "speedups": []}


def summarise(runner: Runner, path: str, timings: list[dict], peak_flops: float, flops_clip: float,
              tokens_clip: int, budget_bytes: Optional[int] = None) -> dict:
    """One report row: the setup, seconds per phase and per step, rates, measured and predicted memory.

    The step that stands for the setup: on CPU with synthetic batches the fastest timed step (other jobs on
    a shared machine only ever slow a step down, and nothing else varies); otherwise (loader rows, where
    stalls are part of the answer, and CUDA) the median step time and the median of each phase.
    ``step_mean_s`` is beside it either way."""
    info, setup = runner.info, runner.setup
    totals = [sum(t[p] for p in STEP_PHASES) for t in timings]
    fastest = info.device.type == "cpu" and path == "synthetic"
    if fastest:
        best = timings[int(np.argmin(totals))]
        phases, step_s = {p: best.get(p) for p in PHASES}, min(totals)
    else:
        phases = {p: float(np.median([t[p] for t in timings])) if timings[0].get(p) is not None else None
                  for p in PHASES}
        step_s = float(np.median(totals))
    row = {**asdict(setup), "setup": setup.name, "path": path, "world_size": info.world_size, "steps": len(timings),
           "statistic": "fastest step" if fastest else "median step", "phases_s": phases, "step_s": step_s,
           "step_mean_s": float(np.mean(totals)),
           **throughput(step_s, setup.micro_batch, info.world_size, flops_clip, tokens_clip, peak_flops),
           "peak_mem_bytes": runner.memory_bytes, **memory_prediction(runner, budget_bytes)}
    row.pop("name")
    return row


def memory_prediction(runner: Runner, budget_bytes: Optional[int] = None) -> dict:
    """The memory model's prediction for the runner's setup beside the measurement, with its relative
    error (predicted / measured - 1), and whether the setup fits ``budget_bytes``."""
    out = {"predicted_mem_bytes": None, "mem_error": None, "fits": None}
    try:
        from tvts.engine import memory
    except ImportError:
        out["memory_model"] = "tvts.engine.memory is not available in this checkout"
        return out
    estimate = memory.predict(runner.cfg, runner.setup.strategy, runner.info.world_size, runner.setup.micro_batch)
    out["predicted_mem_bytes"] = int(estimate.total_bytes)
    out["memory_predicted"] = estimate.as_dict()
    if runner.strategy is not None:  # after a step: parameters and optimizer states (gradients were freed)
        out["memory_measured_state"] = memory.measure_model_state(runner.strategy)
    if runner.memory_bytes:
        out["mem_error"] = estimate.total_bytes / runner.memory_bytes - 1.0
    if budget_bytes:
        measured = runner.memory_bytes or 0
        out["fits"] = bool(max(measured, estimate.total_bytes) <= budget_bytes)
    return out


def speedups(rows: list[dict], baseline: str = "official") -> list[dict]:
    """Per batch source, every setup's clips/s over the baseline setup's (the same run, side by side)."""
    out = []
    for path in dict.fromkeys(r["path"] for r in rows):
        base = next((r for r in rows if r["path"] == path and r["setup"] == baseline), None)
        if base is None or not base["clips_per_s"]:
            continue
        for r in rows:
            if r["path"] == path and r is not base:
                out.append({"path": path, "setup": r["setup"], "baseline": baseline,
                            "speedup": r["clips_per_s"] / base["clips_per_s"]})
    return out


ROW_KEYS = {"setup": str, "path": str, "strategy": str, "attention": str, "micro_batch": int, "checkpointing": bool,
            "precision": str, "loss_scaling": bool, "decoder": str, "world_size": int, "steps": int, "phases_s": dict,
            "step_s": float, "clips_per_s": float, "tokens_per_s": float, "tflops": float, "mfu": float}
REPORT_KEYS = {"schema": str, "environment": dict, "config": str, "device": str, "peak_flops": float,
               "peak_name": str, "flops_per_clip": float, "visible_tokens_per_clip": int, "runs": list,
               "speedups": list}


def validate_report(report: dict) -> None:
    """Raise ValueError naming the first key that is missing or of the wrong type (the JSON schema)."""
    def check(obj: dict, keys: dict, where: str) -> None:
        for key, typ in keys.items():
            if key not in obj:
                raise ValueError(f"{where}.{key}: missing")
            ok = isinstance(obj[key], typ) or (typ is float and isinstance(obj[key], int)
                                                and not isinstance(obj[key], bool))
            if not ok:
                raise ValueError(f"{where}.{key}: expected {typ.__name__}, got {type(obj[key]).__name__}")

    check(report, REPORT_KEYS, "report")
    if report["schema"] != SCHEMA:
        raise ValueError(f"report.schema: expected {SCHEMA}, got {report['schema']}")
    for i, row in enumerate(report["runs"]):
        check(row, ROW_KEYS, f"runs[{i}]")
        if set(row["phases_s"]) != set(PHASES):
            raise ValueError(f"runs[{i}].phases_s: expected the phases {', '.join(PHASES)}")
        if row["path"] not in ("synthetic", "loader"):
            raise ValueError(f"runs[{i}].path: expected synthetic or loader, got {row['path']}")


def _mib(value) -> Optional[float]:
    return None if value is None else value / 2**20


def markdown(report: dict) -> str:
    """The report's tables: one row per (setup, batch source), the speed-ups, the sweep's pick."""
    from tvts.perf.common import markdown_table

    rows = []
    for r in report["runs"]:
        ms = {f"{p}_ms": None if v is None else 1e3 * v for p, v in r["phases_s"].items()}
        rows.append({**r, **ms, "step_ms": 1e3 * r["step_s"], "ktokens_per_s": r["tokens_per_s"] / 1e3,
                     "mfu_pct": 100 * r["mfu"] if math.isfinite(r["mfu"]) else None,
                     "peak_mib": _mib(r.get("peak_mem_bytes")), "pred_mib": _mib(r.get("predicted_mem_bytes")),
                     "err_pct": None if r.get("mem_error") is None else 100 * r["mem_error"],
                     "ckpt": "yes" if r["checkpointing"] else "no",
                     "prec": r["precision"]
                     + ("" if r["loss_scaling"] or r["precision"] != "fp16" else " (no scaler)")})
    columns = [("setup", "setup", ""), ("path", "batches", ""), ("strategy", "strategy", ""),
               ("attention", "attention", ""), ("micro_batch", "B", "d"), ("ckpt", "ckpt", ""),
               ("prec", "precision", ""),
               ("step_ms", "step ms", ".1f"), ("data_wait_ms", "data ms", ".1f"), ("forward_ms", "fwd ms", ".1f"),
               ("backward_ms", "bwd ms", ".1f"), ("optimizer_ms", "opt ms", ".1f"),
               ("communication_ms", "comm ms", ".1f"),
               ("clips_per_s", "clips/s", ".1f"), ("ktokens_per_s", "k tokens/s", ".1f"), ("tflops", "TFLOP/s", ".3f"),
               ("mfu_pct", "MFU %", ".1f"), ("peak_mib", "peak MiB", ".0f"), ("pred_mib", "model MiB", ".0f"),
               ("err_pct", "model err %", "+.0f")]
    env = report["environment"]
    out = [f"Device: {report['device']} ({env.get('cpu', '')}); peak {report['peak_flops'] / 1e12:.3g} TFLOP/s "
           f"({report['peak_name']}); {report['flops_per_clip'] / 1e9:.3g} training GFLOP and "
           f"{report['visible_tokens_per_clip']} visible tokens per clip; {env.get('date')}, "
           f"commit {env.get('commit')}.",
           "", markdown_table(rows, columns), "",
           "Each row is its fastest timed step on CPU synthetic batches, else its median step (medians per phase); "
           "loader rows after a warm-up that fills the decoded cache. comm = exposed gradient reduction (several "
           "ranks, ddp/fsdp). peak = measured, model = tvts.engine.memory prediction.", ""]
    if report["speedups"]:
        out += ["Speed-up over the official way (clips/s ratio, measured side by side in this run):", "",
                markdown_table(report["speedups"], [("path", "batches", ""), ("setup", "setup", ""),
                                                    ("baseline", "baseline", ""), ("speedup", "speed-up", ".2f")]), ""]
    if report.get("sweep"):
        s = report["sweep"]
        out += [f"Sweep: fastest setup that fits ({_mib(s['budget_bytes']):.0f} MiB available): "
                f"{s['fastest'] or 'none'}", ""]
    if report.get("largest_micro_batch"):
        lm = report["largest_micro_batch"]
        errors = [r["mem_error"] for r in report["runs"] if r.get("mem_error") is not None]
        error = f" Memory model error against measurement in this run: {100 * min(errors):+.0f} % to " \
                f"{100 * max(errors):+.0f} %." if errors else ""
        out += [f"Largest micro-batch ({lm['strategy']}, {lm['method']}, "
                f"{_mib(lm['budget_bytes']):.0f} MiB available): "
                f"{lm['micro_batch']}.{error} {lm.get('note', '')}", ""]
    return "\n".join(out)


def plot(report: dict, path) -> None:
    """A PNG: stacked per-phase step time per setup and batch source, clips/s written beside each bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = report["runs"]
    labels = [f"{r['setup']} · {r['path']}" for r in runs]
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(runs) + 1.6))
    left = np.zeros(len(runs))
    for phase, colour in zip(PHASES, ("#9e9e9e", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728")):
        ms = np.array([1e3 * (r["phases_s"][phase] or 0.0) for r in runs])
        if phase == "communication":
            continue  # part of backward (overlapped); shown in the table, not stacked twice
        ax.barh(labels, ms, left=left, color=colour, label=phase)
        left += ms
    for y, (r, x) in enumerate(zip(runs, left)):
        ax.text(x, y, f"  {r['clips_per_s']:.1f} clips/s", va="center", fontsize=8)
    ax.set_xlabel("ms per step")
    ax.set_xlim(0, left.max() * 1.35 if len(runs) else 1)
    ax.invert_yaxis()
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"{report['config']} on {report['device']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
