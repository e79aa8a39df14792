"""Training and evaluation loaders over webdataset shard sets, with exact mid-epoch resume.

Stages (one declarative chain per worker, as open_clip's webdataset pipeline):

    shard list -> fixed seeded assignment: split by rank, then by worker slot
               -> per-epoch seeded shard order -> tar samples (webdataset) -> seeded shuffle buffer
               -> decode / augment / shuffle transcripts (SampleTransform; SkipSample counted by reason)
               -> batches formed and tokenised in the worker -> torch DataLoader(batch_size=None)

**Shard assignment is fixed across epochs** (seeded by ``cfg.seed`` only); each epoch then reads its
shards in a new seeded order through the shuffle buffer. A fixed assignment keeps every clip on the
same worker, so ``data.decoded_cache_mb`` decodes each clip once per worker (a per-epoch reshuffle
before the split would send clips to a new worker every epoch and each worker would end up caching
the whole corpus). With fewer shards than ranks (or than a rank's worker slots), that level splits
samples instead of shards: every reader of the level reads the same shards and keeps the samples
whose ordinal (shard position + position in the shard) is its own, see :func:`assign_shards`.

**Streams are infinite.** Each worker slot ("role") runs epoch after epoch on its own; a batch may
hold the last samples of one epoch and the first of the next, and roles drift apart by at most a
batch or so per epoch. Ranks therefore never run out of batches at different steps (no DDP hang,
no dropped tail). ``cfg.seed, epoch, key`` seed every random choice of a sample.

**Order.** The DataLoader takes batches from its workers round-robin, so global batch ``g`` of this
rank comes from role ``g % N`` (``N = max(1, data.num_workers)``). Mixing with caption data decides
the kind of batch ``g`` from ``g`` alone: ``alternate`` -> transcripts at even ``g``, captions at odd
(one optimizer step per dataset, the official v2 trainer); ``interleave`` -> captions when a uniform
draw seeded by ``(seed, g)`` is below ``data.caption_ratio``. A role that never makes a kind (e.g.
``alternate`` with an even N: even roles make only transcript batches) gets no shards of that kind.

**Resume contract.** :meth:`TrainLoader.state_dict` is the position after the last batch the
iterator YIELDED (batches prefetched by workers do not count): the number of batches ``g`` yielded
so far and, per role and kind, ``(epoch, raw samples taken from the shuffle buffer in that epoch)``,
plus the skip counts. :meth:`TrainLoader.load_state_dict` makes the next iteration yield exactly the
batches an uninterrupted run would have yielded next: each role replays its epoch's shard order and
shuffle buffer and drops the consumed samples without decoding them; physical worker ``p`` takes
role ``(p + g) % N`` so the DataLoader's round-robin continues where it stopped. At a different
world size, worker count or shard list, the saved positions do not map onto the new split: every
role restarts at the beginning of the earliest epoch in the state (a warning says so; samples seen
earlier in that epoch are seen again), and ``g`` continues, so the alternate/interleave sequence
goes on.

Shard sets: a directory with ``shard-NNNNNN.tar`` and ``index.json`` ({"kind", "shards": [{"name",
"samples"}], ...}), a brace pattern or a glob. Samples: ``__key__``, a video member ``mp4``/``webm``
holding only the span, and ``json``: transcripts {"windows": K [s, e] relative to the clip start,
"transcripts": K strings in chronological order, ...}; captions {"caption", "duration", "fps",
"frames", ...}.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
import warnings
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
from torch.utils.data import IterableDataset

from tvts.data.errors import SkipCounter, SkipSample
from tvts.data.pipeline import KINDS, SampleTransform, collate
from tvts.data.shards import ShardError, index_of, list_shards
from tvts.data.sources import IOPolicy, is_transient_io, open_stream
from tvts.data.batches import FAILED, BatchSource, reporting, worker_slot

log = logging.getLogger("tvts.data")

STATE_VERSION = 1
_TAGS = {"transcripts": 0, "captions": 1}  # seed-stream tags per dataset kind
# seed-stream purposes, so that no two uses of cfg.seed share a random stream
_ASSIGN, _ORDER, _SHUFFLE, _MIX = 2, 3, 4, 5


# ----------------------------------------------------------------------------------------------
# Shard lists
# ----------------------------------------------------------------------------------------------
def list_shard_paths(spec: str, policy: IOPolicy = IOPolicy()) -> list[str]:
    """Shard paths or URLs of one shard-set spec (a directory or URL prefix with index.json, a brace
    pattern, a glob or a ``pipe:`` command; see :func:`tvts.data.shards.list_shards`)."""
    return [os.fspath(path) for path, _ in list_shards(spec, policy)]


def spec_kind(spec: str, policy: IOPolicy = IOPolicy()) -> Optional[str]:
    """The kind a shard set declares in its index.json ("transcripts"/"captions"), or None."""
    index = index_of(spec, policy)
    return index.get("kind") if index else None


def resolve_shards(specs: Sequence[str], policy: IOPolicy = IOPolicy()) -> list[str]:
    paths = [p for spec in specs for p in list_shard_paths(spec, policy)]
    if specs and not paths:
        raise ShardError(f"{', '.join(map(str, specs))}: no shard with samples (data.train / data.captions); point the key "
                         f"at a shard set that launch/prepare_data.py wrote from inputs that gave samples")
    return paths


def _fingerprint(paths: Sequence[str]) -> str:
    """Names the shard list by set and shard names (not full paths: a moved data root still resumes)."""
    names = [os.path.join(os.path.basename(os.path.dirname(p)), os.path.basename(p)) for p in paths]
    return hashlib.sha1("\n".join(names).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------
# Stages
# ----------------------------------------------------------------------------------------------
SampleFilter = tuple[int, int, int]  # (divisor, modulus, remainder) on a sample's ordinal, see assign_shards


def assign_shards(paths: Sequence[str], rank: int, world: int, slot: int, slots: int,
                  seed: Optional[int], tag: int) -> tuple[list[str], list[SampleFilter]]:
    """The shards of (rank, worker slot), in a canonical order, and the sample filters to apply.

    Shards are permuted once (seeded by ``seed`` and ``tag``; ``seed=None`` keeps the given order),
    split by rank, then by slot. A level with fewer shards than parts keeps all of them and splits
    their samples instead: sample ``j`` of the ``s``-th shard of the canonical list has ordinal
    ``n = s + j`` and goes to rank ``n % world`` (then slot ``n // world % slots``). The ordinal does
    not depend on the epoch's reading order, so the assignment is fixed, exact and balanced.
    """
    order = list(paths)
    if seed is not None:
        order = [order[i] for i in np.random.default_rng([seed, _ASSIGN, tag]).permutation(len(order))]
    filters: list[SampleFilter] = []
    if len(order) >= world:
        order = order[rank::world]
    else:
        filters.append((1, world, rank))
    if len(order) >= slots:
        order = order[slot::slots]
    else:
        filters.append((world if filters else 1, slots, slot))
    return order, filters


def _describe(err: BaseException) -> str:
    """``Type: message`` of an error, without what webdataset appends to its args (the stream, the url)."""
    message = str(err.args[0]) if err.args else str(err)
    return f"{type(err).__name__}: {message.split(' @ <')[0]}"


class _StreamBroken(Exception):
    """Reading a shard's bytes failed part-way (connection reset, timeout): the shard is opened again."""

    def __init__(self, err: BaseException):
        super().__init__(str(err))
        self.err = err


def tar_samples(shards: Sequence[tuple[int, str]], on_error: Callable[[str, str], None],
                filters: Sequence[SampleFilter] = (), policy: IOPolicy = IOPolicy()) -> Iterator[dict]:
    """Webdataset samples of ``shards`` = [(canonical index, path or URL)] in the given order, keeping those
    that pass ``filters`` (see :func:`assign_shards`).

    A shard whose bytes stop coming (a transient I/O error: connection reset, timeout, 5xx) is opened
    again after a backoff and read on past the samples already passed on, up to ``policy.retries`` times;
    then, or when it cannot be opened at all, it is reported to ``on_error("unreadable_shard", detail)``
    once and skipped. A tar that is corrupt is reported as ``corrupt_shard`` once and read on where
    tarfile can. Samples read before an error are kept; a sample is never passed on half-read."""
    from webdataset.tariterators import group_by_keys, tar_file_expander

    for index, path in shards:
        passed = 0  # samples of this shard already read (before filtering): a reopened shard skips them
        for attempt in range(policy.retries + 1):
            last = attempt == policy.retries
            failed = []

            def handler(err: Exception, path=path, failed=failed) -> bool:
                if isinstance(err, _StreamBroken):  # webdataset's outer level hands the inner raise back
                    raise err
                if is_transient_io(err):
                    raise _StreamBroken(err)
                if not failed:  # a broken tar can raise again at the next header: count the shard once
                    on_error("corrupt_shard", f"{path}: {type(err).__name__}: {err}")
                failed.append(err)
                return True  # go on with the next member / shard

            try:
                stream = open_stream(path, policy)
            except Exception as err:  # noqa: BLE001 - any client's error: the shard cannot be opened
                if last or not is_transient_io(err):
                    on_error("unreadable_shard", f"{path}: {_describe(err)} ({attempt + 1} tries)")
                    break
                log.warning("shard %s: %s; opening it again (try %d of %d)", path, _describe(err), attempt + 2,
                            policy.retries + 1)
                time.sleep(policy.backoff_s * 2**attempt)
                continue
            try:
                with stream:
                    files = tar_file_expander([{"url": path, "stream": stream}], handler=handler)
                    for j, sample in enumerate(group_by_keys(files, handler=handler)):
                        if j < passed:
                            continue
                        passed += 1
                        if all((index + j) // div % mod == rem for div, mod, rem in filters):
                            yield sample
                break
            except _StreamBroken as broken:
                err = broken.err
            except Exception as err_:  # noqa: BLE001 - a pipe's command failed, a close that raised
                err = err_
                if not is_transient_io(err):
                    on_error("unreadable_shard", f"{path}: {_describe(err)} after {passed} samples")
                    break
            if last:
                on_error("unreadable_shard", f"{path}: {_describe(err)} after {passed} samples ({attempt + 1} tries)")
                break
            log.warning("shard %s: %s after %d samples; reading it again (try %d of %d)", path, _describe(err), passed,
                        attempt + 2, policy.retries + 1)
            time.sleep(policy.backoff_s * 2**attempt)


def shuffle_buffer(samples: Iterator, size: int, rng: np.random.Generator) -> Iterator:
    """Yield ``samples`` through a buffer of ``size``: once full, a uniformly drawn element leaves for
    each one that enters; then the rest leave in random order. ``size <= 1`` keeps the order."""
    if size <= 1:
        yield from samples
        return
    buffer: list = []
    for sample in samples:
        buffer.append(sample)
        if len(buffer) >= size:
            i = int(rng.integers(len(buffer)))
            buffer[i], buffer[-1] = buffer[-1], buffer[i]
            yield buffer.pop()
    while buffer:
        i = int(rng.integers(len(buffer)))
        buffer[i], buffer[-1] = buffer[-1], buffer[i]
        yield buffer.pop()


class _RawStream:
    """One role's infinite stream of raw samples of one kind, epoch after epoch, with its position.

    ``next()`` returns (epoch, raw sample). ``position`` = (epoch, samples taken in that epoch). Built
    at a position, it replays that epoch's order and drops the consumed samples without decoding.
    """

    def __init__(self, paths: list[str], filters: list[SampleFilter], kind: str, seed: int, rank: int, slot: int,
                 buffer: int, start: tuple[int, int], counter: SkipCounter, policy: IOPolicy = IOPolicy()):
        if not paths:
            raise RuntimeError(f"no {kind} shards for rank {rank}, worker slot {slot}")
        self.paths, self.filters, self.kind, self.seed = paths, filters, kind, seed
        self.rank, self.slot, self.buffer = rank, slot, buffer
        self.epoch, self.consumed = int(start[0]), int(start[1])
        self.counter, self.policy = counter, policy
        self.used = 0  # samples of the current epoch that made it into a batch
        self._muted = False
        self._it: Optional[Iterator] = None

    @property
    def position(self) -> tuple[int, int]:
        return self.epoch, self.consumed

    def _on_error(self, reason: str, detail: str) -> None:
        if not self._muted:  # a replayed shard error was counted before the checkpoint
            self.counter.add(reason, detail)

    def _open_epoch(self) -> None:
        tag = _TAGS[self.kind]
        order = np.random.default_rng([self.seed, _ORDER, tag, self.epoch]).permutation(len(self.paths))
        raw = tar_samples([(int(i), self.paths[i]) for i in order], self._on_error, self.filters, self.policy)
        rng = np.random.default_rng([self.seed, _SHUFFLE, tag, self.epoch, self.rank, self.slot])
        self._it = shuffle_buffer(raw, self.buffer, rng)
        self._fresh = self.consumed == 0
        self._muted = True
        for _ in range(self.consumed):
            if next(self._it, None) is None:
                break
        self._muted = False
        self.used = 0

    def next(self) -> tuple[int, dict]:
        while True:
            if self._it is None:
                self._open_epoch()
            raw = next(self._it, None)
            if raw is not None:
                self.consumed += 1
                return self.epoch, raw
            if self.consumed == 0:
                raise ShardError(f"{self.kind} epoch {self.epoch}: rank {self.rank} slot {self.slot} read no sample "
                                 f"from its {len(self.paths)} shards ({self.counter.as_dict()}); check them with "
                                 f"tar tf, or rebuild them with launch/prepare_data.py")
            if self._fresh and self.used == 0:
                raise ShardError(f"{self.kind} epoch {self.epoch}: every sample of rank {self.rank} slot {self.slot} "
                                 f"was skipped ({self.counter.as_dict()}); the log names the first of each reason")
            self.epoch, self.consumed, self._it = self.epoch + 1, 0, None


class _SkipDelta:
    """The counts a worker sends with each batch: what was skipped since its previous batch."""

    def __init__(self, counter: SkipCounter):
        self.counter, self.sent = counter, {}

    def __call__(self) -> dict:
        now = self.counter.as_dict()
        delta = {k: v - self.sent.get(k, 0) for k, v in now.items() if v != self.sent.get(k, 0)}
        self.sent = now
        return delta


def _take_batch(stream: _RawStream, transform: SampleTransform, size: int, counter: SkipCounter) -> list:
    """The next ``size`` usable samples of ``stream``; unusable ones are counted and skipped."""
    samples = []
    while len(samples) < size:
        epoch, raw = stream.next()
        try:
            samples.append(transform(raw, stream.kind, epoch))
        except SkipSample as err:
            counter.add(err)
            continue
        stream.used += 1
    return samples


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------
def mix_kind(g: int, kinds: Sequence[str], mix: str, caption_ratio: float, seed: int) -> str:
    """The kind of global batch ``g``: from ``g`` alone, so it is deterministic and resumable."""
    if len(kinds) == 1:
        return kinds[0]
    if mix == "alternate":
        return kinds[g % 2]
    u = np.random.default_rng([seed, _MIX, g]).random()
    return "captions" if u < caption_ratio else "transcripts"


def producers(kind: str, kinds: Sequence[str], mix: str, slots: int) -> list[int]:
    """The roles that ever make batches of ``kind`` (their shards are split among them only)."""
    if len(kinds) == 2 and mix == "alternate" and slots % 2 == 0:
        return [r for r in range(slots) if r % 2 == kinds.index(kind)]
    return list(range(slots))


class _TrainDataset(IterableDataset):
    """What runs in each DataLoader worker: one role's infinite stream of (kind, batch, meta)."""

    def __init__(self, cfg, rank: int, world: int, slots: int, tokenizer, shards: dict, kinds: list,
                 decoder: str, global_batches: int, roles: list):
        super().__init__()
        self.cfg, self.rank, self.world, self.slots = cfg, rank, world, slots
        self.tokenizer, self.shards, self.kinds, self.decoder = tokenizer, shards, kinds, decoder
        self.global_batches, self.roles = global_batches, roles

    def __iter__(self):
        return reporting(self._batches())

    def _batches(self):
        cfg = self.cfg
        worker, _ = worker_slot()
        role = (worker + self.global_batches) % self.slots
        g = self.global_batches + worker  # the first global batch this worker makes
        counter = SkipCounter()
        delta = _SkipDelta(counter)
        transform = SampleTransform(cfg, train=True, decoder=self.decoder)
        streams = {}
        for kind in self.kinds:
            roles = producers(kind, self.kinds, cfg.data.mix, self.slots)
            if role in roles:
                paths, filters = assign_shards(self.shards[kind], self.rank, self.world, roles.index(role), len(roles),
                                               cfg.seed, _TAGS[kind])
                streams[kind] = _RawStream(paths, filters, kind, cfg.seed, self.rank, roles.index(role),
                                           cfg.data.shuffle_buffer, self.roles[role][kind], counter,
                                           IOPolicy.from_config(cfg.data))
        while True:
            kind = mix_kind(g, self.kinds, cfg.data.mix, cfg.data.caption_ratio, cfg.seed)
            stream = streams[kind]
            samples = _take_batch(stream, transform, cfg.train.micro_batch, counter)
            batch = collate(samples, kind, self.tokenizer)
            meta = {"g": g, "role": role, "kind": kind, "keys": [s.key for s in samples], "epochs": [s.epoch for s in samples],
                    "positions": {k: s.position for k, s in streams.items()}, "skipped": delta()}
            if transform.cache is not None:
                meta["cache"] = {"clips": len(transform.cache), "bytes": transform.cache.bytes,
                                 "hits": transform.cache.hits, "misses": transform.cache.misses}
            _fault_slow_worker(worker)
            yield kind, batch, meta
            g += self.slots


def _fault_slow_worker(worker: int) -> None:
    """Test hook: TVTS_FAULT_SLOW_WORKER="1:0.3" makes worker 1 sleep 0.3 s per batch, so that prefetching
    runs ahead unevenly (resume tests: the saved position must not depend on what workers made ahead)."""
    spec = os.environ.get("TVTS_FAULT_SLOW_WORKER", "")
    if spec and spec.split(":")[0] == str(worker):
        time.sleep(float(spec.split(":")[1]))


class TrainLoader(BatchSource):
    """Infinite iterable of ``(kind, batch)``; see the module docstring for the order and the resume
    contract, and :func:`build_train_loader` for the batch layout.

    ``batches()`` yields ``(kind, batch, meta)`` with meta = {"g": global batch index, "role",
    "keys" and "epochs" of its samples, "positions", "skipped": counts since the role's previous batch}. ``skipped`` is the number of inputs skipped so far by reason (all workers of this
    rank, carried through checkpoints). Iterate one iterator at a time: each new iterator continues
    from the current position.
    """

    def __init__(self, cfg, info, tokenizer, shards: dict[str, list[str]]):
        from tvts.data.dali import decoder_for

        self.cfg, self.info, self.tokenizer = cfg, info, tokenizer
        self.slots = max(1, cfg.data.num_workers)
        kinds = [k for k in KINDS if shards.get(k)]
        if len(kinds) == 2 and cfg.data.mix == "interleave" and cfg.data.caption_ratio in (0.0, 1.0):
            kinds = ["captions"] if cfg.data.caption_ratio == 1.0 else ["transcripts"]
        if not kinds:
            raise ValueError("data.train and data.captions are both empty: nothing to train on")
        self.kinds = kinds
        self.shards = {k: list(shards[k]) for k in kinds}
        self.decoder = decoder_for(cfg)
        self.global_batches = 0
        self.roles = [{k: (0, 0) for k in self.kinds} for _ in range(self.slots)]
        self._skips = SkipCounter()
        self.cache_stats: dict = {}
        self._dali = None

    @property
    def skipped(self) -> dict[str, int]:
        return self._skips.as_dict()

    @property
    def epoch(self) -> int:
        """The earliest epoch any role of the first kind is in."""
        kind = self.kinds[0]
        roles = producers(kind, self.kinds, self.cfg.data.mix, self.slots)
        return min(self.roles[r][kind][0] for r in roles)

    def _dataset(self) -> _TrainDataset:
        return _TrainDataset(self.cfg, self.info.rank, self.info.world_size, self.slots, self.tokenizer, self.shards,
                             self.kinds, self.decoder, self.global_batches, [dict(r) for r in self.roles])

    def batches(self) -> Iterator[tuple[str, dict, dict]]:
        with contextlib.closing(self._decoded(self._dataloader(self._dataset()))) as items:
            for kind, batch, meta in items:
                if kind == FAILED:
                    raise ShardError(meta)
                if meta["g"] != self.global_batches:  # the round-robin broke: resuming would not be exact
                    raise RuntimeError(f"loader order: got global batch {meta['g']}, expected {self.global_batches}")
                self.global_batches += 1
                self.roles[meta["role"]].update({k: tuple(p) for k, p in meta["positions"].items()})
                self._skips.merge(meta["skipped"])
                if "cache" in meta:
                    self.cache_stats[meta["role"]] = meta["cache"]
                yield kind, batch, meta


    # -- checkpointing -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"version": STATE_VERSION, "world_size": self.info.world_size, "rank": self.info.rank,
                "slots": self.slots, "kinds": list(self.kinds), "mix": self.cfg.data.mix,
                "shards": {k: _fingerprint(v) for k, v in self.shards.items()},
                "global_batches": self.global_batches,
                "roles": [{k: list(p) for k, p in r.items()} for r in self.roles],
                "skipped": self.skipped}

    def load_state_dict(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"data loader state version {state.get('version')}, expected {STATE_VERSION}")
        self.global_batches = int(state["global_batches"])
        self._skips = SkipCounter()
        self._skips.merge(state.get("skipped", {}))
        saved = state["roles"]
        changes = [name for name, ok in (
            ("world size", state["world_size"] == self.info.world_size),
            ("data.num_workers", state["slots"] == self.slots),
            ("datasets / mixing", state["kinds"] == self.kinds and state["mix"] == self.cfg.data.mix),
            ("shard list", state["shards"] == {k: _fingerprint(v) for k, v in self.shards.items()}),
        ) if not ok]
        if not changes:
            self.roles = [{k: tuple(r[k]) for k in self.kinds} for r in saved]
            return
        epochs = {k: min([r[k][0] for r in saved if k in r] or [0]) for k in self.kinds}
        message = (f"data loader: {', '.join(changes)} changed since the checkpoint; the saved positions do not "
                   f"map onto the new split, so every worker restarts at the beginning of the earliest saved "
                   f"epoch ({', '.join(f'{k} {e}' for k, e in epochs.items())}); samples already seen in that "
                   f"epoch are seen again")
        warnings.warn(message, stacklevel=2)
        log.warning(message)
        self.roles = [{k: (epochs[k], 0) for k in self.kinds} for _ in range(self.slots)]


CPU_WORKERS = 2  # data.num_workers=-1 on CPU: the training process needs the other cores
GPU_WORKERS_MAX = 8  # ... on a GPU: PyAV decodes ~255 used frames/s per core; v1 B/16 eats ~1.8k (docs/benchmarks.md)


def resolve_workers(cfg, info) -> int:
    """``data.num_workers``, with -1 (the default) replaced in ``cfg`` by the count for this rank's device: 2 on
    CPU; on a GPU the CPU cores this process may use, shared by the ranks of its node, less one for the training
    process, between 2 and 8. Called by the loader builders, so the run's saved config records the number."""
    if cfg.data.num_workers < 0:
        if info.device.type == "cuda":
            cores = len(os.sched_getaffinity(0)) // max(1, info.local_world_size)
            cfg.data.num_workers = max(CPU_WORKERS, min(GPU_WORKERS_MAX, cores - 1))
        else:
            cfg.data.num_workers = CPU_WORKERS
    return cfg.data.num_workers


def build_train_loader(cfg, info, tokenizer) -> TrainLoader:
    """The training loader of this rank: yields ``(kind, batch)`` forever.

    kind: "transcripts" (sort + VTC) or "captions" (VTC only). batch, with B = cfg.train.micro_batch:

    * ``video``: (B, T, 3, S, S) uint8, resized and cropped, not normalised (a quarter of float32's bytes
      through the workers' shared memory and the host-to-device copy): the consumer normalises it on the
      device, :func:`tvts.data.augment.normalize_video` (the strategies' ``forward`` does); T =
      sample.frames (transcripts) or sample.caption_frames (captions); S = sample.image_size. With DALI:
      float32, normalised, on the GPU already (decoded ahead of the consumer, ``data.dali_prefetch``);
    * ``text``: {"input_ids", "attention_mask"} (B*K, L) int64, sample-major: rows b*K .. b*K+K-1
      are clip b's transcripts in the PRESENTED (shuffled) order; K = 1 for captions;
    * ``labels``: (B, K) int64, transcripts only: the chronological slot of each presented transcript;
    * ``keep_indices``: (B, S_t, n) for sample.mask=random, (B, n) for tube; absent when unmasked.

    Shards come from data.train (transcripts) and data.captions; ``info`` (a DistInfo) says which
    part of them this rank reads. With ``data.synthetic_stream`` the batches come from the procedural
    stream instead (:class:`tvts.data.stream.StreamLoader`). Memory is pinned when CUDA is available.
    """
    resolve_workers(cfg, info)
    if cfg.data.synthetic_stream:
        from tvts.data.stream import StreamLoader

        return StreamLoader(cfg, info, tokenizer)
    policy = IOPolicy.from_config(cfg.data)
    shards = {"transcripts": resolve_shards(cfg.data.train, policy), "captions": resolve_shards(cfg.data.captions, policy)}
    return TrainLoader(cfg, info, tokenizer, shards)


def measure_loader(loader: TrainLoader, batches: int, warmup: int = 2) -> dict:
    """Wall-clock throughput of ``loader`` over ``batches`` batches, after ``warmup`` batches (which
    absorb worker start-up and, with data.decoded_cache_mb, can fill the cache). The workers stop after."""
    iterator = loader.batches()
    try:
        for _ in range(warmup):
            next(iterator)
        clips = frames = 0
        start = time.perf_counter()
        for _ in range(batches):
            _, batch, _ = next(iterator)
            clips += batch["video"].shape[0]
            frames += batch["video"].shape[0] * batch["video"].shape[1]
        seconds = time.perf_counter() - start
    finally:
        iterator.close()
    return {"clips": clips, "seconds": seconds, "clips_per_s": clips / seconds, "frames_per_s": frames / seconds}


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------
class _EvalDataset(IterableDataset):
    def __init__(self, cfg, rank: int, world: int, tokenizer, groups: list, decoder: str):
        super().__init__()
        self.cfg, self.rank, self.world, self.tokenizer, self.groups, self.decoder = cfg, rank, world, tokenizer, groups, decoder

    def __iter__(self):
        return reporting(self._batches())

    def _batches(self):
        slot, slots = worker_slot()
        counter = SkipCounter()
        delta = _SkipDelta(counter)
        transform = SampleTransform(self.cfg, train=False, decoder=self.decoder)
        size = self.cfg.train.micro_batch
        for kind, all_paths in self.groups:
            paths, filters = assign_shards(all_paths, self.rank, self.world, slot, slots, None, _TAGS[kind])
            samples = []
            for raw in tar_samples(list(enumerate(paths)), counter.add, filters, IOPolicy.from_config(self.cfg.data)):
                try:
                    samples.append(transform(raw, kind, None))
                except SkipSample as err:
                    counter.add(err)
                    continue
                if len(samples) == size:
                    yield kind, collate(samples, kind, self.tokenizer), {"keys": [s.key for s in samples], "skipped": delta()}
                    samples = []
            if samples:
                yield kind, collate(samples, kind, self.tokenizer), {"keys": [s.key for s in samples], "skipped": delta()}
        if counter.total:
            yield None, None, {"skipped": delta()}  # the counts of skips after the last batch


class EvalLoader(BatchSource):
    """Finite, deterministic, one pass over held-out shard sets, split by rank (and worker).

    Frames are bin middles with a centred crop; transcript order and masks come from fixed
    per-sample seeds (``sample_rng(seed, None, key)``), so every pass yields the same batches.
    The last batch of each shard set may be smaller than micro_batch.
    """

    train = False

    def __init__(self, cfg, info, tokenizer, groups: list[tuple[str, list[str]]]):
        from tvts.data.dali import decoder_for

        self.cfg, self.info, self.tokenizer, self.groups = cfg, info, tokenizer, groups
        self.decoder = decoder_for(cfg)
        self._skips = SkipCounter()
        self._dali = None

    @property
    def skipped(self) -> dict[str, int]:
        return self._skips.as_dict()

    def batches(self) -> Iterator[tuple[str, dict, dict]]:
        self._skips = SkipCounter()
        dataset = _EvalDataset(self.cfg, self.info.rank, self.info.world_size, self.tokenizer, self.groups, self.decoder)
        with contextlib.closing(self._decoded(self._dataloader(dataset))) as items:
            for kind, batch, meta in items:
                if kind == FAILED:
                    raise ShardError(meta)
                self._skips.merge(meta["skipped"])
                if kind is None:
                    continue
                yield kind, batch, meta



def build_eval_loader(cfg, info, tokenizer, specs: Sequence[str]) -> EvalLoader:
    """A finite loader over ``specs`` (shard-set directories, brace patterns or globs) for held-out
    sort accuracy: same batch layout as :func:`build_train_loader`. Each spec's kind comes from its
    index.json (transcripts when it has none)."""
    resolve_workers(cfg, info)
    groups: dict[str, list[str]] = {}
    policy = IOPolicy.from_config(cfg.data)
    for spec in specs:
        groups.setdefault(spec_kind(spec, policy) or "transcripts", []).extend(list_shard_paths(spec, policy))
    return EvalLoader(cfg, info, tokenizer, [(k, groups[k]) for k in KINDS if groups.get(k)])
