"""Which frames of a span to decode (method §2.1 step 6).

The span from the first window's start to the last window's end, gaps included, is cut into
``num_frames`` equal bins. Training draws one uniformly random time per bin; evaluation takes each
bin's middle. Frames are therefore always chronological and not pinned to windows.

Times are seconds on the video's presentation timeline, measured from its first frame. The frame
shown at time ``t`` is the one whose presentation interval ``[start, next start)`` contains ``t``;
both the PyAV and the DALI decoders select frames by this rule, through :func:`frame_indices`.
The official code instead rounds ``t * frame_count / duration`` down, which is off by one frame
whenever the container's duration is not exactly ``frame_count / fps``.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Optional

import numpy as np


def frame_times(span_start: float, span_end: float, num_frames: int, train: bool,
                rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """Sample times for ``num_frames`` frames of ``[span_start, span_end)``: (num_frames,) float64 seconds.

    Train: one uniform time per equal bin (``rng`` required). Eval: the bin middles (``rng`` unused).
    The result is strictly increasing when the span is non-empty.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    if not span_end > span_start:
        raise ValueError(f"empty span [{span_start}, {span_end})")
    width = (span_end - span_start) / num_frames
    starts = span_start + width * np.arange(num_frames, dtype=np.float64)
    if not train:
        return starts + 0.5 * width
    if rng is None:
        raise ValueError("frame_times(train=True) needs a numpy Generator")
    # rng.random() is in [0, 1), so every time stays inside its own bin and below span_end
    return starts + width * rng.random(num_frames)


def cfr_frame_starts(fps: float | Fraction, num_frames: int) -> np.ndarray:
    """Presentation start times ``k / fps`` of a constant-frame-rate stream: (num_frames,) float64 seconds.

    ``fps`` may be a Fraction (PyAV's ``average_rate``, e.g. 30000/1001); each start is then the
    correctly rounded float of the exact rational, so ``k / fps`` typed by a caller maps to frame k.
    """
    rate = Fraction(fps).limit_denominator(1 << 20) if isinstance(fps, float) else Fraction(fps)
    k = np.arange(num_frames, dtype=np.int64)
    return (k * rate.denominator) / rate.numerator


def frame_indices(times, frame_starts: np.ndarray) -> np.ndarray:
    """Index of the frame shown at each time: (len(times),) int64.

    ``frame_starts``: (N,) ascending presentation start times in seconds (:func:`cfr_frame_starts`,
    or :func:`tvts.data.decode.frame_starts` for the exact timestamps of a file). A time before the
    first frame maps to frame 0; a time past the last start maps to the last frame (checking that a
    time is not past the end of the video is the caller's job: it needs the last frame's duration).
    """
    starts = np.asarray(frame_starts, dtype=np.float64)
    if starts.size == 0:
        raise ValueError("frame_indices needs at least one frame start")
    idx = np.searchsorted(starts, np.asarray(times, dtype=np.float64), side="right") - 1
    return np.clip(idx, 0, starts.size - 1).astype(np.int64)
