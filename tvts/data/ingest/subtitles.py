"""Subtitles beside videos (source ``vtt``): a folder of videos with the WebVTT/SRT files yt-dlp writes."""
from __future__ import annotations

import collections
import os
import re
from pathlib import Path
from typing import Optional

from tvts.data.ingest.records import Record, source_id, walk_videos

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


def list_vtt(root: Path) -> list[Record]:
    records = []
    by_dir: dict[Path, list[Path]] = collections.defaultdict(list)
    for video in walk_videos(root):
        by_dir[video.parent].append(video)
    for directory, videos in by_dir.items():
        siblings = set(os.listdir(directory))
        stems = {v.stem for v in videos}
        for video in videos:
            sub = _subtitle_for(video, siblings, stems)
            problem = None if sub else ("missing_transcript", f"{video}: no .vtt/.srt subtitle beside it")
            records.append(Record(source_id(video, root), str(video), str(sub) if sub else None, problem=problem))
    return records

