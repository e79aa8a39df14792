"""Flash attention in Triton: forward and backward, non-causal, optional key padding.

The forward pass streams key/value blocks through an online softmax (running max ``m`` and running sum
``l`` per query row, in base 2: scores are pre-multiplied by ``scale * log2(e)`` so the kernel uses
``exp2``) and saves one log-sum-exp per query row. The backward pass never stores the (Lq, Lk)
probabilities: it recomputes them from q, k and the saved log-sum-exp, in two kernels (dK/dV over a
key block with a loop over query blocks; dQ over a query block with a loop over key blocks) so that no
atomics are needed.

Lengths and head dims need not be powers of two: every load is masked (rows past Lq, keys past Lk,
lanes past the head dim), and the head dim is padded to the next power of two >= 16 inside the kernel
(80 -> 128 for ViT-H/14). A query row whose keys are all padded gets a zero output and zero gradients.

Block sizes: autotuned on Hopper (compute capability 9.x), a shape-based default elsewhere and under
``TRITON_INTERPRET=1``. The interpreter's bf16 ``tl.dot`` is wrong (triton-lang/triton#11584), so bf16
operands are upcast to fp32 before every dot when interpreting.

The kernels are wrapped as two ``torch.library`` custom ops (``tvts::flash_attention_fwd`` /
``_bwd``) so ``torch.compile`` treats them as opaque calls, and joined by :class:`FlashAttention`.
"""
from __future__ import annotations

import os
from typing import Optional

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634
MAX_HEAD_DIM = 128  # (BLOCK_M + 2 BLOCK_N) x 128 tiles still fit Hopper's shared memory at the tuned sizes


# ``triton.jit`` decides at decoration time, from TRITON_INTERPRET, whether a kernel is compiled for the
# GPU or interpreted on the CPU (so are triton.language's own jit helpers, decided when triton is first
# imported): one process runs one or the other, never both.
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@triton.jit
def _load_tile(base, idx, stride, n, offs_d, head_dim, UPCAST: tl.constexpr):
    """Rows ``idx`` of an (n, head_dim) matrix at ``base`` (row stride ``stride``), zeros past either end;
    fp32 when UPCAST."""
    mask = (idx[:, None] < n) & (offs_d[None, :] < head_dim)
    tile = tl.load(base + idx[:, None] * stride + offs_d[None, :], mask=mask, other=0.0)
    if UPCAST:
        tile = tile.to(tl.float32)
    return tile


@triton.jit
def _store_tile(base, idx, stride, n, offs_d, head_dim, tile):
    mask = (idx[:, None] < n) & (offs_d[None, :] < head_dim)
    tl.store(base + idx[:, None] * stride + offs_d[None, :], tile.to(base.dtype.element_ty), mask=mask)


@triton.jit
def _program_head(H):
    """(batch * heads + head, batch, head) of this program: axis 0 walks (batch, head). It may exceed 65535
    (many short v2 sequences); axis 1 (query or key blocks) may not."""
    bh = tl.program_id(0).to(tl.int64)
    return bh, bh // H, bh % H


@triton.jit
def _head_bases(Q, K, V, b, h, sqb, sqh, skb, skh, svb, svh):
    """q, k, v pointers moved to this (batch, head): every tile load below adds only row offsets."""
    return Q + b * sqb + h * sqh, K + b * skb + h * skh, V + b * svb + h * svh


@triton.jit
def _key_block(K, V, MASK, cols, skn, svn, LK, offs_d, HEAD_DIM,
               HAS_MASK: tl.constexpr, UPCAST: tl.constexpr):
    """k and v tiles of the keys ``cols`` and which of them are valid: they exist (< LK) and, with a
    padding mask (MASK points at this batch row), are not padded."""
    k = _load_tile(K, cols, skn, LK, offs_d, HEAD_DIM, UPCAST)
    v = _load_tile(V, cols, svn, LK, offs_d, HEAD_DIM, UPCAST)
    valid = cols < LK
    if HAS_MASK:
        valid = valid & (tl.load(MASK + cols, mask=valid, other=0) != 0)
    return k, v, valid


@triton.jit
def _query_block(Q, DO, LSE, DELTA, rows, sqm, sdm, LQ, offs_d, HEAD_DIM, UPCAST: tl.constexpr):
    """Backward inputs of the queries ``rows``: q and dO tiles, log-sum-exp (+inf past LQ, so every
    recomputed probability of those rows is 0) and delta."""
    q = _load_tile(Q, rows, sqm, LQ, offs_d, HEAD_DIM, UPCAST)
    do = _load_tile(DO, rows, sdm, LQ, offs_d, HEAD_DIM, UPCAST)
    lse = tl.load(LSE + rows, mask=rows < LQ, other=float("inf"))
    delta = tl.load(DELTA + rows, mask=rows < LQ, other=0.0)
    return q, do, lse, delta


@triton.jit
def _scores(q, k, valid, qk_scale, PRECISION: tl.constexpr):
    """(BLOCK_M, BLOCK_N) scores in base 2 (q k^T * scale * log2 e), -inf at invalid keys."""
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
    return tl.where(valid[None, :], s, float("-inf"))


@triton.jit
def _fwd_kernel(Q, K, V, MASK, O, LSE,
                sqb, sqh, sqm, skb, skh, skn, svb, svh, svn, sob, soh, som, smb,
                H, LQ, LK, HEAD_DIM, qk_scale,
                HAS_MASK: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    bh, b, h = _program_head(H)
    Q, K, V = _head_bases(Q, K, V, b, h, sqb, sqh, skb, skh, svb, svh)
    rows = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    q = _load_tile(Q, rows, sqm, LQ, offs_d, HEAD_DIM, UPCAST)
    # a finite start keeps exp2(m_old - m_new) at 0 (not nan) while every key seen so far is padded
    m_i = tl.full([BLOCK_M], -1.0e30, tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for start_n in range(0, LK, BLOCK_N):
        k, v, valid = _key_block(K, V, MASK + b * smb, start_n + offs_n, skn, svn, LK, offs_d, HEAD_DIM,
                                 HAS_MASK, UPCAST)
        s = _scores(q, k, valid, qk_scale, PRECISION)
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new
    empty = l_i == 0.0
    l_safe = tl.where(empty, 1.0, l_i)
    _store_tile(O + b * sob + h * soh, rows, som, LQ, offs_d, HEAD_DIM, acc / l_safe[:, None])
    # +inf for a row without keys makes every recomputed probability exp2(s - lse) exactly 0 in backward
    lse = tl.where(empty, float("inf"), m_i + tl.log2(l_safe))
    tl.store(LSE + bh * LQ + rows, lse, mask=rows < LQ)


@triton.jit
def _bwd_delta_kernel(O, DO, DELTA, sob, soh, som, sdb, sdh, sdm, H, LQ, HEAD_DIM,
                      BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    """delta_i = sum_d dO_id * O_id, the row term of the softmax backward."""
    bh, b, h = _program_head(H)
    rows = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    o = _load_tile(O + b * sob + h * soh, rows, som, LQ, offs_d, HEAD_DIM, True)
    do = _load_tile(DO + b * sdb + h * sdh, rows, sdm, LQ, offs_d, HEAD_DIM, True)
    tl.store(DELTA + bh * LQ + rows, tl.sum(o * do, 1), mask=rows < LQ)


@triton.jit
def _bwd_dkdv_kernel(Q, K, V, MASK, DO, LSE, DELTA, DK, DV,
                     sqb, sqh, sqm, skb, skh, skn, svb, svh, svn, sdb, sdh, sdm, smb, sgb, sgh, sgn,
                     H, LQ, LK, HEAD_DIM, qk_scale, scale,
                     HAS_MASK: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """One key block: dV = P^T dO and dK = scale * dS^T Q, looping over every query block."""
    bh, b, h = _program_head(H)
    Q, K, V = _head_bases(Q, K, V, b, h, sqb, sqh, skb, skh, svb, svh)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    k, v, valid = _key_block(K, V, MASK + b * smb, cols, skn, svn, LK, offs_d, HEAD_DIM, HAS_MASK, UPCAST)
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    for start_m in range(0, LQ, BLOCK_M):
        q, do, lse, delta = _query_block(Q, DO + b * sdb + h * sdh, LSE + bh * LQ, DELTA + bh * LQ,
                                         start_m + offs_m, sqm, sdm, LQ, offs_d, HEAD_DIM, UPCAST)
        # transposed (BLOCK_N, BLOCK_M) tiles: dV and dK accumulate over queries without a transpose of P
        s_t = tl.dot(k, tl.trans(q), input_precision=PRECISION) * qk_scale
        p_t = tl.where(valid[:, None], tl.exp2(s_t - lse[None, :]), 0.0)
        dv += tl.dot(p_t.to(do.dtype), do, input_precision=PRECISION)
        dp_t = tl.dot(v, tl.trans(do), input_precision=PRECISION)
        ds_t = p_t * (dp_t - delta[None, :])
        dk += tl.dot(ds_t.to(q.dtype), q, input_precision=PRECISION)
    # dk and dv are contiguous tensors of one shape: one set of strides
    _store_tile(DK + b * sgb + h * sgh, cols, sgn, LK, offs_d, HEAD_DIM, dk * scale)
    _store_tile(DV + b * sgb + h * sgh, cols, sgn, LK, offs_d, HEAD_DIM, dv)


@triton.jit
def _bwd_dq_kernel(Q, K, V, MASK, DO, LSE, DELTA, DQ,
                   sqb, sqh, sqm, skb, skh, skn, svb, svh, svn, sdb, sdh, sdm, smb, sgb, sgh, sgn,
                   H, LQ, LK, HEAD_DIM, qk_scale, scale,
                   HAS_MASK: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """One query block: dQ = scale * dS K, looping over every key block."""
    bh, b, h = _program_head(H)
    Q, K, V = _head_bases(Q, K, V, b, h, sqb, sqh, skb, skh, svb, svh)
    rows = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    q, do, lse, delta = _query_block(Q, DO + b * sdb + h * sdh, LSE + bh * LQ, DELTA + bh * LQ,
                                     rows, sqm, sdm, LQ, offs_d, HEAD_DIM, UPCAST)
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for start_n in range(0, LK, BLOCK_N):
        k, v, valid = _key_block(K, V, MASK + b * smb, start_n + offs_n, skn, svn, LK, offs_d, HEAD_DIM,
                                 HAS_MASK, UPCAST)
        # -inf scores at invalid keys and +inf lse at empty rows both give probability exp2(-inf) = 0
        p = tl.exp2(_scores(q, k, valid, qk_scale, PRECISION) - lse[:, None])
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)
    _store_tile(DQ + b * sgb + h * sgh, rows, sgn, LQ, offs_d, HEAD_DIM, dq * scale)


# -- block sizes ---------------------------------------------------------------------------------------

def _hopper_configs(forward: bool) -> list:
    # Short v2 sequences (12-13 temporal, 77-99 spatial) want small query tiles; 393-917 tokens want big ones.
    sizes = [(16, 32), (32, 32), (64, 32), (64, 64), (128, 32), (128, 64)] if forward else \
        [(16, 32), (32, 32), (32, 64), (64, 32), (64, 64)]
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s)
            for m, n in sizes for w in (4, 8) for s in (2, 3) if not (w == 8 and m * n < 64 * 64)]


_AUTOTUNE_KEY = ["LQ", "LK", "HEAD_DIM"]
_fwd_tuned = triton.autotune(configs=_hopper_configs(True), key=_AUTOTUNE_KEY)(_fwd_kernel)
_dkdv_tuned = triton.autotune(configs=_hopper_configs(False), key=_AUTOTUNE_KEY)(_bwd_dkdv_kernel)
_dq_tuned = triton.autotune(configs=_hopper_configs(False), key=_AUTOTUNE_KEY)(_bwd_dq_kernel)


def _pow2(n: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, triton.next_power_of_2(n)))


def default_blocks(lq: int, lk: int, head_dim: int) -> tuple[int, int]:
    """(BLOCK_M, BLOCK_N) without autotuning: tiles no larger than the sequences, 64 x 64 at most
    (64 x 32 past head dim 64, to stay inside the registers of pre-Hopper parts)."""
    return _pow2(lq, 16, 64), _pow2(lk, 16, 64 if head_dim <= 64 else 32)


def _use_autotune(device: torch.device) -> bool:
    return device.type == "cuda" and not INTERPRETED and torch.cuda.get_device_capability(device)[0] == 9


# -- launchers -----------------------------------------------------------------------------------------

def _strides(t: torch.Tensor) -> tuple[int, int, int]:
    return t.stride(0), t.stride(1), t.stride(2)


def _inner_contiguous(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def _common(q, k, key_padding_mask):
    head_dim = q.shape[-1]
    upcast = INTERPRETED and q.dtype == torch.bfloat16
    # fp32 follows torch's matmul setting: exact ("ieee") unless the run allowed TF32
    tf32 = q.dtype == torch.float32 and q.is_cuda and torch.backends.cuda.matmul.allow_tf32
    precision = "tf32" if tf32 else "ieee"
    if key_padding_mask is None:
        mask, smb = q, 0  # any pointer: never read
    else:
        mask = key_padding_mask.to(torch.int8)
        smb = mask.stride(0)
    return dict(HAS_MASK=key_padding_mask is not None, UPCAST=upcast, PRECISION=precision,
                BLOCK_D=max(16, triton.next_power_of_2(head_dim))), mask, smb


def flash_forward(q, k, v, key_padding_mask: Optional[torch.Tensor], scale: float,
                  blocks: Optional[tuple[int, int]] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """q (B, H, Lq, D), k/v (B, H, Lk, D) -> out (B, H, Lq, D) in q's dtype, lse (B, H, Lq) fp32 (base 2).

    CUDA tensors, or CPU tensors under TRITON_INTERPRET=1. ``blocks`` forces (BLOCK_M, BLOCK_N);
    otherwise Hopper autotunes and everything else uses :func:`default_blocks`."""
    q, k, v = (_inner_contiguous(t) for t in (q, k, v))
    b, h, lq, d = q.shape
    lk = k.shape[2]
    out = torch.empty(q.shape, device=q.device, dtype=q.dtype)
    lse = torch.empty((b, h, lq), device=q.device, dtype=torch.float32)
    meta, mask, smb = _common(q, k, key_padding_mask)
    args = (q, k, v, mask, out, lse, *_strides(q), *_strides(k), *_strides(v), *_strides(out), smb,
            h, lq, lk, d, scale * LOG2E)
    tuned = blocks is None and _use_autotune(q.device)
    if tuned:
        _fwd_tuned[lambda m: (b * h, triton.cdiv(lq, m["BLOCK_M"]))](*args, **meta)
    else:
        bm, bn = blocks or default_blocks(lq, lk, d)
        _fwd_kernel[(b * h, triton.cdiv(lq, bm))](*args, **meta, BLOCK_M=bm, BLOCK_N=bn, **_launch_opts(d))
    return out, lse


def _launch_opts(head_dim: int) -> dict:
    return dict(num_warps=4 if head_dim <= 64 else 8, num_stages=2)


def flash_backward(grad_out, q, k, v, out, lse, key_padding_mask: Optional[torch.Tensor], scale: float,
                   blocks: Optional[tuple[int, int]] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients (dq, dk, dv) in the dtypes of q, k, v, recomputing the probabilities from ``lse``."""
    q, k, v, out, grad_out = (_inner_contiguous(t) for t in (q, k, v, out, grad_out))
    b, h, lq, d = q.shape
    lk = k.shape[2]
    meta, mask, smb = _common(q, k, key_padding_mask)
    delta = torch.empty_like(lse)
    bm_delta = _pow2(lq, 16, 64)
    _bwd_delta_kernel[(b * h, triton.cdiv(lq, bm_delta))](
        out, grad_out, delta, *_strides(out), *_strides(grad_out), h, lq, d,
        BLOCK_M=bm_delta, BLOCK_D=meta["BLOCK_D"])
    dq = torch.empty(q.shape, device=q.device, dtype=q.dtype)
    dk = torch.empty(k.shape, device=k.device, dtype=k.dtype)
    dv = torch.empty(v.shape, device=v.device, dtype=v.dtype)
    inputs = (q, k, v, mask, grad_out, lse, delta)
    strides = (*_strides(q), *_strides(k), *_strides(v), *_strides(grad_out), smb)
    scalars = (h, lq, lk, d, scale * LOG2E, scale)
    tuned = blocks is None and _use_autotune(q.device)
    if tuned:
        _dkdv_tuned[lambda m: (b * h, triton.cdiv(lk, m["BLOCK_N"]))](
            *inputs, dk, dv, *strides, *_strides(dk), *scalars, **meta)
        _dq_tuned[lambda m: (b * h, triton.cdiv(lq, m["BLOCK_M"]))](
            *inputs, dq, *strides, *_strides(dq), *scalars, **meta)
    else:
        bm, bn = blocks or default_blocks(lq, lk, d)
        launch = dict(**meta, BLOCK_M=bm, BLOCK_N=bn, **_launch_opts(d))
        _bwd_dkdv_kernel[(b * h, triton.cdiv(lk, bn))](
            *inputs, dk, dv, *strides, *_strides(dk), *scalars, **launch)
        _bwd_dq_kernel[(b * h, triton.cdiv(lq, bm))](*inputs, dq, *strides, *_strides(dq), *scalars, **launch)
    return dq, dk, dv


# -- autograd ------------------------------------------------------------------------------------------

@torch.library.custom_op("tvts::flash_attention_fwd", mutates_args=())
def _fwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: Optional[torch.Tensor],
            scale: float, block_m: int, block_n: int) -> tuple[torch.Tensor, torch.Tensor]:
    return flash_forward(q, k, v, key_padding_mask, scale, (block_m, block_n) if block_m else None)


@_fwd_op.register_fake
def _(q, k, v, key_padding_mask, scale, block_m, block_n):
    return q.new_empty(q.shape), q.new_empty(q.shape[:3], dtype=torch.float32)


@torch.library.custom_op("tvts::flash_attention_bwd", mutates_args=())
def _bwd_op(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
            lse: torch.Tensor, key_padding_mask: Optional[torch.Tensor], scale: float, block_m: int,
            block_n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return flash_backward(grad_out, q, k, v, out, lse, key_padding_mask, scale,
                          (block_m, block_n) if block_m else None)


@_bwd_op.register_fake
def _(grad_out, q, k, v, out, lse, key_padding_mask, scale, block_m, block_n):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


class FlashAttention(torch.autograd.Function):
    """Saves q, k, v, the output and the log-sum-exp; backward recomputes the probabilities."""

    @staticmethod
    def forward(ctx, q, k, v, key_padding_mask, scale, block_m, block_n):
        out, lse = _fwd_op(q, k, v, key_padding_mask, scale, block_m, block_n)
        ctx.save_for_backward(q, k, v, out, lse, key_padding_mask)
        ctx.scale, ctx.blocks = scale, (block_m, block_n)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse, key_padding_mask = ctx.saved_tensors
        dq, dk, dv = _bwd_op(grad_out, q, k, v, out, lse, key_padding_mask, ctx.scale, *ctx.blocks)
        return dq, dk, dv, None, None, None, None


def refusal(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> Optional[str]:
    """Why :func:`flash_attention` cannot run these inputs, or None when it can."""
    if causal:
        return "is non-causal only"
    if INTERPRETED and q.device.type != "cpu":
        return "kernels are interpreted in this process (TRITON_INTERPRET=1): CPU tensors only"
    if not INTERPRETED and q.device.type != "cuda":
        return f"needs CUDA tensors (CPU tensors: TRITON_INTERPRET=1 before triton is imported), got {q.device.type}"
    if q.dtype not in (torch.float32, torch.float16, torch.bfloat16) or not q.dtype == k.dtype == v.dtype:
        return f"needs one dtype among fp32/fp16/bf16, got {q.dtype}/{k.dtype}/{v.dtype}"
    if q.shape[-1] > MAX_HEAD_DIM:
        return f"supports head dims up to {MAX_HEAD_DIM}, got {q.shape[-1]}"
    if k.shape != v.shape or q.shape[:2] != k.shape[:2] or q.shape[-1] != k.shape[-1]:
        return "needs q (B, H, Lq, D) and k, v (B, H, Lk, D)"
    return None


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    key_padding_mask: Optional[torch.Tensor] = None, scale: Optional[float] = None,
                    blocks: Optional[tuple[int, int]] = None) -> torch.Tensor:
    """softmax(q k^T * scale, masked) v. q (B, H, Lq, D); k, v (B, H, Lk, D); key_padding_mask (B, Lk) bool,
    True where the key is valid. Returns (B, H, Lq, D) in q's dtype. ``blocks`` forces (BLOCK_M, BLOCK_N)."""
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    block_m, block_n = blocks or (0, 0)
    return FlashAttention.apply(q, k, v, key_padding_mask, scale, block_m, block_n)
