"""PyAV decoding: exact frames for given times, bytes == path, the official-path baseline agrees,
and every kind of bad input is a SkipSample with its reason (never a black frame)."""
import os

import av
import numpy as np
import pytest
import torch

from tvts.data.augment import resized_size
from tvts.data.decode import decode_frames, decode_frames_reference, frame_starts, frame_timeline, probe
from tvts.data.errors import SkipSample
from tvts.data.sampling import frame_indices, frame_times

ALL = ["h264_gop30", "h264_gop250", "h264_open_gop", "vp9"]


def stamps(video, read_stamp):
    return [read_stamp(frame) for frame in video.numpy()]


def expected_frames(clip, times):
    """The exact rule, from the file's own timestamps (vp9 in webm has 1 ms timestamps, not k/30)."""
    return frame_indices(times, frame_starts(clip.path)).tolist()


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("train", [False, True])
def test_sampled_times_give_exact_frames(clips, read_stamp, name, train):
    clip = clips[name]
    duration = clip.num_frames / clip.fps
    times = frame_times(0.3, duration - 0.2, 12, train, np.random.default_rng(5))
    video = decode_frames(clip.path, times)
    assert video.dtype == torch.uint8 and video.shape == (12, 3, 128, 192)
    assert stamps(video, read_stamp) == expected_frames(clip, times)


def test_h264_frame_boundaries(clips, read_stamp):
    """t = k/30 is the first instant of frame k; the float just below it still shows frame k - 1."""
    clip = clips["h264_gop250"]
    ks = np.array([1, 29, 30, 31, 149, 249, 250, 251, 299])  # across both GOPs and at the last frame
    at = ks / 30
    assert stamps(decode_frames(clip.path, at), read_stamp) == ks.tolist()
    assert stamps(decode_frames(clip.path, np.nextafter(at, -np.inf)), read_stamp) == (ks - 1).tolist()


@pytest.mark.parametrize("name, times, frames", [
    ("h264_gop30", [0.1, 2.9], [3, 87]),  # the GOP in between is never decoded
    ("h264_gop250", [0.5, 9.5, 9.9], [15, 285, 297]),  # GOP 0 decoded up to frame 15 only
    # adjacent GOPs, each decoded to its wanted frame only, then reset before the next keyframe
    ("h264_gop30", [0.1, 1.1, 2.1], [3, 33, 63]),
    ("h264_gop250", [0.1, 8.4, 8.5], [3, 252, 255]),  # with B-frames: wanted frames leave the decoder late
    # 29 and 59 are leading pictures shown before keyframes 30 and 60 but stored after them
    ("h264_open_gop", [0.01, 29 / 30 + 1e-3, 59 / 30 + 1e-3], [0, 29, 59]),
    ("h264_open_gop", [59 / 30 + 1e-3, 2.5], [59, 75]),
])
def test_sparse_times(clips, read_stamp, name, times, frames):
    assert stamps(decode_frames(clips[name].path, times), read_stamp) == frames


def test_vp9_frame_boundaries(clips, read_stamp):
    clip = clips["vp9"]
    starts = frame_starts(clip.path)
    ks = np.array([1, 2, 29, 30, 31, 60, 89])
    assert stamps(decode_frames(clip.path, starts[ks]), read_stamp) == ks.tolist()
    assert stamps(decode_frames(clip.path, np.nextafter(starts[ks], -np.inf)), read_stamp) == (ks - 1).tolist()


def test_any_order_and_repeats(clips, read_stamp):
    clip = clips["h264_gop30"]
    times = [2.5, 0.01, 1.0, 1.0, 0.5]
    assert stamps(decode_frames(clip.path, times), read_stamp) == [75, 0, 30, 30, 15]


@pytest.mark.parametrize("name", ["h264_gop30", "vp9"])
def test_bytes_equal_path(clips, name):
    clip = clips[name]
    times = frame_times(0.0, 2.9, 8, False)
    with open(clip.path, "rb") as f:
        data = f.read()
    assert torch.equal(decode_frames(data, times), decode_frames(clip.path, times))
    assert torch.equal(decode_frames(memoryview(data), times), decode_frames(clip.path, times))
    assert probe(data) == probe(clip.path)


@pytest.mark.parametrize("name", ["h264_gop250", "vp9"])
def test_reference_decoder_returns_the_same_frames(clips, name):
    clip = clips[name]
    times = frame_times(0.1, clip.num_frames / clip.fps - 0.1, 8, True, np.random.default_rng(1))
    ref = decode_frames_reference(clip.path, times)
    assert ref.dtype == np.float64 and ref.shape == (8, 3, 128, 192)
    assert np.array_equal(np.round(ref * 255).astype(np.uint8), decode_frames(clip.path, times).numpy())


def per_frame_conversion(path: str, short_side) -> np.ndarray:
    """Every frame the pre-reformatter way: a swscale context per frame (``frame.reformat`` when the short
    side exceeds ``short_side``, else ``frame.to_ndarray(format="rgb24")``): (N, H, W, 3) uint8."""
    frames = []
    with av.open(path) as container:
        for frame in container.decode(video=0):
            if short_side and min(frame.width, frame.height) > short_side:
                height, width = resized_size(frame.height, frame.width, short_side)
                frames.append(frame.reformat(width=width, height=height, format="rgb24", interpolation="BILINEAR").to_ndarray())
            else:
                frames.append(frame.to_ndarray(format="rgb24"))
    return np.stack(frames)


@pytest.mark.parametrize("name", ["h264_gop30", "vp9"])
@pytest.mark.parametrize("short_side", [None, 128, 268, 64, 50])  # 64 and 50 downscale (50: 75 px wide, odd)
def test_reused_reformatter_is_bitwise_the_per_frame_conversion(clips, name, short_side):
    """decode_frames converts with one single-threaded VideoReformatter per call; every frame equals the
    per-frame conversion, whether swscale downscales or only converts to RGB."""
    clip = clips[name]
    expected = per_frame_conversion(clip.path, short_side)
    video = decode_frames(clip.path, frame_starts(clip.path), short_side=short_side)
    assert video.shape[0] == clip.num_frames and expected.shape[0] == clip.num_frames
    assert np.array_equal(video.permute(0, 2, 3, 1).numpy(), expected)
    sparse = frame_times(0.1, 2.9, 7, True, np.random.default_rng(3))  # the GOP-skipping path too
    video = decode_frames(clip.path, sparse, short_side=short_side)
    assert np.array_equal(video.permute(0, 2, 3, 1).numpy(), expected[frame_indices(sparse, frame_starts(clip.path))])


def test_short_side_resize_at_decode(clips, read_stamp):
    clip = clips["h264_gop30"]
    video = decode_frames(clip.path, [0.5, 1.5], short_side=64)
    assert video.shape == (2, 3, 64, 96)
    assert stamps(video, read_stamp) == [15, 45]
    # frames already at or below the short side are returned as decoded (augment upsamples)
    assert decode_frames(clip.path, [0.5], short_side=128).shape == (1, 3, 128, 192)
    assert decode_frames(clip.path, [0.5], short_side=268).shape == (1, 3, 128, 192)


def test_probe(clips):
    for name, clip in clips.items():
        info = probe(clip.path)
        assert info.fps == 30.0 and info.num_frames == clip.num_frames, name
        assert (info.width, info.height) == (192, 128)
        assert info.duration_s == pytest.approx(clip.num_frames / 30, abs=0.04)
        starts = frame_starts(clip.path)
        assert len(starts) == clip.num_frames and starts[0] == 0.0 and np.all(np.diff(starts) > 0)


# -- bad input ---------------------------------------------------------------------------------
def _reason(source, times=(0.5,)):
    with pytest.raises(SkipSample) as info:
        decode_frames(source, times)
    return info.value.reason


def test_empty_video(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    assert _reason(str(empty)) == "empty_video"
    assert _reason(b"") == "empty_video"


def test_missing_file(tmp_path):
    assert _reason(str(tmp_path / "nope.mp4")) == "missing_video"


def test_truncated_and_garbage(clips, faststart_clip, tmp_path):
    data = open(clips["h264_gop30"].path, "rb").read()
    truncated = tmp_path / "truncated.mp4"  # index (moov) at the end: cut off
    truncated.write_bytes(data[: len(data) // 2])
    assert _reason(str(truncated)) == "corrupt_video"
    garbage = np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    assert _reason(garbage) == "corrupt_video"
    # index first: the file opens, the early frames decode, the late ones are missing
    fast = open(faststart_clip.path, "rb").read()[: os.path.getsize(faststart_clip.path) // 2]
    assert decode_frames(fast, [0.2]).shape == (1, 3, 128, 192)
    assert _reason(fast, [2.5]) == "corrupt_video"
    vp9 = open(clips["vp9"].path, "rb").read()
    assert _reason(vp9[: len(vp9) // 2], [2.8]) == "corrupt_video"


def test_audio_only(audio_only_file):
    assert _reason(audio_only_file) == "unsupported_codec"
    with pytest.raises(SkipSample, match="no video stream"):
        probe(audio_only_file)


def test_past_end(clips, read_stamp):
    clip = clips["h264_gop30"]  # 90 frames: the last one covers [89/30, 3.0)
    assert stamps(decode_frames(clip.path, [2.0, 3.0 - 1e-6]), read_stamp) == [60, 89]
    assert _reason(clip.path, [1.0, 3.0]) == "past_end"
    assert _reason(clip.path, [7.0]) == "past_end"
    with pytest.raises(SkipSample, match="past_end"):
        decode_frames_reference(clip.path, [3.0])


@pytest.mark.parametrize("name", ["h264_gop30", "vp9"])
def test_timeline_end_is_where_past_end_starts(clips, read_stamp, name):
    clip = clips[name]
    starts, end = frame_timeline(clip.path)
    assert end == pytest.approx(3.0, abs=1e-3)
    assert stamps(decode_frames(clip.path, [np.nextafter(end, 0.0)]), read_stamp) == [clip.num_frames - 1]
    assert _reason(clip.path, [end]) == "past_end"


def test_bad_times(clips):
    for times in ([], [-0.1], [float("nan")]):
        with pytest.raises(ValueError):
            decode_frames(clips["h264_gop30"].path, times)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to count open files")
def test_containers_are_closed(clips, audio_only_file, tmp_path):
    clip = clips["h264_gop30"]
    truncated = tmp_path / "t.mp4"
    truncated.write_bytes(open(clip.path, "rb").read()[:3000])

    def run_all():
        decode_frames(clip.path, [0.5, 1.5])
        probe(clip.path)
        for source, times in ((clip.path, [9.0]), (str(truncated), [0.5]), (audio_only_file, [0.5])):
            with pytest.raises(SkipSample):
                decode_frames(source, times)

    run_all()
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        run_all()
    assert len(os.listdir("/proc/self/fd")) == before
