"""Timing, memory and table helpers shared by the benchmark and profiling launchers.

Timing on CUDA uses events (GPU time between two points, one synchronisation at the end); on CPU the
wall clock. Peak memory on CUDA is ``torch.cuda.max_memory_allocated``; on CPU the process's resident
high-water mark (``VmHWM``), which Linux resets through ``/proc/self/clear_refs`` — the CPU twin of
``torch.cuda.reset_peak_memory_stats``.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from tvts.engine.memory import ActivationMeter, trim_host_memory


# ----------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------
def timed(fns: dict, device: torch.device, reps: int) -> dict:
    """Seconds per call of each function. Calls are interleaved round by round so that a busy neighbour
    slows every variant alike; CUDA: events around each call, median; CPU: the fastest round."""
    for fn in fns.values():
        fn()  # warm-up: compilation, autotuning
    times = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            clock = PhaseClock(device)
            fn()
            clock.mark("call")
            times[name].append(clock.split()["call"])
    pick = statistics.median if device.type == "cuda" else min
    return {name: pick(t) for name, t in times.items()}


class PhaseClock:
    """Seconds spent in consecutive phases of one step: ``mark(name)`` ends the phase ``name``.

    CUDA: an event is recorded at each mark and ``split()`` synchronises once, so phases measure GPU time
    without stalling the host between them. ``host=True`` marks a phase whose cost is on the host (data
    wait): its wall time is used on every device. CPU: wall time between marks.
    """

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.marks: list[tuple[str, float, object, bool]] = []
        self.start_wall = time.perf_counter()
        self.start_event = self._event()

    def _event(self):
        if not self.cuda:
            return None
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def mark(self, name: str, host: bool = False) -> None:
        self.marks.append((name, time.perf_counter(), self._event(), host))

    def split(self) -> dict[str, float]:
        """{phase: seconds} (phases marked twice are summed)."""
        if self.cuda:
            torch.cuda.synchronize()
        out: dict[str, float] = {}
        prev_wall, prev_event = self.start_wall, self.start_event
        for name, wall, event, host in self.marks:
            if self.cuda and not host:
                seconds = prev_event.elapsed_time(event) / 1e3
            else:
                seconds = wall - prev_wall
            out[name] = out.get(name, 0.0) + seconds
            prev_wall, prev_event = wall, event
        return out


# ----------------------------------------------------------------------------------------------
# Memory
# ----------------------------------------------------------------------------------------------
def _status_kib(field: str) -> int:
    try:
        with open(f"/proc/{os.getpid()}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class PeakMemory:
    """Peak memory of a region: ``reset()`` then ``peak_bytes()``; ``baseline`` is what was held at reset.

    CUDA: allocated tensor bytes (``torch.cuda.max_memory_allocated``). CPU: resident set high-water mark
    (everything the process holds: tensors, allocator slack, libraries), reset through
    ``/proc/self/clear_refs``; where the kernel refuses the reset the lifetime peak is returned and
    ``resettable`` is False.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.resettable = True
        self.baseline = 0

    def current_bytes(self) -> int:
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device)
        return _status_kib("VmRSS") * 1024

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            trim_host_memory()  # freed heap pages go back to the OS, or a new region would reuse them unseen
            try:
                with open(f"/proc/{os.getpid()}/clear_refs", "w") as f:
                    f.write("5")  # 5: reset the peak RSS to the current RSS (Linux >= 4.0)
            except OSError:
                self.resettable = False
        self.baseline = self.current_bytes()

    def peak_bytes(self) -> int:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device)
        return _status_kib("VmHWM") * 1024


def saved_mib(step: Callable, device: torch.device) -> tuple[float, Optional[float]]:
    """(MiB saved for backward by one forward ``step()``, CUDA peak MiB of forward+backward above what was
    allocated before; None on CPU)."""
    peak = PeakMemory(device)
    if device.type == "cuda":
        peak.reset()
    with ActivationMeter() as meter:
        out = step()
    out.float().sum().backward()
    above = (peak.peak_bytes() - peak.baseline) / 2**20 if device.type == "cuda" else None
    return meter.bytes / 2**20, above


# ----------------------------------------------------------------------------------------------
# Tables and reports
# ----------------------------------------------------------------------------------------------
def cell(value, fmt: str = "") -> str:
    """A table cell: '' for None, ``fmt`` for numbers (floats default to 3 significant digits)."""
    if value is None:
        return ""
    if isinstance(value, float) and not fmt:
        return f"{value:.3g}"
    return format(value, fmt)


def markdown_table(rows: Sequence[dict], columns: Sequence[tuple[str, str, str]]) -> str:
    """A markdown table; ``columns`` = (key, header, format spec) in order."""
    lines = ["| " + " | ".join(c[1] for c in columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(cell(r.get(c[0]), c[2]) for c in columns) + " |" for r in rows])


def markdown_sections(rows: Sequence[dict]) -> str:
    """One table per ``row["table"]`` (columns in first-seen order); rows with ``skipped`` are listed once
    below their table as "Not run"."""
    out = []
    for table in dict.fromkeys(r["table"] for r in rows):
        sub = [r for r in rows if r["table"] == table and "skipped" not in r]
        cols = list(dict.fromkeys(c for r in sub for c, v in r.items() if c != "table" and v is not None))
        out += [f"**{table}**", "", markdown_table(sub, [(c, c, "") for c in cols]), ""]
        skipped = dict.fromkeys(f"{r['backend']} ({r['skipped']})" for r in rows
                                if r["table"] == table and "skipped" in r)
        out += [f"Not run: {'; '.join(skipped)}.", ""] if skipped else []
    return "\n".join(out)


def fmt_line(row: dict) -> str:
    """``key=value`` pairs of a result row on one console line."""
    return "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items() if v is not None)


def environment(device: torch.device) -> dict:
    """Where and when a measurement ran: device, versions, commit (``-dirty`` with local changes), date
    (UTC), command line and the load average (other jobs on a shared machine move timings)."""
    def git(*cmd):
        try:
            return subprocess.run(["git", *cmd], capture_output=True, text=True).stdout.strip()
        except OSError:
            return ""

    dirty = git("status", "--porcelain", "--untracked-files=no")
    commit = git("rev-parse", "--short", "HEAD") + ("-dirty" if dirty else "")
    cpu = "?"
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    except OSError:
        pass
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return dict(device=name, cpu=cpu, cpu_count=os.cpu_count(), torch=torch.__version__, triton=triton_version,
                commit=commit, date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                command=" ".join(["python", *sys.argv]), load_avg=list(os.getloadavg()),
                triton_interpret=os.environ.get("TRITON_INTERPRET", "0"))


def write_json(path: str | Path, obj) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1))
    return path
