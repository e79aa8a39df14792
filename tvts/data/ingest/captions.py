"""Caption lists (caption sources): WebVid-style CSV/TSV tables (``webvid``) and JSON lines (``jsonl``)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from tvts.data.ingest.records import VIDEO_EXTS, IngestError, Record, check_input, read_table

_CAPTION_COLUMNS = ("caption", "name", "text", "title", "description", "sentence")
_PATH_COLUMNS = ("path", "video", "video_path", "videopath", "file", "filename", "filepath", "rel_path", "relpath",
                 "clip")


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


def list_webvid(path: Path, video_root: Optional[Path]) -> list[Record]:
    rows = read_table(check_input(path, "file"))
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


def list_jsonl(path: Path, video_root: Optional[Path]) -> list[Record]:
    root = video_root or path.parent
    records = []
    try:
        lines = check_input(path, "file").read_text(encoding="utf-8").splitlines()
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
            records.append(Record(f"<line {n}>", "", problem=(
                "bad_record", f"{path}:{n}: expected {{\"path\": str, \"caption\": str}}")))
            continue
        records.append(_caption_record(root, rel, caption, f"{path}:{n}"))
    return records

