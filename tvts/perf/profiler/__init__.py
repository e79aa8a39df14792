"""Throughput profiling: per-step time split, clips/s, visible tokens/s, TFLOP/s, MFU and peak memory of a
config run by the engine, optionally beside the same model run the way the official code runs it
(``launch/profile.py``). A *setup* is how a model is run; a :class:`Runner` holds one built setup and times
its training steps on a batch source (``synthetic`` or ``loader``), split into phases.

Measurement:
  setups    Setup (how one model is run), engine_setup, official_setup, sweep_grid
  batches   the synthetic batch (on the device once) and the loader sources, the official-style data path
  runner    Runner (one built setup, its timed and phase-split steps), run_rounds (setups taking turns)
  rates     FLOPs per clip, clips/s, tokens/s, TFLOP/s, MFU, the device peak
  search    the largest micro-batch: search with out-of-memory recovery, or the memory model on a CPU
  runs      profile (setups side by side on each batch source) and sweep (a grid, the fastest that fits)
Report:
  report    report rows (summarise, memory_prediction), speed-ups, the schema check, markdown tables, plot

Every public name is re-exported here: callers import from ``tvts.perf.profiler``.
"""
from tvts.perf.profiler.batches import (loader_source, official_loader, official_sample, synthetic_batch,
                                        synthetic_source)
from tvts.perf.profiler.rates import device_peak, flops_per_clip, throughput
from tvts.perf.profiler.report import (PHASES, REPORT_KEYS, ROW_KEYS, SCHEMA, STEP_PHASES, markdown, memory_prediction,
                                       new_report, plot, speedups, summarise, validate_report)
from tvts.perf.profiler.runner import LOADER_PREFETCH, Runner, run_rounds
from tvts.perf.profiler.runs import loader_warmup, profile, sweep
from tvts.perf.profiler.search import available_memory_bytes, is_oom, largest_micro_batch, search_largest, step_fits
from tvts.perf.profiler.setups import OFFICIAL_FP16_SIZES, Setup, engine_setup, official_setup, sweep_grid

__all__ = ["LOADER_PREFETCH", "OFFICIAL_FP16_SIZES", "PHASES", "REPORT_KEYS", "ROW_KEYS", "SCHEMA", "STEP_PHASES",
           "Runner", "Setup", "available_memory_bytes", "device_peak", "engine_setup", "flops_per_clip", "is_oom",
           "largest_micro_batch", "loader_source", "loader_warmup", "markdown", "memory_prediction", "new_report",
           "official_loader", "official_sample", "official_setup", "plot", "profile", "run_rounds", "search_largest",
           "speedups", "step_fits", "summarise", "sweep", "sweep_grid", "synthetic_batch", "synthetic_source",
           "throughput", "validate_report"]
