"""One attention function for the video encoder, the sorter and the text towers.

Backends: ``sdpa`` (``F.scaled_dot_product_attention``: flash / cuDNN / memory-efficient on GPUs, the
CPU flash kernel here) and ``math`` (the reference: explicit softmax(QK^T)V, what the official code's
einsum attention computes). ``auto`` picks sdpa. The kernels issue adds Triton and other backends here.
"""
from __future__ import annotations

import logging
import math
from typing import Optional

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

BACKENDS = ("auto", "triton", "flash_attn", "xformers", "sdpa", "math")
_default_backend = "auto"
_logged: set[str] = set()


def set_default_backend(name: str) -> None:
    """Backend used when a call passes ``backend=None`` (the engine sets it from ``train.attention``)."""
    global _default_backend
    if name not in BACKENDS:
        raise ValueError(f"attention backend {name!r}: expected one of {', '.join(BACKENDS)}")
    _default_backend = name


def _note_once(msg: str) -> None:
    if msg not in _logged:
        _logged.add(msg)
        log.info(msg)


def attention_reference(q, k, v, key_padding_mask=None, scale=None, causal=False):
    """softmax(q k^T * scale + mask) v, computed in fp32 with explicit tensors (the official einsum path)."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = torch.matmul(q.float(), k.float().transpose(-2, -1)) * scale
    bias = _bias(key_padding_mask, causal, q.shape[-2], k.shape[-2], q.device)
    if bias is not None:
        scores = scores + bias
    probs = scores.softmax(dim=-1)
    return torch.matmul(probs, v.float()).to(q.dtype)


def _bias(key_padding_mask, causal, lq, lk, device):
    bias = None
    if key_padding_mask is not None:
        bias = torch.zeros(key_padding_mask.shape, device=device).masked_fill(~key_padding_mask, float("-inf"))
        bias = bias[:, None, None, :]  # (B, 1, 1, Lk)
    if causal:
        tri = torch.ones(lq, lk, dtype=torch.bool, device=device).tril(lk - lq)
        c = torch.zeros(lq, lk, device=device).masked_fill(~tri, float("-inf"))
        bias = c if bias is None else bias + c
    return bias


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: Optional[torch.Tensor] = None,
    scale: Optional[float] = None,
    causal: bool = False,
    backend: Optional[str] = None,
) -> torch.Tensor:
    """Multi-head attention.

    Args:
        q: (B, H, Lq, D); k, v: (B, H, Lk, D); fp32, fp16 or bf16.
        key_padding_mask: (B, Lk) bool, True where the key is valid.
        scale: defaults to D ** -0.5.
        causal: query i attends to keys <= i (+ Lk - Lq); only the CLIP text tower uses it.
        backend: one of ``BACKENDS``; ``None`` uses the process default (see :func:`set_default_backend`).
    Returns:
        (B, H, Lq, D) in q's dtype.
    """
    backend = backend or _default_backend
    if backend == "math":
        return attention_reference(q, k, v, key_padding_mask, scale, causal)
    if backend not in ("auto", "sdpa"):
        _note_once(f"attention backend {backend!r} is not available in this build; using sdpa")
    mask = None
    if key_padding_mask is not None:
        mask = key_padding_mask[:, None, None, :]
    if causal and (mask is not None or q.shape[-2] != k.shape[-2]):
        tri = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril(k.shape[-2] - q.shape[-2])
        mask = tri if mask is None else mask & tri
        causal = False
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=scale)
