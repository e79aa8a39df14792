"""Readers for the downstream metadata layouts of method §2.5.

Every reader returns plain records that keep where they came from (``file:line``), and every
problem raises :class:`MetadataError`, whose message starts with the file and, where there is one,
the line (``val.txt:17: expected "<video> <label>", got 3 fields``).

Layouts:

- **SSV2 lists** (``train.txt`` / ``val.txt``, official v1): ``<id>.webm <label>`` per line; class
  names in ``labels.json`` (name -> id, ids as ints or numeric strings).
- **SSV2 multiple choice** (``mc/val.jsonl``, official v2): one JSON object per line with
  ``clip_name`` (``<id>`` or ``<id>.webm``), ``options`` (list of strings) and ``answer`` (index).
- **Kinetics-400 / UCF101 / HMDB51 split lists** (``prompt/*.tsv``): ``<class>/<video file>`` TAB
  ``<label>``, the label an id or a class name; class names in ``label2id.json``.
- **MSR-VTT** (``MSR_VTT.json`` + ``val_list_jsfusion.txt`` + ``jsfusion_val_caption_idx.pkl``): the
  1k-A test set, one caption per video chosen by the index, as the Frozen/TVTS loader does; without an
  index every caption of a test video is a query.
- **DiDeMo** (``DiDeMo_test.tsv``): ``<caption>`` TAB ``<relative video path>``, with a header line
  (a first line whose path field has no file extension is taken as the header).
- **LSMDC** (``LSMDC16_challenge_1000_publictect.csv``): tab-separated, column 0 the clip id (video
  ``<movie>/<clip id>.avi``, movie = the id up to its last ``_``), the last column the caption.
"""
from __future__ import annotations

import io
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from tvts.errors import UserError


class MetadataError(UserError):
    """Bad downstream metadata; ``str(err)`` is one line starting with ``file:line:``."""

    def __init__(self, path, line: Optional[int], message: str):
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {message}")
        self.path, self.line = str(path), line


@dataclass(frozen=True)
class VideoItem:
    video: str  # path as written in the list (relative to the video root unless absolute)
    label: int
    where: str  # "file:line"


@dataclass(frozen=True)
class ChoiceItem:
    video: str
    options: tuple[str, ...]
    answer: int
    where: str


@dataclass
class RetrievalSet:
    """Videos and captions; ``text_video[i]`` is the index in ``videos`` of caption i's video."""

    videos: list[str] = field(default_factory=list)
    video_where: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    text_video: list[int] = field(default_factory=list)
    note: str = ""

    def add(self, video: str, caption: str, where: str) -> None:
        index = self._index.get(video)
        if index is None:
            index = self._index[video] = len(self.videos)
            self.videos.append(video)
            self.video_where.append(where)
        self.texts.append(caption)
        self.text_video.append(index)

    def __post_init__(self):
        self._index = {v: i for i, v in enumerate(self.videos)}


def _lines(path) -> list[tuple[int, str]]:
    """(1-based line number, text without the newline) of every non-blank line; UTF-8 or MetadataError."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise MetadataError(path, None, "no such file") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise MetadataError(path, line, "not UTF-8 text") from None
    return [(n, line.rstrip("\r")) for n, line in enumerate(text.split("\n"), 1) if line.strip()]


def _load_json(path):
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise MetadataError(path, None, "no such file") from None
    except UnicodeDecodeError:
        raise MetadataError(path, None, "not UTF-8 text") from None
    try:
        return json.loads(text), text
    except json.JSONDecodeError as err:
        raise MetadataError(path, err.lineno, f"not valid JSON ({err.msg})") from None


def _line_of(text: str, needle: str) -> Optional[int]:
    pos = text.find(needle)
    return text.count("\n", 0, pos) + 1 if pos >= 0 else None


def _int(value) -> Optional[int]:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


# ----------------------------------------------------------------------------------------------
# Classification: class names and lists
# ----------------------------------------------------------------------------------------------
def read_class_names(path) -> list[str]:
    """``labels.json`` / ``label2id.json`` (class name -> id) -> names indexed by id (ids 0..C-1, each once)."""
    data, text = _load_json(path)
    if not isinstance(data, dict) or not data:
        raise MetadataError(path, 1, "expected a non-empty JSON object mapping class names to ids")
    names: dict[int, str] = {}
    for name, value in data.items():
        line = _line_of(text, json.dumps(name, ensure_ascii=False)) or _line_of(text, f'"{name}"')
        index = _int(value)
        if index is None:
            raise MetadataError(path, line, f"class {name!r}: id {value!r} is not an integer")
        if index in names:
            raise MetadataError(path, line, f"class {name!r}: id {index} is also given to {names[index]!r}")
        names[index] = name
    if sorted(names) != list(range(len(names))):
        missing = sorted(set(range(len(names))) - set(names))
        raise MetadataError(path, None, f"ids must be 0..{len(names) - 1}; missing {missing[:5]}")
    return [names[i] for i in range(len(names))]


def read_ssv2_list(path, num_classes: Optional[int] = None) -> list[VideoItem]:
    """An SSV2 list: ``<id>.webm <label>`` per line."""
    items = []
    for n, line in _lines(path):
        fields = line.split()
        if len(fields) != 2:
            raise MetadataError(path, n, f'expected "<video> <label>", got {len(fields)} fields')
        items.append(VideoItem(fields[0], _label(path, n, fields[1], num_classes), f"{path}:{n}"))
    return items


def read_split_list(path, class_ids: Optional[dict[str, int]] = None) -> list[VideoItem]:
    """A Kinetics / UCF101 / HMDB51 split list: ``<class>/<video>`` TAB ``<label>`` (id or class name).

    Lines without a tab are split at the last run of whitespace (video paths may contain spaces only in
    tab-separated files)."""
    num_classes = len(class_ids) if class_ids else None
    items = []
    for n, line in _lines(path):
        if "\t" in line:
            video, _, label = line.rpartition("\t")
        else:
            parts = line.rsplit(None, 1)
            if len(parts) != 2:
                raise MetadataError(path, n, 'expected "<video>\\t<label>"')
            video, label = parts
        video, label = video.strip(), label.strip()
        if not video:
            raise MetadataError(path, n, "empty video path")
        if _int(label) is None and class_ids is not None and label in class_ids:
            items.append(VideoItem(video, class_ids[label], f"{path}:{n}"))
            continue
        items.append(VideoItem(video, _label(path, n, label, num_classes), f"{path}:{n}"))
    return items


def _label(path, n: int, text: str, num_classes: Optional[int]) -> int:
    label = _int(text)
    if label is None:
        raise MetadataError(path, n, f"label {text!r} is not an integer (or a class name of the label file)")
    if label < 0 or (num_classes is not None and label >= num_classes):
        bound = f" [0, {num_classes})" if num_classes is not None else " >= 0"
        raise MetadataError(path, n, f"label {label} is outside{bound}")
    return label


def read_mc_jsonl(path) -> list[ChoiceItem]:
    """SSV2 multiple choice: ``{"clip_name": ..., "options": [...], "answer": i}`` per line."""
    items = []
    for n, line in _lines(path):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise MetadataError(path, n, f"not valid JSON ({err.msg})") from None
        if not isinstance(record, dict):
            raise MetadataError(path, n, "expected a JSON object")
        missing = [k for k in ("clip_name", "options", "answer") if k not in record]
        if missing:
            raise MetadataError(path, n, f"missing key(s) {', '.join(missing)}")
        options, answer = record["options"], _int(record["answer"])
        if not isinstance(options, list) or not options or not all(isinstance(o, str) for o in options):
            raise MetadataError(path, n, "options must be a non-empty list of strings")
        if answer is None or not 0 <= answer < len(options):
            raise MetadataError(path, n, f"answer {record['answer']!r} is not an index into the {len(options)} options")
        clip = str(record["clip_name"])
        video = clip if Path(clip).suffix else f"{clip}.webm"
        items.append(ChoiceItem(video, tuple(options), answer, f"{path}:{n}"))
    return items


# ----------------------------------------------------------------------------------------------
# Retrieval
# ----------------------------------------------------------------------------------------------
def read_msrvtt(annotations, test_list, caption_index=None) -> RetrievalSet:
    """MSR-VTT 1k-A: the videos of ``test_list`` (one id per line) and, per video, the caption chosen by
    ``caption_index`` (Frozen's ``jsfusion_val_caption_idx.pkl``, or JSON ``{id: index}``) among its
    captions in ``annotations`` (``MSR_VTT.json``, in file order). Without an index, every caption of a
    test video is a query. Videos are ``<id>.mp4``."""
    data, text = _load_json(annotations)
    records = data.get("annotations") if isinstance(data, dict) else None
    if not isinstance(records, list):
        raise MetadataError(annotations, 1, 'expected an object with an "annotations" list')
    captions: dict[str, list[str]] = {}
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or not isinstance(rec.get("image_id"), str) or not isinstance(rec.get("caption"), str):
            line = _line_of(text, json.dumps(rec.get("caption"))) if isinstance(rec, dict) else None
            raise MetadataError(annotations, line, f'annotations[{i}]: needs string "image_id" and "caption"')
        captions.setdefault(rec["image_id"], []).append(rec["caption"])
    chosen = _read_caption_index(caption_index) if caption_index else None
    out = RetrievalSet(note="MSR-VTT " + ("1k-A, one caption per video (caption index)" if chosen is not None
                                          else "test list, every caption of a video is a query (no caption index)"))
    for n, line in _lines(test_list):
        vid = line.strip()
        if vid not in captions:
            raise MetadataError(test_list, n, f"video {vid!r} has no caption in {annotations}")
        caps = captions[vid]
        if chosen is not None:
            if vid not in chosen:
                raise MetadataError(caption_index, None, f"no caption index for video {vid!r} ({test_list}:{n})")
            k = chosen[vid]
            if not 0 <= k < len(caps):
                raise MetadataError(caption_index, None, f"video {vid!r}: caption index {k} but it has {len(caps)} captions")
            caps = [caps[k]]
        for cap in caps:
            out.add(f"{vid}.mp4", cap, f"{test_list}:{n}")
    return out


class _PlainUnpickler(pickle.Unpickler):
    """Dicts, strings and numbers only: a metadata pickle must not run code."""

    _ALLOWED = {("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _read_caption_index(path) -> dict[str, int]:
    path = Path(path)
    if path.suffix == ".json":
        data, _ = _load_json(path)
    else:
        try:
            data = _PlainUnpickler(io.BytesIO(path.read_bytes())).load()
        except FileNotFoundError:
            raise MetadataError(path, None, "no such file") from None
        except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file
            raise MetadataError(path, None, f"not a plain pickled dict ({err}); convert it to JSON {{id: index}}") from None
    if not isinstance(data, dict):
        raise MetadataError(path, None, "expected a mapping from video id to caption index")
    out = {}
    for key, value in data.items():
        index = _int(value if not hasattr(value, "item") else value.item())
        if index is None:
            raise MetadataError(path, None, f"video {key!r}: caption index {value!r} is not an integer")
        out[str(key)] = index
    return out


_VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ogv"}


def read_didemo(path) -> RetrievalSet:
    """DiDeMo TSV: ``<caption>\\t<relative video path>``; a first line whose path has no extension is a header."""
    out = RetrievalSet(note="DiDeMo, one paragraph caption per row")
    for i, (n, line) in enumerate(_lines(path)):
        fields = line.split("\t")
        if len(fields) < 2:
            raise MetadataError(path, n, 'expected "<caption>\\t<video path>"')
        caption, video = fields[0].strip(), fields[-1].strip()
        if i == 0 and not Path(video).suffix:
            continue  # header
        if Path(video).suffix.lower() not in _VIDEO_SUFFIXES:
            raise MetadataError(path, n, f"{video!r} does not look like a video file")
        if not caption:
            raise MetadataError(path, n, "empty caption")
        out.add(video, caption, f"{path}:{n}")
    return out


def read_lsmdc(path) -> RetrievalSet:
    """LSMDC TSV: clip id in column 0 -> ``<movie>/<clip id>.avi``; caption in the last column."""
    out = RetrievalSet(note="LSMDC, one caption per clip")
    for n, line in _lines(path):
        fields = line.split("\t")
        if len(fields) < 2:
            raise MetadataError(path, n, "expected tab-separated columns: clip id ... caption")
        clip, caption = fields[0].strip(), fields[-1].strip()
        if "_" not in clip:
            raise MetadataError(path, n, f"clip id {clip!r} has no '_' (expected <movie>_<clip>)")
        if not caption:
            raise MetadataError(path, n, "empty caption")
        out.add(f"{clip[: clip.rfind('_')]}/{clip}.avi", caption, f"{path}:{n}")
    return out


def write_synthetic_captions(downstream_dir, split: str = "val", name: str = "captions_val.tsv") -> Path:
    """A DiDeMo-format caption file for the synthetic downstream set (caption = the class name, e.g.
    "moving left"), so retrieval can run end to end on synthetic data. Captions repeat across videos of
    one class, so its scores measure class retrieval, not instance retrieval."""
    root = Path(downstream_dir)
    names = read_class_names(root / "labels.json")
    rows = ["caption\tvideo"] + [f"{names[it.label].replace('_', ' ')}\t{it.video}"
                                 for it in read_ssv2_list(root / f"{split}.txt", len(names))]
    out = root / name
    out.write_text("\n".join(rows) + "\n")
    return out
