"""Transcript annotations listed by an index: MERLOT / YT-Temporal (``merlot``) and HowTo100M (``howto``)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from tvts.data.ingest.records import IngestError, Record, check_input, read_table, source_id, walk_videos


def list_merlot(path: Path, video_root: Optional[Path]) -> list[Record]:
    if path.is_dir():  # simple layout: <id>.mp4 + <id>.json side by side
        records = []
        for video in walk_videos(path):
            ann = video.with_suffix(".json")
            problem = None if ann.is_file() else ("missing_transcript", f"{video}: no {ann.name} beside it")
            records.append(Record(source_id(video, path), str(video), str(ann), problem=problem))
        return records
    rows = read_table(check_input(path, "file"))
    header = [c.strip().lower() for c in rows[0]] if rows else []
    if "name" not in header:
        raise IngestError(f"{path}: expected a CSV/TSV with a 'Name' column of relative video paths "
                          "(YT-Temporal index)")
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


def list_howto(path: Path, video_root: Optional[Path]) -> list[Record]:
    try:
        data = json.loads(check_input(path, "file").read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise IngestError(f"{path}: not a UTF-8 JSON file ({err})") from None
    if not isinstance(data, dict):
        raise IngestError(f"{path}: expected a JSON object {{video_id: {{start, end, text}}}}")
    root = video_root or (path.parent / "videos" if (path.parent / "videos").is_dir() else path.parent)
    by_stem = {}
    for video in walk_videos(check_input(root, "dir")):
        by_stem.setdefault(video.stem, video)
    records = []
    for vid, entry in data.items():
        video = by_stem.get(vid)
        problem = None if video else ("missing_video", f"{root}/{vid}.*: no video for this HowTo100M id")
        entry = entry if isinstance(entry, dict) else {"invalid": True}
        records.append(Record(str(vid), str(video or root / vid), howto=entry, problem=problem))
    return records

