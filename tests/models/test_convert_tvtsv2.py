"""Official TVTSv2 checkpoints (issue 8): the released layout written by hand loads and matches the official
forward."""
from __future__ import annotations

import torch

from tvts.models import convert
from tvts.models.text import CLIPTextTransformer

from convert_refs import SMALL_V2, official_v2_features, quick_gelu, randomize, v2_model


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

    model = randomize(v2_model("b32", SMALL_V2), seed=7)
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
