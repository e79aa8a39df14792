"""Data-loading benchmark: our per-sample path and loader vs a re-creation of the official per-sample path.

    python launch/bench_data.py --out runs/bench_data.json
    python launch/bench_data.py --cases v1 --loaders v1 --out runs/bench_data_v1.json   # the v1 input only

Inputs are made once under --work: a demo-like corpus (64 px, 8 fps, 19 s videos) and a few long "raw"
videos standing for YouTube files (60 s, 320 px, 30 fps, with a MERLOT-style annotation each), both
ingested to shards (64 px, 8 fps); and the v1 input: the raw videos made 16:9 and textured, ingested with
the ingest defaults (H.264, 256 px short side, 30 fps). Per-sample rows run here on one thread (figures
per CPU core), on the same samples and frames for every path; loader rows run the real TrainLoader with
0..N workers (``tvts.perf.bench_data``).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from tvts.perf.common import environment, markdown_table, write_json
from tvts.perf.bench_data import CASES, GPU_FRAMES_PER_S, V1, loaders, make_inputs, per_sample
from tvts.errors import UserError, cli

LOADER_SETS = {"demo": ("8x64 (demo)", (0, 2048)), "v1": (V1, (0,))}  # a v1 clip is ~200 MB decoded: no cache


def _names(value: str, flag: str, known) -> list[str]:
    names = [n for n in value.split(",") if n]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UserError(f"{flag} {value}: unknown {', '.join(unknown)}; expected some of {', '.join(known)}")
    return names


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="runs/bench_data", help="inputs are made here once and reused")
    p.add_argument("--out", default="runs/bench_data.json")
    p.add_argument("--videos", type=int, default=64, help="demo-like videos (64 px, 8 fps, 19 s)")
    p.add_argument("--raw-videos", type=int, default=8, help="long raw videos (60 s, 30 fps), also the v1 input's sources")
    p.add_argument("--raw-size", type=int, default=320)
    p.add_argument("--v1-short", type=int, default=256, help="short side of the v1 shards (px)")
    p.add_argument("--cases", default=",".join(CASES), help=f"per-sample cases, some of {','.join(CASES)}")
    p.add_argument("--samples", type=int, default=24, help="samples timed per per-sample row")
    p.add_argument("--repeats", type=int, default=3, help="timings per sample and path (the median counts)")
    p.add_argument("--loaders", default="demo,v1", help=f"loader rows on these shards, some of {','.join(LOADER_SETS)}")
    p.add_argument("--workers", default="0,1,2", help="loader worker counts")
    p.add_argument("--batches", type=int, default=24, help="batches timed per loader row")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--gpu-frames-per-s", type=float, default=GPU_FRAMES_PER_S,
                   help="frames/s one GPU trains on, for cores per GPU (default: ViT-L/16 at 40 %% MFU on an H100, projected)")
    args = p.parse_args(argv)
    try:
        workers = [int(w) for w in args.workers.split(",")]
    except ValueError:
        raise UserError(f"--workers {args.workers}: expected comma-separated worker counts, e.g. 0,1,2") from None
    cases = _names(args.cases, "--cases", CASES)
    loader_sets = _names(args.loaders, "--loaders", LOADER_SETS)
    work = Path(args.work)
    load_before = os.getloadavg()
    samples = make_inputs(work, args.videos, args.raw_videos, args.raw_size, args.v1_short)
    sample_rows = per_sample(samples, work, args.raw_size, args.samples, args.repeats, cases,
                             args.v1_short, args.gpu_frames_per_s)
    print(markdown_table(sample_rows, [("input", "input", ""), ("output", "output T x S", ""), ("path", "path", ""),
                              ("ms_per_clip", "CPU ms/clip", ".1f"), ("wall_ms_per_clip", "wall ms/clip", ".1f"),
                              ("clips_per_s", "clips/s/core", ".1f"), ("frames_per_s", "frames/s/core", ".0f"),
                              ("vs_official", "vs official", ".2f"), ("cores_per_gpu", "cores/GPU", ".1f")]), flush=True)
    loader_rows = []
    for name in loader_sets:
        output, caches = LOADER_SETS[name]
        loader_rows += loaders(str(work / name / "shards"), len(samples[name]), workers, args.batches, args.batch,
                               output, caches, f"{name} shards", args.gpu_frames_per_s)
    print()
    print(markdown_table(loader_rows, [("input", "input", ""), ("output", "output T x S", ""), ("decoder", "decoder", ""),
                              ("workers", "workers", "d"), ("decoded_cache", "decoded cache", ""),
                              ("clips_per_s", "clips/s", ".1f"), ("frames_per_s", "frames/s", ".0f"),
                              ("clips_per_s_per_worker", "clips/s/worker", ".1f"),
                              ("frames_per_cpu_s", "frames/CPU s", ".0f"), ("cores_per_gpu", "cores/GPU", ".1f")]))
    try:
        import decord  # noqa: F401
        notes = ["decord is installed but has no loader path here"]
    except ImportError:
        notes = ["decord: not installed, not measured"]
    notes.append("DALI: " + ("measured" if torch.cuda.is_available() else "not measured (no GPU; its CPU backend decodes only VP8/VP9)"))
    notes.append(f"cores/GPU = {args.gpu_frames_per_s:.0f} frames/s (a projection, not measured) / frames/s/core")
    print("; ".join(notes))
    result = {**environment(torch.device("cpu")), "load_avg_before": load_before, "load_avg_after": os.getloadavg(),
              "args": vars(args), "per_sample": sample_rows, "loader": loader_rows, "notes": notes}
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(cli(main))
