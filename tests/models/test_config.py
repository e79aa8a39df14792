from pathlib import Path

import pytest

from tvts import config

# pre-training recipes; configs/finetune_*.yaml are fine-tuning recipes (tvts.eval.finetune.load_recipe)
CONFIGS = sorted(p for p in Path(__file__).resolve().parents[2].joinpath("configs").glob("*.yaml")
                 if not p.name.startswith("finetune_"))


def test_shipped_configs_load():
    names = {p.stem for p in CONFIGS}
    assert {"demo", "tvts_v1_vit_b16", "tvtsv2_vit_b32", "tvtsv2_vit_b16", "tvtsv2_vit_h14", "tvts_vit_l14"} <= names
    for path in CONFIGS:
        cfg = config.load(path)
        assert cfg.name == path.stem
    from tvts.eval.finetune import load_recipe

    for path in sorted(CONFIGS[0].parent.glob("finetune_*.yaml")):
        assert load_recipe(path, []).name == path.stem


@pytest.mark.parametrize("override,message", [
    ("model.vdeo.depth=3", "model.vdeo.depth: unknown key; did you mean model.video.depth?"),
    ("model.video.dpth=3", "model.video.dpth: unknown key; did you mean model.video.depth?"),
    ("model.video.depth=deep", "model.video.depth: expected an integer, got 'deep'"),
    ("sample.mask_ratio=1.5", "sample.mask_ratio: 1.5 is out of range [0.0, 0.99]"),
    ("train.strategy=zero4", "train.strategy: 'zero4' is not one of single, ddp, fsdp, zero1, zero2, zero3; did you mean zero3?"),
    ("model.video.size=hueg", "model.video.size: unknown size 'hueg'; did you mean huge?"),
    ("optim.decay_at=[0.5,1.5]", "optim.decay_at: expected fractions of the run in (0, 1), got [0.5, 1.5]"),
    ("model.text.cache=true", "model.text.cache: caching embeddings needs a frozen text tower; set model.text.frozen=true"),
    ("sample.image_size=100", "sample.image_size: 100 is not a multiple of model.video.patch_size=16"),
])
def test_errors_name_the_key(override, message):
    with pytest.raises(config.ConfigError) as err:
        config.load(None, [override])
    assert str(err.value) == message
    assert "\n" not in str(err.value)


def test_v2_needs_tube_masks_and_tubelet_1():
    with pytest.raises(config.ConfigError, match="^model.video.tubelet:"):
        config.load(None, ["model.video.family=v2"])
    with pytest.raises(config.ConfigError, match="^sample.mask:"):
        config.load(None, ["model.video.family=v2", "model.video.tubelet=1", "sample.mask_ratio=0.5"])


def test_overrides_are_typed():
    cfg = config.load("configs/demo.yaml", ["optim.lr=3e-4", "optim.betas=[0.8, 0.9]", "model.video.temporal_embed_std=null",
                                            "train.steps=7", "data.train=shards/{000..003}.tar", "data.synthetic_stream=false"])
    assert cfg.optim.lr == 3e-4 and cfg.optim.betas == [0.8, 0.9]
    assert cfg.model.video.temporal_embed_std is None and cfg.train.steps == 7
    assert cfg.data.train == ["shards/{000..003}.tar"]


def test_list_overrides_keep_brace_patterns_and_bad_values_are_errors():
    """YAML reads `[dir/shard-{000000..000003}.tar]` as a flow list holding a mapping and fails: the override is
    the list of its items (commas inside braces belong to the pattern); other unreadable values are errors."""
    cfg = config.load("configs/demo.yaml", ["data.synthetic_stream=false",
                                            "data.train=[dir/shard-{000000..000003}.tar, http://h:8000/s-{a,b}.tar]"])
    assert cfg.data.train == ["dir/shard-{000000..000003}.tar", "http://h:8000/s-{a,b}.tar"]
    cfg = config.load("configs/demo.yaml", ["data.synthetic_stream=false", "data.val=[pipe:cat x-{0..1}.tar]"])
    assert cfg.data.val == ["pipe:cat x-{0..1}.tar"]
    with pytest.raises(config.ConfigError, match=r"^name: cannot read 'a: b: c'"):
        config.load("configs/demo.yaml", ["name=a: b: c"])
    with pytest.raises(config.ConfigError, match=r"^data.train: cannot read .* as a list"):
        config.load("configs/demo.yaml", ["data.train=[dir/{a,b.tar]"])


def test_patch_grid_is_the_one_source():
    """Keep counts as the official code computes them: v1 49 of 196 per slot, v2 B/16 98, H/14 76."""
    assert config.load("configs/tvts_v1_vit_b16.yaml").patch_grid() == config.PatchGrid(8, 196, 49, 14)
    assert config.load("configs/tvtsv2_vit_b16.yaml").patch_grid().keep == 98
    assert config.load("configs/tvtsv2_vit_h14.yaml").patch_grid().keep == 76
    assert config.load("configs/tvtsv2_vit_h14.yaml").patch_grid().visible_tokens == 912


def test_bad_files(tmp_path):
    with pytest.raises(config.ConfigError, match="config file not found"):
        config.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1, 2\n")
    with pytest.raises(config.ConfigError, match="bad.yaml line"):
        config.load(bad)
