"""Attention at the TVTS shapes: time, TFLOP/s and memory per backend, forward and forward+backward.

The shape tables and the three benchmarks behind ``launch/bench_kernels.py``: (1) ``attention`` per backend
plus the official einsum attention; (2) the sorter: official, the sort readout on the official input and on
the fused input (``SortHead``), and that input alone; (3) v2's ``DividedAttention`` (CLS over all tokens +
grouped attention) per backend. Each returns one dict per row (``skipped`` names why a backend refused).
FLOPs: 4 B H Lq Lk D forward (QK^T and PV), backward 2.5x forward (FlashAttention's convention).
Where the Triton kernel splits the head dim into two lane blocks (80 = 64 + 16), a ``triton, d padded to
128`` row runs it on one padded block as before the split: the split's saving, measured (arithmetic:
x 0.625). A Triton row whose kernels failed to build is ``skipped`` (the ops ran sdpa instead).
Memory: ``saved_mib`` = bytes kept for backward (inputs included), every device; ``peak_mib`` = CUDA peak
allocated during forward+backward above the inputs.
"""
from __future__ import annotations

import os

import torch

from tvts.perf.common import fmt_line as _line
from tvts.perf.common import saved_mib as memory_mib
from tvts.perf.common import timed
from tvts.kernels.attention import attention, refusal, set_default_backend
from tvts.kernels.reference import einsum_attention
from tvts.models.flops import sort_blocks_flops
from tvts.models.layers import Block
from tvts.models.sort_head import SortHead, TypedConcat
from tvts.models.video import DividedAttention

# name, GPU batch (config micro-batch x groups per clip), heads, Lq, Lk, head dim
KERNEL_SHAPES = [
    ("v1 B/16 joint", 24, 12, 393, 393, 64),
    ("v2 B/16 spatial, 50% mask", 12 * 12, 12, 98, 99, 64),
    ("v2 B/16 spatial, no mask", 12 * 12, 12, 196, 197, 64),
    ("v2 B/16 temporal", 12 * 98, 12, 12, 13, 64),
    ("v2 B/16 temporal, 16 frames", 12 * 98, 12, 16, 17, 64),
    ("v2 H/14 913 tokens", 2, 16, 913, 913, 80),
    ("v2 H/14 spatial", 2 * 12, 16, 76, 77, 80),
    ("v2 H/14 spatial, no mask", 2 * 12, 16, 256, 257, 80),
    ("v2 H/14 temporal", 2 * 76, 16, 12, 13, 80),
    ("sort v1 readout", 24, 12, 4, 397, 64),
    ("sort v1 full", 24, 12, 397, 397, 64),
    ("sort v2 H/14 readout", 2, 16, 4, 917, 64),
    ("sort v2 H/14 full", 2, 16, 917, 917, 64),
]
TINY = ("tiny (triton interpreted)", 1, 2, 128, 128, 64)
BACKENDS = ["einsum", "math", "sdpa", "triton", "flash_attn", "xformers"]
SORT_SHAPES = [("v1 B/16", 24, 768, 12, 393), ("v2 H/14", 2, 1024, 16, 913)]  # batch, width, heads, video tokens
# + slots (frames), kept patches per frame
DIVIDED_SHAPES = [("v2 B/16", 12, 768, 12, 12, 98), ("v2 B/16 no mask", 12, 768, 12, 12, 196),
                  ("v2 B/16 16 frames", 12, 768, 12, 16, 98), ("v2 H/14", 2, 1280, 16, 12, 76),
                  ("v2 H/14 no mask", 2, 1280, 16, 12, 256)]
K = 4  # transcripts


def bench_attention(device, dtype, backends=BACKENDS, reps=3, cpu_batch_div=12.0, shapes=None) -> list[dict]:
    """Rows of ``attention`` per backend (and the official einsum) at every TVTS shape whose name contains
    one of ``shapes`` (all by default). On CPU the batch is the GPU batch / ``cpu_batch_div``; under
    ``TRITON_INTERPRET=1`` the Triton kernel runs on the tiny shape only."""
    interpreted = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    listed = KERNEL_SHAPES + ([TINY] if device.type == "cpu" and interpreted else [])
    listed = [s for s in listed if not shapes or any(word in s[0] for word in shapes)]
    rows = []
    for name, batch, heads, lq, lk, d in listed:
        b = batch if device.type == "cuda" or name == TINY[0] else max(1, round(batch / cpu_batch_div))
        q, k, v = (torch.randn(b, heads, n, d, device=device, dtype=dtype, requires_grad=True) for n in (lq, lk, lk))
        grad = torch.randn(b, heads, lq, d, device=device, dtype=dtype)
        flops = 4.0 * b * heads * lq * lk * d
        runs = {}
        for backend in backends:
            why = None if backend == "einsum" else refusal(backend, q, k, v)
            if backend == "triton" and interpreted and name != TINY[0]:
                why = "interpreted: tiny shape only"
            if why:
                rows.append(dict(table="attention", shape=name, backend=backend, skipped=why))
                continue
            runs[backend] = einsum_attention if backend == "einsum" else \
                (lambda q_, k_, v_, be=backend: attention(q_, k_, v_, backend=be))
        lane_blocks = _triton_lane_blocks(d) if "triton" in runs else {}
        for label, head_blocks in lane_blocks.items():
            runs.setdefault(label, lambda q_, k_, v_, hb=head_blocks: _flash(q_, k_, v_, head_blocks=hb))
        with torch.no_grad():
            fwd = timed({be: (lambda run=run: run(q, k, v)) for be, run in runs.items()}, device, reps)
        both = timed({be: (lambda run=run: torch.autograd.grad(run(q, k, v), (q, k, v), grad))
                      for be, run in runs.items()}, device, reps)
        for backend, run in runs.items():
            if backend in lane_blocks and (failed := _build_failure(q, k, lane_blocks[backend])):
                # the ops fell back: what was timed is sdpa, not the kernel
                rows.append(dict(table="attention", shape=name, backend=backend, skipped=failed))
                continue
            saved, peak = memory_mib(lambda: run(q, k, v), device)
            rows.append(dict(table="attention", shape=name, backend=backend, B=b, H=heads, Lq=lq, Lk=lk, D=d,
                             fwd_ms=fwd[backend] * 1e3, fwd_bwd_ms=both[backend] * 1e3,
                             fwd_tflops=flops / fwd[backend] / 1e12, fwd_bwd_tflops=3.5 * flops / both[backend] / 1e12,
                             saved_mib=saved, peak_mib=peak))
            print(_line(rows[-1]), flush=True)
    return rows


def _triton_lane_blocks(head_dim: int) -> dict:
    """{row label: forced lane blocks} of the Triton rows: ``triton`` as the dispatch runs it, plus, where
    the kernel splits ``head_dim`` into two lane blocks, the same kernel on one padded power-of-two block."""
    from tvts.kernels import triton_attention as ta

    low, high = ta.head_dim_blocks(head_dim)
    return {"triton": None, **({f"triton, d padded to {2 * low}": (2 * low, 0)} if high else {})}


def _flash(q, k, v, head_blocks):
    from tvts.kernels import triton_attention as ta

    return ta.flash_attention(q, k, v, head_blocks=head_blocks)


def _build_failure(q, k, head_blocks):
    from tvts.kernels import triton_attention as ta

    return ta.build_failure(q, k, head_blocks=head_blocks)


def bench_sort(device, dtype, reps=3, cpu_batch_div=12.0, shapes=SORT_SHAPES) -> list[dict]:
    """Rows of the sorter paths: official (every row of both blocks), the readout on the official input and
    on the fused input (``SortHead``), and the first block's input alone, built both ways. ``shapes``:
    (name, GPU batch, width, heads, video tokens) each."""
    rows = []
    for name, batch, dim, heads, tokens in shapes:
        b = batch if device.type == "cuda" else max(1, round(batch / cpu_batch_div))
        head = SortHead(dim, dim, K, depth=2, heads=heads).to(device, dtype)
        video = torch.randn(b, tokens, dim, device=device, dtype=dtype, requires_grad=True)
        text = torch.randn(b, K, dim, device=device, dtype=dtype)

        def official_input():
            return torch.cat([video + head.type_embed[:, :1], text + head.type_embed[:, 1:]], dim=1)

        def full():  # the official sorter: every block on every row, then slice the transcripts
            x = official_input()
            for blk in head.blocks:
                x = Block.forward(blk, x)
            return head.head(head.norm(x[:, -K:]))

        def readout_official_input():  # the readout on the official input (sums + concatenation)
            return head.head(head.norm(head.blocks[1](head.blocks[0](official_input()), readout=K)))

        # path: (step, forward GFLOP per clip); the first block's input alone counts no matrix products
        full_flops, readout_flops = (sort_blocks_flops(tokens + K, K, dim, 4 * dim, 2, readout=r) for r in (False, True))
        steps = {"full": (full, full_flops),
                 "readout, official input": (readout_official_input, readout_flops),
                 "readout": (lambda: head(video, text), readout_flops),
                 "input: sums + cat": (official_input, 0.0),
                 "input: fused": (lambda: TypedConcat.apply(video, text, head.type_embed), 0.0)}
        with torch.no_grad():
            fwd = timed({p_: s_ for p_, (s_, _) in steps.items()}, device, reps)
        both = timed({p_: (lambda s_=s_: s_().float().sum().backward()) for p_, (s_, _) in steps.items()},
                     device, reps)
        for path, (step, flops) in steps.items():
            saved, peak = memory_mib(step, device)
            rows.append(dict(table="sort", shape=name, path=path, B=b, tokens=tokens + K, dim=dim,
                             gflops_per_clip=flops / 1e9, fwd_ms=fwd[path] * 1e3, fwd_bwd_ms=both[path] * 1e3,
                             saved_mib=saved, peak_mib=peak))
            print(_line(rows[-1]), flush=True)
    return rows


def bench_divided(device, dtype, backends=BACKENDS, reps=3, cpu_batch_div=12.0,
                  shapes=DIVIDED_SHAPES) -> list[dict]:
    """Rows of v2's ``DividedAttention`` over time and over space per attention backend. ``shapes``:
    (name, GPU batch, width, heads, slots, kept patches per slot) each."""
    rows = []
    for name, batch, width, heads, slots, kept in shapes:
        b = batch if device.type == "cuda" else max(1, round(batch / cpu_batch_div))
        module = DividedAttention(width, heads).to(device, dtype)
        x = torch.randn(b, 1 + slots * kept, width, device=device, dtype=dtype, requires_grad=True)
        probe = torch.empty(b * kept, heads, slots, width // heads, device=device, dtype=dtype)  # temporal groups
        usable = []
        for backend in [be for be in backends if be != "einsum"]:
            why = refusal(backend, probe, probe, probe)
            if why:
                rows.append(dict(table="divided", shape=name, backend=backend, skipped=why))
            else:
                usable.append(backend)

        def step(backend, over):
            set_default_backend(backend)  # DividedAttention calls attention() with the process default
            return module(x, slots, over)

        for over in ("time", "space"):
            with torch.no_grad():
                fwd = timed({be: (lambda be=be: step(be, over)) for be in usable}, device, reps)
            both = timed({be: (lambda be=be: step(be, over).float().sum().backward()) for be in usable},
                         device, reps)
            for backend in usable:
                saved, peak = memory_mib(lambda: step(backend, over), device)
                rows.append(dict(table="divided", shape=name, over=over, backend=backend, B=b,
                                 tokens=1 + slots * kept, fwd_ms=fwd[backend] * 1e3,
                                 fwd_bwd_ms=both[backend] * 1e3, saved_mib=saved, peak_mib=peak))
                print(_line(rows[-1]), flush=True)
    set_default_backend("auto")
    return rows
