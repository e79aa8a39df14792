"""The strategy a config names, built: the registry of every strategy by name and :func:`build_strategy`.

``single`` and ``ddp`` live in :mod:`tvts.engine.strategies`; ``fsdp`` and ``zero1``-``zero3`` in
:mod:`tvts.engine.sharded`, imported only when a run asks for one of them (FSDP2 and DeepSpeed are heavy
imports). Both modules only define strategies; this one is the only place that knows all of them.
"""
from __future__ import annotations

import torch.nn as nn

from tvts.config import ConfigError
from tvts.engine.distributed import DistInfo
from tvts.engine.strategies import DDPStrategy, Strategy

STRATEGIES: dict[str, type[Strategy]] = {"single": Strategy, "ddp": DDPStrategy}
SHARDED_NAMES = ("fsdp", "zero1", "zero2", "zero3")


def strategy_class(name: str) -> type[Strategy]:
    """The class registered under ``name`` (``single``, ``ddp``, ``fsdp``, ``zero1``-``zero3``)."""
    if name not in STRATEGIES and name in SHARDED_NAMES:
        from tvts.engine.sharded import SHARDED

        STRATEGIES.update(SHARDED)
    return STRATEGIES[name]


def build_strategy(cfg, model: nn.Module, info: DistInfo, total_steps: int, init=None) -> Strategy:
    """The strategy of ``cfg.train.strategy`` around ``model`` (parallelised, with its optimizer);
    ``init``: initial weights in our layout (a :class:`tvts.models.init.TensorSource` or a safetensors path),
    loaded before the optimizer is built."""
    name = cfg.train.strategy
    if name == "ddp" and info.world_size == 1:
        name = "single"  # DDP over one process is single, minus the wrapper
    if name == "single" and info.world_size > 1:
        raise ConfigError(f"train.strategy: single runs one process but the launcher started {info.world_size}; "
                          f"use ddp, fsdp or zero1-3")
    return strategy_class(name)(cfg, model, info, total_steps, init)
