"""Checkpoint interop (issue 8): official TVTS v1 / TVTSv2 layouts both ways, CLIP / OpenCLIP and MAE init.

The official forwards below are small references written from the official code's semantics
(``v1/model/video_encoder.py``, ``v2/model/video_encoder_ViT_*.py``, OpenAI CLIP's ``VisionTransformer``
with ``nn.MultiheadAttention``): they read the official key layout directly and never use our modules.
"""
from __future__ import annotations

import importlib.util
import sys
import types
import warnings
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from tvts import config
from tvts.models import convert
from tvts.models.convert import ConversionError, to_official, to_ours
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


def _v1(overrides=TINY_V1) -> TVTSModel:
    cfg = config.load(ROOT / "configs/tvts_v1_vit_b16.yaml", list(overrides))
    return TVTSModel(cfg, text_encoder=FakeHF(cfg.video_dims()[0]))


def _v2(size: str = "b32", overrides=TINY_V2) -> TVTSModel:
    return TVTSModel(config.load(ROOT / f"configs/tvtsv2_vit_{size}.yaml", list(overrides)))


def _randomize(module: nn.Module, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in module.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=gen) * 0.3)
    return module


def _equal(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].shape == b[k].shape and torch.equal(a[k], b[k]), k


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
    x = F.conv3d(video.permute(0, 2, 1, 3, 4), w, sd["patch_embed.proj.bias"], stride=(tub, p, p)).flatten(2).transpose(1, 2)
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
        qkv = F.linear(y, sd[k + "attn.qkv.weight"], sd[k + "attn.qkv.bias"]).reshape(b, -1, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
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
    out = out.reshape(b * heads, n, frames, d).transpose(1, 2) if over == "time" else out.reshape(b * heads, frames, n, d)
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
    patches = x[:, 1:].reshape(b * t, n, d)[torch.arange(b * t)[:, None], keep.unsqueeze(1).repeat(1, t, 1).reshape(b * t, -1)]
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
# Round trips
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["v1", "b32", "b16", "h14"])
def test_round_trip_ours_official_ours_is_lossless(kind, tmp_path):
    model = _randomize(_v1() if kind == "v1" else _v2(kind), seed=1)
    fmt = "tvts-v1" if kind == "v1" else "tvtsv2"
    ours = model.state_dict()
    official, report = to_official(ours, fmt, model)
    if kind == "v1":
        assert official["module.video_model.patch_embed.proj.weight"].dim() == 5
        assert "module.vid_proj.0.weight" in official and "module.txt_proj.1.weight" in official
    else:
        assert official["module.video_model.conv1.weight"].dim() == 4
        assert official["module.video_model.class_embedding"].dim() == 1
        assert not any(".pred_model." in k or k.startswith("module.pred_model") for k in official)  # released layout
        assert report.ignored and all(k.startswith("sorter.") for k in report.ignored)
    back, _ = to_ours(official, fmt, model)
    _equal(back, {k: v for k, v in ours.items() if k in back})
    scopes = FMT_SCOPES[fmt]
    assert sorted(back) == sorted(k for k in ours if k.startswith(scopes))

    # through files: ours -> official .pth -> ours .safetensors -> a fresh model
    write = convert.write_checkpoint(ours, tmp_path / "ours.pt")
    convert.export_file(fmt, write, model, tmp_path / "official.pth")
    convert.convert_file(fmt, tmp_path / "official.pth", model, tmp_path / "again.safetensors")
    fresh = _v1() if kind == "v1" else _v2(kind)
    convert.load_pretrained(fresh, tmp_path / "again.safetensors")
    _equal({k: v for k, v in fresh.state_dict().items() if k.startswith(scopes)},
           {k: v for k, v in ours.items() if k.startswith(scopes)})


FMT_SCOPES = {"tvts-v1": ("video.", "text.", "video_head.", "text_head.", "sorter."), "tvtsv2": ("video.", "text.")}


@pytest.mark.parametrize("kind, shapes, depth", [
    ("v1", {"patch_embed.proj.weight": (768, 3, 2, 16, 16), "pos_embed": (1, 197, 768), "temporal_embed": (1, 8, 768),
            "blocks.11.attn.qkv.weight": (2304, 768), "blocks.11.attn.qkv.bias": (2304,)}, 12),
    ("b32", {"conv1.weight": (768, 3, 32, 32), "positional_embedding": (50, 768), "temporal_embedding": (12, 768),
             "proj": (768, 512), "transformer.resblocks.11.timeattn.qkv.weight": (2304, 768)}, 12),
    ("b16", {"conv1.weight": (768, 3, 16, 16), "positional_embedding": (197, 768), "class_embedding": (768,)}, 12),
    ("h14", {"conv1.weight": (1280, 3, 14, 14), "positional_embedding": (257, 1280), "proj": (1280, 1024),
             "transformer.resblocks.31.ln_3.weight": (1280,), "transformer.resblocks.31.timeattn.qkv.weight": (3840, 1280)}, 32),
])
def test_full_size_official_layout_on_meta(kind, shapes, depth):
    with torch.device("meta"):
        model = _v1(()) if kind == "v1" else _v2(kind, ())
    fmt = "tvts-v1" if kind == "v1" else "tvtsv2"
    official, _ = to_official(model.state_dict(), fmt, model)
    video = {k[len("module.video_model."):]: v for k, v in official.items() if k.startswith("module.video_model.")}
    for key, shape in shapes.items():
        assert tuple(video[key].shape) == shape, key
    # every official key and no other: v1 7 + 12 per block, v2 9 + 18 per block (official module lists)
    assert len(video) == (7 + 12 * depth if kind == "v1" else 9 + 18 * depth)
    if kind == "v1":
        assert tuple(official["module.pred_model.type_embed"].shape) == (1, 2, 768)
        assert tuple(official["module.pred_model.head.weight"].shape) == (4, 768)
        assert sum(k.startswith("module.pred_model.") for k in official) == 1 + 12 * 2 + 4
    else:
        text_layers = 24 if kind == "h14" else 12
        assert f"module.text_model.resblocks.{text_layers - 1}.attn.in_proj_weight" in official
        assert {"module.text_token_embedding.weight", "module.text_positional_embedding", "module.text_ln_final.weight",
                "module.text_projection"} <= set(official)
    back, _ = to_ours(official, fmt, model)
    assert {k: tuple(v.shape) for k, v in back.items()} == {k: tuple(v.shape) for k, v in model.state_dict().items()
                                                           if k.startswith(FMT_SCOPES[fmt])}


# ----------------------------------------------------------------------------------------------
# Official layouts written by hand load and match the official forward
# ----------------------------------------------------------------------------------------------
def _official_v1(d=32, depth=2, p=8, n=16, slots=2, seed=0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen) * 0.3  # noqa: E731
    sd = {"video_model.patch_embed.proj.weight": r(d, 3, 2, p, p), "video_model.patch_embed.proj.bias": r(d),
          "video_model.cls_token": r(1, 1, d), "video_model.pos_embed": r(1, 1 + n, d), "video_model.temporal_embed": r(1, slots, d),
          "video_model.norm.weight": 1 + r(d), "video_model.norm.bias": r(d),
          "text_model.embeddings.word_embeddings.weight": r(11, d), "text_model.transformer.q_lin.weight": r(d, d),
          "text_model.transformer.q_lin.bias": r(d), "txt_proj.1.weight": r(16, d), "txt_proj.1.bias": r(16),
          "vid_proj.0.weight": r(16, d), "vid_proj.0.bias": r(16),
          "pred_model.type_embed": r(1, 2, d), "pred_model.norm.weight": r(d), "pred_model.norm.bias": r(d),
          "pred_model.head.weight": r(4, d), "pred_model.head.bias": r(4)}
    for prefix in [f"video_model.blocks.{i}." for i in range(depth)] + [f"pred_model.blocks.{i}." for i in range(2)]:
        sd.update({prefix + "norm1.weight": 1 + r(d), prefix + "norm1.bias": r(d), prefix + "attn.qkv.weight": r(3 * d, d),
                   prefix + "attn.qkv.bias": r(3 * d), prefix + "attn.proj.weight": r(d, d), prefix + "attn.proj.bias": r(d),
                   prefix + "norm2.weight": 1 + r(d), prefix + "norm2.bias": r(d), prefix + "mlp.fc1.weight": r(4 * d, d),
                   prefix + "mlp.fc1.bias": r(4 * d), prefix + "mlp.fc2.weight": r(d, 4 * d), prefix + "mlp.fc2.bias": r(d)})
    return sd


def test_official_v1_checkpoint_loads_and_matches_official_forward(tmp_path, monkeypatch):
    official = _official_v1()
    # an official training checkpoint: DDP prefixes, optimizer, and the pickled parse_config.ConfigParser
    fake = types.ModuleType("parse_config")

    class ConfigParser:
        def __init__(self):
            self._config = OrderedDict(arch={"type": "TVTS"})
            self.resume = Path("/path/to/TVTS")

    ConfigParser.__module__, ConfigParser.__qualname__ = "parse_config", "ConfigParser"
    fake.ConfigParser = ConfigParser
    monkeypatch.setitem(sys.modules, "parse_config", fake)
    torch.save({"arch": "TVTS", "epoch": 20, "state_dict": {"module." + k: v for k, v in official.items()},
                "optimizer": {"state": {}, "param_groups": [{"lr": 1e-5}]}, "monitor_best": 0.5,
                "config": ConfigParser()}, tmp_path / "checkpoint-epoch20.pth")
    monkeypatch.delitem(sys.modules, "parse_config")  # as on a machine without the official code

    model = _randomize(_v1(), seed=5)
    convert.convert_file("tvts-v1", tmp_path / "checkpoint-epoch20.pth", model, tmp_path / "v1.pt")
    convert.load_pretrained(model, tmp_path / "v1.pt")
    assert torch.equal(model.video_head.weight, official["vid_proj.0.weight"])
    assert torch.equal(model.text_head[1].weight, official["txt_proj.1.weight"])
    assert torch.equal(model.sorter.blocks[1].attn.qkv.bias, official["pred_model.blocks.1.attn.qkv.bias"])
    assert torch.equal(model.text.hf_model.transformer.q_lin.weight, official["text_model.transformer.q_lin.weight"])
    # float64 on both sides: the features agree to rounding, not to a loose tolerance
    encoder = model.video.double().eval()
    gen = torch.Generator().manual_seed(0)
    video = torch.randn(2, 4, 3, 32, 32, generator=gen, dtype=torch.float64)
    keep = torch.stack([torch.stack([torch.randperm(16, generator=gen)[:8] for _ in range(2)]) for _ in range(2)])
    video_sd = {k[len("video_model."):]: v.double() for k, v in official.items() if k.startswith("video_model.")}
    with torch.no_grad():
        torch.testing.assert_close(encoder(video, keep), official_v1_features(video_sd, video, keep, heads=2, depth=2))


def _official_v2(d=32, depth=2, p=8, n=16, frames=4, out=16, seed=0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen) * 0.3  # noqa: E731
    sd = {"conv1.weight": r(d, 3, p, p), "class_embedding": r(d), "positional_embedding": r(1 + n, d),
          "temporal_embedding": r(frames, d), "ln_pre.weight": 1 + r(d), "ln_pre.bias": r(d),
          "ln_post.weight": 1 + r(d), "ln_post.bias": r(d), "proj": r(d, out)}
    for i in range(depth):
        k = f"transformer.resblocks.{i}."
        for attn in ("attn", "timeattn"):
            sd.update({k + attn + ".qkv.weight": r(3 * d, d), k + attn + ".qkv.bias": r(3 * d),
                       k + attn + ".proj.weight": r(d, d), k + attn + ".proj.bias": r(d)})
        for ln in ("ln_1", "ln_2", "ln_3"):
            sd.update({k + ln + ".weight": 1 + r(d), k + ln + ".bias": r(d)})
        sd.update({k + "mlp.c_fc.weight": r(4 * d, d), k + "mlp.c_fc.bias": r(4 * d),
                   k + "mlp.c_proj.weight": r(d, 4 * d), k + "mlp.c_proj.bias": r(d)})
    return sd


def _clip_text_sd(seed: int) -> dict:
    torch.manual_seed(seed)
    return dict(CLIPTextTransformer(width=32, layers=2, heads=2, output_dim=16).state_dict())


def _v2_text_name(clip_key: str) -> str:
    """The official v2 model's name for a CLIP text key (self.text_model = clip.transformer, ...)."""
    if clip_key.startswith("transformer."):
        return "text_model." + clip_key[len("transformer."):]
    return clip_key if clip_key == "text_projection" else "text_" + clip_key


def test_released_tvtsv2_layout_loads_and_matches_official_forward(tmp_path):
    video_sd = _official_v2()
    text = _clip_text_sd(seed=3)
    # the official v2 model: text_model = clip.transformer, text_token_embedding = clip.token_embedding, ...
    released = {"video_model." + k: v for k, v in video_sd.items()} | {_v2_text_name(k): v for k, v in text.items()}
    torch.save({"state_dict": {"module." + k: v for k, v in released.items()}}, tmp_path / "TVTSv2_ViT_B_32.pth")

    model = _randomize(_v2("b32", SMALL_V2), seed=7)
    sorter_before = model.sorter.head.weight.clone()
    report = convert.convert_file("tvtsv2", tmp_path / "TVTSv2_ViT_B_32.pth", model, tmp_path / "v2.safetensors")
    assert report.absent_optional == ["sorter."]
    convert.load_pretrained(model, tmp_path / "v2.safetensors")
    assert torch.equal(model.sorter.head.weight, sorter_before)  # not in released files: left as it was
    for k, v in text.items():
        assert torch.equal(model.text.state_dict()[k], v), k
    encoder = model.video.double().eval()
    gen = torch.Generator().manual_seed(1)
    video = torch.randn(2, 4, 3, 32, 32, generator=gen, dtype=torch.float64)
    keep = torch.stack([torch.randperm(16, generator=gen)[:8] for _ in range(2)])  # tube: one set per clip
    video_sd = {k: v.double() for k, v in video_sd.items()}
    with torch.no_grad():
        torch.testing.assert_close(encoder.project(encoder(video, keep)),
                                   official_v2_features(video_sd, video, keep, heads=2, depth=2, act=quick_gelu))


# ----------------------------------------------------------------------------------------------
# Initialisation from CLIP / OpenCLIP and MAE
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt, container, act", [("openai-clip", "torchscript", "quick_gelu"),
                                                  ("openclip", "safetensors", "gelu")])
def test_clip_init_reproduces_the_clip_tower_per_frame(fmt, container, act, tmp_path):
    torch.manual_seed(0)
    visual = ClipVisual(32, 2, 2, patch=8, image=32, out=16, act=QuickGELU() if act == "quick_gelu" else nn.GELU())
    _randomize(visual, seed=11)
    clip = ClipFile(visual, CLIPTextTransformer(width=32, layers=2, heads=2, output_dim=16)).eval()
    images = torch.randn(3, 3, 32, 32)
    if container == "torchscript":  # OpenAI ships TorchScript archives; torch marks the API deprecated
        path = tmp_path / "ViT-tiny.pt"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.save(torch.jit.trace(clip, images[:1]), str(path))
    else:
        path = convert.write_checkpoint(clip.state_dict(), tmp_path / "open_clip_model.safetensors")

    model = _v2("b32", SMALL_V2 + [f"model.video.activation={act}", f"model.text.activation={act}"])
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


def test_mae_inflation_repeats_the_kernel_like_the_official_code(tmp_path):
    gen = torch.Generator().manual_seed(0)
    mae = {k[len("video_model."):]: v for k, v in _official_v1(seed=2).items() if k.startswith("video_model.")}
    kernel = torch.randn(32, 3, 8, 8, generator=gen)
    mae["patch_embed.proj.weight"] = kernel
    del mae["temporal_embed"]
    full = {**mae, "mask_token": torch.zeros(1, 1, 32), "decoder_embed.weight": torch.zeros(16, 32)}
    torch.save({"model": full}, tmp_path / "mae_pretrain_vit_base.pth")

    model = _v1()
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


# ----------------------------------------------------------------------------------------------
# Strictness and errors
# ----------------------------------------------------------------------------------------------
def test_strict_by_default_and_allow_missing_relaxes_on_purpose():
    model = _v2("b32", SMALL_V2)
    official, _ = to_official(_randomize(model, 2).state_dict(), "tvtsv2", model)
    no_ln3 = {k: v for k, v in official.items() if "resblocks.1.ln_3." not in k}
    with pytest.raises(ConversionError, match=r"video\.blocks\.1\.time_norm\.weight"):
        to_ours(no_ln3, "tvtsv2", model)
    _, report = to_ours(no_ln3, "tvtsv2", model, allow_missing=["video.blocks.1.time_norm.*"])
    assert sorted(report.allowed_missing) == ["video.blocks.1.time_norm.bias", "video.blocks.1.time_norm.weight"]
    with pytest.raises(ConversionError, match=r"unexpected keys .*video_model\.transformer\.resblocks\.0\.attn\.q_bias"):
        to_ours({**official, "module.video_model.transformer.resblocks.0.attn.q_bias": torch.zeros(32)}, "tvtsv2", model)
    with pytest.raises(ConversionError, match=r"video_model\.positional_embedding \(17, 32\) -> video\.pos_embed needs \(1, 5, 32\)"):
        to_ours(official, "tvtsv2", _v2("b32", TINY_V2 + ["sample.image_size=64"]))
    # a bare encoder (the brief's "video encoder only" files): text is missing unless allowed
    bare = {k[len("module.video_model."):]: v for k, v in official.items() if k.startswith("module.video_model.")}
    with pytest.raises(ConversionError, match=r"--allow-missing 'text\.\*'"):
        to_ours(bare, "tvtsv2", model)
    sd, _ = to_ours(bare, "tvtsv2", model, allow_missing=["text.*"])
    assert all(k.startswith("video.") for k in sd)
    # export: keys with no official name are named
    wide = _v1(TINY_V1 + ["model.video.width=48", "model.video.heads=2"])
    wide.text = FakeHF(32)  # text width differs from the sorter: sorter.transcript_proj has no official name
    from tvts.models.sort_head import SortHead
    wide.sorter = SortHead(48, 32, 4, heads=2)
    with pytest.raises(ConversionError, match=r"sorter\.transcript_proj\.weight"):
        to_official(wide.state_dict(), "tvts-v1", wide)


def test_a_wrong_file_gives_one_clear_line(tmp_path):
    model = _v1()
    v2 = _v2("b32", SMALL_V2)
    clip_like = {"visual.conv1.weight": torch.zeros(32, 3, 8, 8), "visual.class_embedding": torch.zeros(32)}
    torch.save(clip_like, tmp_path / "ViT-B-32.pt")
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    cases = [
        (lambda: convert.convert_file("mae", tmp_path / "ViT-B-32.pt", model, tmp_path / "o.pt"),
         r"--from mae expects an ImageMAE ViT checkpoint .*; found an OpenAI CLIP / OpenCLIP ViT state dict"),
        (lambda: convert.convert_file("openai-clip", tmp_path / "ViT-B-32.pt", model, tmp_path / "o.pt"),
         r"format openai-clip fits a divided space-time \(v2\) encoder, but the config has model\.video\.family=v1"),
        (lambda: convert.convert_file("tvtsv2", tmp_path / "ViT-B-32.pt", v2, tmp_path / "o.pt"),
         r"expects a TVTSv2 checkpoint .*; found an OpenAI CLIP"),
        (lambda: convert.convert_file("mae", tmp_path / "notes.txt", model, tmp_path / "o.pt"), r"not a checkpoint"),
        (lambda: convert.convert_file("mae", tmp_path / "absent.pth", model, tmp_path / "o.pt"), r"no such file"),
        (lambda: convert.export_file("tvts-v1", tmp_path / "ViT-B-32.pt", model, tmp_path / "o.pt"),
         r"--to tvts-v1 expects a tvts-engine checkpoint \(video\.\*\); found an OpenAI CLIP"),
    ]
    for run, pattern in cases:
        with pytest.raises(ConversionError, match=pattern) as err:
            run()
        assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------
def _cli():
    spec = importlib.util.spec_from_file_location("launch_convert", ROOT / "launch" / "convert.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_help_lists_every_format_with_an_example(capsys):
    with pytest.raises(SystemExit) as done:
        _cli().main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for name in convert.FORMATS:
        assert f"python launch/convert.py --from {name} --input" in text
    assert "--to tvtsv2 --input" in text and "--allow-missing" in text


def test_cli_imports_exports_and_reports_errors(tmp_path, capsys):
    from tvts.errors import cli as run  # what `python launch/convert.py` does with main: one line, exit 2

    cli = _cli()
    torch.manual_seed(0)
    clip = ClipFile(ClipVisual(32, 2, 2, patch=8, image=32, out=16, act=nn.GELU()),
                    CLIPTextTransformer(width=32, layers=2, heads=2, output_dim=16))
    convert.write_checkpoint(clip.state_dict(), tmp_path / "open_clip_model.safetensors")
    overrides = SMALL_V2 + ["model.video.activation=gelu"]
    base = ["--config", str(ROOT / "configs/tvtsv2_vit_b32.yaml")]
    assert cli.main(["--from", "openclip", "--input", str(tmp_path / "open_clip_model.safetensors"), *base,
                     "--output", str(tmp_path / "init.safetensors"), *overrides]) == 0
    assert "kept at their fresh init" in capsys.readouterr().out
    # an init file lacks the new temporal modules: exporting it is refused, naming them, unless allowed
    export = ["--to", "tvtsv2", "--input", str(tmp_path / "init.safetensors"), *base, "--output", str(tmp_path / "TVTSv2_ours.pth")]
    assert run(cli.main, [*export, *overrides]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "video.blocks.N.time_attn.qkv.weight (x2)" in err
    assert cli.main([*export, "--allow-missing", "video.*time_*", "--allow-missing", "video.temporal_embed", *overrides]) == 0
    exported = torch.load(tmp_path / "TVTSv2_ours.pth", weights_only=True)["state_dict"]
    assert torch.equal(exported["module.video_model.conv1.weight"], clip.visual.conv1.weight)
    assert torch.equal(exported["module.video_model.transformer.resblocks.1.attn.qkv.weight"],
                       clip.visual.transformer.resblocks[1].attn.in_proj_weight)
    assert run(cli.main, ["--from", "mae", "--input", str(tmp_path / "open_clip_model.safetensors"), *base,
                          "--output", str(tmp_path / "x.pt"), *overrides]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("convert error:")
