"""Helpers shared by the profiler tests (tests/perf/test_profiler_*.py): the repository root and a tiny
config (atto video, a 1-layer CLIP text tower) that every profiler run here uses."""
from pathlib import Path

from tvts import config

ROOT = Path(__file__).resolve().parents[2]
# atto video on 8 frames of 32 px, a 1-layer CLIP text tower (no weights to read)
TINY = ["model.video.size=atto", "model.video.patch_size=8", "sample.image_size=32", "model.sort.heads=2",
        "data.resize_short=32", "data.num_workers=0", "train.micro_batch=2", "data.decoded_cache_mb=0",
        "model.text.kind=clip", "model.text.width=32", "model.text.layers=1", "model.text.heads=2",
        "model.text.output_dim=32", "model.text.context_length=16", "model.text.frozen=false",
        "model.text.cache=false", "model.sort.transcript_norm=none", "data.synthetic=false",
        "data.synthetic_stream=false",
        "train.threads=1", "sample.mask_ratio=0.5"]  # masked, so that mask draws are compared too


def tiny(*extra):
    return config.load(ROOT / "configs" / "demo.yaml", TINY + list(extra))
