"""Find a protocol's metadata under ``--data`` and read it with :mod:`tvts.eval.formats`.

Explicit options (``train_list``, ``eval_list``, ``labels``, ``video_root``, ``caption_index``; relative
to ``--data`` unless absolute) win; otherwise the official file names of method §2.5 are looked for in
``<data>``, ``<data>/prompt``, ``<data>/mc``, ``<data>/annotation`` and
``<data>/high-quality/structured-symlinks``. Video paths in the lists are relative to ``video_root``
(default ``<data>/videos`` when it exists, else ``<data>``; MSR-VTT also tries ``videos/all``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from tvts.eval import formats
from tvts.eval.formats import ChoiceItem, MetadataError, RetrievalSet, VideoItem

SUBDIRS = ("", "prompt", "mc", "annotation", "high-quality/structured-symlinks")
SSV2 = {"train": ("train.txt", "train.csv"), "eval": ("val.txt", "val.csv", "test.txt", "test.csv"),
        "labels": ("labels.json",)}
KINETICS = {"train": ("kinetics400_train_list_videos.tsv", "trainlist01_new.tsv", "split_1_train_list.tsv"),
            "eval": ("kinetics400_val_list_videos.tsv", "testlist01_new.tsv", "split_1_test_list.tsv"),
            "labels": ("label2id.json",)}
MC = ("val.jsonl", "mc_val.jsonl")
RETRIEVAL = {"msrvtt": ("MSR_VTT.json",), "didemo": ("DiDeMo_test.tsv", "captions_val.tsv"),
             "lsmdc": ("LSMDC16_challenge_1000_publictect.csv",)}
MSRVTT_TEST = ("val_list_jsfusion.txt",)
MSRVTT_CAPTION_INDEX = ("jsfusion_val_caption_idx.pkl", "jsfusion_val_caption_idx.json")


@dataclass
class ClassificationData:
    eval: list[VideoItem]
    train: Optional[list[VideoItem]]
    classes: Optional[list[str]]  # names by id, when a label file was found
    video_root: Path
    files: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        if self.classes is not None:
            return len(self.classes)
        return 1 + max(it.label for it in self.eval + (self.train or []))


def _given(data: Path, value: str) -> Optional[Path]:
    if not value:
        return None
    path = Path(value) if Path(value).is_absolute() else data / value
    if not path.exists():
        raise MetadataError(path, None, "no such file")
    return path


def _find(data: Path, names) -> Optional[Path]:
    for sub in SUBDIRS:
        for name in names:
            path = data / sub / name if sub else data / name
            if path.is_file():
                return path
    return None


def video_root(data: Path, opts) -> Path:
    if opts.video_root:
        return _given(data, opts.video_root)
    return data / "videos" if (data / "videos").is_dir() else data


def resolve_video(root: Path, video: str) -> str:
    return video if Path(video).is_absolute() else str(root / video)


def _limit(items: list, opts) -> list:
    return items[: opts.limit] if opts.limit else items


def classification_data(data, opts, need_train: bool = False, need_names: bool = False) -> ClassificationData:
    """SSV2 lists or Kinetics / UCF101 / HMDB51 split lists (``format`` ssv2 or kinetics; auto: by the
    explicit list's suffix, ``.tsv`` meaning a split list, else by which official names exist)."""
    data = Path(data)
    if not data.is_dir():
        raise MetadataError(data, None, "--data must be the dataset's metadata directory")
    explicit = _given(data, opts.eval_list)
    if opts.format in ("ssv2", "kinetics"):
        names = SSV2 if opts.format == "ssv2" else KINETICS
    elif explicit is not None:
        names = KINETICS if explicit.suffix == ".tsv" else SSV2
    else:
        names = SSV2 if _find(data, SSV2["eval"]) else KINETICS
    eval_list = explicit or _find(data, names["eval"])
    if eval_list is None:
        raise MetadataError(data, None, f"no evaluation list: pass eval_list=... or add one of {', '.join(names['eval'])}")
    train_list = _given(data, opts.train_list) or _find(data, names["train"])
    if need_train and train_list is None:
        raise MetadataError(data, None, f"no training list: pass train_list=... or add one of {', '.join(names['train'])}")
    label_file = _given(data, opts.labels) or _find(data, names["labels"]) or _find(eval_list.parent, SSV2["labels"] + KINETICS["labels"])
    classes = formats.read_class_names(label_file) if label_file else None
    if need_names and classes is None:
        raise MetadataError(data, None, "no class names: pass labels=... (labels.json / label2id.json: name -> id)")

    def read(path: Path) -> list[VideoItem]:
        if names is KINETICS:
            return formats.read_split_list(path, {n: i for i, n in enumerate(classes)} if classes else None)
        return formats.read_ssv2_list(path, len(classes) if classes else None)

    files = {"eval_list": str(eval_list), "train_list": str(train_list) if train_list else None,
             "labels": str(label_file) if label_file else None}
    train = _limit(read(train_list), opts) if need_train else None
    return ClassificationData(_limit(read(eval_list), opts), train, classes, video_root(data, opts), files)


def mc_data(data, opts) -> tuple[list[ChoiceItem], Path, dict]:
    """SSV2 multiple-choice items from a jsonl; without one, from SSV2 lists + class names, every class
    name (``_`` read as a space) being an option of every clip, as SSV2-MC's 174 templates are."""
    data = Path(data)
    jsonl = _given(data, opts.eval_list) if opts.eval_list.endswith(".jsonl") else _find(data, MC)
    if jsonl is not None:
        return _limit(formats.read_mc_jsonl(jsonl), opts), video_root(data, opts), {"mc": str(jsonl)}
    cls = classification_data(data, opts, need_names=True)
    options = tuple(name.replace("_", " ") for name in cls.classes)
    items = [ChoiceItem(it.video, options, it.label, it.where) for it in cls.eval]
    files = {**cls.files, "mc": "derived: every class name is an option"}
    return items, cls.video_root, files


def retrieval_data(data, opts) -> tuple[RetrievalSet, Path, dict]:
    """MSR-VTT (1k-A), DiDeMo or LSMDC captions (``format`` auto, msrvtt, didemo or lsmdc)."""
    data = Path(data)
    kinds = [opts.format] if opts.format in RETRIEVAL else list(RETRIEVAL)
    explicit = _given(data, opts.eval_list)
    for kind in kinds:
        if explicit is not None and opts.format == "auto":
            kind = {".json": "msrvtt", ".txt": "msrvtt", ".csv": "lsmdc"}.get(explicit.suffix, "didemo")
        if kind == "msrvtt":
            annotations = _find(data, RETRIEVAL["msrvtt"])
            if annotations is None:
                if opts.format == "msrvtt":
                    raise MetadataError(data, None, "no MSR_VTT.json")
                continue
            test = explicit if explicit is not None and explicit.suffix == ".txt" else _find(data, MSRVTT_TEST)
            if test is None:
                raise MetadataError(data, None, "no MSR-VTT test list: pass eval_list=val_list_jsfusion.txt")
            index = _given(data, opts.caption_index) or _find(data, MSRVTT_CAPTION_INDEX)
            captions = formats.read_msrvtt(annotations, test, index)
            root = video_root(data, opts)
            if not opts.video_root and (root / "all").is_dir():
                root = root / "all"  # Frozen's videos/all/<id>.mp4
            files = {"annotations": str(annotations), "eval_list": str(test), "caption_index": str(index) if index else None}
        else:
            path = explicit or _find(data, RETRIEVAL[kind])
            if path is None:
                continue
            captions = formats.read_didemo(path) if kind == "didemo" else formats.read_lsmdc(path)
            root, files = video_root(data, opts), {"eval_list": str(path)}
        return _limit_retrieval(captions, opts), root, {"format": kind, **files}
    raise MetadataError(data, None, "no retrieval metadata: MSR_VTT.json + val_list_jsfusion.txt, DiDeMo_test.tsv or "
                                    "LSMDC16_challenge_1000_publictect.csv (or eval_list=... format=...)")


def _limit_retrieval(captions: RetrievalSet, opts) -> RetrievalSet:
    if not opts.limit or len(captions.videos) <= opts.limit:
        return captions
    out = RetrievalSet(note=captions.note)
    for text, v in zip(captions.texts, captions.text_video):
        if v < opts.limit:
            out.add(captions.videos[v], text, captions.video_where[v])
    return out
