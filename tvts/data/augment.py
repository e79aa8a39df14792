"""Video augmentation on uint8 tensors (method §2.3).

Train and eval share one recipe: resize the short side to ``resize_short`` (official: int(224 * 1.2)
= 268, bilinear), take ONE ``image_size`` crop shared by every frame (random in train, centred in
eval), scale to [0, 1] and normalise. There is no flip and no colour jitter, as in the official code.

The official path converts every frame to PIL, resizes frame by frame and builds a float64 array
(ClipToTensor). Here the resize is one antialiased bilinear call on the uint8 batch (torch's uint8
kernel is about 10x faster than the float one), the crop is a view, and only the crop is converted
to float32, with scale and shift fused into two in-place ops.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

# (mean, std) per channel, RGB, for pixels in [0, 1]. The official code uses ImageNet's even for the
# CLIP-initialised v2 models; keep "imagenet" to match its checkpoints.
NORMALIZE_STATS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
}


def resized_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) after scaling the short side to ``short_side``.

    The long side is truncated, as the official ``resize_clip`` does (``int(size * long / short)``).
    """
    if height <= width:
        return short_side, int(short_side * width / height)
    return int(short_side * height / width), short_side


def center_offset(size: int, crop: int) -> int:
    """Top/left offset of a centred crop, rounded as the official CenterCrop does."""
    return int(round((size - crop) / 2.0))


def crop_offsets(height: int, width: int, image_size: int, train: bool,
                 generator: Optional[torch.Generator] = None) -> tuple[int, int]:
    """(top, left) of the ``image_size`` crop of a (height, width) frame: drawn from ``generator`` in
    train (uniform over every valid position), centred in eval. The DALI path uses the same offsets."""
    if height < image_size or width < image_size:
        raise ValueError(f"cannot crop {image_size}x{image_size} from a {height}x{width} frame")
    if train:
        top = int(torch.randint(0, height - image_size + 1, (1,), generator=generator))
        left = int(torch.randint(0, width - image_size + 1, (1,), generator=generator))
        return top, left
    return center_offset(height, image_size), center_offset(width, image_size)


def resize_short_side(video: torch.Tensor, short_side: int) -> torch.Tensor:
    """Resize (T, 3, H, W) uint8 frames so the short side is ``short_side``: bilinear, antialiased, one call.

    Returns the input unchanged when it already has that short side.
    """
    _, _, height, width = video.shape
    size = resized_size(height, width, short_side)
    if size == (height, width):
        return video
    return F.interpolate(video, size=size, mode="bilinear", antialias=True, align_corners=False)


def augment_video(video: torch.Tensor, image_size: int, resize_short: int, normalize: str = "imagenet",
                  train: bool = False, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Resize, crop and normalise one clip.

    video: (T, 3, H, W) uint8 RGB (any memory layout, e.g. the channels-last view that
    :func:`tvts.data.decode.decode_frames` returns). Train crops at a position drawn from
    ``generator``; eval crops the centre. Returns (T, 3, image_size, image_size) float32, contiguous.
    """
    if video.dtype != torch.uint8 or video.dim() != 4 or video.shape[1] != 3:
        raise ValueError(f"augment_video expects (T, 3, H, W) uint8 frames, got {tuple(video.shape)} {video.dtype}")
    if normalize not in NORMALIZE_STATS:
        raise ValueError(f"normalize must be one of {', '.join(NORMALIZE_STATS)}, got {normalize!r}")
    if resize_short < image_size:
        raise ValueError(f"resize_short={resize_short} is smaller than the crop image_size={image_size}")
    video = resize_short_side(video, resize_short)
    top, left = crop_offsets(video.shape[2], video.shape[3], image_size, train, generator)
    crop = video[:, :, top:top + image_size, left:left + image_size]
    mean, std = NORMALIZE_STATS[normalize]
    # (x / 255 - mean) / std == x * scale - shift, computed on the crop only
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], dtype=torch.float32, device=video.device).view(1, 3, 1, 1)
    shift = torch.tensor([m / s for m, s in zip(mean, std)], dtype=torch.float32, device=video.device).view(1, 3, 1, 1)
    out = crop.to(torch.float32, memory_format=torch.contiguous_format)
    return out.mul_(scale).sub_(shift)
