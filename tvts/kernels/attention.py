"""One attention function for the video encoder, the sorter and the text towers.

Backends (``train.attention`` picks one; ``auto`` chooses per call):

* ``triton``: the project's flash attention (:mod:`tvts.kernels.triton_attention`), CUDA, or CPU under
  ``TRITON_INTERPRET=1`` (tests only: ~1000x slower than sdpa). Non-causal, head dim <= 128.
* ``flash_attn``: the flash-attn package (``flash_attn_func``; ``flash_attn_varlen_func`` over the valid
  keys when a key padding mask is given), when installed. CUDA, fp16/bf16, head dim a multiple of 8 <= 256.
* ``xformers``: ``xformers.ops.memory_efficient_attention``, when installed. CUDA, non-causal.
* ``sdpa``: ``F.scaled_dot_product_attention`` (flash / cuDNN / memory-efficient kernels on GPUs, the
  CPU flash kernel here). Runs everything; the last resort of every fallback.
* ``math``: the reference, explicit softmax(QK^T)V in fp32.

Every backend has the same semantics: q (B, H, Lq, D), k and v (B, H, Lk, D), Lq may differ from Lk;
``key_padding_mask`` (B, Lk) bool, True where the key is valid; a query row without any valid key gets
zeros (what sdpa does). A backend that is missing or refuses the inputs is replaced by the next choice
(explicit backends: by sdpa) with one log line per reason. A Triton kernel that fails to build (compile
error, out of shared memory, an unsupported GPU) does not end the run: the call runs sdpa instead, one
warning is logged, and the failed variant (dtype, head dim, padding, tiles) is refused from then on,
never retried (inside the ops, :mod:`tvts.kernels.triton_attention`, so ``torch.compile``d blocks, which
do not re-enter this dispatch, fall back too).

``auto`` (rules in :func:`auto_order`, first backend that accepts the call wins):

=============================================  =====================================================
case                                           order
=============================================  =====================================================
not CUDA (CPU development, CI)                 sdpa
CUDA fp32, or causal (CLIP text tower)         sdpa (flash_attn first when causal in fp16/bf16)
CUDA fp16/bf16 with a key padding mask         triton, flash_attn, xformers, sdpa
CUDA fp16/bf16, Lq <= 16                       triton, sdpa (v2 temporal, CLS query, sort readout)
CUDA fp16/bf16, otherwise                      flash_attn, sdpa
=============================================  =====================================================

Why: sdpa with a boolean mask leaves its flash kernel, while ours applies the padding inside the
streaming loop; FA2-style kernels tile queries by 64-128 rows, ours by 16 when the query is 1-16 long.
These two rules are reasoned, not measured (no GPU was available when they were written): compare the
backends' rows of ``launch/bench_kernels.py`` on a GPU, and change them here.
"""
from __future__ import annotations

import importlib.util
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from tvts.kernels.notes import note_once

BACKENDS = ("auto", "triton", "flash_attn", "xformers", "sdpa", "math")
_default_backend = "auto"


def set_default_backend(name: str) -> None:
    """Backend used when a call passes ``backend=None`` (the engine sets it from ``train.attention``)."""
    global _default_backend
    if name not in BACKENDS:
        raise ValueError(f"attention backend {name!r}: expected one of {', '.join(BACKENDS)}")
    _default_backend = name


def _allowed(key_padding_mask, causal, lq, lk, device) -> Optional[torch.Tensor]:
    """Bool mask broadcastable to (B, H, Lq, Lk), True where a query may attend a key; None = all."""
    allowed = None
    if key_padding_mask is not None:
        allowed = key_padding_mask[:, None, None, :]
    if causal:
        tri = torch.ones(lq, lk, dtype=torch.bool, device=device).tril(lk - lq)
        allowed = tri if allowed is None else allowed & tri
    return allowed


def attention_reference(q, k, v, key_padding_mask=None, scale=None, causal=False):
    """softmax(q k^T * scale, masked) v in fp32 with explicit tensors; rows without a valid key give 0."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = torch.matmul(q.float(), k.float().transpose(-2, -1)) * scale
    allowed = _allowed(key_padding_mask, causal, q.shape[-2], k.shape[-2], q.device)
    if allowed is None:
        return torch.matmul(scores.softmax(dim=-1), v.float()).to(q.dtype)
    # a finite fill (not -inf) keeps a row without keys finite in forward and backward; it is zeroed below
    probs = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min).softmax(dim=-1)  # bf16 under autocast
    probs = probs * allowed.any(-1, keepdim=True)
    return torch.matmul(probs, v.float()).to(q.dtype)


# -- backends: each has a refusal check (None = can run) and a runner ---------------------------------

def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _refuse_sdpa(q, k, v, key_padding_mask, causal) -> Optional[str]:
    return None


def _run_sdpa(q, k, v, key_padding_mask, scale, causal):
    mask = None
    if key_padding_mask is not None or (causal and q.shape[-2] != k.shape[-2]):
        mask = _allowed(key_padding_mask, causal, q.shape[-2], k.shape[-2], q.device)
        causal = False  # sdpa's is_causal is top-left aligned; ours is bottom-right (tril(Lk - Lq))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=scale)


def _refuse_math(q, k, v, key_padding_mask, causal) -> Optional[str]:
    return None


def _run_math(q, k, v, key_padding_mask, scale, causal):
    return attention_reference(q, k, v, key_padding_mask, scale, causal)


_triton_import_error: Optional[str] = None


def _triton_module():
    global _triton_import_error
    if _triton_import_error is None:
        try:
            from tvts.kernels import triton_attention

            return triton_attention
        except Exception as exc:  # noqa: BLE001 - no triton, or a triton that cannot build the kernels
            _triton_import_error = f"{type(exc).__name__}: {exc}"
    return None


def _refuse_triton(q, k, v, key_padding_mask, causal) -> Optional[str]:
    mod = _triton_module()
    if mod is None:
        return f"is unavailable ({_triton_import_error})"
    return mod.refusal(q, k, v, causal, key_padding_mask)


def _run_triton(q, k, v, key_padding_mask, scale, causal):
    return _triton_module().flash_attention(q, k, v, key_padding_mask, scale)


def _refuse_flash_attn(q, k, v, key_padding_mask, causal) -> Optional[str]:
    if not q.is_cuda:
        return "needs CUDA tensors"
    if not _installed("flash_attn"):
        return "is not installed"
    if q.dtype not in (torch.float16, torch.bfloat16):
        return f"needs fp16/bf16, got {q.dtype}"
    if q.shape[-1] % 8 or q.shape[-1] > 256:
        return f"needs a head dim that is a multiple of 8 up to 256, got {q.shape[-1]}"
    if causal and key_padding_mask is not None:
        return "does not combine causal with key padding here"
    return None


def _run_flash_attn(q, k, v, key_padding_mask, scale, causal):
    from flash_attn import flash_attn_func, flash_attn_varlen_func

    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))  # flash-attn layout: (B, L, H, D)
    if key_padding_mask is None:
        # flash-attn's causal mask is bottom-right aligned, like ours
        return flash_attn_func(qt, kt, vt, softmax_scale=scale, causal=causal).transpose(1, 2)
    b, lq, h, d = qt.shape
    # non-causal attention does not depend on key order, so the valid keys can be packed wherever they are
    lengths = key_padding_mask.sum(1, dtype=torch.int32)
    cu_k = F.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0))
    cu_q = torch.arange(0, (b + 1) * lq, lq, dtype=torch.int32, device=q.device)
    out = flash_attn_varlen_func(qt.reshape(b * lq, h, d), kt[key_padding_mask], vt[key_padding_mask], cu_q, cu_k,
                                 lq, int(lengths.max()), softmax_scale=scale)
    return out.view(b, lq, h, d).transpose(1, 2)


def _refuse_xformers(q, k, v, key_padding_mask, causal) -> Optional[str]:
    if not q.is_cuda:
        return "needs CUDA tensors"
    if not _installed("xformers"):
        return "is not installed"
    if causal:
        return "is wired for non-causal attention only"
    return None


def _run_xformers(q, k, v, key_padding_mask, scale, causal):
    import xformers.ops as xops

    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
    bias = None
    if key_padding_mask is not None:
        b, h, lq, lk = q.shape[0], q.shape[1], q.shape[2], k.shape[2]
        # xformers wants the bias rows 8-aligned in memory: allocate padded, hand over a slice
        bias = torch.zeros(b, h, lq, (lk + 7) // 8 * 8, dtype=q.dtype, device=q.device)[..., :lk]
        bias.masked_fill_(~key_padding_mask[:, None, None, :], float("-inf"))
    return xops.memory_efficient_attention(qt, kt, vt, attn_bias=bias, scale=scale).transpose(1, 2)


_REFUSE: dict[str, Callable] = {"triton": _refuse_triton, "flash_attn": _refuse_flash_attn,
                                "xformers": _refuse_xformers, "sdpa": _refuse_sdpa, "math": _refuse_math}
_RUN: dict[str, Callable] = {"triton": _run_triton, "flash_attn": _run_flash_attn, "xformers": _run_xformers,
                             "sdpa": _run_sdpa, "math": _run_math}


def auto_order(q: torch.Tensor, key_padding_mask: Optional[torch.Tensor], causal: bool) -> tuple[str, ...]:
    """The backends ``auto`` tries, best first (the table in the module docstring)."""
    if not q.is_cuda:
        return ("sdpa",)
    half = q.dtype in (torch.float16, torch.bfloat16)
    if causal:
        return ("flash_attn", "sdpa") if half else ("sdpa",)
    if not half:
        return ("sdpa",)
    if key_padding_mask is not None:
        return ("triton", "flash_attn", "xformers", "sdpa")
    if q.shape[-2] <= 16:
        return ("triton", "sdpa")
    return ("flash_attn", "sdpa")


def refusal(backend: str, q, k, v, key_padding_mask=None, causal=False) -> Optional[str]:
    """Why ``backend`` (not auto) cannot run these inputs, or None when it can."""
    return _REFUSE[backend](q, k, v, key_padding_mask, causal)


def choose_backend(q, k, v, key_padding_mask=None, causal=False, backend=None) -> str:
    """The backend that :func:`attention` will run for these inputs (logs choices and fallbacks once)."""
    name = backend or _default_backend
    if name not in BACKENDS:
        raise ValueError(f"attention backend {name!r}: expected one of {', '.join(BACKENDS)}")
    order = auto_order(q, key_padding_mask, causal) if name == "auto" else (name,)
    for i, candidate in enumerate(order):
        why = _REFUSE[candidate](q, k, v, key_padding_mask, causal)
        if why is None:
            if name == "auto":
                # one line per case the rules distinguish, not per sequence length
                features = [str(q.dtype).removeprefix("torch."), f"head dim {q.shape[-1]}",
                            "Lq<=16" if q.shape[-2] <= 16 else "Lq>16"]
                features += ["key padding"] * (key_padding_mask is not None) + ["causal"] * causal
                note_once(f"attention auto: {q.device.type} {', '.join(features)} -> {candidate}")
            return candidate
        fallback = order[i + 1] if i + 1 < len(order) else "sdpa"
        note_once(f"attention: {candidate} {why}; using {fallback}")
    return "sdpa"


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: Optional[torch.Tensor] = None,
    scale: Optional[float] = None,
    causal: bool = False,
    backend: Optional[str] = None,
) -> torch.Tensor:
    """Multi-head attention.

    Args:
        q: (B, H, Lq, D); k, v: (B, H, Lk, D); fp32, fp16 or bf16.
        key_padding_mask: (B, Lk) bool, True where the key is valid.
        scale: defaults to D ** -0.5.
        causal: query i attends to keys <= i (+ Lk - Lq); only the CLIP text tower uses it.
        backend: one of ``BACKENDS``; ``None`` uses the process default (see :func:`set_default_backend`).
    Returns:
        (B, H, Lq, D) in q's dtype (possibly a non-contiguous view).
    """
    chosen = choose_backend(q, k, v, key_padding_mask, causal, backend)
    return _RUN[chosen](q, k, v, key_padding_mask, scale, causal)
