"""Which patches the video encoder sees (method §2.1 step 8).

The geometry (temporal slots, patches per slot, patches kept) comes only from
:meth:`tvts.config.Config.patch_grid`, the same object the model reads, so the data side and the
model cannot disagree on the mask ratio (the official code sets it twice and v1 hard-codes 196/8/0.75).
"""
from __future__ import annotations

from typing import Literal, Optional

import torch

from tvts.config import PatchGrid


def keep_indices(grid: PatchGrid, kind: Literal["random", "tube"], mask_ratio_applied: bool = True,
                 generator: Optional[torch.Generator] = None) -> Optional[torch.Tensor]:
    """Indices of the visible patches of one clip, int64, ascending within a slot.

    random: (grid.slots, grid.keep), an independent subset per temporal slot (v1 / TVTS).
    tube:   (grid.keep,), one subset shared by every frame (v2 / TVTSv2; its temporal attention
            pairs the n-th kept patch of every frame, so the set must be the same everywhere).

    Returns None when nothing is masked (``mask_ratio_applied`` is False, or the grid keeps every
    patch): the model then takes its no-mask path with no gather. Spatial indices run over
    ``grid.patches_per_slot`` in row-major order; ascending order does not change the model's
    output (position embeddings are added before the gather) and gathers memory in order.
    """
    if kind not in ("random", "tube"):
        raise ValueError(f"mask kind must be 'random' or 'tube', got {kind!r}")
    if not mask_ratio_applied or grid.keep >= grid.patches_per_slot:
        return None
    rows = grid.slots if kind == "random" else 1
    scores = torch.rand(rows, grid.patches_per_slot, generator=generator)
    keep = scores.topk(grid.keep, dim=1, largest=False, sorted=False).indices.sort(dim=1).values
    return keep if kind == "random" else keep[0]
