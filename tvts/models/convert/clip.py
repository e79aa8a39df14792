"""OpenAI CLIP (``openai-clip``) and OpenCLIP (``openclip``) ViT files: one layout, two sources.

Both initialise a TVTSv2 model (video + CLIP text); the new temporal modules keep the model's own init.
"""
from __future__ import annotations

from tvts.models.convert.rules import Format, Rule, register, same, under
from tvts.models.convert.shared import CLIP_LIKE

# nn.MultiheadAttention stacks q, k, v in one (3D, D) in_proj: the same row order as our fused qkv Linear
# (output viewed as (3, heads, head_dim)), so the weights are copied as they are.
CLIP_VISUAL = CLIP_LIKE + (
    Rule("transformer.resblocks.{i}.attn.in_proj_weight", "blocks.{i}.attn.qkv.weight"),
    Rule("transformer.resblocks.{i}.attn.in_proj_bias", "blocks.{i}.attn.qkv.bias"),
    Rule("transformer.resblocks.{i}.attn.out_proj.*", "blocks.{i}.attn.proj.*"),
)

# text towers -----------------------------------------------------------------------------------
CLIP_TEXT = (  # top-level keys of a CLIP state dict; our CLIPTextTransformer keeps OpenAI's names
    Rule("token_embedding.weight", "token_embedding.weight"),
    Rule("positional_embedding", "positional_embedding"),
    same("transformer.resblocks.", "transformer.resblocks."),
    same("ln_final.", "ln_final."),
    Rule("text_projection", "text_projection"),
)

_CLIP_COMMON = dict(
    family="v2", text="clip",
    rules=under("visual.", "video.", CLIP_VISUAL) + under("", "text.", CLIP_TEXT),
    scopes=("video.", "text."),
    signature=("visual.conv1.weight", "visual.class_embedding",
               "visual.transformer.resblocks.0.attn.in_proj_weight"),
    # the official v2 code leaves timeattn, ln_3 and temporal_embedding out of the CLIP load
    new=("video.temporal_embed", "video.blocks.*.time_attn.*", "video.blocks.*.time_norm.*"),
    ignore=("logit_scale", "logit_bias", "input_resolution", "context_length", "vocab_size"),
)

OPENAI_CLIP = register(Format(
    name="openai-clip",
    expects="an OpenAI CLIP ViT file (TorchScript archive or state dict with visual.conv1.weight, "
            "visual.transformer.resblocks.N.attn.in_proj_weight, transformer.*)",
    example="--from openai-clip --input ViT-B-32.pt --config configs/tvtsv2_vit_b32.yaml "
            "--output init/clip_b32.safetensors",
    **_CLIP_COMMON,
))
OPENCLIP = register(Format(
    name="openclip",
    expects="an OpenCLIP ViT state dict (.bin/.pt/.safetensors with visual.conv1.weight, "
            "visual.transformer.resblocks.N.attn.in_proj_weight, transformer.*)",
    example="--from openclip --input open_clip_pytorch_model.bin --config configs/tvtsv2_vit_h14.yaml "
            "--output init/openclip_h14.safetensors",
    **_CLIP_COMMON,
))
