"""Training-step sections: bf16 steps of the recipes under ``single`` and one-rank ``fsdp`` (clips/s, MFU, peak
memory beside ``tvts.engine.memory.predict``), and the engine beside the official way on the same device.

Both drive :mod:`tvts.perf.profiler`, what ``launch/profile.py`` runs: a :class:`~tvts.perf.profiler.Runner`
per setup, timed on synthetic batches with CUDA events after synchronisation (``PhaseClock``), the median
step on CUDA and the fastest on CPU; ``--reference`` there is :func:`run_reference` here.
"""
from __future__ import annotations

import itertools
import math
import time

from tvts.perf.gpucheck import models
from tvts.perf.gpucheck.core import Context, SectionTimeout

# (model, micro-batches): the recipe's own first, then smaller and larger; each under every strategy
MICRO_BATCHES = {"v1 B/16": (24, 8, 48), "v2 L/14": (8, 4, 16), "v2 H/14": (2, 4)}
STRATEGIES = ("single", "fsdp")
DRY_PLAN = [("v1 B/16", "single", 2, False), ("v2 B/16", "fsdp", 2, False)]
MEMORY_HEADROOM = 0.9  # a setup predicted above this fraction of the free GPU memory is not built


def step_plan(dry: bool) -> list[tuple[str, str, int, bool]]:
    """(model, strategy, micro-batch, torch.compile) in the order they run: every model at its recipe's
    micro-batch under both strategies first, so that a budget cut keeps the comparisons that matter most;
    then DeepSpeed ZeRO-2 (bf16 with fp32 masters: DeepSpeed's own mixed precision) and ``torch.compile``
    per block, once each (the first compilation is the slowest step of any setup)."""
    if dry:
        return list(DRY_PLAN)
    tiers = max(len(b) for b in MICRO_BATCHES.values())
    plan = [(m, s, b[t], False) for t in range(tiers) for m, b in MICRO_BATCHES.items() if t < len(b) for s in STRATEGIES]
    recipe = MICRO_BATCHES["v1 B/16"][0]
    return plan + [("v1 B/16", "zero2", recipe, False), ("v1 B/16", "single", recipe, True)]


def device_peak(ctx: Context) -> tuple[float, str]:
    """The MFU denominator: the GPU's rated bf16 peak, or (``--dry``) one short CPU matmul measurement."""
    from tvts.engine.metrics import device_peak_flops, measure_cpu_matmul_peak

    if ctx.device.type == "cuda":
        return device_peak_flops(ctx.device)
    return device_peak_flops(ctx.device, cpu_peak=measure_cpu_matmul_peak(n=256, seconds=0.05))


def steps_and_warmup(ctx: Context) -> tuple[int, int]:
    """(timed steps, warm-up steps) per setup; the profiler warms each of its setups up one more step."""
    return (1, 0) if ctx.dry else (6, 3)


def measure_setup(ctx: Context, cfg, peak: tuple[float, str], tokenizer) -> dict:
    """Build ``cfg``'s engine setup, warm it up, time its steps on one synthetic batch; the profiler's report
    row (``summarise``: phases, clips/s, TFLOP/s, MFU, measured and predicted memory)."""
    from tvts.perf import profiler
    from tvts.runtime import DistInfo

    steps, warmup = steps_and_warmup(ctx)
    warmup += 1  # the first step allocates what the memory measurement must see (run_rounds measures it)
    info = DistInfo()
    runner = profiler.Runner(cfg, profiler.engine_setup(cfg), info, total_steps=10**6)
    try:
        batch = profiler.synthetic_batch(runner.cfg, tokenizer)
        timings = profiler.run_rounds([runner], [lambda: itertools.repeat(("transcripts", batch))], steps, warmup)[0]
        row = profiler.summarise(runner, "synthetic", timings, peak[0], profiler.flops_per_clip(runner.cfg, runner.model),
                                 cfg.patch_grid().visible_tokens, profiler.available_memory_bytes(info.device))
        row["loss"] = forward_loss(runner.strategy, batch, info.device)
        if not math.isfinite(row["loss"]):
            raise FloatingPointError(f"loss {row['loss']} after {warmup + steps} steps")
        return row
    finally:
        runner.close()


def forward_loss(strategy, batch: dict, device) -> float:
    """The training loss of ``batch`` under the strategy's precision, without gradients (the profiler's
    timed steps do not keep it)."""
    import torch

    from tvts.engine.run import to_device

    with torch.no_grad():
        return float(strategy.forward(to_device(batch, device)).loss)


def _row(model: str, row: dict, seconds: float) -> dict:
    gib = lambda b: None if b is None else b / 2**30  # noqa: E731
    return {"model": model, "strategy": row["strategy"], "micro_batch": row["micro_batch"],
            "checkpointing": row["checkpointing"], "attention": row["attention"], "precision": row["precision"],
            "step_ms": 1e3 * row["step_s"], **{f"{p}_ms": 1e3 * (row["phases_s"][p] or 0.0)
                                              for p in ("forward", "backward", "optimizer")},
            "clips_per_s": row["clips_per_s"], "tflops": row["tflops"], "mfu_pct": 100 * row["mfu"],
            "peak_gib": gib(row["peak_mem_bytes"]), "predicted_gib": gib(row["predicted_mem_bytes"]),
            "mem_error_pct": None if row["mem_error"] is None else 100 * row["mem_error"], "loss": row["loss"],
            "setup_s": seconds}


def _tokenizer(cfg, cache: dict):
    from tvts.models.text import build_tokenizer

    key = (cfg.model.text.kind, cfg.model.text.context_length, cfg.model.text.path)
    if key not in cache:
        cache[key] = build_tokenizer(cfg)
    return cache[key]


def _refusal(ctx: Context, cfg, strategy: str, micro_batch: int, compiled: bool):
    """Why a setup is not built here (predicted out of GPU memory, ZeRO without DeepSpeed, ...), or None."""
    import importlib.util

    import torch

    from tvts.engine import memory

    if ctx.dry and (strategy.startswith("zero") or compiled):
        return "--dry: DeepSpeed's CPU ops and inductor's C++ build for minutes; tests/engine covers both on CPU"
    if strategy.startswith("zero") and importlib.util.find_spec("deepspeed") is None:
        return "deepspeed is not installed"
    if ctx.device.type != "cuda":
        return None
    need = memory.predict(cfg, strategy, 1, micro_batch).total_bytes
    free = torch.cuda.mem_get_info()[0]
    if need > MEMORY_HEADROOM * free:
        return f"predicted {need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free"
    return None


def run_training(ctx: Context) -> None:
    """bf16 steps per :func:`step_plan`, one part per setup (out of memory: skipped; an error: failed, and the
    next setup runs). Skips, and ends as a timeout, setups that the time left would not cover (the previous
    setup of their model took longer)."""
    import torch

    from tvts.perf.profiler import is_oom

    peak = device_peak(ctx)
    ctx.put("peak", {"flops": peak[0], "name": peak[1]})
    plan, took, tokenizers = step_plan(ctx.dry), {}, {}
    ctx.put("planned", len(plan))
    cut = 0
    for model, strategy, micro_batch, compiled in plan:
        name = f"{model} {strategy}{' compiled' if compiled else ''} B={micro_batch}"
        ctx.check(name)
        with ctx.part(name):
            if took.get(model, 0.0) * 1.2 > ctx.left():  # a model's first setup also compiles: the last one counts
                cut += 1
                ctx.skip(f"budget: the previous {model} setup took {took[model]:.0f} s")
            cfg = models.load(model, ctx.dry, [f"train.strategy={strategy}", f"train.micro_batch={micro_batch}",
                                               "train.precision=bf16", "train.attention=auto", f"train.compile={compiled}"])
            why = _refusal(ctx, cfg, strategy, micro_batch, compiled)
            if why:
                ctx.skip(why)
            start = time.perf_counter()
            try:
                row = measure_setup(ctx, cfg, peak, _tokenizer(cfg, tokenizers))
            except (torch.OutOfMemoryError, RuntimeError) as err:
                if not is_oom(err):
                    raise
                ctx.skip("out of memory")
            finally:
                took[model] = time.perf_counter() - start
            ctx.add("rows", {**_row(model, row, took[model]), "compiled": compiled})
    if cut:
        raise SectionTimeout(f"budget: {cut} of {len(plan)} setups not run")


def run_reference(ctx: Context) -> None:
    """``launch/profile.py --reference`` on the device: the v1 recipe run by the engine (bf16, ``auto``
    attention) and the official way (fp32, einsum attention, no checkpointing), side by side on synthetic
    batches, then v2 B/16 the same way; the speed-up is engine clips/s / official clips/s."""
    from tvts.perf import profiler
    from tvts.runtime import DistInfo

    peak = device_peak(ctx)
    steps, warmup = steps_and_warmup(ctx)
    for model in ("v1 B/16",) if ctx.dry else ("v1 B/16", "v2 B/16"):
        with ctx.part(model):
            ctx.check(model)
            cfg = models.load(model, ctx.dry, ["train.precision=bf16", "train.attention=auto", "train.strategy=single"])
            setups = [profiler.engine_setup(cfg), profiler.official_setup(cfg, ctx.device)]
            report = profiler.profile(cfg, DistInfo(), setups, ["synthetic"], steps, warmup, models.config_path(model), peak)
            for r in report["runs"]:
                ctx.add("rows", {"model": model, "setup": r["setup"], "strategy": r["strategy"], "attention": r["attention"],
                                 "precision": r["precision"], "micro_batch": r["micro_batch"], "step_ms": 1e3 * r["step_s"],
                                 "clips_per_s": r["clips_per_s"], "mfu_pct": 100 * r["mfu"]})
            for s in report["speedups"]:
                ctx.add("speedups", {"model": model, **s})


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------
def markdown_training(result: dict) -> list[str]:
    from tvts.perf.common import markdown_table

    rows = [r for r in result.get("rows", []) if "skipped" not in r]
    cols = [("model", "model", ""), ("strategy", "strategy", ""), ("compiled", "compiled", ""), ("micro_batch", "B", "d"),
            ("checkpointing", "ckpt", ""),
            ("step_ms", "step ms", ".1f"), ("forward_ms", "fwd ms", ".1f"), ("backward_ms", "bwd ms", ".1f"),
            ("optimizer_ms", "opt ms", ".1f"), ("clips_per_s", "clips/s", ".1f"), ("tflops", "TFLOP/s", ".3g"),
            ("mfu_pct", "MFU %", ".1f"), ("peak_gib", "peak GiB", ".2f"), ("predicted_gib", "model GiB", ".2f"),
            ("mem_error_pct", "model err %", "+.0f"), ("loss", "loss", ".3f"), ("setup_s", "setup s", ".0f")]
    peak = result.get("peak", {})
    out = [f"bf16, `auto` attention, synthetic batches; MFU against {peak.get('flops', 0) / 1e12:.3g} TFLOP/s "
           f"({peak.get('name')}). {len(rows)} of {result.get('planned', 0)} planned setups ran.", ""]
    out += [markdown_table(rows, cols), ""] if rows else []
    return out


def plot_training(result: dict, out_dir) -> list[str]:
    """steps.png: clips/s per setup, MFU written beside each bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result.get("rows", []) if "clips_per_s" in r]
    if not rows:
        return []
    labels = [f"{r['model']} · {r['strategy']}{' compiled' if r.get('compiled') else ''} · B={r['micro_batch']}"
              for r in rows]
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(rows) + 1.4))
    colours = ["#1f77b4" if r["strategy"] == "single" else "#ff7f0e" for r in rows]
    ax.barh(labels, [r["clips_per_s"] for r in rows], color=colours)
    for y, r in enumerate(rows):
        ax.text(r["clips_per_s"], y, f"  MFU {r['mfu_pct']:.1f} %", va="center", fontsize=7)
    ax.set_xlim(0, 1.3 * max(r["clips_per_s"] for r in rows))
    ax.invert_yaxis()
    ax.tick_params(axis="y", labelsize=7)
    ax.set_xlabel("clips/s (bf16 training steps, synthetic batches)")
    fig.tight_layout()
    fig.savefig(out_dir / "steps.png", dpi=110)
    plt.close(fig)
    return ["steps.png"]


def markdown_reference(result: dict) -> list[str]:
    from tvts.perf.common import markdown_table

    out = []
    if result.get("rows"):
        cols = [("model", "model", ""), ("setup", "setup", ""), ("precision", "precision", ""),
                ("attention", "attention", ""), ("micro_batch", "B", "d"), ("step_ms", "step ms", ".1f"),
                ("clips_per_s", "clips/s", ".1f"), ("mfu_pct", "MFU %", ".1f")]
        out += [markdown_table(result["rows"], cols), ""]
    for s in result.get("speedups", []):
        out.append(f"- **{s['model']}**: engine / official = **{s['speedup']:.2f}x** clips/s ({s['path']} batches)")
    return out + [""]
