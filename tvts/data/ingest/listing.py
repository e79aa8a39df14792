"""The sources and :func:`list_records`, which lists the input videos of any of them, sorted by source id:

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
"""
from __future__ import annotations

import collections
import dataclasses
from pathlib import Path
from typing import Optional

from tvts.data.ingest.annotations import list_howto, list_merlot
from tvts.data.ingest.captions import list_jsonl, list_webvid
from tvts.data.ingest.records import IngestError, Record, check_input
from tvts.data.ingest.settings import SOURCES
from tvts.data.ingest.subtitles import list_vtt


def list_records(source: str, input_path: str | Path, video_root: Optional[str | Path] = None) -> list[Record]:
    """The input videos of a source, sorted by id (ids made unique with ``#2``, ``#3``... in file order).

    ``input_path``: the folder (vtt, merlot folder layout) or the index/caption file (merlot index,
    howto, webvid, jsonl). ``video_root``: where relative video paths point (default: the index
    file's folder, or its ``videos/`` subfolder for merlot and howto when present). Raises
    :class:`IngestError` when the input path is wrong or holds no inputs at all.
    """
    path = Path(input_path)
    root = check_input(video_root, "dir") if video_root else None
    if source == "vtt":
        records = list_vtt(check_input(path, "dir"))
    elif source == "merlot":
        if not path.exists():
            raise IngestError(f"{path}: no such folder or index file")
        records = list_merlot(path, root)
    elif source == "howto":
        records = list_howto(path, root)
    elif source == "webvid":
        records = list_webvid(path, root)
    elif source == "jsonl":
        records = list_jsonl(path, root)
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
