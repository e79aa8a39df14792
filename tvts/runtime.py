"""What every floor of the package needs and that needs nothing of the package: which process this is
(:class:`DistInfo`), a barrier, seeding, and the names of parameters under wrappers.

The process group itself is set up by :mod:`tvts.engine.distributed` (the launchers' concern); data, models
and eval only read a :class:`DistInfo` and wait at barriers, so they import this module, not the engine.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job (all ranks, one node's ranks, the node)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    node_rank: int = 0
    backend: str = "none"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def num_nodes(self) -> int:
        return max(1, self.world_size // max(1, self.local_world_size))

    @property
    def device(self) -> torch.device:
        if torch.cuda.is_available():
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")


def barrier() -> None:
    """Wait for every rank (nothing without a process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def seed_everything(seed: int) -> None:
    """Python, numpy and torch global RNGs from one seed."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def unwrapped_name(name: str) -> str:
    """A parameter/buffer name without wrapper prefixes (``_orig_mod.`` from compile,
    ``_checkpoint_wrapped_module.``, DDP's ``module.``)."""
    for junk in ("_orig_mod.", "_checkpoint_wrapped_module.", "module."):
        name = name.replace(junk, "")
    return name
