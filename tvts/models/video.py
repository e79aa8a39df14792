"""The video encoder: one implementation for TVTS v1 (joint space-time) and TVTSv2 (divided space-time).

v1 (``family: v1``, official ``v1/model/video_encoder.py``): tubelet patch embedding (2x16x16), a CLS
token, learned spatial (1 + HW) and temporal (slots) embeddings, random masking per temporal slot, and
plain ViT blocks attending over CLS + every visible spatio-temporal token.

v2 (``family: v2``, official ``v2/model/video_encoder_ViT_*.py``, Frozen-in-Time wiring): per-frame 2D
patches, tube masking, ``ln_pre``, and blocks that run a zero-initialised temporal attention before each
spatial attention; the temporal output feeds only the spatial attention's input, never the residual
stream. CLS attends to all tokens in both attentions.

Masked patches are never embedded: their pixels are gathered away before the patch projection, which
is exact because the official code adds position embeddings before dropping tokens.
"""
from __future__ import annotations

from functools import partial
from typing import Callable, Optional

import torch
import torch.nn as nn

from tvts.kernels import attention
from tvts.models.layers import Attention, Block, Mlp, trunc_normal_init, unwrap_module


class DividedAttention(Attention):
    """Self-attention within groups of patch tokens (one frame, or one spatial location across frames),
    with CLS as an extra key/value of every group and CLS itself querying all tokens.

    Every group has the same length (tube masking keeps the same patches in every frame), so all groups
    of a direction go through one batched :func:`attention` call without padding; packing them into one
    sequence with a block-diagonal mask would compute 12x (spatial) to 90x (temporal) more scores at B/16.
    Layout (docs/benchmarks.md, "v2 divided attention"): q, k and v are split once (``unbind``/``split``,
    whose backward concatenates) rather than sliced out of the qkv projection six times (each slice's
    backward zero-fills a full-size gradient that is then summed); CLS keys/values are broadcast into
    the groups by the same concatenation that gathers the group's keys/values.
    """

    def forward(self, x: torch.Tensor, slots: int, over: str) -> torch.Tensor:
        """x: (B, 1 + slots * n, D) with CLS first and patches slot-major; ``over`` is "space" or "time".
        Returns (B, 1 + slots * n, D)."""
        b, length, _ = x.shape
        n = (length - 1) // slots
        h, d = self.heads, self.head_dim
        q, k, v = self.qkv(x).view(b, length, 3, h, d).unbind(2)  # (B, L, H, d) each
        (cls_q, patch_q), (cls_k, patch_k), (cls_v, patch_v) = (t.split([1, length - 1], dim=1) for t in (q, k, v))
        cls_out = attention(cls_q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))  # (B, H, 1, d)

        # (B, S*n, H, d) -> (B, groups, H, seq, d): a frame's n patches (space) or a patch's S frames (time)
        order = (0, 1, 3, 2, 4) if over == "space" else (0, 2, 3, 1, 4)
        groups, seq = (slots, n) if over == "space" else (n, slots)

        def grouped(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, slots, n, h, d).permute(order)

        def with_cls(cls: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # [CLS ; group] keys or values
            cls = cls.transpose(1, 2)[:, None].expand(b, groups, h, 1, d)
            return torch.cat([cls, grouped(t)], dim=3).view(b * groups, h, seq + 1, d)

        out = attention(grouped(patch_q).reshape(b * groups, h, seq, d), with_cls(cls_k, patch_k),
                        with_cls(cls_v, patch_v))
        # back to (B, S, n, H, d) by the inverse permutation, then rows [CLS ; patches] and the output projection
        out = out.view(b, groups, h, seq, d).permute(tuple(order.index(i) for i in range(5)))
        rows = torch.cat([cls_out.transpose(1, 2), out.reshape(b, slots * n, h, d)], dim=1)
        return self.proj(rows.flatten(2))


class DividedBlock(nn.Module):
    """TVTSv2 block: t = time_attn(time_norm(x)); x += attn(norm1(x + t)); x += mlp(norm2(x)).

    ``time_attn``/``time_norm`` are the official ``timeattn``/``ln_3``: new modules, zero-initialised
    (qkv = 0, proj.weight = 1, proj.bias = 0), so the block equals a frame-wise ViT block at init.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float, eps: float, act: str):
        super().__init__()
        self.time_norm = nn.LayerNorm(dim, eps=eps)
        self.time_attn = DividedAttention(dim, heads)
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = DividedAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act)

    def zero_init_temporal(self) -> None:
        nn.init.zeros_(self.time_attn.qkv.weight)
        nn.init.zeros_(self.time_attn.qkv.bias)
        nn.init.ones_(self.time_attn.proj.weight)  # official: filled with 1, so V still gets gradients
        nn.init.zeros_(self.time_attn.proj.bias)

    def forward(self, x: torch.Tensor, slots: int) -> torch.Tensor:
        t = self.time_attn(self.time_norm(x), slots, "time")
        x = x + self.attn(self.norm1(x + t), slots, "space")
        return x + self.mlp(self.norm2(x))


def _init_block(block: nn.Module) -> None:
    """VideoMAE/timm init of one block (also through checkpoint/compile wrappers); TVTSv2's temporal
    attention then starts as the identity of the frame-wise block."""
    trunc_normal_init(block)
    block = unwrap_module(block)
    if isinstance(block, DividedBlock):
        block.zero_init_temporal()


class JointBlock(Block):
    """TVTS v1 block: full self-attention over CLS + all visible space-time tokens."""

    def forward(self, x: torch.Tensor, slots: int) -> torch.Tensor:  # noqa: ARG002 - same call as DividedBlock
        return super().forward(x)


class VideoEncoder(nn.Module):
    """(B, T, 3, H, W) video + optional keep indices -> (B, 1 + N_visible, D) tokens, CLS first.

    Parameters: ``patch_embed`` (D, 3, tubelet, p, p) [+ bias in v1], ``cls_token`` (1, 1, D),
    ``pos_embed`` (1, 1 + HW, D), ``temporal_embed`` (1, slots, D), ``norm_pre`` (v2), ``blocks``,
    ``norm`` (final LayerNorm: v1 ``norm``, v2 ``ln_post``), ``proj`` (v2 only: (D, output_dim)).
    """

    def __init__(self, cfg):
        super().__init__()
        v = cfg.model.video
        width, depth, heads = cfg.video_dims()
        grid = cfg.patch_grid()
        self.family = v.family
        self.width = width
        self.patch_size = v.patch_size
        self.tubelet = v.tubelet
        self.grid_side = grid.side
        self.patch_embed = nn.Parameter(torch.empty(width, 3, v.tubelet, v.patch_size, v.patch_size))
        self.patch_bias = nn.Parameter(torch.zeros(width)) if v.family == "v1" else None
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid.patches_per_slot, width))
        self.temporal_embed = nn.Parameter(torch.zeros(1, grid.slots, width))
        if v.family == "v2":
            self.norm_pre = nn.LayerNorm(width, eps=v.norm_eps)
            block = lambda: DividedBlock(width, heads, v.mlp_ratio, v.norm_eps, v.activation)  # noqa: E731
        else:
            self.norm_pre = nn.Identity()
            block = lambda: JointBlock(width, heads, v.mlp_ratio, v.norm_eps, v.activation)  # noqa: E731
        self.blocks = nn.ModuleList(block() for _ in range(depth))
        self.norm = nn.LayerNorm(width, eps=v.norm_eps)
        self.output_dim = v.output_dim or width
        self.proj = nn.Parameter(torch.empty(width, v.output_dim)) if v.output_dim else None
        self._temporal_std = v.temporal_embed_std
        self.reset_parameters()

    # -- init --------------------------------------------------------------------------------------
    def reset_parameters(self) -> None:
        """From-scratch init (pretrained weights overwrite most of it). Works after ``to_empty``."""
        for _, init in self.init_units():
            init()

    def init_units(self) -> list[tuple[list[nn.Parameter], Callable[[], None]]]:
        """The init as (parameters, function) units, one block at a time then the encoder's own tensors (the
        order of the random draws), so that a ZeRO-3 build can gather one unit's parameters around its init."""
        own = list(self.parameters(recurse=False)) + list(self.norm_pre.parameters()) + list(self.norm.parameters())
        units = [(list(blk.parameters()), partial(_init_block, blk)) for blk in self.blocks]
        return units + [(own, self._init_own)]

    def _init_own(self) -> None:
        trunc_normal_init(self.norm_pre)
        trunc_normal_init(self.norm)
        fan_in = self.patch_embed[0].numel()
        nn.init.trunc_normal_(self.patch_embed, std=fan_in**-0.5)
        if self.patch_bias is not None:
            nn.init.zeros_(self.patch_bias)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        # official: v1 temporal_embed starts at zero (MAE init); v2 width**-0.5 * randn
        std = self._temporal_std
        if std is None:
            std = 0.0 if self.family == "v1" else self.width**-0.5
        if std > 0:
            nn.init.normal_(self.temporal_embed, std=std)
        else:
            nn.init.zeros_(self.temporal_embed)
        if self.proj is not None:
            nn.init.normal_(self.proj, std=self.width**-0.5)

    def new_modules(self) -> list[nn.Module]:
        """Modules that no image checkpoint provides (TVTSv2's lr-1e-4 group): temporal attention + its norm."""
        return [m for blk in self.blocks if isinstance(blk, DividedBlock) for m in (blk.time_attn, blk.time_norm)]

    # -- forward -----------------------------------------------------------------------------------
    def embed(self, video: torch.Tensor, keep_indices: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, int]:
        """Patch + position embeddings of the visible patches. Returns ((B, 1 + S*n, D), S)."""
        b, t, c, hgt, wid = video.shape
        p, tub, side = self.patch_size, self.tubelet, self.grid_side
        if hgt != side * p or wid != side * p:
            raise ValueError(f"video is {hgt}x{wid} px but the encoder expects {side * p}x{side * p} (sample.image_size)")
        if t % tub:
            raise ValueError(f"{t} frames is not a multiple of the tubelet size {tub}")
        slots = t // tub
        if slots > self.temporal_embed.shape[1]:
            raise ValueError(f"{t} frames give {slots} temporal slots, more than the {self.temporal_embed.shape[1]} the encoder has")
        # (B, T, C, H, W) -> (B, S, HW, C*tub*p*p) in the (c, t, y, x) order of a Conv3d kernel
        patches = video.view(b, slots, tub, c, side, p, side, p).permute(0, 1, 4, 6, 3, 2, 5, 7)
        patches = patches.reshape(b, slots, side * side, c * tub * p * p)
        pos = self.pos_embed[:, 1:].unsqueeze(1)  # (1, 1, HW, D)
        if keep_indices is not None:
            keep = self._keep_per_slot(keep_indices, b, slots)  # (B, S, n)
            patches = torch.gather(patches, 2, keep.unsqueeze(-1).expand(-1, -1, -1, patches.shape[-1]))
            pos = torch.gather(pos.expand(b, slots, -1, -1), 2, keep.unsqueeze(-1).expand(-1, -1, -1, self.width))
        x = torch.nn.functional.linear(patches, self.patch_embed.flatten(1), self.patch_bias)
        x = x + pos + self.temporal_embed[:, :slots].unsqueeze(2)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(b, -1, -1)
        return torch.cat([cls, x.flatten(1, 2)], dim=1), slots

    def _keep_per_slot(self, keep: torch.Tensor, b: int, slots: int) -> torch.Tensor:
        if keep.dim() == 2:  # tube: the same spatial set for every slot
            return keep.unsqueeze(1).expand(b, slots, -1)
        if self.family == "v2":
            raise ValueError("the v2 encoder needs tube masking: keep_indices of shape (B, n_keep), not (B, slots, n_keep)")
        if keep.shape[:2] != (b, slots):
            raise ValueError(f"keep_indices {tuple(keep.shape)} do not match (B={b}, slots={slots}, n_keep)")
        return keep

    def forward_features(self, video: torch.Tensor, keep_indices: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Tokens after the last block, before the final norm: (B, 1 + N_visible, D)."""
        if not video.is_floating_point():
            raise TypeError(f"the video encoder takes normalised float clips, got {video.dtype}: loader batches carry "
                            f"uint8 pixels, normalised on the device first (tvts.data.augment.normalize_video, which "
                            f"the strategies' forward runs)")
        x, slots = self.embed(video, keep_indices)
        x = self.norm_pre(x)
        for blk in self.blocks:
            x = blk(x, slots)
        return x

    def forward(self, video: torch.Tensor, keep_indices: Optional[torch.Tensor] = None) -> torch.Tensor:
        """video: (B, T, 3, H, W) float, normalised; keep_indices: (B, S, n) per-slot or (B, n) tube, int64.

        Returns (B, 1 + N_visible, D) after the final LayerNorm, CLS first.
        """
        return self.norm(self.forward_features(video, keep_indices))

    def project(self, tokens: torch.Tensor) -> torch.Tensor:
        """v2: tokens @ proj (CLIP's visual projection); v1: unchanged."""
        return tokens if self.proj is None else tokens @ self.proj
