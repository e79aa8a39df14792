"""Official TVTSv2 checkpoints (``tvtsv2``): the released video + CLIP text files, or training checkpoints
with the sorter, both ways."""
from __future__ import annotations

from tvts.models.convert.rules import Format, Rule, register, same, under
from tvts.models.convert.shared import CLIP_LIKE, SORTER, batch_in, batch_out

# official v2 (v2/model/video_encoder_ViT_*.py): CLIP names with attn in_proj/out_proj renamed qkv/proj,
# plus timeattn (ours: time_attn), ln_3 (ours: time_norm) and temporal_embedding (T, D)
V2_ENCODER = CLIP_LIKE + (
    Rule("temporal_embedding", "temporal_embed", batch_in, batch_out),
    Rule("transformer.resblocks.{i}.attn.*", "blocks.{i}.attn.*"),
    Rule("transformer.resblocks.{i}.timeattn.*", "blocks.{i}.time_attn.*"),
    same("transformer.resblocks.{i}.ln_3.", "blocks.{i}.time_norm."),
)

# official v2 model: self.text_model = clip.transformer, self.text_token_embedding = clip.token_embedding, ...
V2_TEXT = (
    same("text_model.", "transformer."),
    Rule("text_token_embedding.weight", "token_embedding.weight"),
    Rule("text_positional_embedding", "positional_embedding"),
    same("text_ln_final.", "ln_final."),
    Rule("text_projection", "text_projection"),
)

TVTSV2 = register(Format(
    name="tvtsv2", family="v2", text="clip",
    rules=(under("video_model.", "video.", V2_ENCODER) + under("", "text.", V2_TEXT)
           + under("pred_model.", "sorter.", SORTER)),
    scopes=("video.", "text."),
    optional=("sorter.",),
    expects="a TVTSv2 checkpoint ('state_dict' with video_model.conv1.weight, video_model.temporal_embedding, "
            "text_model.*)",
    example="--from tvtsv2 --input TVTSv2_ViT_B_16.pth --config configs/tvtsv2_vit_b16.yaml "
            "--output init/tvtsv2_b16.safetensors",
    signature=("video_model.conv1.weight", "video_model.temporal_embedding"),
    bare=("conv1.weight", "temporal_embedding", "transformer.resblocks.0.timeattn.qkv.weight"),
    # the released TVTSv2_*.pth layout: the official downstream models (no pred_model) load it strictly
    export_scopes=("video.", "text."),
))
