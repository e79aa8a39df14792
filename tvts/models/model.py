"""The TVTS / TVTSv2 pre-training model: video encoder + text encoder + sort head + VTC heads + losses."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, Optional

import torch
import torch.nn as nn

from tvts.models.losses import sort_accuracy, sort_loss, vtc_loss
from tvts.models.sort_head import SortHead
from tvts.models.video import VideoEncoder


@dataclass
class TVTSOutput:
    """What one forward pass returns. Sort fields are None for caption (VTC-only) batches."""

    loss: torch.Tensor  # vtc_weight * loss_vtc + sort_weight * loss_sort
    loss_vtc: torch.Tensor
    loss_sort: Optional[torch.Tensor] = None
    sort_logits: Optional[torch.Tensor] = None  # (B, K, K): row i = slot logits of presented transcript i
    sort_acc: Optional[torch.Tensor] = None  # fraction of transcripts placed in their true slot
    sort_acc_all: Optional[torch.Tensor] = None  # fraction of clips with all K transcripts right (official metric)
    video_embed: Optional[torch.Tensor] = None  # (B, E) VTC video embedding (before normalisation)
    text_embed: Optional[torch.Tensor] = None  # (B, E) VTC text embedding (mean over the K transcripts)


class TVTSModel(nn.Module):
    """Modules: ``video`` (VideoEncoder), ``text`` (TextEncoder), ``sorter`` (SortHead), ``video_head`` and
    ``text_head`` (v1's VTC projections; Identity when the towers end in their own projection, v2)."""

    def __init__(self, cfg, text_encoder: Optional[nn.Module] = None, pretrained_text: bool = True):
        super().__init__()
        from tvts.models.text import build_text_encoder

        m = cfg.model
        self.num_windows = cfg.sample.num_windows
        self.sort_weight, self.vtc_weight = m.sort_weight, m.vtc_weight
        self.temperature = m.vtc.temperature
        # with caption data every step's graph holds every trainable parameter (see SortHead.forward(None))
        self.has_captions = bool(cfg.data.captions)
        self.sort_video_tokens = m.sort.video_tokens
        self.video = VideoEncoder(cfg)
        self.text = text_encoder if text_encoder is not None else build_text_encoder(cfg, pretrained=pretrained_text)
        text_dim = self.text.output_dim
        if m.vtc.projection == "linear":
            # official v1: vid_proj = Linear(768 -> 256); txt_proj = Sequential(ReLU, Linear(768 -> 256))
            self.video_head = nn.Linear(self.video.output_dim, m.vtc.embed_dim)
            self.text_head = nn.Sequential(nn.ReLU(), nn.Linear(text_dim, m.vtc.embed_dim))
        else:
            self.video_head = nn.Identity()
            self.text_head = nn.Identity()
        self.sorter = SortHead(self.video.output_dim, text_dim, self.num_windows, m.sort.depth, m.sort.heads,
                               m.sort.mlp_ratio, m.sort.transcript_norm)

    def reset_parameters(self) -> None:
        """Initialise every weight and buffer as construction does; after ``to_empty`` from the meta device
        (deferred initialisation, also on sharded DTensors)."""
        for _, init in self.init_units():
            init()

    def init_units(self) -> list[tuple[list[nn.Parameter], Callable[[], None]]]:
        """(parameters, init) units covering the whole model, each small (a block, the sorter, the heads):
        ZeRO-3 gathers one unit's parameters at a time around its init (tvts.engine.sharded)."""
        units = []
        for tower in (self.video, self.text):
            if not hasattr(tower, "init_units"):
                raise NotImplementedError(f"{type(tower).__name__} cannot be initialised after a deferred build")
            units += tower.init_units()
        for part in (self.video_head, self.text_head, self.sorter):
            units.append((list(part.parameters()), partial(_reset_leaves, part)))
        return units

    def new_modules(self) -> list[nn.Module]:
        """Modules trained from scratch in TVTSv2 (lr 1e-4): temporal attention + its norm, the sorter,
        and v1-style VTC heads when present."""
        mods = self.video.new_modules() + [self.sorter]
        mods += [m for m in (self.video_head, self.text_head) if any(True for _ in m.parameters())]
        return mods

    def encode_text(self, tokens: dict) -> torch.Tensor:
        """(N, L) token dicts -> (N, Dt) transcript vectors (v2: CLIP EOT @ text_projection)."""
        return self.text(tokens)

    def encode_video(self, video: torch.Tensor, keep_indices: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (VTC video embedding (B, E), tokens for the sorter (B, N, D_sort))."""
        feats = self.video.forward_features(video, keep_indices)
        normed = self.video.norm(feats)
        tokens = self.video.project(normed)
        if self.sort_video_tokens == "patches_unnormed":
            sort_tokens = self.video.project(feats[:, 1:])  # official H/14: no ln_post, no CLS
        else:
            sort_tokens = tokens
        return self.video_head(tokens[:, 0]), sort_tokens

    def forward(self, video: torch.Tensor, text: dict, labels: Optional[torch.Tensor] = None,
                keep_indices: Optional[torch.Tensor] = None) -> TVTSOutput:
        """One masked forward pass for both losses.

        Args:
            video: (B, T, 3, H, W) float, normalised, frames in chronological order.
            text: token dict, tensors (B * K, L), sample-major: rows b*K .. b*K+K-1 are clip b's
                transcripts in the order presented (shuffled by the data side). K = 1 for captions.
            labels: (B, K) int64, the true chronological slot of each presented transcript; None for
                caption batches (VTC only).
            keep_indices: (B, S, n) per-slot (v1 random masking) or (B, n) tube; None = no masking.
        """
        b = video.shape[0]
        video_embed, sort_tokens = self.encode_video(video, keep_indices)
        vectors = self.encode_text(text)
        k = vectors.shape[0] // b
        # official v1/v2: project each transcript, then average the K projections (before normalising)
        text_embed = self.text_head(vectors).view(b, k, -1).mean(1)
        loss_vtc = vtc_loss(video_embed, text_embed, self.temperature)
        out = TVTSOutput(loss=self.vtc_weight * loss_vtc, loss_vtc=loss_vtc, video_embed=video_embed, text_embed=text_embed)
        if labels is None:
            if self.has_captions:  # the sorter sits out caption steps: zero gradients for it, not none
                out.loss = out.loss + self.sorter(None)
            return out
        if k != self.num_windows:
            raise ValueError(f"got {k} transcripts per clip but sample.num_windows = {self.num_windows}")
        # stop-gradient: the sort loss never reaches the text tower (official .detach())
        logits = self.sorter(sort_tokens, vectors.detach().view(b, k, -1))
        out.loss_sort = sort_loss(logits, labels)
        out.loss = out.loss + self.sort_weight * out.loss_sort
        out.sort_logits = logits
        out.sort_acc, out.sort_acc_all = sort_accuracy(logits, labels)
        return out


def _reset_leaves(module: nn.Module) -> None:
    """Every ``reset_parameters`` inside ``module``: torch's init of its layers, the sort head's own tensors."""
    for m in module.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()


def build_model(cfg, pretrained_text: bool = True) -> TVTSModel:
    """The full pre-training model for a :class:`tvts.config.Config` (text weights from disk unless
    ``pretrained_text=False``; build under ``torch.device('meta')`` to count without memory)."""
    return TVTSModel(cfg, pretrained_text=pretrained_text)


def build_video_encoder(cfg) -> VideoEncoder:
    return VideoEncoder(cfg)
