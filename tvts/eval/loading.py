"""Load a model to evaluate, frozen, from any of the places tvts-engine leaves one.

``spec`` may be:

- a run directory (its latest complete checkpoint) or one ``checkpoints/step_*`` directory, of any
  strategy (consolidated by :func:`tvts.engine.export.consolidated_state_dict`); the config is the
  run's ``config.yaml``;
- an exported directory (``launch/export.py``): ``config.yaml`` + ``video_encoder.safetensors`` and,
  when present, ``text_encoder.safetensors`` and ``heads.safetensors`` (without them only the
  video-only protocols run);
- a weights file with its recipe (``config=``), e.g. an official checkpoint converted by
  ``launch/convert.py --from tvtsv2``;
- ``random:<config.yaml | run dir | step dir | export dir>``: the model exactly as the trainer builds it at step 0
  (same seed, same constructor), i.e. the random-init baseline of that recipe.

Missing sorter weights are fine (the sorter is dropped after pre-training); a missing text tower or VTC
head leaves only the video protocols (``features``, ``linear``, ``v2v``).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from tvts import config as config_lib
from tvts.engine.export import PARTS, ExportError, consolidated_state_dict, resolve_checkpoint
from tvts.errors import UserError
from tvts.models.model import build_model

RANDOM = "random:"


class LoadError(UserError):
    """A model spec that cannot be loaded; one line naming the path."""


@dataclass
class EvalModel:
    """A frozen TVTSModel in eval mode and where it came from.

    ``joint_space``: the VTC heads and text tower were loaded, so the zero-shot protocols can run.
    ``fingerprint``: sha256 of the video encoder and video VTC head weights (keys the feature cache).
    """

    cfg: config_lib.Config
    model: torch.nn.Module
    source: str
    fingerprint: str
    joint_space: bool
    device: torch.device

    def describe(self) -> dict:
        v = self.cfg.model.video
        return {"source": self.source, "family": v.family, "size": v.size, "image_size": self.cfg.sample.image_size,
                "train_frames": self.cfg.sample.frames, "sort_weight": self.cfg.model.sort_weight,
                "vtc_weight": self.cfg.model.vtc_weight, "fingerprint": self.fingerprint[:16]}

    @torch.inference_mode()
    def video_features(self, video: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """video: (B, M, 3, S, S) float, normalised. Returns (cls (B, width): the [CLS] token after the
        encoder's final LayerNorm (v2: ln_post, before proj); embed (B, E) or None: the same token in the
        video-text space, v1 ``video_head(cls)``, v2 ``cls @ proj``). No masking."""
        m = self.model
        cls = m.video(video.to(self.device))[:, 0]
        embed = m.video_head(m.video.project(cls)) if self.joint_space else None
        return cls.float().cpu(), None if embed is None else embed.float().cpu()

    @torch.inference_mode()
    def text_embeddings(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """(N,) strings -> (N, E) float32 CPU, L2-normalised, in the video-text space (v1: text_head of the
        text vector; v2: CLIP EOT @ text_projection)."""
        if not self.joint_space:
            raise LoadError(f"{self.source}: no text tower / VTC heads loaded; zero-shot protocols need them")
        from tvts.models.text import build_tokenizer

        tokenizer = build_tokenizer(self.cfg)
        out = []
        for start in range(0, len(texts), batch_size):
            tokens = {k: v.to(self.device) for k, v in tokenizer(list(texts[start:start + batch_size])).items()}
            out.append(self.model.text_head(self.model.encode_text(tokens)).float().cpu())
        return F.normalize(torch.cat(out), dim=-1)


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_eval_model(spec: str, device: str | torch.device = "auto", config: Optional[str] = None) -> EvalModel:
    """Build and load the model named by ``spec`` (see the module docstring), frozen, in eval mode.

    ``config``: the recipe of a weights file (``spec`` a file, e.g. ``launch/convert.py`` output); a run or
    export directory brings its own."""
    device = resolve_device(device) if isinstance(device, str) else device
    if spec.startswith(RANDOM):
        from tvts.runtime import seed_everything

        cfg = _config_for(spec[len(RANDOM):])
        seed_everything(cfg.seed)  # the trainer seeds (seed + rank) right before build_model; rank 0 here
        model = build_model(cfg)
        model.requires_grad_(False)
        model.to(device).eval()
        return EvalModel(cfg, model, f"{spec} (step-0 init, seed {cfg.seed})", _fingerprint(model), True, device)
    path = Path(spec)
    if path.is_file():
        from tvts.models.convert import ConversionError, read_checkpoint

        if config is None:
            raise LoadError(f"{path}: a weights file needs the config it was made for (--config)")
        cfg = _config_for(config)
        try:
            state = read_checkpoint(path)[0]
        except ConversionError as err:
            raise LoadError(str(err)) from None
    elif (path / PARTS["video"]).is_file():
        cfg = _config_for(config or path)
        state = _export_state(path)
    else:
        try:
            ckpt = resolve_checkpoint(path)
        except ExportError as err:
            raise LoadError(f"{err}; or an exported directory (video_encoder.safetensors), a weights file "
                            "with --config, or random:<config>") from None
        cfg, state, path = _config_for(config or ckpt), consolidated_state_dict(ckpt), ckpt
    model = build_model(cfg, pretrained_text=False)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing_video = [k for k in missing if k.startswith("video.")]
    if unexpected or missing_video:
        raise LoadError(f"{path}: weights do not match the config's model (missing {sorted(missing_video)[:3]}, "
                        f"unexpected {sorted(unexpected)[:3]})")
    # the sorter is disposable (unused here); without the text tower or VTC heads only video protocols run
    joint = not any(k.startswith(("text.", "video_head.", "text_head.")) for k in missing)
    model.requires_grad_(False)
    model.to(device).eval()
    return EvalModel(cfg, model, str(path), _fingerprint(model) if joint else _fingerprint(model, heads=False),
                     joint, device)


def _config_for(path) -> config_lib.Config:
    path = Path(path)
    if (path / "meta.json").is_file():  # a checkpoints/step_* directory: the run's config
        path = path.parent.parent
    file = path if path.is_file() else path / "config.yaml"
    if not file.is_file():
        raise LoadError(f"{path}: no config.yaml (a run directory or export directory has one)")
    try:
        return config_lib.load(file)
    except config_lib.ConfigError as err:
        raise LoadError(f"{file}: {err}") from None


def _export_state(path: Path) -> dict:
    """The full-name state dict of an export directory; the text and heads files are optional."""
    from safetensors.torch import load_file

    state = {f"video.{k}": v for k, v in load_file(str(path / PARTS["video"])).items()}
    if (path / PARTS["text"]).is_file():
        state.update({f"text.{k}": v for k, v in load_file(str(path / PARTS["text"])).items()})
    if (path / PARTS["heads"]).is_file():
        state.update(load_file(str(path / PARTS["heads"])))
    return state


def _fingerprint(model: torch.nn.Module, heads: bool = True) -> str:
    """sha256 of the weights features depend on: the video encoder, and its VTC head when loaded."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if not name.startswith(("video.", "video_head.") if heads else "video."):
            continue
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
