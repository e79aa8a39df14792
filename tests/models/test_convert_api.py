"""Checkpoint interop entry points (issue 8): round trips ours -> official -> ours, the full-size official
layouts, strictness and one-line errors, and the launch/convert.py CLI."""
from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn as nn

from tvts.models import convert
from tvts.models.convert import ConversionError, to_official, to_ours
from tvts.models.text import CLIPTextTransformer

from convert_refs import (ROOT, SMALL_V2, TINY_V1, TINY_V2, ClipFile, ClipVisual, FakeHF, randomize, v1_model,
                          v2_model)


def _equal(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].shape == b[k].shape and torch.equal(a[k], b[k]), k




# ----------------------------------------------------------------------------------------------
# Round trips
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["v1", "b32", "b16", "h14"])
def test_round_trip_ours_official_ours_is_lossless(kind, tmp_path):
    model = randomize(v1_model() if kind == "v1" else v2_model(kind), seed=1)
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
    fresh = v1_model() if kind == "v1" else v2_model(kind)
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
             "transformer.resblocks.31.ln_3.weight": (1280,),
             "transformer.resblocks.31.timeattn.qkv.weight": (3840, 1280)}, 32),
])
def test_full_size_official_layout_on_meta(kind, shapes, depth):
    with torch.device("meta"):
        model = v1_model(()) if kind == "v1" else v2_model(kind, ())
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
# Strictness and errors
# ----------------------------------------------------------------------------------------------
def test_strict_by_default_and_allow_missing_relaxes_on_purpose():
    model = v2_model("b32", SMALL_V2)
    official, _ = to_official(randomize(model, 2).state_dict(), "tvtsv2", model)
    no_ln3 = {k: v for k, v in official.items() if "resblocks.1.ln_3." not in k}
    with pytest.raises(ConversionError, match=r"video\.blocks\.1\.time_norm\.weight"):
        to_ours(no_ln3, "tvtsv2", model)
    _, report = to_ours(no_ln3, "tvtsv2", model, allow_missing=["video.blocks.1.time_norm.*"])
    assert sorted(report.allowed_missing) == ["video.blocks.1.time_norm.bias", "video.blocks.1.time_norm.weight"]
    with pytest.raises(ConversionError,
                       match=r"unexpected keys .*video_model\.transformer\.resblocks\.0\.attn\.q_bias"):
        to_ours({**official, "module.video_model.transformer.resblocks.0.attn.q_bias": torch.zeros(32)}, "tvtsv2",
                model)
    with pytest.raises(ConversionError,
                       match=r"video_model\.positional_embedding \(17, 32\) -> video\.pos_embed needs \(1, 5, 32\)"):
        to_ours(official, "tvtsv2", v2_model("b32", TINY_V2 + ["sample.image_size=64"]))
    # a bare encoder (the brief's "video encoder only" files): text is missing unless allowed
    bare = {k[len("module.video_model."):]: v for k, v in official.items() if k.startswith("module.video_model.")}
    with pytest.raises(ConversionError, match=r"--allow-missing 'text\.\*'"):
        to_ours(bare, "tvtsv2", model)
    sd, _ = to_ours(bare, "tvtsv2", model, allow_missing=["text.*"])
    assert all(k.startswith("video.") for k in sd)
    # export: keys with no official name are named
    wide = v1_model(TINY_V1 + ["model.video.width=48", "model.video.heads=2"])
    wide.text = FakeHF(32)  # text width differs from the sorter: sorter.transcript_proj has no official name
    from tvts.models.sort_head import SortHead
    wide.sorter = SortHead(48, 32, 4, heads=2)
    with pytest.raises(ConversionError, match=r"sorter\.transcript_proj\.weight"):
        to_official(wide.state_dict(), "tvts-v1", wide)


def test_a_wrong_file_gives_one_clear_line(tmp_path):
    model = v1_model()
    v2 = v2_model("b32", SMALL_V2)
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
    export = ["--to", "tvtsv2", "--input", str(tmp_path / "init.safetensors"), *base,
              "--output", str(tmp_path / "TVTSv2_ours.pth")]
    assert run(cli.main, [*export, *overrides]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "video.blocks.N.time_attn.qkv.weight (x2)" in err
    assert cli.main([*export, "--allow-missing", "video.*time_*", "--allow-missing", "video.temporal_embed",
                     *overrides]) == 0
    exported = torch.load(tmp_path / "TVTSv2_ours.pth", weights_only=True)["state_dict"]
    assert torch.equal(exported["module.video_model.conv1.weight"], clip.visual.conv1.weight)
    assert torch.equal(exported["module.video_model.transformer.resblocks.1.attn.qkv.weight"],
                       clip.visual.transformer.resblocks[1].attn.in_proj_weight)
    assert run(cli.main, ["--from", "mae", "--input", str(tmp_path / "open_clip_model.safetensors"), *base,
                          "--output", str(tmp_path / "x.pt"), *overrides]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("convert error:")
