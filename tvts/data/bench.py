"""Data-loading benchmark: our per-sample path and loader vs a re-creation of the official per-sample path.

The inputs, paths and measurements behind ``launch/bench_data.py``. Per-sample rows run on one thread
(figures per CPU core), on the same samples and frames for every path; loader rows run the real TrainLoader
with 0..N workers.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from tvts import config as config_mod
from tvts.data.ingest import IngestSettings, ingest_source
from tvts.data.loader import build_train_loader, measure_loader
from tvts.data.pipeline import SampleTransform, load_clip, official_clip
from tvts.data.sampling import frame_times
from tvts.data.shards import list_shards, read_shard
from tvts.data.synthetic import make_corpus
from tvts.data.transcripts import parse_merlot, parse_vtt
from tvts.engine.distributed import DistInfo
from tvts.models.text import build_tokenizer

TINY = ["model.video.size=atto", "model.sort.heads=2", "model.video.patch_size=8", "sample.caption_frames=2",
        "sample.mask_ratio=0.5"]
OUTPUTS = {"8x64 (demo)": ["sample.frames_per_window=2", "sample.image_size=64", "data.resize_short=64"],
           "16x224 (official v1)": ["sample.frames_per_window=4", "sample.image_size=224", "data.resize_short=268"]}


def make_inputs(work: Path, videos: int, raw_videos: int, raw_size: int) -> dict:
    """Made once under ``work`` and reused: ``videos`` demo-like videos (64 px, 8 fps, 19 s) and ``raw_videos``
    long raw ones (60 s, ``raw_size`` px, 30 fps, each with a MERLOT-style annotation), both ingested to shards
    (64 px, 8 fps). Returns {"demo" | "raw": [(key, members), ...]} read back from the shards."""
    sets = {"demo": (videos, 64, 8, 4), "raw": (raw_videos, raw_size, 30, 12)}
    for name, (count, size, fps, events) in sets.items():
        if not (work / name / "videos" / "manifest.jsonl").is_file():
            make_corpus(work / name, count, seed=1, size=size, fps=fps, events=events, workers=2)
        if not (work / name / "shards" / "index.json").is_file():
            ingest_source("vtt", work / name / "videos", work / name / "shards",
                          IngestSettings(source="vtt", short_side=64, fps=8, samples_per_shard=8), workers=2)
    for vtt in sorted((work / "raw" / "videos").glob("*.vtt")):  # YT-Temporal style: ASR words + denoised text
        words = parse_vtt(vtt)
        note = {"subtitles": [{"word": w.lower(), "time": float(t)} for w, t in zip(words.words, words.times)],
                "denoised": [{"cleanasr": " ".join(words.words).capitalize() + "."}], "info": {"duration": 60.0}}
        vtt.with_suffix(".json").write_text(json.dumps(note))
    return {name: [(k, m) for path, _ in list_shards(str(work / name / "shards")) for k, m in read_shard(path)]
            for name in sets}


def roundtrip_s(frames: int, side: int) -> float:
    """The reference reader's full-resolution float64 array and its way back to uint8: work official_clip
    does and the official code does not. Subtracted from the official times."""
    u8 = np.random.default_rng(0).integers(0, 255, (frames, side, side, 3), dtype=np.uint8)
    best = float("inf")
    for _ in range(3):
        t = time.process_time()
        clip = np.zeros((3, frames, side, side))
        for k in range(frames):
            clip[:, k] = u8[k].transpose(2, 0, 1)
        np.rint(clip.transpose(1, 0, 2, 3) / 255.0 * 255.0).astype(np.uint8)
        best = min(best, time.process_time() - t)
    return best


def sample_paths(cfg, raw_dir: Path) -> dict:
    """Each path's whole per-sample work as ``f(key, members)``; all take the same frames."""
    size, short, frames = cfg.sample.image_size, cfg.data.resize_short, cfg.sample.frames
    transform = SampleTransform(cfg, True)
    cached = SampleTransform(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, decoded_cache_mb=2048)), True)

    def where(members, raw: bool):
        meta = json.loads(members["json"])
        times = frame_times(meta["windows"][0][0], meta["windows"][-1][1], frames, True, np.random.default_rng(0))
        if raw:  # the source video at the sample's span
            return meta, str(raw_dir / f"{meta['source']}.mp4"), times + meta["span"][0]
        return meta, members["mp4"], times

    def official_raw(key, members):  # annotation re-read and DTW-aligned every sample, then per-frame seeks
        meta, video, times = where(members, True)
        words = parse_merlot(str(raw_dir / f"{meta['source']}.json"))
        [" ".join(words.words_between(meta["span"][0] + s, meta["span"][0] + e)) for s, e in meta["windows"]]
        official_clip(video, times, size, short, train=True, generator=torch.Generator())

    def official_shard(key, members):
        official_clip(*where(members, False)[1:], size, short, train=True, generator=torch.Generator())

    def ours_raw(key, members):  # transcripts were cut once, at ingest
        load_clip(*where(members, True)[1:], size, short, train=True, generator=torch.Generator())

    return {"official, raw video": official_raw, "official, shard": official_shard, "ours, raw video": ours_raw,
            "ours, shard": lambda key, members: transform(dict(members, __key__=key), "transcripts", 0),
            "ours, shard + decoded cache": lambda key, members: cached(dict(members, __key__=key), "transcripts", 0)}


def per_sample(samples: dict, raw_dir: Path, raw_size: int, limit: int, repeats: int) -> list[dict]:
    """CPU ms per clip on one thread (the median of ``repeats``, paths interleaved sample by sample so that
    load from other processes hits them alike); "vs official" = the official path's time / this path's."""
    torch.set_num_threads(1)
    raw, demo = f"raw videos (60 s, {raw_size} px, 30 fps)", "demo shards (64 px, 8 fps)"
    cases = [(raw, "16x224 (official v1)", "raw", "official, raw video", ["ours, raw video"]),
             (raw, "8x64 (demo)", "raw", "official, raw video", ["ours, raw video", "ours, shard"]),
             (demo, "8x64 (demo)", "demo", "official, shard", ["ours, shard", "ours, shard + decoded cache"])]
    rows = []
    for input_name, output, which, official, others in cases:
        cfg = config_mod.load(None, TINY + OUTPUTS[output])
        paths = sample_paths(cfg, raw_dir)
        todo = samples[which][:limit]
        for key, members in todo:  # warm-up; fills the decoded cache
            paths["ours, shard + decoded cache"](key, members)
        names = [official] + others
        cpu = {name: np.zeros((repeats, len(todo))) for name in names}
        wall = {name: np.zeros((repeats, len(todo))) for name in names}
        for r in range(repeats):
            for i, (key, members) in enumerate(todo):
                for name in names:
                    c, w = time.process_time(), time.perf_counter()
                    paths[name](key, members)
                    cpu[name][r, i], wall[name][r, i] = time.process_time() - c, time.perf_counter() - w
        extra = 1e3 * roundtrip_s(cfg.sample.frames, raw_size if which == "raw" else 64)
        base = None
        for name in names:
            removed = extra if name == official else 0.0
            ms = 1e3 * float(np.median(cpu[name], axis=0).mean()) - removed
            base = base or ms
            rows.append({"input": input_name, "output": output, "path": name, "clips": len(todo), "repeats": repeats,
                         "ms_per_clip": ms, "wall_ms_per_clip": 1e3 * float(np.median(wall[name], axis=0).mean()) - removed,
                         "clips_per_s": 1e3 / ms, "frames_per_s": 1e3 * cfg.sample.frames / ms, "vs_official": base / ms,
                         "roundtrip_ms_removed": removed})
    return rows


def loaders(shards: str, epoch_clips: int, workers: list[int], batches: int, batch: int) -> list[dict]:
    rows = []
    for decoder in ["pyav"] + (["dali"] if torch.cuda.is_available() else []):
        for cache in (0, 2048):
            for n in workers:
                cfg = config_mod.load(None, TINY + OUTPUTS["8x64 (demo)"] + [
                    f"data.train=[{shards}]", f"data.num_workers={n}", f"train.micro_batch={batch}",
                    f"data.decoded_cache_mb={cache}", f"data.decoder={decoder}", "data.shuffle_buffer=64"])
                loader = build_train_loader(cfg, DistInfo(), build_tokenizer(cfg))
                warmup = 2 * -(-epoch_clips // batch) if cache else 2  # cache rows: measured once it is full
                result = measure_loader(loader, batches, warmup)
                rows.append({"decoder": decoder, "workers": n, "decoded_cache": bool(cache), **result,
                             "clips_per_s_per_worker": result["clips_per_s"] / max(1, n)})
    return rows
