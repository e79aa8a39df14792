"""Fine-tuning data: annotation lists, training clips, multi-view test clips, mixup / cutmix.

Lists (``format``; ``auto`` picks by file name and, for a CSV, by its header):

- ``ssv2`` / ``kinetics``: the frozen protocols' lists, read by :func:`tvts.eval.datasets.classification_data`
  (``train.txt`` / ``val.txt`` + ``labels.json``; ``<class>/<video>`` TAB ``<label>`` split lists);
- ``ssv2_json``: the SSV2 release, ``something-something-v2-{train,validation}.json`` (records with ``id`` and
  ``template``; the class is the template without its brackets, as VideoMAE reads it) and
  ``something-something-v2-labels.json`` (name -> id); videos ``<id>.webm``;
- ``kinetics_csv``: the Kinetics release, ``train.csv`` / ``val.csv`` (header ``label,youtube_id,time_start,
  time_end[,split]``); videos ``<label>/<youtube_id>_<start:06d>_<end:06d>.mp4`` (the downloaders' names, by
  class folder when it exists, else flat); class ids from ``label2id.json`` or the sorted training labels;
- ``csv``: any folder of videos with a CSV whose header has ``video`` and ``label`` columns (a label is an id
  or a class name; names from ``labels=`` or the sorted training labels).

Randomness is keyed, not drawn from a stream: a training clip's frame times and crop come from
``(seed, epoch, clip index)``, a batch's mixup from ``(seed, micro-batch, rank)``, the epoch order from
``(seed, epoch)``. So the batches of any step are a function of the step alone, whatever the number of
loader workers, and resuming needs nothing but the step.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from tvts.data.augment import center_offset, crop_video, resize_short_side
from tvts.data.decode import decode_frames, frame_timeline
from tvts.data.errors import SkipSample
from tvts.data.sampling import frame_times
from tvts.errors import UserError
from tvts.eval import formats
from tvts.eval.datasets import ClassificationData, classification_data, resolve_video, video_root
from tvts.eval.features import EvalDataError
from tvts.eval.formats import MetadataError, VideoItem
from tvts.eval.options import EvalOptions

SUBDIRS = ("", "labels", "annotations")
SSV2_JSON = {"train": ("something-something-v2-train.json", "train.json"),
             "eval": ("something-something-v2-validation.json", "validation.json"),
             "labels": ("something-something-v2-labels.json", "labels.json")}
CSV = {"train": ("train.csv",), "eval": ("val.csv", "validate.csv", "test.csv"), "labels": ("label2id.json", "labels.json")}


# ----------------------------------------------------------------------------------------------
# Lists
# ----------------------------------------------------------------------------------------------
def _find(data: Path, names) -> Optional[Path]:
    for sub in SUBDIRS:
        for name in names:
            if (data / sub / name).is_file():
                return data / sub / name
    return None


def _given(data: Path, value: str) -> Optional[Path]:
    if not value:
        return None
    path = Path(value) if Path(value).is_absolute() else data / value
    if not path.is_file():
        raise MetadataError(path, None, "no such file")
    return path


def _csv_kind(path: Path) -> str:
    """kinetics_csv, csv (a video,label header) or ssv2 (VideoMAE's space-separated ``train.csv``)."""
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        header = [h.strip() for h in f.readline().split(",")]
    if "youtube_id" in header:
        return "kinetics_csv"
    return "csv" if "label" in header and ("video" in header or "path" in header) else "ssv2"


def detect_format(data: Path, ft) -> str:
    """The list format of the fine-tuning options ``ft`` (``format``, ``train_list``) under ``data``."""
    if ft.format != "auto":
        return ft.format
    explicit = _given(data, ft.train_list)
    if explicit is not None:
        if explicit.suffix == ".json":
            return "ssv2_json"
        if explicit.suffix == ".csv":
            return _csv_kind(explicit)
        return "kinetics" if explicit.suffix == ".tsv" else "ssv2"
    if _find(data, SSV2_JSON["train"][:1]) or (_find(data, SSV2_JSON["train"]) and _find(data, SSV2_JSON["eval"])):
        return "ssv2_json"
    found = _find(data, CSV["train"])
    return _csv_kind(found) if found is not None else "auto"


def _eval_options(ft, fmt: str) -> EvalOptions:
    return EvalOptions(format=fmt, train_list=ft.train_list, eval_list=ft.eval_list, labels=ft.labels,
                       video_root=ft.video_root, limit=ft.limit)


def classification_lists(data, ft) -> tuple[ClassificationData, str]:
    """(training and evaluation lists, the format read) for the fine-tuning options ``ft``."""
    data = Path(data)
    if not data.is_dir():
        raise MetadataError(data, None, "finetune.data: no such directory (the dataset's metadata directory; the demo's "
                                        "is data/demo/downstream, written by python launch/pretrain.py)")
    fmt = detect_format(data, ft)
    opts = _eval_options(ft, fmt)
    if fmt in ("ssv2", "kinetics", "auto"):
        return classification_data(data, opts, need_train=True), fmt
    names = SSV2_JSON if fmt == "ssv2_json" else CSV
    lists = {}
    for split in ("train", "eval"):
        lists[split] = _given(data, getattr(ft, f"{split}_list")) or _find(data, names[split])
        if lists[split] is None:
            raise MetadataError(data, None, f"no {split} list for format {fmt}: pass finetune.{split}_list=... or "
                                            f"add one of {', '.join(names[split])}")
    label_file = _given(data, ft.labels) or _find(data, names["labels"])
    classes = formats.read_class_names(label_file) if label_file else None
    root = video_root(data, opts)
    if fmt == "ssv2_json":
        if classes is None:
            raise MetadataError(data, None, f"no class names: pass finetune.labels=... or add {names['labels'][0]}")
        train, evals = (read_ssv2_json(lists[s], classes) for s in ("train", "eval"))
    else:
        train_rows, eval_rows = (_read_csv(lists[s], fmt) for s in ("train", "eval"))
        seen = {label for _, label, _ in train_rows}
        if classes is None:  # ids as written, or names in sorted order (the Kinetics convention)
            numeric = all(label.isdigit() for label in seen)
            classes = [str(i) for i in range(1 + max(map(int, seen)))] if numeric else sorted(seen)
        ids = {name: i for i, name in enumerate(classes)}
        train, evals = (_labelled(lists[s], rows, ids, root, fmt) for s, rows in (("train", train_rows), ("eval", eval_rows)))
    files = {"format": fmt, "train_list": str(lists["train"]), "eval_list": str(lists["eval"]),
             "labels": str(label_file) if label_file else "sorted training labels"}
    limit = ft.limit or None
    return ClassificationData(evals[:limit], train[:limit], classes, root, files), fmt


def read_ssv2_json(path, classes: Sequence[str]) -> list[VideoItem]:
    """``something-something-v2-*.json``: a list of ``{"id": ..., "template": "Putting [something] on ..."}``."""
    data = _json(path)
    if not isinstance(data, list):
        raise MetadataError(path, 1, 'expected a list of {"id": ..., "template": ...} records')
    ids = {name: i for i, name in enumerate(classes)}
    items = []
    for n, record in enumerate(data):
        if not isinstance(record, dict) or "id" not in record or not isinstance(record.get("template"), str):
            raise MetadataError(path, None, f"record {n}: needs \"id\" and a \"template\" string")
        name = record["template"].replace("[", "").replace("]", "")
        if name not in ids:
            raise MetadataError(path, None, f"record {n} (id {record['id']}): class {name!r} is not in the label file")
        items.append(VideoItem(f"{record['id']}.webm", ids[name], f"{path}:record {n}"))
    return items


def _text(path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise MetadataError(path, None, "not UTF-8 text") from None


def _json(path):
    try:
        return json.loads(_text(path))
    except json.JSONDecodeError as err:
        raise MetadataError(path, err.lineno, f"not valid JSON ({err.msg})") from None


def _read_csv(path: Path, fmt: str) -> list[tuple[dict, str, int]]:
    """(row, label text, line) of every data row of a CSV with a header."""
    reader = csv.DictReader(io.StringIO(_text(path)))
    need = ("label", "youtube_id", "time_start", "time_end") if fmt == "kinetics_csv" else ("label",)
    missing = [c for c in need if c not in (reader.fieldnames or [])]
    if missing or (fmt == "csv" and not {"video", "path"} & set(reader.fieldnames or [])):
        raise MetadataError(path, 1, f"header lacks {', '.join(missing) or 'video'} (format {fmt})")
    rows = [(row, (row["label"] or "").strip(), reader.line_num) for row in reader]
    if not rows:
        raise MetadataError(path, None, "no rows below the header")
    return rows


def _labelled(path: Path, rows, ids: dict, root: Path, fmt: str) -> list[VideoItem]:
    items = []
    for row, label, n in rows:
        if label in ids:
            index = ids[label]
        elif label.lstrip("-").isdigit() and 0 <= int(label) < len(ids):
            index = int(label)
        else:
            raise MetadataError(path, n, f"label {label!r} is not a class of the label file or the training list")
        video = _kinetics_video(root, row) if fmt == "kinetics_csv" else (row.get("video") or row.get("path") or "")
        if not video.strip():
            raise MetadataError(path, n, "empty video path")
        items.append(VideoItem(video.strip(), index, f"{path}:{n}"))
    return items


def _kinetics_video(root: Path, row: dict) -> str:
    stem = f"{row['youtube_id']}_{int(float(row['time_start'])):06d}_{int(float(row['time_end'])):06d}.mp4"
    for folder in (row["label"], row["label"].replace(" ", "_")):
        if (root / folder).is_dir():
            return f"{folder}/{stem}"
    return stem


def check_videos(items: Sequence[VideoItem], root: Path, list_name: str) -> None:
    """One line naming the first list entry whose video file is missing (before any training)."""
    for it in items:
        path = Path(resolve_video(root, it.video))
        if not path.is_file():
            raise MetadataError(list_name, None, f"{it.where}: video {path} not found (set finetune.video_root)")


# ----------------------------------------------------------------------------------------------
# Clips
# ----------------------------------------------------------------------------------------------
def view_times(start: float, end: float, frames: int, clips: int) -> np.ndarray:
    """(clips, frames) float64 seconds: the span cut into ``frames`` equal bins (TSN segments); temporal view c
    takes each bin at offset (c + 0.5) / clips, so one view is the bin middles of the frozen protocols."""
    width = (end - start) / frames
    offsets = (np.arange(clips, dtype=np.float64)[:, None] + 0.5) / clips
    return start + width * (np.arange(frames, dtype=np.float64)[None, :] + offsets)


def crop_offsets(height: int, width: int, size: int, crops: int) -> list[tuple[int, int]]:
    """(top, left) of ``crops`` square crops evenly spaced along the long side (the width when square), centred
    on the short side: 3 crops = start, centre, end (VideoMAE's test crops); 1 crop = the centre crop."""
    if crops == 1:
        return [(center_offset(height, size), center_offset(width, size))]
    long_is_height = height > width
    span = (height if long_is_height else width) - size
    across = center_offset(width if long_is_height else height, size)
    along = [int(round(j * span / (crops - 1))) for j in range(crops)]
    return [(a, across) if long_is_height else (across, a) for a in along]


class _Clips(Dataset):
    def __init__(self, items: Sequence[VideoItem], root: Path, frames: int, image_size: int, resize_short: int,
                 normalize: str):
        self.items, self.root = list(items), root
        self.frames, self.image_size, self.resize_short, self.normalize = frames, image_size, resize_short, normalize

    def __len__(self) -> int:
        return len(self.items)

    def _decode(self, i: int, times) -> torch.Tensor:
        return decode_frames(resolve_video(self.root, self.items[i].video), times)


class TrainClips(_Clips):
    """Item ``(epoch, i)`` -> (i, (M, 3, S, S) uint8 clip or None, error): one random time per bin, one random
    crop after the short-side resize (the pre-training augmentation), keyed on (seed, epoch, i). Normalised
    on the device by the consumer (:func:`tvts.data.augment.normalize_video` with ``normalize``)."""

    def __init__(self, *args, seed: int):
        super().__init__(*args)
        self.seed = seed

    def __getitem__(self, key: tuple[int, int]):
        epoch, i = key
        rng = np.random.default_rng([self.seed, epoch, i])
        try:
            timeline = frame_timeline(resolve_video(self.root, self.items[i].video))
            times = frame_times(float(timeline.starts[0]), timeline.end_s, self.frames, train=True, rng=rng)
            frames = self._decode(i, times)
        except SkipSample as err:
            return i, None, f"{self.items[i].where}: {err}"
        generator = torch.Generator().manual_seed(int(rng.integers(1 << 62)))
        return i, crop_video(frames, self.image_size, self.resize_short, True, generator), ""


class ViewClips(_Clips):
    """Item i -> (i, (clips * crops, M, 3, S, S) uint8 views or None, error); views clip-major, normalised on
    the device by the consumer (the strategies' forward)."""

    def __init__(self, *args, clips: int, crops: int):
        super().__init__(*args)
        self.clips, self.crops = clips, crops

    def __getitem__(self, i: int):
        try:
            timeline = frame_timeline(resolve_video(self.root, self.items[i].video))
            times = view_times(float(timeline.starts[0]), timeline.end_s, self.frames, self.clips)
            frames = self._decode(i, times.reshape(-1))  # one decode for every view
        except SkipSample as err:
            return i, None, f"{self.items[i].where}: {err}"
        frames = resize_short_side(frames, self.resize_short)
        frames = frames.reshape(self.clips, self.frames, *frames.shape[1:])
        s = self.image_size
        views = [clip[:, :, top:top + s, left:left + s]
                 for clip in frames for top, left in crop_offsets(frames.shape[-2], frames.shape[-1], s, self.crops)]
        return i, torch.stack(views), ""


def collate(batch: list) -> tuple[torch.Tensor, Optional[torch.Tensor], list[str]]:
    """(indices (B,), stacked clips or None, error lines); the main process raises the first error."""
    errors = [error for _, _, error in batch if error]
    clips = None if errors else torch.stack([clip for _, clip, _ in batch])
    return torch.tensor([i for i, _, _ in batch]), clips, errors


def raise_errors(errors: list[str]) -> None:
    if errors:  # a fixed list: a clip is never dropped or replaced silently
        raise EvalDataError(errors[0])


class StepBatches(Sampler):
    """This rank's micro-batches from micro-batch ``start`` on, forever: lists of ``(epoch, clip index)``.

    Epoch e visits ``randperm(N)`` of seed (seed, e); rank r takes every world-th clip of it from r, cut to
    ``N // world`` (drop last), in micro-batches of ``micro_batch``. The union over ranks of micro-batch m is
    the single-rank micro-batch m of ``micro_batch * world`` clips."""

    def __init__(self, num_clips: int, micro_batch: int, seed: int, rank: int, world: int, start: int = 0):
        self.per_rank = num_clips // world
        self.per_epoch = self.per_rank // micro_batch
        if self.per_epoch == 0:
            raise UserError(f"the training list has {num_clips} clips, fewer than train.micro_batch={micro_batch} "
                            f"x {world} rank(s)")
        self.num_clips, self.micro_batch, self.seed = num_clips, micro_batch, seed
        self.rank, self.world, self.start = rank, world, start

    def order(self, epoch: int) -> list[int]:
        """Every clip index, in epoch ``epoch``'s order."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_clips, generator=g).tolist()

    def __iter__(self):
        m, cached = self.start, (None, None)
        while True:
            epoch, b = divmod(m, self.per_epoch)
            if cached[0] != epoch:
                cached = (epoch, self.order(epoch)[self.rank::self.world][: self.per_rank])
            yield [(epoch, i) for i in cached[1][b * self.micro_batch:(b + 1) * self.micro_batch]]
            m += 1


@dataclass
class Mixup:
    """timm's batch-mode Mixup / CutMix on clips (official v1: mixup 0.8, cutmix 1.0, switch 0.5, always on),
    with label smoothing folded into the targets. The box of CutMix is the same in every frame."""

    mixup: float
    cutmix: float
    switch_prob: float
    smoothing: float
    num_classes: int

    def targets(self, labels: torch.Tensor) -> torch.Tensor:
        """(B,) int64 -> (B, C) float32 smoothed one-hot: 1 - s + s/C on the class, s/C elsewhere."""
        off = self.smoothing / self.num_classes
        out = torch.full((labels.shape[0], self.num_classes), off)
        return out.scatter_(1, labels[:, None], 1.0 - self.smoothing + off)

    def __call__(self, video: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator):
        """video (B, M, 3, S, S), labels (B,) -> (mixed video, (B, C) targets, lam)."""
        y = self.targets(labels)
        use_cutmix = self.cutmix > 0 and (self.mixup <= 0 or rng.random() < self.switch_prob)
        if self.mixup <= 0 and self.cutmix <= 0:
            return video, y, 1.0
        lam = float(rng.beta(self.cutmix, self.cutmix) if use_cutmix else rng.beta(self.mixup, self.mixup))
        flipped = video.flip(0)
        if use_cutmix:
            h, w = video.shape[-2:]
            ratio = np.sqrt(1.0 - lam)
            ch, cw = int(h * ratio), int(w * ratio)
            cy, cx = int(rng.integers(h)), int(rng.integers(w))
            y0, y1, x0, x1 = (int(np.clip(cy - ch // 2, 0, h)), int(np.clip(cy + ch // 2, 0, h)),
                              int(np.clip(cx - cw // 2, 0, w)), int(np.clip(cx + cw // 2, 0, w)))
            video = video.clone()
            video[..., y0:y1, x0:x1] = flipped[..., y0:y1, x0:x1]
            lam = 1.0 - (y1 - y0) * (x1 - x0) / float(h * w)
        else:
            video = video * lam + flipped * (1.0 - lam)
        return video, y * lam + y.flip(0) * (1.0 - lam), lam
