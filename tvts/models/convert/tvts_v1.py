"""Official TVTS v1 training checkpoints (``tvts-v1``): video, DistilBERT text, VTC heads and sorter, both ways."""
from __future__ import annotations

from tvts.models.convert.rules import Format, register, same, under
from tvts.models.convert.shared import SORTER, V1_ENCODER

TVTS_V1 = register(Format(
    name="tvts-v1", family="v1", text="hf",
    rules=(under("video_model.", "video.", V1_ENCODER)
           + (same("text_model.", "text.hf_model."), same("txt_proj.", "text_head."),
              same("vid_proj.0.", "video_head."))
           + under("pred_model.", "sorter.", SORTER)),
    scopes=("video.", "text.", "video_head.", "text_head.", "sorter."),
    expects="a TVTS v1 checkpoint ('state_dict' with video_model.*, text_model.*, txt_proj.*, vid_proj.*, "
            "pred_model.*)",
    example="--from tvts-v1 --input checkpoint-epoch20.pth --config configs/tvts_v1_vit_b16.yaml "
            "--output init/tvts_v1.safetensors",
    signature=("video_model.patch_embed.proj.weight", "video_model.temporal_embed"),
    ignore=("text_model.embeddings.position_ids",),  # an arange buffer some transformers versions save
    bare=("patch_embed.proj.weight", "temporal_embed", "blocks.0.attn.qkv.weight"),
    export_scopes=("video.", "text.", "video_head.", "text_head.", "sorter."),
))
