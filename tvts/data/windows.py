"""Planning window sets over a video: K consecutive windows of one length, ``gap_s`` apart.

The official loader draws one span per sample anywhere in the video (method spec §2.1 step 3): one
window length ``randint(3, 5)`` seconds shared by the K = 4 windows, 1 s gaps, so spans of 15, 19 or
23 s. Here a long video gives several non-overlapping sets, laid out once at ingest (or once per epoch
with a fresh generator). The layout rule, exactly:

1. ``min_span = k * window_min_s + (k - 1) * gap_s``. A video with ``duration < min_span`` gives no set
   and counts one ``too_short``.
2. The first set starts at ``offset ~ U[0, min(min_span + gap_s, duration - min_span))`` seconds: a
   random phase of the tiling (up to one shortest stride) that always leaves room for one set.
3. From the cursor ``t``, the window length ``L`` is drawn among the lengths that still fit before the
   end (``k * L + (k - 1) * gap_s <= duration - t``): an integer number of seconds, uniform over
   ``[window_min_s, min(window_max_s, fit)]`` inclusive, when both bounds are integers (official
   ``randint(3, 5)``); otherwise uniform over the real interval; exactly ``window_min_s`` when the two
   bounds are equal (no draw). No length fits: the layout ends.
4. Window i covers ``[t + i * (L + gap_s), t + i * (L + gap_s) + L]``; the set spans
   ``[t, t + k * L + (k - 1) * gap_s]``. The next set starts ``gap_s`` after this one ends.
5. Transcript i is the space-joined words whose time lies strictly inside window i (official). A set
   with a window of fewer than ``min_words`` words is not used and counts one ``few_words``; the cursor
   still moves past it.

So no window ever ends past ``duration``, and the same generator state gives the same sets.
"""
from __future__ import annotations

import collections
import math
from dataclasses import dataclass

import numpy as np

from tvts.data.transcripts import TimedWords

_EPS = 1e-9  # float slack when testing whether a length fits


@dataclass(frozen=True)
class WindowSet:
    """K windows cut from one video, with their transcripts. Times in seconds from the video start."""

    start: float  # span start = windows[0][0]
    end: float  # span end = windows[-1][1]
    windows: list[tuple[float, float]]  # K (start, end) pairs of one length, gap_s apart, chronological
    transcripts: list[str]  # K space-joined transcripts, in chronological order (shuffling is the sampler's)

    @property
    def window_length(self) -> float:
        return self.windows[0][1] - self.windows[0][0]


def plan_window_sets(
    words: TimedWords,
    duration: float,
    k: int,
    window_min_s: float,
    window_max_s: float,
    gap_s: float,
    min_words: int,
    rng: np.random.Generator,
) -> tuple[list[WindowSet], collections.Counter]:
    """Lay out non-overlapping window sets over a video of ``duration`` seconds (rule in the module doc).

    Returns the usable sets in time order and a Counter of the skipped ones by reason
    (``too_short``, ``few_words``).
    """
    if k < 1:
        raise ValueError(f"plan_window_sets: k must be >= 1, got {k}")
    if not 0 < window_min_s <= window_max_s:
        raise ValueError(f"plan_window_sets: need 0 < window_min_s <= window_max_s, got {window_min_s}, {window_max_s}")
    if gap_s < 0:
        raise ValueError(f"plan_window_sets: gap_s must be >= 0, got {gap_s}")
    skipped: collections.Counter = collections.Counter()
    sets: list[WindowSet] = []
    duration = float(duration)
    min_span = k * window_min_s + (k - 1) * gap_s
    if not math.isfinite(duration) or duration < min_span:
        skipped["too_short"] += 1
        return sets, skipped
    integer_lengths = float(window_min_s).is_integer() and float(window_max_s).is_integer()
    t = float(rng.uniform(0.0, min(min_span + gap_s, duration - min_span)))
    while True:
        fit = (duration - t - (k - 1) * gap_s) / k  # longest window length that still fits
        if fit < window_min_s - _EPS:
            break
        length = _draw_length(window_min_s, window_max_s, fit, integer_lengths, rng)
        windows = []
        for i in range(k):
            w0 = t + i * (length + gap_s)
            windows.append((w0, min(w0 + length, duration)))  # min: float rounding only
        transcripts = [words.words_between(w0, w1) for w0, w1 in windows]
        if min(len(ws) for ws in transcripts) < min_words:
            skipped["few_words"] += 1
        else:
            sets.append(WindowSet(windows[0][0], windows[-1][1], windows, [" ".join(ws) for ws in transcripts]))
        t = windows[-1][1] + gap_s
    return sets, skipped


def _draw_length(lo: float, hi: float, fit: float, integer_lengths: bool, rng: np.random.Generator) -> float:
    """One window length in seconds: see rule 3 of the module doc."""
    if lo == hi:
        return float(lo)
    if integer_lengths:
        top = min(int(hi), math.floor(fit + _EPS))
        return float(rng.integers(int(lo), top, endpoint=True))
    return float(rng.uniform(lo, min(hi, fit)))
