"""What the training, evaluation and stream loaders share: how their DataLoader is built (workers bound to
their trainer, no draw from the global RNG), worker-side errors sent as items, and the DALI decode step
(ahead of the consumer, in a background thread).

Loaders subclass :class:`BatchSource` and implement ``batches()``; their datasets wrap their items in
:func:`reporting` and call :func:`worker_slot`.
"""
from __future__ import annotations

import os
from typing import Iterable, Iterator

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from tvts.errors import UserError


def _identity(item):
    return item


FAILED = "__failed__"  # the kind of the item a worker sends instead of raising a UserError


def reporting(items: Iterator) -> Iterator:
    """A worker's items; a :class:`UserError` (bad data: no readable shard, every sample skipped) is sent
    as one ``(FAILED, class name, message)`` item and the main process raises it again as a one-line
    error. Raised in the worker, torch would wrap it in a message carrying the worker's traceback."""
    try:
        yield from items
    except UserError as err:
        yield FAILED, type(err).__name__, str(err)


def worker_slot() -> tuple[int, int]:
    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


def worker_init(_worker_id: int) -> None:
    """Run in each DataLoader worker before it makes anything.

    * The worker dies with its parent (Linux ``PR_SET_PDEATHSIG``): a SIGKILLed trainer leaves no orphaned
      workers and no worker tracebacks (otherwise a worker half-way through handing a tensor to the dead
      parent prints a ``ConnectionResetError`` from ``multiprocessing.resource_sharer``).
    * SIGTERM and SIGINT are ignored: a scheduler that signals the whole process group (SLURM, ``kill -TERM
      -PGID``, Ctrl-C) reaches the trainer, which finishes its step and checkpoints with the workers still
      alive; they stop when the trainer closes the loader, or die with it.
    """
    import ctypes
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: torch's own watchdog still stops orphans within seconds
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(0)


class BatchSource:
    """What the train and eval loaders share: ``(kind, batch)`` iteration, how their DataLoader is built
    and the DALI decode step."""

    train = True
    decoder = "pyav"  # host batches of uint8 clips (pinned where CUDA is); "dali" batches are decoded on the device

    def __iter__(self) -> Iterator[tuple[str, dict]]:
        for kind, batch, _ in self.batches():
            yield kind, batch

    def _dataloader(self, dataset: IterableDataset) -> DataLoader:
        """One batch per item, made in ``data.num_workers`` workers (see :func:`worker_init`).

        The DataLoader gets its own generator: each new iterator draws its workers' base seed from it, which
        by default comes from the global torch RNG, so every resume or evaluation would shift the RNG of the
        model (dropout) against an uninterrupted run. Our datasets seed every draw per sample and never use
        that base seed."""
        return DataLoader(dataset, batch_size=None, num_workers=self.cfg.data.num_workers, collate_fn=_identity,
                          pin_memory=torch.cuda.is_available() and self.decoder == "pyav",
                          worker_init_fn=worker_init if self.cfg.data.num_workers else None,
                          generator=torch.Generator().manual_seed(0))

    def _dali_reader(self):
        """This loader's :class:`tvts.data.dali.DaliVideoReader`, built at the first use."""
        if self._dali is None:
            from tvts.data.dali import DaliVideoReader

            d = self.cfg.data
            self._dali = DaliVideoReader(self.cfg.train.micro_batch, self.cfg.sample.image_size, d.resize_short,
                                         d.normalize, train=self.train, device="gpu" if torch.cuda.is_available() else "cpu",
                                         device_id=self.info.local_rank)
        return self._dali

    def _decoded(self, items: Iterable[tuple]) -> Iterator[tuple]:
        """``items`` ``(kind, batch, meta)`` from the DataLoader with their videos decoded. PyAV batches come
        decoded from the workers (uint8) and pass as they are; DALI batches (their ``video`` a list of
        host-side DaliSamples) are decoded ``data.dali_prefetch`` batches ahead of the consumer in a background
        thread (:class:`tvts.data.dali.DecodeAhead`), or here, synchronously, with 0. Items without a batch
        (a worker's error, a trailing skip count) pass untouched. Whatever the loader records of an item it
        records when the item leaves this generator, so decoding ahead does not move a resume position."""
        if self.decoder != "dali":
            yield from items
            return
        reader = self._dali_reader()

        def decode(item: tuple) -> tuple:
            kind, batch, meta = item
            if isinstance(batch, dict):
                batch["video"] = reader(batch["video"])
            return kind, batch, meta

        depth = self.cfg.data.dali_prefetch
        if not depth:
            for item in items:
                yield decode(item)
            return
        from tvts.data.dali import DecodeAhead

        ahead = DecodeAhead(items, decode, depth, reader.device_id if reader.device == "gpu" else None)
        try:
            yield from ahead
        finally:
            ahead.close()
