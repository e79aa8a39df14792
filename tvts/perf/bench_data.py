"""Data-loading benchmark: our per-sample path and loader vs a re-creation of the official per-sample path.

The inputs, paths and measurements behind ``launch/bench_data.py``. Per-sample rows run on one thread
(figures per CPU core), on the same samples and frames for every path; loader rows run the real TrainLoader
with 0..N workers.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Optional, Sequence

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

from tvts import config as config_mod
from tvts.data.decode import probe
from tvts.data.ingest import IngestSettings, ingest_source
from tvts.data.loader import build_train_loader, measure_loader
from tvts.data.pipeline import SampleTransform, load_clip, official_clip
from tvts.data.sampling import frame_times
from tvts.data.shards import list_shards, read_shard
from tvts.data.synthetic import make_corpus
from tvts.data.transcripts import parse_merlot, parse_vtt
from tvts.models.text import build_tokenizer
from tvts.runtime import DistInfo

TINY = ["model.video.size=atto", "model.sort.heads=2", "model.video.patch_size=8", "sample.caption_frames=2",
        "sample.mask_ratio=0.5"]
V1 = "16x224 (official v1)"
OUTPUTS = {"8x64 (demo)": ["sample.frames_per_window=2", "sample.image_size=64", "data.resize_short=64"],
           # v1 sampling and masking: 16 frames, short side 268, 224 crop, 16 px patches, 75 % random mask
           V1: ["sample.frames_per_window=4", "sample.image_size=224", "data.resize_short=268",
                "model.video.patch_size=16", "sample.mask_ratio=0.75", "sample.mask=random"]}
# The GPU side of "cores per GPU": ViT-L/16 at 40 % MFU on one H100 trains on about this many frames per
# second. A projection from FLOPs, not a GPU measurement.
GPU_FRAMES_PER_S = 1800.0
CASES = ("raw-v1", "raw-demo", "demo", "v1", "v1-raw")


def youtube_like(source: Path, out: Path, aspect: float = 16 / 9, seed: int = 0) -> None:
    """Re-encode a square synthetic video as YouTube-like footage: widened to ``aspect`` (bilinear), with a
    panning grain texture (camera motion over detail) and per-frame sensor noise. The flat synthetic scenes
    compress to ~30 kbps at 256 px, far below real footage; this brings their shards to ~250 kbps (256 px,
    30 fps, crf 23), so decoding costs what textured video costs. Same encoder settings as the corpus."""
    rng = np.random.default_rng(seed)
    tmp = out.with_name(out.name + ".tmp")
    with av.open(str(source)) as src, av.open(str(tmp), "w", format="mp4", options={"fflags": "+bitexact"}) as dst:
        stream = src.streams.video[0]
        height = stream.codec_context.height
        width = round(height * aspect / 2) * 2
        enc = dst.add_stream("libx264", rate=stream.average_rate)
        enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
        enc.options = {"g": str(int(stream.average_rate)), "bf": "0", "crf": "20", "preset": "veryfast"}
        enc.codec_context.thread_count = 1
        grain = rng.normal(0.0, 12.0, (height, width + 256)).astype(np.float32)
        grain = (grain[:, :-2] + grain[:, 1:-1] + grain[:, 2:]) / 3  # a little spatial correlation
        scaler = VideoReformatter()
        for i, frame in enumerate(src.decode(stream)):
            rgb = scaler.reformat(frame, width=width, height=height, format="rgb24").to_ndarray().astype(np.float32)
            rgb += (grain[:, i % 254:i % 254 + width] + rng.normal(0.0, 2.0, (height, width)).astype(np.float32))[..., None]
            image = av.VideoFrame.from_ndarray(np.clip(rgb + 0.5, 0, 255).astype(np.uint8), format="rgb24")
            image.pts = i
            dst.mux(enc.encode(image))
        dst.mux(enc.encode())
    tmp.replace(out)


def make_inputs(work: Path, videos: int, raw_videos: int, raw_size: int, v1_short: int = 256,
                workers: int = 2) -> dict:
    """Made once under ``work`` and reused: ``videos`` demo-like videos (64 px, 8 fps, 19 s) and ``raw_videos``
    long raw ones (60 s, ``raw_size`` px, 30 fps, each with a MERLOT-style annotation), both ingested to shards
    (64 px, 8 fps); and the v1 input: the raw videos made YouTube-like (:func:`youtube_like`, 16:9) and ingested
    with the ingest defaults (H.264, ``v1_short`` px short side, the source's 30 fps, a keyframe a second).
    Returns {"demo" | "raw" | "v1": [(key, members), ...]} read back from the shards."""
    sets = {"demo": (videos, 64, 8, 4), "raw": (raw_videos, raw_size, 30, 12)}
    shard_settings = {"demo": IngestSettings(source="vtt", short_side=64, fps=8, samples_per_shard=8),
                      "raw": IngestSettings(source="vtt", short_side=64, fps=8, samples_per_shard=8),
                      "v1": IngestSettings(source="vtt", short_side=v1_short, samples_per_shard=8)}
    for name, (count, size, fps, events) in sets.items():
        if not (work / name / "videos" / "manifest.jsonl").is_file():
            make_corpus(work / name, count, seed=1, size=size, fps=fps, events=events, workers=workers)
    v1_videos = work / "v1" / "videos"
    if not (v1_videos / "manifest.jsonl").is_file():
        v1_videos.mkdir(parents=True, exist_ok=True)
        for index, video in enumerate(sorted((work / "raw" / "videos").glob("*.mp4"))):
            youtube_like(video, v1_videos / video.name, seed=index)
            shutil.copy(video.with_suffix(".vtt"), v1_videos / f"{video.stem}.vtt")
        shutil.copy(work / "raw" / "videos" / "manifest.jsonl", v1_videos / "manifest.jsonl")  # written last: complete
    for name, settings in shard_settings.items():
        if not (work / name / "shards" / "index.json").is_file():
            ingest_source("vtt", work / name / "videos", work / name / "shards", settings, workers=workers)
    for vtt in sorted((work / "raw" / "videos").glob("*.vtt")) + sorted(v1_videos.glob("*.vtt")):  # YT-Temporal style
        words = parse_vtt(vtt)
        note = {"subtitles": [{"word": w.lower(), "time": float(t)} for w, t in zip(words.words, words.times)],
                "denoised": [{"cleanasr": " ".join(words.words).capitalize() + "."}], "info": {"duration": 60.0}}
        vtt.with_suffix(".json").write_text(json.dumps(note))
    return {name: [(k, m) for path, _ in list_shards(str(work / name / "shards")) for k, m in read_shard(path)]
            for name in shard_settings}


def roundtrip_s(frames: int, height: int, width: int) -> float:
    """The reference reader's full-resolution float64 array and its way back to uint8: work official_clip
    does and the official code does not. Subtracted from the official times."""
    u8 = np.random.default_rng(0).integers(0, 255, (frames, height, width, 3), dtype=np.uint8)
    best = float("inf")
    for _ in range(3):
        t = time.process_time()
        clip = np.zeros((3, frames, height, width))
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


def _case(name: str, raw_size: int, v1_short: int) -> tuple:
    """(input label, output, sample set, official path, our paths) of a per-sample case. The sample set
    names the shards and, for the raw-video paths, the folder of their source videos."""
    raw = f"raw videos (60 s, {raw_size} px, 30 fps)"
    return {"raw-v1": (raw, V1, "raw", "official, raw video", ["ours, raw video"]),
            "raw-demo": (raw, "8x64 (demo)", "raw", "official, raw video", ["ours, raw video", "ours, shard"]),
            "demo": ("demo shards (64 px, 8 fps)", "8x64 (demo)", "demo", "official, shard",
                     ["ours, shard", "ours, shard + decoded cache"]),
            "v1": (f"v1 shards (H.264, {v1_short} px short side, 16:9, 30 fps)", V1, "v1", "official, shard",
                   ["ours, shard"]),
            "v1-raw": (f"v1 sources (60 s, 16:9, {raw_size} px short side, 30 fps)", V1, "v1", "official, raw video",
                       ["ours, raw video", "ours, shard"])}[name]


def per_sample(samples: dict, work: Path, raw_size: int, limit: int, repeats: int,
               cases: Sequence[str] = CASES, v1_short: int = 256, gpu_frames_per_s: float = GPU_FRAMES_PER_S) -> list[dict]:
    """CPU ms per clip on one thread (the median of ``repeats``, paths interleaved sample by sample so that
    load from other processes hits them alike); "vs official" = the official path's time / this path's.
    ``work``: the folder :func:`make_inputs` filled.
    Frames are the frames used (the model's T per clip); ``cores_per_gpu`` = ``gpu_frames_per_s`` / frames/s/core
    (16x224 rows only)."""
    torch.set_num_threads(1)
    rows = []
    for case in cases:
        input_name, output, which, official, others = _case(case, raw_size, v1_short)
        cfg = config_mod.load(None, TINY + OUTPUTS[output])
        raw_dir = work / which / "videos"
        paths = sample_paths(cfg, raw_dir)
        todo = samples[which][:limit]
        names = [official] + others
        if "ours, shard + decoded cache" in names:
            for key, members in todo:  # warm-up; fills the decoded cache
                paths["ours, shard + decoded cache"](key, members)
        cpu = {name: np.zeros((repeats, len(todo))) for name in names}
        wall = {name: np.zeros((repeats, len(todo))) for name in names}
        for r in range(repeats):
            for i, (key, members) in enumerate(todo):
                for name in names:
                    c, w = time.process_time(), time.perf_counter()
                    paths[name](key, members)
                    cpu[name][r, i], wall[name][r, i] = time.process_time() - c, time.perf_counter() - w
        key, members = todo[0]
        source = raw_dir / f"{json.loads(members['json'])['source']}.mp4" if official.endswith("raw video") else members["mp4"]
        info = probe(source)
        extra = 1e3 * roundtrip_s(cfg.sample.frames, info.height, info.width)
        base = None
        for name in names:
            removed = extra if name == official else 0.0
            ms = 1e3 * float(np.median(cpu[name], axis=0).mean()) - removed
            base = base or ms
            frames_per_s = 1e3 * cfg.sample.frames / ms
            rows.append({"case": case, "input": input_name, "output": output, "path": name, "clips": len(todo),
                         "repeats": repeats, "ms_per_clip": ms,
                         "wall_ms_per_clip": 1e3 * float(np.median(wall[name], axis=0).mean()) - removed,
                         "clips_per_s": 1e3 / ms, "frames_per_s": frames_per_s, "vs_official": base / ms,
                         "cores_per_gpu": gpu_frames_per_s / frames_per_s if output == V1 else None,
                         "roundtrip_ms_removed": removed})
    return rows


def loaders(shards: str, epoch_clips: int, workers: list[int], batches: int, batch: int,
            output: str = "8x64 (demo)", caches: Sequence[int] = (0, 2048), input_name: Optional[str] = None,
            gpu_frames_per_s: float = GPU_FRAMES_PER_S) -> list[dict]:
    """TrainLoader wall-clock throughput on ``shards`` at ``output``, per decoder, decoded cache size (MB)
    and worker count. With 0 workers all the work runs in this process: ``frames_per_cpu_s`` is the frames
    made per CPU second of it (warm-up batches included), the loader's figure per core whatever the load."""
    rows = []
    for decoder in ["pyav"] + (["dali"] if torch.cuda.is_available() else []):
        for cache in caches:
            for n in workers:
                cfg = config_mod.load(None, TINY + OUTPUTS[output] + [
                    f"data.train=[{shards}]", f"data.num_workers={n}", f"train.micro_batch={batch}",
                    f"data.decoded_cache_mb={cache}", f"data.decoder={decoder}", "data.shuffle_buffer=64"])
                loader = build_train_loader(cfg, DistInfo(), build_tokenizer(cfg))
                warmup = 2 * -(-epoch_clips // batch) if cache else 2  # cache rows: measured once it is full
                cpu = time.process_time()
                result = measure_loader(loader, batches, warmup)
                cpu = time.process_time() - cpu
                per_core = (warmup + batches) * batch * cfg.sample.frames / cpu if n == 0 else None
                rows.append({"input": input_name or shards, "output": output, "decoder": decoder, "workers": n,
                             "decoded_cache": bool(cache), **result, "frames_per_cpu_s": per_core,
                             "cores_per_gpu": gpu_frames_per_s / per_core if per_core and output == V1 else None,
                             "clips_per_s_per_worker": result["clips_per_s"] / max(1, n)})
    return rows
