"""DALI path: decoder choice (always runs) and, when DALI is installed, its CPU graph on a VP9 clip
(DALI's CPU decoder cannot decode H.264) against the PyAV frames and augment_video."""
import sys

import numpy as np
import pytest
import torch

from tvts.config import DataConfig, load
from tvts.data import dali as dali_mod
from tvts.data.augment import augment_video
from tvts.data.decode import decode_frames, frame_starts, frame_timeline
from tvts.data.errors import SkipSample
from tvts.data.sampling import frame_indices, frame_times

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
