"""The training / evaluation loaders on tiny shard sets written here.

Clips are 32x32 H.264 at 4 fps, 24 frames (6 s). Frame ``k`` of clip ``c`` is stamped in its pixels:
the left half is grey ``8 + 10 k``, the right half grey ``30 + 7 c``, so a test can read back which
frame of which clip ended up in a batch (image_size = resize_short = 32: no resize, full crop).
"""
from __future__ import annotations

import io
import json
import os
import tarfile
import warnings

import numpy as np
import pytest
import torch

from tvts import config as config_mod
from tvts.data.augment import NORMALIZE_STATS, normalize_video
from tvts.data.loader import build_eval_loader, build_train_loader, mix_kind
from tvts.data.pipeline import sample_rng
from tvts.data.sampling import cfr_frame_starts, frame_indices, frame_times
from tvts.data.shards import write_shard
from tvts.engine.distributed import DistInfo

FPS, SIDE, NUM_FRAMES = 4, 32, 24
WINDOWS = [[0.25, 1.25], [1.75, 2.75], [3.25, 4.25], [4.75, 5.75]]  # relative to the clip start
SPAN = (WINDOWS[0][0], WINDOWS[-1][1])
T = 8  # 4 windows x 2 frames


# ----------------------------------------------------------------------------------------------
# Helpers and fixtures
# ----------------------------------------------------------------------------------------------
class CharTokenizer:
    """Picklable stand-in for the real tokenizers: one id per character, zero-padded to 32."""

    length = 32

    def __call__(self, texts):
        ids = torch.zeros(len(texts), self.length, dtype=torch.long)
        for i, text in enumerate(texts):
            codes = [ord(c) for c in text[: self.length]]
            ids[i, : len(codes)] = torch.tensor(codes)
        return {"input_ids": ids, "attention_mask": (ids > 0).long()}


def detokenize(row: torch.Tensor) -> str:
    return "".join(chr(int(c)) for c in row if c)


def encode_clip(clip: int, num_frames: int = NUM_FRAMES) -> bytes:
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width = stream.height = SIDE
        stream.pix_fmt = "yuv420p"
        stream.options = {"g": "4", "bf": "0", "crf": "10", "preset": "ultrafast"}
        for k in range(num_frames):
            image = np.empty((SIDE, SIDE, 3), np.uint8)
            image[:, : SIDE // 2] = 8 + 10 * k
            image[:, SIDE // 2:] = 30 + 7 * clip
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return buf.getvalue()


def read_stamps(video: torch.Tensor) -> tuple[list[int], list[int]]:
    """(frame indices, clip ids) of a (T, 3, S, S) clip: uint8 pixels (a loader batch's) or normalised float."""
    mean, std = NORMALIZE_STATS["imagenet"]
    if video.dtype == torch.uint8:
        pixels = video.float()
    else:
        pixels = (video * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)) * 255
    left = pixels[:, :, 8:24, 4:12].mean(dim=(1, 2, 3))
    right = pixels[:, :, 8:24, 20:28].mean(dim=(1, 2, 3))
    return [round((float(v) - 8) / 10) for v in left], [round((float(v) - 30) / 7) for v in right]


def transcript_meta(key: str) -> dict:
    return {"kind": "transcripts", "source": key, "span": [10.0, 16.0], "windows": WINDOWS,
            "transcripts": [f"{key} w{i}" for i in range(4)], "duration": NUM_FRAMES / FPS, "fps": FPS,
            "frames": NUM_FRAMES, "width": SIDE, "height": SIDE}


def caption_meta(key: str) -> dict:
    return {"kind": "captions", "source": key, "caption": f"{key} caption", "duration": NUM_FRAMES / FPS,
            "fps": FPS, "frames": NUM_FRAMES, "width": SIDE, "height": SIDE}


def write_set(directory, kind: str, shards: list[list[tuple[str, dict]]]) -> str:
    """A shard set: one list of (key, members) per shard, plus index.json."""
    os.makedirs(directory, exist_ok=True)
    entries = []
    for i, samples in enumerate(shards):
        name = f"shard-{i:06d}.tar"
        write_shard(os.path.join(directory, name), samples)
        entries.append({"name": name, "samples": len(samples)})
    index = {"kind": kind, "shards": entries, "samples": sum(e["samples"] for e in entries), "skipped": {}, "config": {}}
    with open(os.path.join(directory, "index.json"), "w") as f:
        json.dump(index, f)
    return str(directory)


def clip_id(key: str) -> int:
    return int(key.rsplit("-", 1)[1])


@pytest.fixture(scope="module")
def clip_bytes():
    return {c: encode_clip(c) for c in range(28)}


def _transcript_sample(clip_bytes, c: int, prefix: str = "vid") -> tuple[str, dict]:
    key = f"{prefix}-{c:02d}"
    return key, {"mp4": clip_bytes[c], "json": json.dumps(transcript_meta(key)).encode()}


@pytest.fixture(scope="module")
def train_set(tmp_path_factory, clip_bytes):
    """16 transcript samples in 3 shards of 6, 5, 5."""
    samples = [_transcript_sample(clip_bytes, c) for c in range(16)]
    return write_set(tmp_path_factory.mktemp("train"), "transcripts", [samples[:6], samples[6:11], samples[11:]])


@pytest.fixture(scope="module")
def caption_set(tmp_path_factory, clip_bytes):
    samples = []
    for c in range(16, 24):
        key = f"cap-{c:02d}"
        samples.append((key, {"mp4": clip_bytes[c], "json": json.dumps(caption_meta(key)).encode()}))
    return write_set(tmp_path_factory.mktemp("captions"), "captions", [samples[:4], samples[4:]])


def make_cfg(tiny_overrides, *extra):
    base = ["sample.image_size=32", "data.resize_short=32", "sample.frames_per_window=2", "sample.caption_frames=4",
            "sample.mask_ratio=0.5", "train.micro_batch=2", "data.num_workers=0", "data.shuffle_buffer=4", "seed=3"]
    return config_mod.load(None, [*tiny_overrides, *base, *extra])


def take(loader, n: int) -> list:
    out = []
    for item in loader.batches():
        out.append(item)
        if len(out) == n:
            break
    return out


def assert_same_batches(a: list, b: list) -> None:
    assert len(a) == len(b)
    for (ka, ba, ma), (kb, bb, mb) in zip(a, b):
        assert ka == kb and ma["keys"] == mb["keys"] and ma.get("g") == mb.get("g")
        assert ba.keys() == bb.keys()
        for name in ba:
            if name == "text":
                for t in ba["text"]:
                    assert torch.equal(ba["text"][t], bb["text"][t])
            else:
                assert torch.equal(ba[name], bb[name]), name


# ----------------------------------------------------------------------------------------------
# Batches
# ----------------------------------------------------------------------------------------------
def test_transcript_batch_layout_labels_and_texts(tiny_overrides, train_set):
    cfg = make_cfg(tiny_overrides, f"data.train=[{train_set}]")
    loader = build_train_loader(cfg, DistInfo(), CharTokenizer())
    cfg_grid = cfg.patch_grid()
    seen_orders = set()
    for kind, batch, meta in take(loader, 4):
        assert kind == "transcripts"
        assert set(batch) == {"video", "text", "labels", "keep_indices"}
        # uint8: normalised on the device by the consumer
        assert batch["video"].shape == (2, T, 3, 32, 32) and batch["video"].dtype == torch.uint8
        assert batch["text"]["input_ids"].shape == (8, 32) and batch["text"]["input_ids"].dtype == torch.int64
        assert batch["labels"].shape == (2, 4) and batch["labels"].dtype == torch.int64
        keep = batch["keep_indices"]
        assert keep.shape == (2, cfg_grid.slots, cfg_grid.keep) and keep.dtype == torch.int64
        assert cfg_grid.keep == 8 and int(keep.max()) < cfg_grid.patches_per_slot
        for b, key in enumerate(meta["keys"]):
            labels = batch["labels"][b].tolist()
            assert sorted(labels) == [0, 1, 2, 3]
            seen_orders.add(tuple(labels))
            chronological = transcript_meta(key)["transcripts"]
            for i in range(4):  # rows b*K .. b*K+K-1: clip b's transcripts in presented order
                assert detokenize(batch["text"]["input_ids"][b * 4 + i]) == chronological[labels[i]]
    assert len(seen_orders) > 2  # the order really is shuffled


def test_iterating_a_loader_leaves_the_global_rng_alone(tiny_overrides, train_set):
    """A DataLoader draws its workers' base seed from the global torch RNG unless it has a generator: each
    resume or evaluation would then move the model's dropout draws away from an uninterrupted run's."""
    cfg = make_cfg(tiny_overrides, f"data.train=[{train_set}]", "data.num_workers=1")
    loader = build_train_loader(cfg, DistInfo(), CharTokenizer())
    torch.manual_seed(5)
    before = torch.get_rng_state()
    take(loader, 1)
    take(loader, 1)
    assert torch.equal(torch.get_rng_state(), before)


def test_tube_mask_and_no_mask(tiny_overrides, train_set):
    cfg = make_cfg(tiny_overrides, f"data.train=[{train_set}]", "sample.mask=tube")
    _, batch, _ = take(build_train_loader(cfg, DistInfo(), CharTokenizer()), 1)[0]
    assert batch["keep_indices"].shape == (2, cfg.patch_grid().keep)
    cfg = make_cfg(tiny_overrides, f"data.train=[{train_set}]", "sample.mask_ratio=0.0")
    _, batch, _ = take(build_train_loader(cfg, DistInfo(), CharTokenizer()), 1)[0]
    assert "keep_indices" not in batch


def test_frames_are_the_sampled_ones(tiny_overrides, train_set):
    cfg = make_cfg(tiny_overrides, f"data.train=[{train_set}]")
    starts = cfr_frame_starts(FPS, NUM_FRAMES)
    width = (SPAN[1] - SPAN[0]) / T
    for _, batch, meta in take(build_train_loader(cfg, DistInfo(), CharTokenizer()), 3):
        for b, (key, epoch) in enumerate(zip(meta["keys"], meta["epochs"])):
            frames, clips = read_stamps(batch["video"][b])
            assert clips == [clip_id(key)] * T
            times = frame_times(*SPAN, T, True, sample_rng(cfg.seed, epoch, key))
            assert frames == frame_indices(times, starts).tolist()
            for k, f in enumerate(frames):  # independent of the seeding: frame f is shown inside bin k
                lo, hi = SPAN[0] + k * width, SPAN[0] + (k + 1) * width
                assert f / FPS < hi and (f + 1) / FPS > lo


def test_same_seed_same_batches_other_seed_differs(tiny_overrides, train_set):
    cfg = make_cfg(tiny_overrides, f"data.train=[{train_set}]")
    a = take(build_train_loader(cfg, DistInfo(), CharTokenizer()), 3)
    b = take(build_train_loader(cfg, DistInfo(), CharTokenizer()), 3)
    assert_same_batches(a, b)
    other = take(build_train_loader(make_cfg(tiny_overrides, f"data.train=[{train_set}]", "seed=4"), DistInfo(),
                                    CharTokenizer()), 3)
    assert [m["keys"] for _, _, m in other] != [m["keys"] for _, _, m in a]


# ----------------------------------------------------------------------------------------------
# Split and resume
# ----------------------------------------------------------------------------------------------
def test_rank_and_worker_split_covers_each_sample_once_per_epoch(tiny_overrides, train_set):
    # 3 shards over 2 ranks x 2 workers: rank 0 splits its 2 shards by worker, rank 1 its 1 shard by key
    cfg = make_cfg(tiny_overrides, f"data.train=[{train_set}]", "data.num_workers=2")
    seen = []
    for rank in range(2):
        loader = build_train_loader(cfg, DistInfo(rank=rank, world_size=2), CharTokenizer())
        roles = set()
        for _, _, meta in loader.batches():
            roles.add(meta["role"])
            seen += [(k, e, rank) for k, e in zip(meta["keys"], meta["epochs"]) if e == 0]
            if loader.epoch >= 1:  # every worker of this rank has finished epoch 0
                break
        assert roles == {0, 1}
    keys = sorted(k for k, _, _ in seen)
    assert keys == [f"vid-{c:02d}" for c in range(16)]  # every sample exactly once
    assert {r for _, _, r in seen} == {0, 1}


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch_yields_exactly_the_remaining_batches(tiny_overrides, train_set, workers):
    cfg = make_cfg(tiny_overrides, f"data.train=[{train_set}]", f"data.num_workers={workers}")
    n, m = 5, 6  # 8 batches per epoch: the resumed part crosses into epoch 1
    full = take(build_train_loader(cfg, DistInfo(), CharTokenizer()), n + m)
    first = build_train_loader(cfg, DistInfo(), CharTokenizer())
    assert_same_batches(take(first, n), full[:n])
    state = first.state_dict()
    buf = io.BytesIO()
    torch.save(state, buf)  # goes through a checkpoint
    buf.seek(0)
    resumed = build_train_loader(cfg, DistInfo(), CharTokenizer())
    resumed.load_state_dict(torch.load(buf, weights_only=False))
    rest = take(resumed, m)
    assert_same_batches(rest, full[n:])
    assert {e for _, _, meta in rest for e in meta["epochs"]} == {0, 1}


def test_resume_at_another_world_size_restarts_the_epoch(tiny_overrides, train_set):
    cfg = make_cfg(tiny_overrides, f"data.train=[{train_set}]")
    loader = build_train_loader(cfg, DistInfo(), CharTokenizer())
    take(loader, 10)  # into epoch 1
    state = loader.state_dict()
    other = build_train_loader(cfg, DistInfo(rank=1, world_size=2), CharTokenizer())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        other.load_state_dict(state)
    assert any("world size" in str(w.message) for w in caught)
    assert other.roles == [{"transcripts": (1, 0)}] and other.global_batches == 10


def test_decoded_cache_gives_identical_batches(tiny_overrides, train_set):
    plain = take(build_train_loader(make_cfg(tiny_overrides, f"data.train=[{train_set}]"), DistInfo(),
                                    CharTokenizer()), 17)
    cached_loader = build_train_loader(make_cfg(tiny_overrides, f"data.train=[{train_set}]", "data.decoded_cache_mb=8"),
                                       DistInfo(), CharTokenizer())
    cached = take(cached_loader, 17)  # two epochs and a bit: the second one comes from the cache
    assert_same_batches(cached, plain)
    stats = cached_loader.cache_stats[0]
    assert stats["clips"] == 16 and stats["misses"] == 16 and stats["hits"] == 18


# ----------------------------------------------------------------------------------------------
# Mixing
# ----------------------------------------------------------------------------------------------
def test_alternate_mixing(tiny_overrides, train_set, caption_set):
    cfg = make_cfg(tiny_overrides, f"data.train=[{train_set}]", f"data.captions=[{caption_set}]")
    items = take(build_train_loader(cfg, DistInfo(), CharTokenizer()), 6)
    assert [k for k, _, _ in items] == ["transcripts", "captions"] * 3
    _, batch, meta = items[1]
    assert set(batch) == {"video", "text"}  # caption_mask_ratio 0: no keep indices; no labels
    assert batch["video"].shape == (2, 4, 3, 32, 32) and batch["text"]["input_ids"].shape == (2, 32)
    assert [detokenize(r) for r in batch["text"]["input_ids"]] == [f"{k} caption" for k in meta["keys"]]


def test_interleave_mixing_is_seeded_and_resumable(tiny_overrides, train_set, caption_set):
    cfg = make_cfg(tiny_overrides, f"data.train=[{train_set}]", f"data.captions=[{caption_set}]",
                   "data.mix=interleave", "data.caption_ratio=0.3")
    kinds = [k for k, _, _ in take(build_train_loader(cfg, DistInfo(), CharTokenizer()), 12)]
    assert kinds == [mix_kind(g, ["transcripts", "captions"], "interleave", 0.3, cfg.seed) for g in range(12)]
    assert 0 < kinds.count("captions") < 12
    first = build_train_loader(cfg, DistInfo(), CharTokenizer())
    take(first, 7)
    resumed = build_train_loader(cfg, DistInfo(), CharTokenizer())
    resumed.load_state_dict(first.state_dict())
    assert [k for k, _, _ in take(resumed, 5)] == kinds[7:]


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------
def test_bad_samples_and_shards_are_skipped_and_counted(tiny_overrides, tmp_path, clip_bytes):
    good = [_transcript_sample(clip_bytes, c, "ok") for c in range(8)]
    broken_video = ("bad-24", {"mp4": b"\x00not a video" * 50, "json": json.dumps(transcript_meta("bad-24")).encode()})
    broken_json = ("bad-25", {"mp4": clip_bytes[25], "json": b"{not json"})
    tail = [_transcript_sample(clip_bytes, c, "cut") for c in range(26, 28)]
    directory = write_set(tmp_path / "set", "transcripts",
                          [good[:4] + [broken_video, broken_json], good[4:], tail, tail[:1]])
    cut = os.path.join(directory, "shard-000002.tar")
    with tarfile.open(cut) as tar:
        member = tar.getmember("cut-27.mp4")
    os.truncate(cut, member.offset_data + member.size // 2)  # cut inside cut-27's video
    with open(os.path.join(directory, "shard-000003.tar"), "wb") as f:
        f.write(b"this is not a tar file" * 100)
    cfg = make_cfg(tiny_overrides, f"data.train=[{directory}]")
    loader = build_train_loader(cfg, DistInfo(), CharTokenizer())
    keys = []
    for _, batch, meta in loader.batches():
        keys += [k for k, e in zip(meta["keys"], meta["epochs"]) if e == 0]
        for b, key in enumerate(meta["keys"]):
            frames, clips = read_stamps(batch["video"][b])
            assert clips == [clip_id(key)] * T and min(frames) >= 0  # real frames, never black ones
        if loader.epoch >= 1:
            break
    assert sorted(keys) == sorted([k for k, _ in good] + ["cut-26"])
    # all of epoch 0 and at most the start of epoch 1 has been read
    per_epoch = {"bad_json": 1, "corrupt_shard": 2, "corrupt_video": 1}
    assert loader.skipped.keys() == per_epoch.keys()
    assert all(per_epoch[r] <= n <= 2 * per_epoch[r] for r, n in loader.skipped.items()), loader.skipped
    assert loader.state_dict()["skipped"] == loader.skipped
    # one finite pass counts each bad input exactly once
    evaluation = build_eval_loader(cfg, DistInfo(), CharTokenizer(), [directory])
    assert sorted(k for _, _, m in evaluation.batches() for k in m["keys"]) == sorted(keys)
    assert evaluation.skipped == per_epoch


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------
def test_eval_loader_is_finite_deterministic_and_split_by_rank(tiny_overrides, train_set, caption_set):
    cfg = make_cfg(tiny_overrides, "train.micro_batch=3")
    starts = cfr_frame_starts(FPS, NUM_FRAMES)
    middles = frame_indices(frame_times(*SPAN, T, False), starts).tolist()
    loader = build_eval_loader(cfg, DistInfo(), CharTokenizer(), [train_set, caption_set])
    first = list(loader.batches())
    assert_same_batches(first, list(loader.batches()))
    keys = [k for kind, _, m in first if kind == "transcripts" for k in m["keys"]]
    assert sorted(keys) == [f"vid-{c:02d}" for c in range(16)]
    assert [len(m["keys"]) for kind, _, m in first if kind == "captions"] == [3, 3, 2]
    for kind, batch, meta in first:
        if kind == "transcripts":
            for b in range(len(meta["keys"])):
                assert read_stamps(batch["video"][b])[0] == middles
    split = [k for rank in range(2)
             for kind, _, m in build_eval_loader(cfg, DistInfo(rank=rank, world_size=2), CharTokenizer(),
                                                 [train_set]).batches() for k in m["keys"]]
    assert sorted(split) == sorted(keys)


def test_official_baseline_takes_the_same_frames(clip_bytes):
    from tvts.data.pipeline import load_clip, official_clip

    times = frame_times(*SPAN, T, True, np.random.default_rng(0))
    ours = load_clip(clip_bytes[5], times, 32, 32, train=True, generator=torch.Generator().manual_seed(1))
    official = official_clip(clip_bytes[5], times, 32, 32, train=True, generator=torch.Generator().manual_seed(1))
    assert read_stamps(ours) == read_stamps(official) == (frame_indices(times, cfr_frame_starts(FPS, NUM_FRAMES)).tolist(), [5] * T)
    assert torch.allclose(ours, official, atol=1e-5)  # no resize at 32 px: the same pixels


def encode_vp9_clip(clip: int) -> bytes:
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="webm") as container:
        stream = container.add_stream("libvpx-vp9", rate=FPS)
        stream.width = stream.height = SIDE
        stream.pix_fmt = "yuv420p"
        stream.options = {"g": "4", "crf": "10", "b": "0", "deadline": "realtime", "cpu-used": "8"}
        for k in range(NUM_FRAMES):
            image = np.empty((SIDE, SIDE, 3), np.uint8)
            image[:, : SIDE // 2], image[:, SIDE // 2:] = 8 + 10 * k, 30 + 7 * clip
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return buf.getvalue()


@pytest.mark.dali
def test_dali_decoder_gives_the_pyav_batches(tiny_overrides, tmp_path):
    from tvts.data.dali import dali_available

    if not dali_available():
        pytest.skip("NVIDIA DALI is not installed")
    samples = [(f"vp-{c:02d}", {"webm": encode_vp9_clip(c), "json": json.dumps(transcript_meta(f"vp-{c:02d}")).encode()})
               for c in range(6)]  # VP9: DALI's CPU backend decodes no H.264
    directory = write_set(tmp_path / "vp9", "transcripts", [samples[:3], samples[3:]])
    dali = take(build_train_loader(make_cfg(tiny_overrides, f"data.train=[{directory}]", "data.decoder=dali"),
                                   DistInfo(), CharTokenizer()), 3)
    pyav = take(build_train_loader(make_cfg(tiny_overrides, f"data.train=[{directory}]", "data.decoder=pyav"),
                                   DistInfo(), CharTokenizer()), 3)
    for (_, a, ma), (_, b, mb) in zip(dali, pyav):
        assert ma["keys"] == mb["keys"]
        assert torch.equal(a["labels"], b["labels"]) and torch.equal(a["keep_indices"], b["keep_indices"])
        # DALI normalises in its graph; PyAV batches come uint8, normalised by the consumer
        assert a["video"].shape == b["video"].shape
        assert a["video"].dtype == torch.float32 and b["video"].dtype == torch.uint8
        assert [read_stamps(v) for v in a["video"]] == [read_stamps(v) for v in b["video"]]
        # resize kernels differ slightly
        assert (a["video"] - normalize_video(b["video"])).abs().max() < 2.5 / (255 * 0.224)


@pytest.mark.dali
@pytest.mark.parametrize("workers", [0, 2])
def test_dali_decoding_ahead_gives_the_synchronous_batches_and_positions(tiny_overrides, tmp_path, workers):
    """data.dali_prefetch decodes in a background thread, ahead of the consumer: the same batches in the same
    order as decoding synchronously (dali_prefetch=0), and the same resume position after each (a batch only
    decoded ahead is not counted); the eval loader too; stopping early stops the thread."""
    import threading

    from tvts.data.dali import dali_available

    if not dali_available():
        pytest.skip("NVIDIA DALI is not installed")
    samples = [(f"vp-{c:02d}", {"webm": encode_vp9_clip(c),
                                "json": json.dumps(transcript_meta(f"vp-{c:02d}")).encode()}) for c in range(6)]
    directory = write_set(tmp_path / "vp9", "transcripts", [samples[:3], samples[3:]])
    runs = {}
    for depth in (0, 3):
        cfg = make_cfg(tiny_overrides, f"data.train=[{directory}]", "data.decoder=dali", f"data.dali_prefetch={depth}",
                       f"data.num_workers={workers}")
        loader = build_train_loader(cfg, DistInfo(), CharTokenizer())
        items, states = [], []
        iterator = loader.batches()
        for _ in range(5):  # past an epoch (3 batches of 2)
            items.append(next(iterator))
            states.append(loader.state_dict())
        iterator.close()
        evaluation = [(k, b) for k, b, _ in build_eval_loader(cfg, DistInfo(), CharTokenizer(), [directory]).batches()]
        runs[depth] = items, states, evaluation
    (sync, sync_states, sync_eval), (ahead, ahead_states, ahead_eval) = runs[0], runs[3]
    assert ahead_states == sync_states
    for (ka, a, ma), (kb, b, mb) in zip(ahead, sync):
        assert ka == kb and ma["keys"] == mb["keys"] and ma["g"] == mb["g"]
        assert a["video"].dtype == torch.float32 and torch.equal(a["video"], b["video"])
        assert torch.equal(a["labels"], b["labels"]) and torch.equal(a["keep_indices"], b["keep_indices"])
    assert len(ahead_eval) == len(sync_eval) >= 3  # 6 clips in batches of 2 (a worker's last one may be short)
    assert all(ka == kb and torch.equal(a["video"], b["video"]) for (ka, a), (kb, b) in zip(ahead_eval, sync_eval))
    assert not [t for t in threading.enumerate() if t.name.startswith("tvts-dali")]  # every decode thread stopped


def test_default_workers_are_sized_for_the_device(monkeypatch):
    """data.num_workers=-1 (the default): 2 on CPU; on a GPU this rank's share of the cores less one, 2..8;
    an explicit count is kept; the resolved count is written into the config (the run's config.yaml)."""
    from types import SimpleNamespace

    from tvts.data.loader import resolve_workers

    def rank(device, local_world_size=1):
        return SimpleNamespace(device=torch.device(device), local_world_size=local_world_size)

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    for info, want in [(rank("cpu"), 2), (rank("cuda"), 8), (rank("cuda", 2), 7), (rank("cuda", 8), 2)]:
        cfg = config_mod.load(None)
        assert cfg.data.num_workers == -1
        assert resolve_workers(cfg, info) == want and cfg.data.num_workers == want, info
    cfg = config_mod.load(None, ["data.num_workers=0"])
    assert resolve_workers(cfg, rank("cuda")) == 0
