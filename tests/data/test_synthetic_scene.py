"""The synthetic scenes: events, ground truth and rendered frames (tvts/data/synthetic/{events,scene}.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from tvts.data import synthetic as syn


# ----------------------------------------------------------------------------------------------
# Scene
# ----------------------------------------------------------------------------------------------
def test_duration_and_windows_follow_the_arguments():
    v = syn.sample_video(0, size=32, fps=4, events=3, event_s=2.0, gap_s=0.5)
    assert v.duration == syn.video_duration(3, 2.0, 0.5) == 7.0
    assert syn.render(v).shape == (28, 32, 32, 3)
    assert [(e.start, e.end) for e in v.events] == [(0.0, 2.0), (2.5, 4.5), (5.0, 7.0)]


def test_gaps_are_still_and_windows_change():
    for index in range(6):
        v = syn.sample_video(index)
        frames = syn.render(v).astype(np.int16)
        for start, end in syn.event_windows():
            a, b = int(math.ceil(start * v.fps)), min(int(end * v.fps), v.num_frames - 1)
            assert np.abs(frames[b] - frames[a]).max() > 20  # something visibly changed in the window
        for (_, end), (start, _) in zip(syn.event_windows()[:-1], syn.event_windows()[1:]):
            assert np.array_equal(frames[int(end * v.fps)], frames[int(start * v.fps)])  # still in the gap


def test_state_carries_over_and_stays_on_canvas():
    """Events act on visible objects only, change what they say, and keep every object inside."""
    for index in range(150):
        v = syn.sample_video(index)
        states = v.key_states  # key 2k+1: window k start, 2k+2: its end
        for k, ev in enumerate(v.events):
            before, after = states[ev.target, 2 * k + 1], states[ev.target, 2 * k + 2]
            others = np.delete(states[:, 2 * k + 2], ev.target, 0)
            assert np.array_equal(others, np.delete(states[:, 2 * k + 1], ev.target, 0))
            assert before[3] == (0.0 if ev.type == "appear" else 1.0)
            assert after[3] == (0.0 if ev.type == "disappear" else 1.0)
            dx, dy, dr = after[0] - before[0], after[1] - before[1], after[2] / before[2]
            expect = {"move_left": dx < -4, "move_right": dx > 4, "move_up": dy < -4, "move_down": dy > 4,
                      "grow": dr > 1.1, "shrink": dr < 0.9}
            assert expect.get(ev.type, dx == dy == 0 and dr == 1)
            if ev.type == "recolour":
                assert not np.array_equal(before[4:], after[4:])
        shown = states[:, :, 3] > 0
        x, y, r = states[..., 0][shown], states[..., 1][shown], states[..., 2][shown]
        assert (x - r >= 0).all() and (x + r <= 64).all() and (y - r >= 0).all() and (y + r <= 64).all()
        assert (r >= 2.9).all()


def test_event_types_are_uniform_per_position():
    """The type of an event does not depend on its position: chi-square on 200 chains."""
    counts = np.zeros((4, len(syn.EVENT_TYPES)))
    for index in range(200):
        events = syn.sample_video(index, seed=11).events
        assert len({ev.type for ev in events}) == 4  # no two windows show the same event
        for k, ev in enumerate(events):
            counts[k, syn.EVENT_TYPES.index(ev.type)] += 1
    expected = 200 / len(syn.EVENT_TYPES)
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 66.6  # 99.9th percentile of chi-square with 35 degrees of freedom
    assert counts.min() > 5


# ----------------------------------------------------------------------------------------------
# Downstream clips
# ----------------------------------------------------------------------------------------------
def _clips(label: int, n: int = 80) -> list:
    # other clip indices per class: clip i of two classes would share every random draw but the direction
    return [syn.sample_clip(1000 * label + i, seed=4, label=label) for i in range(n)]


def _histograms(frames: np.ndarray) -> np.ndarray:
    """(N, 65) single-frame statistics of (N, H, W, 3) frames: a colour histogram (4 levels per
    channel) and the fraction of bright pixels (objects are bright, backgrounds dark)."""
    q = frames.astype(np.int64) // 64
    codes = (q[..., 0] * 16 + q[..., 1] * 4 + q[..., 2]).reshape(len(frames), -1)
    hist = np.stack([np.bincount(c, minlength=64) for c in codes]) / codes.shape[1]
    bright = (frames.max(-1) > 110).reshape(len(frames), -1).mean(1, keepdims=True)
    return np.concatenate([hist, bright], 1)


def _max_z(a: np.ndarray, b: np.ndarray) -> float:
    se = np.sqrt(a.var(0) / len(a) + b.var(0) / len(b)) + 1e-4
    return float((np.abs(a.mean(0) - b.mean(0)) / se).max())


@pytest.mark.parametrize("pair", [(0, 1), (2, 3), (4, 5), (6, 7)])
def test_a_first_frame_does_not_tell_the_direction(pair):
    first = [_histograms(np.stack([syn.render_clip(c)[0] for c in _clips(label)])) for label in pair]
    assert _max_z(*first) < 4.0  # max |z| over 65 statistics; > 4 has p < 0.5 % under equal distributions


def test_downstream_classes_differ_in_motion():
    def foreground(clip, frame):  # pixels that differ from the (known) background
        return np.abs(frame.astype(np.float32) - clip.background).sum(-1) > 40

    def centroid_x(mask):
        return (mask * np.arange(mask.shape[1])).sum() / mask.sum()

    shift = {}
    for label in (0, 1):
        shift[label] = []
        for clip in _clips(label, 30):
            frames = syn.render_clip(clip)
            shift[label].append(centroid_x(foreground(clip, frames[-1])) - centroid_x(foreground(clip, frames[0])))
    assert max(shift[0]) < 0 < min(shift[1])  # every left clip moves left, every right clip right
    area = {label: [foreground(c, syn.render_clip(c)[-1]).sum() / foreground(c, syn.render_clip(c)[0]).sum()
                    for c in _clips(label, 30)] for label in (2, 3)}
    assert min(area[2]) > 1.1 and max(area[3]) < 0.95  # still objects dilute the target's change
    # the same statistics on the last frame do tell the direction: the first-frame test has power
    for pair in ((2, 3), (4, 5)):
        last = [_histograms(np.stack([syn.render_clip(c)[-1] for c in _clips(label)])) for label in pair]
        assert _max_z(*last) > 8.0

