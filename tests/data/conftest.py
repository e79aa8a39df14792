"""Small stamped test clips written with PyAV (no system ffmpeg), shared by the tests/data suite.

Every frame carries its own index as 9 black/white 32x32 blocks (bit b of the index in block b, a
3x3 grid), which survives crf 23 compression, so a test can read back which frame a decoder returned.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

FPS = 30
WIDTH, HEIGHT = 192, 128  # non-square, so resizing has a short and a long side
BLOCK, PITCH, MARGIN = 32, 40, 8  # stamp geometry in pixels of the WIDTH x HEIGHT clip


@dataclass(frozen=True)
class Clip:
    path: str
    num_frames: int
    fps: int
    gop: int
    codec: str


def stamp_image(index: int) -> np.ndarray:
    """(HEIGHT, WIDTH, 3) uint8 RGB: grey with the 9 low bits of ``index`` as black/white blocks."""
    image = np.full((HEIGHT, WIDTH, 3), 128, np.uint8)
    image[:, 3 * PITCH + MARGIN:] = (index * 7) % 256  # frame-dependent texture beside the stamp
    for bit in range(9):
        row, col = divmod(bit, 3)
        y, x = MARGIN + row * PITCH, MARGIN + col * PITCH
        image[y:y + BLOCK, x:x + BLOCK] = 255 if (index >> bit) & 1 else 0
    return image


def read_stamp(frame) -> int:
    """The frame index stamped into ``frame``: (3, H, W) or (H, W, 3), uint8, any size (scaled stamps too)."""
    arr = np.asarray(frame)
    if arr.shape[0] == 3 and arr.shape[-1] != 3:
        arr = arr.transpose(1, 2, 0)
    height, width = arr.shape[:2]
    sy, sx = height / HEIGHT, width / WIDTH
    luma = arr.astype(np.float32).mean(axis=2)
    index = 0
    for bit in range(9):
        row, col = divmod(bit, 3)
        y, x = MARGIN + row * PITCH + 8, MARGIN + col * PITCH + 8  # the block's inner 16x16
        patch = luma[int(y * sy):int((y + 16) * sy), int(x * sx):int((x + 16) * sx)]
        index |= int(patch.mean() > 128) << bit
    return index


def write_clip(path: str, codec: str, num_frames: int, gop: int, fmt: str | None = None,
               container_options: dict | None = None, open_gop: bool = False) -> Clip:
    """Encode ``num_frames`` stamped frames. ``open_gop`` (H.264): B-frames right after a keyframe
    reference the previous GOP and are shown before the keyframe (leading pictures)."""
    import av

    container = av.open(path, "w", format=fmt, options=container_options or {})
    try:
        stream = container.add_stream(codec, rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        if codec == "libx264":
            stream.options = {"g": str(gop), "bf": "2", "crf": "23", "preset": "ultrafast"}
            if open_gop:
                stream.options = {**stream.options, "bf": "3", "x264-params": "open-gop=1:b-adapt=0:scenecut=0"}
        else:  # libvpx-vp9
            stream.options = {"g": str(gop), "crf": "30", "b": "0", "deadline": "realtime", "cpu-used": "8"}
        for i in range(num_frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(stamp_image(i), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    finally:
        container.close()
    return Clip(path, num_frames, FPS, gop, codec)


@pytest.fixture(scope="session")
def clips(tmp_path_factory) -> dict[str, Clip]:
    """30 fps, 192x128: h264_gop30 (90 frames, mp4), h264_gop250 (300 frames, mp4), h264_open_gop
    (90 frames, GOP 30, 3 B-frames, open GOPs), vp9 (90 frames, webm)."""
    root = tmp_path_factory.mktemp("clips")
    return {
        "h264_gop30": write_clip(str(root / "gop30.mp4"), "libx264", 90, 30),
        "h264_gop250": write_clip(str(root / "gop250.mp4"), "libx264", 300, 250),
        "h264_open_gop": write_clip(str(root / "open_gop.mp4"), "libx264", 90, 30, open_gop=True),
        "vp9": write_clip(str(root / "vp9.webm"), "libvpx-vp9", 90, 30),
    }


@pytest.fixture(scope="session")
def faststart_clip(tmp_path_factory) -> Clip:
    """An H.264 mp4 with its index (moov) before the frames, so a truncated copy still opens."""
    root = tmp_path_factory.mktemp("faststart")
    return write_clip(str(root / "faststart.mp4"), "libx264", 90, 30, container_options={"movflags": "faststart"})


@pytest.fixture(scope="session")
def audio_only_file(tmp_path_factory) -> str:
    """A one-second WAV file: a valid container with no video stream."""
    import av

    path = str(tmp_path_factory.mktemp("audio") / "tone.wav")
    container = av.open(path, "w")
    try:
        stream = container.add_stream("pcm_s16le", rate=8000)
        stream.layout = "mono"
        samples = (np.sin(np.arange(8000) * 0.1) * 3000).astype(np.int16)[None]
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    finally:
        container.close()
    return path


@pytest.fixture(scope="session", name="read_stamp")
def read_stamp_fixture():
    """The :func:`read_stamp` helper, as a fixture (conftest modules are not imported by tests)."""
    return read_stamp


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """3 synthetic narrated videos, 64 px, 8 fps, 19 s: ``<dir>/syn00000{0,1,2}.{mp4,vtt}`` (the ingest tests)."""
    from tvts.data import synthetic

    return synthetic.make_corpus(tmp_path_factory.mktemp("corpus"), 3, seed=0, size=64, fps=8)
