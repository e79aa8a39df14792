"""Typed run configuration: dataclasses loaded from YAML, with dotted ``key=value`` overrides.

One source of truth per fact: the number of windows K, frames per window, the image size and the mask
ratio live in :class:`SampleConfig` and are read by the data side and the model side alike (the official
code defines the mask ratio twice, in the model constructor and the data config, and breaks when they
differ). The patch grid is derived from it by :meth:`Config.patch_grid`.

Every error is a :class:`ConfigError` whose message is one line naming the key path, e.g.
``model.vdeo.depth: unknown key; did you mean model.video.depth?``.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Literal, Optional

import yaml

from tvts.errors import UserError


class ConfigError(UserError):
    """A configuration problem; ``str(err)`` is one line that names the key and what to do."""

    label = "config error"


def _f(default, lo=None, hi=None, *, lo_open=False):
    """A dataclass field with an allowed range ``[lo, hi]`` (``(lo, hi]`` when ``lo_open``)."""
    meta = {"range": (lo, hi, lo_open)}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


# ViT sizes as data: one encoder implementation, many sizes (timm / open_clip naming); ``atto``, ``nano`` and
# ``micro`` are ours, for CPU demos and scaling-law smoke grids.
# name: (width, depth, heads)
VIT_SIZES: dict[str, tuple[int, int, int]] = {
    "atto": (64, 2, 2),
    "nano": (128, 4, 4),
    "micro": (192, 6, 4),
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
    "huge": (1280, 32, 16),
}


def resolve_vit(video_cfg) -> tuple[int, int, int]:
    """(width, depth, heads) for a :class:`VideoConfig`; explicit non-zero fields win."""
    base = VIT_SIZES.get(video_cfg.size, (0, 0, 0))
    width = video_cfg.width or base[0]
    depth = video_cfg.depth or base[1]
    heads = video_cfg.heads or base[2]
    return width, depth, heads


# ----------------------------------------------------------------------------------------------
# Shared by data and model
# ----------------------------------------------------------------------------------------------
@dataclass
class SampleConfig:
    """What one training sample is. The data pipeline and the model both read these fields."""

    num_windows: int = _f(4, 1, 16)  # K: consecutive windows cut from one video; transcripts to sort
    frames_per_window: int = _f(4, 1, 64)  # frames = K * frames_per_window (official: v1 4 -> 16, v2 3 -> 12)
    image_size: int = _f(224, 16, 1024)  # square crop side in pixels
    mask_ratio: float = _f(0.75, 0.0, 0.99)  # fraction of patches dropped on transcript samples in training
    mask: Literal["random", "tube"] = "random"  # random: own subset per temporal slot (v1); tube: same set every frame (v2)
    caption_frames: int = _f(4, 1, 64)  # frames of a caption (VTC-only) sample (official: v1 4, v2 12)
    caption_mask_ratio: float = _f(0.0, 0.0, 0.99)

    @property
    def frames(self) -> int:
        return self.num_windows * self.frames_per_window


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------
@dataclass
class VideoConfig:
    family: Literal["v1", "v2"] = "v1"  # v1: joint space-time (TVTS); v2: divided space-time (TVTSv2)
    size: str = "base"  # a key of VIT_SIZES
    width: int = _f(0, 0, 8192)  # 0: from `size`
    depth: int = _f(0, 0, 256)
    heads: int = _f(0, 0, 128)
    mlp_ratio: float = _f(4.0, 0.5, 16.0)
    patch_size: int = _f(16, 2, 64)
    tubelet: int = _f(2, 1, 8)  # frames per temporal slot (v1: 2; v2: 1)
    activation: Literal["gelu", "quick_gelu"] = "gelu"
    norm_eps: float = _f(1e-6, 0.0, 1e-2, lo_open=True)
    output_dim: int = _f(0, 0, 8192)  # v2: CLIP's `proj` (width -> output_dim) after ln_post; 0: none (v1)
    temporal_embed_std: Optional[float] = None  # None: official init (v1 zeros, v2 width**-0.5); demo uses 1.0
    grad_checkpointing: bool = False  # activation checkpointing of every block


@dataclass
class TextConfig:
    kind: Literal["hf", "clip"] = "hf"
    # hf: any Hugging Face transformers encoder in a local directory; "minilm" = the offline all-MiniLM-L6-v2
    path: str = "minilm"
    pooling: Literal["cls", "mean"] = "mean"
    max_length: int = _f(50, 4, 1024)  # hf tokeniser truncation (official v1: 50); clip uses context_length
    frozen: bool = False  # every text weight frozen (the CPU demo); v2 freezes only `frozen_layers`
    cache: bool = False  # frozen only: keep each transcript's embedding, computed once
    # clip: a CLIP text transformer with OpenAI/OpenCLIP parameter names
    width: int = _f(512, 8, 8192)
    layers: int = _f(12, 1, 128)
    heads: int = _f(8, 1, 128)
    vocab_size: int = _f(49408, 1, 1 << 20)
    context_length: int = _f(77, 4, 1024)
    output_dim: int = _f(512, 1, 8192)
    activation: Literal["gelu", "quick_gelu"] = "quick_gelu"
    frozen_layers: int = _f(0, 0, 128)  # v2: blocks [0, frozen_layers) frozen (B: 9 of 12, H: 18 of 24)


@dataclass
class SortConfig:
    depth: int = _f(2, 1, 32)
    heads: int = _f(12, 1, 128)
    mlp_ratio: float = _f(4.0, 0.5, 16.0)
    # How transcript vectors enter the sorter. none: as the text tower gives them (official);
    # center_l2: minus a running mean, then L2-normalised (frozen sentence embeddings are anisotropic).
    transcript_norm: Literal["none", "center_l2"] = "none"
    # Which video tokens the sorter sees. normed: CLS + visible patches after the final norm (+ v2 proj);
    # patches_unnormed: patches only, proj but no ln_post (the official H/14 code, a quirk).
    video_tokens: Literal["normed", "patches_unnormed"] = "normed"


@dataclass
class VTCConfig:
    # linear: v1 heads (video Linear(width->embed_dim), text ReLU+Linear(text_dim->embed_dim));
    # none: both towers already end in a projection (v2, CLIP's proj / text_projection).
    projection: Literal["linear", "none"] = "linear"
    embed_dim: int = _f(256, 1, 8192)
    temperature: float = _f(0.05, 0.0, 10.0, lo_open=True)  # fixed, not learned


@dataclass
class ModelConfig:
    video: VideoConfig = field(default_factory=VideoConfig)
    text: TextConfig = field(default_factory=TextConfig)
    sort: SortConfig = field(default_factory=SortConfig)
    vtc: VTCConfig = field(default_factory=VTCConfig)
    sort_weight: float = _f(2.0, 0.0, 100.0)
    vtc_weight: float = _f(1.0, 0.0, 100.0)
    # Reproduce the official code's quirks: temporal_embedding trains in the pretrained (1e-7) group.
    compat: bool = False
    # Weights at step 0 (tvts/models/init.py): a file in our layout (launch/convert.py or launch/export.py
    # output), or a released file in init_format (openai-clip, openclip, mae, tvtsv2, tvts-v1), converted at
    # start; "none": from scratch on purpose; "": no init. A checkpoint to resume from always wins.
    init: str = ""
    init_format: str = ""
    init_allow_missing: List[str] = _f([])  # fnmatch patterns of model keys the file may lack, e.g. "text.*"


# ----------------------------------------------------------------------------------------------
# Optimisation
# ----------------------------------------------------------------------------------------------
@dataclass
class OptimConfig:
    # uniform: one lr for everything (v1). degeneration_free: TVTSv2 groups (frozen shallow text blocks,
    # pretrained weights at lr_pretrained, new modules at lr).
    groups: Literal["uniform", "degeneration_free"] = "uniform"
    lr: float = _f(1e-4, 0.0, 10.0)
    lr_pretrained: float = _f(1e-7, 0.0, 10.0)
    weight_decay: float = _f(0.0, 0.0, 10.0)  # never applied to biases and norm weights
    betas: List[float] = _f([0.9, 0.999])
    eps: float = _f(1e-6, 0.0, 1.0, lo_open=True)
    schedule: Literal["step", "cosine", "constant"] = "step"
    warmup_steps: int = _f(0, 0, 10**9)
    decay_at: List[float] = _f([])  # step schedule: fractions of the run after which lr *= decay_factor
    decay_factor: float = _f(0.1, 0.0, 1.0)
    min_lr_ratio: float = _f(0.0, 0.0, 1.0)  # cosine floor, as a fraction of each group's lr
    grad_clip: float = _f(0.0, 0.0, 1e6)  # 0: off (the official code does not clip)


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------
@dataclass
class DataConfig:
    train: List[str] = _f([])  # transcript (sort + VTC) shard sets: paths, globs or brace patterns
    captions: List[str] = _f([])  # caption (VTC-only) shard sets
    val: List[str] = _f([])
    mix: Literal["alternate", "interleave"] = "alternate"  # alternate: one optimizer step per dataset (official v2)
    caption_ratio: float = _f(0.5, 0.0, 1.0)  # interleave: fraction of steps that are caption steps
    decoder: Literal["auto", "pyav", "dali"] = "auto"
    # decoder=dali: batches decoded ahead of the training step in a background thread (decode overlaps compute);
    # 0: decoded in the training thread, synchronously
    dali_prefetch: int = _f(2, 0, 64)
    # loader worker processes per rank; -1: sized for the device (tvts.data.loader.resolve_workers): 2 on CPU, on a GPU
    # the cores of this rank's share of the machine less one, at most 8 (a v1 B/16 step eats ~7 cores of decode)
    num_workers: int = _f(-1, -1, 256)
    shuffle_buffer: int = _f(1000, 0, 10**7)
    resize_short: int = _f(268, 16, 4096)  # short side before the crop (official: int(224 * 1.2))
    normalize: Literal["imagenet", "clip"] = "imagenet"  # the official code uses ImageNet stats even for CLIP
    window_min_s: float = _f(3.0, 0.1, 600.0)
    window_max_s: float = _f(5.0, 0.1, 600.0)
    gap_s: float = _f(1.0, 0.0, 600.0)
    min_words: int = _f(1, 0, 1000)  # windows whose transcript has fewer words are not used
    synthetic: bool = False  # build the synthetic narrated corpus under `root` when it is missing
    # with synthetic: train on unlimited procedural clips rendered in the loader workers (tvts.data.stream),
    # never the same clip twice; the corpus then only supplies the held-out shards and the downstream set
    synthetic_stream: bool = False
    # > 0: each loader worker keeps the decoded uint8 frames of the clips it has seen (LRU, this many MiB)
    # and picks frames from them instead of decoding again: for small corpora revisited every epoch
    decoded_cache_mb: int = _f(0, 0, 1 << 20)
    # remote shards (http(s)://, s3://, gs://, pipe:): a read that stalls this long fails; a transient failure
    # (reset, timeout, 5xx) is retried this many times, waiting io_backoff_s, then twice as long, ...; a shard
    # still unreadable is skipped and counted (data/shard_errors)
    io_timeout_s: float = _f(60.0, 0.0, 3600.0, lo_open=True)
    io_retries: int = _f(3, 0, 100)
    io_backoff_s: float = _f(1.0, 0.0, 600.0)
    root: str = "data/demo"


# ----------------------------------------------------------------------------------------------
# Training engine
# ----------------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    run_dir: str = "runs/{name}"
    steps: int = _f(1000, 1, 10**9)
    micro_batch: int = _f(2, 1, 1 << 16)  # clips per rank per forward
    grad_accum: int = _f(1, 1, 1 << 16)
    strategy: Literal["single", "ddp", "fsdp", "zero1", "zero2", "zero3"] = "single"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    compile: bool = False
    attention: Literal["auto", "triton", "flash_attn", "xformers", "sdpa", "math"] = "auto"
    log_every: int = _f(10, 1, 10**9)
    ckpt_every: int = _f(500, 1, 10**9)
    keep_last: int = _f(2, 1, 1000)
    eval_every: int = _f(0, 0, 10**9)
    # stop this run after this step (the evaluation due at it, if any, then a checkpoint), the schedule still spanning
    # train.steps:
    # one slice of a time-limited job; running again without it (or with a later one) goes on. 0: run to train.steps
    stop_at: int = _f(0, 0, 10**9)
    max_nonfinite: int = _f(5, 1, 10**6)  # this many non-finite losses in a row abort the run (with a checkpoint)
    threads: int = _f(0, 0, 1024)  # torch intra-op threads per rank; 0: leave torch's default
    deepspeed_config: str = ""  # a user DeepSpeed JSON whose keys override the generated one


@dataclass
class Config:
    name: str = "run"
    seed: int = _f(0, 0, 2**63 - 1)
    sample: SampleConfig = field(default_factory=SampleConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    # -- derived facts, computed in one place ---------------------------------------------------
    def video_dims(self) -> tuple[int, int, int]:
        """(width, depth, heads) of the video encoder after applying the size registry."""
        return resolve_vit(self.model.video)

    def patch_grid(self, frames: Optional[int] = None, mask_ratio: Optional[float] = None) -> "PatchGrid":
        """The token grid of a clip, shared by the data side (keep indices) and the model.

        ``frames`` defaults to the transcript sample's frame count, ``mask_ratio`` to its mask ratio.
        """
        v = self.model.video
        frames = self.sample.frames if frames is None else frames
        ratio = self.sample.mask_ratio if mask_ratio is None else mask_ratio
        side = self.sample.image_size // v.patch_size
        per_slot = side * side
        slots = max(1, frames // v.tubelet)
        # official v1: int(196 * (1 - 0.75)) = 49; v2: int(N * (1 - ratio)) kept per frame
        keep = max(1, int(round(per_slot * (1.0 - ratio), 6)))
        return PatchGrid(slots=slots, patches_per_slot=per_slot, keep=keep, side=side)


@dataclass(frozen=True)
class PatchGrid:
    slots: int  # temporal slots (frames // tubelet)
    patches_per_slot: int  # spatial patches per slot
    keep: int  # visible patches per slot after masking
    side: int  # patches per image side

    @property
    def visible_tokens(self) -> int:
        """Patch tokens the encoder sees (CLS excluded)."""
        return self.slots * self.keep


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------
def load(path: Optional[str | Path] = None, overrides: Optional[List[str]] = None) -> Config:
    """Build a :class:`Config` from a YAML file (optional) and ``key=value`` overrides.

    Raises :class:`ConfigError` (one line, naming the key) on an unknown key, a wrong type, an
    out-of-range value or an inconsistent combination; nothing else has run at that point.
    """
    raw: dict = {}
    if path is not None:
        p = Path(path)
        if p.is_dir():
            raise ConfigError(f"{path}: is a directory; pass a YAML file such as configs/demo.yaml")
        if not p.is_file():
            raise ConfigError(f"{path}: config file not found; pass a YAML file such as configs/demo.yaml")
        try:
            text = p.read_text()
        except (OSError, UnicodeDecodeError) as err:  # unreadable, or a binary file (a checkpoint) given as --config
            raise ConfigError(f"{path}: cannot read it as text ({getattr(err, 'strerror', None) or err}); "
                              f"pass a YAML file such as configs/demo.yaml") from None
        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{path}{where}: not valid YAML ({getattr(err, 'problem', err)})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections (name, model, data, ...)")
    for item in overrides or []:
        key, sep, value = item.partition("=")
        key = key.strip().lstrip("-")
        if not sep or not key:
            raise ConfigError(f"{item}: an override must look like section.key=value")
        try:
            parsed = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError as err:
            parsed = _plain_list(key, value, err)
        _set_dotted(raw, key, parsed)
    cfg = build_section(Config, raw, "")
    validate(cfg)
    return cfg


def _set_dotted(raw: dict, key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            node[part] = nxt
        node = nxt
    node[parts[-1]] = value


def _all_paths(cls, prefix: str = "") -> List[str]:
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        out.append(path)
        if dataclasses.is_dataclass(hints[f.name]):
            out.extend(_all_paths(hints[f.name], path + "."))
    return out


def _plain_list(key: str, value: str, err: yaml.YAMLError) -> list[str]:
    """An override YAML cannot read: ``[a, b]`` whose items hold brace patterns (``dir/shard-{000..003}.tar``,
    ``{a,b}``: a YAML mapping to the parser) is the list of its items, split at commas outside braces;
    anything else is an error, never a silent string."""
    text = value.strip()
    if not (text.startswith("[") and text.endswith("]")):
        raise ConfigError(f"{key}: cannot read {value!r} ({getattr(err, 'problem', None) or err}); quote it, "
                          f"e.g. {key}='\"{value}\"'") from None
    items, depth, current = [], 0, ""
    for char in text[1:-1]:
        depth += {"{": 1, "}": -1}.get(char, 0)
        if char == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += char
    items.append(current)
    items = [item.strip().strip("'\"") for item in items]
    if depth != 0 or not all(items):
        raise ConfigError(f"{key}: cannot read {value!r} as a list (unbalanced braces or an empty item)")
    return items


def _unknown(path: str) -> ConfigError:
    candidates = _all_paths(Config)
    near = difflib.get_close_matches(path, candidates, n=1, cutoff=0.6)
    if not near:  # compare the last component within the same section too
        leaf = path.rsplit(".", 1)[-1]
        near = [c for c in candidates if c.rsplit(".", 1)[-1] in difflib.get_close_matches(leaf, [c.rsplit(".", 1)[-1] for c in candidates], n=1, cutoff=0.75)][:1]
    hint = f"; did you mean {near[0]}?" if near else "; see configs/demo.yaml for the valid keys"
    return ConfigError(f"{path}: unknown key{hint}")


def build_section(cls, raw: Any, prefix: str = ""):
    """A typed config dataclass (``Config`` or any section, or another recipe built of them) from a raw mapping,
    with the checks of :func:`load`: unknown keys with a suggestion, types, ranges; ``prefix`` names the keys."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or '<top>'}: expected a mapping of keys, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            value = raw[key]
            path = f"{prefix}{key}"
            while isinstance(value, dict) and len(value) == 1:  # name the full leaf path: model.vdeo.depth
                (sub, value), = value.items()
                path = f"{path}.{sub}"
            raise _unknown(path)
    kwargs = {}
    for name, f in names.items():
        path = f"{prefix}{name}"
        typ = hints[name]
        if dataclasses.is_dataclass(typ):
            kwargs[name] = build_section(typ, raw.get(name) or {}, path + ".")
            continue
        if name not in raw:
            continue
        value = _coerce(raw[name], typ, path)
        lo, hi, lo_open = f.metadata.get("range", (None, None, False))
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                if not math.isfinite(v) or (lo is not None and (v <= lo if lo_open else v < lo)) or (hi is not None and v > hi):
                    bound = f"{'(' if lo_open else '['}{lo}, {hi}]"
                    raise ConfigError(f"{path}: {v} is out of range {bound}")
        kwargs[name] = value
    return cls(**kwargs)


def _coerce(value: Any, typ, path: str):
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if origin is typing.Union:  # Optional[X]
        if value is None:
            return None
        inner = [a for a in args if a is not type(None)][0]
        return _coerce(value, inner, path)
    if origin is Literal:
        if value not in args:
            near = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
            hint = f"; did you mean {near[0]}?" if near else ""
            raise ConfigError(f"{path}: {value!r} is not one of {', '.join(map(str, args))}{hint}")
        return value
    if origin in (list, List):
        if not isinstance(value, (list, tuple)):
            if args and args[0] is str and isinstance(value, str):
                return [value]
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{path}[{i}]") for i, v in enumerate(value)] if args else list(value)
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true or false, got {value!r}")
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if isinstance(value, str):
                try:
                    return float(value)  # YAML 1.1 reads "1e-4" as a string
                except ValueError:
                    pass
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if typ is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{path}: unsupported field type {typ}")  # pragma: no cover - a bug in this file


def validate(cfg: Config) -> None:
    """Cross-field checks; each raises a one-line :class:`ConfigError` naming the key."""
    v, s = cfg.model.video, cfg.sample
    if v.size not in VIT_SIZES and not (v.width and v.depth and v.heads):
        near = difflib.get_close_matches(v.size, list(VIT_SIZES), n=1)
        hint = f"; did you mean {near[0]}?" if near else f"; one of {', '.join(VIT_SIZES)}"
        raise ConfigError(f"model.video.size: unknown size {v.size!r}{hint}")
    width, _, heads = cfg.video_dims()
    if width % heads:
        raise ConfigError(f"model.video.heads: {heads} does not divide the width {width}")
    if s.image_size % v.patch_size:
        raise ConfigError(f"sample.image_size: {s.image_size} is not a multiple of model.video.patch_size={v.patch_size}")
    if v.family == "v2":
        if v.tubelet != 1:
            raise ConfigError("model.video.tubelet: the v2 (divided space-time) encoder embeds each frame on its own; set tubelet=1")
        if s.mask != "tube" and s.mask_ratio > 0:
            raise ConfigError("sample.mask: the v2 encoder pairs the n-th kept patch of every frame, so it needs mask=tube")
    for name, frames in (("sample.frames_per_window", s.frames), ("sample.caption_frames", s.caption_frames)):
        if frames % v.tubelet:
            raise ConfigError(f"{name}: {frames} frames is not a multiple of model.video.tubelet={v.tubelet}")
    if s.caption_frames // v.tubelet > s.frames // v.tubelet:
        raise ConfigError(f"sample.caption_frames: {s.caption_frames} exceeds the transcript sample's {s.frames} frames (the temporal embedding's length)")
    d_sort = v.output_dim or width
    if d_sort % cfg.model.sort.heads:
        raise ConfigError(f"model.sort.heads: {cfg.model.sort.heads} does not divide the sorter width {d_sort}")
    t = cfg.model.text
    if t.kind == "clip":
        if t.width % t.heads:
            raise ConfigError(f"model.text.heads: {t.heads} does not divide model.text.width={t.width}")
        if t.frozen_layers > t.layers:
            raise ConfigError(f"model.text.frozen_layers: {t.frozen_layers} exceeds model.text.layers={t.layers}")
    if t.cache and not t.frozen:
        raise ConfigError("model.text.cache: caching embeddings needs a frozen text tower; set model.text.frozen=true")
    if cfg.model.vtc.projection == "none":
        if not v.output_dim:
            raise ConfigError("model.vtc.projection: 'none' needs the video encoder's own projection; set model.video.output_dim")
        text_dim = t.output_dim if t.kind == "clip" else None
        if text_dim is not None and text_dim != v.output_dim:
            raise ConfigError(f"model.text.output_dim: {text_dim} must equal model.video.output_dim={v.output_dim} when model.vtc.projection=none")
    if cfg.model.sort.video_tokens == "patches_unnormed" and v.family != "v2":
        raise ConfigError("model.sort.video_tokens: patches_unnormed reproduces the official v2 H/14 code; it needs model.video.family=v2")
    if len(cfg.optim.betas) != 2 or not all(0 <= b < 1 for b in cfg.optim.betas):
        raise ConfigError(f"optim.betas: expected two numbers in [0, 1), got {cfg.optim.betas}")
    if any(not 0 < x < 1 for x in cfg.optim.decay_at):
        raise ConfigError(f"optim.decay_at: expected fractions of the run in (0, 1), got {cfg.optim.decay_at}")
    if cfg.data.synthetic_stream and not cfg.data.synthetic:
        raise ConfigError("data.synthetic_stream: the procedural stream is the synthetic corpus's; set data.synthetic=true")
    if cfg.data.synthetic_stream and (cfg.data.train or cfg.data.captions):
        key = "data.train" if cfg.data.train else "data.captions"
        raise ConfigError(f"{key}: the synthetic stream (data.synthetic_stream=true, the demo's default) trains on "
                          f"procedural clips and would ignore these shards; add data.synthetic_stream=false")
    if cfg.data.window_min_s > cfg.data.window_max_s:
        raise ConfigError(f"data.window_min_s: {cfg.data.window_min_s} exceeds data.window_max_s={cfg.data.window_max_s}")


def to_dict(cfg: Config) -> dict:
    """A plain dict (YAML/JSON-ready) of the whole config."""
    return dataclasses.asdict(cfg)
