"""Timing training steps: a :class:`Runner` holds one built setup (model + strategy) and times its steps on
a stream of batches, split into phases: ``data_wait`` (host: waiting for the next batch and copying it to
the device), ``forward``, ``backward`` (gradient reduction included where the strategy overlaps it),
``optimizer``. ``communication`` is measured where it can be isolated: for ddp and fsdp over several ranks
it is the *exposed* reduction time, backward with gradient sync minus backward under ``no_sync()``;
elsewhere it is reported as None (one rank has none; DeepSpeed reduces inside its own calls).
:func:`run_rounds` lets several runners take turns."""
from __future__ import annotations

import contextlib
import gc
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch

from tvts.perf.common import PeakMemory, PhaseClock
from tvts.perf.profiler.setups import Setup


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
