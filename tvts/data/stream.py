"""Unlimited procedural narrated clips for training: the synthetic corpus without a corpus on disk.

``data.synthetic: stream`` trains on clips that no step sees twice. Clip ``i`` of the stream is synthetic
video ``STREAM_OFFSET + i`` of :func:`tvts.data.synthetic.sample_video` (the corpus uses ``0 .. N-1`` of
the same seed, so the held-out corpus clips never appear in training). Its frames are rendered at the
instants the shard path would decode: :meth:`tvts.data.pipeline.SampleTransform.assemble` draws the frame
times over the window set, each time is snapped to the start of the frame showing it on the corpus's
frame grid (what the decoder returns), and the scene is drawn at exactly those instants (no encoding or
decoding: ~1 ms per clip). Crop, transcript shuffle and mask follow the same draws as the shard path.

Why it exists: a fixed corpus of a few hundred clips revisited for tens of epochs is memorised by the
tiny demo model (training sort accuracy 1.0, held-out at chance; docs/benchmarks.md, "CPU demo") before
it learns to read the video, which takes several hundred steps of fresh clips at this scale.

Order and resume: global batch ``g`` of rank ``r`` holds clips ``(g * world + r) * B + j``, ``j < B``;
DataLoader worker ``w`` makes batches ``g = g0 + w, g0 + w + W, ...``. The state is ``g`` alone, so a
resumed run yields exactly the batches an uninterrupted one would have (at any world size the stream
simply continues with the clips of the new layout).
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset

from tvts.data import synthetic
from tvts.data.augment import crop_video
from tvts.data.batches import BatchSource, worker_slot
from tvts.data.pipeline import SampleTransform, collate, sample_rng
from tvts.data.sampling import cfr_frame_starts, frame_indices

STREAM_OFFSET = 1 << 30  # stream clip i is synthetic video STREAM_OFFSET + i (the corpus uses 0 .. N-1)
NARRATION_VARIANTS = 8  # bounded narration: the frozen-text cache hits ~95 % over a 1500-step demo
STATE_VERSION = 1


class StreamClips:
    """Clip ``i`` of the stream as a :class:`tvts.data.pipeline.Sample` (train-time draws, epoch 0).

    The scene parameters (canvas = ``sample.image_size``, events = K windows of ``data.window_max_s``
    seconds ``data.gap_s`` apart, fps and narration noise) are those of the demo corpus
    (:mod:`tvts.data.prepare`).
    """

    def __init__(self, cfg):
        from tvts.data.prepare import DEMO_FPS, DEMO_NOISE

        self.cfg = cfg
        self.transform = SampleTransform(cfg, train=True)
        self.scene = dict(seed=cfg.seed, size=cfg.sample.image_size, fps=DEMO_FPS, events=cfg.sample.num_windows,
                          event_s=cfg.data.window_max_s, gap_s=cfg.data.gap_s, noise=DEMO_NOISE,
                          narration_variants=NARRATION_VARIANTS)

    def __call__(self, index: int):
        video = synthetic.sample_video(STREAM_OFFSET + index, **self.scene)
        starts = cfr_frame_starts(video.fps, video.num_frames)
        t = self.transform

        def frames(times: np.ndarray, generator: torch.Generator) -> torch.Tensor:
            shown = starts[frame_indices(times, starts)]  # the instant of the frame a decoder would return
            rgb = torch.from_numpy(synthetic.render(video, shown)).permute(0, 3, 1, 2)
            return crop_video(rgb, t.image_size, t.resize_short, True, generator)  # uint8, as the shard path's

        windows = synthetic.event_windows(len(video.events), self.scene["event_s"], self.scene["gap_s"])
        texts = [cue.text for cue in video.cues]
        return t.assemble(video.id, "transcripts", 0, windows[0][0], windows[-1][1], texts,
                          sample_rng(self.cfg.seed, 0, video.id), frames)


class _StreamDataset(IterableDataset):
    def __init__(self, cfg, rank: int, world: int, slots: int, tokenizer, first_batch: int):
        super().__init__()
        self.cfg, self.rank, self.world, self.slots = cfg, rank, world, slots
        self.tokenizer, self.first_batch = tokenizer, first_batch

    def __iter__(self):
        worker, _ = worker_slot()
        clips = StreamClips(self.cfg)
        size = self.cfg.train.micro_batch
        g = self.first_batch + worker
        while True:
            first = (g * self.world + self.rank) * size
            samples = [clips(first + j) for j in range(size)]
            yield "transcripts", collate(samples, "transcripts", self.tokenizer), {"g": g, "keys": [s.key for s in samples]}
            g += self.slots


class StreamLoader(BatchSource):
    """Infinite iterable of ``("transcripts", batch)`` from the procedural stream; the batch layout is
    :func:`tvts.data.loader.build_train_loader`'s. ``state_dict`` / ``load_state_dict`` make resume exact."""

    def __init__(self, cfg, info, tokenizer):
        self.cfg, self.info, self.tokenizer = cfg, info, tokenizer
        self.slots = max(1, cfg.data.num_workers)
        self.global_batches = 0
        self.skipped: dict[str, int] = {}  # rendering cannot fail on a sample: nothing is ever skipped

    def batches(self) -> Iterator[tuple[str, dict, dict]]:
        dataset = _StreamDataset(self.cfg, self.info.rank, self.info.world_size, self.slots, self.tokenizer,
                                 self.global_batches)
        for kind, batch, meta in self._dataloader(dataset):
            if meta["g"] != self.global_batches:
                raise RuntimeError(f"stream order: got global batch {meta['g']}, expected {self.global_batches}")
            self.global_batches += 1
            yield kind, batch, meta

    def state_dict(self) -> dict:
        return {"version": STATE_VERSION, "stream": True, "global_batches": self.global_batches}

    def load_state_dict(self, state: dict) -> None:
        if not state.get("stream") or state.get("version") != STATE_VERSION:
            raise ValueError("the checkpoint's data position is not a synthetic stream's: resume it with the "
                             "data.synthetic setting it was trained with")
        self.global_batches = int(state["global_batches"])
