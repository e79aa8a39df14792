"""Opening an input video and re-encoding spans of it: :class:`OpenVideo` decodes forward with a one-frame
lookahead, :func:`encode_span` re-encodes ``[start, end)`` as one short, low-resolution, short-GOP clip."""
from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator, Optional, Sequence

import av

from tvts.data.errors import SkipSample
from tvts.data.ingest.settings import CODECS, IngestSettings

_SEEK_AHEAD_S = 4.0  # the next span starts further ahead than this: seek instead of decoding through


@dataclass(frozen=True)
class StreamInfo:
    duration: float  # seconds, as the header declares (stream's, else the container's)
    rate: Fraction  # average frame rate
    width: int
    height: int


class OpenVideo:
    """One input video opened for forward decoding with a one-frame lookahead, shared by its spans.

    Times are seconds from the stream's first timestamp. The frame shown at time ``t`` is the one whose
    interval ``[pts, next pts)`` contains ``t`` (the rule of :mod:`tvts.data.decode`). Unusable input
    raises SkipSample with the reasons of :mod:`tvts.data.decode`: missing_video, empty_video,
    corrupt_video, unsupported_codec, past_end.
    """

    def __init__(self, path: str):
        self.name = path
        try:
            size = os.path.getsize(path)
        except OSError:
            raise SkipSample("missing_video", f"{path}: no such file") from None
        if size == 0:
            raise SkipSample("empty_video", f"{path}: zero bytes")
        try:
            self.container = av.open(path, mode="r")
        except av.error.FFmpegError as err:
            raise SkipSample("corrupt_video", f"{path}: cannot open ({err})") from None
        try:
            if not self.container.streams.video:
                raise SkipSample("unsupported_codec", f"{path}: no video stream")
            self.stream = self.container.streams.video[0]
            if self.stream.codec_context is None:
                raise SkipSample("unsupported_codec", f"{path}: no decoder for codec {self.stream.codec_tag!r}")
            self.stream.codec_context.thread_count = 1  # one core per worker process
            self.origin = self.stream.start_time or 0
            self.time_base = self.stream.time_base
            rate = self.stream.average_rate or self.stream.guessed_rate
            if self.stream.duration is not None:
                duration = float(self.stream.duration * self.time_base)
            elif self.container.duration is not None:
                duration = self.container.duration / av.time_base
            else:
                duration = 0.0
            width, height = self.stream.codec_context.width, self.stream.codec_context.height
            if not rate or not width or not height:
                raise SkipSample("corrupt_video", f"{path}: no frame rate or frame size in the header")
            self.info = StreamInfo(duration, Fraction(rate), width, height)
        except BaseException:
            self.container.close()
            raise
        self._frames: Optional[Iterator] = None
        self._cur: Optional[tuple] = None  # (frame, start seconds)
        self._next: Optional[tuple] = None  # None at the end of the stream

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> "OpenVideo":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _decode_next(self, after: float) -> Optional[tuple]:
        """The next decoded frame starting strictly after ``after`` seconds, or None at the end."""
        while True:
            try:
                frame = next(self._frames)
            except StopIteration:
                return None
            except av.error.FFmpegError as err:
                raise SkipSample("corrupt_video", f"{self.name}: decoding failed ({err})") from None
            if frame.pts is None:
                raise SkipSample("corrupt_video", f"{self.name}: decoded a frame without a timestamp")
            start = float((frame.pts - self.origin) * self.time_base)
            if start > after:
                return frame, start

    def _seek(self, t: float) -> None:
        """Backward seek to the keyframe at or before ``t``, retrying further back if the demuxer overshoots."""
        back = 0.0
        while True:
            target = max(0.0, t - back)
            try:
                self.container.seek(self.origin + math.floor(target / self.time_base), stream=self.stream,
                                    backward=True, any_frame=False)
            except av.error.FFmpegError as err:
                raise SkipSample("corrupt_video", f"{self.name}: seek to {target:.3f}s failed ({err})") from None
            self._frames = self.container.decode(self.stream)
            self._cur = self._decode_next(-math.inf)
            if self._cur is None:
                raise SkipSample("corrupt_video", f"{self.name}: no frame could be decoded after {target:.3f}s")
            if self._cur[1] <= t or target == 0.0:
                break
            back = max(1.0, 4 * back)
        self._next = self._decode_next(self._cur[1])

    def frames_at(self, times: Sequence[float]) -> Iterator[av.VideoFrame]:
        """The decoded frame shown at each of ``times`` (ascending seconds). Continues decoding from the
        previous call when the first time lies a little ahead; seeks otherwise."""
        if self._cur is None or times[0] < self._cur[1] or times[0] - self._cur[1] > _SEEK_AHEAD_S:
            self._seek(times[0])
        for t in times:
            while self._next is not None and self._next[1] <= t:
                self._cur = self._next
                self._next = self._decode_next(self._cur[1])
            if self._next is None and t >= self._last_end():
                raise self._ran_out(t)
            yield self._cur[0]

    def _last_end(self) -> float:
        frame, start = self._cur
        step = float(frame.duration * self.time_base) if frame.duration else float(1 / self.info.rate)
        return start + step

    def _ran_out(self, t: float) -> SkipSample:
        end = self._last_end()
        if end < self.info.duration - max(1.0, 0.05 * self.info.duration):  # frames stop far before the header's end
            return SkipSample("corrupt_video", f"{self.name}: frames stop at {end:.3f}s of a declared "
                                               f"{self.info.duration:.3f}s (truncated?)")
        return SkipSample("past_end", f"{self.name}: time {t:.3f}s is past the last frame, which ends at {end:.3f}s")


def output_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the short side scaled to ``short_side`` (never up), both even (yuv420p)."""
    short = min(width, height)
    scale = min(short_side, short) / short
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def output_rate(source: Fraction, settings: IngestSettings) -> Fraction:
    """The clip frame rate: ``settings.fps`` (or the source's, capped at ``max_fps``), never above the source's."""
    want = (Fraction(settings.fps).limit_denominator(1001) if settings.fps > 0
            else Fraction(settings.max_fps).limit_denominator(1001))
    return min(source, want)


def encode_span(video: OpenVideo, start: float, end: float, settings: IngestSettings,
                allow_short: bool = False) -> tuple[bytes, dict]:
    """Re-encode ``[start, end)`` seconds of ``video`` as one clip; returns (bytes, clip facts).

    Output frame ``i`` shows the source frame at ``start + i / rate``, for the ``ceil((end - start) * rate)``
    frames that start before ``end``, so the clip's time 0 is ``start``. The clip is ``settings.codec``,
    yuv420p, short side ``settings.short_side`` (never upscaled), a keyframe every ``gop_s`` seconds at
    most, no B-frames, no audio, one encoder thread and bit-exact muxing (equal inputs give equal bytes).
    ``allow_short``: the stream ending early ends the clip there instead of raising ``past_end``.
    """
    rate = output_rate(video.info.rate, settings)
    count = max(1, math.ceil((end - start) * rate - 1e-6))
    times = [start + i / float(rate) for i in range(count)]
    width, height = output_size(video.info.width, video.info.height, settings.short_side)
    codec, fmt = CODECS[settings.codec]
    gop = max(1, math.floor(rate * Fraction(settings.gop_s).limit_denominator(1000)))
    if settings.codec == "h264":
        options = {"g": str(gop), "bf": "0", "crf": str(settings.crf), "preset": "veryfast"}
    else:
        options = {"g": str(gop), "crf": str(settings.crf), "b": "0", "deadline": "good", "cpu-used": "5",
                   "row-mt": "0"}
    buf = io.BytesIO()
    frames = 0
    with av.open(buf, "w", format=fmt, options={"fflags": "+bitexact"}) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = options
        stream.codec_context.thread_count = 1
        try:
            for frame in video.frames_at(times):
                image = frame.reformat(width=width, height=height, format="yuv420p", interpolation="BILINEAR")
                image.pts, image.time_base = frames, 1 / rate
                image.pict_type = 0  # do not inherit the source's frame types: they would force keyframes
                out.mux(stream.encode(image))
                frames += 1
        except SkipSample as err:
            if not (allow_short and err.reason == "past_end" and frames):
                raise
        out.mux(stream.encode())
    facts = {"duration": round(frames / float(rate), 6), "fps": float(rate), "frames": frames, "width": width,
             "height": height}
    return buf.getvalue(), facts

