"""Data section: the PyAV loader feeding the v1 training step (loader clips/s, the step's data-wait fraction),
and DALI's decode of the same shards (frames/s beside PyAV on the same clips and frames).

The benchmark shards are synthetic narrated videos (:func:`tvts.data.synthetic.make_corpus`) ingested the way
real ones are (:func:`tvts.data.ingest.ingest_source`: H.264, short side 256, a keyframe a second), made once
per run under the work directory and shared with later sections. ``--dry`` makes two 32 px videos and
decodes VP9 with DALI's CPU decoder (it has no H.264).
"""
from __future__ import annotations

import json
import time

from tvts.perf.gpucheck import models
from tvts.perf.gpucheck.core import Context

# videos, square render size (px), frame rate: 16 of 19 s at 256 px and 30 fps (one window set each) render
# in ~6 s per video and core here, so in seconds on the GPU machine's 16 cores; --dry: two tiny ones
CORPUS = {False: (16, 256, 30), True: (2, 32, 8)}
LOADER_WORKERS = 8  # GPU machine: 16 cores; the rehearsal decodes in its own process (0 workers)
DALI_BATCHES = 4


def benchmark_shards(ctx: Context, codec: str = "h264") -> str:
    """The shard directory of the benchmark corpus in ``codec`` (h264 or vp9), built on first use."""
    import os

    from tvts.data.ingest import IngestSettings, ingest_source
    from tvts.data.synthetic import make_corpus

    count, size, fps = CORPUS[ctx.dry]
    root = ctx.work_dir / f"corpus_{size}px"
    shards = root / f"shards_{codec}"
    if not (shards / "index.json").is_file():
        workers = 1 if ctx.dry else min(16, os.cpu_count() or 1)  # worker processes start in seconds each
        if not (root / "videos" / "manifest.jsonl").is_file():
            make_corpus(root, count, seed=1, size=size, fps=fps, workers=workers)
        # two samples a shard: a shard for every loader worker
        settings = IngestSettings(source="vtt", short_side=min(256, size), codec=codec, samples_per_shard=2)
        ingest_source("vtt", root / "videos", shards, settings, workers=workers)
    return str(shards)


def loader_config(ctx: Context, shards: str, decoder: str = "pyav"):
    """The v1 recipe (16 frames, 224 px; tiny in --dry) reading ``shards``."""
    workers = 0 if ctx.dry else LOADER_WORKERS
    return models.load("v1 B/16", ctx.dry, [f"data.train=[{shards}]", f"data.decoder={decoder}",
                                            f"data.num_workers={workers}", "data.shuffle_buffer=16",
                                            "data.decoded_cache_mb=0", "train.precision=bf16"])


def run_pyav(ctx: Context) -> None:
    from tvts.data.loader import build_train_loader, measure_loader
    from tvts.perf import profiler
    from tvts.runtime import DistInfo
    from tvts.perf.gpucheck.steps import device_peak, steps_and_warmup
    from tvts.models.text import build_tokenizer

    shards = benchmark_shards(ctx)
    cfg = loader_config(ctx, shards)
    ctx.put("corpus", {"shards": shards, "videos": CORPUS[ctx.dry][0], "frames_per_clip": cfg.sample.frames,
                       "image_size": cfg.sample.image_size, "workers": cfg.data.num_workers,
                       "micro_batch": cfg.train.micro_batch})
    ctx.check("loader alone")
    alone = measure_loader(build_train_loader(cfg, DistInfo(), build_tokenizer(cfg)), batches=2 if ctx.dry else 8,
                           warmup=1 if ctx.dry else 2)
    ctx.put("loader", {k: alone[k] for k in ("clips_per_s", "frames_per_s", "seconds")})
    ctx.check("loader feeding the step")
    steps, warmup = steps_and_warmup(ctx)
    report = profiler.profile(cfg, DistInfo(), [profiler.engine_setup(cfg)], ["loader"], steps, warmup,
                              models.config_path("v1 B/16"), device_peak(ctx))
    run = report["runs"][0]
    ctx.put("step", {"step_ms": 1e3 * run["step_s"], "data_wait_ms": 1e3 * run["phases_s"]["data_wait"],
                     "data_wait_fraction": run["phases_s"]["data_wait"] / run["step_s"], "clips_per_s": run["clips_per_s"]})


def dali_samples(reader, cfg, shards: str) -> list:
    """Every clip of ``shards`` prepared for ``reader`` (frame indices of the recipe's frame times, crop),
    with the (source bytes, times) PyAV decodes for the comparison."""
    import numpy as np

    from tvts.data.sampling import frame_times
    from tvts.data.shards import list_shards, read_shard

    rng = np.random.default_rng(0)
    out = []
    for path, _ in list_shards(shards):
        for _, members in read_shard(path):
            meta = json.loads(members["json"])
            video = members.get("mp4") or members["webm"]
            times = frame_times(meta["windows"][0][0], meta["windows"][-1][1], cfg.sample.frames, True, rng)
            out.append((reader.prepare(video, times), video, times))
    return out


def run_dali(ctx: Context) -> None:
    import torch

    from tvts.data.dali import DALI_MISSING, DaliVideoReader, dali_available
    from tvts.data.pipeline import load_clip

    if not dali_available():
        ctx.skip(f"NVIDIA DALI is not installed ({DALI_MISSING})")
    gpu = ctx.device.type == "cuda"
    shards = benchmark_shards(ctx, "h264" if gpu else "vp9")  # DALI's CPU decoder has no H.264
    cfg = loader_config(ctx, shards, "dali")
    batch = cfg.train.micro_batch
    reader = DaliVideoReader.from_config(cfg, batch, train=True, device="gpu" if gpu else "cpu")
    samples = dali_samples(reader, cfg, shards)
    batches = [[samples[(i * batch + j) % len(samples)][0] for j in range(batch)] for i in range(DALI_BATCHES + 1)]
    reader(batches[0])  # warm-up: decoder sessions, buffers
    ctx.check("DALI batches")
    start = time.perf_counter()
    for b in batches[1:]:
        reader(b)
    if gpu:
        torch.cuda.synchronize()
    dali_s = time.perf_counter() - start
    frames = DALI_BATCHES * batch * cfg.sample.frames
    ctx.check("PyAV on the same clips")
    start = time.perf_counter()
    for i in range(DALI_BATCHES * batch):
        _, video, times = samples[i % len(samples)]
        load_clip(video, times, cfg.sample.image_size, cfg.data.resize_short, cfg.data.normalize, train=True,
                  generator=torch.Generator().manual_seed(i))
    pyav_s = time.perf_counter() - start
    ctx.put("dali", {"device": "gpu (NVDEC)" if gpu else "cpu (VP9)", "codec": "h264" if gpu else "vp9", "batch": batch,
                     "frames": frames, "frames_per_s": frames / dali_s, "pyav_frames_per_s_one_process": frames / pyav_s,
                     "speedup_vs_pyav": pyav_s / dali_s})


def run(ctx: Context) -> None:
    with ctx.part("pyav_loader"):
        run_pyav(ctx)
    with ctx.part("dali"):
        run_dali(ctx)


def markdown(result: dict) -> list[str]:
    out = []
    corpus, loader, step, dali = (result.get(k) for k in ("corpus", "loader", "step", "dali"))
    if corpus:
        out.append(f"Benchmark shards: {corpus['videos']} synthetic videos; clips of {corpus['frames_per_clip']} frames "
                   f"at {corpus['image_size']} px, micro-batch {corpus['micro_batch']}, {corpus['workers']} loader workers.")
    if loader:
        out.append(f"- PyAV loader alone: {loader['clips_per_s']:.1f} clips/s, {loader['frames_per_s']:.0f} frames/s")
    if step:
        out.append(f"- v1 step fed by it: {step['step_ms']:.1f} ms per step, data wait {step['data_wait_ms']:.1f} ms "
                   f"(**{100 * step['data_wait_fraction']:.1f} %** of the step), {step['clips_per_s']:.1f} clips/s")
    if dali:
        out.append(f"- DALI {dali['device']}: **{dali['frames_per_s']:.0f} frames/s** decoded, resized, cropped and "
                   f"normalised ({dali['frames']} frames); PyAV in one process on the same clips "
                   f"{dali['pyav_frames_per_s_one_process']:.0f} frames/s ({dali['speedup_vs_pyav']:.1f}x)")
    return out + [""]
