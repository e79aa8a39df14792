"""Initialisation from OpenAI CLIP / OpenCLIP (issue 8): TVTSv2 at init is the CLIP image tower frame by
frame."""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn

from tvts.models import convert
from tvts.models.text import CLIPTextTransformer

from convert_refs import SMALL_V2, ClipFile, ClipVisual, QuickGELU, randomize, v2_model


@pytest.mark.parametrize("fmt, container, act", [("openai-clip", "torchscript", "quick_gelu"),
                                                  ("openclip", "safetensors", "gelu")])
def test_clip_init_reproduces_the_clip_tower_per_frame(fmt, container, act, tmp_path):
    torch.manual_seed(0)
    visual = ClipVisual(32, 2, 2, patch=8, image=32, out=16, act=QuickGELU() if act == "quick_gelu" else nn.GELU())
    randomize(visual, seed=11)
    clip = ClipFile(visual, CLIPTextTransformer(width=32, layers=2, heads=2, output_dim=16)).eval()
    images = torch.randn(3, 3, 32, 32)
    if container == "torchscript":  # OpenAI ships TorchScript archives; torch marks the API deprecated
        path = tmp_path / "ViT-tiny.pt"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.save(torch.jit.trace(clip, images[:1]), str(path))
    else:
        path = convert.write_checkpoint(clip.state_dict(), tmp_path / "open_clip_model.safetensors")

    model = v2_model("b32", SMALL_V2 + [f"model.video.activation={act}", f"model.text.activation={act}"])
    report = convert.convert_file(fmt, path, model, tmp_path / "init.safetensors")
    assert "video.blocks.0.time_attn.qkv.weight" in report.fresh and "video.temporal_embed" in report.fresh
    assert {"logit_scale", "input_resolution", "context_length", "vocab_size"} >= set(report.ignored)
    convert.load_pretrained(model, tmp_path / "init.safetensors")
    assert torch.equal(model.text.text_projection, clip.text_projection)
    assert torch.equal(model.video.blocks[1].time_attn.qkv.weight, torch.zeros(96, 32))
    encoder, visual, images = model.video.double().eval(), visual.double(), images.double()
    with torch.no_grad():
        # TVTSv2 at init = frame-wise CLIP: the zero-initialised temporal attention adds exactly 0
        temporal = encoder.temporal_embed.clone()
        encoder.temporal_embed.zero_()
        torch.testing.assert_close(encoder.project(encoder(images.unsqueeze(1))), visual(images))
        # with its (random, official) temporal embedding: CLIP with that vector added to every patch
        encoder.temporal_embed.copy_(temporal)
        visual.positional_embedding[1:] += temporal[0, 0]
        torch.testing.assert_close(encoder.project(encoder(images.unsqueeze(1))), visual(images))
