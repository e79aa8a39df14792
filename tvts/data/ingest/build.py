"""Building a shard set: each record -> its samples (window sets / caption clips, re-encoded), fixed groups
of sorted records -> one tar each, resumable, in one process or a pool of worker processes.

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
import dataclasses
import hashlib
import json
import logging
import math
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import av
import numpy as np

from tvts.data import shards
from tvts.data.errors import SkipCounter, SkipSample
from tvts.data.ingest.listing import list_records
from tvts.data.ingest.records import IngestError, Record
from tvts.data.ingest.settings import IngestSettings, video_rng
from tvts.data.ingest.video import OpenVideo, encode_span
from tvts.data.transcripts import TimedWords, load_subtitles, parse_howto
from tvts.data.windows import WindowSet, plan_window_sets

log = logging.getLogger("tvts.data")


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
        with OpenVideo(record.video) as video:
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
            with OpenVideo(rec.video) as video:
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
                 f"  inputs   {idx['inputs']}, {idx['inputs_used']} used, "
                 f"{idx['inputs'] - idx['inputs_used']} gave no sample"]
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
                raise IngestError(f"{out}: holds shards made from other {changed}; "
                                  "use a new --out folder or delete this one")
            return int(plan["inputs_per_shard"])
    per_shard = settings.inputs_per_shard or max(
        1, round(settings.samples_per_shard / estimate_samples_per_input(records, settings)))
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
