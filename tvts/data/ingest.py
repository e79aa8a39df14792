"""Offline ingest: sources -> per-video records -> window sets / caption clips -> re-encoded shard samples.

Everything expensive happens here once, not in the training loader (method spec §5 items 12-13):
transcripts are parsed (and MERLOT ASR aligned by DTW) once per video, window sets are planned once
with :func:`tvts.data.windows.plan_window_sets`, and each set's span is decoded and re-encoded once
into a short, low-resolution, short-GOP H.264 clip (anchors §5 item 1: NVDEC on Hopper has no AV1).

Sources (:func:`list_records`), all sorted by source id:

* ``vtt``: a folder (searched recursively) of videos (``.mp4 .mkv .webm .mov``) with WebVTT/SRT
  subtitles beside them, as yt-dlp writes them: ``name.mp4`` + ``name.vtt`` / ``name.en.vtt`` /
  ``name.srt``. A subtitle without a language suffix wins, then ``en``, then ``en-*``, then others.
* ``merlot``: YT-Temporal. Either the official layout, an index CSV/TSV with a ``Name`` column
  (``subset_87/data/<id>.mp4``), videos at ``<video_root>/<Name>`` and annotations at
  ``<video_root>/<subset>/annotations/<id>.json``; or a folder of ``<id>.mp4`` + ``<id>.json``.
* ``howto``: a HowTo100M caption JSON ``{video_id: {"start", "end", "text"}}`` + a video folder
  searched recursively for ``<video_id>.<ext>``.
* ``webvid``: a WebVid-style CSV/TSV: a caption column (``caption``/``name``/``text``/...) and a path
  column (``path``/``video``/``file``/... or WebVid's ``page_dir`` + ``videoid``); without a header,
  column 0 is the caption and column 1 the path (the official TVTS meta). Paths are relative to the
  video root and may omit the extension.
* ``jsonl``: lines ``{"path": ..., "caption": ...}``; relative paths resolve against the video root.

Every unusable input is skipped and counted by reason (:mod:`tvts.data.errors`), never dropped
silently. A video either gives all its planned samples or, when it turns out corrupt while being
re-encoded, none (no partial sample, no partial video). Reasons counted per input video:
``missing_video``, ``empty_video``, ``corrupt_video``, ``unsupported_codec``, ``missing_transcript``,
``unreadable``, ``undecodable_transcript``, ``bad_subtitle``, ``empty_transcript``, ``too_short``,
``empty_caption``, ``bad_record``, ``internal_error`` (a bug: logged with its traceback). Reasons
counted per window set: ``few_words`` (a window under ``min_words`` words) and ``past_end`` (the
decoded stream stops before the set's end; MERLOT ``info.duration`` is only metadata).

Transcript files may be UTF-8, UTF-16 or UTF-32 with a byte-order mark, or in a legacy code page
(Windows-1252 and others, detected: :func:`tvts.data.transcripts.decode_transcript`). Each sample's
JSON records the encoding its transcript file was read in (``subtitle_encoding``), and the shard
markers and :meth:`IngestResult.summary` count input videos by that encoding.
"""
from __future__ import annotations

import collections
import csv
import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import re
import time
import traceback
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import av
import numpy as np

from tvts.data import shards
from tvts.data.errors import SkipCounter, SkipSample
from tvts.data.transcripts import TimedWords, load_subtitles, parse_howto
from tvts.data.windows import WindowSet, plan_window_sets
from tvts.errors import UserError

log = logging.getLogger("tvts.data")

SOURCES = ("vtt", "merlot", "howto", "webvid", "jsonl")
CAPTION_SOURCES = ("webvid", "jsonl")
VIDEO_EXTS = (".mp4", ".mkv", ".webm", ".mov")
CODECS = {"h264": ("libx264", "mp4"), "vp9": ("libvpx-vp9", "webm")}
_SEEK_AHEAD_S = 4.0  # the next span starts further ahead than this: seek instead of decoding through


class IngestError(UserError):
    """The input as a whole cannot be used (wrong path, no inputs, changed settings); one line."""


# ----------------------------------------------------------------------------------------------
# Settings
# ----------------------------------------------------------------------------------------------
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
            raise IngestError(f"windows: need K >= 1, 0 < window_min_s <= window_max_s, gap_s >= 0; got K={self.num_windows} "
                              f"{self.window_min_s}..{self.window_max_s} s gap {self.gap_s} s")
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


# ----------------------------------------------------------------------------------------------
# Records: one input video each
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Record:
    """One input video, found by :func:`list_records`; light enough to send to a worker process."""

    id: str  # source id: unique, e.g. the relative path without extension
    video: str  # path of the video file
    transcript: Optional[str] = None  # .vtt / .srt / MERLOT .json (transcript sources)
    howto: Optional[dict] = None  # a HowTo100M entry {"start", "end", "text"}
    caption: Optional[str] = None  # caption sources
    problem: Optional[tuple[str, str]] = None  # (reason, detail) already known while listing

    @property
    def key(self) -> str:
        """The id made safe as a webdataset key (no ``.`` or ``/``), suffixed with a hash when changed."""
        safe = re.sub(r"[^A-Za-z0-9_-]", "_", self.id)
        if safe != self.id:
            safe += "_" + hashlib.blake2b(self.id.encode(), digest_size=4).hexdigest()
        return safe


def _check_input(path: str | Path, want: str) -> Path:
    p = Path(path)
    if want == "dir" and not p.is_dir():
        raise IngestError(f"{path}: not a folder" if p.exists() else f"{path}: no such folder")
    if want == "file" and not p.is_file():
        raise IngestError(f"{path}: not a file" if p.exists() else f"{path}: no such file")
    return p


def _walk_videos(root: Path) -> list[Path]:
    """Video files under ``root`` (recursive, hidden folders skipped), sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [Path(dirpath) / f for f in filenames if Path(f).suffix.lower() in VIDEO_EXTS and not f.startswith(".")]
    return sorted(found)


def _source_id(path: Path, root: Path) -> str:
    return path.relative_to(root).with_suffix("").as_posix()


_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]+)*$")


def _subtitle_for(video: Path, siblings: set[str], video_stems: set[str]) -> Optional[Path]:
    """The subtitle file beside ``video``: ``stem.vtt``/``stem.srt``, else ``stem.<lang>.vtt|srt``."""
    stem = video.stem
    best = None
    for name in siblings:
        base, ext = os.path.splitext(name)
        if ext.lower() not in (".vtt", ".srt"):
            continue
        if base == stem:
            rank = 0
        elif base.startswith(stem + ".") and base not in video_stems and _LANGUAGE.match(base[len(stem) + 1:]):
            lang = base[len(stem) + 1:].lower()
            rank = 1 if lang == "en" else 2 if lang.startswith(("en-", "en_")) else 3
        else:
            continue
        candidate = (rank, ext.lower() != ".vtt", name)
        best = min(best, candidate) if best else candidate
    return video.with_name(best[2]) if best else None


def _list_vtt(root: Path) -> list[Record]:
    records = []
    by_dir: dict[Path, list[Path]] = collections.defaultdict(list)
    for video in _walk_videos(root):
        by_dir[video.parent].append(video)
    for directory, videos in by_dir.items():
        siblings = set(os.listdir(directory))
        stems = {v.stem for v in videos}
        for video in videos:
            sub = _subtitle_for(video, siblings, stems)
            problem = None if sub else ("missing_transcript", f"{video}: no .vtt/.srt subtitle beside it")
            records.append(Record(_source_id(video, root), str(video), str(sub) if sub else None, problem=problem))
    return records


def _read_table(path: Path) -> list[list[str]]:
    """Rows of a CSV/TSV file (tab-separated when the extension is .tsv or the first line has a tab)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise IngestError(f"{path}: byte {err.start} is not UTF-8") from None
    first = text.split("\n", 1)[0]
    delimiter = "\t" if path.suffix.lower() == ".tsv" or "\t" in first else ","
    return [row for row in csv.reader(io.StringIO(text), delimiter=delimiter) if any(cell.strip() for cell in row)]


def _list_merlot(path: Path, video_root: Optional[Path]) -> list[Record]:
    if path.is_dir():  # simple layout: <id>.mp4 + <id>.json side by side
        records = []
        for video in _walk_videos(path):
            ann = video.with_suffix(".json")
            problem = None if ann.is_file() else ("missing_transcript", f"{video}: no {ann.name} beside it")
            records.append(Record(_source_id(video, path), str(video), str(ann), problem=problem))
        return records
    rows = _read_table(_check_input(path, "file"))
    header = [c.strip().lower() for c in rows[0]] if rows else []
    if "name" not in header:
        raise IngestError(f"{path}: expected a CSV/TSV with a 'Name' column of relative video paths (YT-Temporal index)")
    col = header.index("name")
    root = video_root or (path.parent / "videos" if (path.parent / "videos").is_dir() else path.parent)
    records = []
    for row in rows[1:]:
        name = row[col].strip() if col < len(row) else ""
        if not name:
            continue
        video = root / name
        ann = root / name.split("/")[0] / "annotations" / (Path(name).stem + ".json")
        problem = None
        if not video.is_file():
            problem = ("missing_video", f"{video}: no such file (from {path})")
        elif not ann.is_file():
            problem = ("missing_transcript", f"{ann}: no annotation for {video}")
        records.append(Record(Path(name).with_suffix("").as_posix(), str(video), str(ann), problem=problem))
    return records


def _list_howto(path: Path, video_root: Optional[Path]) -> list[Record]:
    try:
        data = json.loads(_check_input(path, "file").read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise IngestError(f"{path}: not a UTF-8 JSON file ({err})") from None
    if not isinstance(data, dict):
        raise IngestError(f"{path}: expected a JSON object {{video_id: {{start, end, text}}}}")
    root = video_root or (path.parent / "videos" if (path.parent / "videos").is_dir() else path.parent)
    by_stem = {}
    for video in _walk_videos(_check_input(root, "dir")):
        by_stem.setdefault(video.stem, video)
    records = []
    for vid, entry in data.items():
        video = by_stem.get(vid)
        problem = None if video else ("missing_video", f"{root}/{vid}.*: no video for this HowTo100M id")
        entry = entry if isinstance(entry, dict) else {"invalid": True}
        records.append(Record(str(vid), str(video or root / vid), howto=entry, problem=problem))
    return records


_CAPTION_COLUMNS = ("caption", "name", "text", "title", "description", "sentence")
_PATH_COLUMNS = ("path", "video", "video_path", "videopath", "file", "filename", "filepath", "rel_path", "relpath", "clip")


def _resolve_video(root: Path, rel: str) -> tuple[Path, Optional[tuple[str, str]]]:
    """``root/rel``, trying the video extensions when ``rel`` has none."""
    path = root / rel
    if path.suffix.lower() in VIDEO_EXTS:
        return path, None if path.is_file() else ("missing_video", f"{path}: no such file")
    for ext in VIDEO_EXTS:
        if path.with_name(path.name + ext).is_file():
            return path.with_name(path.name + ext), None
    return path, ("missing_video", f"{path}[{'|'.join(VIDEO_EXTS)}]: no such file")


def _caption_record(root: Path, rel: str, caption: str, where: str) -> Record:
    video, problem = _resolve_video(root, rel)
    caption = " ".join(caption.split())
    if problem is None and not caption:
        problem = ("empty_caption", f"{where}: empty caption for {video}")
    ident = Path(rel).with_suffix("").as_posix() if Path(rel).suffix.lower() in VIDEO_EXTS else rel
    return Record(ident, str(video), caption=caption, problem=problem)


def _list_webvid(path: Path, video_root: Optional[Path]) -> list[Record]:
    rows = _read_table(_check_input(path, "file"))
    root = video_root or path.parent
    if not rows:
        return []
    header = [c.strip().lower() for c in rows[0]]
    caption_col = next((header.index(c) for c in _CAPTION_COLUMNS if c in header), None)
    path_cols = None
    if "page_dir" in header and "videoid" in header:  # the official WebVid CSV
        path_cols = (header.index("page_dir"), header.index("videoid"))
    elif (col := next((header.index(c) for c in _PATH_COLUMNS + ("videoid",) if c in header), None)) is not None:
        path_cols = (col,)
    if caption_col is None and path_cols is None:  # no header: caption, path (official TVTS meta)
        caption_col, path_cols, body, first_line = 0, (1,), rows, 1
    elif caption_col is None or path_cols is None:
        raise IngestError(f"{path}: header {rows[0]} needs a caption column ({'/'.join(_CAPTION_COLUMNS)}) "
                          f"and a path column ({'/'.join(_PATH_COLUMNS)} or page_dir+videoid)")
    else:
        body, first_line = rows[1:], 2
    records = []
    for n, row in enumerate(body):
        where = f"{path}:{n + first_line}"
        if max(caption_col, *path_cols) >= len(row):
            records.append(Record(f"<line {n + first_line}>", "", problem=("bad_record", f"{where}: too few columns")))
            continue
        rel = "/".join(row[c].strip() for c in path_cols)
        records.append(_caption_record(root, rel, row[caption_col], where))
    return records


def _list_jsonl(path: Path, video_root: Optional[Path]) -> list[Record]:
    root = video_root or path.parent
    records = []
    try:
        lines = _check_input(path, "file").read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise IngestError(f"{path}: byte {err.start} is not UTF-8") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            obj = err
        rel = obj.get("path", obj.get("video")) if isinstance(obj, dict) else None
        caption = obj.get("caption", obj.get("text")) if isinstance(obj, dict) else None
        if not isinstance(rel, str) or not isinstance(caption, str):
            records.append(Record(f"<line {n}>", "", problem=("bad_record", f"{path}:{n}: expected {{\"path\": str, \"caption\": str}}")))
            continue
        records.append(_caption_record(root, rel, caption, f"{path}:{n}"))
    return records


def list_records(source: str, input_path: str | Path, video_root: Optional[str | Path] = None) -> list[Record]:
    """The input videos of a source, sorted by id (ids made unique with ``#2``, ``#3``... in file order).

    ``input_path``: the folder (vtt, merlot folder layout) or the index/caption file (merlot index,
    howto, webvid, jsonl). ``video_root``: where relative video paths point (default: the index
    file's folder, or its ``videos/`` subfolder for merlot and howto when present). Raises
    :class:`IngestError` when the input path is wrong or holds no inputs at all.
    """
    path = Path(input_path)
    root = _check_input(video_root, "dir") if video_root else None
    if source == "vtt":
        records = _list_vtt(_check_input(path, "dir"))
    elif source == "merlot":
        if not path.exists():
            raise IngestError(f"{path}: no such folder or index file")
        records = _list_merlot(path, root)
    elif source == "howto":
        records = _list_howto(path, root)
    elif source == "webvid":
        records = _list_webvid(path, root)
    elif source == "jsonl":
        records = _list_jsonl(path, root)
    else:
        raise IngestError(f"source {source!r}: expected one of {', '.join(SOURCES)}")
    if not records:
        raise IngestError(f"{path}: no inputs found for source {source}")
    seen: collections.Counter = collections.Counter()
    unique = []
    for rec in records:
        seen[rec.id] += 1
        unique.append(rec if seen[rec.id] == 1 else dataclasses.replace(rec, id=f"{rec.id}#{seen[rec.id]}"))
    return sorted(unique, key=lambda r: r.id)


# ----------------------------------------------------------------------------------------------
# Decoding spans and re-encoding them
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StreamInfo:
    duration: float  # seconds, as the header declares (stream's, else the container's)
    rate: Fraction  # average frame rate
    width: int
    height: int


class _OpenVideo:
    """One input video opened for forward decoding with a one-frame lookahead, shared by its spans.

    Times are seconds from the stream's first timestamp. The frame shown at time ``t`` is the one whose
    interval ``[pts, next pts)`` contains ``t`` (the rule of :mod:`tvts.data.decode`). Unusable input
    raises SkipSample with the reasons of :mod:`tvts.data.decode`: missing_video, empty_video,
    corrupt_video, unsupported_codec, past_end.
    """

    def __init__(self, path: str):
        self.name = path
        try:
            size = os.path.getsize(path)
        except OSError:
            raise SkipSample("missing_video", f"{path}: no such file") from None
        if size == 0:
            raise SkipSample("empty_video", f"{path}: zero bytes")
        try:
            self.container = av.open(path, mode="r")
        except av.error.FFmpegError as err:
            raise SkipSample("corrupt_video", f"{path}: cannot open ({err})") from None
        try:
            if not self.container.streams.video:
                raise SkipSample("unsupported_codec", f"{path}: no video stream")
            self.stream = self.container.streams.video[0]
            if self.stream.codec_context is None:
                raise SkipSample("unsupported_codec", f"{path}: no decoder for codec {self.stream.codec_tag!r}")
            self.stream.codec_context.thread_count = 1  # one core per worker process
            self.origin = self.stream.start_time or 0
            self.time_base = self.stream.time_base
            rate = self.stream.average_rate or self.stream.guessed_rate
            if self.stream.duration is not None:
                duration = float(self.stream.duration * self.time_base)
            elif self.container.duration is not None:
                duration = self.container.duration / av.time_base
            else:
                duration = 0.0
            width, height = self.stream.codec_context.width, self.stream.codec_context.height
            if not rate or not width or not height:
                raise SkipSample("corrupt_video", f"{path}: no frame rate or frame size in the header")
            self.info = StreamInfo(duration, Fraction(rate), width, height)
        except BaseException:
            self.container.close()
            raise
        self._frames: Optional[Iterator] = None
        self._cur: Optional[tuple] = None  # (frame, start seconds)
        self._next: Optional[tuple] = None  # None at the end of the stream

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> "_OpenVideo":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _decode_next(self, after: float) -> Optional[tuple]:
        """The next decoded frame starting strictly after ``after`` seconds, or None at the end."""
        while True:
            try:
                frame = next(self._frames)
            except StopIteration:
                return None
            except av.error.FFmpegError as err:
                raise SkipSample("corrupt_video", f"{self.name}: decoding failed ({err})") from None
            if frame.pts is None:
                raise SkipSample("corrupt_video", f"{self.name}: decoded a frame without a timestamp")
            start = float((frame.pts - self.origin) * self.time_base)
            if start > after:
                return frame, start

    def _seek(self, t: float) -> None:
        """Backward seek to the keyframe at or before ``t``, retrying further back if the demuxer overshoots."""
        back = 0.0
        while True:
            target = max(0.0, t - back)
            try:
                self.container.seek(self.origin + math.floor(target / self.time_base), stream=self.stream,
                                    backward=True, any_frame=False)
            except av.error.FFmpegError as err:
                raise SkipSample("corrupt_video", f"{self.name}: seek to {target:.3f}s failed ({err})") from None
            self._frames = self.container.decode(self.stream)
            self._cur = self._decode_next(-math.inf)
            if self._cur is None:
                raise SkipSample("corrupt_video", f"{self.name}: no frame could be decoded after {target:.3f}s")
            if self._cur[1] <= t or target == 0.0:
                break
            back = max(1.0, 4 * back)
        self._next = self._decode_next(self._cur[1])

    def frames_at(self, times: Sequence[float]) -> Iterator[av.VideoFrame]:
        """The decoded frame shown at each of ``times`` (ascending seconds). Continues decoding from the
        previous call when the first time lies a little ahead; seeks otherwise."""
        if self._cur is None or times[0] < self._cur[1] or times[0] - self._cur[1] > _SEEK_AHEAD_S:
            self._seek(times[0])
        for t in times:
            while self._next is not None and self._next[1] <= t:
                self._cur = self._next
                self._next = self._decode_next(self._cur[1])
            if self._next is None and t >= self._last_end():
                raise self._ran_out(t)
            yield self._cur[0]

    def _last_end(self) -> float:
        frame, start = self._cur
        step = float(frame.duration * self.time_base) if frame.duration else float(1 / self.info.rate)
        return start + step

    def _ran_out(self, t: float) -> SkipSample:
        end = self._last_end()
        if end < self.info.duration - max(1.0, 0.05 * self.info.duration):  # frames stop far before the header's end
            return SkipSample("corrupt_video", f"{self.name}: frames stop at {end:.3f}s of a declared {self.info.duration:.3f}s (truncated?)")
        return SkipSample("past_end", f"{self.name}: time {t:.3f}s is past the last frame, which ends at {end:.3f}s")


def output_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the short side scaled to ``short_side`` (never up), both even (yuv420p)."""
    short = min(width, height)
    scale = min(short_side, short) / short
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def output_rate(source: Fraction, settings: IngestSettings) -> Fraction:
    """The clip frame rate: ``settings.fps`` (or the source's, capped at ``max_fps``), never above the source's."""
    want = Fraction(settings.fps).limit_denominator(1001) if settings.fps > 0 else Fraction(settings.max_fps).limit_denominator(1001)
    return min(source, want)


def encode_span(video: _OpenVideo, start: float, end: float, settings: IngestSettings,
                allow_short: bool = False) -> tuple[bytes, dict]:
    """Re-encode ``[start, end)`` seconds of ``video`` as one clip; returns (bytes, clip facts).

    Output frame ``i`` shows the source frame at ``start + i / rate``, for the ``ceil((end - start) * rate)``
    frames that start before ``end``, so the clip's time 0 is ``start``. The clip is ``settings.codec``,
    yuv420p, short side ``settings.short_side`` (never upscaled), a keyframe every ``gop_s`` seconds at
    most, no B-frames, no audio, one encoder thread and bit-exact muxing (equal inputs give equal bytes).
    ``allow_short``: the stream ending early ends the clip there instead of raising ``past_end``.
    """
    rate = output_rate(video.info.rate, settings)
    count = max(1, math.ceil((end - start) * rate - 1e-6))
    times = [start + i / float(rate) for i in range(count)]
    width, height = output_size(video.info.width, video.info.height, settings.short_side)
    codec, fmt = CODECS[settings.codec]
    gop = max(1, math.floor(rate * Fraction(settings.gop_s).limit_denominator(1000)))
    if settings.codec == "h264":
        options = {"g": str(gop), "bf": "0", "crf": str(settings.crf), "preset": "veryfast"}
    else:
        options = {"g": str(gop), "crf": str(settings.crf), "b": "0", "deadline": "good", "cpu-used": "5", "row-mt": "0"}
    buf = io.BytesIO()
    frames = 0
    with av.open(buf, "w", format=fmt, options={"fflags": "+bitexact"}) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = options
        stream.codec_context.thread_count = 1
        try:
            for frame in video.frames_at(times):
                image = frame.reformat(width=width, height=height, format="yuv420p", interpolation="BILINEAR")
                image.pts, image.time_base = frames, 1 / rate
                image.pict_type = 0  # do not inherit the source's frame types: they would force keyframes
                out.mux(stream.encode(image))
                frames += 1
        except SkipSample as err:
            if not (allow_short and err.reason == "past_end" and frames):
                raise
        out.mux(stream.encode())
    facts = {"duration": round(frames / float(rate), 6), "fps": float(rate), "frames": frames, "width": width, "height": height}
    return buf.getvalue(), facts


# ----------------------------------------------------------------------------------------------
# One record -> its samples
# ----------------------------------------------------------------------------------------------
Sample = tuple[str, dict[str, bytes]]  # (key, {extension: bytes}) as shards.write_shard takes it


def load_words(record: Record) -> TimedWords:
    """The timed words of a transcript record (parsed and, for MERLOT, DTW-aligned: once, here)."""
    if record.howto is not None:
        return parse_howto(record.howto, record.id)
    return load_subtitles(record.transcript)


def _r(x: float) -> float:
    return round(float(x), 6)


def _transcript_meta(record: Record, ws: WindowSet, facts: dict, encoding: Optional[str]) -> dict:
    meta = {"kind": "transcripts", "source": record.id, "span": [_r(ws.start), _r(ws.end)],
            "windows": [[_r(a - ws.start), _r(b - ws.start)] for a, b in ws.windows],
            "transcripts": list(ws.transcripts), **facts}
    if encoding is not None:  # a Python codec name (utf-8, utf-16-le, cp1252...); HowTo100M entries have none
        meta["subtitle_encoding"] = encoding
    return meta


def process_record(record: Record, settings: IngestSettings) -> tuple[list[Sample], collections.Counter, Optional[str]]:
    """All samples of one input video, a Counter of what was skipped, by reason, and the encoding its
    transcript file was read in (None: no file decoded, e.g. caption sources or an undecodable one).

    Transcript sources: one sample per planned window set, re-encoded from the set's span start to its
    end. Caption sources: one sample, the whole clip (at most ``max_clip_s`` seconds). A video that
    fails as a whole (unreadable, corrupt mid-way) gives no sample and counts once.
    """
    if record.problem:
        _log_counter.add(*record.problem)
        return [], collections.Counter({record.problem[0]: 1}), None
    skipped: collections.Counter = collections.Counter()
    samples: list[Sample] = []
    encoding: Optional[str] = None
    try:
        words = load_words(record) if settings.kind == "transcripts" else None
        encoding = words.encoding if words is not None else None
        with _OpenVideo(record.video) as video:
            if words is not None:
                duration = video.info.duration
                if words.duration is not None:  # MERLOT metadata: trust it only up to the real stream
                    duration = min(duration, words.duration)
                sets, plan_skips = plan_window_sets(words, duration, settings.num_windows, settings.window_min_s,
                                                    settings.window_max_s, settings.gap_s, settings.min_words,
                                                    video_rng(settings.seed, record.id))
                skipped.update(plan_skips)
                for ws in sets:
                    try:
                        data, facts = encode_span(video, ws.start, ws.end, settings)
                    except SkipSample as err:
                        if err.reason != "past_end":
                            raise
                        skipped["past_end"] += 1
                        continue
                    key = f"{record.key}-{int(round(ws.start * 1000)):09d}"
                    meta = _transcript_meta(record, ws, facts, encoding)
                    samples.append((key, {settings.extension: data, "json": _json_bytes(meta)}))
            else:
                end = video.info.duration if settings.max_clip_s <= 0 else min(video.info.duration, settings.max_clip_s)
                if end <= 0:
                    raise SkipSample("too_short", f"{record.video}: zero duration")
                data, facts = encode_span(video, 0.0, end, settings, allow_short=True)
                meta = {"kind": "captions", "source": record.id, "caption": record.caption, **facts}
                samples.append((f"{record.key}-{0:09d}", {settings.extension: data, "json": _json_bytes(meta)}))
    except SkipSample as err:
        _log_counter.add(err)
        return [], collections.Counter({err.reason: 1}), encoding
    except av.error.FFmpegError as err:
        _log_counter.add("corrupt_video", f"{record.video}: {err}")
        return [], collections.Counter({"corrupt_video": 1}), encoding
    except Exception:  # a bug, not bad input: counted, and logged with its traceback, never silent
        log.error("internal error on %s (%s); skipped:\n%s", record.id, record.video, traceback.format_exc())
        return [], collections.Counter({"internal_error": 1}), encoding
    for reason, n in skipped.items():
        for _ in range(n):
            _log_counter.add(reason, f"{record.id}")
    return samples, skipped, encoding


def _json_bytes(meta: dict) -> bytes:
    return json.dumps(meta, ensure_ascii=False, sort_keys=True).encode()


_log_counter = SkipCounter(log_every=100)  # per process: logs the first skip of each reason, then 1 in 100


# ----------------------------------------------------------------------------------------------
# Shards: fixed groups of sorted records, one tar each, resumable
# ----------------------------------------------------------------------------------------------
_progress_queue = None


def _init_worker(queue) -> None:
    global _progress_queue
    _progress_queue = queue


def build_shard(index: int, records: Sequence[Record], settings: IngestSettings, out: str,
                on_record: Optional[Callable[[], None]] = None) -> dict:
    """Process ``records`` into ``OUT/shard-<index>.tar`` and its done marker; returns the marker.

    The marker's ``encodings`` counts the input videos by the encoding their transcript file was read
    in. Samples stream into the tar one video at a time (memory: one video's clips)."""
    skipped: collections.Counter = collections.Counter()
    encodings: collections.Counter = collections.Counter()
    used = 0

    def samples() -> Iterator[Sample]:
        nonlocal used
        for record in records:
            got, skips, encoding = process_record(record, settings)
            skipped.update(skips)
            if encoding is not None:
                encodings[encoding] += 1
            used += bool(got)
            if on_record is not None:
                on_record()
            elif _progress_queue is not None:
                _progress_queue.put(1)
            yield from got

    name = shards.shard_name(index)
    path = Path(out) / name
    count = shards.write_shard(path, samples())
    if not count:
        path.unlink()  # every input was skipped: no tar, only the marker
    marker = {"name": name, "samples": count, "skipped": dict(sorted(skipped.items())),
              "encodings": dict(sorted(encodings.items())), "inputs": len(records),
              "inputs_used": used, "bytes": path.stat().st_size if count else 0}
    shards.write_marker(out, index, marker)
    return marker


def _build_shard_job(job: tuple) -> dict:
    return build_shard(*job)


def estimate_samples_per_input(records: Sequence[Record], settings: IngestSettings, probes: int = 8) -> float:
    """Expected samples per input, from the header durations of up to ``probes`` evenly spaced records."""
    if settings.kind == "captions":
        return 1.0
    stride = settings.num_windows * ((settings.window_min_s + settings.window_max_s) / 2 + settings.gap_s)
    estimates = []
    candidates = [r for r in records if not r.problem]
    for rec in candidates[:: max(1, len(candidates) // probes)][:probes]:
        try:
            with _OpenVideo(rec.video) as video:
                estimates.append(max(1.0, math.floor((video.info.duration + settings.gap_s) / stride)))
        except SkipSample:
            continue
    return float(np.mean(estimates)) if estimates else 1.0


@dataclass
class IngestResult:
    out: Path
    index: dict
    shards_built: int  # in this run
    shards_reused: int  # finished by an earlier run
    seconds: float
    encodings: dict[str, int] = dataclasses.field(default_factory=dict)  # input videos by transcript encoding

    @property
    def samples(self) -> int:
        return self.index["samples"]

    def summary(self) -> str:
        """A one-screen report: samples, shards, inputs, transcript encodings, skipped by reason, speed."""
        idx = self.index
        lines = [f"{idx['kind']} shard set {self.out}",
                 f"  samples  {idx['samples']} in {len(idx['shards'])} shards "
                 f"({self.shards_built} built now, {self.shards_reused} already done)",
                 f"  inputs   {idx['inputs']}, {idx['inputs_used']} used, {idx['inputs'] - idx['inputs_used']} gave no sample"]
        if self.encodings:
            counts = sorted(self.encodings.items(), key=lambda kv: (-kv[1], kv[0]))
            lines.append(f"  encodings {', '.join(f'{e} {n}' for e, n in counts)} (transcript files, per input video)")
        if idx["skipped"]:
            width = max(len(r) for r in idx["skipped"])
            lines.append("  skipped  (per input video; few_words and past_end per window set)")
            lines += [f"    {reason:<{width}}  {n}" for reason, n in idx["skipped"].items()]
        rate = idx["inputs"] / self.seconds if self.seconds > 0 else float("inf")
        lines.append(f"  time     {self.seconds:.1f} s ({rate:.1f} inputs/s)")
        return "\n".join(lines)


def _plan(out: Path, records: Sequence[Record], settings: IngestSettings) -> int:
    """Inputs per shard, fixed in ``OUT/.ingest/plan.json`` on the first run; a rerun must match it."""
    digest = hashlib.sha1("\n".join(r.id for r in records).encode()).hexdigest()
    config = settings.as_config()
    plan_path = shards.state_dir(out) / "plan.json"
    if plan_path.is_file():
        try:
            plan = json.loads(plan_path.read_text())
        except ValueError:
            plan = None
        if plan is not None:
            if plan.get("config") != config or plan.get("records_sha1") != digest:
                changed = "inputs" if plan.get("config") == config else "settings"
                raise IngestError(f"{out}: holds shards made from other {changed}; use a new --out folder or delete this one")
            return int(plan["inputs_per_shard"])
    per_shard = settings.inputs_per_shard or max(1, round(settings.samples_per_shard / estimate_samples_per_input(records, settings)))
    shards.state_dir(out).mkdir(parents=True, exist_ok=True)
    shards.write_json_atomic(plan_path, {"config": config, "records": len(records), "records_sha1": digest,
                                         "inputs_per_shard": per_shard})
    return per_shard


def ingest(records: Sequence[Record], out: str | Path, settings: IngestSettings, workers: int = 1,
           progress: bool = False, input_path: str = "") -> IngestResult:
    """Write ``records`` as a shard set in ``out``: resumable, deterministic, ``workers`` processes.

    Records (sorted by id) are cut into groups of a fixed size, fixed on the first run; group ``i``
    becomes ``shard-<i>.tar``, so the same inputs always land in the same shard whatever ``workers``
    is. A shard whose tar and done marker exist is kept; any other is (re)built. ``index.json`` is
    written at the end from the markers.
    """
    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records = sorted(records, key=lambda r: r.id)
    if not records:
        raise IngestError(f"{out}: no inputs to ingest")
    per_shard = _plan(out, records, settings)
    groups = [records[i:i + per_shard] for i in range(0, len(records), per_shard)]
    markers: dict[int, dict] = {}
    for i in range(len(groups)):
        marker = shards.read_marker(out, i)
        if marker is not None:
            markers[i] = marker
    todo = [i for i in range(len(groups)) if i not in markers]
    reused = len(markers)
    from tqdm import tqdm

    bar = tqdm(total=sum(len(groups[i]) for i in todo), unit="video", desc=f"ingest {out.name}",
               disable=None if progress else True, dynamic_ncols=True)
    try:
        if workers <= 1 or len(todo) <= 1:
            for i in todo:
                markers[i] = build_shard(i, groups[i], settings, str(out), on_record=lambda: bar.update(1))
        else:
            _run_pool(todo, groups, settings, out, workers, markers, bar)
    finally:
        bar.close()
    config = {**settings.as_config(), "inputs_per_shard": per_shard, "input": str(input_path)}
    index = shards.write_index(out, settings.kind, [markers[i] for i in range(len(groups))], config)
    encodings: collections.Counter = collections.Counter()
    for marker in markers.values():  # reused shards too: their markers kept the counts
        encodings.update(marker.get("encodings", {}))
    return IngestResult(out, index, len(todo), reused, time.perf_counter() - t0, dict(sorted(encodings.items())))


def _run_pool(todo, groups, settings, out, workers, markers, bar) -> None:
    # spawn, not fork: the caller (the trainer) may hold torch/OpenMP threads a forked child would inherit locked
    import queue as queue_lib
    from multiprocessing import get_context

    ctx = get_context("spawn")
    progress = ctx.Queue()
    with ctx.Pool(min(workers, len(todo)), initializer=_init_worker, initargs=(progress,), maxtasksperchild=64) as pool:
        pending = {i: pool.apply_async(_build_shard_job, ((i, groups[i], settings, str(out)),)) for i in todo}
        while pending:
            try:
                bar.update(progress.get(timeout=0.2))
            except queue_lib.Empty:
                pass
            for i in [i for i, r in pending.items() if r.ready()]:
                markers[i] = pending.pop(i).get()  # re-raises a worker's exception (disk full, a bug)
        while True:
            try:
                bar.update(progress.get_nowait())
            except queue_lib.Empty:
                break


def ingest_source(source: str, input_path: str | Path, out: str | Path, settings: IngestSettings,
                  video_root: Optional[str | Path] = None, workers: int = 1, progress: bool = False) -> IngestResult:
    """:func:`list_records` then :func:`ingest`."""
    if settings.source != source:
        settings = dataclasses.replace(settings, source=source)
    records = list_records(source, input_path, video_root)
    return ingest(records, out, settings, workers=workers, progress=progress, input_path=str(input_path))
