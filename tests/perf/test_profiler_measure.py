"""tvts.perf.profiler, measurement: the FLOP/MFU arithmetic, the phase clock and peak memory (CUDA's paths
through CPU twins), the largest-micro-batch search (CUDA's OOM recovery through a CPU twin) and the official
data path. Nothing here asserts a speed."""
import pytest
import torch

from tvts.perf.common import PeakMemory, PhaseClock
from tvts.perf import profiler
from tvts.engine.distributed import DistInfo
from tvts.engine.metrics import device_peak_flops, train_flops_per_clip
from tvts.models.flops import FlopReport
from tvts.models.text import build_tokenizer

from profiler_helpers import tiny


def test_throughput_arithmetic_on_known_numbers():
    # 4 ranks x 8 clips in 0.5 s = 64 clips/s, 16 per device; 3 TFLOP per clip -> 48 TFLOP/s per device
    rates = profiler.throughput(step_s=0.5, micro_batch=8, world_size=4, flops_clip=3e12, tokens_clip=100,
                                peak_flops=989e12)
    assert rates["clips_per_s"] == pytest.approx(64.0)
    assert rates["tokens_per_s"] == pytest.approx(6400.0)
    assert rates["tflops"] == pytest.approx(48.0)
    assert rates["mfu"] == pytest.approx(48.0 / 989.0)
    # training = 3x forward of trained parts; frozen text 1x; cached text 0
    report = FlopReport(video=10.0, text=4.0, sorter=2.0, heads=1.0)
    assert train_flops_per_clip(report, text_trainable=True, text_cached=False) == 3 * 13 + 12
    assert train_flops_per_clip(report, text_trainable=False, text_cached=False) == 3 * 13 + 4
    assert train_flops_per_clip(report, text_trainable=False, text_cached=True) == 3 * 13
    assert (profiler.throughput(0.5, 8, 1, 3e12, 100, float("nan"))["mfu"]
            != profiler.throughput(0.5, 8, 1, 3e12, 100, 1e15)["mfu"])


def test_device_peaks(monkeypatch):
    for name, peak in (("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H200", 989e12), ("NVIDIA A100-SXM4-80GB", 312e12)):
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None, n=name: n)
        assert device_peak_flops(torch.device("cuda", 0))[0] == peak
    assert device_peak_flops(torch.device("cpu"), cpu_peak=1.5e11) == (1.5e11, "CPU fp32 matmul, measured")


def test_phase_clock_and_peak_memory_cpu_twins():
    clock = PhaseClock(torch.device("cpu"))
    clock.mark("data_wait", host=True)
    torch.ones(10).sum()
    clock.mark("forward")
    clock.mark("forward")  # a phase marked twice is summed
    split = clock.split()
    assert set(split) == {"data_wait", "forward"} and all(v >= 0 for v in split.values())
    memory = PeakMemory(torch.device("cpu"))
    memory.reset()
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB, written
    grown = memory.peak_bytes() - memory.baseline
    del block
    assert memory.resettable
    assert 60 * 2**20 <= grown <= 200 * 2**20


def test_cuda_event_clock_and_allocator_peak_logic(monkeypatch):
    """The CUDA paths of PhaseClock and PeakMemory, with CPU stand-ins for events and allocator counters."""
    class Event:  # each record() advances a fake GPU clock by 1 s
        now = 0.0

        def __init__(self, enable_timing):
            assert enable_timing

        def record(self):
            Event.now += 1.0
            self.t = Event.now

        def elapsed_time(self, end):
            return (end.t - self.t) * 1e3  # milliseconds, as torch.cuda.Event

    allocated = {"now": 100, "peak": 900}
    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats",
                        lambda device=None: allocated.update(peak=allocated["now"]))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: allocated["now"])
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: allocated["peak"])
    cuda = torch.device("cuda", 0)
    clock = PhaseClock(cuda)
    clock.mark("data_wait", host=True)  # host phase: wall time, not the GPU clock
    clock.mark("forward")
    Event.now += 2.0  # GPU work between the marks
    clock.mark("backward")
    split = clock.split()
    assert split["forward"] == pytest.approx(1.0) and split["backward"] == pytest.approx(3.0)
    assert 0 <= split["data_wait"] < 1.0
    memory = PeakMemory(cuda)
    memory.reset()
    allocated.update(now=400, peak=1500)
    assert memory.baseline == 100 and memory.peak_bytes() - memory.baseline == 1400


def test_search_largest_with_oom_recovery(monkeypatch):
    """The GPU search, with the out-of-memory error raised by a CPU twin of a too-large step."""
    assert profiler.search_largest(lambda b: b <= 37)[0] == 37
    assert profiler.search_largest(lambda b: b <= 64, start=8)[0] == 64
    assert profiler.search_largest(lambda b: True, limit=100)[0] == 100
    assert profiler.search_largest(lambda b: False)[0] == 0

    real_warm_up = profiler.Runner.warm_up

    def warm_up(self, batches, steps):
        if self.setup.micro_batch > 5:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_warm_up(self, batches, steps)

    monkeypatch.setattr(profiler.Runner, "warm_up", warm_up)
    cfg = tiny()
    tokenizer = build_tokenizer(cfg)
    fits = profiler.step_fits(cfg, profiler.engine_setup(cfg), DistInfo(),
                              lambda c: profiler.synthetic_batch(c, tokenizer))
    found, tried = profiler.search_largest(fits, start=2, limit=64)
    assert found == 5
    assert (8, False) in tried and (5, True) in tried and (6, False) in tried


def test_official_sample_draws_like_the_engine(tmp_path):
    """The official path decodes differently (a seek per frame, PIL) but takes the same frame times,
    transcript order and mask as the engine's SampleTransform for a sample."""
    import numpy as np

    from tvts.data.pipeline import SampleTransform
    from tvts.data.augment import normalize_video
    from tvts.data.prepare import ensure_demo_corpus
    from tvts.data.shards import list_shards, read_shard

    cfg = tiny(f"data.root={tmp_path}", "data.synthetic=true", "data.synthetic_stream=false")
    ensure_demo_corpus(cfg, None, num_videos=2, downstream=(2, 2), workers=1)
    path = list_shards(cfg.data.train[0])[0][0]
    key, members = next(iter(read_shard(path)))
    transform = SampleTransform(cfg, train=True)
    ours = transform(dict(members, __key__=key), "transcripts", 3)
    official = profiler.official_sample(transform, key, members, 3)
    np.testing.assert_array_equal(official.frame_times, ours.frame_times)
    assert official.texts == ours.texts
    assert torch.equal(official.labels, ours.labels) and torch.equal(official.keep, ours.keep)
    assert official.video.shape == ours.video.shape == (cfg.sample.frames, 3, 32, 32)
    # ours ships uint8 (normalised on the device by the strategy); the official way normalises per frame
    video = normalize_video(ours.video, cfg.data.normalize)
    assert (official.video - video).abs().mean() < 0.25  # PIL vs swscale resize: close, not equal
    batch = next(iter(profiler.official_loader(cfg, DistInfo(), build_tokenizer(cfg))))
    assert batch[0] == "transcripts" and batch[1]["video"].shape == (2, cfg.sample.frames, 3, 32, 32)
