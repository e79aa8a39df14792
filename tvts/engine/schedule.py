"""Learning-rate schedules as multipliers of each parameter group's base lr.

step: the official recipe (x decay_factor after each fraction in ``decay_at``; v1 [0.6, 0.8] of 20 epochs,
v2 [0.6, 0.8] of 10), optionally after a linear warm-up. cosine: linear warm-up then cosine to
``min_lr_ratio``. constant: warm-up then flat.
"""
from __future__ import annotations

import math

import torch


def lr_multiplier(step: int, total: int, optim_cfg) -> float:
    """Multiplier for optimizer step ``step`` (0-based) of ``total``."""
    warm = optim_cfg.warmup_steps
    if warm and step < warm:
        return (step + 1) / warm
    if optim_cfg.schedule == "constant":
        return 1.0
    if optim_cfg.schedule == "step":
        done = step / max(1, total)
        return optim_cfg.decay_factor ** sum(done >= x for x in optim_cfg.decay_at)
    progress = min(1.0, (step - warm) / max(1, total - warm))
    floor = optim_cfg.min_lr_ratio
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, optim_cfg) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_multiplier(s, total_steps, optim_cfg))
