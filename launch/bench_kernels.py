"""Attention at the TVTS shapes: time, TFLOP/s and memory per backend, forward and forward+backward.

    python launch/bench_kernels.py --out runs/bench_kernels.json          # on a GPU: every backend present
    python launch/bench_kernels.py --device cpu --out runs/bench_kernels_cpu.json
    TRITON_INTERPRET=1 python launch/bench_kernels.py --device cpu --only kernels   # + triton, tiny shape only

Tables: (1) ``attention`` per backend plus the official einsum attention; (2) the sorter: official,
the sort readout on the official input and on the fused input (``SortHead``), and that input alone;
(3) v2's ``DividedAttention`` (CLS over all tokens + grouped attention) per backend.
FLOPs: 4 B H Lq Lk D forward (QK^T and PV), backward 2.5x forward (FlashAttention's convention).
Memory: ``saved`` = bytes kept for backward (inputs included), every device; ``peak`` = CUDA peak
allocated during forward+backward above the inputs. CPU runs divide the GPU batch by --cpu-batch-div.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from tvts.bench import environment, timed
from tvts.bench import fmt_line as _line
from tvts.bench import markdown_sections as markdown
from tvts.bench import saved_mib as memory_mib
from tvts.kernels import attention, set_default_backend
from tvts.kernels.attention import refusal
from tvts.kernels.reference import einsum_attention
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


def bench_attention(args, device, dtype) -> list[dict]:
    interpreted = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    shapes = KERNEL_SHAPES + ([TINY] if device.type == "cpu" and interpreted else [])
    shapes = [s for s in shapes if not args.shapes or any(word in s[0] for word in args.shapes)]
    rows = []
    for name, batch, heads, lq, lk, d in shapes:
        b = batch if device.type == "cuda" or name == TINY[0] else max(1, round(batch / args.cpu_batch_div))
        q, k, v = (torch.randn(b, heads, n, d, device=device, dtype=dtype, requires_grad=True) for n in (lq, lk, lk))
        grad = torch.randn(b, heads, lq, d, device=device, dtype=dtype)
        flops = 4.0 * b * heads * lq * lk * d
        runs = {}
        for backend in args.backends:
            why = None if backend == "einsum" else refusal(backend, q, k, v)
            if backend == "triton" and interpreted and name != TINY[0]:
                why = "interpreted: tiny shape only"
            if why:
                rows.append(dict(table="attention", shape=name, backend=backend, skipped=why))
                continue
            runs[backend] = einsum_attention if backend == "einsum" else \
                (lambda q_, k_, v_, be=backend: attention(q_, k_, v_, backend=be))
        with torch.no_grad():
            fwd = timed({be: (lambda run=run: run(q, k, v)) for be, run in runs.items()}, device, args.reps)
        both = timed({be: (lambda run=run: torch.autograd.grad(run(q, k, v), (q, k, v), grad))
                      for be, run in runs.items()}, device, args.reps)
        for backend, run in runs.items():
            saved, peak = memory_mib(lambda: run(q, k, v), device)
            rows.append(dict(table="attention", shape=name, backend=backend, B=b, H=heads, Lq=lq, Lk=lk, D=d,
                             fwd_ms=fwd[backend] * 1e3, fwd_bwd_ms=both[backend] * 1e3,
                             fwd_tflops=flops / fwd[backend] / 1e12, fwd_bwd_tflops=3.5 * flops / both[backend] / 1e12,
                             saved_mib=saved, peak_mib=peak))
            print(_line(rows[-1]), flush=True)
    return rows


def sorter_flops(length: int, dim: int, readout: bool) -> float:
    """Forward FLOPs of the 2-block sorter (matrix products only, as tvts.models.flops counts them)."""
    lin = lambda rows, d_out: 2.0 * rows * dim * d_out  # noqa: E731
    block = lin(length, 3 * dim) + lin(length, dim) + 2 * lin(length, 4 * dim) + 4.0 * length * length * dim
    if not readout:
        return 2 * block
    last = lin(length, 2 * dim) + lin(K, dim) + lin(K, dim) + 2 * lin(K, 4 * dim) + 4.0 * K * length * dim
    return block + last


def bench_sort(args, device, dtype) -> list[dict]:
    rows = []
    for name, batch, dim, heads, tokens in SORT_SHAPES:
        b = batch if device.type == "cuda" else max(1, round(batch / args.cpu_batch_div))
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
        steps = {"full": (full, sorter_flops(tokens + K, dim, False)),
                 "readout, official input": (readout_official_input, sorter_flops(tokens + K, dim, True)),
                 "readout": (lambda: head(video, text), sorter_flops(tokens + K, dim, True)),
                 "input: sums + cat": (official_input, 0.0),
                 "input: fused": (lambda: TypedConcat.apply(video, text, head.type_embed), 0.0)}
        with torch.no_grad():
            fwd = timed({p_: s_ for p_, (s_, _) in steps.items()}, device, args.reps)
        both = timed({p_: (lambda s_=s_: s_().float().sum().backward()) for p_, (s_, _) in steps.items()},
                     device, args.reps)
        for path, (step, flops) in steps.items():
            saved, peak = memory_mib(step, device)
            rows.append(dict(table="sort", shape=name, path=path, B=b, tokens=tokens + K, dim=dim,
                             gflops_per_clip=flops / 1e9, fwd_ms=fwd[path] * 1e3, fwd_bwd_ms=both[path] * 1e3,
                             saved_mib=saved, peak_mib=peak))
            print(_line(rows[-1]), flush=True)
    return rows


def bench_divided(args, device, dtype) -> list[dict]:
    rows = []
    for name, batch, width, heads, slots, kept in DIVIDED_SHAPES:
        b = batch if device.type == "cuda" else max(1, round(batch / args.cpu_batch_div))
        module = DividedAttention(width, heads).to(device, dtype)
        x = torch.randn(b, 1 + slots * kept, width, device=device, dtype=dtype, requires_grad=True)
        probe = torch.empty(b * kept, heads, slots, width // heads, device=device, dtype=dtype)  # temporal groups
        backends = []
        for backend in [be for be in args.backends if be != "einsum"]:
            why = refusal(backend, probe, probe, probe)
            if why:
                rows.append(dict(table="divided", shape=name, backend=backend, skipped=why))
            else:
                backends.append(backend)

        def step(backend, over):
            set_default_backend(backend)  # DividedAttention calls attention() with the process default
            return module(x, slots, over)

        for over in ("time", "space"):
            with torch.no_grad():
                fwd = timed({be: (lambda be=be: step(be, over)) for be in backends}, device, args.reps)
            both = timed({be: (lambda be=be: step(be, over).float().sum().backward()) for be in backends},
                         device, args.reps)
            for backend in backends:
                saved, peak = memory_mib(lambda: step(backend, over), device)
                rows.append(dict(table="divided", shape=name, over=over, backend=backend, B=b,
                                 tokens=1 + slots * kept, fwd_ms=fwd[backend] * 1e3,
                                 fwd_bwd_ms=both[backend] * 1e3, saved_mib=saved, peak_mib=peak))
                print(_line(rows[-1]), flush=True)
    set_default_backend("auto")
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, choices=["fp32", "bf16", "fp16"], help="default: bf16 on CUDA, fp32 on CPU")
    p.add_argument("--only", nargs="+", default=["kernels", "sort", "divided"], choices=["kernels", "sort", "divided"])
    p.add_argument("--backends", nargs="+", default=BACKENDS, choices=BACKENDS)
    p.add_argument("--shapes", nargs="+", default=None, help="attention shapes whose name contains one of these")
    p.add_argument("--reps", type=int, default=None, help="timed calls (default: 20 on CUDA, 3 on CPU)")
    p.add_argument("--cpu-batch-div", type=float, default=12.0, help="CPU batch = GPU batch / this")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--out", default="runs/bench_kernels.json")
    p.add_argument("--md", default=None, help="also write the markdown tables here")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[
        args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    args.reps = args.reps or (20 if device.type == "cuda" else 3)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    env = environment(device)
    print(json.dumps(env), flush=True)
    rows = []
    sections = {"kernels": bench_attention, "sort": bench_sort, "divided": bench_divided}
    for section in args.only:
        rows += sections[section](args, device, dtype)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({**env, "dtype": str(dtype), "rows": rows}, indent=1))
    tables = markdown(rows)
    print(tables)
    if args.md:
        Path(args.md).write_text(tables)


if __name__ == "__main__":
    main()
