"""Rule tables and tensor changes that more than one checkpoint family is built from.

The official v1 encoder and ImageMAE share :data:`V1_ENCODER`; OpenAI CLIP, OpenCLIP and the official v2
encoder share :data:`CLIP_LIKE`; official v1 and v2 share :data:`SORTER`. Nothing here is registered.
"""
from __future__ import annotations

import torch

from tvts.models.convert.rules import ConversionError, Rule, same

Tensor = torch.Tensor


# tensor changes ------------------------------------------------------------------------------
def to_tubelet(t: Tensor, shape: torch.Size) -> Tensor:
    """A 2D patch kernel (D, 3, p, p) -> (D, 3, tubelet, p, p), repeated over time and NOT divided by the
    tubelet, as the official v1 code inflates MAE (``unsqueeze(2).repeat(1, 1, 2, 1, 1)``): a static clip
    then embeds to ``tubelet x`` the image embedding (+ bias once). Tubelet 1 (CLIP -> v2) is an unsqueeze.
    3D kernels pass through."""
    if t.dim() == 4 and len(shape) == 5:
        return t.unsqueeze(2).repeat(1, 1, shape[2], 1, 1)
    return t


def to_conv2d(t: Tensor) -> Tensor:
    if t.dim() != 5 or t.shape[2] != 1:
        raise ConversionError(f"the official v2 layout has a 2D patch kernel; ours is {tuple(t.shape)} "
                              "(tubelet must be 1)")
    return t[:, :, 0]


def cls_in(t: Tensor, shape: torch.Size) -> Tensor:  # CLIP class_embedding (D,) -> cls_token (1, 1, D)
    return t.reshape(1, 1, -1)


def cls_out(t: Tensor) -> Tensor:
    return t.reshape(-1)


def batch_in(t: Tensor, shape: torch.Size) -> Tensor:  # (L, D) -> (1, L, D)
    return t.unsqueeze(0)


def batch_out(t: Tensor) -> Tensor:
    return t[0]


# encoders --------------------------------------------------------------------------------------
# official v1 VisionTransformer (v1/model/video_encoder.py) and timm/MAE ViT: the same names, ours too,
# except the tubelet kernel. qkv is one Linear with one bias (no VideoMAE q_bias / v_bias).
V1_ENCODER = (
    Rule("patch_embed.proj.weight", "patch_embed", to_tubelet),
    Rule("patch_embed.proj.bias", "patch_bias"),
    Rule("cls_token", "cls_token"),
    Rule("pos_embed", "pos_embed"),
    Rule("temporal_embed", "temporal_embed"),
    same("blocks.{i}.", "blocks.{i}."),
    same("norm.", "norm."),
)

# CLIP visual tower names (OpenAI CLIP, OpenCLIP, and the official v2 encoder that copies them)
CLIP_LIKE = (
    Rule("conv1.weight", "patch_embed", to_tubelet, to_conv2d),
    Rule("class_embedding", "cls_token", cls_in, cls_out),
    Rule("positional_embedding", "pos_embed", batch_in, batch_out),
    same("ln_pre.", "norm_pre."),
    same("transformer.resblocks.{i}.ln_1.", "blocks.{i}.norm1."),
    same("transformer.resblocks.{i}.ln_2.", "blocks.{i}.norm2."),
    Rule("transformer.resblocks.{i}.mlp.c_fc.*", "blocks.{i}.mlp.fc1.*"),
    Rule("transformer.resblocks.{i}.mlp.c_proj.*", "blocks.{i}.mlp.fc2.*"),
    same("ln_post.", "norm."),
    Rule("proj", "proj"),
)


# official SortTransformer (v1 and v2 alike): exactly these members; ours may add transcript_proj (a text
# width other than the sorter's) and the center_l2 running mean, which have no official name
SORTER = (
    Rule("type_embed", "type_embed"),
    same("blocks.{i}.", "blocks.{i}."),
    same("norm.", "norm."),
    same("head.", "head."),
)
