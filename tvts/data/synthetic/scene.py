"""The scenes of the synthetic sets: their ground truth, rendered to frames and encoded to video files.

A corpus video (:func:`sample_video`) is a chain of ``events`` visual events on a small canvas. Event ``k``
fills the window ``[k * (event_s + gap_s), k * (event_s + gap_s) + event_s]`` seconds and the ``gap_s``
between windows is still, so the demo's window grid (window 4 s, gap 1 s, K = 4) lines up with the events.
An event changes one object: it moves left/right/up/down, grows, shrinks, changes colour, appears or
disappears. The scene state carries over from event to event. Each event is narrated by one cue
(:mod:`tvts.data.synthetic.narration`).

Why the chain is built the way it is (the text alone must not give the order away, or the sort
loss can be solved without looking at the video):

- The event type of every position is uniform (the types of one chain are a random draw without
  replacement), so one transcript's words say nothing about its position, and no two windows of a
  video show the same event. The scene is then built to make any chain possible: enough
  objects are on screen at the start that every event has a target, and each object's start
  position, size and step lengths are solved from its own future events so that it never leaves
  the canvas.
- Objects in one video have distinct shapes and colours, so a narration's object reference picks
  out one object.

A downstream clip (:func:`sample_clip`) shows one object changing in one of two opposite directions
(:data:`DOWNSTREAM_CLASSES`). :func:`render` and :func:`render_clip` draw the frames, :func:`encode`
writes them as H.264 or VP9.
"""
from __future__ import annotations

import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from tvts.data.synthetic.events import COLOURS, SHAPES, Event, event_windows, sample_event_types, video_duration
from tvts.data.synthetic.narration import Cue, narrate
from tvts.errors import UserError

# ----------------------------------------------------------------------------------------------
# Ground truth of one video
# ----------------------------------------------------------------------------------------------
_MOVES = {"move_left": (-1, 0), "move_right": (1, 0), "move_up": (0, -1), "move_down": (0, 1)}  # image axes (x, y)
_REF_SIZE = 64  # sizes below are in pixels of a 64x64 canvas and scale with the canvas
_R_MIN, _R_MAX = 3.0, 16.0  # half-extent of an object over its whole life
# Events are large on purpose: a from-scratch ViT with 16 px patches learns to tell them apart in hundreds of
# steps only when one event changes its object a lot (a throwaway supervised per-window event-type probe on the
# demo encoder: 19-22 % after 200-250 steps with these sizes, 14.5 % with steps of 14 px and a 1.4x size factor;
# chance 11 %; docs/benchmarks.md, "CPU demo").
_R_START = (6.5, 11.0)  # preferred half-extent when it enters the scene
_GROW = 1.8  # size factor of one grow/shrink event (smaller when a chain needs it)
_STEP = 22.0  # displacement of one move event (smaller when a chain needs it)
# One object state: x, y (centre, pixels), r (half-extent, pixels), alpha (0..1), red, green, blue (0..255)
_X, _Y, _R, _A, _RGB = 0, 1, 2, 3, slice(4, 7)


@dataclass
class SyntheticVideo:
    """Ground truth of one corpus video; :func:`render` turns it into frames."""

    id: str
    size: int
    fps: int
    num_frames: int
    duration: float  # seconds, = num_frames / fps
    background: np.ndarray  # (size, size, 3) float32, 0..255
    objects: List[str]  # shape of each object, in drawing order
    key_times: np.ndarray  # (B,) seconds: 0, each window's start and end, duration
    key_states: np.ndarray  # (num_objects, B, 7) float32 state at each key time, linear in between
    events: List[Event]
    cues: List[Cue]
    word_timed: bool  # its VTT carries YouTube-style word timing tags


class SyntheticError(UserError):
    """Settings a synthetic corpus or downstream set cannot be made with; one line naming the setting."""


def check_canvas(size: int, fps: int) -> None:
    """Raise :class:`SyntheticError` unless a ``size`` x ``size`` canvas at ``fps`` can be encoded (yuv420p)."""
    if size % 2 or size < 16:
        raise SyntheticError(f"size={size}: the canvas side must be an even number of pixels >= 16 (yuv420p)")
    if fps < 1:
        raise SyntheticError(f"fps={fps}: expected a positive integer")


def sample_video(index: int, seed: int = 0, size: int = 64, fps: int = 8, events: int = 4, event_s: float = 4.0,
                 gap_s: float = 1.0, noise: float = 0.2, narration_variants: int = 0) -> SyntheticVideo:
    """The ground truth (scene, events, narration) of corpus video ``index`` for ``seed``; writes nothing.

    ``narration_variants`` > 0 bounds the narration: a cue is then one of that many seeded variants of its
    event's description (type, object, colours), chosen at random, instead of a fresh draw. The procedural
    stream uses it so that a frozen text tower's embedding cache keeps hitting (a fresh draw is unique for
    ~90 % of cues, and embedding 128 new transcripts per step costs several times the demo's whole step).
    """
    check_canvas(size, fps)
    if events < 1 or event_s <= 0 or gap_s < 0 or not 0.0 <= noise <= 1.0:
        raise SyntheticError(f"events={events} event_s={event_s} gap_s={gap_s} noise={noise}: out of range "
                             f"(events >= 1, event_s > 0, gap_s >= 0, 0 <= noise <= 1)")
    rng = np.random.default_rng([seed, 0, index])
    scale = size / _REF_SIZE
    types = sample_event_types(rng, events)
    windows = event_windows(events, event_s, gap_s)
    num_frames = int(round(video_duration(events, event_s, gap_s) * fps))
    duration = num_frames / fps

    # How many objects must be on screen at the start so that every event has a target.
    delta = [1 if t == "appear" else -1 if t == "disappear" else 0 for t in types]
    before = np.concatenate([[0], np.cumsum(delta)[:-1]])  # visible count before event k, minus the start count
    start_count = max(1, 1 - int(before.min()))
    total = start_count + delta.count(1)
    if total < len(SHAPES) and rng.random() < 0.35:  # sometimes an idle extra object
        start_count, total = start_count + 1, total + 1

    shapes = [list(SHAPES)[i % len(SHAPES)] for i in rng.permutation(max(total, len(SHAPES)))[:total]]
    colours = [list(COLOURS)[i % len(COLOURS)] for i in rng.permutation(max(total, len(COLOURS)))[:total]]

    # Assign each event a target, in time order; the scene state (who is visible, colours) carries over.
    visible = list(range(start_count))
    next_new = start_count
    current = list(colours)
    event_list: List[Event] = []
    for k, kind in enumerate(types):
        if kind == "appear":
            target = next_new
            next_new += 1
            visible.append(target)
        else:
            target = visible[int(rng.integers(len(visible)))]
            if kind == "disappear":
                visible.remove(target)
        ev = Event(kind, windows[k][0], windows[k][1], target, current[target])
        if kind == "recolour":
            taken = set(current)  # distinct from every object of the video, visible or not yet
            free = [c for c in COLOURS if c not in taken] or [c for c in COLOURS if c != current[target]]
            ev.new_colour = free[int(rng.integers(len(free)))]
            current[target] = ev.new_colour
        event_list.append(ev)

    # (the frame grid may end a fraction of a frame before the last window does)
    key_times = np.array([0.0] + [t for w in windows for t in w] + [max(duration, windows[-1][1])])
    key_states = np.zeros((total, len(key_times), 7), np.float32)
    for obj in range(total):
        own = [(k, e.type) for k, e in enumerate(event_list) if e.target == obj]
        key_states[obj] = _plan_object(rng, obj < start_count, own, colours[obj], event_list, len(key_times), size,
                                       scale, placed=key_states[:obj, 0, :3])

    recoloured = {e.target for e in event_list if e.type == "recolour"}
    cues = []
    for ev in event_list:
        stable = ev.target not in recoloured
        cue_rng = rng
        if narration_variants:
            what = f"{ev.type}|{shapes[ev.target]}|{stable}|{ev.colour}|{ev.new_colour}"
            cue_rng = np.random.default_rng([seed, 2, zlib.crc32(what.encode()), int(rng.integers(narration_variants))])
        cues.append(narrate(cue_rng, ev, shapes[ev.target], stable, noise, event_s))
    return SyntheticVideo(
        id=f"syn{index:06d}", size=size, fps=fps, num_frames=num_frames, duration=duration,
        background=_background(rng, size), objects=shapes, key_times=key_times, key_states=key_states,
        events=event_list, cues=cues, word_timed=index % 2 == 1,
    )


def _plan_object(rng, on_screen_at_start: bool, own: List[Tuple[int, str]], colour: str, events: List[Event],
                 num_keys: int, size: int, scale: float, placed: np.ndarray) -> np.ndarray:
    """States (num_keys, 7) of one object at the key times, given its own events ``[(k, type)]``.

    Start size and step lengths are solved from the object's future so it stays within the canvas:
    the size factor and the move step shrink only when a chain (e.g. four moves to the left) needs it.
    """
    kinds = [t for _, t in own]
    # size: cumulative number of grows minus shrinks, including the start (0)
    size_steps = np.cumsum([0] + [1 if t == "grow" else -1 if t == "shrink" else 0 for t in kinds])
    r_min, r_max = _R_MIN * scale, _R_MAX * scale
    span = int(size_steps.max() - size_steps.min())
    grow = min(_GROW, (r_max / r_min) ** (1.0 / span)) if span else _GROW
    lo = max(r_min * grow ** -size_steps.min(), _R_START[0] * scale)
    hi = min(r_max * grow ** -size_steps.max(), _R_START[1] * scale)
    if lo > hi:  # the preferred start range does not fit this chain: use the whole feasible range
        lo, hi = r_min * grow ** -size_steps.min(), r_max * grow ** -size_steps.max()
    r0 = float(rng.uniform(lo, hi))
    r_life = r0 * grow ** size_steps.max()

    lo, hi, step = np.empty(2), np.empty(2), np.empty(2)
    for axis in (0, 1):
        moves = np.cumsum([0] + [_MOVES[t][axis] if t in _MOVES else 0 for t in kinds])
        room = size - 2.0 * (r_life + 1.0)  # range of centre positions that keep the object inside
        span = int(moves.max() - moves.min())
        step[axis] = min(_STEP * scale, room / span) if span else _STEP * scale
        lo[axis] = r_life + 1.0 - moves.min() * step[axis]
        hi[axis] = max(lo[axis], size - 1.0 - r_life - moves.max() * step[axis])
    start = _place(rng, lo, hi, r0, placed)

    state = np.zeros(7, np.float32)
    state[_X], state[_Y], state[_R] = start[0], start[1], r0
    state[_A] = 1.0 if on_screen_at_start else 0.0
    state[_RGB] = COLOURS[colour]
    out = np.empty((num_keys, 7), np.float32)
    out[0] = state
    mine = {k for k, _ in own}
    for k, ev in enumerate(events):  # key 2k+1 = window start, 2k+2 = window end
        out[2 * k + 1] = state
        if k in mine:
            if ev.type in _MOVES:
                state[_X] += _MOVES[ev.type][0] * step[0]
                state[_Y] += _MOVES[ev.type][1] * step[1]
            elif ev.type == "grow":
                state[_R] *= grow
            elif ev.type == "shrink":
                state[_R] /= grow
            elif ev.type == "recolour":
                state[_RGB] = COLOURS[ev.new_colour]
            elif ev.type == "appear":
                state[_A] = 1.0
            elif ev.type == "disappear":
                state[_A] = 0.0
        out[2 * k + 2] = state
    out[-1] = state
    return out


def _place(rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray, radius: float, placed: np.ndarray,
           tries: int = 8) -> np.ndarray:
    """A centre (x, y) in the box [lo, hi] that keeps clear of the ``placed`` objects (rows x, y, r).

    Of a few uniform candidates, the one with the largest gap to its nearest neighbour wins, so
    objects rarely start overlapping (an occluded object would hide its own event).
    """
    candidates = rng.uniform(lo, hi, size=(tries, 2))
    if not len(placed):
        return candidates[0]
    gaps = np.linalg.norm(candidates[:, None] - placed[None, :, :2], axis=-1) - placed[None, :, 2] - radius
    return candidates[int(np.argmax(gaps.min(axis=1)))]


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A dark plain background, lightly textured (smooth low-amplitude noise) half of the time."""
    base = rng.uniform(20, 75) + rng.uniform(-8, 8, size=3)
    bg = np.broadcast_to(base.astype(np.float32), (size, size, 3)).copy()
    if rng.random() < 0.5:
        coarse = rng.normal(size=(5, 5)).astype(np.float32)
        up = np.stack([np.interp(np.linspace(0, 4, size), np.arange(5), np.eye(5)[i]) for i in range(5)], 1)
        bg += (rng.uniform(4, 10) * (up @ coarse @ up.T)).astype(np.float32)[..., None]
    return np.clip(bg, 0, 255)


# ----------------------------------------------------------------------------------------------
# Downstream clips: direction-of-change classes
# ----------------------------------------------------------------------------------------------
# Pairs of classes that differ only by the direction of the change; label = position in this list.
DOWNSTREAM_CLASSES: Tuple[str, ...] = (
    "moving_left", "moving_right", "growing", "shrinking", "appearing", "disappearing",
    "getting_lighter", "getting_darker",
)
_CLIP_COLOURS = tuple(c for c in COLOURS if c != "white")  # white cannot get lighter


@dataclass
class DownstreamClip:
    id: str
    label: int
    num_frames: int
    fps: int
    background: np.ndarray  # (size, size, 3) float32
    objects: List[str]
    key_times: np.ndarray  # (4,) seconds: 0, change start, change end, end
    key_states: np.ndarray  # (num_objects, 4, 7) float32


def sample_clip(index: int, split: str = "train", seed: int = 0, size: int = 64, fps: int = 8,
                label: Optional[int] = None) -> DownstreamClip:
    """Ground truth of downstream clip ``index`` of ``split`` (label drawn at random unless given).

    The clip is 2 to 3 s long. One target object changes during ``[t0, t1]``; zero to two other
    objects stay still. The start state is drawn the same way for both classes of a pair, so the
    first frame has the same distribution; for appearing/disappearing the target is invisible at
    the start of "appearing", which is matched by one more still object there.
    """
    split_id = {"train": 0, "val": 1}[split]
    rng = np.random.default_rng([seed, 1, split_id, index])
    if label is None:
        label = int(rng.integers(len(DOWNSTREAM_CLASSES)))
    kind = DOWNSTREAM_CLASSES[label]
    scale = size / _REF_SIZE
    num_frames = int(rng.integers(2 * fps, 3 * fps + 1))
    duration = num_frames / fps
    t0 = rng.uniform(0.0, 0.2) * duration
    t1 = duration - rng.uniform(0.0, 0.2) * duration - 1.0 / fps
    key_times = np.array([0.0, t0, t1, duration])

    # margins keep every object inside the canvas whichever direction the pair's change goes
    shift = rng.uniform(16, 22) * scale
    factor = 1.7
    r_range = (5.0 * scale, 9.0 * scale)
    margin = 1.0 + r_range[1] * (factor if kind in ("growing", "shrinking") else 1.0)
    margin_x = margin + (shift if kind in ("moving_left", "moving_right") else 0.0)

    if kind in ("appearing", "disappearing"):
        still = int(rng.integers(1, 3)) if kind == "appearing" else int(rng.integers(0, 2))
    else:
        still = int(rng.integers(0, 3))
    count = still + 1
    shapes = [list(SHAPES)[i] for i in rng.permutation(len(SHAPES))[:count]]
    colours = [_CLIP_COLOURS[i] for i in rng.permutation(len(_CLIP_COLOURS))[:count]]
    states = np.zeros((count, 4, 7), np.float32)
    for o in range(count):
        s = states[o, 0]
        s[_R] = rng.uniform(*r_range)
        s[:2] = _place(rng, np.array([margin_x, margin]), np.array([size - margin_x, size - margin]), s[_R],
                       states[:o, 0, :3])
        s[_A] = 1.0
        s[_RGB] = COLOURS[colours[o]]
        states[o, 1:] = s
    # The target is placed last (so the still objects of "appearing" are placed exactly like the
    # still objects plus target of "disappearing"), then drawn at a random depth.
    order = rng.permutation(count)
    states, shapes = states[order], [shapes[i] for i in order]
    target = int(np.nonzero(order == count - 1)[0][0])
    after = states[target, 2]
    if kind == "moving_left":
        after[_X] -= shift
    elif kind == "moving_right":
        after[_X] += shift
    elif kind == "growing":
        after[_R] *= factor
    elif kind == "shrinking":
        after[_R] /= factor
    elif kind == "appearing":
        states[target, :2, _A] = 0.0
    elif kind == "disappearing":
        after[_A] = 0.0
    elif kind == "getting_lighter":
        after[_RGB] += (255.0 - after[_RGB]) * 0.65
    elif kind == "getting_darker":
        after[_RGB] *= 0.3
    states[target, 3] = after
    return DownstreamClip(id=f"ds{split[0]}{index:06d}", label=label, num_frames=num_frames, fps=fps,
                          background=_background(rng, size), objects=shapes, key_times=key_times, key_states=states)


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------
def _signed_distance(shape: str, dx: np.ndarray, dy: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Approximate signed distance in pixels (negative inside) to a shape of half-extent ``r``."""
    ax, ay = np.abs(dx), np.abs(dy)
    if shape == "square":
        return np.maximum(ax, ay) - r * 0.85  # a bit smaller so squares do not dominate by area
    if shape == "circle":
        return np.sqrt(dx * dx + dy * dy) - r
    if shape == "diamond":
        return (ax + ay - r) * 0.7071
    if shape == "triangle":  # apex up, base at dy = r
        return np.maximum((2.0 * ax - dy - r) * 0.4472, dy - r)
    if shape == "cross":
        w = r * 0.38
        return np.minimum(np.maximum(ax - r, ay - w), np.maximum(ax - w, ay - r))
    raise ValueError(f"unknown shape {shape!r}")


def render_tracks(background: np.ndarray, shapes: Sequence[str], key_times: np.ndarray, key_states: np.ndarray,
                  times: np.ndarray) -> np.ndarray:
    """Frames ``(len(times), H, W, 3)`` uint8 RGB of objects whose state is linear between key times.

    ``background`` is ``(H, W, 3)`` float; ``key_states`` is ``(num_objects, B, 7)``; frame ``i`` shows
    time ``times[i]`` seconds. Objects are drawn in order with anti-aliased edges.
    """
    h, w, _ = background.shape
    times = np.asarray(times, dtype=np.float64)
    frames = np.broadcast_to(background.astype(np.float32), (len(times), h, w, 3)).copy()
    ys = np.arange(h, dtype=np.float32)[:, None] + 0.5
    xs = np.arange(w, dtype=np.float32)[None, :] + 0.5
    for shape, keys in zip(shapes, key_states):
        state = np.stack([np.interp(times, key_times, keys[:, j]) for j in range(7)], 1).astype(np.float32)
        shown = np.nonzero(state[:, _A] > 0)[0]
        if not len(shown):
            continue
        s = state[shown]
        # only the bounding box of the object's whole track is computed
        reach = s[:, _R].max() + 2
        x0, x1 = max(0, int(s[:, _X].min() - reach)), min(w, int(math.ceil(s[:, _X].max() + reach)))
        y0, y1 = max(0, int(s[:, _Y].min() - reach)), min(h, int(math.ceil(s[:, _Y].max() + reach)))
        dx = xs[:, x0:x1][None] - s[:, _X, None, None]
        dy = ys[y0:y1][None] - s[:, _Y, None, None]
        cover = np.clip(0.5 - _signed_distance(shape, dx, dy, s[:, _R, None, None]), 0.0, 1.0)
        cover *= s[:, _A, None, None]
        region = frames[shown, y0:y1, x0:x1]
        region += (s[:, None, None, _RGB] - region) * cover[..., None]
        frames[shown, y0:y1, x0:x1] = region
    return np.clip(frames + 0.5, 0, 255).astype(np.uint8)


def render(video: SyntheticVideo, times: Optional[np.ndarray] = None) -> np.ndarray:
    """Frames of a corpus video: ``(num_frames, size, size, 3)`` uint8 RGB at ``video.fps``, or one frame
    per entry of ``times`` (seconds; the scene at any instant, no encoding: the procedural stream)."""
    if times is None:
        times = np.arange(video.num_frames) / video.fps
    return render_tracks(video.background, video.objects, video.key_times, video.key_states, times)


def render_clip(clip: DownstreamClip) -> np.ndarray:
    """Frames of a downstream clip: ``(num_frames, size, size, 3)`` uint8 RGB."""
    return render_tracks(clip.background, clip.objects, clip.key_times, clip.key_states,
                         np.arange(clip.num_frames) / clip.fps)


# ----------------------------------------------------------------------------------------------
# Encoding
# ----------------------------------------------------------------------------------------------
def encode(frames: np.ndarray, path: Path, fps: int, codec: str = "libx264") -> None:
    """Write ``frames`` ``(T, H, W, 3)`` uint8 RGB to ``path`` (mp4 for libx264, webm for libvpx-vp9).

    A keyframe every second (GOP = fps, no B-frames) keeps seeks cheap. One encoder thread and a
    bit-exact muxer: the output is byte-identical across runs and each worker process uses one core. The file appears
    under its final name only when complete.
    """
    import av

    if codec == "libx264":
        fmt, options = "mp4", {"g": str(fps), "bf": "0", "crf": "20", "preset": "veryfast"}
    elif codec == "libvpx-vp9":
        fmt, options = "webm", {"g": str(fps), "crf": "32", "b": "0", "deadline": "realtime", "cpu-used": "8"}
    else:
        raise ValueError(f"codec {codec!r}: expected libx264 or libvpx-vp9")
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    # bitexact: no random segment UIDs (webm) or version strings, so equal frames give equal bytes
    with av.open(str(tmp), "w", format=fmt, options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = options
        stream.codec_context.thread_count = 1
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    os.replace(tmp, path)

