"""The GPU check: the first contact with a GPU machine as one command with a hard time budget.

Sections, each independent (a failure is recorded with its one-line reason and the others still run), each
with its share of the budget (:mod:`tvts.perf.gpucheck.core` says how shares, deadlines and isolation work):

=================  =====  ===================================================================================
section            share  what
=================  =====  ===================================================================================
environment         0.03  GPU, driver, CUDA, torch, Triton; which of flash-attn, xformers, DALI, DeepSpeed import
kernel_exactness    0.17  every backend vs the fp32 reference, forward + backward, bf16 and fp16, at the models' shapes
kernel_speed        0.20  every installed backend at those shapes (ms, TFLOP/s); the ``auto`` choice they imply
training_steps      0.33  bf16 steps of v1 B/16, v2 L/14, v2 H/14 at a few micro-batches, single and fsdp
data                0.12  the PyAV loader feeding the step (data-wait fraction); DALI decode frames/s
reference           0.15  the engine beside the official way (``launch/profile.py --reference``): the speed-up
=================  =====  ===================================================================================

``run_check(options, out_dir)`` runs them and writes ``report.json``, ``report.md`` and the sections' PNGs.
``--dry`` (``CheckOptions(dry=True)``) is the CPU rehearsal CI runs: tiny shapes, Triton interpreted, the
CUDA-only parts "skipped: no CUDA". docs/profiling.md, "GPU check", has the device command.
"""
from __future__ import annotations

from pathlib import Path

from tvts.perf.gpucheck import data, environment, kernels, steps
from tvts.perf.gpucheck.core import SCHEMA, STATUSES, CheckOptions, Section, run_sections

SECTIONS = {s.name: s for s in (
    Section("environment", "Environment", 0.03, environment.run, environment.markdown, isolated=True),
    Section("kernel_exactness", "Kernel exactness", 0.17, kernels.run_exactness, kernels.markdown_exactness,
            interpreted=True),
    Section("kernel_speed", "Kernel speed", 0.20, kernels.run_speed, kernels.markdown_speed, kernels.plot_speed,
            interpreted=True),
    Section("training_steps", "Training steps", 0.33, steps.run_training, steps.markdown_training, steps.plot_training),
    Section("data", "Data", 0.12, data.run, data.markdown),
    Section("reference", "Official reference", 0.15, steps.run_reference, steps.markdown_reference),
)}


def run_check(options: CheckOptions, out_dir, log=print) -> dict:
    """Run the selected sections within ``options.budget_s`` and write the report under ``out_dir``; returns it.
    ``options.work_dir`` empty: a temporary directory, removed at the end."""
    import dataclasses
    import tempfile
    import time

    from tvts.perf.gpucheck.report import write_report

    start = time.time()
    with tempfile.TemporaryDirectory(prefix="tvts_gpu_check_work_") as tmp:
        options = dataclasses.replace(options, work_dir=options.work_dir or tmp)
        records = run_sections(SECTIONS, options, log)
    report = {"schema": SCHEMA, "options": dataclasses.asdict(options), "seconds": time.time() - start,
              "sections": records}
    write_report(report, Path(out_dir), SECTIONS)
    return report


__all__ = ["SECTIONS", "STATUSES", "CheckOptions", "run_check"]
