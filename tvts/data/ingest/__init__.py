"""Offline ingest: sources -> per-video records -> window sets / caption clips -> re-encoded shard samples.

Everything expensive happens here once, not in the training loader (method spec §5 items 12-13):
transcripts are parsed (and MERLOT ASR aligned by DTW) once per video, window sets are planned once
with :func:`tvts.data.windows.plan_window_sets`, and each set's span is decoded and re-encoded once
into a short, low-resolution, short-GOP H.264 clip (anchors §5 item 1: NVDEC on Hopper has no AV1).

=============  ====================================================================================
module         what
=============  ====================================================================================
records        :class:`Record` (one input video), :class:`IngestError`, helpers every lister shares
settings       :class:`IngestSettings`, the sources and codecs, :func:`video_rng` (window layout)
subtitles      source ``vtt``: videos with WebVTT/SRT subtitles beside them
annotations    sources ``merlot`` (YT-Temporal) and ``howto`` (HowTo100M): an index + annotations
captions       caption sources ``webvid`` (CSV/TSV) and ``jsonl``
listing        :func:`list_records`: any source's records, sorted by source id
video          :class:`OpenVideo` (forward decoding) and :func:`encode_span` (re-encoding one span)
build          :func:`process_record`, :func:`build_shard`, the worker pool, :func:`ingest`,
               :func:`ingest_source` and :class:`IngestResult`
=============  ====================================================================================
"""
from tvts.data.errors import SkipSample  # raised by OpenVideo and encode_span; importable from here as before
from tvts.data.ingest.build import (IngestResult, Sample, build_shard, estimate_samples_per_input, ingest,
                                    ingest_source, load_words, process_record)
from tvts.data.ingest.listing import list_records
from tvts.data.ingest.records import VIDEO_EXTS, IngestError, Record
from tvts.data.ingest.settings import CAPTION_SOURCES, CODECS, SOURCES, IngestSettings, video_rng
from tvts.data.ingest.video import OpenVideo, StreamInfo, encode_span, output_rate, output_size

__all__ = ["SkipSample", "IngestResult", "Sample", "build_shard", "estimate_samples_per_input", "ingest",
           "ingest_source", "load_words", "process_record", "list_records", "VIDEO_EXTS", "IngestError", "Record",
           "CAPTION_SOURCES", "CODECS", "SOURCES", "IngestSettings", "video_rng", "OpenVideo", "StreamInfo",
           "encode_span", "output_rate", "output_size"]
