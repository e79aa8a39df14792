"""Process-group setup for every launcher: plain python, torchrun (single or multi-node), deepspeed, SLURM.

Rank, world size, local rank and node come from the environment the launcher sets. gloo on CPU, NCCL on
GPUs. A rank that dies makes the others fail within ``timeout`` instead of hanging.
"""
from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist

from tvts.runtime import DistInfo, barrier  # noqa: F401  (re-exported: the engine's callers use them from here)


def _env_int(*names: str, default: int) -> int:
    for name in names:
        if os.environ.get(name, "").strip():
            return int(os.environ[name])
    return default


def env_info() -> DistInfo:
    """What the launcher says about this process (torchrun / deepspeed set RANK etc.; SLURM sets SLURM_*)."""
    rank = _env_int("RANK", "SLURM_PROCID", default=0)
    world = _env_int("WORLD_SIZE", "SLURM_NTASKS", default=1)
    local_rank = _env_int("LOCAL_RANK", "SLURM_LOCALID", default=0)
    local_world = _env_int("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE", default=world)
    node = _env_int("GROUP_RANK", "SLURM_NODEID", default=rank // max(1, local_world))
    return DistInfo(rank, world, local_rank, local_world, node)


def init(timeout_s: float = 600.0) -> DistInfo:
    """Join the process group when the launcher started several processes; a no-op for one process."""
    info = env_info()
    if info.world_size == 1:
        return info
    if torch.cuda.is_available():
        torch.cuda.set_device(info.local_rank)
    backend = backend_for(info.device.type)
    if not dist.is_initialized():
        if "MASTER_ADDR" not in os.environ:  # SLURM without torchrun: launch/slurm/ sets these
            raise RuntimeError("several ranks but MASTER_ADDR is not set: launch with torchrun, deepspeed or launch/slurm/")
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s),
                                rank=info.rank, world_size=info.world_size)
    return DistInfo(info.rank, info.world_size, info.local_rank, info.local_world_size, info.node_rank, backend)


def backend_for(device_type: str) -> str:
    """The process-group backends: NCCL for CUDA tensors and always gloo for CPU ones, because the loop
    reduces small CPU tensors (skip / stop decisions, metrics) every step, and a group without a CPU
    backend raises "No backend type associated with device type cpu" at the first of them."""
    return "cpu:gloo,cuda:nccl" if device_type == "cuda" else "gloo"


def all_reduce_max(value: float) -> float:
    """The max of a float over ranks (so that every rank takes the same skip/abort decision)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def all_reduce_mean(values: dict[str, float], op: str = "mean") -> dict[str, float]:
    """Each value's mean over ranks (``op="max"``: its max); one collective for the whole dict."""
    if not (dist.is_available() and dist.is_initialized()) or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    if op == "mean":
        t /= dist.get_world_size()
    return dict(zip(keys, t.tolist()))


def all_gather_objects(value) -> list:
    """Every rank's picklable ``value``, in rank order (``[value]`` without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
