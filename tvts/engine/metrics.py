"""Throughput arithmetic (clips/s, TFLOP/s, MFU) and the rank-0 logs: tensorboard, metrics.jsonl, console.

FLOP convention: 1 multiply-add = 2 FLOPs, masked patches excluded (tvts.models.flops). Training FLOPs
per clip = 3 x forward for every part that gets gradients (forward + 2x backward), 1 x forward for a
frozen text tower, 0 for transcripts served from the frozen-text cache. MFU = achieved FLOP/s / peak.
"""
from __future__ import annotations

import json
import math
import os
import resource
import sys
import time
from pathlib import Path
from typing import Optional

import torch

# Dense bf16 peaks in FLOP/s (anchors.md §2.1): H100 and H200 share the GH100 compute.
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def device_peak_flops(device: torch.device, cpu_peak: Optional[float] = None) -> tuple[float, str]:
    """(peak FLOP/s, what it is) for the device; CPUs use a measured fp32 matmul peak."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peak in PEAK_FLOPS.items():
            if key in name:
                return peak, f"{key} bf16 dense"
        return float("nan"), f"unknown GPU {name!r}"
    return (cpu_peak or measure_cpu_matmul_peak()), "CPU fp32 matmul, measured"


def measure_cpu_matmul_peak(n: int = 1024, seconds: float = 0.3) -> float:
    """FLOP/s of an n x n fp32 matmul on this process's threads (the CPU "peak" for MFU)."""
    g = torch.Generator().manual_seed(0)  # not the global RNG: the run's draws do not depend on measuring
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    torch.mm(a, b)
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        reps += 1
    return 2.0 * n**3 * reps / (time.perf_counter() - start)


def train_flops_per_clip(report, text_trainable: bool, text_cached: bool) -> float:
    """Training FLOPs of one clip from a :class:`tvts.models.flops.FlopReport`."""
    text = 0.0 if text_cached else report.text * (3.0 if text_trainable else 1.0)
    return 3.0 * (report.video + report.sorter + report.heads) + text


def mfu(clips_per_s: float, flops_per_clip: float, peak: float) -> float:
    return clips_per_s * flops_per_clip / peak if peak and math.isfinite(peak) else float("nan")


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


DEVICE_VALUES = "device_values"  # a window entry's values still on the device: (names, 1-D tensor)


def on_device(values: dict[str, torch.Tensor]) -> dict:
    """A window entry for ``values`` (0-d tensors on the device, e.g. a step's losses): kept there, stacked
    (no host sync), until :func:`read_window` reads the whole window at once."""
    return {DEVICE_VALUES: (list(values), torch.stack(list(values.values())))} if values else {}


def read_window(window: list[dict]) -> None:
    """Replace, in place, every entry's device values (:func:`on_device`) by Python floats, with one host read
    (``tolist``) for the whole window: a training loop reads its losses once per log interval (and before a
    checkpoint, which saves the window), not once per step. The floats are those of a per-step read."""
    pending = [w for w in window if DEVICE_VALUES in w]
    if not pending:
        return
    values = torch.cat([w[DEVICE_VALUES][1] for w in pending]).tolist()  # the one host sync
    start = 0
    for w in pending:
        names, _ = w.pop(DEVICE_VALUES)
        w.update(zip(names, values[start:start + len(names)]))
        start += len(names)


class MetricLogger:
    """Rank 0 writes ``metrics.jsonl`` (one object per logged step) and tensorboard scalars."""

    def __init__(self, run_dir: Path, enabled: bool, total_steps: int):
        self.enabled = enabled
        self.total = total_steps
        self.writer = None
        self.file = None
        if enabled:
            run_dir.mkdir(parents=True, exist_ok=True)
            self.file = open(run_dir / "metrics.jsonl", "a", buffering=1)
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def log(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        record = {"step": step, **{k: (float(v) if isinstance(v, (int, float)) else v) for k, v in values.items()}}
        self.file.write(json.dumps(record) + "\n")
        for key, value in values.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(key.replace(".", "/"), value, step)
        self._console(step, values)

    def record(self, step: int, values: dict) -> None:
        """One ``metrics.jsonl`` object that is not a series (what a run started from): no console, no tensorboard."""
        if self.enabled:
            self.file.write(json.dumps({"step": step, **values}) + "\n")

    def _console(self, step: int, v: dict) -> None:
        if "val/loss" in v:
            acc = ""
            if "val/sort_acc" in v:
                acc = f"  sort_acc {v['val/sort_acc']:.3f}  all-K-right {v['val/sort_acc_all']:.3f}"
            print(f"held-out @ {step}: loss {v['val/loss']:.4f}{acc}  ({int(v['val/clips'])} clips)", flush=True)
            return
        eta = v.get("step_time_s", 0.0) * (self.total - step)  # at the rate of the last interval
        width = 24
        filled = int(width * step / max(1, self.total))
        bar = "#" * filled + "." * (width - filled)
        parts = [f"[{bar}] {step}/{self.total}", f"loss {v.get('loss', float('nan')):.4f}"]
        if "sort_acc" in v:
            parts.append(f"sort_acc {v['sort_acc']:.3f}")
        parts.append(f"{v.get('clips_per_s', 0):.1f} clips/s")
        if math.isfinite(v.get("mfu", float("nan"))):
            parts.append(f"MFU {100 * v['mfu']:.1f}%")
        parts.append(f"data {100 * v.get('data_wait_frac', 0):.0f}%")
        parts.append(f"ETA {_fmt_time(eta)}")
        print("  ".join(parts), file=sys.stdout, flush=True)

    def close(self) -> None:
        if self.file:
            self.file.close()
        if self.writer:
            self.writer.close()


def _fmt_time(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def rss_bytes() -> int:
    """Current resident set size of this process."""
    try:
        with open(f"/proc/{os.getpid()}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0
