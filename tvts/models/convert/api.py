"""Checkpoint conversion entry points: import (``to_ours``), export (``to_official``), files end to end, loading.

Import (``to_ours``) turns a file in a foreign key layout into a state dict under :class:`TVTSModel` names
(``video.*``, ``text.*``, ``sorter.*``, ``video_head.*``, ``text_head.*``); export (``to_official``) writes
ours back in the layout the official evaluation scripts load. Every mapping is a table of :class:`Rule` s
(one per key family, ``{i}`` = block index, ``*`` = the rest of the key), checked against a target model
built from the config (on the meta device, so nothing is allocated):

- strict by default: a key of the target the file should fill but does not (missing), a key of the file
  with no place in the target (unexpected) and a shape that differs are all reported by name, and the
  conversion stops. ``allow_missing`` patterns (fnmatch, e.g. ``text.*``) relax missing keys on purpose.
- keys no file of that format can hold (TVTSv2's new temporal attention when starting from CLIP,
  v1's ``temporal_embed`` from MAE) are not missing: they keep the model's own init, as the official code
  (load with ``strict=False``) leaves them.
- floating tensors become float32 on import (OpenAI's TorchScript archives hold fp16; the official code
  calls ``.float()``).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

import torch
import torch.nn as nn

from tvts.models.convert.files import read_checkpoint, strip_wrappers, write_checkpoint
from tvts.models.convert.rules import (FORMATS, ConversionError, Format, export_formats, get_format, is_format,
                                       map_key, matches)

Tensor = torch.Tensor

# what else a file may be, to say what was found instead of what was expected
_KNOWN = (
    (("video.patch_embed",), "a tvts-engine checkpoint (already our layout: video.patch_embed)"),
    (("video_model.patch_embed.proj.weight",), "a TVTS v1 checkpoint (video_model.patch_embed.proj.weight)"),
    (("video_model.conv1.weight",), "a TVTSv2 checkpoint (video_model.conv1.weight)"),
    (("conv1.weight", "transformer.resblocks.0.timeattn.qkv.weight"),
     "a bare TVTSv2 video encoder (conv1.weight, timeattn)"),
    (("visual.layer1.0.conv1.weight",), "a CLIP ResNet (visual.layer1.*); only ViT towers are supported"),
    (("visual.conv1.weight",), "an OpenAI CLIP / OpenCLIP ViT state dict (visual.conv1.weight)"),
    (("vision_model.embeddings.patch_embedding.weight",),
     "a Hugging Face transformers CLIPModel (vision_model.*); use the OpenCLIP file open_clip_pytorch_model.bin "
     "instead"),
    (("patch_embed.proj.weight", "temporal_embed"),
     "a bare TVTS v1 video encoder (patch_embed.proj.weight, temporal_embed)"),
    (("patch_embed.proj.weight", "blocks.0.attn.q_bias"), "a VideoMAE-style checkpoint (blocks.N.attn.q_bias)"),
    (("patch_embed.proj.weight", "blocks.0.attn.qkv.weight"),
     "a timm / ImageMAE ViT state dict (patch_embed.proj.weight)"),
)


def describe(state_dict: Mapping[str, Tensor]) -> str:
    """What a flat state dict looks like, in words (for error messages)."""
    if not state_dict:
        return "no tensors"
    for keys, words in _KNOWN:
        if all(k in state_dict for k in keys):
            return words
    first = ", ".join(list(state_dict)[:3])
    return f"{len(state_dict)} tensors with none of those keys (first: {first})"


# ----------------------------------------------------------------------------------------------
# Reports and key listing
# ----------------------------------------------------------------------------------------------
def _collapse(keys: Iterable[str]) -> list[str]:
    """Group keys that differ only in block indices: ``video.blocks.N.attn.qkv.weight (x12)``."""
    groups: dict[str, list[str]] = {}
    for k in keys:
        groups.setdefault(re.sub(r"(?<=\.)\d+(?=\.)", "N", k), []).append(k)
    return [f"{g} (x{len(ks)})" if len(ks) > 1 else ks[0] for g, ks in groups.items()]


def names(keys: Iterable[str], limit: int = 8) -> str:
    """A short, one-line listing of key names."""
    parts = _collapse(sorted(keys))
    more = f", ... ({len(parts) - limit} more)" if len(parts) > limit else ""
    return ", ".join(parts[:limit]) + more


@dataclass
class Report:
    """What a conversion did. Key lists are in the destination's names unless said otherwise."""

    source: str  # format name
    direction: str  # "import" | "export"
    loaded: list[str] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)  # our keys left at the model's init by design (import)
    allowed_missing: list[str] = field(default_factory=list)  # missing keys relaxed by allow_missing
    ignored: list[str] = field(default_factory=list)  # their keys dropped on purpose (import)
    absent_optional: list[str] = field(default_factory=list)  # optional scopes the file does not hold

    def lines(self) -> list[str]:
        out = [f"{self.direction} {self.source}: {len(self.loaded)} tensors"]
        if self.fresh:
            out.append(f"  kept at their fresh init (no {self.source} file has them): {names(self.fresh)}")
        if self.absent_optional:
            out.append(f"  not in the file, kept at their fresh init: "
                       f"{', '.join(p + '*' for p in self.absent_optional)}")
        if self.allowed_missing:
            out.append(f"  missing, allowed by --allow-missing: {names(self.allowed_missing)}")
        if self.ignored:
            what = (f"left out of the official {self.source} layout" if self.direction == "export"
                    else "dropped from the file on purpose")
            out.append(f"  {what}: {names(self.ignored)}")
        return out


# ----------------------------------------------------------------------------------------------
# Mapping
# ----------------------------------------------------------------------------------------------
def _family(model: nn.Module) -> str:
    return model.video.family


def _text_kind(model: nn.Module) -> Optional[str]:
    text = getattr(model, "text", None)
    if text is None:
        return None
    if hasattr(text, "hf_model"):
        return "hf"
    if hasattr(text, "token_embedding"):
        return "clip"
    return type(text).__name__


def _check_model(fmt: Format, model: nn.Module) -> None:
    if _family(model) != fmt.family:
        kind = "joint space-time (v1)" if fmt.family == "v1" else "divided space-time (v2)"
        raise ConversionError(f"format {fmt.name} fits a {kind} encoder, but the config has "
                              f"model.video.family={_family(model)}")
    if fmt.text is not None and any(s.startswith("text.") for s in fmt.scopes + fmt.export_scopes):
        kind = _text_kind(model)
        if kind != fmt.text:
            want = "kind: hf (DistilBERT)" if fmt.text == "hf" else "kind: clip"
            raise ConversionError(f"format {fmt.name} carries a text tower for model.text.{want}, but the config's "
                                  f"text tower is {kind}")


def _strip_bare(fmt: Format, sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A file holding the official encoder alone (no ``video_model.`` prefix): add the prefix."""
    if fmt.bare and not any(k.startswith("video_model.") for k in sd) and all(k in sd for k in fmt.bare):
        return {f"video_model.{k}": v for k, v in sd.items()}
    return dict(sd)


def to_ours(state_dict: Mapping[str, Tensor], fmt: str, model: nn.Module, allow_missing: Sequence[str] = (),
            source: str = "state dict") -> tuple[dict[str, Tensor], Report]:
    """Map a flat state dict in format ``fmt`` onto ``model``'s names (a :class:`TVTSModel`, meta is fine).

    Returns (our state dict holding only what the file provides, float32; report). Raises
    :class:`ConversionError` (one line) on a file of another format, missing or unexpected keys, or shapes
    that differ from ``model`` (built from the config: check model.video.* and sample.image_size).
    """
    f = get_format(fmt)
    _check_model(f, model)
    sd = _strip_bare(f, strip_wrappers(state_dict))
    if not is_format(f, sd):
        raise ConversionError(f"{source}: --from {f.name} expects {f.expects}; found {describe(sd)}")
    target = {k: v.shape for k, v in model.state_dict().items()}
    report = Report(f.name, "import")
    out: dict[str, Tensor] = {}
    unexpected, bad_shapes = [], []
    for key, tensor in sd.items():
        mapped = map_key(key, f.rules, ours=False)
        if mapped is None:
            (report.ignored if matches(key, f.ignore) else unexpected).append(key)
            continue
        name, rule = mapped
        if name not in target:
            unexpected.append(key)
            continue
        try:
            value = rule.to_ours(tensor, target[name]) if rule.to_ours else tensor
        except (RuntimeError, ConversionError) as err:
            bad_shapes.append(f"{key} {tuple(tensor.shape)} ({err})")
            continue
        if value.shape != target[name]:
            bad_shapes.append(f"{key} {tuple(tensor.shape)} -> {name} needs {tuple(target[name])}")
            continue
        out[name] = value.float() if value.is_floating_point() and value.dtype != torch.float32 else value
    if bad_shapes:
        raise ConversionError(f"{source}: {len(bad_shapes)} tensors do not fit the model built from the config "
                              f"(check model.video.*, model.text.* and sample.image_size): {'; '.join(bad_shapes[:4])}"
                              + (" ..." if len(bad_shapes) > 4 else ""))
    if unexpected:
        raise ConversionError(f"{source}: {len(unexpected)} unexpected keys for --from {f.name} and this config: "
                              f"{names(unexpected)}")
    for prefix in f.optional:
        if not any(k.startswith(prefix) for k in out):
            report.absent_optional.append(prefix)
    scopes = f.scopes + tuple(p for p in f.optional if p not in report.absent_optional)
    missing = []
    for key in target:
        if not key.startswith(scopes) or key in out:
            continue
        if matches(key, f.new):
            report.fresh.append(key)
        elif matches(key, allow_missing):
            report.allowed_missing.append(key)
        else:
            missing.append(key)
    if missing:
        hint = (" (a file with the video encoder only: add --allow-missing 'text.*')"
                if all(k.startswith("text.") for k in missing) else "")
        raise ConversionError(f"{source}: {len(missing)} keys of the model are missing from the file: "
                              f"{names(missing)}{hint}")
    report.loaded = sorted(out)
    return out, report


def to_official(state_dict: Mapping[str, Tensor], fmt: str, model: nn.Module, allow_missing: Sequence[str] = (),
                source: str = "state dict") -> tuple[dict[str, Tensor], Report]:
    """Map our state dict (``model``'s names) to the official layout ``fmt`` (tvts-v1 or tvtsv2).

    Returns (official flat state dict with the DDP ``module.`` prefix of official checkpoints; report).
    The keys are those the official code loads with ``strict=True``: v1 the whole training model (its
    downstream scripts read ``module.video_model.*`` from it), v2 the released layout (video + text, no
    sorter). Our keys with no official name (e.g. ``sorter.transcript_proj`` when the text width differs)
    are an error unless matched by ``allow_missing`` (left out of the file).
    """
    f = get_format(fmt)
    if not f.export_scopes:
        raise ConversionError(f"--to {fmt}: export writes one of {', '.join(export_formats())}")
    _check_model(f, model)
    state_dict = strip_wrappers(state_dict)
    everything = model.state_dict()
    target = {k: v.shape for k, v in everything.items() if k.startswith(f.export_scopes)}
    if not any(k.startswith("video.") for k in state_dict):
        raise ConversionError(f"{source}: --to {f.name} expects a tvts-engine checkpoint (video.*); "
                              f"found {describe(state_dict)}")
    unexpected = [k for k in state_dict if k not in everything]
    if unexpected:
        raise ConversionError(f"{source}: {len(unexpected)} keys are not in the model built from the config: "
                              f"{names(unexpected)}")
    report = Report(f.name, "export")
    report.ignored = [k for k in state_dict if k not in target]  # e.g. the sorter: released v2 files have none
    missing = [k for k in target if k not in state_dict and not matches(k, allow_missing)]
    wrong = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(s)}" for k, s in target.items()
             if k in state_dict and state_dict[k].shape != s]
    if missing:
        raise ConversionError(f"{source}: {len(missing)} keys of the model built from the config are missing: "
                              f"{names(missing)}")
    if wrong:
        raise ConversionError(f"{source}: shapes differ from the model built from the config: {'; '.join(wrong[:4])}")
    out: dict[str, Tensor] = {}
    unmapped = []
    for key in target:
        if key not in state_dict:
            report.allowed_missing.append(key)
            continue
        mapped = map_key(key, f.rules, ours=True)
        if mapped is None:
            if matches(key, allow_missing):
                report.allowed_missing.append(key)
            else:
                unmapped.append(key)
            continue
        name, rule = mapped
        out["module." + name] = rule.to_theirs(state_dict[key]) if rule.to_theirs else state_dict[key]
    if unmapped:
        raise ConversionError(f"{source}: {len(unmapped)} keys have no name in the official {f.name} layout "
                              f"(leave them out with --allow-missing): {names(unmapped)}")
    report.loaded = sorted(out)
    return out, report


# ----------------------------------------------------------------------------------------------
# Files end to end, and loading a converted file into a model
# ----------------------------------------------------------------------------------------------
def build_target(cfg) -> nn.Module:
    """The model of ``cfg`` on the meta device: names and shapes, no memory, no text weights read."""
    from tvts.models.model import TVTSModel

    with torch.device("meta"):
        return TVTSModel(cfg, pretrained_text=False)


def convert_file(fmt: str, src: str | Path, model: nn.Module, dst: str | Path,
                 allow_missing: Sequence[str] = ()) -> Report:
    """Import ``src`` (format ``fmt``) into our layout for ``model`` and write it to ``dst``."""
    raw, _ = read_checkpoint(src)
    sd, report = to_ours(raw, fmt, model, allow_missing, source=str(src))
    f = FORMATS[fmt]
    scopes = f.scopes + tuple(p for p in f.optional if p not in report.absent_optional)
    write_checkpoint(sd, dst, {"tvts_layout": "tvts-engine", "source_format": fmt, "source": Path(src).name,
                               "scopes": json.dumps(list(scopes)), "fresh": json.dumps(list(f.new)),
                               "allow_missing": json.dumps(list(allow_missing))})
    return report


def export_file(fmt: str, src: str | Path, model: nn.Module, dst: str | Path,
                allow_missing: Sequence[str] = ()) -> Report:
    """Export our checkpoint ``src`` to the official layout ``fmt`` at ``dst``."""
    raw, _ = read_checkpoint(src)
    sd, report = to_official(raw, fmt, model, allow_missing, source=str(src))
    write_checkpoint(sd, dst, {"tvts_layout": fmt, "exported_by": "tvts-engine launch/convert.py"})
    return report


def load_pretrained(model: nn.Module, path: str | Path, allow_missing: Sequence[str] = ()) -> Report:
    """Load a file written by :func:`convert_file` (or any our-layout state dict) into ``model``.

    Strict within the file's scopes (``video.``, ``text.``, ...): every key there must be in the file,
    except those the source format never has (kept at their init) and ``allow_missing``. Keys outside the
    scopes (e.g. the sorter after a CLIP import) keep the model's init. Unexpected keys and shape
    differences are errors.
    """
    sd, meta = read_checkpoint(path)
    target = model.state_dict()
    scopes = (tuple(json.loads(meta["scopes"])) if "scopes" in meta
              else tuple(sorted({k.split(".")[0] + "." for k in sd})))
    relaxed = json.loads(meta.get("fresh", "[]")) + json.loads(meta.get("allow_missing", "[]")) + list(allow_missing)
    unexpected = [k for k in sd if k not in target]
    wrong = [f"{k} {tuple(sd[k].shape)} vs {tuple(target[k].shape)}" for k in sd
             if k in target and sd[k].shape != target[k].shape]
    missing = [k for k in target if k.startswith(scopes) and k not in sd and not matches(k, relaxed)]
    if unexpected or wrong or missing:
        parts = [f"unexpected: {names(unexpected)}" if unexpected else "",
                 f"shapes: {'; '.join(wrong[:4])}" if wrong else "",
                 f"missing: {names(missing)}" if missing else ""]
        raise ConversionError(f"{path}: does not fit the model ({'; '.join(p for p in parts if p)})")
    model.load_state_dict(sd, strict=False)
    report = Report(meta.get("source_format", "tvts-engine"), "load", loaded=sorted(sd))
    report.fresh = [k for k in target if k.startswith(scopes) and k not in sd]
    return report


def help_table() -> str:
    """Every format with its example command (for ``launch/convert.py --help`` and docs)."""
    rows = [f"  {name:<12} {f.expects}\n  {'':<12} python launch/convert.py {f.example}" for name, f in FORMATS.items()]
    return "\n".join(rows)
