"""How inputs become samples: the sources, the output codecs, :class:`IngestSettings` (recorded in
``index.json``) and the per-video window-layout generator."""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

import numpy as np

from tvts.data.ingest.records import IngestError

SOURCES = ("vtt", "merlot", "howto", "webvid", "jsonl")
CAPTION_SOURCES = ("webvid", "jsonl")
CODECS = {"h264": ("libx264", "mp4"), "vp9": ("libvpx-vp9", "webm")}


@dataclass(frozen=True)
class IngestSettings:
    """How inputs become samples. Window fields mirror ``sample.num_windows`` and ``data.window_*``."""

    source: str = "vtt"
    num_windows: int = 4  # K
    window_min_s: float = 3.0
    window_max_s: float = 5.0
    gap_s: float = 1.0
    min_words: int = 1
    short_side: int = 256  # pixels; smaller videos are never upscaled
    fps: float = 0.0  # output frame rate; 0: the source's, capped at max_fps. Never above the source's.
    max_fps: float = 30.0
    codec: str = "h264"  # h264 (libx264, .mp4) or vp9 (libvpx-vp9, .webm)
    crf: int = 23
    gop_s: float = 1.0  # at most this many seconds between keyframes
    max_clip_s: float = 0.0  # caption sources: keep at most this many seconds from the start (0: all)
    seed: int = 0  # window layout of video v uses the generator video_rng(seed, v)
    samples_per_shard: int = 1000  # target; inputs are grouped by a fixed count derived from it
    inputs_per_shard: int = 0  # 0: derived from samples_per_shard

    def __post_init__(self) -> None:
        for name in ("window_min_s", "window_max_s", "gap_s", "fps", "max_fps", "gop_s", "max_clip_s"):
            object.__setattr__(self, name, float(getattr(self, name)))  # 4 and 4.0 record the same config
        if self.source not in SOURCES:
            raise IngestError(f"source {self.source!r}: expected one of {', '.join(SOURCES)}")
        if self.codec not in CODECS:
            raise IngestError(f"codec {self.codec!r}: expected h264 or vp9")
        if self.short_side < 16 or self.short_side % 2:
            raise IngestError(f"short side {self.short_side}: expected an even number of pixels >= 16 (yuv420p)")
        if self.fps < 0 or self.max_fps <= 0 or self.gop_s <= 0:
            raise IngestError(f"fps={self.fps} max_fps={self.max_fps} gop_s={self.gop_s}: out of range")
        if not 0 < self.window_min_s <= self.window_max_s or self.gap_s < 0 or self.num_windows < 1:
            raise IngestError(f"windows: need K >= 1, 0 < window_min_s <= window_max_s, gap_s >= 0; "
                              f"got K={self.num_windows} {self.window_min_s}..{self.window_max_s} s gap {self.gap_s} s")
        if self.samples_per_shard < 1 or self.inputs_per_shard < 0:
            raise IngestError("samples_per_shard must be >= 1 and inputs_per_shard >= 0")

    @property
    def kind(self) -> str:
        return "captions" if self.source in CAPTION_SOURCES else "transcripts"

    @property
    def extension(self) -> str:
        return CODECS[self.codec][1]

    @classmethod
    def from_config(cls, cfg, source: str, **overrides) -> "IngestSettings":
        """K from ``cfg.sample.num_windows``, window layout from ``cfg.data``, seed from ``cfg.seed``."""
        base = dict(source=source, num_windows=cfg.sample.num_windows, window_min_s=cfg.data.window_min_s,
                    window_max_s=cfg.data.window_max_s, gap_s=cfg.data.gap_s, min_words=cfg.data.min_words,
                    seed=cfg.seed)
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)

    def as_config(self) -> dict:
        """The settings as recorded in ``index.json`` ``config``."""
        d = dataclasses.asdict(self)
        d["K"] = d.pop("num_windows")
        d["gop"] = d.pop("gop_s")
        d["kind"] = self.kind
        return d


def video_rng(seed: int, source_id: str) -> np.random.Generator:
    """The window-layout generator of one video: a stable hash of (seed, source id), so reruns, worker
    counts and shard assignment never change the layout."""
    digest = hashlib.blake2b(source_id.encode(), digest_size=8).digest()
    return np.random.default_rng([seed, int.from_bytes(digest, "little")])

