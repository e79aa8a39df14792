import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tvts import config, kernels
from tvts.models.flops import flops, sorter_flops, text_flops, video_flops  # noqa: F401
from tvts.models.model import TVTSModel
from tvts.models.summary import main as summary_main
from tvts.models.text import build_text_encoder

CLIP_TEXT = ["model.text.kind=clip", "model.text.width=64", "model.text.layers=2", "model.text.heads=2",
             "model.text.output_dim=48", "model.text.context_length=16"]


@pytest.fixture(autouse=True)
def math_attention():
    kernels.set_default_backend("math")  # FlopCounterMode sees math attention's matmuls (no CPU SDPA formula)
    yield
    kernels.set_default_backend("auto")


def _measured(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


@pytest.mark.parametrize("family", ["v1", "v2"])
def test_analytic_flops_match_flop_counter(tiny_overrides, family):
    extra = ["model.video.family=v2", "model.video.tubelet=1", "sample.mask=tube", "model.video.output_dim=48",
             "model.vtc.projection=none"] if family == "v2" else []
    cfg = config.load(None, tiny_overrides + CLIP_TEXT + extra + ["sample.mask_ratio=0.5", "model.video.size=nano",
                                                                  "model.video.patch_size=4"])
    model = TVTSModel(cfg, text_encoder=build_text_encoder(cfg, pretrained=False)).eval()
    grid = cfg.patch_grid()
    b = 2
    video = torch.randn(b, cfg.sample.frames, 3, 32, 32)
    if family == "v2":
        keep = torch.stack([torch.randperm(grid.patches_per_slot)[:grid.keep] for _ in range(b)])
    else:
        keep = torch.stack([torch.stack([torch.randperm(grid.patches_per_slot)[:grid.keep] for _ in range(grid.slots)]) for _ in range(b)])
    with torch.no_grad():
        measured_video = _measured(lambda: model.encode_video(video, keep)) - 2 * b * (model.video_head.in_features * model.video_head.out_features if family == "v1" else 0)
        assert abs(measured_video / b - video_flops(cfg)) / video_flops(cfg) < 0.02
        ids = torch.randint(0, 49406, (b * 4, 16))
        ids[:, -1] = 49407  # full length: the analytic count assumes the whole context
        measured_text = _measured(lambda: model.encode_text({"input_ids": ids, "attention_mask": torch.ones_like(ids)}))
        assert abs(measured_text / b - text_flops(cfg)) / text_flops(cfg) < 0.02
        _, tokens = model.encode_video(video, keep)
        vectors = torch.randn(b, 4, 48)
        measured_sorter = _measured(lambda: model.sorter(tokens, vectors))
        expected = sorter_flops(cfg, 48)
        assert abs(measured_sorter / b - expected) / expected < 0.02


def test_summary_runs_for_every_shipped_config(capsys):
    import json
    from pathlib import Path

    for path in sorted(p for p in Path("configs").glob("*.yaml") if not p.name.startswith("finetune_")):
        assert summary_main(["--config", str(path), "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert set(out) >= {"video", "text", "sorter"}
        assert out["video"]["params"] > 0 and out["video"]["tflops"] > 0


def test_h14_numbers():
    """The README's ViT-H/14 (632 M) + OpenCLIP-H text (354 M); masked forward ~1.57 TFLOP (anchors §2.5)."""
    cfg = config.load("configs/tvtsv2_vit_h14.yaml")
    report = flops(cfg)
    assert abs(report.video / 1e12 - 1.57) < 0.05
