"""The writers of the synthetic sets: scenes sampled, rendered and encoded in worker processes, lists last.

**Pre-training corpus** (:func:`make_corpus`): narrated videos, ``<id>.mp4`` beside ``<id>.vtt``, and a
manifest. What a video shows is :mod:`tvts.data.synthetic.scene`'s, what its cues say
:mod:`tvts.data.synthetic.narration`'s.

**Downstream set** (:func:`make_downstream`), in Something-Something-V2's list format: short VP9
clips of one object changing in one of two opposite directions (left/right, grow/shrink,
appear/disappear, lighter/darker). Within a pair the first frame is drawn from the same
distribution, so only the motion tells the class.

**Event-order set** (:func:`make_order_downstream`), same format: two-event scenes of the corpus generator
whose class is which of a fixed pair of events came first; the narration names both events, not their order.

Everything is deterministic for a seed: video ``i`` uses its own random stream ``(seed, 0, i)`` and
the encoder runs single-threaded, so the bytes do not depend on ``workers``.
"""
from __future__ import annotations

import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from tvts.data.synthetic.narration import to_vtt
from tvts.data.synthetic.scene import (DOWNSTREAM_CLASSES, SyntheticError, check_canvas, encode, render, render_clip,
                                       sample_clip, sample_video)

# ----------------------------------------------------------------------------------------------
# Corpus
# ----------------------------------------------------------------------------------------------
def _write_videos(out: Path, indices: Sequence[int], kwargs: dict) -> List[dict]:
    rows = []
    for index in indices:
        video = sample_video(index, **kwargs)
        encode(render(video), out / f"{video.id}.mp4", video.fps)
        (out / f"{video.id}.vtt").write_text(to_vtt(video.cues, video.word_timed))
        rows.append({
            "id": video.id, "duration": video.duration, "num_frames": video.num_frames, "fps": video.fps,
            "size": video.size, "word_timed": video.word_timed,
            "events": [{"type": e.type, "start": e.start, "end": e.end,
                        "object": f"{e.colour} {video.objects[e.target]}"} for e in video.events],
        })
    return rows


def _run_chunks(fn, out: Path, count: int, workers: int, kwargs: dict) -> List[dict]:
    """Run ``fn(out, indices, kwargs)`` over ``range(count)`` in ``workers`` processes; rows in index order."""
    if workers <= 1 or count <= 1:
        return fn(out, range(count), kwargs)
    size = max(1, min(16, math.ceil(count / (2 * workers))))  # a few chunks per worker balance the load
    chunks = [range(i, min(count, i + size)) for i in range(0, count, size)]
    # spawn, not fork: the caller may hold torch/OpenMP threads that a forked child would inherit locked
    with ProcessPoolExecutor(min(workers, len(chunks)), mp_context=get_context("spawn")) as pool:
        parts = pool.map(fn, [out] * len(chunks), chunks, [kwargs] * len(chunks))
        return [row for part in parts for row in part]


def _write_lines(path: Path, lines: Sequence[str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in lines))
    os.replace(tmp, path)


def make_corpus(out_dir: str | Path, num_videos: int, seed: int = 0, size: int = 64, fps: int = 8, events: int = 4,
                event_s: float = 4.0, gap_s: float = 1.0, noise: float = 0.2, workers: int = 1) -> Path:
    """Write ``num_videos`` narrated videos to ``<out_dir>/videos/`` and return that folder.

    Each video is ``<id>.mp4`` (H.264, yuv420p, ``size``x``size``, ``fps``, keyframe every second)
    beside ``<id>.vtt``. ``manifest.jsonl`` (one line per video: id, duration in seconds, frames, fps,
    size, word_timed, events with type, window start/end in seconds and object) is written last, so
    its presence means the corpus is complete.
    """
    out = Path(out_dir) / "videos"
    out.mkdir(parents=True, exist_ok=True)
    kwargs = dict(seed=seed, size=size, fps=fps, events=events, event_s=event_s, gap_s=gap_s, noise=noise)
    sample_video(0, **kwargs)  # validate the arguments before starting workers
    rows = _run_chunks(_write_videos, out, num_videos, workers, kwargs)
    _write_lines(out / "manifest.jsonl", [json.dumps(row) for row in rows])
    return out


# ----------------------------------------------------------------------------------------------
# Downstream: direction-of-change classes in Something-Something-V2's list format
# ----------------------------------------------------------------------------------------------
def _balanced_labels(n: int, rng: np.random.Generator) -> List[int]:
    labels = np.arange(n) % len(DOWNSTREAM_CLASSES)
    return [int(x) for x in rng.permutation(labels)]


def _write_clips(out: Path, indices: Sequence[int], kwargs: dict) -> List[dict]:
    rows = []
    labels = kwargs["labels"]
    for index in indices:
        clip = sample_clip(index, kwargs["split"], kwargs["seed"], kwargs["size"], kwargs["fps"], labels[index])
        encode(render_clip(clip), out / f"{clip.id}.webm", clip.fps, codec="libvpx-vp9")
        rows.append({"id": clip.id, "label": clip.label})
    return rows


def make_downstream(out_dir: str | Path, num_train: int, num_val: int, seed: int = 0, size: int = 64, fps: int = 8,
                    workers: int = 1) -> Path:
    """Write the labelled direction-of-change set to ``<out_dir>/downstream/`` and return that folder.

    Layout (SSV2 lists): ``videos/<id>.webm`` (VP9, readable by DALI's CPU decoder), ``train.txt``
    and ``val.txt`` with lines ``<id>.webm <label>``, ``labels.json`` (class name -> id). Classes are
    balanced within each split (counts differ by at most one).
    """
    check_canvas(size, fps)
    if size < 64:  # the change of a moving (or growing) object is sized for the 64 px reference canvas
        raise SyntheticError(f"size={size}: downstream clips need a canvas of at least 64 px "
                             "(the demo makes them at 64)")
    out = Path(out_dir) / "downstream"
    videos = out / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", num_train), ("val", num_val)):
        labels = _balanced_labels(n, np.random.default_rng([seed, 2, {"train": 0, "val": 1}[split]]))
        kwargs = dict(split=split, seed=seed, size=size, fps=fps, labels=labels)
        rows = _run_chunks(_write_clips, videos, n, workers, kwargs)
        _write_lines(out / f"{split}.txt", [f"{r['id']}.webm {r['label']}" for r in rows])
    class_ids = {name: i for i, name in enumerate(DOWNSTREAM_CLASSES)}
    (out / "labels.json").write_text(json.dumps(class_ids, indent=1) + "\n")
    return out


# Event order: which of two events came first. The narration names both events of a clip but not their
# order, so words alone give a class pair, not the class (a diagnostic beside the direction-of-change set).
ORDER_PAIRS: Tuple[Tuple[str, str], ...] = (
    ("move_left", "grow"), ("move_right", "shrink"), ("move_up", "recolour"), ("move_down", "disappear"),
)
ORDER_CLASSES: Tuple[str, ...] = tuple(f"{a}_then_{b}" for pair in ORDER_PAIRS for a, b in (pair, pair[::-1]))
_ORDER_OFFSET = 1 << 31  # order-set scene i is video _ORDER_OFFSET + i (corpus: 0 .. N-1; training stream: 2**30 + i)


def order_class(types: Sequence[str]) -> Optional[int]:
    """Label of a two-event chain in :data:`ORDER_CLASSES`, or None when its pair is not one of :data:`ORDER_PAIRS`."""
    name = f"{types[0]}_then_{types[1]}" if len(types) == 2 else ""
    return ORDER_CLASSES.index(name) if name in ORDER_CLASSES else None


def _order_items(num_train: int, num_val: int, seed: int, kwargs: dict) -> Dict[str, List[Tuple[int, int]]]:
    """(scene index, label) per split: consecutive two-event scenes, kept while their class is short of its
    balanced count; the splits take disjoint index ranges."""
    items, index = {}, _ORDER_OFFSET
    for split, n in (("train", num_train), ("val", num_val)):
        quota = [n // len(ORDER_CLASSES) + (c < n % len(ORDER_CLASSES)) for c in range(len(ORDER_CLASSES))]
        rows: List[Tuple[int, int]] = []
        while len(rows) < n:
            label = order_class([e.type for e in sample_video(index, seed=seed, **kwargs).events])
            if label is not None and quota[label]:
                quota[label] -= 1
                rows.append((index, label))
            index += 1
        items[split] = rows
    return items


def _write_order_clips(out: Path, indices: Sequence[int], kwargs: dict) -> List[dict]:
    rows = []
    for i in indices:
        index, label = kwargs["items"][i]
        video = sample_video(index, seed=kwargs["seed"], **kwargs["scene"])
        encode(render(video), out / f"{video.id}.webm", video.fps, codec="libvpx-vp9")
        rows.append({"id": video.id, "label": label})
    return rows


def make_order_downstream(out_dir: str | Path, num_train: int, num_val: int, seed: int = 0, size: int = 32,
                          fps: int = 8, workers: int = 1) -> Path:
    """Write the event-order set to ``<out_dir>/downstream/`` (the layout of :func:`make_downstream`) and return it.

    Each clip is a two-event scene of the pre-training generator (4 s events, 1 s apart); its class is which event
    of one of :data:`ORDER_PAIRS` came first. Classes are balanced within each split. Scene indices come from their
    own range, so no clip is a corpus or training-stream clip.
    """
    scene = dict(size=size, fps=fps, events=2, event_s=4.0, gap_s=1.0)
    sample_video(0, seed=seed, **scene)  # validate the arguments before starting workers
    out = Path(out_dir) / "downstream"
    videos = out / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    for split, items in _order_items(num_train, num_val, seed, scene).items():
        kwargs = dict(items=items, seed=seed, scene=scene)
        rows = _run_chunks(_write_order_clips, videos, len(items), workers, kwargs)
        _write_lines(out / f"{split}.txt", [f"{r['id']}.webm {r['label']}" for r in rows])
    (out / "labels.json").write_text(json.dumps({name: i for i, name in enumerate(ORDER_CLASSES)}, indent=1) + "\n")
    return out


def generation_speed(num_videos: int = 20, seed: int = 0, **kwargs) -> Dict[str, float]:
    """Videos per second of one process for sample+render and for encoding (no files kept)."""
    import tempfile

    videos = [sample_video(i, seed=seed, **kwargs) for i in range(num_videos)]
    t = time.perf_counter()
    frames = [render(v) for v in videos]
    render_s = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        for v, f in zip(videos, frames):
            encode(f, Path(tmp) / f"{v.id}.mp4", v.fps)
        encode_s = time.perf_counter() - t
    return {"render_videos_per_s": num_videos / render_s, "encode_videos_per_s": num_videos / encode_s}
