"""Attention at the TVTS shapes: time, TFLOP/s and memory per backend, forward and forward+backward.

    python launch/bench_kernels.py --out runs/bench_kernels.json          # on a GPU: every backend present
    python launch/bench_kernels.py --device cpu --out runs/bench_kernels_cpu.json
    TRITON_INTERPRET=1 python launch/bench_kernels.py --device cpu --only kernels   # + triton, tiny shape only

The shapes, the three tables and how FLOPs and memory are counted: ``tvts.perf.bench_kernels``.
CPU runs divide the GPU batch by --cpu-batch-div.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from tvts.perf.common import environment
from tvts.perf.common import markdown_sections as markdown
from tvts.errors import UserError, cli
from tvts.perf.bench_kernels import BACKENDS, bench_attention, bench_divided, bench_sort


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
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise UserError(f"--device {args.device}: not a torch device; pass cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {args.device}: this machine has no CUDA device; pass --device cpu")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[
        args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    args.reps = args.reps or (20 if device.type == "cuda" else 3)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    env = environment(device)
    print(json.dumps(env), flush=True)
    sections = {"kernels": lambda: bench_attention(device, dtype, args.backends, args.reps, args.cpu_batch_div,
                                                   args.shapes),
                "sort": lambda: bench_sort(device, dtype, args.reps, args.cpu_batch_div),
                "divided": lambda: bench_divided(device, dtype, args.backends, args.reps, args.cpu_batch_div)}
    rows = [row for section in args.only for row in sections[section]()]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({**env, "dtype": str(dtype), "rows": rows}, indent=1))
    tables = markdown(rows)
    print(tables)
    if args.md:
        Path(args.md).write_text(tables)


if __name__ == "__main__":
    sys.exit(cli(main))
