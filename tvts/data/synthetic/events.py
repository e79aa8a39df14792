"""What a synthetic scene is made of and when its events happen.

The vocabulary of objects and events (:data:`COLOURS`, :data:`SHAPES`, :data:`EVENT_TYPES`), one event's
ground truth (:class:`Event`), the window grid of a video (:func:`video_duration`, :func:`event_windows`)
and the draw of a chain's event types (:func:`sample_event_types`): shared by the narration, the scenes and
the procedural stream (:mod:`tvts.data.stream`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np

# ----------------------------------------------------------------------------------------------
# Vocabulary of the scene
# ----------------------------------------------------------------------------------------------
COLOURS: Dict[str, Tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 90, 235),
    "yellow": (235, 215, 50),
    "purple": (160, 60, 210),
    "orange": (245, 140, 30),
    "white": (235, 235, 235),
    "cyan": (40, 205, 215),
}
# spoken names of each shape (the first is the canonical one)
SHAPES: Dict[str, Tuple[str, ...]] = {
    "square": ("square", "box", "block"),
    "circle": ("circle", "ball", "dot"),
    "triangle": ("triangle",),
    "diamond": ("diamond",),
    "cross": ("cross", "plus sign"),
}
EVENT_TYPES: Tuple[str, ...] = (
    "move_left", "move_right", "move_up", "move_down", "grow", "shrink", "recolour", "appear", "disappear",
)


@dataclass
class Event:
    type: str  # one of EVENT_TYPES
    start: float  # window start, seconds
    end: float  # window end, seconds
    target: int  # index into SyntheticVideo.objects
    colour: str  # target's colour when the event starts ("appear": its colour)
    new_colour: str = ""  # recolour only


def video_duration(events: int = 4, event_s: float = 4.0, gap_s: float = 1.0) -> float:
    """Seconds of a corpus video: ``events * event_s + (events - 1) * gap_s``."""
    return events * event_s + (events - 1) * gap_s


def event_windows(events: int = 4, event_s: float = 4.0, gap_s: float = 1.0) -> List[Tuple[float, float]]:
    """(start, end) seconds of each event's window."""
    return [(k * (event_s + gap_s), k * (event_s + gap_s) + event_s) for k in range(events)]


def sample_event_types(rng: np.random.Generator, events: int) -> List[str]:
    """Event types of one chain: uniform at every position, and distinct within a chain of up to 9.

    Uniform per position: one transcript's event says nothing about where it was (the text-only
    check relies on it). Distinct: two windows with the same event on the same object would be
    interchangeable for video and text alike, capping sort accuracy (about 92 % with independent
    draws). Longer chains concatenate independent permutations.
    """
    blocks = -(-events // len(EVENT_TYPES))
    order = np.concatenate([rng.permutation(len(EVENT_TYPES)) for _ in range(blocks)])[:events]
    return [EVENT_TYPES[i] for i in order]
