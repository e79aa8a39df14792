"""Official TVTS v1 checkpoints (issue 8): a training checkpoint written by hand, with the pickled
``parse_config.ConfigParser`` of official runs, loads and matches the official forward."""
from __future__ import annotations

import sys
import types
from collections import OrderedDict
from pathlib import Path

import torch

from tvts.models import convert

from convert_refs import official_v1_features, official_v1_state, randomize, v1_model


def test_official_v1_checkpoint_loads_and_matches_official_forward(tmp_path, monkeypatch):
    official = official_v1_state()
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

    model = randomize(v1_model(), seed=5)
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
