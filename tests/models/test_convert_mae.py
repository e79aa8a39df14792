"""Initialisation from ImageMAE (issue 8): the 2D patch kernel is inflated to tubelets like the official code."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from tvts.models import convert

from convert_refs import official_v1_state, v1_model


def test_mae_inflation_repeats_the_kernel_like_the_official_code(tmp_path):
    gen = torch.Generator().manual_seed(0)
    mae = {k[len("video_model."):]: v for k, v in official_v1_state(seed=2).items() if k.startswith("video_model.")}
    kernel = torch.randn(32, 3, 8, 8, generator=gen)
    mae["patch_embed.proj.weight"] = kernel
    del mae["temporal_embed"]
    full = {**mae, "mask_token": torch.zeros(1, 1, 32), "decoder_embed.weight": torch.zeros(16, 32)}
    torch.save({"model": full}, tmp_path / "mae_pretrain_vit_base.pth")

    model = v1_model()
    report = convert.convert_file("mae", tmp_path / "mae_pretrain_vit_base.pth", model, tmp_path / "mae.safetensors")
    assert report.fresh == ["video.temporal_embed"] and sorted(report.ignored) == ["decoder_embed.weight", "mask_token"]
    convert.load_pretrained(model, tmp_path / "mae.safetensors")
    enc = model.video
    assert torch.equal(enc.patch_embed, kernel.unsqueeze(2).repeat(1, 1, 2, 1, 1))  # repeated, not divided
    assert torch.equal(enc.temporal_embed, torch.zeros_like(enc.temporal_embed))
    enc = enc.double()
    frame = torch.randn(2, 3, 32, 32, generator=gen, dtype=torch.float64)
    static = frame.unsqueeze(1).repeat(1, 2, 1, 1, 1)  # 2 identical frames = 1 tubelet
    with torch.no_grad():
        tokens, slots = enc.embed(static)
        image = F.conv2d(frame, kernel.double(), stride=8).flatten(2).transpose(1, 2)
        patch_part = tokens[:, 1:] - enc.patch_bias - enc.pos_embed[:, 1:]
    assert slots == 1
    torch.testing.assert_close(patch_part, 2 * image)  # official: 2x the image embedding (+ the bias once)
