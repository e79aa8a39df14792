"""Evaluation settings: one typed dataclass, set from ``key=value`` strings (``launch/evaluate.py``).

Fields left at 0 / "" take their value from the model's own config, so a checkpoint is evaluated at
the frame count, crop and normalisation it was trained with unless told otherwise: ``frames`` from
``sample.frames`` (K x frames_per_window: v1 16, v2 12, as the official evaluations), the crop from
``sample.image_size``, the short side from ``data.resize_short`` (268 for 224 crops, as the official
val transform) and the statistics from ``data.normalize``.
"""
from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from typing import List, Literal, Optional

import yaml

from tvts.errors import UserError


class OptionError(UserError):
    """A bad ``key=value``; the message is one line naming the key."""


@dataclass
class EvalOptions:
    # -- clip preprocessing (features) --------------------------------------------------------------
    frames: int = 0  # M uniform frames (bin middles over the whole clip); 0: the config's sample.frames
    resize_short: int = 0  # short side before the centre crop; 0: the config's data.resize_short
    normalize: str = ""  # imagenet | clip; "": the config's data.normalize
    single_frame: bool = False  # the clip's middle frame repeated M times: a baseline without motion
    feature: Literal["auto", "cls", "embed"] = "auto"  # auto: cls for linear/v2v, embed for zero-shot tasks
    batch_size: int = 16
    workers: int = 0  # DataLoader processes decoding clips
    chunk_size: int = 512  # clips per feature file; finished files are skipped on a re-run
    device: str = "auto"  # auto: cuda when available
    threads: int = 0  # torch intra-op threads; 0: torch's default
    limit: int = 0  # > 0: only the first N items of every list (smoke runs; stated in the result)
    # -- data ---------------------------------------------------------------------------------------
    format: Literal["auto", "ssv2", "kinetics", "msrvtt", "didemo", "lsmdc", "mc"] = "auto"
    train_list: str = ""  # paths relative to --data unless absolute; "": found by name (docs/evaluation.md)
    eval_list: str = ""
    labels: str = ""  # labels.json / label2id.json (class name -> id)
    video_root: str = ""  # "": <data>/videos when it exists, else <data>
    caption_index: str = ""  # MSR-VTT: jsfusion_val_caption_idx.pkl or a JSON {video id: caption index}
    # -- linear probe -------------------------------------------------------------------------------
    wd_grid: List[float] = field(default_factory=lambda: [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0])
    holdout: float = 0.2  # fraction of train (per class) used to choose the weight decay
    max_iter: int = 1000  # L-BFGS iterations per fit
    seed: int = 0  # the held-out split
    # -- zero-shot ----------------------------------------------------------------------------------
    template: str = "a person {}"  # recognition prompt (official TVTSv2); class names with _ read as spaces
    dsl: bool = False  # retrieval: also report dual-softmax re-ranking (transductive: uses all queries)
    dsl_scale: float = 0.0  # softmax scale of DSL; 0: 1 / model.vtc.temperature (the trained logit scale)

    def resolved(self, cfg) -> "EvalOptions":
        """A copy with the config-derived defaults filled in."""
        out = dataclasses.replace(self, wd_grid=list(self.wd_grid))
        out.frames = self.frames or cfg.sample.frames
        out.resize_short = self.resize_short or cfg.data.resize_short
        out.normalize = self.normalize or cfg.data.normalize
        out.dsl_scale = self.dsl_scale or 1.0 / cfg.model.vtc.temperature
        tubelet = cfg.model.video.tubelet
        slots = cfg.sample.frames // tubelet
        if out.frames % tubelet or out.frames // tubelet > slots:
            raise OptionError(f"frames: {out.frames} must be a multiple of the tubelet ({tubelet}) and at most "
                              f"{slots * tubelet} (the temporal embedding's length)")
        from tvts.data.augment import NORMALIZE_STATS

        if out.normalize not in NORMALIZE_STATS:
            raise OptionError(f"normalize: {out.normalize!r} is not one of {', '.join(NORMALIZE_STATS)}")
        if not 0.0 < out.holdout < 1.0:
            raise OptionError(f"holdout: {out.holdout} must be a fraction in (0, 1)")
        if not (out.batch_size and out.chunk_size and out.max_iter and out.wd_grid):
            raise OptionError("batch_size, chunk_size, max_iter and wd_grid must be non-zero / non-empty")
        if out.resize_short < cfg.sample.image_size:
            raise OptionError(f"resize_short: {out.resize_short} is smaller than the model's crop "
                              f"sample.image_size={cfg.sample.image_size}")
        return out

    def protocol(self, cfg) -> dict:
        """What the features depend on, for the output and the feature-cache key."""
        return {"frames": self.frames, "sampling": "middle frame repeated" if self.single_frame else "bin middles",
                "resize_short": self.resize_short, "crop": cfg.sample.image_size, "crop_position": "centre",
                "normalize": self.normalize, "masking": "none", "views": 1, "limit": self.limit}


def parse_options(items: Optional[List[str]] = None, base: Optional[EvalOptions] = None) -> EvalOptions:
    """``["frames=12", "dsl=true", ...]`` -> :class:`EvalOptions`; OptionError names a bad key."""
    opts = dataclasses.replace(base) if base is not None else EvalOptions()
    hints = typing.get_type_hints(EvalOptions)
    names = [f.name for f in dataclasses.fields(EvalOptions)]
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip().lstrip("-")
        if not sep or not key:
            raise OptionError(f"{item}: an option must look like key=value")
        if key not in names:
            near = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean {near[0]}?" if near else f"; one of {', '.join(names)}"
            raise OptionError(f"{key}: unknown evaluation option{hint}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        setattr(opts, key, _coerce(key, value, hints[key], raw))
    return opts


def _coerce(key: str, value, typ, raw: str):
    origin = typing.get_origin(typ)
    if origin is Literal:
        if value not in typing.get_args(typ):
            raise OptionError(f"{key}: {raw!r} is not one of {', '.join(typing.get_args(typ))}")
        return value
    if origin in (list, List):
        values = value if isinstance(value, list) else [value]
        return [_coerce(key, v, typing.get_args(typ)[0], str(v)) for v in values]
    if typ is bool:
        if not isinstance(value, bool):
            raise OptionError(f"{key}: expected true or false, got {raw!r}")
        return value
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise OptionError(f"{key}: expected a non-negative integer, got {raw!r}")
        return value
    if typ is float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise OptionError(f"{key}: expected a number, got {raw!r}") from None
        if isinstance(value, bool) or number < 0:
            raise OptionError(f"{key}: expected a non-negative number, got {raw!r}")
        return number
    return raw  # str: keep the text as typed (YAML would turn "1e-3" or "yes" into other types)
