"""Setups: how one model is run (strategy, attention backend, micro-batch, activation checkpointing,
precision, loss scaling, decoder), the engine's and the official code's, and the sweep's grid of them."""
from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, replace
from typing import Sequence

import torch

from tvts.config import validate

# the official recipes: fp32, except the H/14 run (fp16 autocast without a loss scaler)
OFFICIAL_FP16_SIZES = ("huge",)


@dataclass(frozen=True)
class Setup:
    """How one model is run. ``loss_scaling=False`` with fp16 reproduces the official H/14 run."""

    name: str
    strategy: str
    attention: str
    micro_batch: int
    checkpointing: bool
    precision: str
    loss_scaling: bool = True
    decoder: str = "engine"  # engine: TrainLoader; official: per-frame seeks (official_clip)

    def apply(self, cfg):
        """A copy of ``cfg`` that runs this setup (validated: a bad combination is one ConfigError line)."""
        c = copy.deepcopy(cfg)
        c.train.strategy, c.train.attention, c.train.micro_batch = self.strategy, self.attention, self.micro_batch
        c.train.precision, c.model.video.grad_checkpointing = self.precision, self.checkpointing
        c.train.grad_accum = 1
        validate(c)
        return c


def engine_setup(cfg, name: str = "engine") -> Setup:
    t = cfg.train
    return Setup(name, t.strategy, t.attention, t.micro_batch, cfg.model.video.grad_checkpointing, t.precision)


def official_setup(cfg, device: torch.device) -> Setup:
    """The official code's way: DDP, the explicit einsum attention (our ``math``), no activation
    checkpointing, fp32 (fp16 without loss scaling for H/14 on a GPU), per-frame seek decoding."""
    fp16 = device.type == "cuda" and cfg.model.video.size in OFFICIAL_FP16_SIZES
    return Setup("official", "ddp", "math", cfg.train.micro_batch, False, "fp16" if fp16 else "fp32",
                 loss_scaling=not fp16, decoder="official")


def sweep_grid(cfg, strategies: Sequence[str], attentions: Sequence[str], micro_batches: Sequence[int],
               checkpointing: Sequence[bool]) -> list[Setup]:
    base = engine_setup(cfg)
    return [replace(base, name=f"{s}/{a}/B{b}/{'ckpt' if c else 'no-ckpt'}", strategy=s, attention=a, micro_batch=b,
                    checkpointing=c)
            for s, a, b, c in itertools.product(strategies, attentions, micro_batches, checkpointing)]
