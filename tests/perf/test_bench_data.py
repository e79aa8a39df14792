"""The data benchmark (tvts.perf.bench_data, behind launch/bench_data.py) runs end to end at a tiny size: every
per-sample case and a loader row give their table rows with positive figures (the figures themselves are
not asserted: CI machines vary)."""
import math

import pytest

from tvts.perf.bench_data import CASES, V1, loaders, make_inputs, per_sample

EXPECTED_PATHS = {"raw-v1": ["official, raw video", "ours, raw video"],
                  "raw-demo": ["official, raw video", "ours, raw video", "ours, shard"],
                  "demo": ["official, shard", "ours, shard", "ours, shard + decoded cache"],
                  "v1": ["official, shard", "ours, shard"],
                  "v1-raw": ["official, raw video", "ours, raw video", "ours, shard"]}


def test_data_benchmark_tiny(tmp_path):
    samples = make_inputs(tmp_path, videos=2, raw_videos=1, raw_size=64, v1_short=32, workers=1)
    assert set(samples) == {"demo", "raw", "v1"} and all(samples.values())
    rows = per_sample(samples, tmp_path, 64, limit=1, repeats=1, v1_short=32)
    assert [(r["case"], r["path"]) for r in rows] == [(c, p) for c in CASES for p in EXPECTED_PATHS[c]]
    for row in rows:
        for key in ("ms_per_clip", "wall_ms_per_clip", "clips_per_s", "frames_per_s", "vs_official"):
            assert math.isfinite(row[key]) and row[key] > 0, (row["case"], row["path"], key)
        assert (row["cores_per_gpu"] is not None and row["cores_per_gpu"] > 0) == (row["output"] == V1)
    assert [r["vs_official"] for r in rows if r["path"].startswith("official")] == [1.0] * len(CASES)

    loader_rows = loaders(str(tmp_path / "v1" / "shards"), len(samples["v1"]), [0], batches=1, batch=2,
                          output=V1, caches=(0,), input_name="v1 shards")
    assert len(loader_rows) == 1
    row = loader_rows[0]
    assert (row["input"], row["output"], row["workers"], row["decoded_cache"]) == ("v1 shards", V1, 0, False)
    assert row["clips"] == 2 and row["clips_per_s"] > 0 and row["frames_per_s"] == pytest.approx(16 * row["clips_per_s"])
    assert row["frames_per_cpu_s"] > 0 and row["cores_per_gpu"] > 0
