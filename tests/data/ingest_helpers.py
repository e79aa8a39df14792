"""Helpers shared by the ingest tests (tests/data/test_ingest_*.py): the synthetic corpus's window grid and
readers of shard sets and encoded clips. The ``corpus`` fixture itself is in tests/data/conftest.py."""
from __future__ import annotations

import io

import av
import numpy as np

from tvts.data import ingest, shards
from tvts.data.ingest import IngestSettings
from tvts.data.windows import plan_window_sets

# The synthetic corpus: 4 events of 4 s, 1 s apart = 19 s videos, one window set each.
SYN = dict(num_windows=4, window_min_s=4, window_max_s=4, gap_s=1)


def shard_samples(out):
    """Every (key, members) sample of the shard set in ``out``, shard by shard (each shard's count checked)."""
    found = []
    for path, count in shards.list_shards(out):
        got = list(shards.read_shard(path))
        assert len(got) == count
        found += got
    return found


def stream_facts(data: bytes):
    """(codec, width, height, rate, frames, pix_fmt, keyframe indices, has audio) of an encoded clip."""
    with av.open(io.BytesIO(data)) as c:
        s = c.streams.video[0]
        packets = sorted((p for p in c.demux(s) if p.size), key=lambda p: p.pts)
        keys = [i for i, p in enumerate(packets) if p.is_keyframe]
        return (s.codec_context.name, s.codec_context.width, s.codec_context.height, s.average_rate, len(packets),
                s.codec_context.pix_fmt, keys, bool(c.streams.audio))


def decode_frames(data: bytes) -> list[np.ndarray]:
    """The RGB frames of an encoded clip."""
    with av.open(io.BytesIO(data)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def planned_sets(words, duration, st: IngestSettings, source_id: str):
    """The window sets ingest plans for one video with ``st`` (its layout generator: ``video_rng``)."""
    sets, _ = plan_window_sets(words, duration, st.num_windows, st.window_min_s, st.window_max_s, st.gap_s,
                               st.min_words, ingest.video_rng(st.seed, source_id))
    return sets
