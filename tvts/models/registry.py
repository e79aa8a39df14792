"""ViT sizes as data: one encoder implementation, many sizes (timm / open_clip naming).

``nano`` and ``micro`` are ours, for CPU demos and scaling-law smoke grids.
"""
from __future__ import annotations

# name: (width, depth, heads)
VIT_SIZES: dict[str, tuple[int, int, int]] = {
    "atto": (64, 2, 2),
    "nano": (128, 4, 4),
    "micro": (192, 6, 4),
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
    "huge": (1280, 32, 16),
}


def resolve_vit(video_cfg) -> tuple[int, int, int]:
    """(width, depth, heads) for a :class:`tvts.config.VideoConfig`; explicit non-zero fields win."""
    base = VIT_SIZES.get(video_cfg.size, (0, 0, 0))
    width = video_cfg.width or base[0]
    depth = video_cfg.depth or base[1]
    heads = video_cfg.heads or base[2]
    return width, depth, heads
