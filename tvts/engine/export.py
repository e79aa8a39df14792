"""Consolidate any strategy's checkpoint into full fp32 weights, offline, in one process.

single / ddp: ``model_optim.pt``; fsdp: the ``dcp/`` directory of torch.distributed.checkpoint;
zero1-3: DeepSpeed's ``deepspeed/`` directory (its own fp32 master partitions, merged by
``deepspeed.utils.zero_to_fp32``). No process group and no knowledge of the world size are needed.

:func:`export_safetensors` writes the video encoder, the text encoder and the pre-training heads
(sorter + VTC projections, dropped after pre-training) as three safetensors files.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Optional

import torch

from tvts.runtime import unwrapped_name
from tvts.errors import UserError

PARTS = {"video": "video_encoder.safetensors", "text": "text_encoder.safetensors", "heads": "heads.safetensors"}


class ExportError(UserError):
    """A path that is not a checkpoint; the message is one line naming it."""


def resolve_checkpoint(path: str | Path) -> Path:
    """A ``step_*`` directory, or a run directory (then its latest complete checkpoint)."""
    path = Path(path)
    if (path / "meta.json").is_file():
        return path
    ckpts = path / "checkpoints"
    if ckpts.is_dir():
        done = sorted(p for p in ckpts.iterdir() if p.is_dir() and (p / "meta.json").is_file())
        if done:
            return done[-1]
    raise ExportError(f"{path}: neither a checkpoint (step_*/meta.json) nor a run directory with complete checkpoints")


def consolidated_state_dict(checkpoint: str | Path) -> dict[str, torch.Tensor]:
    """Full fp32 (floating tensors) state dict of the model saved in ``checkpoint``, unwrapped names."""
    ckpt = resolve_checkpoint(checkpoint)
    if (ckpt / "model_optim.pt").is_file():
        state = torch.load(ckpt / "model_optim.pt", map_location="cpu", weights_only=True)["model"]
    elif (ckpt / "dcp").is_dir():
        from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

        with tempfile.TemporaryDirectory() as tmp:
            dcp_to_torch_save(str(ckpt / "dcp"), f"{tmp}/full.pt")
            state = torch.load(f"{tmp}/full.pt", map_location="cpu", weights_only=True)["model"]
    elif (ckpt / "deepspeed").is_dir():
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        state = get_fp32_state_dict_from_zero_checkpoint(str(ckpt / "deepspeed"), tag="zero")
    else:
        raise ExportError(f"{ckpt}: no model_optim.pt, dcp/ or deepspeed/ inside: not written by tvts-engine")
    return {_strip(k): (v.detach().float() if v.is_floating_point() else v.detach()).contiguous() for k, v in state.items()}


def _strip(name: str) -> str:
    name = unwrapped_name(name)
    # ZeRO wraps TVTSModel in a module whose only child is ``model`` (TVTSModel has no child of that name)
    return name[len("model."):] if name.startswith("model.") else name


def split_parts(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """{"video": encoder weights without the ``video.`` prefix, "text": ..., "heads": sorter + VTC heads}."""
    parts: dict[str, dict[str, torch.Tensor]] = {"video": {}, "text": {}, "heads": {}}
    for key, value in state.items():
        top, _, rest = key.partition(".")
        if top in ("video", "text"):
            parts[top][rest] = value
        else:
            parts["heads"][key] = value
    return parts


def export_safetensors(checkpoint: str | Path, out_dir: str | Path, config_yaml: Optional[str] = None) -> dict[str, Path]:
    """Write the three parts (and the run's config) to ``out_dir``; returns {part: path}."""
    from safetensors.torch import save_file

    ckpt = resolve_checkpoint(checkpoint)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for part, tensors in split_parts(consolidated_state_dict(ckpt)).items():
        path = out / PARTS[part]
        save_file({k: v.clone() for k, v in tensors.items()}, str(path), metadata={"part": part, "checkpoint": str(ckpt)})
        written[part] = path
    run_config = ckpt.parent.parent / "config.yaml"
    if config_yaml is None and run_config.is_file():
        config_yaml = run_config.read_text()
    if config_yaml:
        (out / "config.yaml").write_text(config_yaml)
    (out / "export.json").write_text(json.dumps({"checkpoint": str(ckpt), **json.loads((ckpt / "meta.json").read_text())}, indent=1))
    return written
