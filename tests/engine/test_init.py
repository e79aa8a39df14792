"""model.init: the training entry point starts from released or exported weights.

The TVTSv2 design property through model.init (small random CLIPs in the real OpenAI and OpenCLIP layouts,
made here): at step 0 the video encoder is the CLIP image tower frame by frame and the text tower is CLIP's;
the launcher logs and records what it loaded, a resumed run does not read the file again, and every bad
input is one line. (Bitwise loading under ddp / fsdp / zero: tests/engine/test_strategies.py.)
"""
import hashlib
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn as nn



def _models_test_module(name: str):
    """A module of tests/models by path, under a private name: the reference CLIP towers live there. (Not by
    putting tests/models on sys.path: that leaks into every process the suite spawns later.)"""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"_init_refs_{name}", Path(__file__).resolve().parents[1] / "models" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_convert_refs, _text_refs = _models_test_module("convert_refs"), _models_test_module("test_text")
SMALL_V2, ClipFile, ClipVisual = _convert_refs.SMALL_V2, _convert_refs.ClipFile, _convert_refs.ClipVisual
QuickGELU, _randomize, _RefCLIPText = _convert_refs.QuickGELU, _convert_refs.randomize, _text_refs._RefCLIPText

from tvts import config  # noqa: E402
from tvts.engine.distributed import DistInfo  # noqa: E402
from tvts.engine.build import build_strategy  # noqa: E402
from tvts.models import convert  # noqa: E402
from tvts.models.init import open_init  # noqa: E402
from tvts.models.model import TVTSModel  # noqa: E402
from tvts.models.text import CLIPTextTransformer, build_tokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
V2_RECIPE = ROOT / "configs" / "tvtsv2_vit_b32.yaml"


def _clip_file(tmp_path, fmt: str):
    """A random CLIP (32 wide, 2 blocks, 8 px patches on 32 px) saved as OpenAI does (TorchScript) or as
    OpenCLIP does (a state dict); returns (path, visual tower, text state dict in OpenAI names, activation)."""
    act = "quick_gelu" if fmt == "openai-clip" else "gelu"
    torch.manual_seed(0)
    visual = _randomize(ClipVisual(32, 2, 2, patch=8, image=32, out=16, act=QuickGELU() if act == "quick_gelu" else nn.GELU()), 11)
    text = _randomize(CLIPTextTransformer(width=32, layers=2, heads=2, output_dim=16, act=act), 12)
    clip = ClipFile(visual, text).eval()
    if fmt == "openai-clip":
        path = tmp_path / "ViT-tiny.pt"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.save(torch.jit.trace(clip, torch.randn(1, 3, 32, 32)), str(path))
    else:
        path = convert.write_checkpoint(clip.state_dict(), tmp_path / "open_clip_model.safetensors")
    text_sd = {k: v for k, v in clip.state_dict().items() if not k.startswith("visual.") and k in _ref_text(act).state_dict()}
    return path, visual, text_sd, act


def _ref_text(act):
    return _RefCLIPText(49408, 77, 32, 2, 2, 16, QuickGELU() if act == "quick_gelu" else nn.GELU())


@pytest.mark.parametrize("fmt", ["openai-clip", "openclip"])
def test_clip_init_makes_the_v2_encoder_frame_wise_clip_and_the_text_tower_clip(fmt, tmp_path):
    path, visual, text_sd, act = _clip_file(tmp_path, fmt)
    overrides = [*SMALL_V2, f"model.video.activation={act}", f"model.text.activation={act}", "model.text.context_length=77",
                 f"model.init={path}", f"model.init_format={fmt}", "model.video.temporal_embed_std=0"]
    cfg = config.load(V2_RECIPE, overrides)
    plan = open_init(cfg)
    assert "video.blocks.*.time_attn.*" in plan.kept and "video.temporal_embed" in plan.kept and "sorter.*" in plan.kept
    torch.manual_seed(5)
    model = TVTSModel(cfg, pretrained_text=False)
    strategy = build_strategy(cfg, model, DistInfo(), 1, plan.source)
    images = torch.randn(6, 3, 32, 32)
    tokens = build_tokenizer(cfg)(["a man slices bread", "the dog runs", "then it rains"])
    model.eval()
    with torch.no_grad():
        # each frame on its own (the clip's one CLS token attends over all its frames): every token equal
        ours = strategy.module.video.project(strategy.module.video(images.unsqueeze(1)))  # (6, 1 + N, out)
        torch.testing.assert_close(ours, visual.eval()(images), atol=1e-5, rtol=1e-5)
        ref = _ref_text(act)
        ref.load_state_dict(text_sd)
        torch.testing.assert_close(strategy.module.text(tokens), ref.eval()(tokens["input_ids"]), atol=1e-5, rtol=1e-5)


def test_a_converted_file_and_the_released_file_give_the_same_weights(tmp_path):
    path, _, _, act = _clip_file(tmp_path, "openai-clip")
    base = [*SMALL_V2, f"model.video.activation={act}", f"model.text.activation={act}", "model.text.context_length=77"]
    cfg = config.load(V2_RECIPE, base)
    convert.convert_file("openai-clip", path, convert.build_target(cfg), tmp_path / "clip.safetensors")
    direct = open_init(config.load(V2_RECIPE, base + [f"model.init={path}", "model.init_format=openai-clip"]))
    converted = open_init(config.load(V2_RECIPE, base + [f"model.init={tmp_path / 'clip.safetensors'}"]))
    assert direct.loaded == converted.loaded and direct.kept == converted.kept
    for key in direct.loaded:
        assert torch.equal(direct.source.tensor(key), converted.source.tensor(key)), key
    assert converted.sha256 == hashlib.sha256((tmp_path / "clip.safetensors").read_bytes()).hexdigest()


@pytest.mark.parametrize("case", ["missing", "format", "unknown_format", "shapes", "unexpected"])
def test_bad_init_is_one_line(case, tmp_path):
    path, _, _, act = _clip_file(tmp_path, "openclip")
    base = [*SMALL_V2, f"model.video.activation={act}", f"model.text.activation={act}", "model.text.context_length=77"]
    convert.convert_file("openclip", path, convert.build_target(config.load(V2_RECIPE, base)), tmp_path / "ours.safetensors")
    overrides, message = {
        "missing": ([f"model.init={tmp_path / 'nope.safetensors'}"],
                    r"^model.init: .*nope.safetensors: no such file; make it with python launch/convert.py --from openai-clip"),
        "format": ([f"model.init={path}", "model.init_format=mae"], r"^model.init: .*open_clip_model.safetensors: format mae fits a joint space-time \(v1\) encoder"),
        "unknown_format": ([f"model.init={path}", "model.init_format=clip"], r"^model.init_format: 'clip' is not one of"),
        "shapes": ([f"model.init={tmp_path / 'ours.safetensors'}", "model.video.width=64", "model.video.heads=2"],
                   r"^model.init: .*ours.safetensors: does not fit the model of this config \(.*shapes: video"),
        "unexpected": ([f"model.init={tmp_path / 'ours.safetensors'}", "model.text.layers=1"],
                       r"^model.init: .*does not fit .*unexpected: text.transformer.resblocks.1"),
    }[case]
    from tvts.errors import UserError

    with pytest.raises(UserError, match=message) as err:
        open_init(config.load(V2_RECIPE, base + overrides))
    assert "\n" not in str(err.value)


def test_pretrain_logs_the_init_records_it_and_a_resume_does_not_read_it_again(tmp_path):
    """launch/pretrain.py with model.init: one log line and a metrics.jsonl record (with the file's sha256);
    the run dies after its first checkpoint, the file is deleted, and the re-run resumes without it."""
    from safetensors.torch import save_file

    tiny = ["model.video.size=atto", "model.video.patch_size=8", "sample.image_size=32", "model.sort.heads=2",
            "data.resize_short=32", "data.num_workers=0", "train.micro_batch=2", "model.text.kind=clip",
            "model.text.width=32", "model.text.layers=1", "model.text.heads=2", "model.text.output_dim=32",
            "model.text.frozen=false", "model.text.cache=false", "model.sort.transcript_norm=none",
            "train.log_every=1", "train.threads=1", "train.eval_every=0", "train.steps=4", "train.ckpt_every=2",
            f"train.run_dir={tmp_path / 'run'}", "data.synthetic=false", "data.synthetic_stream=false"]
    from tvts.data.prepare import ensure_demo_corpus

    corpus = config.load(ROOT / "configs" / "demo.yaml", tiny[:3] + [f"data.root={tmp_path / 'data'}", "data.synthetic=true",
                                                                      "data.synthetic_stream=false"])
    ensure_demo_corpus(corpus, None, num_videos=6, downstream=(8, 8), workers=1)
    tiny.append(f"data.train=[{corpus.data.train[0]}]")
    cfg = config.load(ROOT / "configs" / "demo.yaml", tiny)
    torch.manual_seed(3)
    state = {k: v for k, v in TVTSModel(cfg, pretrained_text=False).state_dict().items() if k.startswith("video.")}
    init = tmp_path / "video.safetensors"
    save_file({k[len("video."):]: v.contiguous() for k, v in state.items()}, str(init), metadata={"part": "video"})
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    args = [sys.executable, str(ROOT / "launch" / "pretrain.py"), *tiny, f"model.init={init}"]
    first = subprocess.run(args, env={**env, "TVTS_FAULT_EXIT_RANK_STEP": "0:3"}, capture_output=True, text=True,
                           timeout=300, cwd=ROOT)
    assert first.returncode == 1, first.stderr[-2000:]
    line = [x for x in first.stdout.splitlines() if x.startswith("model.init: ")]
    assert len(line) == 1 and f"{len(state)} tensors from {init}" in line[0], first.stdout
    assert "kept their own init: sorter.*, text.*, text_head.*, video_head.*" in line[0]
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert record["step"] == 0 and record["init/sha256"] == hashlib.sha256(init.read_bytes()).hexdigest()
    assert record["init/loaded"] == len(state) and record["init/format"] == "tvts-engine"
    init.unlink()
    again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"model.init: {init} not read: the run resumes from step_00000002" in again.stdout
    assert "done: 4 steps" in again.stdout
