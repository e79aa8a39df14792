"""Parameters and forward TFLOPs per clip of a config's video encoder, text encoder and sorter.

    python -m tvts.models.summary --config configs/tvtsv2_vit_h14.yaml [--json] [key=value ...]

The model is built on the meta device (no memory, no weights read), so every size runs anywhere.
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

from tvts import config as config_lib


def _count(module: torch.nn.Module) -> tuple[int, int]:
    params = list(module.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def summarize(cfg) -> dict:
    """{"video"|"text"|"sorter": {"params", "trainable", "tflops"}, "tokens": ...} for one transcript clip."""
    from tvts.models.flops import flops
    from tvts.models.model import TVTSModel
    from tvts.models.text import build_text_encoder

    with torch.device("meta"):
        text = build_text_encoder(cfg, pretrained=False)
        model = TVTSModel(cfg, text_encoder=text)
    hf_cfg = getattr(text, "hf_config", None)
    report = flops(cfg, text_config=hf_cfg)
    grid = cfg.patch_grid()
    rows = {
        "video": (model.video, report.video),
        "text": (model.text, report.text),
        # the sorter row carries the VTC heads too: both are dropped after pre-training
        "sorter": (torch.nn.ModuleList([model.sorter, model.video_head, model.text_head]), report.sorter + report.heads),
    }
    out = {}
    for name, (module, fl) in rows.items():
        total, trainable = _count(module)
        out[name] = {"params": total, "trainable": trainable, "tflops": fl / 1e12}
    out["total"] = {
        "params": sum(r["params"] for r in out.values()),
        "trainable": sum(r["trainable"] for r in out.values()),
        "tflops": report.total / 1e12,
    }
    out["tokens"] = {"video": 1 + grid.visible_tokens, "frames": cfg.sample.frames, "transcripts": cfg.sample.num_windows}
    return out


def format_table(name: str, summary: dict) -> str:
    tok = summary["tokens"]
    lines = [f"{name}: {tok['frames']} frames, {tok['video']} video tokens, {tok['transcripts']} transcripts per clip",
             f"{'part':<8} {'params':>14} {'trainable':>14} {'fwd TFLOP/clip':>15}"]
    for part in ("video", "text", "sorter", "total"):
        r = summary[part]
        lines.append(f"{part:<8} {r['params'] / 1e6:>12.2f} M {r['trainable'] / 1e6:>12.2f} M {r['tflops']:>15.4f}")
    lines.append("(1 multiply-add = 2 FLOPs; masked patches excluded; text at its full token length)")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="a YAML recipe, e.g. configs/demo.yaml")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    args = ap.parse_args(argv)
    try:
        cfg = config_lib.load(args.config, args.overrides)
        summary = summarize(cfg)
    except config_lib.ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({k: summary[k] for k in ("video", "text", "sorter", "total", "tokens")}, indent=2))
    else:
        print(format_table(cfg.name, summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
