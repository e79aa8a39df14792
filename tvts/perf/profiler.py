"""Throughput profiling: per-step time split, clips/s, visible tokens/s, TFLOP/s, MFU and peak memory of a
config run by the engine, optionally beside the same model run the way the official code runs it.

A *setup* is how a model is run (strategy, attention backend, micro-batch, activation checkpointing,
precision, loss scaling, decoder); a :class:`Runner` holds one built model + strategy and times training
steps on a stream of batches, split into phases: ``data_wait`` (host: waiting for the next batch and
copying it to the device), ``forward``, ``backward`` (gradient reduction included where the strategy
overlaps it), ``optimizer``. ``communication`` is measured where it can be isolated: for ddp and fsdp
over several ranks it is the *exposed* reduction time, backward with gradient sync minus backward under
``no_sync()``; elsewhere it is reported as None (one rank has none; DeepSpeed reduces inside its own calls).

Two batch sources: ``synthetic`` (random tensors of the right shapes made once and reused: no decoding,
the compute ceiling) and ``loader`` (the engine's TrainLoader, or, for the official setup, a re-creation
of the official per-sample path: one seek per frame, PIL resize, float64 ClipToTensor).

FLOP convention (:mod:`tvts.engine.metrics`): 1 multiply-add = 2 FLOPs, masked patches excluded, training
= 3x forward for trained parts. MFU is against the device peak: H100/H200 989 TFLOP/s, A100 312 (bf16
dense), or the measured fp32 matmul rate of this CPU.
"""
from __future__ import annotations

import contextlib
import copy
import gc
import itertools
import json
import math
from dataclasses import asdict, dataclass, replace
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from tvts.perf.common import PeakMemory, PhaseClock
from tvts.config import validate

SCHEMA = "tvts.profile/1"
PHASES = ("data_wait", "forward", "backward", "optimizer", "communication")
STEP_PHASES = PHASES[:4]  # communication overlaps backward: it is inside the backward time, not added to it
# the official recipes: fp32, except the H/14 run (fp16 autocast without a loss scaler)
OFFICIAL_FP16_SIZES = ("huge",)


@dataclass(frozen=True)
class Setup:
    """How one model is run. ``loss_scaling=False`` with fp16 reproduces the official H/14 run."""

    name: str
    strategy: str
    attention: str
    micro_batch: int
    checkpointing: bool
    precision: str
    loss_scaling: bool = True
    decoder: str = "engine"  # engine: TrainLoader; official: per-frame seeks (official_clip)

    def apply(self, cfg):
        """A copy of ``cfg`` that runs this setup (validated: a bad combination is one ConfigError line)."""
        c = copy.deepcopy(cfg)
        c.train.strategy, c.train.attention, c.train.micro_batch = self.strategy, self.attention, self.micro_batch
        c.train.precision, c.model.video.grad_checkpointing = self.precision, self.checkpointing
        c.train.grad_accum = 1
        validate(c)
        return c


def engine_setup(cfg, name: str = "engine") -> Setup:
    t = cfg.train
    return Setup(name, t.strategy, t.attention, t.micro_batch, cfg.model.video.grad_checkpointing, t.precision)


def official_setup(cfg, device: torch.device) -> Setup:
    """The official code's way: DDP, the explicit einsum attention (our ``math``), no activation
    checkpointing, fp32 (fp16 without loss scaling for H/14 on a GPU), per-frame seek decoding."""
    fp16 = device.type == "cuda" and cfg.model.video.size in OFFICIAL_FP16_SIZES
    return Setup("official", "ddp", "math", cfg.train.micro_batch, False, "fp16" if fp16 else "fp32",
                 loss_scaling=not fp16, decoder="official")


# ----------------------------------------------------------------------------------------------
# Batches
# ----------------------------------------------------------------------------------------------
def synthetic_batch(cfg, tokenizer, seed: int = 0) -> dict:
    """One transcript batch of the loader's layout (:func:`tvts.data.loader.build_train_loader`) from
    random tensors: video (B, T, 3, S, S) float32, K tokenised transcripts per clip, labels, keep indices."""
    from tvts.data.masking import keep_indices

    s, b = cfg.sample, cfg.train.micro_batch
    g = torch.Generator().manual_seed(seed)
    words = ["red", "circle", "moves", "left", "then", "the", "blue", "square", "stops", "slowly", "appears"]
    texts = [" ".join(words[(i * 7 + j * 3) % len(words)] for j in range(6 + i % 5)) for i in range(b * s.num_windows)]
    batch = {"video": torch.randn(b, s.frames, 3, s.image_size, s.image_size, generator=g),
             "text": tokenizer(texts),
             "labels": torch.stack([torch.randperm(s.num_windows, generator=g) for _ in range(b)])}
    keeps = [keep_indices(cfg.patch_grid(), s.mask, True, g) for _ in range(b)]
    if keeps[0] is not None:
        batch["keep_indices"] = torch.stack(keeps)
    return batch


def official_sample(transform, key: str, members: dict, epoch: int):
    """One training sample the official way (:func:`tvts.data.pipeline.official_clip`: a seek per frame,
    PIL resize, float64 ClipToTensor), with the engine's frame times, shuffle and mask draws
    (``transform``: a training :class:`tvts.data.pipeline.SampleTransform`, whose ``assemble`` makes them)."""
    from tvts.data.pipeline import official_clip, sample_rng

    t = transform
    meta = json.loads(members["json"])
    source = members.get("mp4") or members["webm"]

    def video(times, generator):
        return official_clip(source, times, t.image_size, t.resize_short, t.normalize, True, generator)

    windows = meta["windows"]
    return t.assemble(key, "transcripts", epoch, float(windows[0][0]), float(windows[-1][1]), list(meta["transcripts"]),
                      sample_rng(t.seed, epoch, key), video)


class _OfficialStream(IterableDataset):
    def __init__(self, cfg, rank: int, world: int, tokenizer, shards: list[str]):
        super().__init__()
        self.cfg, self.rank, self.world, self.tokenizer, self.shards = cfg, rank, world, tokenizer, shards

    def __iter__(self):
        from tvts.data.pipeline import SampleTransform, collate
        from tvts.data.shards import read_shard

        worker = get_worker_info()
        wid, workers = (worker.id, worker.num_workers) if worker else (0, 1)
        readers = self.world * workers
        mine = self.shards[(self.rank * workers + wid) % len(self.shards)::readers] or self.shards
        transform = SampleTransform(self.cfg, train=True)
        samples = []
        for epoch in itertools.count():
            for path in mine:
                for key, members in read_shard(path):
                    samples.append(official_sample(transform, key, members, epoch))
                    if len(samples) == self.cfg.train.micro_batch:
                        yield "transcripts", collate(samples, "transcripts", self.tokenizer)
                        samples = []


def official_loader(cfg, info, tokenizer) -> DataLoader:
    """The official-style data path over ``data.train``: each worker reads its shards and decodes every
    sample with one seek per frame (no decoded cache), ``data.num_workers`` workers as the engine's loader."""
    from tvts.data.loader import resolve_shards

    shards = resolve_shards(cfg.data.train)
    return DataLoader(_OfficialStream(cfg, info.rank, info.world_size, tokenizer, shards), batch_size=None,
                      num_workers=cfg.data.num_workers)


# ----------------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------------
class Runner:
    """One setup, built: model + strategy, with the memory it took to build and warm up.

    ``memory_bytes`` = peak memory from just before the model was built to the end of :meth:`warm_up`
    (CUDA: allocated bytes; CPU: resident set growth), i.e. this setup's own model states, gradients,
    optimizer states and activations, comparable with :func:`tvts.engine.memory.predict`.
    """

    def __init__(self, cfg, setup: Setup, info, total_steps: int):
        from tvts.engine import memory
        from tvts.engine.build import build_strategy
        from tvts.runtime import seed_everything
        from tvts.models import build_model

        self.setup, self.info = setup, info
        self.cfg = setup.apply(cfg)
        self.memory = PeakMemory(info.device)
        gc.collect()
        self.memory.reset()
        seed_everything(self.cfg.seed + info.rank)
        with memory.init_context(self.cfg, info.world_size):  # as the trainer: fsdp/zero3 never hold it whole
            self.model = build_model(self.cfg)
        self.strategy = build_strategy(self.cfg, self.model, info, total_steps)
        if not setup.loss_scaling:  # fp16 without a loss scaler, as the official H/14 run
            self.strategy.scaler = torch.amp.GradScaler(info.device.type, enabled=False)
        self.memory_bytes: Optional[int] = None

    def step(self, batches: Iterator, sync: bool = True) -> dict:
        """One training step; {phase: seconds}. ``sync=False``: backward under ``no_sync()`` and no
        optimizer step (the communication probe)."""
        from tvts import kernels
        from tvts.engine.run import to_device

        kernels.set_default_backend(self.cfg.train.attention)
        clock = PhaseClock(self.info.device)
        _, batch = next(batches)
        batch = to_device(batch, self.info.device)
        clock.mark("data_wait", host=True)
        with (self.strategy.no_sync() if not sync else contextlib.nullcontext()):
            out = self.strategy.forward(batch)
            clock.mark("forward")
            self.strategy.backward(out.loss)
            clock.mark("backward")
        if sync:
            self.strategy.step()
        else:
            self.strategy.zero_grad()
        clock.mark("optimizer")
        return clock.split()

    def warm_up(self, batches: Iterator, steps: int) -> None:
        for _ in range(steps):
            self.step(batches)
        if self.memory_bytes is None:
            self.memory_bytes = max(0, self.memory.peak_bytes() - self.memory.baseline)

    def comm_measurable(self) -> bool:
        return self.info.world_size > 1 and self.strategy.name in ("ddp", "fsdp")

    def close(self) -> None:
        self.strategy = self.model = None
        gc.collect()
        if self.info.device.type == "cuda":
            torch.cuda.empty_cache()


LOADER_PREFETCH = 2  # batches a DataLoader worker makes ahead (prefetch_factor): made while its runner waited


def run_rounds(runners: Sequence[Runner], sources: Sequence[Callable[[], Iterator]], steps: int,
               warmup: int | Sequence[int], block: int = 1, settle: int = 0) -> list[list[dict]]:
    """Per runner, the phase splits of ``steps`` timed steps after ``warmup`` steps (one number, or one per
    runner). The runners take turns, ``block`` timed steps each, so that other load on the machine hits
    every setup alike; each turn starts with ``settle`` untimed steps (for loaders: the batches their
    workers made ahead while the other runners had the machine). Runners that can isolate communication
    also run one backward pass under ``no_sync()`` per timed step; their ``communication`` is the
    difference of the median backward times."""
    timings: list[list[dict]] = [[] for _ in runners]
    probes: list[list[dict]] = [[] for _ in runners]
    warmups = [warmup] * len(runners) if isinstance(warmup, int) else list(warmup)
    iterators = []
    try:
        for source in sources:
            iterators.append(iter(source()))
        for runner, batches, n in zip(runners, iterators, warmups):
            runner.warm_up(batches, n)
        while any(len(t) < steps for t in timings):
            for runner, batches, timed, probe in zip(runners, iterators, timings, probes):
                turn = min(block, steps - len(timed))
                for _ in range(settle if turn else 0):
                    runner.step(batches)
                for _ in range(turn):
                    timed.append(runner.step(batches))
                    if runner.comm_measurable():
                        probe.append(runner.step(batches, sync=False))
    finally:
        for it in iterators:
            _close(it)
    for runs, probe in zip(timings, probes):
        comm = None
        if probe:
            comm = max(0.0, float(np.median([r["backward"] for r in runs]) - np.median([r["backward"] for r in probe])))
        for r in runs:
            r["communication"] = comm
    return timings


def _close(iterator) -> None:
    close = getattr(iterator, "close", None) or getattr(iterator, "_shutdown_workers", None)
    if close is not None:
        close()


# ----------------------------------------------------------------------------------------------
# Arithmetic
# ----------------------------------------------------------------------------------------------
def flops_per_clip(cfg, model) -> float:
    """Training FLOPs of one clip (:func:`tvts.engine.metrics.train_flops_per_clip`) for a built model."""
    from tvts.engine.metrics import train_flops_per_clip
    from tvts.models import flops

    text = model.text
    report = flops(cfg, text_config=getattr(text, "hf_config", None))
    trainable = any(p.requires_grad for p in text.parameters())
    return train_flops_per_clip(report, trainable, getattr(text, "cache", None) is not None)


def throughput(step_s: float, micro_batch: int, world_size: int, flops_clip: float, tokens_clip: int,
               peak_flops: float) -> dict:
    """Rates of one timed setup. ``step_s``: seconds per optimizer step (every rank runs ``micro_batch``
    clips); clips/s and tokens/s are global, TFLOP/s and MFU per device."""
    from tvts.engine.metrics import mfu

    clips_per_s = micro_batch * world_size / step_s if step_s > 0 else 0.0
    per_device = clips_per_s / world_size
    return {"clips_per_s": clips_per_s, "tokens_per_s": clips_per_s * tokens_clip,
            "tflops": per_device * flops_clip / 1e12, "mfu": mfu(per_device, flops_clip, peak_flops)}


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


# ----------------------------------------------------------------------------------------------
# Largest micro-batch
# ----------------------------------------------------------------------------------------------
def is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


def search_largest(fits: Callable[[int], bool], start: int = 1, limit: int = 1 << 14) -> tuple[int, list[tuple[int, bool]]]:
    """The largest micro-batch ``b <= limit`` with ``fits(b)``, assuming fitting is monotone: doubling from
    ``start`` until a failure, then bisection. Returns (b, [(tried, fitted), ...]); b = 0 if ``start`` fails."""
    tried: list[tuple[int, bool]] = []

    def probe(b: int) -> bool:
        ok = fits(b)
        tried.append((b, ok))
        return ok

    lo, hi = 0, None
    b = start
    while b <= limit:
        if not probe(b):
            hi = b
            break
        lo, b = b, b * 2
    if hi is None:
        if lo == limit or not tried:
            return lo, tried
        hi = limit + 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if probe(mid):
            lo = mid
        else:
            hi = mid
    return lo, tried


def step_fits(cfg, setup: Setup, info, batch_for: Callable[[object], dict]) -> Callable[[int], bool]:
    """``fits(b)`` for :func:`search_largest`: build the setup at micro-batch ``b`` and run two training steps
    (the second one holds the optimizer states); an out-of-memory error frees everything and returns False."""
    def fits(b: int) -> bool:
        runner = None
        try:
            runner = Runner(cfg, replace(setup, micro_batch=b), info, total_steps=2)
            batches = itertools.repeat(("transcripts", batch_for(runner.cfg)))
            runner.warm_up(batches, 2)
            return True
        except (torch.OutOfMemoryError, RuntimeError) as err:
            if not is_oom(err):
                raise
            return False
        finally:
            if runner is not None:
                runner.close()
            gc.collect()
            if info.device.type == "cuda":
                torch.cuda.empty_cache()
    return fits


def available_memory_bytes(device: torch.device) -> int:
    """What a new setup may use: free GPU memory, or MemAvailable of this machine."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


# ----------------------------------------------------------------------------------------------
# Whole runs
# ----------------------------------------------------------------------------------------------
def _synthetic_source(cfg, tokenizer) -> Callable[[], Iterator]:
    batch = synthetic_batch(cfg, tokenizer)
    return lambda: itertools.repeat(("transcripts", batch))


def _loader_source(cfg, info, tokenizer, setup: Setup) -> Callable[[], Iterator]:
    if setup.decoder == "official":
        return lambda: iter(official_loader(cfg, info, tokenizer))
    from tvts.data.loader import build_train_loader

    return lambda: iter(build_train_loader(cfg, info, tokenizer))


def device_peak(device: torch.device, tries: int = 5) -> tuple[float, str]:
    """(peak FLOP/s, what it is): the GPU's rated peak, or the fastest of ``tries`` CPU matmul measurements
    (the same "fastest" rule as the synthetic CPU steps, so that other jobs do not lower the peak alone)."""
    from tvts.engine.metrics import device_peak_flops, measure_cpu_matmul_peak

    if device.type != "cpu":
        return device_peak_flops(device)
    return device_peak_flops(device, cpu_peak=max(measure_cpu_matmul_peak() for _ in range(tries)))


def loader_warmup(cfg, setup: Setup, info, warmup: int) -> int:
    """Warm-up steps before timing a loader: with the engine's decoded cache on, one epoch of this rank's
    clips first (the first epoch decodes whole clips into the cache: not the steady state), else ``warmup``."""
    if setup.decoder != "engine" or not cfg.data.decoded_cache_mb:
        return warmup
    from tvts.data.shards import list_shards

    clips = sum(n or 0 for spec in cfg.data.train for _, n in list_shards(spec))
    return max(warmup, math.ceil(clips / info.world_size / cfg.train.micro_batch) + 1)


def new_report(cfg, config_path: str, info, peak: tuple[float, str], flops_clip: float) -> dict:
    from tvts.perf.common import environment

    return {"schema": SCHEMA, "environment": environment(info.device), "config": str(config_path),
            "device": info.device.type if info.device.type == "cpu" else torch.cuda.get_device_name(info.device),
            "peak_flops": float(peak[0]), "peak_name": peak[1], "flops_per_clip": float(flops_clip),
            "visible_tokens_per_clip": cfg.patch_grid().visible_tokens, "world_size": info.world_size,
            "runs": [], "speedups": []}


def _prime(cfg, setup: Setup, info, tokenizer) -> None:
    """CPU: one throwaway build and step, so that one-time imports and thread pools do not count as the
    first measured setup's memory (CUDA counts allocated tensors only)."""
    if info.device.type == "cpu":
        runner = Runner(cfg, setup, info, 2)
        runner.warm_up(_synthetic_source(runner.cfg, tokenizer)(), 1)
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
        runner.warm_up(_synthetic_source(runner.cfg, tokenizer)(), 1)
        runners.append(runner)
    flops_clip = flops_per_clip(runners[0].cfg, runners[0].model)
    report = new_report(cfg, config_path, info, peak, flops_clip)
    budget = available_memory_bytes(info.device)
    for path in paths:
        sources = [_synthetic_source(r.cfg, tokenizer) if path == "synthetic" else
                   _loader_source(r.cfg, info, tokenizer, r.setup) for r in runners]
        warmups = [warmup if path == "synthetic" else loader_warmup(r.cfg, r.setup, info, warmup) for r in runners]
        if path == "synthetic":  # step by step
            timings = run_rounds(runners, sources, steps, warmups)
        else:  # in two turns each, past the batches a waiting loader made ahead
            timings = run_rounds(runners, sources, steps, warmups, block=max(1, math.ceil(steps / 2)),
                                 settle=LOADER_PREFETCH if len(runners) > 1 else 0)
        for runner, t in zip(runners, timings):
            report["runs"].append(summarise(runner, path, t, peak[0], flops_clip, report["visible_tokens_per_clip"], budget))
    for runner in runners:
        runner.close()
    report["speedups"] = speedups(report["runs"])
    return report


def sweep_grid(cfg, strategies: Sequence[str], attentions: Sequence[str], micro_batches: Sequence[int],
               checkpointing: Sequence[bool]) -> list[Setup]:
    base = engine_setup(cfg)
    return [replace(base, name=f"{s}/{a}/B{b}/{'ckpt' if c else 'no-ckpt'}", strategy=s, attention=a, micro_batch=b,
                    checkpointing=c)
            for s, a, b, c in itertools.product(strategies, attentions, micro_batches, checkpointing)]


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
        runner = None
        try:
            runner = Runner(cfg, setup, info, warmup + 2 * steps + 1)
            source = _synthetic_source(runner.cfg, tokenizer)
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


def largest_micro_batch(cfg, info, setup: Setup, limit: int = 1 << 12) -> dict:
    """GPU: search with out-of-memory recovery (:func:`search_largest` over real steps). CPU: the memory
    model's answer for the free memory (a search would swap, not fail), beside its measured error."""
    budget = available_memory_bytes(info.device)
    if info.device.type == "cuda":
        from tvts.models.text import build_tokenizer

        tokenizer = build_tokenizer(cfg)
        found, tried = search_largest(step_fits(cfg, setup, info, lambda c: synthetic_batch(c, tokenizer)),
                                      start=max(1, setup.micro_batch), limit=limit)
        return {"strategy": setup.strategy, "method": "search with OOM recovery", "micro_batch": found,
                "budget_bytes": budget, "tried": tried}
    try:
        from tvts.engine import memory
    except ImportError:
        return {"strategy": setup.strategy, "method": "memory model", "micro_batch": None, "budget_bytes": budget,
                "note": "tvts.engine.memory is not available in this checkout"}
    found = memory.largest_micro_batch(setup.apply(cfg), setup.strategy, info.world_size, budget)
    return {"strategy": setup.strategy, "method": "memory model (CPU)", "micro_batch": int(found),
            "budget_bytes": budget, "note": "CPU: predicted, not searched (a CPU swaps rather than fails)."}


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------
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
            ok = isinstance(obj[key], typ) or (typ is float and isinstance(obj[key], int) and not isinstance(obj[key], bool))
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
                     "prec": r["precision"] + ("" if r["loss_scaling"] or r["precision"] != "fp16" else " (no scaler)")})
    columns = [("setup", "setup", ""), ("path", "batches", ""), ("strategy", "strategy", ""),
               ("attention", "attention", ""), ("micro_batch", "B", "d"), ("ckpt", "ckpt", ""), ("prec", "precision", ""),
               ("step_ms", "step ms", ".1f"), ("data_wait_ms", "data ms", ".1f"), ("forward_ms", "fwd ms", ".1f"),
               ("backward_ms", "bwd ms", ".1f"), ("optimizer_ms", "opt ms", ".1f"), ("communication_ms", "comm ms", ".1f"),
               ("clips_per_s", "clips/s", ".1f"), ("ktokens_per_s", "k tokens/s", ".1f"), ("tflops", "TFLOP/s", ".3f"),
               ("mfu_pct", "MFU %", ".1f"), ("peak_mib", "peak MiB", ".0f"), ("pred_mib", "model MiB", ".0f"),
               ("err_pct", "model err %", "+.0f")]
    env = report["environment"]
    out = [f"Device: {report['device']} ({env.get('cpu', '')}); peak {report['peak_flops'] / 1e12:.3g} TFLOP/s "
           f"({report['peak_name']}); {report['flops_per_clip'] / 1e9:.3g} training GFLOP and "
           f"{report['visible_tokens_per_clip']} visible tokens per clip; {env.get('date')}, commit {env.get('commit')}.",
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
        out += [f"Sweep: fastest setup that fits ({_mib(s['budget_bytes']):.0f} MiB available): {s['fastest'] or 'none'}", ""]
    if report.get("largest_micro_batch"):
        lm = report["largest_micro_batch"]
        errors = [r["mem_error"] for r in report["runs"] if r.get("mem_error") is not None]
        error = f" Memory model error against measurement in this run: {100 * min(errors):+.0f} % to " \
                f"{100 * max(errors):+.0f} %." if errors else ""
        out += [f"Largest micro-batch ({lm['strategy']}, {lm['method']}, {_mib(lm['budget_bytes']):.0f} MiB available): "
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
