"""Whole profiling runs: :func:`profile` times every setup side by side on each batch source, :func:`sweep`
times a grid of setups one after another and names the fastest that fits; both return the report
(:mod:`tvts.perf.profiler.report`)."""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from tvts.perf.profiler.batches import loader_source, synthetic_source
from tvts.perf.profiler.rates import device_peak, flops_per_clip
from tvts.perf.profiler.report import new_report, speedups, summarise
from tvts.perf.profiler.runner import LOADER_PREFETCH, Runner, run_rounds
from tvts.perf.profiler.search import available_memory_bytes, is_oom
from tvts.perf.profiler.setups import Setup


def loader_warmup(cfg, setup: Setup, info, warmup: int) -> int:
    """Warm-up steps before timing a loader: with the engine's decoded cache on, one epoch of this rank's
    clips first (the first epoch decodes whole clips into the cache: not the steady state), else ``warmup``."""
    if setup.decoder != "engine" or not cfg.data.decoded_cache_mb:
        return warmup
    from tvts.data.shards import list_shards

    clips = sum(n or 0 for spec in cfg.data.train for _, n in list_shards(spec))
    return max(warmup, math.ceil(clips / info.world_size / cfg.train.micro_batch) + 1)


def _prime(cfg, setup: Setup, info, tokenizer) -> None:
    """CPU: one throwaway build and step, so that one-time imports and thread pools do not count as the
    first measured setup's memory (CUDA counts allocated tensors only)."""
    if info.device.type == "cpu":
        runner = Runner(cfg, setup, info, 2)
        runner.warm_up(synthetic_source(runner.cfg, tokenizer, info.device)(), 1)
        runner.close()


def profile(cfg, info, setups: Sequence[Setup], paths: Sequence[str], steps: int, warmup: int, config_path: str = "",
            peak: Optional[tuple[float, str]] = None) -> dict:
    """Time every setup on each batch source (``synthetic``, ``loader``) and return the report.

    All setups stay built and take turns (:func:`run_rounds`): step by step on synthetic batches, in two
    turns each on the loader. Each setup's memory is measured while it is built and takes its first step."""
    from tvts.models.text import build_tokenizer

    tokenizer = build_tokenizer(cfg)
    peak = peak or device_peak(info.device)
    total = 10**6  # the schedule's length: only its warm-up shape matters here
    _prime(cfg, setups[0], info, tokenizer)
    runners = []
    for setup in setups:
        runner = Runner(cfg, setup, info, total)
        runner.warm_up(synthetic_source(runner.cfg, tokenizer, info.device)(), 1)
        runners.append(runner)
    flops_clip = flops_per_clip(runners[0].cfg, runners[0].model)
    report = new_report(cfg, config_path, info, peak, flops_clip)
    budget = available_memory_bytes(info.device)
    for path in paths:
        sources = [synthetic_source(r.cfg, tokenizer, info.device) if path == "synthetic" else
                   loader_source(r.cfg, info, tokenizer, r.setup) for r in runners]
        warmups = [warmup if path == "synthetic" else loader_warmup(r.cfg, r.setup, info, warmup) for r in runners]
        if path == "synthetic":  # step by step
            timings = run_rounds(runners, sources, steps, warmups)
        else:  # in two turns each, past the batches a waiting loader made ahead
            timings = run_rounds(runners, sources, steps, warmups, block=max(1, math.ceil(steps / 2)),
                                 settle=LOADER_PREFETCH if len(runners) > 1 else 0)
        for runner, t in zip(runners, timings):
            report["runs"].append(summarise(runner, path, t, peak[0], flops_clip, report["visible_tokens_per_clip"],
                                            budget))
    for runner in runners:
        runner.close()
    report["speedups"] = speedups(report["runs"])
    return report


def sweep(cfg, info, grid: Sequence[Setup], steps: int, warmup: int, config_path: str = "",
          peak: Optional[tuple[float, str]] = None) -> dict:
    """Time every setup of ``grid`` on synthetic batches, one after another, and name the fastest that fits:
    no out-of-memory error, and measured and predicted memory within what the device has free."""
    from tvts.models.text import build_tokenizer

    tokenizer = build_tokenizer(cfg)
    peak = peak or device_peak(info.device)
    budget = available_memory_bytes(info.device)
    _prime(cfg, grid[0], info, tokenizer)
    report, failed = None, []
    for setup in grid:
        runner = source = None  # the previous setup's device batch goes before the next setup is built
        try:
            runner = Runner(cfg, setup, info, warmup + 2 * steps + 1)
            source = synthetic_source(runner.cfg, tokenizer, info.device)
            runner.warm_up(source(), max(1, warmup))
            if report is None:
                report = new_report(cfg, config_path, info, peak, flops_per_clip(runner.cfg, runner.model))
            timings = run_rounds([runner], [source], steps, 0)[0]
            row = summarise(runner, "synthetic", timings, peak[0], report["flops_per_clip"],
                            report["visible_tokens_per_clip"], budget)
            if row["fits"] is None:  # no memory model: the measurement alone
                row["fits"] = bool(row["peak_mem_bytes"] is not None and row["peak_mem_bytes"] <= budget)
            report["runs"].append(row)
        except (torch.OutOfMemoryError, RuntimeError) as err:
            if not is_oom(err):
                raise
            failed.append({"setup": setup.name, "error": "out of memory"})
        finally:
            if runner is not None:
                runner.close()
    if report is None:
        raise RuntimeError("sweep: no setup of the grid fits in memory")
    fitting = [r for r in report["runs"] if r["fits"]]
    best = max(fitting, key=lambda r: r["clips_per_s"]) if fitting else None
    report["sweep"] = {"budget_bytes": budget, "setups": len(grid), "failed": failed,
                       "fastest": best["setup"] if best else None,
                       "fastest_clips_per_s": best["clips_per_s"] if best else None}
    return report
