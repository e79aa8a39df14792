"""The official TVTS / TVTSv2 attention, kept as the benchmark baseline.

``VarAttention`` / ``SortTransformer`` (official v1 and v2 code) compute attention as einsums in the
autocast dtype with the softmax in fp32 (autocast runs softmax in fp32) and materialise the (Lq, Lk)
probabilities. Our ``math`` backend is the accuracy reference (everything in fp32); this one is the speed
and memory baseline the issue asks to beat (>= 3x on GPUs).
"""
from __future__ import annotations

from typing import Optional

import torch


def einsum_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: Optional[float] = None) -> torch.Tensor:
    """q (B, H, Lq, D), k/v (B, H, Lk, D) -> (B, H, Lq, D) in q's dtype."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = torch.einsum("bhid,bhjd->bhij", q * scale, k)
    probs = scores.float().softmax(dim=-1).to(q.dtype)
    return torch.einsum("bhij,bhjd->bhid", probs, v)
