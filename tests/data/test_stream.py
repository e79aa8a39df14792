"""The procedural training stream: batch layout, order across workers and ranks, exact resume, and that its
clips are the synthetic corpus's scenes at the frames a decoder would return."""
from pathlib import Path

import numpy as np
import pytest
import torch

from tvts import config
from tvts.data import synthetic
from tvts.data.augment import normalize_video
from tvts.data.loader import build_train_loader
from tvts.data.sampling import cfr_frame_starts, frame_indices
from tvts.data.stream import STREAM_OFFSET, StreamClips, StreamLoader
from tvts.engine.distributed import DistInfo
from tvts.models.text import build_tokenizer

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["sample.image_size=32", "data.resize_short=32", "model.video.patch_size=16", "sample.mask_ratio=0.5",
         "train.micro_batch=3", "data.synthetic_stream=true", "data.num_workers=0"]


def _cfg(*extra):
    return config.load(ROOT / "configs" / "demo.yaml", SMALL + list(extra))


def _take(loader, n):
    out, it = [], loader.batches()
    for _ in range(n):
        out.append(next(it))
    return out


def test_build_train_loader_returns_the_stream_and_the_batch_layout():
    cfg = _cfg()
    loader = build_train_loader(cfg, DistInfo(), build_tokenizer(cfg))
    assert isinstance(loader, StreamLoader)
    kind, batch, meta = _take(loader, 1)[0]
    assert kind == "transcripts"
    assert batch["video"].shape == (3, 8, 3, 32, 32) and batch["video"].dtype == torch.uint8  # normalised on the device
    assert batch["text"]["input_ids"].shape[0] == 3 * 4
    assert sorted(batch["labels"][0].tolist()) == [0, 1, 2, 3]
    assert batch["keep_indices"].shape == (3, 4, 2)  # 4 slots of 2x2 patches, half kept
    assert meta["keys"] == [f"syn{STREAM_OFFSET + j:06d}" for j in range(3)]


def test_clips_are_the_corpus_scene_at_decoder_frames():
    cfg = _cfg("sample.mask_ratio=0")
    sample = StreamClips(cfg)(5)
    video = synthetic.sample_video(STREAM_OFFSET + 5, seed=cfg.seed, size=32, fps=8, events=4, event_s=4, gap_s=1,
                                   noise=0.2, narration_variants=8)
    # presented texts are the narration in the permuted order
    assert [sample.texts[i] for i in np.argsort(sample.labels.numpy())] == [c.text for c in video.cues]
    # frames: the full-rate render at the frame index a decoder picks for each sampled time
    every = synthetic.render(video)
    idx = frame_indices(sample.frame_times, cfr_frame_starts(video.fps, video.num_frames))
    assert (np.diff(sample.frame_times) > 0).all() and sample.frame_times[0] >= 0 and sample.frame_times[-1] < 19
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    expected = (torch.from_numpy(every[idx]).permute(0, 3, 1, 2).float() / 255 - mean) / std
    torch.testing.assert_close(normalize_video(sample.video), expected, atol=1e-5, rtol=0)


def test_workers_ranks_and_resume():
    cfg = _cfg()
    tok = build_tokenizer(cfg)
    plain = _take(StreamLoader(cfg, DistInfo(), tok), 5)
    cfg2 = _cfg("data.num_workers=2")
    workers = _take(StreamLoader(cfg2, DistInfo(), tok), 5)
    for (_, a, ma), (_, b, mb) in zip(plain, workers):
        assert ma["keys"] == mb["keys"]
        torch.testing.assert_close(a["video"], b["video"], atol=0, rtol=0)
        assert torch.equal(a["labels"], b["labels"]) and torch.equal(a["keep_indices"], b["keep_indices"])
    # resume: the 4th and 5th batches again, bitwise
    first = StreamLoader(cfg, DistInfo(), tok)
    _take(first, 3)
    resumed = StreamLoader(cfg, DistInfo(), tok)
    resumed.load_state_dict(first.state_dict())
    for (_, a, ma), (_, b, mb) in zip(plain[3:], _take(resumed, 2)):
        assert ma["keys"] == mb["keys"] and torch.equal(a["video"], b["video"])
    # two ranks read disjoint clips
    keys = [set(k for _, _, m in _take(StreamLoader(cfg, DistInfo(rank=r, world_size=2), tok), 3) for k in m["keys"])
            for r in (0, 1)]
    assert len(keys[0]) == len(keys[1]) == 9 and not keys[0] & keys[1]


def test_resume_refuses_a_shard_loader_state():
    cfg = _cfg()
    with pytest.raises(ValueError, match="data.synthetic"):
        StreamLoader(cfg, DistInfo(), build_tokenizer(cfg)).load_state_dict({"version": 1, "global_batches": 3})


def test_stream_needs_synthetic():
    with pytest.raises(config.ConfigError, match="data.synthetic_stream"):
        _cfg("data.synthetic=false")
