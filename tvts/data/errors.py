"""Bad input is skipped and counted by reason, never silently dropped or replaced (no black frames)."""
from __future__ import annotations

import collections
import logging
import threading

log = logging.getLogger("tvts.data")


class SkipSample(Exception):
    """Raised for an input that cannot be used. ``reason`` is a short stable key (e.g. ``corrupt_video``,
    ``empty_transcript``, ``undecodable_transcript``, ``few_words``, ``past_end``); ``detail`` names the file and what is wrong."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class SkipCounter:
    """Counts skipped inputs by reason and logs the first one of each reason, then one in every ``log_every``."""

    def __init__(self, log_every: int = 100):
        self.counts: collections.Counter[str] = collections.Counter()
        self.log_every = log_every
        self._lock = threading.Lock()

    def add(self, err: SkipSample | str, detail: str = "") -> None:
        reason = err.reason if isinstance(err, SkipSample) else err
        detail = err.detail if isinstance(err, SkipSample) else detail
        with self._lock:
            self.counts[reason] += 1
            n = self.counts[reason]
        if n == 1 or n % self.log_every == 0:
            log.warning("skipped (%s, %d so far): %s", reason, n, detail)

    def merge(self, other: dict) -> None:
        with self._lock:
            self.counts.update(other)

    def as_dict(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))

    @property
    def total(self) -> int:
        return sum(self.counts.values())
