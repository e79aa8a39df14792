"""Records: one input video each, and what every source lister shares (the error of a whole input,
checked input paths, the video files under a folder, CSV/TSV rows)."""
from __future__ import annotations

import csv
import hashlib
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from tvts.errors import UserError

VIDEO_EXTS = (".mp4", ".mkv", ".webm", ".mov")


class IngestError(UserError):
    """The input as a whole cannot be used (wrong path, no inputs, changed settings); one line."""


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


def check_input(path: str | Path, want: str) -> Path:
    p = Path(path)
    if want == "dir" and not p.is_dir():
        raise IngestError(f"{path}: not a folder" if p.exists() else f"{path}: no such folder")
    if want == "file" and not p.is_file():
        raise IngestError(f"{path}: not a file" if p.exists() else f"{path}: no such file")
    return p


def walk_videos(root: Path) -> list[Path]:
    """Video files under ``root`` (recursive, hidden folders skipped), sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [Path(dirpath) / f for f in filenames
                  if Path(f).suffix.lower() in VIDEO_EXTS and not f.startswith(".")]
    return sorted(found)


def source_id(path: Path, root: Path) -> str:
    return path.relative_to(root).with_suffix("").as_posix()


def read_table(path: Path) -> list[list[str]]:
    """Rows of a CSV/TSV file (tab-separated when the extension is .tsv or the first line has a tab)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise IngestError(f"{path}: byte {err.start} is not UTF-8") from None
    first = text.split("\n", 1)[0]
    delimiter = "\t" if path.suffix.lower() == ".tsv" or "\t" in first else ","
    return [row for row in csv.reader(io.StringIO(text), delimiter=delimiter) if any(cell.strip() for cell in row)]

