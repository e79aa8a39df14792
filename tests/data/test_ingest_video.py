"""Ingest, opening videos and re-encoding spans: frame-exact span alignment, the end of the stream, VP9 output."""
from __future__ import annotations

import json
import math
import os
import shutil

import numpy as np
import pytest

from tvts.data import ingest
from tvts.data.ingest import IngestSettings
from tvts.data.transcripts import load_subtitles

from ingest_helpers import SYN, decode_frames, planned_sets, shard_samples, stream_facts


def test_span_alignment_with_srt_language_suffix(clips, read_stamp, tmp_path):
    """A long-GOP, 30 fps, 192x128 video with B-frames and ``talk.en.srt``: several window sets per video,
    each clip's frame i shows source frame floor((span start + i / 10 s) * 30)."""
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(clips["h264_gop250"].path, folder / "talk.mp4")  # 300 frames, 10 s
    cues = [f"{i + 1}\n00:00:{i:02d},100 --> 00:00:{i:02d},900\nword{i}a word{i}b\n" for i in range(10)]
    (folder / "talk.en.srt").write_text("\n".join(cues))
    (folder / "talk.de.srt").write_text(cues[0])  # a second language: en wins
    st = IngestSettings(source="vtt", num_windows=2, window_min_s=1, window_max_s=2, gap_s=0.5, short_side=64, fps=10)
    records = ingest.list_records("vtt", folder)
    assert [(r.id, os.path.basename(r.transcript)) for r in records] == [("talk", "talk.en.srt")]
    ingest.ingest(records, tmp_path / "out", st)
    samples = shard_samples(tmp_path / "out")
    planned = planned_sets(load_subtitles(folder / "talk.en.srt"), 10.0, st, "talk")
    assert len(samples) == len(planned) >= 2
    for (key, members), ws in zip(samples, planned):
        meta = json.loads(members["json"])
        assert key == f"talk-{int(round(ws.start * 1000)):09d}"
        assert meta["span"] == [round(ws.start, 6), round(ws.end, 6)]
        assert meta["transcripts"] == ws.transcripts
        assert meta["windows"] == [[round(a - ws.start, 6), round(b - ws.start, 6)] for a, b in ws.windows]
        assert (meta["width"], meta["height"], meta["fps"]) == (96, 64, 10.0)
        assert meta["frames"] == math.ceil((ws.end - ws.start) * 10 - 1e-6)
        assert meta["windows"][-1][1] <= meta["duration"]
        stamps = [read_stamp(f) for f in decode_frames(members["mp4"])]
        assert stamps == [math.floor((ws.start + i / 10) * 30 + 1e-9) for i in range(meta["frames"])]


def test_past_end_is_refused_or_shortened(corpus):
    st = IngestSettings(source="vtt", short_side=32)
    with ingest.OpenVideo(str(corpus / "syn000000.mp4")) as video:
        with pytest.raises(ingest.SkipSample) as err:
            ingest.encode_span(video, 17.0, 20.0, st)
        assert err.value.reason == "past_end"
        _, facts = ingest.encode_span(video, 17.0, 20.0, st, allow_short=True)  # caption clips stop at the end
        assert (facts["frames"], facts["duration"]) == (16, 2.0)


def test_vp9_output(corpus, tmp_path):
    st = IngestSettings(source="vtt", codec="vp9", short_side=32, **SYN)
    record = [r for r in ingest.list_records("vtt", corpus) if r.id == "syn000001"]
    ingest.ingest(record, tmp_path / "out", st)
    ((key, members),) = shard_samples(tmp_path / "out")
    assert sorted(members) == ["json", "webm"]
    codec, w, h, rate, frames, _, keys, _ = stream_facts(members["webm"])
    assert (codec, w, h, rate, frames) == ("vp9", 32, 32, 8, 152)
    assert keys[0] == 0 and max(np.diff(keys + [frames])) <= 8
