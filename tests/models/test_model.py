import pytest
import torch

from tvts import config
from tvts.models import TVTSModel, build_model, param_groups
from tvts.models.text import build_text_encoder

CLIP_TEXT = ["model.text.kind=clip", "model.text.width=32", "model.text.layers=3", "model.text.heads=2",
             "model.text.output_dim=24", "model.text.context_length=16"]
V2 = ["model.video.family=v2", "model.video.tubelet=1", "sample.mask=tube", "model.video.output_dim=24",
      "model.vtc.projection=none", "sample.mask_ratio=0.5"]


def _model(tiny_overrides, *extra):
    cfg = config.load(None, tiny_overrides + CLIP_TEXT + list(extra))
    torch.manual_seed(0)
    return cfg, TVTSModel(cfg, text_encoder=build_text_encoder(cfg, pretrained=False))


def _batch(cfg, b=3, k=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    k = cfg.sample.num_windows if k is None else k
    ids = torch.randint(1, 49000, (b * k, 16), generator=g)
    ids[:, 10] = 49407
    ids[:, 11:] = 0
    mask = torch.zeros_like(ids)
    mask[:, :11] = 1
    labels = torch.stack([torch.randperm(k, generator=g) for _ in range(b)])
    return torch.randn(b, cfg.sample.frames, 3, 32, 32, generator=g), {"input_ids": ids, "attention_mask": mask}, labels


@pytest.mark.parametrize("family", ["v1", "v2"])
def test_forward_outputs(tiny_overrides, family):
    cfg, model = _model(tiny_overrides, *(V2 if family == "v2" else []))
    video, text, labels = _batch(cfg)
    out = model(video, text, labels)
    assert out.sort_logits.shape == (3, 4, 4)
    assert torch.allclose(out.loss, out.loss_vtc + 2.0 * out.loss_sort)
    assert 0.0 <= out.sort_acc.item() <= 1.0
    assert out.video_embed.shape == out.text_embed.shape


def test_caption_batches_give_vtc_only(tiny_overrides):
    cfg, model = _model(tiny_overrides)
    video, text, _ = _batch(cfg, k=1)
    out = model(video[:, :cfg.sample.caption_frames], text)
    assert out.loss_sort is None and out.sort_logits is None
    assert torch.equal(out.loss, out.loss_vtc)


def test_sort_loss_never_reaches_the_text_tower(tiny_overrides):
    cfg, model = _model(tiny_overrides)
    video, text, labels = _batch(cfg)
    out = model(video, text, labels)
    out.loss_sort.backward()
    text_grads = [p.grad for p in model.text.parameters() if p.grad is not None]
    assert all(torch.count_nonzero(g) == 0 for g in text_grads)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.video.parameters())
    model.zero_grad()
    model(video, text, labels).loss_vtc.backward()  # VTC does train it
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.text.parameters())


def test_shuffled_transcripts_with_permuted_labels_give_the_same_loss(tiny_overrides):
    """Order-blind transcript slots: presenting transcripts in another order (labels permuted to match)
    changes nothing but the row order of the logits."""
    cfg, model = _model(tiny_overrides)
    model.eval()
    video, text, labels = _batch(cfg, b=1)
    perm = torch.tensor([3, 1, 0, 2])
    text2 = {k: v[perm] for k, v in text.items()}
    a, b = model(video, text, labels), model(video, text2, labels[:, perm])
    assert torch.allclose(a.loss_sort, b.loss_sort, atol=1e-5)
    assert torch.allclose(a.sort_logits[:, perm], b.sort_logits, atol=1e-5)


def _group_of(groups, param):
    return [g["name"] for g in groups if any(p is param for p in g["params"])]


def test_degeneration_free_groups(tiny_overrides):
    cfg, model = _model(tiny_overrides, *V2, "model.text.frozen_layers=2", "optim.groups=degeneration_free",
                        "optim.weight_decay=0.05")
    groups = param_groups(model, cfg.optim, compat=False)
    by_name = {g["name"]: g for g in groups}
    assert by_name["new"]["lr"] == 1e-4 and by_name["pretrained"]["lr"] == 1e-7
    assert by_name["new_no_decay"]["weight_decay"] == 0.0 and by_name["new"]["weight_decay"] == 0.05
    blocks = model.text.transformer.resblocks
    frozen = [p for blk in blocks[:2] for p in blk.parameters()]
    assert all(not p.requires_grad for p in frozen)
    assert all(_group_of(groups, p) == [] for p in frozen)  # frozen: in no group
    assert _group_of(groups, blocks[2].attn.in_proj_weight) == ["pretrained"]
    assert _group_of(groups, model.text.text_projection) == ["pretrained"]
    blk = model.video.blocks[0]
    assert _group_of(groups, blk.time_attn.qkv.weight) == ["new"]
    assert _group_of(groups, blk.time_norm.weight) == ["new_no_decay"]
    assert _group_of(groups, blk.attn.qkv.weight) == ["pretrained"]
    assert _group_of(groups, blk.attn.qkv.bias) == ["pretrained_no_decay"]
    assert _group_of(groups, model.sorter.head.weight) == ["new"]
    assert _group_of(groups, model.video.temporal_embed) == ["new"]
    compat = param_groups(model, cfg.optim, compat=True)
    assert _group_of(compat, model.video.temporal_embed) == ["pretrained"]  # the official quirk
    n_trainable = sum(p.requires_grad for p in model.parameters())
    assert sum(len(g["params"]) for g in groups) == n_trainable


def test_uniform_groups(tiny_overrides):
    cfg, model = _model(tiny_overrides)
    groups = param_groups(model, cfg.optim)
    assert {g["name"] for g in groups} == {"all", "all_no_decay"}
    assert all(g["lr"] == cfg.optim.lr for g in groups)


def test_demo_model_builds_with_real_minilm():
    cfg = config.load("configs/demo.yaml")
    model = build_model(cfg)
    assert model.text.output_dim == 384 and model.text.cache is not None
    assert not any(p.requires_grad for p in model.text.parameters())
