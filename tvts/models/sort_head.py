"""The transcript-sorting head (official ``SortTransformer``, identical in v1 and v2).

A 2-layer pre-norm transformer runs joint self-attention over [video tokens + type_embed[0] ;
K transcript vectors + type_embed[1]]. Each transcript's output goes through LayerNorm + Linear(D -> K):
row i holds the logits of "which chronological slot did transcript i come from" (per-transcript K-way
classification, not K!-way). There is no positional or slot embedding on the transcripts, so the head is
permutation-equivariant over them; the data side still shuffles explicitly and permutes the labels.

Only the K transcript rows of the last block are read, so that block computes only them (the "sort
readout"): queries, output projection, residual and MLP on K rows; keys and values still on all N + K
rows. Exactly the last K rows of the full block; for v1 B/16 (397 tokens) the sorter's forward FLOPs
drop by ~42 % (docs/benchmarks.md, "Kernels").

The first block needs every row (the last block's keys and values are all of its outputs), so its only
exact saving is the input: :class:`TypedConcat` writes video + type_embed[0] and transcripts +
type_embed[1] straight into the one (B, N + K, D) sequence, instead of two sums and a copy.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from tvts.kernels import attention
from tvts.models.layers import Block


class TypedConcat(torch.autograd.Function):
    """[video + type_embed[0] ; transcripts + type_embed[1]] written into one buffer.

    Equal (bitwise) to ``torch.cat([video + t[:, :1], transcripts + t[:, 1:]], 1)`` in values, dtype and
    gradients, without the (B, N, D) temporary sum and the copy of it into the concatenation.
    """

    @staticmethod
    def forward(ctx, video: torch.Tensor, transcripts: torch.Tensor, type_embed: torch.Tensor) -> torch.Tensor:
        """video (B, N, D), transcripts (B, K, D), type_embed (1, 2, D) -> (B, N + K, D) in the promoted dtype."""
        b, n, dim = video.shape
        dtype = torch.promote_types(torch.result_type(video, type_embed), torch.result_type(transcripts, type_embed))
        x = video.new_empty(b, n + transcripts.shape[1], dim, dtype=dtype)
        torch.add(video, type_embed[0, 0], out=x[:, :n])
        torch.add(transcripts, type_embed[0, 1], out=x[:, n:])
        ctx.n = n
        ctx.dtypes = video.dtype, transcripts.dtype, type_embed.dtype
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        video_grad, text_grad = grad[:, :ctx.n], grad[:, ctx.n:]
        type_grad = None
        if ctx.needs_input_grad[2]:  # the broadcast add's gradient: summed over batch and rows
            type_grad = torch.stack([video_grad.sum((0, 1)), text_grad.sum((0, 1))])[None].to(ctx.dtypes[2])
        return video_grad.to(ctx.dtypes[0]), text_grad.to(ctx.dtypes[1]), type_grad


class SortBlock(Block):
    """:class:`Block` (same parameters) whose forward can return only its last ``readout`` rows.

    The readout goes through the block's own ``forward`` so that wrappers applied per block
    (``torch.compile``, FSDP2's parameter all-gather hooks) still see the call.
    """

    def forward(self, x: torch.Tensor, key_padding_mask: Optional[torch.Tensor] = None,
                readout: int = 0) -> torch.Tensor:
        """x: (B, L, D). readout=0: (B, L, D), the full block; readout=K: (B, K, D), equal to the full
        block's ``[:, -K:]``."""
        if not readout:
            return super().forward(x, key_padding_mask)
        attn = self.attn
        b, length, dim = x.shape
        h = self.norm1(x)
        weight, bias = attn.qkv.weight, attn.qkv.bias  # rows: q (dim), k (dim), v (dim)
        q = F.linear(h[:, -readout:], weight[:dim], None if bias is None else bias[:dim])
        kv = F.linear(h, weight[dim:], None if bias is None else bias[dim:])
        q = q.view(b, readout, attn.heads, attn.head_dim).transpose(1, 2)
        k, v = kv.view(b, length, 2, attn.heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        x = x[:, -readout:] + attn.merge_heads(attention(q, k, v, key_padding_mask=key_padding_mask))
        return x + self.mlp(self.norm2(x))


class SortHead(nn.Module):
    def __init__(self, dim: int, transcript_dim: int, num_windows: int, depth: int = 2, heads: int = 12,
                 mlp_ratio: float = 4.0, transcript_norm: str = "none", center_momentum: float = 0.01):
        super().__init__()
        self.type_embed = nn.Parameter(torch.zeros(1, 2, dim))  # official: zero-init, learnable
        # official v1/v2: text width == sorter width; a different text tower (MiniLM 384-d) needs an adapter
        self.transcript_proj = nn.Linear(transcript_dim, dim) if transcript_dim != dim else nn.Identity()
        self.blocks = nn.ModuleList(SortBlock(dim, heads, mlp_ratio, eps=1e-6) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_windows)
        self.transcript_norm = transcript_norm
        self.center_momentum = center_momentum
        if transcript_norm == "center_l2":
            # running mean of transcript vectors: off-the-shelf sentence embeddings are anisotropic and
            # look alike to a small head until centred (cpu-demo-recipe.md)
            self.register_buffer("transcript_mean", torch.zeros(transcript_dim))
            self.register_buffer("transcript_mean_ready", torch.zeros((), dtype=torch.bool))

    def reset_parameters(self) -> None:
        """The construction-time values of the head's own tensors (its layers reset themselves)."""
        torch.nn.init.zeros_(self.type_embed)
        for buffer in self.buffers(recurse=False):
            buffer.zero_()

    def prepare_transcripts(self, transcripts: torch.Tensor) -> torch.Tensor:
        if self.transcript_norm != "center_l2":
            return transcripts
        flat = transcripts.reshape(-1, transcripts.shape[-1]).float()
        if self.training:
            with torch.no_grad():
                batch_mean = flat.mean(0)
                if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                    # one running mean for every rank (sharded strategies keep no buffer broadcast)
                    dist.all_reduce(batch_mean)
                    batch_mean /= dist.get_world_size()
                # on the device (no host sync): the first batch sets the mean (lerp with weight 1 is exactly
                # batch_mean), later ones move it by center_momentum
                weight = torch.where(self.transcript_mean_ready, self.center_momentum, 1.0).to(batch_mean.dtype)
                self.transcript_mean.lerp_(batch_mean, weight)
                self.transcript_mean_ready.fill_(True)
        return F.normalize(transcripts.float() - self.transcript_mean, dim=-1).to(transcripts.dtype)

    def forward(self, video_tokens: Optional[torch.Tensor], transcripts: Optional[torch.Tensor] = None) -> torch.Tensor:
        """video_tokens: (B, N, D); transcripts: (B, K, Dt), already detached. Returns logits (B, K, K).

        ``forward(None)`` (a step without transcripts to sort: captions) returns a scalar 0.0 that depends on
        every trainable parameter, so each gets a zero gradient rather than none: data-parallel wrappers then
        reduce the same set of gradients every step (DDP needs no unused-parameter search), and AdamW treats
        the sorter as the official code's DDP did (zeroed, not dropped, gradients: weight decay and momentum
        go on). Each block runs (on one zero token) through its own call, so sharded strategies gather its
        parameters as in a real step."""
        if video_tokens is None:
            x = self.type_embed[:, :1] * 0.0  # (1, 1, D)
            total = self.type_embed.sum()
            if isinstance(self.transcript_proj, nn.Linear):
                total = total + self.transcript_proj(self.transcript_proj.weight.new_zeros(1, self.transcript_proj.in_features)).sum()
            for blk in self.blocks:
                x = blk(x)
            return 0.0 * (total + self.head(self.norm(x)).sum())
        k = transcripts.shape[1]
        text = self.transcript_proj(self.prepare_transcripts(transcripts).to(video_tokens.dtype))
        x = TypedConcat.apply(video_tokens, text, self.type_embed)  # (B, N + K, D)
        for blk in self.blocks[:-1]:
            x = blk(x)
        x = self.blocks[-1](x, readout=k)  # (B, K, D): only the transcript rows are read
        return self.head(self.norm(x))
