"""Kernel sections: exactness of every attention backend against the fp32 reference at the models' shapes,
and the speed of every installed backend beside the choice ``auto`` makes today.

Shapes come from the configs (:func:`attention_shapes`): the sequence each attention call of the video
encoder and the sorter sees, at the recipe's micro-batch. ``--dry`` keeps head dims and shrinks the rest
(:func:`shrink`) so that Triton's interpreter runs them in seconds.
"""
from __future__ import annotations

import contextlib
import math
import time

from tvts.perf.gpucheck import models
from tvts.perf.gpucheck.core import Context, Skip

# relative Frobenius error ||out - ref|| / ||ref|| of each of out, dq, dk, dv against the fp32 reference;
# bf16 operands land between 1e-3 and 1e-2, fp16 about 3x lower (8 more mantissa bits, same accumulation)
REL_TOL = {"bf16": 2e-2, "fp16": 6e-3}
BACKENDS = ("triton", "sdpa", "flash_attn", "xformers")  # what auto may choose; math is the reference
TUNED = "triton, tuned"
SHAPE_MODELS = ("v1 B/16", "v2 B/16", "v2 L/14", "v2 H/14")


def attention_shapes(cfg, label: str) -> list[dict]:
    """Every attention call of one training step of ``cfg``'s video encoder and sorter, as (B, H, Lq, Lk, D):
    v1 joint attention over CLS + visible tokens; v2 spatial groups (a frame's kept patches + CLS keys),
    temporal groups (a patch's frames + CLS keys) and CLS querying every token; the sorter's full block and
    its readout (K transcript queries over video tokens + K). ``padded`` adds a key padding mask (variable
    length inputs; no recipe pads today, ``auto`` has a rule for it)."""
    width, _, heads = cfg.video_dims()
    d, grid, b = width // heads, cfg.patch_grid(), cfg.train.micro_batch
    s, n, k = grid.slots, grid.keep, cfg.sample.num_windows
    tokens = 1 + s * n
    if cfg.model.video.family == "v1":
        video = [("joint", b, tokens, tokens, False), ("joint, padded keys", b, tokens, tokens, True)]
    else:
        video = [("spatial", b * s, n, n + 1, False), ("temporal", b * n, s, s + 1, False),
                 ("CLS query", b, 1, tokens, False)]
    shapes = [dict(shape=f"{label} {name}", B=bb, H=heads, Lq=lq, Lk=lk, D=d, padded=p) for name, bb, lq, lk, p in video]
    dim = cfg.model.video.output_dim or width
    sort_heads = cfg.model.sort.heads
    length = grid.visible_tokens + (1 if cfg.model.sort.video_tokens == "normed" else 0) + k
    for name, lq, padded in (("sort full", length, False), ("sort readout", k, False),
                             ("sort readout, padded keys", k, True)):
        shapes.append(dict(shape=f"{label} {name}", B=b, H=sort_heads, Lq=lq, Lk=length, D=dim // sort_heads, padded=padded))
    return shapes


def model_shapes(dry: bool) -> list[dict]:
    """:func:`attention_shapes` of every model of :data:`SHAPE_MODELS` (full size: shapes are arithmetic);
    the same (B, H, Lq, Lk, D, padded) is listed once, under every name that uses it. ``dry``: shrunk."""
    out: dict = {}
    for name in SHAPE_MODELS:
        for shape in attention_shapes(models.load(name, dry=False), name):
            shape = shrink(shape) if dry else shape
            key = tuple(shape[c] for c in ("B", "H", "Lq", "Lk", "D", "padded"))
            if key in out:
                out[key]["shape"] += f" = {shape['shape']}"
            else:
                out[key] = shape
    return list(out.values())


def shrink(shape: dict) -> dict:
    """A shape the interpreter runs in ~0.1 s: one sequence, one head, at most 24 queries and 40 keys,
    keeping the head dim and Lk - Lq (the CLS key of v2 groups, K transcripts of the readout)."""
    lq = min(shape["Lq"], 24)
    lk = min(lq + shape["Lk"] - shape["Lq"], 40)
    return {**shape, "B": 1, "H": 1, "Lq": lq, "Lk": lk}


def make_inputs(shape: dict, dtype, device, seed: int):
    """Fresh random q (B, H, Lq, D), k, v (B, H, Lk, D) in ``dtype`` and the (B, Lk) key padding mask (True =
    valid) or None: 30 % of the keys padded at random plus a leading run (a first key block with nothing to
    attend), the last key always valid."""
    import torch

    g = torch.Generator(device=device).manual_seed(seed)  # drawn where they are used: GPU batches are large
    b, h, lq, lk, d = (shape[c] for c in ("B", "H", "Lq", "Lk", "D"))
    q, k, v = (torch.randn(b, h, length, d, generator=g, device=device).to(dtype) for length in (lq, lk, lk))
    mask = None
    if shape["padded"]:
        mask = torch.rand(b, lk, generator=g, device=device) > 0.3
        mask[:, :min(16, lk // 2)] = False
        mask[:, -1] = True
    return q, k, v, mask


def _errors(got, want) -> dict:
    rel = [float((a.float() - b).norm() / b.norm().clamp_min(1e-30)) for a, b in zip(got, want)]
    return {"rel_err": max(rel), "max_abs_err": max(float((a.float() - b).abs().max()) for a, b in zip(got, want)),
            "finite": all(bool(a.isfinite().all()) for a in got)}


@contextlib.contextmanager
def full_fp32():
    """fp32 matrix products without TF32 (building a strategy on CUDA turns TF32 on for the process)."""
    import torch

    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def kernel_call(backend: str):
    """``f(q, k, v, mask)`` for a backend label: the dispatcher's backends by name; ``triton`` is the kernel at
    its default blocks (one compilation per block shape), ``triton, tuned`` as training calls it (autotuned on
    Hopper: every config of the space compiled and timed on each new (Lq, Lk, D))."""
    from tvts.kernels.attention import attention

    if backend == "triton":
        from tvts.kernels import triton_attention as ta

        return lambda q, k, v, mask: ta.flash_attention(q, k, v, mask,
                                                        blocks=ta.default_blocks(q.shape[2], k.shape[2], q.shape[3]))
    name = "triton" if backend == TUNED else backend
    return lambda q, k, v, mask: attention(q, k, v, key_padding_mask=mask, backend=name)


def triton_fallback(backend: str, q, k, mask) -> str | None:
    """Why the Triton kernels of this call failed to build, when they did: the call then computed with sdpa
    and the explicit backward instead (:mod:`tvts.kernels.triton_attention`), so its row measures those."""
    if backend not in ("triton", TUNED):
        return None
    from tvts.kernels import triton_attention as ta

    blocks = ta.default_blocks(q.shape[2], k.shape[2], q.shape[3]) if backend == "triton" else None
    return ta.build_failure(q, k, mask, blocks=blocks)


def exactness_case(shape: dict, dtype_name: str, backend: str, device, seed: int) -> dict:
    """Forward and backward of ``backend`` (a :func:`kernel_call` label) on fresh inputs against
    :func:`attention_reference` on the same inputs upcast to fp32: one row with the worst relative error of
    out, dq, dk, dv and whether it passes."""
    import torch

    from tvts.kernels.attention import attention_reference, refusal

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name]
    q, k, v, mask = make_inputs(shape, dtype, device, seed)
    row = {**shape, "dtype": dtype_name, "backend": backend}
    why = refusal("triton" if backend == TUNED else backend, q, k, v, mask)
    if why:
        return {**row, "skipped": f"{backend} {why}"}
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    start = time.perf_counter()
    out = kernel_call(backend)(*leaves, mask)
    grad = torch.randn(out.shape, generator=torch.Generator(device=device).manual_seed(seed + 1), device=device).to(dtype)
    got = (out, *torch.autograd.grad(out, leaves, grad))
    if device.type == "cuda":
        torch.cuda.synchronize()
    first_s = time.perf_counter() - start  # compilation and autotuning included: the first call of a shape
    ref_leaves = [t.float().requires_grad_() for t in (q, k, v)]
    with full_fp32():
        ref = attention_reference(*ref_leaves, key_padding_mask=mask)
        want = (ref, *torch.autograd.grad(ref, ref_leaves, grad.float()))
    err = _errors(got, [w.detach() for w in want])
    fallback = triton_fallback(backend, q, k, mask)
    passed = err["finite"] and err["rel_err"] <= REL_TOL[dtype_name] and not fallback
    return {**row, **err, "tol": REL_TOL[dtype_name], "passed": passed, "first_call_s": first_s, "fallback": fallback}


def run_exactness(ctx: Context) -> None:
    """Every shape x {bf16, fp16} x backend, then (CUDA) the autotuned Triton path on every shape, which compiles
    the most and so runs last; fails when a backend that ran misses its tolerance."""
    ctx.put("tolerance", {"metric": "max over out, dq, dk, dv of ||x - ref||_F / ||ref||_F, ref in fp32", **REL_TOL})
    shapes = model_shapes(ctx.dry)
    ctx.put("shapes", len(shapes))
    # the other backends refuse CPU tensors; autotuning happens on CUDA only (the interpreter uses the defaults)
    backends = ("triton", "sdpa") if ctx.dry else BACKENDS
    cases = [(i, d, b) for i in range(len(shapes)) for d in REL_TOL for b in backends]
    cases += [] if ctx.dry else [(i, d, TUNED) for i in range(len(shapes)) for d in REL_TOL]
    with ctx.part("cases"):
        for i, dtype_name, backend in cases:
            ctx.check(f"{shapes[i]['shape']} {dtype_name} {backend}")
            ctx.add("rows", exactness_case(shapes[i], dtype_name, backend, ctx.device, seed=1000 * i))
        rows = ctx.result.get("rows", [])
        missed = [f"{r['backend']} {r['dtype']} {r['shape']} ({r['fallback'] or format(r['rel_err'], '.2g')})"
                  for r in rows if r.get("passed") is False]
        ctx.put("passed", sum(1 for r in rows if r.get("passed")))
        if missed:
            raise AssertionError(f"{len(missed)} case(s) over tolerance: {'; '.join(missed[:4])}")
        if not any(r["backend"] == "triton" and r.get("passed") for r in rows):
            raise Skip(f"triton did not run: {next((r['skipped'] for r in rows if r['backend'] == 'triton'), '?')}")


# ----------------------------------------------------------------------------------------------
# Speed
# ----------------------------------------------------------------------------------------------
def _timed_padded(shape: dict, dtype, device, reps: int) -> list[dict]:
    """Rows like :func:`tvts.perf.bench_kernels.bench_attention`'s for a padded shape (bench times unpadded
    calls only): forward + backward of each backend that accepts the mask; a Triton row whose kernels
    failed to build is skipped with why, as bench does (what ran was sdpa)."""
    import torch

    from tvts.perf.common import timed
    from tvts.kernels.attention import attention, refusal

    q, k, v, mask = make_inputs(shape, dtype, device, seed=7)
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    grad = torch.randn_like(q)
    refusals = {be: refusal(be, q, k, v, mask) for be in BACKENDS}
    rows = [dict(table="attention", shape=shape["shape"], backend=be, skipped=why) for be, why in refusals.items() if why]
    runs = [be for be, why in refusals.items() if not why]
    both = timed({be: (lambda be=be: torch.autograd.grad(attention(q, k, v, mask, backend=be), (q, k, v), grad))
                  for be in runs}, device, reps)
    flops = 4.0 * shape["B"] * shape["H"] * shape["Lq"] * shape["Lk"] * shape["D"]
    for be in runs:
        failed = triton_fallback(TUNED, q, k, mask) if be == "triton" else None
        if failed:
            rows.append(dict(table="attention", shape=shape["shape"], backend=be, skipped=failed))
            continue
        rows.append(dict(table="attention", shape=shape["shape"], backend=be, B=shape["B"], H=shape["H"],
                         Lq=shape["Lq"], Lk=shape["Lk"], D=shape["D"], fwd_bwd_ms=both[be] * 1e3,
                         fwd_bwd_tflops=3.5 * flops / both[be] / 1e12))
    return rows


def auto_table(rows: list[dict], shapes: dict, dtype, device) -> list[dict]:
    """Per shape: the backend ``auto`` picks today (:func:`tvts.kernels.attention.choose_backend` on tensors of
    that shape) beside the fastest measured candidate (forward + backward), and the time ratio."""
    import torch

    from tvts.kernels.attention import choose_backend

    out = []
    for name, shape in shapes.items():
        timed_rows = {r["backend"]: r["fwd_bwd_ms"] for r in rows
                      if r["shape"] == name and "skipped" not in r and r["backend"] in BACKENDS}
        if not timed_rows:
            continue
        q = torch.empty(shape["B"], shape["H"], shape["Lq"], shape["D"], device=device, dtype=dtype)
        k = torch.empty(shape["B"], shape["H"], shape["Lk"], shape["D"], device=device, dtype=dtype)
        mask = torch.ones(shape["B"], shape["Lk"], dtype=torch.bool, device=device) if shape.get("padded") else None
        rule = choose_backend(q, k, k, mask, backend="auto")
        fastest = min(timed_rows, key=timed_rows.get)
        rule_ms = timed_rows.get(rule)
        out.append({"shape": name, "rule": rule, "rule_ms": rule_ms, "fastest": fastest, "fastest_ms": timed_rows[fastest],
                    "rule_over_fastest": rule_ms / timed_rows[fastest] if rule_ms else None, "agree": rule == fastest})
    return out


def run_speed(ctx: Context) -> None:
    """``tvts.perf.bench_kernels.bench_attention`` shape by shape (its table: the models' unpadded shapes at their
    GPU batch; in --dry its tiny shape, where Triton runs interpreted), the padded shapes timed here, which
    config shapes bench's table lacks, and the ``auto`` table."""
    import torch

    from tvts.perf import bench_kernels as bench

    cuda = ctx.device.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    reps = 20 if cuda else 1
    ctx.put("dtype", str(dtype).removeprefix("torch."))
    listed = {(s[3], s[4], s[5]) for s in bench.KERNEL_SHAPES}
    derived = model_shapes(dry=False)
    ctx.put("missing_from_bench", [s["shape"] for s in derived
                                   if not s["padded"] and (s["Lq"], s["Lk"], s["D"]) not in listed])
    shapes = {s[0]: dict(B=s[1], H=s[2], Lq=s[3], Lk=s[4], D=s[5], padded=False)
              for s in (bench.KERNEL_SHAPES if cuda else [bench.TINY])}
    with ctx.part("bench_attention"):
        for name in shapes:
            if any(r["shape"] == name for r in ctx.result.get("rows", [])):
                continue  # measured with a shape whose name it is part of ("v2 H/14 spatial" in "..., no mask")
            ctx.check(name)
            for row in bench.bench_attention(ctx.device, dtype, reps=reps, cpu_batch_div=1.0, shapes=[name]):
                if row["shape"] in shapes and not any(r["shape"] == row["shape"] and r["backend"] == row["backend"]
                                                      for r in ctx.result.get("rows", [])):
                    ctx.add("rows", row)  # a Triton row whose kernels failed to build is skipped there, with why
    with ctx.part("padded"):
        padded = [s for s in model_shapes(ctx.dry) if s["padded"]]
        for shape in padded[:None if cuda else 1]:
            ctx.check(shape["shape"])
            for row in _timed_padded(shape, dtype, ctx.device, reps):
                ctx.add("rows", row)
            shapes[shape["shape"]] = shape
    auto = auto_table(ctx.result.get("rows", []), shapes, dtype, ctx.device)
    ctx.put("auto", auto)
    if not auto:
        raise AssertionError("no backend was timed")


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------
def markdown_exactness(result: dict) -> list[str]:
    """One row per shape and dtype, the relative error of each backend that ran (``!`` past the tolerance)."""
    from tvts.perf.common import markdown_table

    rows = result.get("rows", [])
    ran = [r for r in rows if "skipped" not in r]
    backends = list(dict.fromkeys(r["backend"] for r in ran))
    table: dict = {}
    for r in ran:
        line = table.setdefault((r["shape"], r["dtype"]), {c: r[c] for c in ("shape", "B", "H", "Lq", "Lk", "D", "dtype")})
        mark = " (built no kernel: sdpa ran)" if r.get("fallback") else "" if r["passed"] else " !"
        line[r["backend"]] = f"{r['rel_err']:.1e}{mark}"
        line["first call s"] = max(line.get("first call s", 0.0), r["first_call_s"])
    cols = [(c, c, "" if c in ("shape", "dtype") else "d") for c in ("shape", "B", "H", "Lq", "Lk", "D", "dtype")]
    cols += [(b, b, "") for b in backends] + [("first call s", "slowest first call s", ".2f")]
    tol = result.get("tolerance", {})
    out = [f"Relative error, {tol.get('metric', '')}; tolerance bf16 {tol.get('bf16')}, fp16 {tol.get('fp16')} "
           f"(`!`: over it). {result.get('passed', 0)} of {len(ran)} cases pass over {result.get('shapes', 0)} shapes; "
           "`triton` at its default blocks, `triton, tuned` as training calls it.", ""]
    out += [markdown_table(list(table.values()), cols), ""] if table else []
    skipped = sorted({r["skipped"] for r in rows if "skipped" in r})
    return out + ([f"Not run: {'; '.join(skipped)}.", ""] if skipped else [])


def markdown_speed(result: dict) -> list[str]:
    from tvts.perf.common import markdown_sections, markdown_table

    out = [f"dtype {result.get('dtype')}; forward + backward TFLOP/s = 3.5 x 4 B H Lq Lk D / time.", ""]
    out += [markdown_sections(result["rows"])] if result.get("rows") else []
    if result.get("auto"):
        agree = sum(r["agree"] for r in result["auto"])
        out += [f"`auto` today vs the fastest measured candidate (forward + backward): {agree} of "
                f"{len(result['auto'])} shapes agree.", "",
                markdown_table(result["auto"], [("shape", "shape", ""), ("rule", "auto picks", ""),
                                                ("rule_ms", "its ms", ".3f"), ("fastest", "fastest", ""),
                                                ("fastest_ms", "fastest ms", ".3f"), ("rule_over_fastest", "ratio", ".2f")]),
                ""]
    if result.get("missing_from_bench"):
        out += [f"Config shapes not in tvts/perf/bench_kernels.py's table: {'; '.join(result['missing_from_bench'])}.", ""]
    return out


def plot_speed(result: dict, out_dir) -> list[str]:
    """kernels.png: forward + backward TFLOP/s per shape, one bar per backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = [r for r in result.get("rows", []) if "skipped" not in r and r.get("fwd_bwd_tflops")]
    if not rows:
        return []
    shapes = list(dict.fromkeys(r["shape"] for r in rows))
    backends = list(dict.fromkeys(r["backend"] for r in rows))
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(shapes) * max(1, math.ceil(len(backends) / 3)) + 1.5))
    height = 0.8 / len(backends)
    for i, be in enumerate(backends):
        values = [next((r["fwd_bwd_tflops"] for r in rows if r["shape"] == s and r["backend"] == be), 0.0) for s in shapes]
        ax.barh(np.arange(len(shapes)) + i * height, values, height, label=be)
    ax.set_yticks(np.arange(len(shapes)) + 0.4 - height / 2, shapes, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"forward + backward TFLOP/s ({result.get('dtype')})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "kernels.png", dpi=110)
    plt.close(fig)
    return ["kernels.png"]
