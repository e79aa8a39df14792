"""Shared by the checkpoint interop tests (tests/models/test_convert_*.py, tests/engine/test_init.py): tiny
models, official layouts written by hand, and independent references of the official forwards.

The official forwards below are small references written from the official code's semantics
(``v1/model/video_encoder.py``, ``v2/model/video_encoder_ViT_*.py``, OpenAI CLIP's ``VisionTransformer``
with ``nn.MultiheadAttention``): they read the official key layout directly and never use our modules.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from tvts import config
from tvts.models.model import TVTSModel
from tvts.models.text import CLIPTextTransformer, TextEncoder

ROOT = Path(__file__).resolve().parents[2]
TINY_V2 = ["model.video.width=32", "model.video.depth=2", "model.video.heads=2", "model.video.output_dim=16",
           "model.text.width=32", "model.text.layers=2", "model.text.heads=2", "model.text.output_dim=16",
           "model.text.frozen_layers=1", "model.sort.heads=2", "sample.frames_per_window=1", "sample.caption_frames=4"]
SMALL_V2 = TINY_V2 + ["sample.image_size=32", "model.video.patch_size=8", "sample.mask_ratio=0.5"]
TINY_V1 = ["model.video.width=32", "model.video.depth=2", "model.video.heads=2", "model.video.patch_size=8",
           "sample.image_size=32", "sample.frames_per_window=1", "sample.caption_frames=2", "model.sort.heads=2",
           "model.vtc.embed_dim=16", "sample.mask_ratio=0.5"]


class FakeHF(TextEncoder):
    """A stand-in for DistilBERT under ``hf_model`` (the v1 text mapping is a prefix rename)."""

    def __init__(self, dim: int):
        super().__init__()
        self.hf_model = nn.ModuleDict({"embeddings": nn.ModuleDict({"word_embeddings": nn.Embedding(11, dim)}),
                                       "transformer": nn.ModuleDict({"q_lin": nn.Linear(dim, dim)})})
        self.output_dim = dim


def v1_model(overrides=TINY_V1) -> TVTSModel:
    cfg = config.load(ROOT / "configs/tvts_v1_vit_b16.yaml", list(overrides))
    return TVTSModel(cfg, text_encoder=FakeHF(cfg.video_dims()[0]))


def v2_model(size: str = "b32", overrides=TINY_V2) -> TVTSModel:
    return TVTSModel(config.load(ROOT / f"configs/tvtsv2_vit_{size}.yaml", list(overrides)))


def randomize(module: nn.Module, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in module.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=gen) * 0.3)
    return module




# ----------------------------------------------------------------------------------------------
# Independent references of the official forwards
# ----------------------------------------------------------------------------------------------
def _ln(x, sd, name, eps):
    return F.layer_norm(x, x.shape[-1:], sd[name + ".weight"], sd[name + ".bias"], eps)


def official_v1_features(sd, video, keep, heads, depth):
    """v1 VisionTransformer.forward_features: Conv3d tubelets, tiled pos + repeated temporal embeddings,
    per-slot gather, timm blocks, final norm. ``sd``: official names without ``video_model.``."""
    w = sd["patch_embed.proj.weight"]
    tub, p = w.shape[2], w.shape[-1]
    x = F.conv3d(video.permute(0, 2, 1, 3, 4), w, sd["patch_embed.proj.bias"], stride=(tub, p, p))
    x = x.flatten(2).transpose(1, 2)
    b, length, d = x.shape
    slots = video.shape[1] // tub
    n = length // slots
    pos, temporal = sd["pos_embed"], sd["temporal_embed"]
    x = torch.cat([sd["cls_token"].expand(b, -1, -1), x], 1)
    x = x + torch.cat([pos[:, :1], pos[:, 1:].repeat(1, slots, 1) + temporal[:, :slots].repeat_interleave(n, 1)], 1)
    patches = x[:, 1:].reshape(b * slots, n, d)[torch.arange(b * slots)[:, None], keep.reshape(b * slots, -1)]
    x = torch.cat([x[:, :1], patches.reshape(b, -1, d)], 1)
    for i in range(depth):
        k = f"blocks.{i}."
        y = _ln(x, sd, k + "norm1", 1e-6)
        qkv = F.linear(y, sd[k + "attn.qkv.weight"], sd[k + "attn.qkv.bias"])
        qkv = qkv.reshape(b, -1, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
        att = (qkv[0] @ qkv[1].transpose(-2, -1) * (d // heads) ** -0.5).softmax(-1) @ qkv[2]
        x = x + F.linear(att.transpose(1, 2).reshape(b, -1, d), sd[k + "attn.proj.weight"], sd[k + "attn.proj.bias"])
        h = F.gelu(F.linear(_ln(x, sd, k + "norm2", 1e-6), sd[k + "mlp.fc1.weight"], sd[k + "mlp.fc1.bias"]))
        x = x + F.linear(h, sd[k + "mlp.fc2.weight"], sd[k + "mlp.fc2.bias"])
    return _ln(x, sd, "norm", 1e-6)


def _var_attention(x, sd, name, heads, frames, over):
    """VarAttention: CLS queries every token; patches attend within a frame (space) or across frames at
    one spatial index (time), with CLS prepended as an extra key/value."""
    b, length, c = x.shape
    d, n = c // heads, (length - 1) // frames
    q, k, v = (t.reshape(b, length, heads, d).transpose(1, 2).reshape(b * heads, length, d)
               for t in F.linear(x, sd[name + ".qkv.weight"], sd[name + ".qkv.bias"]).chunk(3, -1))
    q = q * d ** -0.5
    attend = lambda q_, k_, v_: (q_ @ k_.transpose(-2, -1)).softmax(-1) @ v_  # noqa: E731
    cls_out = attend(q[:, :1], k, v)

    def group(t):  # 'b (f n) d -> (b n) f d' (time) or '(b f) n d' (space)
        t = t[:, 1:].reshape(b * heads, frames, n, d)
        return t.transpose(1, 2).reshape(-1, frames, d) if over == "time" else t.reshape(-1, n, d)

    r = n if over == "time" else frames
    keys = torch.cat([k[:, :1].repeat_interleave(r, 0), group(k)], 1)
    values = torch.cat([v[:, :1].repeat_interleave(r, 0), group(v)], 1)
    out = attend(group(q), keys, values)
    out = (out.reshape(b * heads, n, frames, d).transpose(1, 2) if over == "time"
           else out.reshape(b * heads, frames, n, d))
    out = torch.cat([cls_out, out.reshape(b * heads, frames * n, d)], 1)
    out = out.reshape(b, heads, length, d).transpose(1, 2).reshape(b, length, c)
    return F.linear(out, sd[name + ".proj.weight"], sd[name + ".proj.bias"])


def official_v2_features(sd, video, keep, heads, depth, act):
    """v2 VisionTransformer.forward (B/32, B/16): per-frame conv1, CLS + tiled pos + temporal, tube gather,
    ln_pre, blocks (timeattn(ln_3) feeds only attn's input), ln_post, @ proj."""
    b, t = video.shape[:2]
    w = sd["conv1.weight"]
    x = F.conv2d(video.flatten(0, 1), w, stride=w.shape[-1])
    x = x.reshape(b * t, x.shape[1], -1).permute(0, 2, 1)
    n, d = x.shape[1:]
    x = torch.cat([sd["class_embedding"].reshape(1, 1, -1).repeat(b, 1, 1), x.reshape(b, t * n, d)], 1)
    pos, temporal = sd["positional_embedding"], sd["temporal_embedding"]
    x = x + torch.cat([pos[:1], pos[1:].repeat(t, 1) + temporal[:t].repeat_interleave(n, 0)], 0)
    per_frame = keep.unsqueeze(1).repeat(1, t, 1).reshape(b * t, -1)
    patches = x[:, 1:].reshape(b * t, n, d)[torch.arange(b * t)[:, None], per_frame]
    x = _ln(torch.cat([x[:, :1], patches.reshape(b, -1, d)], 1), sd, "ln_pre", 1e-5)
    for i in range(depth):
        k = f"transformer.resblocks.{i}."
        time_out = _var_attention(_ln(x, sd, k + "ln_3", 1e-5), sd, k + "timeattn", heads, t, "time")
        x = x + _var_attention(_ln(x + time_out, sd, k + "ln_1", 1e-5), sd, k + "attn", heads, t, "space")
        h = act(F.linear(_ln(x, sd, k + "ln_2", 1e-5), sd[k + "mlp.c_fc.weight"], sd[k + "mlp.c_fc.bias"]))
        x = x + F.linear(h, sd[k + "mlp.c_proj.weight"], sd[k + "mlp.c_proj.bias"])
    return _ln(x, sd, "ln_post", 1e-5) @ sd["proj"]


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


class QuickGELU(nn.Module):
    def forward(self, x):
        return quick_gelu(x)


class ClipBlock(nn.Module):
    def __init__(self, width, heads, act):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, 4 * width)), ("gelu", act),
                                              ("c_proj", nn.Linear(4 * width, width))]))
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x):  # (L, N, D), as OpenAI CLIP
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class ClipTransformer(nn.Module):
    def __init__(self, width, layers, heads, act):
        super().__init__()
        self.resblocks = nn.Sequential(*[ClipBlock(width, heads, act) for _ in range(layers)])

    def forward(self, x):
        return self.resblocks(x)


class ClipVisual(nn.Module):
    """OpenAI CLIP's VisionTransformer, returning every token after ln_post @ proj: (B, 1 + N, out)."""

    def __init__(self, width, layers, heads, patch, image, out, act):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, patch, patch, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(width))
        self.positional_embedding = nn.Parameter(torch.randn((image // patch) ** 2 + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = ClipTransformer(width, layers, heads, act)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.randn(width, out))

    def forward(self, image):
        x = self.conv1(image).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_embedding.expand(x.shape[0], 1, -1), x], 1) + self.positional_embedding
        x = self.transformer(self.ln_pre(x).permute(1, 0, 2)).permute(1, 0, 2)
        return self.ln_post(x) @ self.proj


class ClipFile(nn.Module):
    """The whole CLIP model as its files hold it: visual.* and the text tower at the top level."""

    def __init__(self, visual: ClipVisual, text: CLIPTextTransformer):
        super().__init__()
        self.visual = visual
        self.transformer = text.transformer
        self.token_embedding = text.token_embedding
        self.positional_embedding = text.positional_embedding
        self.ln_final = text.ln_final
        self.text_projection = text.text_projection
        self.logit_scale = nn.Parameter(torch.tensor(4.6))
        for name, value in (("input_resolution", 32), ("context_length", 77), ("vocab_size", 49408)):
            self.register_buffer(name, torch.tensor(value))  # OpenAI's JIT archives carry these scalars

    def forward(self, image):
        return self.visual(image)


# ----------------------------------------------------------------------------------------------
# Official layouts written by hand
# ----------------------------------------------------------------------------------------------
def official_v1_state(d=32, depth=2, p=8, n=16, slots=2, seed=0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen) * 0.3  # noqa: E731
    sd = {"video_model.patch_embed.proj.weight": r(d, 3, 2, p, p), "video_model.patch_embed.proj.bias": r(d),
          "video_model.cls_token": r(1, 1, d), "video_model.pos_embed": r(1, 1 + n, d),
          "video_model.temporal_embed": r(1, slots, d),
          "video_model.norm.weight": 1 + r(d), "video_model.norm.bias": r(d),
          "text_model.embeddings.word_embeddings.weight": r(11, d), "text_model.transformer.q_lin.weight": r(d, d),
          "text_model.transformer.q_lin.bias": r(d), "txt_proj.1.weight": r(16, d), "txt_proj.1.bias": r(16),
          "vid_proj.0.weight": r(16, d), "vid_proj.0.bias": r(16),
          "pred_model.type_embed": r(1, 2, d), "pred_model.norm.weight": r(d), "pred_model.norm.bias": r(d),
          "pred_model.head.weight": r(4, d), "pred_model.head.bias": r(4)}
    for prefix in [f"video_model.blocks.{i}." for i in range(depth)] + [f"pred_model.blocks.{i}." for i in range(2)]:
        sd.update({prefix + "norm1.weight": 1 + r(d), prefix + "norm1.bias": r(d),
                   prefix + "attn.qkv.weight": r(3 * d, d), prefix + "attn.qkv.bias": r(3 * d),
                   prefix + "attn.proj.weight": r(d, d), prefix + "attn.proj.bias": r(d),
                   prefix + "norm2.weight": 1 + r(d), prefix + "norm2.bias": r(d),
                   prefix + "mlp.fc1.weight": r(4 * d, d), prefix + "mlp.fc1.bias": r(4 * d),
                   prefix + "mlp.fc2.weight": r(d, 4 * d), prefix + "mlp.fc2.bias": r(d)})
    return sd

