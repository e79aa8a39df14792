"""DALI path: decoder choice (always runs) and, when DALI is installed, its CPU graph on a VP9 clip
(DALI's CPU decoder cannot decode H.264) against the PyAV frames and augment_video; decoding ahead in a
background thread (DecodeAhead) keeps frames and order, surfaces errors as one line and shuts down cleanly."""
import sys
import threading
import time

import numpy as np
import pytest
import torch

from tvts.config import DataConfig, load
from tvts.data import dali as dali_mod
from tvts.data.augment import augment_video
from tvts.data.decode import decode_frames, frame_starts, frame_timeline
from tvts.data.errors import SkipSample
from tvts.data.sampling import frame_indices, frame_times
from tvts.errors import UserError

needs_dali = pytest.mark.skipif(not dali_mod.dali_available(), reason="NVIDIA DALI is not installed")


# -- decoder choice ----------------------------------------------------------------------------
def test_decoder_for(monkeypatch):
    assert dali_mod.decoder_for(load(None, ["data.decoder=pyav"])) == "pyav"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert dali_mod.decoder_for(DataConfig(decoder="auto")) == "pyav"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(dali_mod, "dali_available", lambda: True)
    assert dali_mod.decoder_for(load()) == "dali"
    monkeypatch.setattr(dali_mod, "dali_available", lambda: False)
    assert dali_mod.decoder_for(load()) == "pyav"


def test_missing_dali_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)  # makes `import nvidia.dali` fail
    with pytest.raises(ImportError) as info:
        dali_mod.decoder_for(DataConfig(decoder="dali"))
    assert str(info.value) == "data.decoder=dali needs NVIDIA DALI: pip install tvts-engine[gpu]"


# -- DALI on CPU (VP9) -------------------------------------------------------------------------
@pytest.mark.dali
@needs_dali
@pytest.mark.parametrize("train", [False, True])
def test_dali_cpu_decodes_the_same_frames(clips, read_stamp, train):
    from nvidia.dali import fn, pipeline_def, types

    clip = clips["vp9"]
    times = frame_times(0.1, 2.9, 8, train, np.random.default_rng(2))
    frames = frame_indices(times, frame_starts(clip.path)).astype(np.int32)
    data = np.fromfile(clip.path, dtype=np.uint8)

    @pipeline_def(batch_size=1, num_threads=1, device_id=None, prefetch_queue_depth=1)
    def pipeline():
        encoded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
        indices = fn.external_source(name="frames", dtype=types.INT32, ndim=1)
        return dali_mod.dali_decode(encoded, indices, device="cpu")

    pipe = pipeline()
    pipe.build()
    pipe.feed_input("encoded", [data])
    pipe.feed_input("frames", [frames])
    (video,) = pipe.run()
    dali_frames = np.asarray(video[0])  # (T, H, W, 3)
    pyav_frames = decode_frames(clip.path, times).numpy()
    assert [read_stamp(f) for f in dali_frames] == [read_stamp(f) for f in pyav_frames] == frames.tolist()


@pytest.mark.dali
@needs_dali
@pytest.mark.parametrize("train", [False, True])
def test_dali_reader_matches_augment(clips, train):
    clip = clips["vp9"]
    reader = dali_mod.DaliVideoReader(batch_size=2, image_size=96, resize_short=112, train=train, device="cpu", seed=4)
    times = frame_times(0.1, 2.9, 6, train, np.random.default_rng(0))
    out = reader([reader.prepare(clip.path, times)])
    assert out.shape == (1, 6, 3, 96, 96) and out.dtype == torch.float32
    # same frames, same crop (same seed), same normalisation; resize kernels differ by <= 2 grey levels
    ref = augment_video(decode_frames(clip.path, times), 96, 112, train=train, generator=torch.Generator().manual_seed(4))
    assert (out[0] - ref).abs().max() < 2.5 / (255 * 0.224)
    end = frame_timeline(clip.path).end_s  # the same end as decode_frames uses
    reader.prepare(clip.path, [1.0, np.nextafter(end, 0.0)])
    with pytest.raises(SkipSample, match="past_end"):
        reader.prepare(clip.path, [1.0, end])



@pytest.mark.dali
@pytest.mark.gpu
@needs_dali
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (NVDEC)")
def test_dali_gpu_h264_matches_pyav(clips):
    clip = clips["h264_gop250"]
    cfg = load(None, ["sample.image_size=96", "data.resize_short=112", "model.video.patch_size=16"])
    reader = dali_mod.DaliVideoReader.from_config(cfg, batch_size=2, train=False, device="gpu")
    times = frame_times(0.2, 9.8, 8, False)
    out = reader([reader.prepare(clip.path, times), reader.prepare(clip.path, times)])
    assert out.device.type == "cuda" and out.shape == (2, 8, 3, 96, 96)
    ref = augment_video(decode_frames(clip.path, times), 96, 112).to(out.device)
    assert (out - ref).abs().max() < 2.5 / (255 * 0.224)


# -- decoding ahead (DecodeAhead) -----------------------------------------------------------------
@pytest.mark.dali
@needs_dali
@pytest.mark.parametrize("train", [False, True])
def test_decoding_ahead_yields_the_synchronous_frames_in_order(clips, train):
    """The overlapped reader (calls run in a background thread, up to ``depth`` batches ahead) gives the
    synchronous reader's frames, bit for bit, in the same order; the crop draws stay in order too."""
    clip = clips["vp9"]
    rng = np.random.default_rng(5)
    times = [frame_times(0.1, 2.9, 6, train, rng) for _ in range(7)]
    outputs = {}
    for mode in ("sync", "ahead"):
        reader = dali_mod.DaliVideoReader(batch_size=2, image_size=64, resize_short=80, train=train, device="cpu",
                                          seed=4)
        batches = [[reader.prepare(clip.path, t) for t in times[i:i + 2]] for i in range(0, len(times), 2)]
        if mode == "sync":
            outputs[mode] = [reader(b) for b in batches]
        else:
            ahead = dali_mod.DecodeAhead(batches, reader, depth=2)
            outputs[mode] = list(ahead)
            assert not ahead.alive
    assert [tuple(o.shape) for o in outputs["ahead"]] == [(2, 6, 3, 64, 64)] * 3 + [(1, 6, 3, 64, 64)]
    assert all(torch.equal(a, b) for a, b in zip(outputs["ahead"], outputs["sync"], strict=True))
    # the frames themselves: each batch's clips are the PyAV frames at their times (resize kernels differ slightly)
    ref = augment_video(decode_frames(clip.path, times[6]), 64, 80, train=False)
    if not train:
        assert (outputs["ahead"][3][0] - ref).abs().max() < 2.5 / (255 * 0.224)


def test_decoding_ahead_keeps_order_and_runs_at_most_depth_ahead():
    made = []

    def items():
        for i in range(20):
            made.append(i)
            yield i

    ahead = dali_mod.DecodeAhead(items(), lambda i: i * 10, depth=2)
    assert next(ahead) == 0
    time.sleep(0.3)
    assert len(made) <= 1 + 2 + 1  # the one taken, a full queue and one waiting to be put
    assert list(ahead) == [10 * i for i in range(1, 20)] and not ahead.alive


def test_decoding_ahead_error_reaches_the_consumer_as_one_line_in_order():
    def decode(i):
        if i == 3:
            raise RuntimeError("Critical error in pipeline:\nError in CPU operator\n  C++ context: [...]")
        return i

    ahead = dali_mod.DecodeAhead(range(10), decode, depth=4)
    assert [next(ahead) for _ in range(3)] == [0, 1, 2]  # the items before the failure still come, in order
    with pytest.raises(RuntimeError) as info:
        next(ahead)
    assert str(info.value) == ("DALI decode (background thread): RuntimeError: Critical error in pipeline: "
                               "Error in CPU operator C++ context: [...]")
    assert info.value.__cause__ is None and "\n" not in str(info.value)
    assert not ahead.alive
    with pytest.raises(StopIteration):
        next(ahead)

    class BadData(UserError):
        pass

    def bad(i):
        raise BadData(f"clip {i}: no such file")

    with pytest.raises(BadData, match="^clip 0: no such file$"):  # a user error comes as it is
        next(dali_mod.DecodeAhead(range(3), bad))


def test_decoding_ahead_closes_cleanly_when_the_consumer_stops_early():
    closed = threading.Event()

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()  # the input (a DataLoader iterator) is let go: its workers shut down

    ahead = dali_mod.DecodeAhead(endless(), lambda i: i, depth=2)
    assert [next(ahead) for _ in range(3)] == [0, 1, 2]
    ahead.close()
    assert not ahead.alive and closed.wait(5.0)
    with pytest.raises(StopIteration):
        next(ahead)
    with pytest.raises(ValueError, match="depth"):
        dali_mod.DecodeAhead([], lambda i: i, depth=0)
