"""The synthetic narration: what the cues say and what they must not give away (tvts/data/synthetic/narration.py)."""
from __future__ import annotations

import re

import numpy as np

from tvts.data import synthetic as syn
from tvts.data.synthetic.narration import FUNCTION_WORDS

SHAPE_WORDS = {w for names in syn.SHAPES.values() for name in names for w in name.split()}
FILLER_WORDS = {w for filler in syn.FILLERS for w in filler.split()}


# ----------------------------------------------------------------------------------------------
# Narration
# ----------------------------------------------------------------------------------------------
def test_clean_narration_names_its_event_type_only():
    for index in range(100):
        v = syn.sample_video(index, noise=0.0)
        for ev, cue in zip(v.events, v.cues):
            words = set(cue.clean.split())
            assert words & syn.KEYWORDS[ev.type], cue.clean
            for other, keys in syn.KEYWORDS.items():
                assert other == ev.type or not words & keys, (ev.type, cue.clean)
            assert cue.text == cue.clean


def test_noisy_narration_mostly_names_the_right_event():
    hits = changed = content = 0
    cues = 0
    for index in range(100):
        v = syn.sample_video(index, seed=5, noise=0.2)
        for ev, cue in zip(v.events, v.cues):
            cues += 1
            assert re.fullmatch(r"[a-z]+( [a-z]+)*", cue.text), cue.text  # auto-caption style
            noisy, clean = cue.text.split(), cue.clean.split()
            assert len(noisy) == len(clean)
            hits += bool(set(noisy) & syn.KEYWORDS[ev.type])
            changed += sum(a != b for a, b in zip(noisy, clean))
            content += sum(w not in FUNCTION_WORDS and w not in FILLER_WORDS for w in clean)
    assert 0.65 < hits / cues < 0.95  # the noise removes some, most survive
    assert 0.13 < changed / content < 0.27  # about 20 % of the content words
    assert any(w in syn.FILLERS for index in range(5) for c in syn.sample_video(index).cues for w in c.text.split())


def _position_accuracy(train: list, test: list) -> float:
    """Naive Bayes over bag-of-words: how well one cue's words predict its position."""
    vocab = sorted({w for words, _ in train + test for w in words})
    index = {w: i for i, w in enumerate(vocab)}
    counts = np.ones((4, len(vocab)))
    for words, pos in train:
        for w in words:
            counts[pos, index[w]] += 1
    log_p = np.log(counts / counts.sum(1, keepdims=True))
    right = sum(int(np.argmax([log_p[p, [index[w] for w in words]].sum() for p in range(4)])) == pos
                for words, pos in test)
    return right / len(test)


def test_one_transcript_does_not_reveal_its_position():
    cues = [(c.text.split(), k) for i in range(300) for k, c in enumerate(syn.sample_video(i, seed=2).cues)]
    train, test = cues[:800], cues[800:]
    assert _position_accuracy(train, test) < 0.32  # chance is 0.25
    # the same classifier finds a position that the words do carry
    leaky = [(words + [f"pos{pos}"] if i % 2 else words, pos) for i, (words, pos) in enumerate(cues)]
    assert _position_accuracy(leaky[:800], leaky[800:]) > 0.5


def test_no_cue_dates_another():
    """Cues never name an object in a way that fixes its order against another cue."""
    for index in range(200):
        v = syn.sample_video(index, noise=0.0)
        recoloured = {e.target for e in v.events if e.type == "recolour"}
        for ev, cue in zip(v.events, v.cues):
            words = set(cue.clean.split())
            named_colours = words & set(syn.COLOURS)
            if ev.type in ("appear", "disappear"):
                assert not words & (SHAPE_WORDS | set(syn.COLOURS)), cue.clean
            elif ev.type == "recolour":
                assert named_colours == {ev.new_colour}, cue.clean
            elif ev.target in recoloured:
                assert not named_colours, cue.clean
            else:
                assert named_colours <= {ev.colour}, cue.clean


