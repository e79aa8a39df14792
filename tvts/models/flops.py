"""Analytic forward FLOPs per clip.

Convention: 1 multiply-add = 2 FLOPs; only matrix products are counted (linear layers, the patch
projection, QK^T and AV); norms, softmax, activations and residual adds are not. Masked patches are
excluded: they are never embedded. Attention counts every (query, key) pair that is computed, including
the masked half of the causal text attention. Training ~= 3x forward for the parts that get gradients.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class FlopReport:
    video: float  # FLOPs of one clip through the video encoder (+ its projection)
    text: float  # FLOPs of the clip's K transcripts (or one caption) through the text tower
    sorter: float  # FLOPs of the sort head for one clip
    heads: float  # VTC projections

    @property
    def total(self) -> float:
        return self.video + self.text + self.sorter + self.heads

    def as_dict(self) -> dict:
        return {**asdict(self), "total": self.total}


def _linear(rows: float, d_in: float, d_out: float) -> float:
    return 2.0 * rows * d_in * d_out


def _attn(q_rows: float, k_rows: float, dim: float) -> float:
    return 2.0 * 2.0 * q_rows * k_rows * dim  # QK^T and AV


def _block_linears(tokens: float, dim: int, hidden: int) -> float:
    return _linear(tokens, dim, 3 * dim) + _linear(tokens, dim, dim) + 2 * _linear(tokens, dim, hidden)


def video_flops(cfg, frames: int | None = None, mask_ratio: float | None = None) -> float:
    """Forward FLOPs of one clip through the video encoder, including the v2 projection of the tokens
    that the sorter reads."""
    v = cfg.model.video
    width, depth, _ = cfg.video_dims()
    grid = cfg.patch_grid(frames, mask_ratio)
    s, n = grid.slots, grid.keep
    length = 1 + s * n
    hidden = int(width * v.mlp_ratio)
    total = _linear(s * n, 3 * v.tubelet * v.patch_size**2, width)  # patch projection of visible patches
    for _ in range(depth):
        total += _block_linears(length, width, hidden)
        if v.family == "v1":
            total += _attn(length, length, width)
        else:
            # temporal: n groups of S queries over S+1 keys; spatial: S groups of n queries over n+1 keys;
            # CLS queries all tokens in both
            total += _linear(length, width, 3 * width) + _linear(length, width, width)  # time_attn qkv + proj
            total += _attn(1, length, width) * 2
            total += _attn(n * s, s + 1, width) + _attn(s * n, n + 1, width)
    if v.output_dim:
        rows = length if cfg.model.sort.video_tokens == "normed" else length - 1
        total += _linear(rows, width, v.output_dim)
    return total


def text_flops(cfg, num_texts: int | None = None, text_config=None) -> float:
    """Forward FLOPs of ``num_texts`` transcripts (default K) through the text tower at its full token
    length (hf: ``max_length``; clip: ``context_length``). ``text_config`` is an HF config when kind=hf
    (read from the model directory when omitted)."""
    t = cfg.model.text
    k = cfg.sample.num_windows if num_texts is None else num_texts
    if t.kind == "clip":
        length, width, layers, hidden = t.context_length, t.width, t.layers, 4 * t.width
        per = layers * (_block_linears(length, width, hidden) + _attn(length, length, width))
        per += _linear(1, width, t.output_dim)
        return k * per
    hf = text_config or _hf_config(t.path)
    width = hf.hidden_size
    layers = getattr(hf, "num_hidden_layers", None) or hf.n_layers
    hidden = getattr(hf, "intermediate_size", None) or getattr(hf, "hidden_dim", 4 * width)
    length = t.max_length
    return k * layers * (_block_linears(length, width, hidden) + _attn(length, length, width))


def _hf_config(path: str):
    from tvts.models.text import resolve_hf_path
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(resolve_hf_path(path), local_files_only=True)


def sort_blocks_flops(length: int, k: int, dim: int, hidden: int, depth: int, readout: bool = True) -> float:
    """Forward FLOPs of the sorter's ``depth`` blocks on ``length`` rows (video tokens + ``k`` transcripts).
    With the sort readout the last block computes only the ``k`` transcript rows (keys/values from every row);
    without it every block computes every row, as the official sorter does."""
    full_block = _block_linears(length, dim, hidden) + _attn(length, length, dim)
    if not readout:
        return depth * full_block
    readout_block = (_linear(length, dim, 2 * dim) + 2 * _linear(k, dim, dim) + 2 * _linear(k, dim, hidden)
                     + _attn(k, length, dim))
    return (depth - 1) * full_block + readout_block


def sorter_flops(cfg, text_dim: int) -> float:
    width, _, _ = cfg.video_dims()
    v = cfg.model.video
    dim = v.output_dim or width
    grid = cfg.patch_grid()
    k = cfg.sample.num_windows
    video_tokens = grid.visible_tokens + (1 if cfg.model.sort.video_tokens == "normed" else 0)
    hidden = int(dim * cfg.model.sort.mlp_ratio)
    total = sort_blocks_flops(video_tokens + k, k, dim, hidden, cfg.model.sort.depth)
    total += _linear(k, dim, k)  # readout
    if text_dim != dim:
        total += _linear(k, text_dim, dim)  # transcript adapter
    return total


def head_flops(cfg, text_dim: int) -> float:
    if cfg.model.vtc.projection != "linear":
        return 0.0
    width, _, _ = cfg.video_dims()
    dim = cfg.model.video.output_dim or width
    e = cfg.model.vtc.embed_dim
    return _linear(1, dim, e) + _linear(cfg.sample.num_windows, text_dim, e)


def flops(cfg, text_config=None) -> FlopReport:
    """Forward FLOPs per transcript clip (K windows, training mask ratio) for every part of the model."""
    t = cfg.model.text
    if t.kind == "clip":
        text_dim = t.output_dim
    else:
        text_dim = (text_config or _hf_config(t.path)).hidden_size
    return FlopReport(
        video=video_flops(cfg),
        text=text_flops(cfg, text_config=text_config),
        sorter=sorter_flops(cfg, text_dim),
        heads=head_flops(cfg, text_dim),
    )
