"""Keep indices: shapes from the config's PatchGrid, sorted unique subsets, random per slot vs tube."""
import pytest
import torch

from tvts import config
from tvts.data.masking import keep_indices
from tvts.models.video import VideoEncoder

V2_TUBE = ["model.video.family=v2", "model.video.tubelet=1", "sample.mask=tube", "sample.mask_ratio=0.5",
           "sample.frames_per_window=3"]


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_random_v1_official_geometry():
    grid = config.load().patch_grid()  # 16 frames, tubelet 2, 224 / 16, ratio 0.75
    assert (grid.slots, grid.patches_per_slot, grid.keep) == (8, 196, 49)
    keep = keep_indices(grid, "random", True, gen(0))
    assert keep.shape == (8, 49) and keep.dtype == torch.int64
    assert int(keep.min()) >= 0 and int(keep.max()) < 196
    for row in keep:
        assert torch.equal(row, row.unique())  # sorted ascending, no repeats
    assert len({tuple(row.tolist()) for row in keep}) == 8  # an independent subset per slot


def test_tube_v2_geometry():
    grid = config.load(None, V2_TUBE).patch_grid()  # 12 frames, 196 patches, half kept
    keep = keep_indices(grid, "tube", True, gen(0))
    assert keep.shape == (grid.keep,) == (98,)
    assert torch.equal(keep, keep.unique())


@pytest.mark.parametrize("kind", ["random", "tube"])
def test_seeded_generator_is_deterministic(kind):
    grid = config.load().patch_grid()
    assert torch.equal(keep_indices(grid, kind, True, gen(5)), keep_indices(grid, kind, True, gen(5)))
    assert not torch.equal(keep_indices(grid, kind, True, gen(5)), keep_indices(grid, kind, True, gen(6)))


def test_random_covers_patches_uniformly():
    grid = config.load().patch_grid()
    g = gen(0)
    counts = torch.bincount(torch.cat([keep_indices(grid, "random", True, g).flatten() for _ in range(100)]), minlength=196)
    expected = 100 * 8 * 49 / 196  # 200 per patch
    assert counts.min() > 0.6 * expected and counts.max() < 1.4 * expected


def test_no_masking_returns_none():
    grid = config.load().patch_grid()
    assert keep_indices(grid, "random", mask_ratio_applied=False) is None
    assert keep_indices(config.load(None, ["sample.mask_ratio=0"]).patch_grid(), "tube") is None
    with pytest.raises(ValueError, match="random' or 'tube"):
        keep_indices(grid, "block")


@pytest.mark.parametrize("family", ["v1", "v2"])
def test_batched_indices_fit_the_encoder(tiny_overrides, family):
    extra = ["model.video.family=v2", "model.video.tubelet=1", "sample.mask=tube"] if family == "v2" else []
    cfg = config.load(None, tiny_overrides + ["sample.mask_ratio=0.5"] + extra)
    grid = cfg.patch_grid()
    keep = torch.stack([keep_indices(grid, cfg.sample.mask, True, gen(i)) for i in range(2)])  # default collate
    tokens = VideoEncoder(cfg)(torch.randn(2, cfg.sample.frames, 3, 32, 32), keep)
    assert tokens.shape[1] == 1 + grid.visible_tokens
