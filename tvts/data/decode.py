"""Exact frame decoding with PyAV (CPU).

:func:`decode_frames` seeks ONCE, backward to the keyframe before the first requested time, then
reads forward and keeps, for each requested time ``t``, the frame whose presentation interval
``[pts, next pts)`` contains ``t`` (the rule of :mod:`tvts.data.sampling`). Packets are demuxed
first, so every frame's timestamp is known before anything is decoded; a GOP that holds no requested
frame is skipped, and a GOP that does is decoded only up to its last requested frame. Only kept
frames are converted to RGB, optionally downscaled by swscale in the same pass (one single-threaded
swscale context per call, reused across its frames), and stacked straight into one uint8 tensor: no
PIL, no float64.

The official readers seek once per frame (OpenCV ``CAP_PROP_POS_FRAMES``), convert through PIL and
build float64 arrays (method §5 item 12); :func:`decode_frames_reference` re-creates that path as a
benchmark baseline and returns the same frames.

Times are seconds from the video stream's first presentation timestamp. Every container is closed
on every path (leaked containers are a known PyAV/decord memory complaint). Unusable input raises
:class:`~tvts.data.errors.SkipSample` with one of these reasons:

* ``missing_video``: the path does not exist;
* ``empty_video``: zero bytes;
* ``corrupt_video``: not a readable container, a decoding error, or the stream ends before its
  declared duration (a truncated file);
* ``unsupported_codec``: no video stream, or no decoder for its codec;
* ``past_end``: a requested time is at or after the end of the last frame.
"""
from __future__ import annotations

import contextlib
import io
import math
import os
from fractions import Fraction
from typing import Iterator, NamedTuple, Optional, Sequence, Union

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

from tvts.data.augment import resized_size
from tvts.data.errors import SkipSample
from tvts.data.sampling import frame_indices

VideoSource = Union[str, os.PathLike, bytes, bytearray, memoryview]


class VideoInfo(NamedTuple):
    duration_s: float  # declared duration of the video stream (container's when the stream has none)
    fps: float  # average frame rate
    num_frames: int
    width: int
    height: int


def _name(source: VideoSource) -> str:
    return os.fspath(source) if isinstance(source, (str, os.PathLike)) else f"<{len(source)} bytes>"


@contextlib.contextmanager
def _open_video(source: VideoSource) -> Iterator[tuple[av.container.InputContainer, av.video.stream.VideoStream]]:
    """Open ``source`` and yield (container, first video stream); always closes the container."""
    name = _name(source)
    if isinstance(source, (str, os.PathLike)):
        try:
            size = os.path.getsize(source)
        except FileNotFoundError:
            raise SkipSample("missing_video", f"{name}: no such file") from None
        target = os.fspath(source)
    else:
        size = len(source)
        target = io.BytesIO(source)
    if size == 0:
        raise SkipSample("empty_video", f"{name}: zero bytes")
    try:
        container = av.open(target, mode="r")
    except av.error.FFmpegError as err:
        raise SkipSample("corrupt_video", f"{name}: cannot open ({err})") from None
    try:
        if not container.streams.video:
            raise SkipSample("unsupported_codec", f"{name}: no video stream")
        stream = container.streams.video[0]
        if stream.codec_context is None:
            raise SkipSample("unsupported_codec", f"{name}: no decoder for the video codec")
        yield container, stream
    except av.error.DecoderNotFoundError as err:
        raise SkipSample("unsupported_codec", f"{name}: {err}") from None
    except av.error.FFmpegError as err:
        raise SkipSample("corrupt_video", f"{name}: {err}") from None
    finally:
        container.close()


def _declared_duration(container, stream) -> Optional[float]:
    if stream.duration is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _frame_rate(stream) -> Optional[Fraction]:
    rate = stream.average_rate or stream.guessed_rate
    return Fraction(rate) if rate else None


def probe(source: VideoSource) -> VideoInfo:
    """Metadata of the first video stream, without decoding.

    ``num_frames`` comes from the container's index when it has one (mp4), else from counting the
    stream's packets (mkv/webm), which demuxes but does not decode.
    """
    with _open_video(source) as (container, stream):
        num_frames = stream.frames
        if not num_frames:
            num_frames = sum(1 for p in container.demux(stream) if p.size and p.pts is not None)
        rate = _frame_rate(stream)
        duration = _declared_duration(container, stream)
        if duration is None and rate:
            duration = num_frames / float(rate)
        return VideoInfo(duration or 0.0, float(rate) if rate else 0.0, int(num_frames),
                         stream.codec_context.width, stream.codec_context.height)


class FrameTimeline(NamedTuple):
    starts: np.ndarray  # (num_frames,) float64 seconds, ascending: each frame's presentation start
    end_s: float  # end of the last frame's presentation interval; times at or after it are past the end


def frame_timeline(source: VideoSource) -> FrameTimeline:
    """Exact presentation start of every frame and the end of the last one, in seconds.

    Demuxes the whole stream without decoding. With :func:`tvts.data.sampling.frame_indices` it maps
    times to frame indices by the same rule :func:`decode_frames` applies (the DALI path uses it).
    """
    with _open_video(source) as (container, stream):
        origin, tb = stream.start_time or 0, stream.time_base
        packets = [(p.pts, p.duration or 0) for p in container.demux(stream) if p.size and p.pts is not None]
        if not packets:
            raise SkipSample("corrupt_video", f"{_name(source)}: the video stream has no frames")
        packets.sort()
        starts = _seconds([pts for pts, _ in packets], origin, tb)
        return FrameTimeline(starts, _frame_end(stream, *packets[-1]))


def _frame_end(stream, pts: int, duration: int) -> float:
    """End (seconds from the stream start) of the frame at ``pts``: its own duration, else 1 / fps."""
    origin, tb = stream.start_time or 0, stream.time_base
    if duration:
        return float((pts + duration - origin) * tb)
    rate = _frame_rate(stream)
    return float((pts - origin) * tb) + (float(1 / rate) if rate else 0.0)


def _seconds(ticks, origin: int, tb: Fraction) -> np.ndarray:
    """(N,) float64 seconds of the stream timestamps ``ticks`` from ``origin``: ``float((t - origin) * tb)``,
    the correctly rounded value, computed without a Fraction per timestamp (one int64 product and one
    float64 division are exact and correctly rounded while the product stays below 2**53)."""
    t = np.asarray(ticks, dtype=np.int64) - origin
    num, den = tb.numerator, tb.denominator
    if t.size and (int(np.abs(t).max()) * num >= 2**53 or den >= 2**53):
        return np.array([float(int(x) * tb) for x in t], dtype=np.float64)
    return (t * num).astype(np.float64) / den


def frame_starts(source: VideoSource) -> np.ndarray:
    """(num_frames,) float64 presentation start times in seconds: ``frame_timeline(source).starts``."""
    return frame_timeline(source).starts


def _seek(container, stream, seconds: float) -> None:
    """Seek backward to the keyframe at or before ``seconds`` (from the stream start)."""
    origin = stream.start_time or 0
    container.seek(origin + math.floor(seconds / stream.time_base), stream=stream, backward=True, any_frame=False)


def _to_rgb(frame: av.VideoFrame, short_side: Optional[int], reformatter: VideoReformatter) -> np.ndarray:
    """(H, W, 3) uint8 RGB; swscale downscales in the same pass when the short side exceeds ``short_side``.

    ``reformatter`` keeps its swscale context while the frames' geometry and format stay the same:
    ``frame.reformat`` / ``frame.to_ndarray(format=...)`` build a new one for every frame. One thread:
    PyAV's default (0) starts a pool of one swscale thread per CPU in every context, which costs more
    CPU than a 256 px conversion does, and loader workers are processes that already fill the cores.
    Same bilinear swscale conversion, byte for byte (tests/data/test_decode.py)."""
    if short_side and min(frame.width, frame.height) > short_side:
        height, width = resized_size(frame.height, frame.width, short_side)
        rgb = reformatter.reformat(frame, width=width, height=height, format="rgb24", interpolation="BILINEAR",
                                   threads=1)
    else:
        rgb = reformatter.reformat(frame, format="rgb24", interpolation="BILINEAR", threads=1)
    return rgb.to_ndarray()


def check_times(times: Sequence[float]) -> np.ndarray:
    """``times`` as a (T,) float64 array; ValueError unless non-empty, finite and non-negative."""
    t = np.asarray(times, dtype=np.float64)
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"times must be a non-empty 1-D sequence of seconds, got shape {t.shape}")
    if not np.all(np.isfinite(t)) or t.min() < 0:
        raise ValueError(f"times must be finite and non-negative seconds, got {t.tolist()}")
    return t


def decode_frames(source: VideoSource, times: Sequence[float], short_side: Optional[int] = None) -> torch.Tensor:
    """The frames shown at ``times`` (seconds, any order, repeats allowed) of a video file or its bytes.

    One backward seek to the keyframe before the first time, then forward demuxing of the span; only
    the GOPs that hold a requested frame are decoded, each up to its last requested frame (see
    :func:`_decode_wanted`). With ``short_side``, frames whose short side is larger are downscaled to
    it at conversion time (bilinear, long side truncated as in :func:`tvts.data.augment.resized_size`);
    smaller frames are returned as decoded.

    Returns (T, 3, H, W) uint8 RGB, a permuted view of a contiguous (T, H, W, 3) buffer (torch's
    channels-last layout). Raises SkipSample (see the module docstring).
    """
    t = check_times(times)
    order = np.argsort(t, kind="stable")
    targets = t[order]
    name = _name(source)
    with _open_video(source) as (container, stream):
        gops, end = _demux_span(container, stream, targets[0], targets[-1], name)
        origin, tb = stream.start_time or 0, stream.time_base
        pts = np.array(sorted(_pts(p) for gop in gops for p in gop), dtype=np.int64)
        if end is not None and targets[-1] >= end:
            declared = _declared_duration(container, stream)
            rate = _frame_rate(stream)
            if declared is not None and rate and end < declared - float(1 / rate) - 1e-6:
                raise SkipSample("corrupt_video", f"{name}: frames stop at {end:.3f}s of a declared {declared:.3f}s (truncated?)")
            raise SkipSample("past_end", f"{name}: time {targets[-1]:.3f}s is past the last frame, which ends at {end:.3f}s")
        starts = _seconds(pts, origin, tb)
        wanted = pts[frame_indices(targets, starts)].tolist()
        rgb = _decode_wanted(stream.codec_context, gops, set(wanted), short_side, name)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    video = np.stack([rgb[wanted[j]] for j in inverse])
    return torch.from_numpy(video).permute(0, 3, 1, 2)


# H.264 reorders at most 16 frames: once this many packets follow the first keyframe past the last
# requested time, no packet with an earlier timestamp can still come.
_REORDER_WINDOW = 16


def _pts(packet) -> int:
    return packet.pts if packet.pts is not None else packet.dts


def _demux_span(container, stream, first: float, last: float, name: str) -> tuple[list[list], Optional[float]]:
    """Packets from the keyframe at or before ``first`` until the frames up to ``last`` are all known,
    grouped into GOPs (each starts at a keyframe, decode order). Also returns the end of the last
    frame (seconds) when the stream ended inside the span, else None."""
    origin, tb = stream.start_time or 0, stream.time_base
    num, den = tb.numerator, tb.denominator  # int arithmetic: float((pts - origin) * tb), without a Fraction
    back = 0.0  # extra seconds to seek back when the demuxer lands after ``first``
    while True:
        seek_s = max(0.0, first - back)
        _seek(container, stream, seek_s)
        gops: list[list] = []
        past_last = None  # packets seen since the first keyframe after ``last``
        overshot = False
        for packet in container.demux(stream):
            if not packet.size:
                continue  # the empty packet that marks the end of the stream
            if _pts(packet) is None:
                raise SkipSample("corrupt_video", f"{name}: a packet has no timestamp")
            start = (_pts(packet) - origin) * num / den
            if not gops and seek_s > 0 and (start > first or not packet.is_keyframe):
                overshot = True
                break
            if packet.is_keyframe or not gops:
                if past_last is None and gops and start > last:
                    past_last = 0
                gops.append([])
            gops[-1].append(packet)
            if past_last is not None:
                past_last += 1
                if past_last > _REORDER_WINDOW:
                    return gops, None
        if overshot:
            back = max(1.0, 4 * back)
            continue
        if not gops:
            raise SkipSample("corrupt_video", f"{name}: no video packet at or after {seek_s:.3f}s")
        final = max((p for gop in gops for p in gop), key=_pts)
        return gops, _frame_end(stream, _pts(final), final.duration or 0)


def _decode_wanted(codec, gops: list[list], wanted: set, short_side: Optional[int], name: str) -> dict:
    """Decode the frames whose timestamps are in ``wanted``: {pts: (H, W, 3) uint8}.

    A GOP holding no wanted frame is never decoded; a GOP is decoded from its keyframe up to its last
    wanted frame (plus the decoder's reorder delay), then the decoder is reset, also when the next GOP
    is decoded too: it starts afresh at its keyframe, as after the official per-frame seeks. Only a
    next GOP with leading pictures (open GOP: shown before its keyframe, referencing this GOP's tail)
    makes this one decode to its end and carry on without a reset. This is what the official per-frame
    seeks achieve, without their repeated seeks and re-decoded GOP heads: 16 frames of a 15-23 s span
    at 30 fps with 1 s GOPs (the v1 shards) decode 38 % of the span's frames (61 % when adjacent GOPs
    were decoded to their end).
    """
    owner = {_pts(p): g for g, gop in enumerate(gops) for p in gop}
    needed = [False] * (len(gops) + 1)
    for pts in wanted:
        g = owner[pts]
        needed[g] = True
        if g > 0 and pts < _pts(gops[g][0]):  # an open-GOP leading picture references the previous GOP
            needed[g - 1] = True
    leading = [any(_pts(p) < _pts(gop[0]) for p in gop) for gop in gops] + [False]
    got: dict = {}
    reformatter = VideoReformatter()  # one swscale context for the clip's frames (one geometry)

    def take(frames) -> None:
        for frame in frames:
            if frame.pts in wanted and frame.pts not in got:
                got[frame.pts] = _to_rgb(frame, short_side, reformatter)

    for g, gop in enumerate(gops):
        if not needed[g]:
            continue
        carry = needed[g + 1] and leading[g + 1]  # the next GOP's leading pictures need this one's tail
        for packet in gop:
            take(codec.decode(packet))
            if not carry and all(pts in got for pts in wanted if owner[pts] <= g):
                break  # the rest of this GOP is not needed
        else:
            if not carry:
                take(codec.decode(None))  # drain the frames still held for reordering
        if len(got) == len(wanted):
            break
        if not carry:
            codec.flush_buffers()  # the next decoded GOP starts afresh at its keyframe
    missing = sorted(wanted - got.keys())
    if missing:
        raise SkipSample("corrupt_video", f"{name}: {len(missing)} requested frame(s) could not be decoded")
    return got


def decode_frames_reference(source: VideoSource, times: Sequence[float]) -> np.ndarray:
    """The official per-frame path, re-created as a benchmark baseline: same frames, official cost.

    Like the official OpenCV reader: open the video once, then for EACH frame seek to it
    (``cap.set(CAP_PROP_POS_FRAMES, i)``: back to the previous keyframe, decode forward to frame i),
    convert it to a PIL image, and finally build a float64 array as ``ClipToTensor`` does. OpenCV keeps
    one swscale context per capture, so the conversion here reuses one too (single-threaded, as ours).
    Returns (T, 3, H, W) float64 in [0, 1]; ``round(x * 255)`` equals :func:`decode_frames`' uint8.
    """
    from PIL import Image  # the official path goes through PIL; imported only here

    t = check_times(times)
    starts, end = frame_timeline(source)
    indices = frame_indices(t, starts)
    images = []
    with _open_video(source) as (container, stream):
        origin, tb = stream.start_time or 0, stream.time_base
        num, den = tb.numerator, tb.denominator
        reformatter = VideoReformatter()
        for k, idx in enumerate(indices):
            if t[k] >= end:
                raise SkipSample("past_end", f"{_name(source)}: time {t[k]:.3f}s is past the last frame")
            _seek(container, stream, starts[idx])
            image = None
            for frame in container.decode(stream):
                if (frame.pts - origin) * num / den >= starts[idx]:
                    # contiguous, as OpenCV's frames are: PIL copies a row-padded array ~6x slower
                    rgb = reformatter.reformat(frame, format="rgb24", threads=1).to_ndarray()
                    image = Image.fromarray(np.ascontiguousarray(rgb))
                    break
            if image is None:
                raise SkipSample("corrupt_video", f"{_name(source)}: frame {idx} could not be decoded")
            images.append(image)
    # ClipToTensor: a float64 (C, T, H, W) array filled frame by frame, then divided by 255
    width, height = images[0].size
    clip = np.zeros((3, len(images), height, width), dtype=np.float64)
    for k, image in enumerate(images):
        clip[:, k] = np.array(image).transpose(2, 0, 1)
    return (clip / 255.0).transpose(1, 0, 2, 3)
