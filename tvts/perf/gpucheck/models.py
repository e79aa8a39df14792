"""The models the check measures, as configs: the recipes in ``configs/`` plus what lets them run on a machine
that has neither their initial weights nor their text tower's files, and their tiny twins for ``--dry``.

Weights are not what is measured, so every model starts from scratch (``model.init=none``). v1's text tower
is DistilBERT read from a local directory, which the GPU machines do not have: a CLIP-style tower of
DistilBERT's size (6 blocks of 768, 12 heads, 50 tokens) stands in for it, built from its config like v2's.
"""
from __future__ import annotations

from tvts.perf.gpucheck.core import ROOT

V1_TEXT = ["model.text.kind=clip", "model.text.width=768", "model.text.layers=6", "model.text.heads=12",
           "model.text.output_dim=768", "model.text.context_length=50"]
# TVTSv2 recipe (B/16's 50 % tube mask, 12 frames) on OpenAI CLIP ViT-L/14 and its 768-wide text tower
V2_L14 = ["model.video.size=large", "model.video.patch_size=14", "model.video.output_dim=768",
          "model.text.width=768", "model.text.heads=12", "model.text.output_dim=768", "model.sort.heads=12"]
# name: (config file, overrides)
MODELS = {
    "v1 B/16": ("tvts_v1_vit_b16.yaml", V1_TEXT),
    "v2 B/16": ("tvtsv2_vit_b16.yaml", []),
    "v2 L/14": ("tvtsv2_vit_b16.yaml", V2_L14),
    "v2 H/14": ("tvtsv2_vit_h14.yaml", []),
}
# --dry: an atto video (64 wide, 2 blocks) on 8 frames of 32 px and a 2-block 32-wide CLIP text tower, each
# recipe keeping its family, masking and strategy; loader workers off (the rehearsal runs in one process)
TINY = ["model.video.size=atto", "model.video.patch_size=8", "sample.image_size=32", "sample.frames_per_window=2",
        "sample.caption_frames=2", "model.sort.heads=2", "model.text.kind=clip", "model.text.width=32",
        "model.text.layers=2", "model.text.heads=2", "model.text.context_length=16", "model.text.output_dim=32",
        "model.text.frozen_layers=0", "model.vtc.embed_dim=32", "data.resize_short=32", "data.num_workers=0",
        "train.micro_batch=2"]
TINY_V2 = ["model.video.output_dim=32"]


def config_path(name: str) -> str:
    return str(ROOT / "configs" / MODELS[name][0])


def load(name: str, dry: bool, overrides=()):
    """The config of model ``name`` (a key of :data:`MODELS`), tiny in ``dry``, with ``overrides`` last."""
    from tvts import config

    file, own = MODELS[name]
    tiny = TINY + (TINY_V2 if name.startswith("v2") else []) if dry else []
    return config.load(config_path(name), ["model.init=none", *own, *tiny, *overrides])
