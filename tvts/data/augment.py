"""Video augmentation on uint8 tensors (method §2.3).

Train and eval share one recipe: resize the short side to ``resize_short`` (official: int(224 * 1.2)
= 268, bilinear), take ONE ``image_size`` crop shared by every frame (random in train, centred in
eval), scale to [0, 1] and normalise. There is no flip and no colour jitter, as in the official code.

The official path converts every frame to PIL, resizes frame by frame and builds a float64 array
(ClipToTensor). Here the resize is one antialiased bilinear call on the uint8 batch (torch's uint8
kernel is about 10x faster than the float one), the crop is a view, and only the crop is converted
to float32, with scale and shift fused into two in-place ops.

Every step before the normalisation is integer-exact (uint8 in, uint8 out: the resize is torch's uint8
kernel, the crop a view), so the two halves split cleanly: :func:`crop_video` is what loader workers run
and ship (uint8, a quarter of float32's bytes), :func:`normalize_video` is what the consumer runs once the
clips are on the device (the strategies' ``forward`` does, :class:`tvts.engine.strategies.Strategy`). The
split path gives the bits of :func:`augment_video` (= the two in a row) wherever the normalisation runs:
it is one element-wise multiply and one subtract in float32 on the same values.
"""
from __future__ import annotations

import functools
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


def crop_video(video: torch.Tensor, image_size: int, resize_short: int, train: bool = False,
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Resize and crop one clip, still uint8: the part of :func:`augment_video` before the normalisation.

    video: (T, 3, H, W) uint8 RGB, as :func:`augment_video` takes it. Returns the (T, 3, image_size,
    image_size) uint8 crop, a view of the resized frames (stack it, or ``.contiguous()`` it, before sending
    it to another process); :func:`normalize_video` of it is :func:`augment_video`'s result, bit for bit.
    """
    _check(video, image_size, resize_short, "imagenet", "crop_video")
    return _crop(video, image_size, resize_short, train, generator)


def _check(video: torch.Tensor, image_size: int, resize_short: int, normalize: str, caller: str) -> None:
    """The checks of :func:`augment_video` and :func:`crop_video` on their arguments (ValueError, one line)."""
    if video.dtype != torch.uint8 or video.dim() != 4 or video.shape[1] != 3:
        raise ValueError(f"{caller} expects (T, 3, H, W) uint8 frames, got {tuple(video.shape)} {video.dtype}")
    if normalize not in NORMALIZE_STATS:
        raise ValueError(f"normalize must be one of {', '.join(NORMALIZE_STATS)}, got {normalize!r}")
    if resize_short < image_size:
        raise ValueError(f"resize_short={resize_short} is smaller than the crop image_size={image_size}")


def _crop(video: torch.Tensor, image_size: int, resize_short: int, train: bool,
          generator: Optional[torch.Generator]) -> torch.Tensor:
    video = resize_short_side(video, resize_short)
    top, left = crop_offsets(video.shape[2], video.shape[3], image_size, train, generator)
    return video[:, :, top:top + image_size, left:left + image_size]


@functools.lru_cache(maxsize=None)
def _scale_shift(normalize: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift), each (3, 1, 1) float32 on ``device``: made once per device (a tensor built from a
    Python list on a GPU is a blocking copy from pageable memory; these are only ever read)."""
    mean, std = NORMALIZE_STATS[normalize]
    with torch.inference_mode(False):  # usable outside inference mode too, whichever mode asked first
        scale = torch.tensor([1.0 / (255.0 * s) for s in std], dtype=torch.float32, device=device).view(3, 1, 1)
        shift = torch.tensor([m / s for m, s in zip(mean, std)], dtype=torch.float32, device=device).view(3, 1, 1)
    return scale, shift


def normalize_video(video: torch.Tensor, normalize: str = "imagenet") -> torch.Tensor:
    """uint8 pixels (..., 3, H, W), any leading dims (a clip, a batch of clips or of views), on any device
    -> float32 (x / 255 - mean) / std, contiguous, on the same device. Exactly :func:`augment_video`'s
    arithmetic: ``x * scale - shift`` as one multiply and one subtract in float32."""
    if video.dtype != torch.uint8 or video.dim() < 3 or video.shape[-3] != 3:
        raise ValueError(f"normalize_video expects (..., 3, H, W) uint8 pixels, got {tuple(video.shape)} {video.dtype}")
    if normalize not in NORMALIZE_STATS:
        raise ValueError(f"normalize must be one of {', '.join(NORMALIZE_STATS)}, got {normalize!r}")
    # (x / 255 - mean) / std == x * scale - shift, computed on the crop only
    scale, shift = _scale_shift(normalize, video.device)
    out = video.to(torch.float32, memory_format=torch.contiguous_format)
    return out.mul_(scale).sub_(shift)


def augment_video(video: torch.Tensor, image_size: int, resize_short: int, normalize: str = "imagenet",
                  train: bool = False, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Resize, crop and normalise one clip: :func:`normalize_video` of :func:`crop_video`.

    video: (T, 3, H, W) uint8 RGB (any memory layout, e.g. the channels-last view that
    :func:`tvts.data.decode.decode_frames` returns). Train crops at a position drawn from
    ``generator``; eval crops the centre. Returns (T, 3, image_size, image_size) float32, contiguous.
    """
    _check(video, image_size, resize_short, normalize, "augment_video")
    return normalize_video(_crop(video, image_size, resize_short, train, generator), normalize)
