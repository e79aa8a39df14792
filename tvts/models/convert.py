"""Checkpoint interop: official TVTS / TVTSv2 files, OpenAI CLIP, OpenCLIP and ImageMAE, both ways.

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

Files are read from local paths only: PyTorch pickles (``weights_only`` first; official training
checkpoints also pickle their ``parse_config.ConfigParser``, which is replaced by an inert stub, never
imported or run), safetensors, TorchScript archives (OpenAI CLIP's ``ViT-B-32.pt``), and run checkpoint
directories of this engine (``model_optim.pt``). A file of the wrong kind stops with one line naming the
format that was expected and what was found.
"""
from __future__ import annotations

import fnmatch
import functools
import json
import pickle
import re
import struct
import types
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional, Sequence

import torch
import torch.nn as nn

from tvts.errors import UserError

Tensor = torch.Tensor


class ConversionError(UserError):
    """A conversion that cannot go on; ``str(err)`` is one line."""

    label = "convert error"


# ----------------------------------------------------------------------------------------------
# Key rules
# ----------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _pattern(template: str) -> re.Pattern:
    body = re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)")
    if body.endswith(r"\*"):
        body = body[:-2] + r"(?P<rest>.+)"
    return re.compile(body)


def _fill(template: str, match: re.Match) -> str:
    groups = match.groupdict()
    out = template.replace("{i}", groups.get("i") or "")
    return out[:-1] + groups["rest"] if out.endswith("*") else out


@dataclass(frozen=True)
class Rule:
    """``theirs`` <-> ``ours`` for one key family, with the tensor changes each way.

    ``to_ours(tensor, target_shape)`` and ``to_theirs(tensor)`` default to the identity.
    """

    theirs: str
    ours: str
    to_ours: Optional[Callable[[Tensor, torch.Size], Tensor]] = None
    to_theirs: Optional[Callable[[Tensor], Tensor]] = None

    def under(self, their_prefix: str, our_prefix: str) -> "Rule":
        return Rule(their_prefix + self.theirs, our_prefix + self.ours, self.to_ours, self.to_theirs)


def _under(their_prefix: str, our_prefix: str, rules: Iterable[Rule]) -> tuple[Rule, ...]:
    return tuple(r.under(their_prefix, our_prefix) for r in rules)


def _same(prefix_theirs: str, prefix_ours: str) -> Rule:
    return Rule(prefix_theirs + "*", prefix_ours + "*")


# tensor changes ------------------------------------------------------------------------------
def _to_tubelet(t: Tensor, shape: torch.Size) -> Tensor:
    """A 2D patch kernel (D, 3, p, p) -> (D, 3, tubelet, p, p), repeated over time and NOT divided by the
    tubelet, as the official v1 code inflates MAE (``unsqueeze(2).repeat(1, 1, 2, 1, 1)``): a static clip
    then embeds to ``tubelet x`` the image embedding (+ bias once). Tubelet 1 (CLIP -> v2) is an unsqueeze.
    3D kernels pass through."""
    if t.dim() == 4 and len(shape) == 5:
        return t.unsqueeze(2).repeat(1, 1, shape[2], 1, 1)
    return t


def _to_conv2d(t: Tensor) -> Tensor:
    if t.dim() != 5 or t.shape[2] != 1:
        raise ConversionError(f"the official v2 layout has a 2D patch kernel; ours is {tuple(t.shape)} (tubelet must be 1)")
    return t[:, :, 0]


def _cls_in(t: Tensor, shape: torch.Size) -> Tensor:  # CLIP class_embedding (D,) -> cls_token (1, 1, D)
    return t.reshape(1, 1, -1)


def _cls_out(t: Tensor) -> Tensor:
    return t.reshape(-1)


def _batch_in(t: Tensor, shape: torch.Size) -> Tensor:  # (L, D) -> (1, L, D)
    return t.unsqueeze(0)


def _batch_out(t: Tensor) -> Tensor:
    return t[0]


# encoders --------------------------------------------------------------------------------------
# official v1 VisionTransformer (v1/model/video_encoder.py) and timm/MAE ViT: the same names, ours too,
# except the tubelet kernel. qkv is one Linear with one bias (no VideoMAE q_bias / v_bias).
V1_ENCODER = (
    Rule("patch_embed.proj.weight", "patch_embed", _to_tubelet),
    Rule("patch_embed.proj.bias", "patch_bias"),
    Rule("cls_token", "cls_token"),
    Rule("pos_embed", "pos_embed"),
    Rule("temporal_embed", "temporal_embed"),
    _same("blocks.{i}.", "blocks.{i}."),
    _same("norm.", "norm."),
)

# CLIP visual tower names (OpenAI CLIP, OpenCLIP, and the official v2 encoder that copies them)
_CLIP_LIKE = (
    Rule("conv1.weight", "patch_embed", _to_tubelet, _to_conv2d),
    Rule("class_embedding", "cls_token", _cls_in, _cls_out),
    Rule("positional_embedding", "pos_embed", _batch_in, _batch_out),
    _same("ln_pre.", "norm_pre."),
    _same("transformer.resblocks.{i}.ln_1.", "blocks.{i}.norm1."),
    _same("transformer.resblocks.{i}.ln_2.", "blocks.{i}.norm2."),
    Rule("transformer.resblocks.{i}.mlp.c_fc.*", "blocks.{i}.mlp.fc1.*"),
    Rule("transformer.resblocks.{i}.mlp.c_proj.*", "blocks.{i}.mlp.fc2.*"),
    _same("ln_post.", "norm."),
    Rule("proj", "proj"),
)
# nn.MultiheadAttention stacks q, k, v in one (3D, D) in_proj: the same row order as our fused qkv Linear
# (output viewed as (3, heads, head_dim)), so the weights are copied as they are.
CLIP_VISUAL = _CLIP_LIKE + (
    Rule("transformer.resblocks.{i}.attn.in_proj_weight", "blocks.{i}.attn.qkv.weight"),
    Rule("transformer.resblocks.{i}.attn.in_proj_bias", "blocks.{i}.attn.qkv.bias"),
    Rule("transformer.resblocks.{i}.attn.out_proj.*", "blocks.{i}.attn.proj.*"),
)
# official v2 (v2/model/video_encoder_ViT_*.py): CLIP names with attn in_proj/out_proj renamed qkv/proj,
# plus timeattn (ours: time_attn), ln_3 (ours: time_norm) and temporal_embedding (T, D)
V2_ENCODER = _CLIP_LIKE + (
    Rule("temporal_embedding", "temporal_embed", _batch_in, _batch_out),
    Rule("transformer.resblocks.{i}.attn.*", "blocks.{i}.attn.*"),
    Rule("transformer.resblocks.{i}.timeattn.*", "blocks.{i}.time_attn.*"),
    _same("transformer.resblocks.{i}.ln_3.", "blocks.{i}.time_norm."),
)

# text towers -----------------------------------------------------------------------------------
CLIP_TEXT = (  # top-level keys of a CLIP state dict; our CLIPTextTransformer keeps OpenAI's names
    Rule("token_embedding.weight", "token_embedding.weight"),
    Rule("positional_embedding", "positional_embedding"),
    _same("transformer.resblocks.", "transformer.resblocks."),
    _same("ln_final.", "ln_final."),
    Rule("text_projection", "text_projection"),
)
# official v2 model: self.text_model = clip.transformer, self.text_token_embedding = clip.token_embedding, ...
V2_TEXT = (
    _same("text_model.", "transformer."),
    Rule("text_token_embedding.weight", "token_embedding.weight"),
    Rule("text_positional_embedding", "positional_embedding"),
    _same("text_ln_final.", "ln_final."),
    Rule("text_projection", "text_projection"),
)


# official SortTransformer (v1 and v2 alike): exactly these members; ours may add transcript_proj (a text
# width other than the sorter's) and the center_l2 running mean, which have no official name
SORTER = (
    Rule("type_embed", "type_embed"),
    _same("blocks.{i}.", "blocks.{i}."),
    _same("norm.", "norm."),
    _same("head.", "head."),
)


# ----------------------------------------------------------------------------------------------
# Formats
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Format:
    """One source layout.

    ``scopes``: our key prefixes the file must fill; ``optional``: prefixes filled all or nothing (the
    released TVTSv2 files are stripped of the sorter); ``new``: our keys no such file holds, left at the
    model's own init; ``ignore``: their keys dropped on purpose; ``signature``: their keys that identify
    the format; ``bare``: keys of a file holding the encoder alone, without the ``video_model.`` prefix.
    """

    name: str
    family: str  # v1 | v2: the video encoder it fits
    text: Optional[str]  # hf | clip | None: the text tower it carries
    rules: tuple[Rule, ...]
    scopes: tuple[str, ...]
    expects: str
    example: str
    signature: tuple[str, ...]
    optional: tuple[str, ...] = ()
    new: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    bare: tuple[str, ...] = ()
    export_scopes: tuple[str, ...] = ()  # what --to writes; empty: not an export target


_CLIP_COMMON = dict(
    family="v2", text="clip",
    rules=_under("visual.", "video.", CLIP_VISUAL) + _under("", "text.", CLIP_TEXT),
    scopes=("video.", "text."),
    signature=("visual.conv1.weight", "visual.class_embedding", "visual.transformer.resblocks.0.attn.in_proj_weight"),
    # the official v2 code leaves timeattn, ln_3 and temporal_embedding out of the CLIP load
    new=("video.temporal_embed", "video.blocks.*.time_attn.*", "video.blocks.*.time_norm.*"),
    ignore=("logit_scale", "logit_bias", "input_resolution", "context_length", "vocab_size"),
)

FORMATS: dict[str, Format] = {
    "tvts-v1": Format(
        name="tvts-v1", family="v1", text="hf",
        rules=(_under("video_model.", "video.", V1_ENCODER)
               + (_same("text_model.", "text.hf_model."), _same("txt_proj.", "text_head."),
                  _same("vid_proj.0.", "video_head."))
               + _under("pred_model.", "sorter.", SORTER)),
        scopes=("video.", "text.", "video_head.", "text_head.", "sorter."),
        expects="a TVTS v1 checkpoint ('state_dict' with video_model.*, text_model.*, txt_proj.*, vid_proj.*, pred_model.*)",
        example="--from tvts-v1 --input checkpoint-epoch20.pth --config configs/tvts_v1_vit_b16.yaml --output init/tvts_v1.safetensors",
        signature=("video_model.patch_embed.proj.weight", "video_model.temporal_embed"),
        ignore=("text_model.embeddings.position_ids",),  # an arange buffer some transformers versions save
        bare=("patch_embed.proj.weight", "temporal_embed", "blocks.0.attn.qkv.weight"),
        export_scopes=("video.", "text.", "video_head.", "text_head.", "sorter."),
    ),
    "tvtsv2": Format(
        name="tvtsv2", family="v2", text="clip",
        rules=_under("video_model.", "video.", V2_ENCODER) + _under("", "text.", V2_TEXT) + _under("pred_model.", "sorter.", SORTER),
        scopes=("video.", "text."),
        optional=("sorter.",),
        expects="a TVTSv2 checkpoint ('state_dict' with video_model.conv1.weight, video_model.temporal_embedding, text_model.*)",
        example="--from tvtsv2 --input TVTSv2_ViT_B_16.pth --config configs/tvtsv2_vit_b16.yaml --output init/tvtsv2_b16.safetensors",
        signature=("video_model.conv1.weight", "video_model.temporal_embedding"),
        bare=("conv1.weight", "temporal_embedding", "transformer.resblocks.0.timeattn.qkv.weight"),
        # the released TVTSv2_*.pth layout: the official downstream models (no pred_model) load it strictly
        export_scopes=("video.", "text."),
    ),
    "openai-clip": Format(
        name="openai-clip",
        expects="an OpenAI CLIP ViT file (TorchScript archive or state dict with visual.conv1.weight, visual.transformer.resblocks.N.attn.in_proj_weight, transformer.*)",
        example="--from openai-clip --input ViT-B-32.pt --config configs/tvtsv2_vit_b32.yaml --output init/clip_b32.safetensors",
        **_CLIP_COMMON,
    ),
    "openclip": Format(
        name="openclip",
        expects="an OpenCLIP ViT state dict (.bin/.pt/.safetensors with visual.conv1.weight, visual.transformer.resblocks.N.attn.in_proj_weight, transformer.*)",
        example="--from openclip --input open_clip_pytorch_model.bin --config configs/tvtsv2_vit_h14.yaml --output init/openclip_h14.safetensors",
        **_CLIP_COMMON,
    ),
    "mae": Format(
        name="mae", family="v1", text=None,
        rules=_under("", "video.", V1_ENCODER),
        scopes=("video.",),
        expects="an ImageMAE ViT checkpoint ('model' with patch_embed.proj.weight (D, 3, p, p), blocks.N.attn.qkv.weight)",
        example="--from mae --input mae_pretrain_vit_base.pth --config configs/tvts_v1_vit_b16.yaml --output init/mae_b16.safetensors",
        signature=("patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "cls_token"),
        new=("video.temporal_embed",),  # official v1: zero, not in MAE
        ignore=("mask_token", "decoder_*"),  # a full MAE model (with its decoder) holds the same encoder
    ),
}
EXPORT_FORMATS = tuple(name for name, f in FORMATS.items() if f.export_scopes)

# what else a file may be, to say what was found instead of what was expected
_KNOWN = (
    (("video.patch_embed",), "a tvts-engine checkpoint (already our layout: video.patch_embed)"),
    (("video_model.patch_embed.proj.weight",), "a TVTS v1 checkpoint (video_model.patch_embed.proj.weight)"),
    (("video_model.conv1.weight",), "a TVTSv2 checkpoint (video_model.conv1.weight)"),
    (("conv1.weight", "transformer.resblocks.0.timeattn.qkv.weight"), "a bare TVTSv2 video encoder (conv1.weight, timeattn)"),
    (("visual.layer1.0.conv1.weight",), "a CLIP ResNet (visual.layer1.*); only ViT towers are supported"),
    (("visual.conv1.weight",), "an OpenAI CLIP / OpenCLIP ViT state dict (visual.conv1.weight)"),
    (("vision_model.embeddings.patch_embedding.weight",),
     "a Hugging Face transformers CLIPModel (vision_model.*); use the OpenCLIP file open_clip_pytorch_model.bin instead"),
    (("patch_embed.proj.weight", "temporal_embed"), "a bare TVTS v1 video encoder (patch_embed.proj.weight, temporal_embed)"),
    (("patch_embed.proj.weight", "blocks.0.attn.q_bias"), "a VideoMAE-style checkpoint (blocks.N.attn.q_bias)"),
    (("patch_embed.proj.weight", "blocks.0.attn.qkv.weight"), "a timm / ImageMAE ViT state dict (patch_embed.proj.weight)"),
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


def _is_format(fmt: Format, sd: Mapping[str, Tensor]) -> bool:
    if not all(k in sd for k in fmt.signature):
        return False
    if fmt.name == "mae":  # a 2D kernel: an image ViT, not a video one
        return sd["patch_embed.proj.weight"].dim() == 4
    return True


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
            out.append(f"  not in the file, kept at their fresh init: {', '.join(p + '*' for p in self.absent_optional)}")
        if self.allowed_missing:
            out.append(f"  missing, allowed by --allow-missing: {names(self.allowed_missing)}")
        if self.ignored:
            what = f"left out of the official {self.source} layout" if self.direction == "export" else "dropped from the file on purpose"
            out.append(f"  {what}: {names(self.ignored)}")
        return out


def _matches(key: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)


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
        raise ConversionError(f"format {fmt.name} fits a {kind} encoder, but the config has model.video.family={_family(model)}")
    if fmt.text is not None and any(s.startswith("text.") for s in fmt.scopes + fmt.export_scopes):
        kind = _text_kind(model)
        if kind != fmt.text:
            want = "kind: hf (DistilBERT)" if fmt.text == "hf" else "kind: clip"
            raise ConversionError(f"format {fmt.name} carries a text tower for model.text.{want}, but the config's text tower is {kind}")


def _map_key(key: str, rules: Sequence[Rule], ours: bool) -> Optional[tuple[str, Rule]]:
    """The other side's name of ``key`` and the rule used (``ours=True``: key is ours)."""
    for rule in rules:
        src, dst = (rule.ours, rule.theirs) if ours else (rule.theirs, rule.ours)
        m = _pattern(src).fullmatch(key)
        if m:
            return _fill(dst, m), rule
    return None


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
    f = _format(fmt)
    _check_model(f, model)
    sd = _strip_bare(f, _strip_wrappers(state_dict))
    if not _is_format(f, sd):
        raise ConversionError(f"{source}: --from {f.name} expects {f.expects}; found {describe(sd)}")
    target = {k: v.shape for k, v in model.state_dict().items()}
    report = Report(f.name, "import")
    out: dict[str, Tensor] = {}
    unexpected, bad_shapes = [], []
    for key, tensor in sd.items():
        mapped = _map_key(key, f.rules, ours=False)
        if mapped is None:
            (report.ignored if _matches(key, f.ignore) else unexpected).append(key)
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
        raise ConversionError(f"{source}: {len(unexpected)} unexpected keys for --from {f.name} and this config: {names(unexpected)}")
    for prefix in f.optional:
        if not any(k.startswith(prefix) for k in out):
            report.absent_optional.append(prefix)
    scopes = f.scopes + tuple(p for p in f.optional if p not in report.absent_optional)
    missing = []
    for key in target:
        if not key.startswith(scopes) or key in out:
            continue
        if _matches(key, f.new):
            report.fresh.append(key)
        elif _matches(key, allow_missing):
            report.allowed_missing.append(key)
        else:
            missing.append(key)
    if missing:
        hint = " (a file with the video encoder only: add --allow-missing 'text.*')" if all(k.startswith("text.") for k in missing) else ""
        raise ConversionError(f"{source}: {len(missing)} keys of the model are missing from the file: {names(missing)}{hint}")
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
    f = _format(fmt)
    if not f.export_scopes:
        raise ConversionError(f"--to {fmt}: export writes one of {', '.join(EXPORT_FORMATS)}")
    _check_model(f, model)
    state_dict = _strip_wrappers(state_dict)
    everything = model.state_dict()
    target = {k: v.shape for k, v in everything.items() if k.startswith(f.export_scopes)}
    if not any(k.startswith("video.") for k in state_dict):
        raise ConversionError(f"{source}: --to {f.name} expects a tvts-engine checkpoint (video.*); found {describe(state_dict)}")
    unexpected = [k for k in state_dict if k not in everything]
    if unexpected:
        raise ConversionError(f"{source}: {len(unexpected)} keys are not in the model built from the config: {names(unexpected)}")
    report = Report(f.name, "export")
    report.ignored = [k for k in state_dict if k not in target]  # e.g. the sorter: released v2 files have none
    missing = [k for k in target if k not in state_dict and not _matches(k, allow_missing)]
    wrong = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(s)}" for k, s in target.items() if k in state_dict and state_dict[k].shape != s]
    if missing:
        raise ConversionError(f"{source}: {len(missing)} keys of the model built from the config are missing: {names(missing)}")
    if wrong:
        raise ConversionError(f"{source}: shapes differ from the model built from the config: {'; '.join(wrong[:4])}")
    out: dict[str, Tensor] = {}
    unmapped = []
    for key in target:
        if key not in state_dict:
            report.allowed_missing.append(key)
            continue
        mapped = _map_key(key, f.rules, ours=True)
        if mapped is None:
            if _matches(key, allow_missing):
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


def _format(name: str) -> Format:
    if name not in FORMATS:
        raise ConversionError(f"unknown format {name!r}: one of {', '.join(FORMATS)}")
    return FORMATS[name]


# ----------------------------------------------------------------------------------------------
# Reading and writing files
# ----------------------------------------------------------------------------------------------
class _Opaque:
    """Stand-in for a pickled object whose class is not a tensor container (the official checkpoints'
    ``parse_config.ConfigParser``, paths, loggers): keeps its arguments and state, runs nothing."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs, self.state, self.items = args, kwargs, None, []

    def __setstate__(self, state):
        self.state = state

    def __setitem__(self, key, value):
        self.items.append((key, value))

    def append(self, value):
        self.items.append(value)

    def extend(self, values):
        self.items.extend(values)


_SAFE_GLOBALS = {
    ("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor_v3"),
    ("torch._utils", "_rebuild_parameter"), ("torch._utils", "_rebuild_parameter_with_state"), ("torch", "Size"),
    ("torch", "device"), ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "slice"), ("builtins", "complex"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _StubUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _SAFE_GLOBALS or (module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)):
            return super().find_class(module, name)
        return type(name, (_Opaque,), {"__module__": module})


def _stub_pickle_module() -> types.ModuleType:
    mod = types.ModuleType("tvts_stub_pickle")
    mod.Unpickler = _StubUnpickler
    mod.load = lambda f, **kw: _StubUnpickler(f, **kw).load()
    return mod


def _torch_load(path: Path):
    mmap = zipfile.is_zipfile(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        if "weights_only" not in str(err) and "Weights only" not in str(err):
            raise
    # classes outside the weights-only allowlist (official checkpoints pickle their config object)
    return torch.load(path, map_location="cpu", weights_only=False, mmap=mmap, pickle_module=_stub_pickle_module())


def _is_safetensors(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(9)
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return head[8:9] == b"{" and 0 < n < path.stat().st_size


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in z.namelist())


def _unwrap(obj, where: str) -> dict[str, Tensor]:
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, Tensor) for v in obj.values()):
            return dict(obj)
        for key in ("state_dict", "model", "module"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, Tensor) for v in inner.values()):
                return dict(inner)
        top = ", ".join(map(str, list(obj)[:6]))
        raise ConversionError(f"{where}: no state dict inside (top-level keys: {top}); expected tensors or a 'state_dict' / 'model' entry")
    raise ConversionError(f"{where}: holds a {type(obj).__name__}, not a state dict")


def _strip_wrappers(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    from tvts.runtime import unwrapped_name  # DDP module., compile _orig_mod., checkpoint wrappers

    return {unwrapped_name(k): v for k, v in sd.items()}


def read_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """A local checkpoint as (flat state dict, metadata).

    Accepts safetensors, TorchScript archives (their ``state_dict()``), ``torch.save`` pickles (a state dict,
    or one under ``state_dict`` / ``model`` / ``module``) and a run checkpoint directory of this engine
    (``model_optim.pt``). DDP / compile prefixes are removed. Metadata: safetensors metadata, or the
    ``meta`` entry of a pickle written by :func:`write_checkpoint`.
    """
    p = Path(path)
    if p.is_dir():
        if (p / "model_optim.pt").is_file():
            p = p / "model_optim.pt"
        else:
            raise ConversionError(f"{path}: a directory without model_optim.pt (sharded fsdp/zero checkpoints: "
                                  "export a consolidated state dict first)")
    if not p.is_file():
        raise ConversionError(f"{path}: no such file")
    meta: dict[str, str] = {}
    try:
        if _is_safetensors(p):
            from safetensors import safe_open
            from safetensors.torch import load_file

            with safe_open(str(p), framework="pt") as fh:
                meta = dict(fh.metadata() or {})
            return _strip_wrappers(load_file(str(p), device="cpu")), meta
        if _is_torchscript(p):
            with warnings.catch_warnings():  # torch deprecates TorchScript; OpenAI's CLIP files are TorchScript
                warnings.simplefilter("ignore", DeprecationWarning)
                archive = torch.jit.load(str(p), map_location="cpu")
            return _strip_wrappers(dict(archive.state_dict())), meta
        obj = _torch_load(p)
    except ConversionError:
        raise
    except Exception as err:  # torch.load / safetensors / jit raise many types for a file that is not theirs
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise ConversionError(f"{path}: not a checkpoint that torch.load, safetensors or TorchScript can read ({first})") from err
    if isinstance(obj, Mapping) and isinstance(obj.get("meta"), Mapping):
        meta = {str(k): str(v) for k, v in obj["meta"].items()}
    return _strip_wrappers(_unwrap(obj, str(path))), meta


def write_checkpoint(state_dict: Mapping[str, Tensor], path: str | Path, meta: Optional[Mapping[str, str]] = None) -> Path:
    """``.safetensors``: the flat tensors + string metadata; anything else: ``torch.save({"state_dict": ...,
    "meta": ...})`` (the layout official loaders read with ``checkpoint['state_dict']``)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    meta = {str(k): str(v) for k, v in (meta or {}).items()}
    if p.suffix == ".safetensors":
        from safetensors.torch import save_file

        seen, tensors = set(), {}
        for k, v in state_dict.items():
            v = v.detach().contiguous()
            ptr = v.untyped_storage().data_ptr()
            tensors[k] = v.clone() if ptr in seen else v  # safetensors refuses tensors that share storage
            seen.add(ptr)
        save_file(tensors, str(p), metadata=meta)
    else:
        torch.save({"state_dict": dict(state_dict), "meta": meta}, p)
    return p


# ----------------------------------------------------------------------------------------------
# Files end to end, and loading a converted file into a model
# ----------------------------------------------------------------------------------------------
def build_target(cfg) -> nn.Module:
    """The model of ``cfg`` on the meta device: names and shapes, no memory, no text weights read."""
    from tvts.models.model import TVTSModel

    with torch.device("meta"):
        return TVTSModel(cfg, pretrained_text=False)


def convert_file(fmt: str, src: str | Path, model: nn.Module, dst: str | Path, allow_missing: Sequence[str] = ()) -> Report:
    """Import ``src`` (format ``fmt``) into our layout for ``model`` and write it to ``dst``."""
    raw, _ = read_checkpoint(src)
    sd, report = to_ours(raw, fmt, model, allow_missing, source=str(src))
    f = FORMATS[fmt]
    scopes = f.scopes + tuple(p for p in f.optional if p not in report.absent_optional)
    write_checkpoint(sd, dst, {"tvts_layout": "tvts-engine", "source_format": fmt, "source": Path(src).name,
                               "scopes": json.dumps(list(scopes)), "fresh": json.dumps(list(f.new)),
                               "allow_missing": json.dumps(list(allow_missing))})
    return report


def export_file(fmt: str, src: str | Path, model: nn.Module, dst: str | Path, allow_missing: Sequence[str] = ()) -> Report:
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
    scopes = tuple(json.loads(meta["scopes"])) if "scopes" in meta else tuple(sorted({k.split(".")[0] + "." for k in sd}))
    relaxed = json.loads(meta.get("fresh", "[]")) + json.loads(meta.get("allow_missing", "[]")) + list(allow_missing)
    unexpected = [k for k in sd if k not in target]
    wrong = [f"{k} {tuple(sd[k].shape)} vs {tuple(target[k].shape)}" for k in sd if k in target and sd[k].shape != target[k].shape]
    missing = [k for k in target if k.startswith(scopes) and k not in sd and not _matches(k, relaxed)]
    if unexpected or wrong or missing:
        parts = [f"unexpected: {names(unexpected)}" if unexpected else "", f"shapes: {'; '.join(wrong[:4])}" if wrong else "",
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


__all__ = ["ConversionError", "Rule", "Format", "FORMATS", "EXPORT_FORMATS", "Report", "describe", "names",
           "to_ours", "to_official", "read_checkpoint", "write_checkpoint", "build_target", "convert_file",
           "export_file", "load_pretrained", "help_table"]
