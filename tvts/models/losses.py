"""TVTS losses: video-transcript contrastive (VTC) and transcript sorting.

VTC is the official ``NormSoftmaxLoss``: cosine similarities, a FIXED temperature (0.05, not CLIP's
learned logit scale), and the two directions SUMMED. Negatives come from every rank. The gather keeps
exact gradients: each rank computes the same global loss, so the backward pass sums the gradient that
every rank computes for a slice and hands each rank its own; after the strategy averages gradients over
ranks, the update equals that of one process holding the whole global batch.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        world = dist.get_world_size()
        ctx.rank, ctx.rows = dist.get_rank(), x.shape[0]
        out = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(out, x.contiguous())
        return torch.cat(out, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous()
        dist.all_reduce(grad)  # every rank's copy of the global loss contributes to every slice
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (B, ...) from all ranks in rank order; identity without a process group."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


def vtc_loss(video_embed: torch.Tensor, text_embed: torch.Tensor, temperature: float = 0.05) -> torch.Tensor:
    """Symmetric InfoNCE over cosine similarities, directions summed.

    video_embed, text_embed: (B, E) local rows (row i of each is a positive pair). Computed in fp32.
    Returns a scalar: -mean(diag log_softmax(S/t, rows)) - mean(diag log_softmax(S/t, cols)).
    """
    # outside autocast: under bf16 autocast the matmul would run in bf16 whatever its inputs, and logits of
    # +-20 (cosines / 0.05) would be quantised to steps of ~0.125
    with torch.autocast(video_embed.device.type, enabled=False):
        v = F.normalize(gather_with_grad(video_embed).float(), dim=-1, eps=1e-8)
        t = F.normalize(gather_with_grad(text_embed).float(), dim=-1, eps=1e-8)
        logits = t @ v.T / temperature  # official: text rows, video columns
        target = torch.arange(logits.shape[0], device=logits.device)
        return F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)


def sort_loss(sort_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-transcript K-way cross-entropy. sort_logits: (B, K, K); labels: (B, K) true chronological slots."""
    k = sort_logits.shape[-1]
    return F.cross_entropy(sort_logits.float().reshape(-1, k), labels.reshape(-1))


@torch.no_grad()
def sort_accuracy(sort_logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(fraction of transcripts placed in the right slot, fraction of clips with all K right)."""
    hit = sort_logits.argmax(-1) == labels
    return hit.float().mean(), hit.all(dim=-1).float().mean()
