import math

import pytest
import torch
import torch.nn.functional as F

from tvts import config
from tvts.models.video import DividedBlock, VideoEncoder

V2 = ["model.video.family=v2", "model.video.tubelet=1", "sample.mask=tube", "model.video.output_dim=24",
      "model.video.activation=quick_gelu", "model.video.norm_eps=1e-5"]


def _cfg(tiny_overrides, *extra):
    return config.load(None, tiny_overrides + list(extra))


def _keep(grid, b, tube, gen):
    if tube:
        return torch.stack([torch.randperm(grid.patches_per_slot, generator=gen)[:grid.keep] for _ in range(b)])
    return torch.stack([torch.stack([torch.randperm(grid.patches_per_slot, generator=gen)[:grid.keep]
                                     for _ in range(grid.slots)]) for _ in range(b)])


@pytest.mark.parametrize("family", ["v1", "v2"])
def test_shapes(tiny_overrides, family):
    cfg = _cfg(tiny_overrides, "sample.mask_ratio=0.5", *(V2 if family == "v2" else []))
    enc = VideoEncoder(cfg)
    grid = cfg.patch_grid()
    video = torch.randn(3, cfg.sample.frames, 3, 32, 32)
    keep = _keep(grid, 3, family == "v2", torch.Generator().manual_seed(0))
    width = cfg.video_dims()[0]
    assert enc(video, keep).shape == (3, 1 + grid.slots * grid.keep, width)
    assert enc(video).shape == (3, 1 + grid.slots * grid.patches_per_slot, width)
    # fewer frames (caption clips) use the first temporal slots
    assert enc(video[:, :2]).shape == (3, 1 + (2 // cfg.model.video.tubelet) * grid.patches_per_slot, width)
    if family == "v2":
        assert enc.project(enc(video)).shape[-1] == 24


def test_masked_embedding_equals_embed_then_gather(tiny_overrides):
    """Embedding only kept patches == the official order (Conv3d over all patches, add positions, gather)."""
    cfg = _cfg(tiny_overrides, "sample.mask_ratio=0.75", "model.video.temporal_embed_std=0.5")
    enc = VideoEncoder(cfg)
    grid = cfg.patch_grid()
    video = torch.randn(2, cfg.sample.frames, 3, 32, 32)
    keep = _keep(grid, 2, False, torch.Generator().manual_seed(1))
    tokens, slots = enc.embed(video, keep)
    # reference: Conv3d over (B, C, T, H, W)
    full = F.conv3d(video.transpose(1, 2), enc.patch_embed, enc.patch_bias, stride=enc.patch_embed.shape[2:])
    full = full.flatten(3).permute(0, 2, 3, 1)  # (B, S, HW, D)
    full = full + enc.pos_embed[:, 1:].unsqueeze(1) + enc.temporal_embed[:, :slots].unsqueeze(2)
    ref = torch.stack([torch.stack([full[b, s, keep[b, s]] for s in range(slots)]) for b in range(2)]).flatten(1, 2)
    assert torch.allclose(tokens[:, 1:], ref, atol=1e-5)
    assert torch.allclose(tokens[:, 0], (enc.cls_token + enc.pos_embed[:, 0]).squeeze(1).expand(2, -1))


def test_v2_temporal_attention_is_zero_at_init(tiny_overrides):
    cfg = _cfg(tiny_overrides, *V2)
    enc = VideoEncoder(cfg)
    blk = enc.blocks[0]
    assert isinstance(blk, DividedBlock)
    x = torch.randn(2, 1 + cfg.patch_grid().slots * 16, cfg.video_dims()[0])
    assert torch.equal(blk.time_attn(blk.time_norm(x), cfg.patch_grid().slots, "time"), torch.zeros_like(x))
    assert torch.all(blk.time_attn.proj.weight == 1)  # official: filled with 1 so V gets gradients


def _image_vit(enc: VideoEncoder, frame: torch.Tensor, f: int = 0) -> torch.Tensor:
    """An independent frame-wise CLIP-style ViT (conv patch embedding, CLS, ln_pre, standard blocks,
    ln_post) using the encoder's spatial weights; frame ``f``'s temporal embedding joins its patches."""
    p = enc.patch_size
    x = F.conv2d(frame, enc.patch_embed[:, :, 0], stride=p).flatten(2).transpose(1, 2)
    cls = enc.cls_token.expand(frame.shape[0], -1, -1)
    x = torch.cat([cls, x + enc.temporal_embed[:, f]], 1) + enc.pos_embed
    x = enc.norm_pre(x)
    for blk in enc.blocks:
        h = blk.norm1(x)
        heads = blk.attn.heads
        q, k, v = blk.attn.qkv(h).chunk(3, -1)
        q, k, v = (t.unflatten(-1, (heads, -1)).transpose(1, 2) for t in (q, k, v))
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), -1) @ v
        x = x + blk.attn.proj(a.transpose(1, 2).flatten(2))
        x = x + blk.mlp(blk.norm2(x))
    return enc.norm(x)


def test_v2_at_init_equals_framewise_vit(tiny_overrides):
    """Zero-init temporal attention adds nothing: a 1-frame clip equals an image ViT exactly, and in a
    one-block encoder every frame's patch tokens equal the image ViT's on that frame alone. (Deeper, the
    frames still meet through the shared CLS, which attends to all frames: the official design.)"""
    cfg = _cfg(tiny_overrides, *V2)
    enc = VideoEncoder(cfg).eval()
    frames = torch.randn(2, cfg.sample.frames, 3, 32, 32)
    assert torch.allclose(enc(frames[:, :1]), _image_vit(enc, frames[:, 0]), atol=1e-5)

    one = VideoEncoder(_cfg(tiny_overrides, *V2, "model.video.depth=1")).eval()
    out = one(frames)
    n = (out.shape[1] - 1) // cfg.sample.frames
    for f in range(cfg.sample.frames):
        ref = _image_vit(one, frames[:, f], f)
        assert torch.allclose(out[:, 1 + f * n:1 + (f + 1) * n], ref[:, 1:], atol=1e-5)


def test_v2_temporal_attention_mixes_frames_once_trained(tiny_overrides):
    """Sanity: with non-zero temporal weights, frame f's tokens depend on other frames (the wiring works)."""
    cfg = _cfg(tiny_overrides, *V2)
    enc = VideoEncoder(cfg).eval()
    torch.manual_seed(0)
    for blk in enc.blocks:  # both: with proj.weight all ones the output is constant across features,
        # which the next LayerNorm removes (so the official init starts as an exact no-op in two ways)
        torch.nn.init.normal_(blk.time_attn.qkv.weight, std=0.2)
        torch.nn.init.normal_(blk.time_attn.proj.weight, std=0.2)
    video = torch.randn(1, cfg.sample.frames, 3, 32, 32)
    out = enc(video)
    video2 = video.clone()
    video2[:, -1] += 1.0  # change only the last frame
    out2 = enc(video2)
    assert not torch.allclose(out[:, 1:17], out2[:, 1:17], atol=1e-4)  # frame 0's patches changed


def test_v2_rejects_per_slot_masks(tiny_overrides):
    cfg = _cfg(tiny_overrides, *V2, "sample.mask_ratio=0.5")
    enc = VideoEncoder(cfg)
    keep = _keep(cfg.patch_grid(), 1, False, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="tube"):
        enc(torch.randn(1, cfg.sample.frames, 3, 32, 32), keep)


def test_wrong_resolution_is_a_clear_error(tiny_overrides):
    enc = VideoEncoder(_cfg(tiny_overrides))
    with pytest.raises(ValueError, match="sample.image_size"):
        enc(torch.randn(1, 4, 3, 48, 48))


@pytest.mark.parametrize("size,patch,expected", [("base", 16, 86.0e6), ("large", 14, 304.0e6), ("huge", 14, 632.0e6)])
def test_param_counts_on_meta(size, patch, expected):
    """Spatial parameters equal the published image-ViT sizes; v2 adds ~4 D^2 per block of temporal attention."""
    cfg = config.load(None, [f"model.video.size={size}", f"model.video.patch_size={patch}", "model.video.family=v2",
                             "model.video.tubelet=1", "sample.mask=tube", "model.sort.heads=16"] if size != "base"
                      else ["model.video.family=v2", "model.video.tubelet=1", "sample.mask=tube"])
    with torch.device("meta"):
        enc = VideoEncoder(cfg)
    total = sum(p.numel() for p in enc.parameters())
    temporal = sum(p.numel() for m in enc.new_modules() for p in m.parameters()) + enc.temporal_embed.numel()
    spatial = total - temporal
    assert abs(spatial - expected) / expected < 0.01, spatial
    width, depth, _ = cfg.video_dims()
    assert abs(temporal - depth * 4 * width * width) / temporal < 0.01
    assert enc.patch_embed.device.type == "meta"
