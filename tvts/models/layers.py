"""Transformer building blocks shared by the video encoder and the sorter.

Attention always goes through :func:`tvts.kernels.attention`, so a backend switch reaches every block.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from tvts.kernels import attention


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x), the activation of OpenAI CLIP (and TVTSv2 B/32, B/16)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


def activation(name: str) -> nn.Module:
    if name == "quick_gelu":
        return QuickGELU()
    if name == "gelu":
        return nn.GELU()
    raise ValueError(f"activation {name!r}: expected gelu or quick_gelu")


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, act: str = "gelu"):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = activation(act)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (timm / VideoMAE layout: ``qkv``, ``proj``)."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.head_dim = dim // heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def split_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, L, D) -> q, k, v each (B, H, L, d)."""
        b, n, _ = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]

    def merge_heads(self, out: torch.Tensor) -> torch.Tensor:
        """(B, H, L, d) -> (B, L, D) through the output projection."""
        b, h, n, d = out.shape
        return self.proj(out.transpose(1, 2).reshape(b, n, h * d))

    def forward(self, x: torch.Tensor, key_padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        q, k, v = self.split_heads(x)
        return self.merge_heads(attention(q, k, v, key_padding_mask=key_padding_mask))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)); x + mlp(norm2(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, eps: float = 1e-6, act: str = "gelu", qkv_bias: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act)

    def forward(self, x: torch.Tensor, key_padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), key_padding_mask)
        return x + self.mlp(self.norm2(x))


def trunc_normal_init(module: nn.Module, std: float = 0.02) -> None:
    """VideoMAE/timm init: Linear weights trunc-normal(std), biases 0, LayerNorm (1, 0)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def unwrap_module(module: nn.Module) -> nn.Module:
    """The module inside ``torch.compile`` (``_orig_mod``) and checkpoint (``_checkpoint_wrapped_module``)
    wrappers."""
    while True:
        inner = getattr(module, "_orig_mod", None) or getattr(module, "_checkpoint_wrapped_module", None)
        if inner is None:
            return module
        module = inner


__all__ = ["QuickGELU", "activation", "Mlp", "Attention", "Block", "trunc_normal_init", "unwrap_module"]
