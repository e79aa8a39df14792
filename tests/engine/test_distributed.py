"""Process groups always have a CPU backend: the loop reduces small CPU tensors (skip and stop decisions,
metrics) every step, and a CUDA-only group (what "nccl" alone gives) fails at the first of them."""
import pytest
import torch.distributed as dist

from tvts.engine import distributed


@pytest.fixture
def one_rank_group():
    def make(backend):
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    yield make
    if dist.is_initialized():
        dist.destroy_process_group()


def test_a_group_without_a_cpu_backend_fails_the_reductions(one_rank_group):
    one_rank_group("cuda:gloo")  # on this CPU machine, the stand-in for an NCCL-only group
    with pytest.raises(RuntimeError, match="No backend type associated with device type cpu"):
        distributed.all_reduce_max(1.0)


def test_the_backends_we_ask_for_reduce_cpu_tensors(one_rank_group):
    gpu = distributed.backend_for("cuda")
    assert gpu == "cpu:gloo,cuda:nccl" and distributed.backend_for("cpu") == "gloo"
    one_rank_group(gpu.replace("nccl", "gloo"))  # the same layout, with gloo where CUDA would have NCCL
    assert distributed.all_reduce_max(2.0) == 2.0
    assert distributed.all_reduce_mean({"loss": 3.0}) == {"loss": 3.0}


def test_init_asks_for_a_cpu_backend_on_gpus(monkeypatch):
    seen = {}
    monkeypatch.setenv("WORLD_SIZE", "2"), monkeypatch.setenv("RANK", "0"), monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setattr(distributed.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(distributed.torch.cuda, "set_device", lambda index: None)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda backend, **kw: seen.setdefault("backend", backend))
    info = distributed.init()
    assert seen["backend"] == "cpu:gloo,cuda:nccl" and info.backend == "cpu:gloo,cuda:nccl"
