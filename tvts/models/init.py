"""``model.init``: the weights a run starts from at step 0, checked against the model before any is used.

A file in our layout (what ``launch/convert.py`` writes, or a part that ``launch/export.py`` writes from a
run: ``video_encoder.safetensors`` holds the encoder without its ``video.`` prefix, its metadata says so),
or a released file in a known format (``model.init_format``: ``openai-clip``, ``openclip``, ``mae``,
``tvtsv2``, ``tvts-v1``), converted in memory. The parts the file holds are loaded; everything else keeps
the model's own init and is listed by pattern (temporal attention, the sorter, ...). Strict within the
file's scopes (a convert-written file names them): a missing key (unless the source format never has it,
or ``model.init_allow_missing`` matches it), an unexpected key or a shape that differs is one line.

Tensors are read lazily (:class:`TensorSource`): a sharded strategy copies each rank's rows only
(:func:`tvts.engine.sharded.stream_pretrained`), so no rank holds the whole file.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

import torch

from tvts.config import ConfigError
from tvts.models.convert import (FORMATS, ConversionError, build_target, names, read_checkpoint, to_ours,
                                 write_checkpoint)
from tvts.models.convert.files import is_safetensors, strip_wrappers
from tvts.models.convert.rules import matches

NONE = "none"  # model.init=none: from scratch, on purpose


class TensorSource:
    """Tensors in our layout by name: ``keys()``, ``shape(k)``, ``rows(k, start, stop)``, ``tensor(k)``."""

    def keys(self) -> set[str]:
        raise NotImplementedError

    def shape(self, key: str) -> tuple[int, ...]:
        raise NotImplementedError

    def rows(self, key: str, start: int, stop: int) -> torch.Tensor:
        return self.tensor(key)[start:stop]

    def tensor(self, key: str) -> torch.Tensor:
        raise NotImplementedError


class DictSource(TensorSource):
    def __init__(self, state: Mapping[str, torch.Tensor]):
        self.state = dict(state)

    def keys(self) -> set[str]:
        return set(self.state)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self.state[key].shape)

    def tensor(self, key: str) -> torch.Tensor:
        return self.state[key]


class SafetensorsSource(TensorSource):
    """A memory-mapped safetensors file; ``prefix`` is put before its names (an exported part)."""

    def __init__(self, path: str | Path, prefix: str = ""):
        from safetensors import safe_open

        self.file = safe_open(str(path), framework="pt")
        self.prefix = prefix
        self._names = {prefix + k: k for k in self.file.keys()}

    def keys(self) -> set[str]:
        return set(self._names)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self.file.get_slice(self._names[key]).get_shape())

    def rows(self, key: str, start: int, stop: int) -> torch.Tensor:
        return self.file.get_slice(self._names[key])[start:stop]

    def tensor(self, key: str) -> torch.Tensor:
        return self.file.get_tensor(self._names[key])


@dataclass
class InitPlan:
    """What a run starts from: the checked source and what it holds and leaves."""

    path: str
    format: str  # "tvts-engine" (our layout) or the source format converted in memory
    source: TensorSource
    sha256: str
    loaded: list[str] = field(default_factory=list)  # our names the file fills
    kept: list[str] = field(default_factory=list)  # patterns of what keeps the model's own init

    def line(self) -> str:
        kept = ", ".join(self.kept) if self.kept else "nothing"
        return (f"model.init: {len(self.loaded)} tensors from {self.path} ({self.format}, sha256 {self.sha256[:12]}); "
                f"kept their own init: {kept}")

    def record(self) -> dict:
        return {"init/path": self.path, "init/format": self.format, "init/sha256": self.sha256,
                "init/loaded": len(self.loaded), "init/kept": self.kept}


def wanted(cfg) -> bool:
    """Whether ``cfg`` asks for initial weights (``model.init`` set and not ``none``)."""
    return bool(cfg.model.init) and cfg.model.init != NONE


def convert_hint(cfg) -> str:
    """The command that makes ``model.init`` for this recipe's family (one line)."""
    v = cfg.model.video
    fmt = "mae" if v.family == "v1" else ("openclip" if v.size.startswith("h") else "openai-clip")
    source = {"mae": "mae_pretrain_vit_base.pth", "openclip": "open_clip_pytorch_model.bin", "openai-clip": "ViT-B-16.pt"}[fmt]
    return (f"python launch/convert.py --from {fmt} --input {source} --config <this recipe> --output {cfg.model.init} "
            f"(or model.init={cfg.model.init} model.init_format={fmt} to convert at start)")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(16 << 20):
            digest.update(block)
    return digest.hexdigest()


def target_shapes(cfg) -> dict[str, tuple[int, ...]]:
    """Every tensor of the model of ``cfg`` (names and full shapes; built on the meta device)."""
    return {k: tuple(v.shape) for k, v in build_target(cfg).state_dict().items()}


def open_init(cfg, convert_to: Optional[Path] = None) -> InitPlan:
    """Check ``model.init`` against the model of ``cfg`` and open it for reading.

    With ``model.init_format``, the file is converted to our layout; ``convert_to`` then writes the result
    there and reads it back lazily (so that sharded ranks need not each hold it), else it stays in memory.
    Raises :class:`ConfigError` (missing file, unknown format) or :class:`ConversionError` (a file that
    does not fit), each one line naming the key or the file."""
    m = cfg.model
    path = Path(m.init)
    if not path.is_file():
        raise ConfigError(f"model.init: {path}: no such file; make it with {convert_hint(cfg)}, or set model.init=none "
                          f"to train from scratch")
    shapes = target_shapes(cfg)
    if m.init_format:
        if m.init_format not in FORMATS:
            raise ConfigError(f"model.init_format: {m.init_format!r} is not one of {', '.join(FORMATS)} "
                              f"(leave it empty for a file in our layout)")
        try:
            raw, _ = read_checkpoint(path)
            state, _ = to_ours(raw, m.init_format, build_target(cfg), m.init_allow_missing, source=str(path))
        except ConversionError as err:  # name the key, and the file when the message does not
            text = str(err) if str(err).startswith(str(path)) else f"{path}: {err}"
            raise ConversionError(f"model.init: {text}") from None
        if convert_to is not None:
            write_checkpoint(state, convert_to, {"tvts_layout": "tvts-engine", "source_format": m.init_format})
            source: TensorSource = SafetensorsSource(convert_to)
        else:
            source = DictSource(state)
        fmt = m.init_format
    else:
        source, meta = _open_ours(path)
        _check(source, meta, shapes, m.init_allow_missing, str(path))
        fmt = "tvts-engine"
    loaded = sorted(source.keys())
    return InitPlan(str(path), fmt, source, file_sha256(path), loaded, kept_patterns(set(shapes) - set(loaded), shapes))


def open_converted(cfg, path: Path) -> InitPlan:
    """The file rank 0 wrote with :func:`open_init` (``convert_to``), opened by the other ranks."""
    source = SafetensorsSource(path)
    shapes = target_shapes(cfg)
    loaded = sorted(source.keys())
    return InitPlan(cfg.model.init, cfg.model.init_format, source, "", loaded, kept_patterns(set(shapes) - set(loaded), shapes))


def _open_ours(path: Path) -> tuple[TensorSource, dict]:
    if is_safetensors(path):
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        # a part written by launch/export.py holds one module without its prefix
        prefix = {"video": "video.", "text": "text."}.get(meta.get("part", ""), "")
        return SafetensorsSource(path, prefix), meta
    state, meta = read_checkpoint(path)
    return DictSource(strip_wrappers(state)), meta


def _check(source: TensorSource, meta: dict, shapes: Mapping[str, tuple], allow_missing: Sequence[str], where: str) -> None:
    """Strict within the file's scopes (as :func:`tvts.models.convert.load_pretrained`); one line."""
    keys = source.keys()
    if meta.get("part") == "heads" or "scopes" not in meta:
        scopes = tuple(sorted({k.split(".")[0] + "." for k in keys}))
    else:
        scopes = tuple(json.loads(meta["scopes"]))
    relaxed = json.loads(meta.get("fresh", "[]")) + json.loads(meta.get("allow_missing", "[]")) + list(allow_missing)
    unexpected = sorted(k for k in keys if k not in shapes)
    wrong = [f"{k} {source.shape(k)} vs {shapes[k]}" for k in sorted(keys) if k in shapes and source.shape(k) != shapes[k]]
    missing = [k for k in shapes if k.startswith(scopes) and k not in keys and not matches(k, relaxed)]
    if unexpected or wrong or missing:
        parts = [f"unexpected: {names(unexpected)}" if unexpected else "",
                 f"shapes: {'; '.join(wrong[:4])}" if wrong else "",
                 f"missing: {names(missing)} (model.init_allow_missing relaxes this)" if missing else ""]
        raise ConversionError(f"model.init: {where}: does not fit the model of this config "
                              f"({'; '.join(p for p in parts if p)})")


def kept_patterns(kept: Iterable[str], shapes: Mapping[str, tuple]) -> list[str]:
    """What keeps its own init, by pattern: a whole top-level module as ``sorter.*``, block parts as
    ``video.blocks.*.time_attn.*``, other tensors by name."""
    kept = set(kept)
    out = set()
    for key in kept:
        parts = key.split(".")
        top = parts[0]
        if all(k in kept for k in shapes if k.split(".")[0] == top):
            out.add(f"{top}.*")
        elif len(parts) > 3 and parts[1] == "blocks":
            out.add(f"{top}.blocks.*.{parts[3]}.*")
        else:
            out.add(key)
    return sorted(out)


@torch.no_grad()
def copy_into(module: torch.nn.Module, source: TensorSource) -> None:
    """Copy every tensor of ``source`` into ``module`` (whole tensors: an unsharded model). ``module``'s
    names must be ours (unwrapped)."""
    targets = dict(module.named_parameters())
    targets.update(dict(module.named_buffers()))
    for key in source.keys():
        targets[key].copy_(source.tensor(key))
