"""ImageMAE ViT checkpoints (``mae``): the image encoder inflated to the v1 video encoder (import only)."""
from __future__ import annotations

from typing import Mapping

import torch

from tvts.models.convert.rules import Format, register, under
from tvts.models.convert.shared import V1_ENCODER

Tensor = torch.Tensor


def _image_kernel(sd: Mapping[str, Tensor]) -> bool:  # a 2D kernel: an image ViT, not a video one
    return sd["patch_embed.proj.weight"].dim() == 4


MAE = register(Format(
    name="mae", family="v1", text=None,
    rules=under("", "video.", V1_ENCODER),
    scopes=("video.",),
    expects="an ImageMAE ViT checkpoint ('model' with patch_embed.proj.weight (D, 3, p, p), "
            "blocks.N.attn.qkv.weight)",
    example="--from mae --input mae_pretrain_vit_base.pth --config configs/tvts_v1_vit_b16.yaml "
            "--output init/mae_b16.safetensors",
    signature=("patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "cls_token"),
    new=("video.temporal_embed",),  # official v1: zero, not in MAE
    ignore=("mask_token", "decoder_*"),  # a full MAE model (with its decoder) holds the same encoder
    accepts=_image_kernel,
))
