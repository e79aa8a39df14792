"""Data-loading benchmark: our per-sample path and loader vs a re-creation of the official per-sample path.

    python launch/bench_data.py --out runs/bench_data.json

Inputs are made once under --work: a demo-like corpus (64 px, 8 fps, 19 s videos) and a few long "raw"
videos standing for YouTube files (60 s, 320 px, 30 fps, with a MERLOT-style annotation each), both
ingested to shards (64 px, 8 fps). Per-sample rows run here on one thread (figures per CPU core), on the
same samples and frames for every path; loader rows run the real TrainLoader with 0..N workers.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from tvts import config as config_mod
from tvts.bench import environment, markdown_table, write_json
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


def make_inputs(work: Path, args) -> dict:
    sets = {"demo": (args.videos, 64, 8, 4), "raw": (args.raw_videos, args.raw_size, 30, 12)}
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


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="runs/bench_data", help="inputs are made here once and reused")
    p.add_argument("--out", default="runs/bench_data.json")
    p.add_argument("--videos", type=int, default=64, help="demo-like videos (64 px, 8 fps, 19 s)")
    p.add_argument("--raw-videos", type=int, default=3, help="long raw videos (60 s, 30 fps)")
    p.add_argument("--raw-size", type=int, default=320)
    p.add_argument("--samples", type=int, default=24, help="samples timed per per-sample row")
    p.add_argument("--repeats", type=int, default=3, help="timings per sample and path (the median counts)")
    p.add_argument("--workers", default="0,1,2", help="loader worker counts")
    p.add_argument("--batches", type=int, default=24, help="batches timed per loader row")
    p.add_argument("--batch", type=int, default=8)
    args = p.parse_args(argv)
    work = Path(args.work)
    load_before = os.getloadavg()
    samples = make_inputs(work, args)
    sample_rows = per_sample(samples, work / "raw" / "videos", args.raw_size, args.samples, args.repeats)
    print(markdown_table(sample_rows, [("input", "input", ""), ("output", "output T x S", ""), ("path", "path", ""),
                              ("ms_per_clip", "CPU ms/clip", ".1f"), ("wall_ms_per_clip", "wall ms/clip", ".1f"),
                              ("clips_per_s", "clips/s/core", ".1f"),
                              ("frames_per_s", "frames/s/core", ".0f"), ("vs_official", "vs official", ".1f")]), flush=True)
    loader_rows = loaders(str(work / "demo" / "shards"), len(samples["demo"]), [int(w) for w in args.workers.split(",")],
                          args.batches, args.batch)
    print()
    print(markdown_table(loader_rows, [("decoder", "decoder", ""), ("workers", "workers", "d"), ("decoded_cache", "decoded cache", ""),
                              ("clips_per_s", "clips/s", ".1f"), ("frames_per_s", "frames/s", ".0f"),
                              ("clips_per_s_per_worker", "clips/s/worker", ".1f")]))
    try:
        import decord  # noqa: F401
        notes = ["decord is installed but has no loader path here"]
    except ImportError:
        notes = ["decord: not installed, not measured"]
    notes.append("DALI: " + ("measured" if torch.cuda.is_available() else "not measured (no GPU; its CPU backend decodes only VP8/VP9)"))
    print("; ".join(notes))
    result = {**environment(torch.device("cpu")), "load_avg_before": load_before, "load_avg_after": os.getloadavg(),
              "args": vars(args), "per_sample": sample_rows, "loader": loader_rows, "notes": notes}
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
