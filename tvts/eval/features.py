"""Frozen video features of a list of clips, written to disk: batched, resumable, deterministic.

Each clip gives M frames at the middles of M equal bins over its whole length (the official v2
evaluations' 'uniform' sampling; the official v1 SSV2 evaluation draws a random offset per segment,
which makes its numbers irreproducible, method §5 item 5), resized so the short side is
``resize_short``, centre-cropped to the model's ``sample.image_size`` and normalised. No masking,
one view. With ``single_frame`` the clip's middle frame is repeated M times: the same encoder and
token count, but no motion to see.

Layout: ``<out>/features/<name>-<key>/`` with ``meta.json`` (model, protocol, list) and
``chunk_00000.safetensors`` ... (``cls`` (n, width) and, when the model has a video-text space,
``embed`` (n, E), float32, in list order). ``key`` hashes the weights, the protocol and the list, so a
changed setting never reuses stale features. A chunk is written to a temporary name and renamed, so a
killed run leaves only complete chunks, and a re-run computes only the missing ones.

Determinism: the frame times, the crop and the list order are fixed, and the model runs in eval
mode without dropout or masking, so a re-run reproduces the features bitwise on the same machine.
Across batch sizes they agree to float32 rounding (BLAS kernels may block a batch differently).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from tvts.data.augment import crop_video, normalize_video
from tvts.data.decode import decode_frames, frame_timeline
from tvts.data.errors import SkipSample
from tvts.data.sampling import frame_times
from tvts.eval.datasets import resolve_video
from tvts.eval.options import OptionError
from tvts.errors import UserError

log = logging.getLogger("tvts.eval")


class EvalDataError(UserError):
    """A clip of an evaluation list that cannot be read; names the list line and the file."""


def clip_times(start: float, end: float, frames: int, single_frame: bool = False) -> np.ndarray:
    """(frames,) float64 seconds: bin middles of ``[start, end)``, or its middle repeated."""
    if single_frame:
        return np.repeat(frame_times(start, end, 1, train=False), frames)
    return frame_times(start, end, frames, train=False)


class ClipDataset(Dataset):
    """Item i -> clip ``videos[i]`` preprocessed for evaluation, (M, 3, S, S) uint8: resized and cropped, normalised
    (``normalize``) on the device after the copy (:func:`extract_features`)."""

    def __init__(self, videos: Sequence[str], where: Sequence[str], frames: int, image_size: int,
                 resize_short: int, normalize: str, single_frame: bool = False):
        self.videos, self.where = list(videos), list(where)
        self.frames, self.image_size, self.resize_short = frames, image_size, resize_short
        self.normalize, self.single_frame = normalize, single_frame

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, i: int) -> tuple[int, Optional[torch.Tensor], str]:
        """(i, video or None, error): a bad clip comes back as its error line, raised by the main process
        (an exception raised in a DataLoader worker arrives wrapped in its traceback)."""
        path = self.videos[i]
        try:
            timeline = frame_timeline(path)
            times = clip_times(float(timeline.starts[0]), timeline.end_s, self.frames, self.single_frame)
            frames = decode_frames(path, times)
        except SkipSample as err:
            return i, None, f"{self.where[i]}: {err}"
        return i, crop_video(frames, self.image_size, self.resize_short, train=False), ""


def _collate(batch: list) -> tuple[torch.Tensor, Optional[torch.Tensor], list[str]]:
    errors = [error for _, _, error in batch if error]
    videos = None if errors else torch.stack([video for _, video, _ in batch])
    return torch.tensor([i for i, _, _ in batch]), videos, errors


@dataclass
class Features:
    cls: torch.Tensor  # (N, width) float32: [CLS] after the final LayerNorm
    embed: Optional[torch.Tensor]  # (N, E) float32: the video-text space, or None
    directory: Path
    meta: dict

    def get(self, kind: str) -> torch.Tensor:
        if kind == "cls":
            return self.cls
        if self.embed is None:
            raise OptionError(f"feature: {self.directory} has no video-text embedding (no VTC heads were loaded); use feature=cls")
        return self.embed


def feature_key(fingerprint: str, protocol: dict, videos: Sequence[str]) -> str:
    digest = hashlib.sha256(json.dumps({"weights": fingerprint, "protocol": protocol}, sort_keys=True).encode())
    for v in videos:
        digest.update(v.encode() + b"\n")
    return digest.hexdigest()[:12]


def extract_features(model, videos: Sequence[str], where: Sequence[str], out_dir, opts, name: str) -> Features:
    """Features of ``videos`` (file paths) with ``model`` (:class:`tvts.eval.loading.EvalModel`) under the
    resolved :class:`tvts.eval.options.EvalOptions` ``opts``; cached under ``<out_dir>/features/``."""
    cfg = model.cfg
    protocol = opts.protocol(cfg)
    directory = Path(out_dir) / "features" / f"{name}-{feature_key(model.fingerprint, protocol, videos)}"
    directory.mkdir(parents=True, exist_ok=True)
    meta = {"model": model.describe(), "protocol": protocol, "count": len(videos), "chunk_size": opts.chunk_size,
            "list": where[0].rsplit(":", 1)[0] if where else ""}
    meta_path = directory / "meta.json"
    if meta_path.is_file():  # resuming: keep the chunking the finished chunks were written with
        meta["chunk_size"] = json.loads(meta_path.read_text())["chunk_size"]
    else:
        _atomic_write(meta_path, json.dumps(meta, indent=1).encode())
    dataset = ClipDataset(videos, where, opts.frames, cfg.sample.image_size, opts.resize_short, opts.normalize,
                          opts.single_frame)
    size = meta["chunk_size"]
    chunks = [(lo, min(lo + size, len(videos))) for lo in range(0, len(videos), size)]
    todo = [c for c in range(len(chunks)) if not _chunk_path(directory, c).is_file()]
    if len(todo) < len(chunks):
        log.info("features %s: %d of %d chunks already on disk", directory, len(chunks) - len(todo), len(chunks))
    for c in todo:
        lo, hi = chunks[c]
        t0 = time.perf_counter()
        cls, embed = _run_chunk(model, Subset(dataset, range(lo, hi)), opts)
        tensors = {"cls": cls} if embed is None else {"cls": cls, "embed": embed}
        _save_chunk(_chunk_path(directory, c), tensors)
        log.info("features %s: chunk %d/%d (%d clips, %.1f clips/s)", directory.name, c + 1, len(chunks), hi - lo,
                 (hi - lo) / max(time.perf_counter() - t0, 1e-9))
    return _load(directory, chunks, meta)


def _run_chunk(model, subset: Subset, opts) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    loader = DataLoader(subset, batch_size=opts.batch_size, shuffle=False, num_workers=opts.workers, collate_fn=_collate)
    cls_rows, embed_rows, seen = [], [], []
    for index, video, errors in loader:
        if errors:  # an evaluation list is a fixed benchmark: a clip is never dropped silently
            raise EvalDataError(errors[0])
        cls, embed = model.video_features(normalize_video(video.to(model.device, non_blocking=True), opts.normalize))
        cls_rows.append(cls)
        seen.append(index)
        if embed is not None:
            embed_rows.append(embed)
    order = torch.cat(seen)
    expected = torch.as_tensor(list(subset.indices))
    if not torch.equal(order, expected):  # the loader keeps order; a changed default would corrupt the cache
        raise RuntimeError("the clip loader returned items out of order")
    return torch.cat(cls_rows), (torch.cat(embed_rows) if embed_rows else None)


def _chunk_path(directory: Path, c: int) -> Path:
    return directory / f"chunk_{c:05d}.safetensors"


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _save_chunk(path: Path, tensors: dict) -> None:
    from safetensors.torch import save

    _atomic_write(path, save({k: v.contiguous() for k, v in tensors.items()}))


def _load(directory: Path, chunks: list, meta: dict) -> Features:
    from safetensors.torch import load_file

    if not chunks:
        raise ValueError(f"{directory}: the clip list is empty")
    cls, embed = [], []
    for c, (lo, hi) in enumerate(chunks):
        part = load_file(str(_chunk_path(directory, c)))
        if part["cls"].shape[0] != hi - lo:
            raise RuntimeError(f"{_chunk_path(directory, c)}: {part['cls'].shape[0]} rows, expected {hi - lo}; delete it")
        cls.append(part["cls"])
        if "embed" in part:
            embed.append(part["embed"])
    return Features(torch.cat(cls), torch.cat(embed) if len(embed) == len(chunks) else None, directory, meta)


def features_of(model, items: Sequence, root, out_dir, opts, name: str) -> Features:
    """:func:`extract_features` of list records with ``.video`` (relative to ``root``) and ``.where``."""
    return extract_features(model, [resolve_video(Path(root), it.video) for it in items], [it.where for it in items],
                            out_dir, opts, name)


def feature_kind(opts, default: str) -> str:
    """The feature a protocol uses: ``opts.feature`` unless "auto", then ``default`` ("cls" or "embed")."""
    return default if opts.feature == "auto" else opts.feature
