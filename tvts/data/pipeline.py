"""The per-sample transform of the loader: one webdataset sample in, one training sample out.

A raw sample is the dict webdataset groups from a shard: ``__key__``, a video member (``mp4`` or
``webm``, holding only the span, already at a small short side) and a ``json`` member (see
:mod:`tvts.data.loader` for the format). :class:`SampleTransform` turns it into frames, presented
texts, labels and keep indices (method §2.1 steps 4-8, §2.3):

* frame times: :func:`~tvts.data.sampling.frame_times` over the span from the first window's start
  to the last window's end, gaps included (train: one random time per bin; eval: bin middles);
* frames: :func:`~tvts.data.decode.decode_frames` (one seek, swscale to ``data.resize_short``), or the
  worker's :class:`DecodedCache`, or host-side preparation for the DALI reader;
* :func:`~tvts.data.augment.crop_video` (train: one random crop shared by all frames), still uint8: the
  consumer normalises on the device (:func:`~tvts.data.augment.normalize_video`, run by the strategies);
* transcripts shuffled EXPLICITLY (the official loader never shuffles: ``order`` is always
  ``range(4)``, method §1.1), ``labels[i]`` = the chronological slot of presented transcript ``i``;
* :func:`~tvts.data.masking.keep_indices` on :meth:`tvts.config.Config.patch_grid`.

Every random draw of a sample comes from :func:`sample_rng` ``(cfg.seed, epoch, key)``, in a fixed
order (frame times, permutation, then a torch generator for the crop and the mask), so a sample is
the same whichever worker or rank handles it. Unusable input raises
:class:`~tvts.data.errors.SkipSample`; the loader counts it and moves on (never a black frame).
"""
from __future__ import annotations

import collections
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import torch

from tvts.data.augment import NORMALIZE_STATS, crop_offsets, crop_video, normalize_video, resized_size
from tvts.data.decode import decode_frames, decode_frames_reference, frame_timeline, probe
from tvts.data.errors import SkipSample
from tvts.data.masking import keep_indices
from tvts.data.sampling import frame_indices, frame_times

KINDS = ("transcripts", "captions")
VIDEO_MEMBERS = ("mp4", "webm", "mkv", "mov", "avi")


def key_hash(key: str) -> int:
    """A stable 64-bit hash of a sample key (Python's ``hash`` is salted per process)."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "little")


def sample_rng(seed: int, epoch: Optional[int], key: str) -> np.random.Generator:
    """The generator of every random choice of one sample: seeded by (seed, epoch, key).

    ``epoch=None`` is the evaluation stream (fixed per sample, whatever the epoch).
    """
    entropy = [seed, 0, key_hash(key)] if epoch is None else [seed, 1, epoch, key_hash(key)]
    return np.random.default_rng(entropy)


@dataclass
class Sample:
    """One transformed sample. ``video`` is (T, 3, S, S) uint8 (resized and cropped, not normalised), or a
    DaliSample for the DALI path."""

    key: str
    kind: str
    epoch: Optional[int]  # the pass over the data it belongs to (None: evaluation)
    video: Any
    texts: list  # K presented strings (1 for captions)
    labels: Optional[torch.Tensor]  # (K,) int64, transcripts only
    keep: Optional[torch.Tensor]  # (S, n) random / (n,) tube; None when nothing is masked
    frame_times: np.ndarray  # (T,) seconds from the clip's first frame, for tests and debugging


class DecodedCache:
    """LRU of fully decoded clips, bounded by bytes: key -> ((N, H, W, 3) uint8, frame starts, end).

    One per worker process. A clip larger than the whole budget is not kept.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: collections.OrderedDict[str, tuple[torch.Tensor, np.ndarray, float]] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str):
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return entry

    def put(self, key: str, frames: torch.Tensor, starts: np.ndarray, end: float) -> None:
        size = frames.numel() * frames.element_size()
        if size > self.max_bytes or key in self._entries:
            return
        while self.bytes + size > self.max_bytes:
            _, (old, _, _) = self._entries.popitem(last=False)
            self.bytes -= old.numel() * old.element_size()
        self._entries[key] = (frames, starts, end)
        self.bytes += size


def _parse_json(raw: dict) -> dict:
    data = raw.get("json")
    if data is None:
        raise SkipSample("missing_json", f"{raw.get('__key__')}: no json member")
    try:
        meta = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SkipSample("bad_json", f"{raw.get('__key__')}: {err}") from None
    if not isinstance(meta, dict):
        raise SkipSample("bad_json", f"{raw.get('__key__')}: the json member is not an object")
    return meta


def _video_bytes(raw: dict) -> bytes:
    for name in VIDEO_MEMBERS:
        if name in raw:
            return raw[name]
    raise SkipSample("missing_video", f"{raw.get('__key__')}: no video member ({', '.join(VIDEO_MEMBERS)})")


def _span_and_texts(meta: dict, kind: str, num_windows: int, key: str) -> tuple[float, float, list]:
    """(start, end) seconds from the clip start and the chronological texts; SkipSample when malformed."""
    try:
        if kind == "transcripts":
            windows = [(float(s), float(e)) for s, e in meta["windows"]]
            texts = meta["transcripts"]
            if len(windows) != num_windows or len(texts) != num_windows:
                raise SkipSample("wrong_num_windows", f"{key}: {len(windows)} windows, {len(texts)} transcripts; "
                                                      f"sample.num_windows={num_windows}")
            start, end = windows[0][0], windows[-1][1]
        else:
            texts = [meta["caption"]]
            # the clip's end: the declared duration, capped by frames / fps (never past the last frame)
            ends = [float(meta["duration"])] if meta.get("duration") else []
            if meta.get("frames") and meta.get("fps"):
                ends.append(float(meta["frames"]) / float(meta["fps"]))
            start, end = 0.0, min(ends) if ends else float("nan")
    except SkipSample:
        raise
    except (KeyError, TypeError, ValueError) as err:
        raise SkipSample("bad_metadata", f"{key}: {type(err).__name__}: {err}") from None
    if not all(isinstance(t, str) for t in texts):
        raise SkipSample("bad_metadata", f"{key}: texts must be strings")
    if kind == "transcripts" and not (np.isfinite(start) and end > start >= 0):
        raise SkipSample("bad_metadata", f"{key}: empty or negative span [{start}, {end}]")
    return start, end, list(texts)


class SampleTransform:
    """Raw webdataset sample -> :class:`Sample`. Picklable; build one per worker (it owns the cache).

    ``train``: random frame times and crop; else bin middles and a centred crop. Both shuffle the
    transcripts and draw masks from :func:`sample_rng` (eval with ``epoch=None``: fixed per sample).
    ``decoder``: "pyav" returns uint8 video (cropped; normalised by the consumer on the device); "dali"
    returns a ``DaliSample`` (host-side inputs, the crop drawn from the same generator) for
    :class:`tvts.data.dali.DaliVideoReader`.
    """

    def __init__(self, cfg, train: bool, decoder: str = "pyav"):
        s, d = cfg.sample, cfg.data
        self.seed = cfg.seed
        self.train = train
        self.decoder = decoder
        self.num_windows = s.num_windows
        self.frames = {"transcripts": s.frames, "captions": s.caption_frames}
        self.grids = {"transcripts": cfg.patch_grid(s.frames, s.mask_ratio),
                      "captions": cfg.patch_grid(s.caption_frames, s.caption_mask_ratio)}
        self.mask = s.mask
        self.image_size, self.resize_short, self.normalize = s.image_size, d.resize_short, d.normalize
        use_cache = d.decoded_cache_mb > 0 and decoder == "pyav"
        self.cache = DecodedCache(d.decoded_cache_mb << 20) if use_cache else None

    def __call__(self, raw: dict, kind: str, epoch: Optional[int]) -> Sample:
        key = raw.get("__key__", "?")
        meta = _parse_json(raw)
        if meta.get("kind", kind) != kind:
            raise SkipSample("wrong_kind", f"{key}: a {meta.get('kind')!r} sample in a {kind} shard set")
        video_bytes = _video_bytes(raw)
        start, end, texts = _span_and_texts(meta, kind, self.num_windows, key)
        rng = sample_rng(self.seed, epoch, key)
        if not np.isfinite(end):  # a caption sample without duration metadata
            end = probe(video_bytes).duration_s
        if not end > start:
            raise SkipSample("bad_metadata", f"{key}: empty span [{start}, {end}]")
        def video(times: np.ndarray, generator: torch.Generator):
            if self.decoder == "dali":
                return self._dali_sample(video_bytes, times, generator)
            if self.cache is None:
                return load_crop(video_bytes, times, self.image_size, self.resize_short, self.train, generator)
            return crop_video(self._cached_frames(key, video_bytes, times), self.image_size, self.resize_short,
                              self.train, generator)

        return self.assemble(key, kind, epoch, start, end, texts, rng, video)

    def assemble(self, key: str, kind: str, epoch: Optional[int], start: float, end: float, texts: list,
                 rng: np.random.Generator, video) -> Sample:
        """The random draws of one sample, in their fixed order, around ``video(times, generator)``, which
        returns the clip's frames at ``times`` (seconds), augmented with ``generator``: frame times, the
        transcript permutation, then the torch generator of the crop and the mask. Shared by the shard
        path above and the procedural stream (:mod:`tvts.data.stream`)."""
        times = frame_times(start, end, self.frames[kind], self.train, rng)
        labels = None
        if kind == "transcripts":
            order = rng.permutation(self.num_windows)
            texts = [texts[i] for i in order]  # presented[i] = chronological[labels[i]]
            labels = torch.from_numpy(order.astype(np.int64))
        generator = torch.Generator().manual_seed(int(rng.integers(0, 2**63 - 1)))
        clip = video(times, generator)
        keep = keep_indices(self.grids[kind], self.mask, True, generator)
        return Sample(key, kind, epoch, clip, texts, labels, keep, times)

    def _cached_frames(self, key: str, video_bytes: bytes, times: np.ndarray) -> torch.Tensor:
        """(T, 3, H, W) uint8 from the cache: exactly what decode_frames returns (values and layout)."""
        entry = self.cache.get(key)
        if entry is None:
            starts, end = frame_timeline(video_bytes)
            # decoding at every frame start returns each frame once, through the same conversion
            every = decode_frames(video_bytes, starts, short_side=self.resize_short)
            entry = (every.permute(0, 2, 3, 1), starts, end)  # the contiguous (N, H, W, 3) buffer
            self.cache.put(key, *entry)
        frames, starts, end = entry
        if times.max() >= end:
            raise SkipSample("past_end", f"{key}: time {times.max():.3f}s is past the last frame, which ends at {end:.3f}s")
        return frames[torch.from_numpy(frame_indices(times, starts))].permute(0, 3, 1, 2)

    def _dali_sample(self, video_bytes: bytes, times: np.ndarray, generator: torch.Generator):
        from tvts.data.dali import DaliSample

        info = probe(video_bytes)
        starts, end = frame_timeline(video_bytes)
        if times.max() >= end:
            raise SkipSample("past_end", f"time {times.max():.3f}s is past the last frame, which ends at {end:.3f}s")
        height, width = resized_size(info.height, info.width, self.resize_short)
        top, left = crop_offsets(height, width, self.image_size, self.train, generator)
        room = (max(height - self.image_size, 1), max(width - self.image_size, 1))
        return DaliSample(encoded=np.frombuffer(bytes(video_bytes), dtype=np.uint8),
                          frames=frame_indices(times, starts).astype(np.int32),
                          size=np.array([height, width], dtype=np.float32),
                          crop=np.array([top / room[0], left / room[1]], dtype=np.float32))


def load_crop(source, times, image_size: int, resize_short: int, train: bool = False,
              generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Frames of ``source`` (a path or bytes) at ``times`` (seconds), resized and cropped, still uint8:
    (T, 3, image_size, image_size). One seek, swscale straight to ``resize_short`` (the loader workers'
    per-sample video path; the consumer normalises on the device)."""
    frames = decode_frames(source, times, short_side=resize_short)
    return crop_video(frames, image_size, resize_short, train, generator)


def load_clip(source, times, image_size: int, resize_short: int, normalize: str = "imagenet", train: bool = False,
              generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Frames of ``source`` (a path or bytes) at ``times`` (seconds), resized, cropped and normalised:
    (T, 3, image_size, image_size) float32, :func:`load_crop` then :func:`~tvts.data.augment.normalize_video`
    (what a loader batch becomes on the device). One seek, swscale straight to ``resize_short``, uint8 until
    the crop."""
    return normalize_video(load_crop(source, times, image_size, resize_short, train, generator), normalize)


def official_clip(source, times, image_size: int, resize_short: int, normalize: str = "imagenet", train: bool = False,
                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """The official per-sample video path, re-created as a benchmark baseline for :func:`load_clip`.

    Full-resolution source, one seek PER FRAME (:func:`~tvts.data.decode.decode_frames_reference`,
    OpenCV's ``CAP_PROP_POS_FRAMES`` reader), PIL bilinear resize frame by frame, one crop, then
    ``ClipToTensor`` (a float64 array filled frame by frame, / 255) and per-channel normalisation
    (method §2.3). Same frames and crop offsets as :func:`load_clip`; returns (T, 3, S, S) float32.
    The reference reader hands back float64 at full resolution, which is turned back into the uint8
    frames the official reader yields: that round trip is extra work the official code does not do
    (the benchmark measures it and reports the official time without it).
    """
    from PIL import Image

    clip = decode_frames_reference(source, times)
    frames = np.rint(clip * 255.0).astype(np.uint8).transpose(0, 2, 3, 1)
    height, width = resized_size(frames.shape[1], frames.shape[2], resize_short)
    top, left = crop_offsets(height, width, image_size, train, generator)
    images = [Image.fromarray(f).resize((width, height), Image.BILINEAR).crop((left, top, left + image_size, top + image_size))
              for f in frames]
    out = np.zeros((3, len(images), image_size, image_size), dtype=np.float64)
    for k, image in enumerate(images):
        out[:, k] = np.asarray(image).transpose(2, 0, 1)
    out /= 255.0
    mean, std = (np.array(v, dtype=np.float64).reshape(3, 1, 1, 1) for v in NORMALIZE_STATS[normalize])
    out = (out - mean) / std
    return torch.from_numpy(out).float().permute(1, 0, 2, 3).contiguous()


def collate(samples: Sequence[Sample], kind: str, tokenizer) -> dict:
    """Stack B samples of one kind into the model's batch (see :func:`tvts.data.loader.build_train_loader`).

    Texts are tokenised here, in the worker, in one call: (B*K, L) sample-major.
    """
    if any(s.kind != kind for s in samples):
        raise ValueError(f"a {kind} batch got samples of another kind")
    videos = [s.video for s in samples]
    batch = {"video": torch.stack(videos) if isinstance(videos[0], torch.Tensor) else videos,
             "text": tokenizer([t for s in samples for t in s.texts])}
    if kind == "transcripts":
        batch["labels"] = torch.stack([s.labels for s in samples])
    if samples[0].keep is not None:
        batch["keep_indices"] = torch.stack([s.keep for s in samples])
    return batch
