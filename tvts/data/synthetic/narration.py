"""What a synthetic video says: the narration of its events and its WebVTT file.

Each event gets one WebVTT cue inside its window that narrates it in noisy auto-caption English:
lowercase, no punctuation, fillers, synonyms and a fraction ``noise`` of the content words replaced
by wrong ones. Odd-numbered videos get YouTube-style word timing tags, even ones plain cues.

The text alone must not give the order away, or the sort loss can be solved without looking at the video
(:mod:`tvts.data.synthetic.scene` says how the chain itself is built for that):

- No cue dates another: appear/disappear cues do not say which object, and an object's colour is
  named only if it never changes. Otherwise "a red triangle appears" would have to come before
  "the triangle grows", and a text-only sorter could order part of a video without looking.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np

from tvts.data.synthetic.events import COLOURS, SHAPES, Event

# ----------------------------------------------------------------------------------------------
# Vocabulary of the narration
# ----------------------------------------------------------------------------------------------
# Narration templates. {ref}: a reference to the target object (see _REFS, _REFS_COLOUR); {new}: the colour
# after a recolour. Every template of a type contains one of that type's KEYWORDS and none of
# another type's (pinned by a test), so a cue's type is readable from its clean words while noise
# can erase or change it. "appear" and "disappear" never say which object: "a red triangle
# appears" would date every later cue that mentions the triangle, i.e. the text alone would give
# part of the order away.
TEMPLATES: Dict[str, Tuple[str, ...]] = {
    "move_left": ("{ref} moves to the left", "{ref} slides left", "{ref} goes over to the left side",
                  "{ref} drifts left", "{ref} is heading left", "{ref} shifts a bit to the left"),
    "move_right": ("{ref} moves to the right", "{ref} slides right", "{ref} goes over to the right side",
                   "{ref} drifts right", "{ref} is heading right", "{ref} shifts a bit to the right"),
    "move_up": ("{ref} moves up", "{ref} rises", "{ref} goes up", "{ref} floats upward",
                "{ref} climbs up", "{ref} slides upwards"),
    "move_down": ("{ref} moves down", "{ref} drops", "{ref} sinks", "{ref} goes down",
                  "{ref} slides downward", "{ref} falls down"),
    "grow": ("{ref} gets bigger", "{ref} grows", "{ref} is growing", "{ref} expands",
             "{ref} gets larger", "{ref} grows a lot bigger"),
    "shrink": ("{ref} gets smaller", "{ref} shrinks", "{ref} is shrinking", "{ref} contracts",
               "{ref} gets tinier", "{ref} shrinks quite a bit"),
    "recolour": ("{ref} turns {new}", "{ref} changes colour to {new}", "{ref} switches to {new}",
                 "{ref} gets painted {new}", "{ref} changes to {new}", "{ref} turns {new} now"),
    "appear": ("something appears", "here comes a new shape", "a new one pops in", "another shape arrives",
               "something appears out of nowhere", "we get a new shape"),
    "disappear": ("one of the shapes disappears", "something vanishes", "one of them fades away", "a shape is gone",
                  "one of them goes away", "something just disappears"),
}
KEYWORDS: Dict[str, frozenset] = {
    "move_left": frozenset({"left"}),
    "move_right": frozenset({"right"}),
    "move_up": frozenset({"up", "rises", "upward", "upwards"}),
    "move_down": frozenset({"down", "drops", "sinks", "downward"}),
    "grow": frozenset({"bigger", "grows", "growing", "expands", "larger"}),
    "shrink": frozenset({"smaller", "shrinks", "shrinking", "contracts", "tinier"}),
    "recolour": frozenset({"turns", "colour", "switches", "painted", "changes"}),
    "appear": frozenset({"appears", "comes", "new", "arrives"}),
    "disappear": frozenset({"disappears", "vanishes", "fades", "gone", "away"}),
}
# References to an object. The colour is named only when the object keeps it for the whole video
# (after a recolour, "the red square" vs "the blue square" would tell before from after).
_REFS = ("the {shape}", "our {shape}", "that {shape}")
_REFS_COLOUR = ("the {colour} {shape}", "that {colour} {shape}", "the {colour} one", "this {colour} {shape}")
FILLERS: Tuple[str, ...] = ("um", "uh", "so", "you know", "okay now", "and then", "like", "alright", "now",
                            "basically", "i mean", "okay", "and", "so yeah")
# Words that carry no content; they are never replaced by noise (fillers are not either).
FUNCTION_WORDS = frozenset(
    "a an the to of is that this our one them it here we get bit over side just out lot little now".split())
# Wrong words that noise substitutes: ASR-like everyday words plus the scene's own vocabulary, so an
# error can also name a wrong colour, shape or event.
_GENERIC_WORDS = ("cat", "house", "water", "table", "light", "paper", "game", "music", "phone", "car", "tree",
                  "window", "money", "food", "school", "night", "bread", "shirt", "garden", "rock", "lift",
                  "write", "sea", "bland", "grew", "sing", "ground", "brown", "sheep", "bright")


def _content_vocabulary() -> Tuple[str, ...]:
    words = set(COLOURS)
    for names in SHAPES.values():
        for name in names:
            words.update(name.split())
    for templates in TEMPLATES.values():
        for t in templates:
            words.update(w for w in t.split() if not w.startswith("{") and w not in FUNCTION_WORDS)
    return tuple(sorted(words | set(_GENERIC_WORDS)))


_NOISE_WORDS = _content_vocabulary()


@dataclass
class Cue:
    """One narration cue: times in seconds; ``words`` are (start time, word) pairs covering ``text``."""

    start: float
    end: float
    text: str  # as written to the VTT file (with noise)
    clean: str  # the same cue before noise (ground truth for tests)
    words: List[Tuple[float, str]]


# ----------------------------------------------------------------------------------------------
# Narration
# ----------------------------------------------------------------------------------------------
def narrate(rng: np.random.Generator, ev: Event, shape: str, stable_colour: bool, noise: float,
            event_s: float) -> Cue:
    """One cue for ``ev``; ``stable_colour``: the target never changes colour, so naming it is safe."""
    names = SHAPES[shape]
    fill = {"colour": ev.colour, "shape": names[int(rng.integers(len(names)))], "new": ev.new_colour}
    refs = _REFS + _REFS_COLOUR if stable_colour else _REFS
    fill["ref"] = refs[int(rng.integers(len(refs)))].format(**fill)
    templates = TEMPLATES[ev.type]
    clean_words = templates[int(rng.integers(len(templates)))].format(**fill).split()

    # Noise: each content word is replaced by a different word with probability `noise`.
    words = []
    for w in clean_words:
        if w not in FUNCTION_WORDS and rng.random() < noise:
            wrong = w
            while wrong == w:
                wrong = _NOISE_WORDS[int(rng.integers(len(_NOISE_WORDS)))]
            w = wrong
        words.append(w)

    def filler() -> List[str]:
        return FILLERS[int(rng.integers(len(FILLERS)))].split()

    # Fillers go around the sentence (never between a word and its noise decision, so `clean`
    # and `text` differ exactly in the replaced words).
    pre: List[str] = []
    if rng.random() < 0.8:
        pre = filler()
        if rng.random() < 0.3:
            pre += filler()
    post = filler() if rng.random() < 0.3 else []
    clean_words = pre + clean_words + post
    words = pre + words + post

    # The cue sits inside the event's window, starting a little after it and ending a little before.
    start = ev.start + rng.uniform(0.05, 0.25) * event_s
    end = ev.end - rng.uniform(0.05, 0.2) * event_s
    start_ms, end_ms = int(math.ceil(start * 1000)), int(math.floor(end * 1000))
    n = len(words)
    slot = (end_ms - start_ms) / n
    times = [start_ms + int(i * slot + rng.uniform(0, 0.3) * slot) if i else start_ms for i in range(n)]
    return Cue(start=start_ms / 1000, end=end_ms / 1000, text=" ".join(words), clean=" ".join(clean_words),
               words=[(t / 1000, w) for t, w in zip(times, words)])


def _vtt_time(seconds: float) -> str:
    ms = int(round(seconds * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def to_vtt(cues: Sequence[Cue], word_timed: bool) -> str:
    """WebVTT text of ``cues``: plain cues, or YouTube auto-caption style with ``word<t><c> next</c>`` tags."""
    if not word_timed:
        body = [f"{i + 1}\n{_vtt_time(c.start)} --> {_vtt_time(c.end)}\n{c.text}\n" for i, c in enumerate(cues)]
        return "WEBVTT\n\n" + "\n".join(body)
    body = []
    for c in cues:
        (_, first), rest = c.words[0], c.words[1:]
        line = first + "".join(f"<{_vtt_time(t)}><c> {w}</c>" for t, w in rest)
        body.append(f"{_vtt_time(c.start)} --> {_vtt_time(c.end)} align:start position:0%\n{line}\n")
    return "WEBVTT\nKind: captions\nLanguage: en\n\n" + "\n".join(body)

