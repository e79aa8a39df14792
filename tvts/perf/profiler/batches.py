"""Batch sources of the profiler: ``synthetic`` (random tensors of the right shapes, made once, put on the
device once and reused: no decoding and no host copy, the compute ceiling) and ``loader`` (the engine's
TrainLoader, or, for the official setup, a re-creation of the official per-sample path: one seek per frame,
PIL resize, float64 ClipToTensor)."""
from __future__ import annotations

import itertools
import json
from typing import Callable, Iterator

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from tvts.perf.profiler.setups import Setup


def synthetic_batch(cfg, tokenizer, seed: int = 0) -> dict:
    """One transcript batch of the loader's layout (:func:`tvts.data.loader.build_train_loader`) from
    random tensors: video (B, T, 3, S, S) float32, K tokenised transcripts per clip, labels, keep indices."""
    from tvts.data.masking import keep_indices

    s, b = cfg.sample, cfg.train.micro_batch
    g = torch.Generator().manual_seed(seed)
    words = ["red", "circle", "moves", "left", "then", "the", "blue", "square", "stops", "slowly", "appears"]
    texts = [" ".join(words[(i * 7 + j * 3) % len(words)] for j in range(6 + i % 5)) for i in range(b * s.num_windows)]
    batch = {"video": torch.randn(b, s.frames, 3, s.image_size, s.image_size, generator=g),
             "text": tokenizer(texts),
             "labels": torch.stack([torch.randperm(s.num_windows, generator=g) for _ in range(b)])}
    keeps = [keep_indices(cfg.patch_grid(), s.mask, True, g) for _ in range(b)]
    if keeps[0] is not None:
        batch["keep_indices"] = torch.stack(keeps)
    return batch


def official_sample(transform, key: str, members: dict, epoch: int):
    """One training sample the official way (:func:`tvts.data.pipeline.official_clip`: a seek per frame,
    PIL resize, float64 ClipToTensor), with the engine's frame times, shuffle and mask draws
    (``transform``: a training :class:`tvts.data.pipeline.SampleTransform`, whose ``assemble`` makes them)."""
    from tvts.data.pipeline import official_clip, sample_rng

    t = transform
    meta = json.loads(members["json"])
    source = members.get("mp4") or members["webm"]

    def video(times, generator):
        return official_clip(source, times, t.image_size, t.resize_short, t.normalize, True, generator)

    windows = meta["windows"]
    return t.assemble(key, "transcripts", epoch, float(windows[0][0]), float(windows[-1][1]), list(meta["transcripts"]),
                      sample_rng(t.seed, epoch, key), video)


class _OfficialStream(IterableDataset):
    def __init__(self, cfg, rank: int, world: int, tokenizer, shards: list[str]):
        super().__init__()
        self.cfg, self.rank, self.world, self.tokenizer, self.shards = cfg, rank, world, tokenizer, shards

    def __iter__(self):
        from tvts.data.pipeline import SampleTransform, collate
        from tvts.data.shards import read_shard

        worker = get_worker_info()
        wid, workers = (worker.id, worker.num_workers) if worker else (0, 1)
        readers = self.world * workers
        mine = self.shards[(self.rank * workers + wid) % len(self.shards)::readers] or self.shards
        transform = SampleTransform(self.cfg, train=True)
        samples = []
        for epoch in itertools.count():
            for path in mine:
                for key, members in read_shard(path):
                    samples.append(official_sample(transform, key, members, epoch))
                    if len(samples) == self.cfg.train.micro_batch:
                        yield "transcripts", collate(samples, "transcripts", self.tokenizer)
                        samples = []


def official_loader(cfg, info, tokenizer) -> DataLoader:
    """The official-style data path over ``data.train``: each worker reads its shards and decodes every
    sample with one seek per frame (no decoded cache), ``data.num_workers`` workers as the engine's loader."""
    from tvts.data.loader import resolve_shards, resolve_workers

    shards = resolve_shards(cfg.data.train)
    return DataLoader(_OfficialStream(cfg, info.rank, info.world_size, tokenizer, shards), batch_size=None,
                      num_workers=resolve_workers(cfg, info))


def synthetic_source(cfg, tokenizer, device: torch.device) -> Callable[[], Iterator]:
    """A source of one synthetic batch, repeated: made once and put on ``device`` once, so that a timed step
    times the step and not a host-to-device copy (the step's own copy finds it there already)."""
    from tvts.engine.run import to_device

    batch = to_device(synthetic_batch(cfg, tokenizer), device)
    return lambda: itertools.repeat(("transcripts", batch))


def loader_source(cfg, info, tokenizer, setup: Setup) -> Callable[[], Iterator]:
    if setup.decoder == "official":
        return lambda: iter(official_loader(cfg, info, tokenizer))
    from tvts.data.loader import build_train_loader

    return lambda: iter(build_train_loader(cfg, info, tokenizer))
