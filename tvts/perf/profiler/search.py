"""The largest micro-batch that fits: on a GPU a search over real training steps with out-of-memory
recovery (doubling, then bisection), on a CPU the memory model's answer for the free memory."""
from __future__ import annotations

import gc
import itertools
from dataclasses import replace
from typing import Callable

import torch

from tvts.perf.profiler.batches import synthetic_batch
from tvts.perf.profiler.runner import Runner
from tvts.perf.profiler.setups import Setup


def is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


def search_largest(fits: Callable[[int], bool], start: int = 1,
                   limit: int = 1 << 14) -> tuple[int, list[tuple[int, bool]]]:
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
    (the second one holds the optimizer states) on one batch, put on the device once; an out-of-memory error
    frees everything and returns False."""
    from tvts.engine.run import to_device

    def fits(b: int) -> bool:
        runner = None
        try:
            runner = Runner(cfg, replace(setup, micro_batch=b), info, total_steps=2)
            batches = itertools.repeat(("transcripts", to_device(batch_for(runner.cfg), info.device)))
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
