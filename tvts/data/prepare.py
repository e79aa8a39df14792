"""Build the synthetic demo data on first use: narrated corpus -> shards, plus the downstream set.

Layout under ``cfg.data.root``::

    raw/videos/        synthetic.make_corpus: <id>.mp4 + <id>.vtt, manifest.jsonl (written last)
    downstream/        synthetic.make_downstream: SSV2-style lists
    shards/            transcript shard set of the first 90 % of the videos (sorted by id)
    val_shards/        the last 10 % (at least one video)

With ``data.synthetic_stream`` training draws from the procedural stream (:mod:`tvts.data.stream`), so
the corpus is only the held-out set: ``stream_val/raw/videos`` holds ``DEMO_STREAM_VAL`` videos, all in
``stream_val/shards/`` (decoded through the real shard path, as a user's data would be). It has its own
directory so that switching one root between the two modes never puts a clip in both train and val.

Every stage is skipped when its completion mark exists (manifest.jsonl, labels.json, index.json), and
the ingest resumes shard by shard, so a second call only points the config at the shards.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Optional

from tvts.data import ingest, shards, synthetic
from tvts import runtime

DEMO_VIDEOS = 400
DEMO_STREAM_VAL = 128  # held-out corpus videos when training on the stream (4 eval batches of 32)
DEMO_DOWNSTREAM = (800, 800)  # train, val clips: 800 evaluation clips give a 95 % interval of about +-3.5 points
VAL_FRACTION = 0.1
DEMO_FPS = 8
DEMO_NOISE = 0.2
DOWNSTREAM_MIN_SIZE = 64
DEMO_SAMPLES_PER_SHARD = 50  # several shards, so ingest workers and loader workers each get some


def _stage(name: str, t0: float, what: str) -> None:
    print(f"demo data: {name:<10} {what} ({time.perf_counter() - t0:.1f} s)", flush=True)


def ensure_demo_corpus(cfg, info=None, num_videos: int = DEMO_VIDEOS, downstream: tuple[int, int] = DEMO_DOWNSTREAM,
                       workers: int = 0) -> bool:
    """When ``cfg.data.synthetic`` is set and ``cfg.data.train`` is empty: build (rank 0 only, if missing)
    the synthetic corpus, the downstream set and the train/val shard sets under ``cfg.data.root``, then set
    ``cfg.data.train`` / ``cfg.data.val`` to the shard directories on every rank. Returns whether it
    applied. ``info``: a :class:`tvts.runtime.DistInfo` (None: a single process).

    Videos are ``cfg.sample.image_size`` pixels square at 8 fps, with ``cfg.sample.num_windows`` events of
    ``cfg.data.window_max_s`` seconds, ``cfg.data.gap_s`` apart (the window grid lines up with the events).
    With several ranks the root must be on a filesystem they share.
    """
    if not cfg.data.synthetic or cfg.data.train:
        return False
    root = Path(cfg.data.root)
    stream = cfg.data.synthetic_stream
    if stream:
        raw, train_dir, val_dir, num_videos = root / "stream_val" / "raw", None, root / "stream_val" / "shards", DEMO_STREAM_VAL
    else:
        raw, train_dir, val_dir = root / "raw", root / "shards", root / "val_shards"
    if info is None or info.is_main:
        workers = workers or max(1, min(4, os.cpu_count() or 1))
        _build(cfg, root, raw, train_dir, val_dir, num_videos, downstream, workers)
    runtime.barrier()
    for directory in (train_dir, val_dir):
        if directory is not None:
            shards.load_index(directory)  # every rank: fail with one line if rank 0 could not build it
    if not stream:
        cfg.data.train = [str(train_dir)]
    cfg.data.val = [str(val_dir)]
    return True


def _check_existing(manifest: Path, size: int, events: int, event_s: float, gap_s: float) -> None:
    """A corpus built earlier with another canvas or window grid is not reused silently (one line)."""
    if not manifest.is_file():
        return
    with open(manifest) as f:
        first = json.loads(f.readline() or "{}")
    windows = [(e.get("start"), e.get("end")) for e in first.get("events", [])]
    want = [(float(a), float(b)) for a, b in synthetic.event_windows(events, event_s, gap_s)]
    if first.get("size") != size or windows != want:
        raise ingest.IngestError(
            f"{manifest.parent}: this synthetic corpus was built with {first.get('size')} px frames and windows "
            f"{windows}, but the config asks for {size} px and {want}: delete {manifest.parents[1]} "
            f"(it is rebuilt in seconds) or set data.root to another directory")


def _build(cfg, root: Path, raw: Path, train_dir: Optional[Path], val_dir: Path, num_videos: int,
           downstream: tuple[int, int], workers: int) -> None:
    """train_dir None: every video goes to val_dir (the stream supplies the training clips)."""
    size, k = cfg.sample.image_size, cfg.sample.num_windows
    t0 = time.perf_counter()
    _check_existing(raw / "videos" / "manifest.jsonl", size, k, cfg.data.window_max_s, cfg.data.gap_s)
    if not (raw / "videos" / "manifest.jsonl").is_file():
        synthetic.make_corpus(raw, num_videos, seed=cfg.seed, size=size, fps=DEMO_FPS, events=k,
                              event_s=cfg.data.window_max_s, gap_s=cfg.data.gap_s, noise=DEMO_NOISE, workers=workers)
        _stage("corpus", t0, f"{num_videos} narrated videos, {size} px, {DEMO_FPS} fps -> {raw / 'videos'}")
    t0 = time.perf_counter()
    if not (root / "downstream" / "labels.json").is_file():
        # the downstream clips' motions need a canvas of at least 64 px (make_downstream fails below ~48);
        # evaluation resizes them to the model's image size anyway
        ds_size = max(size, DOWNSTREAM_MIN_SIZE)
        synthetic.make_downstream(root, downstream[0], downstream[1], seed=cfg.seed, size=ds_size, fps=DEMO_FPS,
                                  workers=workers)
        _stage("downstream", t0, f"{downstream[0]} train + {downstream[1]} val clips, {ds_size} px -> {root / 'downstream'}")
    records = ingest.list_records("vtt", raw / "videos")
    if train_dir is None:
        split = {"val": (records, val_dir)}
    else:
        n_val = max(1, math.ceil(len(records) * VAL_FRACTION)) if len(records) > 1 else 0
        split = {"train": (records[: len(records) - n_val], train_dir), "val": (records[len(records) - n_val:], val_dir)}
    settings = ingest.IngestSettings.from_config(cfg, "vtt", short_side=size,
                                                   samples_per_shard=DEMO_SAMPLES_PER_SHARD)
    for name, (part, out) in split.items():
        if (out / shards.INDEX_NAME).is_file():
            continue
        t0 = time.perf_counter()
        if not part:
            raise ingest.IngestError(f"{raw / 'videos'}: too few videos for a {name} split")
        result = ingest.ingest(part, out, settings, workers=workers, input_path=str(raw / "videos"))
        skipped = ", ".join(f"{r} {n}" for r, n in result.index["skipped"].items()) or "none"
        _stage(f"{name} shards", t0, f"{result.samples} samples from {len(part)} videos in "
                                      f"{len(result.index['shards'])} shards, skipped: {skipped} -> {out}")
        if result.samples == 0:
            raise ingest.IngestError(f"{out}: no sample could be made from {raw / 'videos'}")
