"""Flash attention in Triton: forward and backward, non-causal, optional key padding.

The forward pass streams key/value blocks through an online softmax (running max ``m`` and running sum
``l`` per query row, in base 2: scores are pre-multiplied by ``scale * log2(e)`` so the kernel uses
``exp2``) and saves one log-sum-exp per query row. The backward pass never stores the (Lq, Lk)
probabilities: it recomputes them from q, k and the saved log-sum-exp, in two kernels (dK/dV over a
key block with a loop over query blocks; dQ over a query block with a loop over key blocks) so that no
atomics are needed.

Lengths need not be powers of two: every load is masked (rows past Lq, keys past Lk, lanes past the head
dim). A query row whose keys are all padded gets a zero output and zero gradients.

Head dims: ``tl.dot`` takes power-of-two tiles of at least 16, so the head dim's lanes are covered by one
power-of-two block or, where fewer lanes result, by two (:func:`head_dim_blocks`, constexpr): 80 = 64 + 16
(ViT-H/14), 48 = 32 + 16, 96 = 64 + 32. With two blocks, each product over the head dim (q k^T, dO v^T)
is the sum of one dot per block, and each product that yields head-dim rows (P v, P^T dO, dS^T q, dS k)
keeps one accumulator per block; powers of two keep the single block and compile as before. FLOPs, by
arithmetic (not a measurement): every matrix product of the three kernels scales with the lanes it
computes, so head dim 80 issues 80 lanes where one padded block issued 128: x 0.625 (-37.5 %) tensor-core
work for q k^T and P v in the forward and for all seven products of the backward (the two score
recomputations included); 48 and 96: x 0.75. The softmax (per score) and the memory traffic (padded lanes
were masked loads) do not change. The hi-lane dots come first in each loop body: Triton 3.6 takes the
warp layout of a chain of dots from the last one (seen in its TTGIR), and a 16-lane last dot put 16-row
tiles on 4 warps, each redoing the same rows (4x the MMA work at 16 x 32 tiles). Compiled ahead of time
for sm_90 and sm_80 (no GPU run), the kernels' MMA instructions are then 0.625 of the padded ones on
tiles of 64 rows and more and 0.67-0.69 on 16-32-row tiles (the 16-lane dot is replicated over warps
there), and their shared memory is 30-46 % smaller.

Block sizes: autotuned on Hopper (compute capability 9.x), a shape-based default elsewhere and under
``TRITON_INTERPRET=1``. The autotuning key is (Lq, Lk) rounded up to powers of two and the head dim, so
lengths that change from batch to batch reuse one tuning; tunings are also written to Triton's cache
directory (``TRITON_CACHE_DIR``, default ``~/.triton/cache``, beside the compiled kernels), so a restarted
run neither recompiles nor retunes. The interpreter's bf16 ``tl.dot`` is wrong (triton-lang/triton#11584),
so bf16 operands are upcast to fp32 before every dot when interpreting.

A kernel that fails to build (compile errors, out of shared memory or registers, an architecture the
installed Triton cannot target: :func:`is_build_error`) does not stop the run: its variant (dtype, head
dim, padding, tiles) is remembered as failed, one line is logged, and that call and every later call of
the variant compute with ``F.scaled_dot_product_attention`` (forward) and the explicit fp32 gradients
(backward) instead. This happens inside the ops, so it also holds in ``torch.compile``d blocks, where the
dispatch's Python runs only while tracing; eager dispatch sees the failure in :func:`refusal`.

The kernels are wrapped as two ``torch.library`` custom ops (``tvts::flash_attention_fwd`` /
``_bwd``) so ``torch.compile`` treats them as opaque calls, and joined by :class:`FlashAttention`.
"""
from __future__ import annotations

import logging
import os
import traceback
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from triton.compiler.errors import CompilationError
from triton.runtime.errors import AutotunerError, OutOfResources, PTXASError

from tvts.kernels.notes import note_once

LOG2E = 1.4426950408889634
MAX_HEAD_DIM = 128  # (BLOCK_M + 2 BLOCK_N) x 128 tiles still fit Hopper's shared memory at the tuned sizes
MIN_BLOCK_D = 16  # tl.dot's smallest tile dimension


# ``triton.jit`` decides at decoration time, from TRITON_INTERPRET, whether a kernel is compiled for the
# GPU or interpreted on the CPU (so are triton.language's own jit helpers, decided when triton is first
# imported): one process runs one or the other, never both.
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def head_dim_blocks(head_dim: int) -> tuple[int, int]:
    """(BLOCK_D0, BLOCK_D1): the lane blocks that cover ``head_dim``. One power-of-two block >= 16
    (BLOCK_D1 = 0), or the largest power of two below the head dim plus a power-of-two block >= 16 for
    the rest, when those two are fewer lanes: 80 -> (64, 16), 48 -> (32, 16), 96 -> (64, 32), 72 -> (64, 16);
    64 -> (64, 0), 112 -> (128, 0) (64 + 64 is no saving), 24 -> (32, 0)."""
    one = max(MIN_BLOCK_D, triton.next_power_of_2(head_dim))
    low = one // 2
    high = max(MIN_BLOCK_D, triton.next_power_of_2(max(1, head_dim - low)))
    return (low, high) if low + high < one else (one, 0)


# -- tiles: a head-dim tile is two tensors, lanes [0, BLOCK_D0) and [BLOCK_D0, BLOCK_D0 + BLOCK_D1); with
# one block (BLOCK_D1 = 0) the second is the first again, never read, and the code compiles to one block.

@triton.jit
def _load_tile(base, idx, stride, n, offs_d, head_dim, UPCAST: tl.constexpr):
    """Rows ``idx`` of an (n, head_dim) matrix at ``base`` (row stride ``stride``), lanes ``offs_d``,
    zeros past either end; fp32 when UPCAST."""
    mask = (idx[:, None] < n) & (offs_d[None, :] < head_dim)
    tile = tl.load(base + idx[:, None] * stride + offs_d[None, :], mask=mask, other=0.0)
    if UPCAST:
        tile = tile.to(tl.float32)
    return tile


@triton.jit
def _load_rows(base, idx, stride, n, head_dim, UPCAST: tl.constexpr,
               BLOCK_D0: tl.constexpr, BLOCK_D1: tl.constexpr):
    """Rows ``idx`` as their two lane-block tiles (the second = the first with one block)."""
    tile0 = _load_tile(base, idx, stride, n, tl.arange(0, BLOCK_D0), head_dim, UPCAST)
    tile1 = tile0
    if BLOCK_D1 > 0:
        tile1 = _load_tile(base, idx, stride, n, BLOCK_D0 + tl.arange(0, BLOCK_D1), head_dim, UPCAST)
    return tile0, tile1


@triton.jit
def _store_tile(base, idx, stride, n, offs_d, head_dim, tile):
    mask = (idx[:, None] < n) & (offs_d[None, :] < head_dim)
    tl.store(base + idx[:, None] * stride + offs_d[None, :], tile.to(base.dtype.element_ty), mask=mask)


@triton.jit
def _store_rows(base, idx, stride, n, head_dim, tile0, tile1, BLOCK_D0: tl.constexpr, BLOCK_D1: tl.constexpr):
    _store_tile(base, idx, stride, n, tl.arange(0, BLOCK_D0), head_dim, tile0)
    if BLOCK_D1 > 0:
        _store_tile(base, idx, stride, n, BLOCK_D0 + tl.arange(0, BLOCK_D1), head_dim, tile1)


@triton.jit
def _dot_over_head_dim(a0, a1, b0, b1, PRECISION: tl.constexpr, BLOCK_D1: tl.constexpr):
    """a b^T for (rows, head dim) tiles a and b: one dot per lane block, accumulated in fp32."""
    c = tl.dot(a0, tl.trans(b0), input_precision=PRECISION)
    if BLOCK_D1 > 0:
        c = tl.dot(a1, tl.trans(b1), c, input_precision=PRECISION)
    return c


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
def _key_block(K, V, MASK, cols, skn, svn, LK, HEAD_DIM, HAS_MASK: tl.constexpr, UPCAST: tl.constexpr,
               BLOCK_D0: tl.constexpr, BLOCK_D1: tl.constexpr):
    """k and v tiles of the keys ``cols`` and which of them are valid: they exist (< LK) and, with a
    padding mask (MASK points at this batch row), are not padded."""
    k0, k1 = _load_rows(K, cols, skn, LK, HEAD_DIM, UPCAST, BLOCK_D0, BLOCK_D1)
    v0, v1 = _load_rows(V, cols, svn, LK, HEAD_DIM, UPCAST, BLOCK_D0, BLOCK_D1)
    valid = cols < LK
    if HAS_MASK:
        valid = valid & (tl.load(MASK + cols, mask=valid, other=0) != 0)
    return k0, k1, v0, v1, valid


@triton.jit
def _query_block(Q, DO, LSE, DELTA, rows, sqm, sdm, LQ, HEAD_DIM, UPCAST: tl.constexpr,
                 BLOCK_D0: tl.constexpr, BLOCK_D1: tl.constexpr):
    """Backward inputs of the queries ``rows``: q and dO tiles, log-sum-exp (+inf past LQ, so every
    recomputed probability of those rows is 0) and delta."""
    q0, q1 = _load_rows(Q, rows, sqm, LQ, HEAD_DIM, UPCAST, BLOCK_D0, BLOCK_D1)
    do0, do1 = _load_rows(DO, rows, sdm, LQ, HEAD_DIM, UPCAST, BLOCK_D0, BLOCK_D1)
    lse = tl.load(LSE + rows, mask=rows < LQ, other=float("inf"))
    delta = tl.load(DELTA + rows, mask=rows < LQ, other=0.0)
    return q0, q1, do0, do1, lse, delta


@triton.jit
def _scores(q0, q1, k0, k1, valid, qk_scale, PRECISION: tl.constexpr, BLOCK_D1: tl.constexpr):
    """(BLOCK_M, BLOCK_N) scores in base 2 (q k^T * scale * log2 e), -inf at invalid keys."""
    s = _dot_over_head_dim(q0, q1, k0, k1, PRECISION, BLOCK_D1) * qk_scale
    return tl.where(valid[None, :], s, float("-inf"))


# LQ_TUNE and LK_TUNE (the lengths rounded up to powers of two) are the autotuning key; the bodies never
# read them.

@triton.jit
def _fwd_kernel(Q, K, V, MASK, O, LSE,
                sqb, sqh, sqm, skb, skh, skn, svb, svh, svn, sob, soh, som, smb,
                H, LQ, LK, HEAD_DIM, qk_scale, LQ_TUNE, LK_TUNE,
                HAS_MASK: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D0: tl.constexpr, BLOCK_D1: tl.constexpr):
    bh, b, h = _program_head(H)
    Q, K, V = _head_bases(Q, K, V, b, h, sqb, sqh, skb, skh, svb, svh)
    rows = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    q0, q1 = _load_rows(Q, rows, sqm, LQ, HEAD_DIM, UPCAST, BLOCK_D0, BLOCK_D1)
    # a finite start keeps exp2(m_old - m_new) at 0 (not nan) while every key seen so far is padded
    m_i = tl.full([BLOCK_M], -1.0e30, tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc0 = tl.zeros([BLOCK_M, BLOCK_D0], tl.float32)
    acc1 = acc0
    if BLOCK_D1 > 0:
        acc1 = tl.zeros([BLOCK_M, BLOCK_D1], tl.float32)
    for start_n in range(0, LK, BLOCK_N):
        k0, k1, v0, v1, valid = _key_block(K, V, MASK + b * smb, start_n + offs_n, skn, svn, LK, HEAD_DIM,
                                           HAS_MASK, UPCAST, BLOCK_D0, BLOCK_D1)
        s = _scores(q0, q1, k0, k1, valid, qk_scale, PRECISION, BLOCK_D1)
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        if BLOCK_D1 > 0:
            acc1 = acc1 * alpha[:, None] + tl.dot(p.to(v1.dtype), v1, input_precision=PRECISION)
        acc0 = acc0 * alpha[:, None] + tl.dot(p.to(v0.dtype), v0, input_precision=PRECISION)
        m_i = m_new
    empty = l_i == 0.0
    l_safe = tl.where(empty, 1.0, l_i)
    _store_rows(O + b * sob + h * soh, rows, som, LQ, HEAD_DIM, acc0 / l_safe[:, None], acc1 / l_safe[:, None],
                BLOCK_D0, BLOCK_D1)
    # +inf for a row without keys makes every recomputed probability exp2(s - lse) exactly 0 in backward
    lse = tl.where(empty, float("inf"), m_i + tl.log2(l_safe))
    tl.store(LSE + bh * LQ + rows, lse, mask=rows < LQ)


@triton.jit
def _bwd_delta_kernel(O, DO, DELTA, sob, soh, som, sdb, sdh, sdm, H, LQ, HEAD_DIM,
                      BLOCK_M: tl.constexpr, BLOCK_D0: tl.constexpr, BLOCK_D1: tl.constexpr):
    """delta_i = sum_d dO_id * O_id, the row term of the softmax backward."""
    bh, b, h = _program_head(H)
    rows = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    o0, o1 = _load_rows(O + b * sob + h * soh, rows, som, LQ, HEAD_DIM, True, BLOCK_D0, BLOCK_D1)
    do0, do1 = _load_rows(DO + b * sdb + h * sdh, rows, sdm, LQ, HEAD_DIM, True, BLOCK_D0, BLOCK_D1)
    delta = tl.sum(o0 * do0, 1)
    if BLOCK_D1 > 0:
        delta += tl.sum(o1 * do1, 1)
    tl.store(DELTA + bh * LQ + rows, delta, mask=rows < LQ)


@triton.jit
def _bwd_dkdv_kernel(Q, K, V, MASK, DO, LSE, DELTA, DK, DV,
                     sqb, sqh, sqm, skb, skh, skn, svb, svh, svn, sdb, sdh, sdm, smb, sgb, sgh, sgn,
                     H, LQ, LK, HEAD_DIM, qk_scale, scale, LQ_TUNE, LK_TUNE,
                     HAS_MASK: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                     BLOCK_D0: tl.constexpr, BLOCK_D1: tl.constexpr):
    """One key block: dV = P^T dO and dK = scale * dS^T Q, looping over every query block."""
    bh, b, h = _program_head(H)
    Q, K, V = _head_bases(Q, K, V, b, h, sqb, sqh, skb, skh, svb, svh)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    k0, k1, v0, v1, valid = _key_block(K, V, MASK + b * smb, cols, skn, svn, LK, HEAD_DIM, HAS_MASK, UPCAST,
                                       BLOCK_D0, BLOCK_D1)
    dk0 = tl.zeros([BLOCK_N, BLOCK_D0], tl.float32)
    dv0 = tl.zeros([BLOCK_N, BLOCK_D0], tl.float32)
    dk1, dv1 = dk0, dv0
    if BLOCK_D1 > 0:
        dk1 = tl.zeros([BLOCK_N, BLOCK_D1], tl.float32)
        dv1 = tl.zeros([BLOCK_N, BLOCK_D1], tl.float32)
    for start_m in range(0, LQ, BLOCK_M):
        q0, q1, do0, do1, lse, delta = _query_block(Q, DO + b * sdb + h * sdh, LSE + bh * LQ, DELTA + bh * LQ,
                                                    start_m + offs_m, sqm, sdm, LQ, HEAD_DIM, UPCAST,
                                                    BLOCK_D0, BLOCK_D1)
        # transposed (BLOCK_N, BLOCK_M) tiles: dV and dK accumulate over queries without a transpose of P
        s_t = _dot_over_head_dim(k0, k1, q0, q1, PRECISION, BLOCK_D1) * qk_scale
        p_t = tl.where(valid[:, None], tl.exp2(s_t - lse[None, :]), 0.0)
        if BLOCK_D1 > 0:
            dv1 += tl.dot(p_t.to(do1.dtype), do1, input_precision=PRECISION)
        dv0 += tl.dot(p_t.to(do0.dtype), do0, input_precision=PRECISION)
        dp_t = _dot_over_head_dim(v0, v1, do0, do1, PRECISION, BLOCK_D1)
        ds_t = p_t * (dp_t - delta[None, :])
        if BLOCK_D1 > 0:
            dk1 += tl.dot(ds_t.to(q1.dtype), q1, input_precision=PRECISION)
        dk0 += tl.dot(ds_t.to(q0.dtype), q0, input_precision=PRECISION)
    # dk and dv are contiguous tensors of one shape: one set of strides
    _store_rows(DK + b * sgb + h * sgh, cols, sgn, LK, HEAD_DIM, dk0 * scale, dk1 * scale, BLOCK_D0, BLOCK_D1)
    _store_rows(DV + b * sgb + h * sgh, cols, sgn, LK, HEAD_DIM, dv0, dv1, BLOCK_D0, BLOCK_D1)


@triton.jit
def _bwd_dq_kernel(Q, K, V, MASK, DO, LSE, DELTA, DQ,
                   sqb, sqh, sqm, skb, skh, skn, svb, svh, svn, sdb, sdh, sdm, smb, sgb, sgh, sgn,
                   H, LQ, LK, HEAD_DIM, qk_scale, scale, LQ_TUNE, LK_TUNE,
                   HAS_MASK: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D0: tl.constexpr, BLOCK_D1: tl.constexpr):
    """One query block: dQ = scale * dS K, looping over every key block."""
    bh, b, h = _program_head(H)
    Q, K, V = _head_bases(Q, K, V, b, h, sqb, sqh, skb, skh, svb, svh)
    rows = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    q0, q1, do0, do1, lse, delta = _query_block(Q, DO + b * sdb + h * sdh, LSE + bh * LQ, DELTA + bh * LQ,
                                                rows, sqm, sdm, LQ, HEAD_DIM, UPCAST, BLOCK_D0, BLOCK_D1)
    dq0 = tl.zeros([BLOCK_M, BLOCK_D0], tl.float32)
    dq1 = dq0
    if BLOCK_D1 > 0:
        dq1 = tl.zeros([BLOCK_M, BLOCK_D1], tl.float32)
    for start_n in range(0, LK, BLOCK_N):
        k0, k1, v0, v1, valid = _key_block(K, V, MASK + b * smb, start_n + offs_n, skn, svn, LK, HEAD_DIM,
                                           HAS_MASK, UPCAST, BLOCK_D0, BLOCK_D1)
        # -inf scores at invalid keys and +inf lse at empty rows both give probability exp2(-inf) = 0
        p = tl.exp2(_scores(q0, q1, k0, k1, valid, qk_scale, PRECISION, BLOCK_D1) - lse[:, None])
        dp = _dot_over_head_dim(do0, do1, v0, v1, PRECISION, BLOCK_D1)
        ds = p * (dp - delta[:, None])
        if BLOCK_D1 > 0:
            dq1 += tl.dot(ds.to(k1.dtype), k1, input_precision=PRECISION)
        dq0 += tl.dot(ds.to(k0.dtype), k0, input_precision=PRECISION)
    _store_rows(DQ + b * sgb + h * sgh, rows, sgn, LQ, HEAD_DIM, dq0 * scale, dq1 * scale, BLOCK_D0, BLOCK_D1)


# -- block sizes ---------------------------------------------------------------------------------------

def _hopper_configs(forward: bool) -> list:
    # Short v2 sequences (12-13 temporal, 77-99 spatial) want small query tiles; 393-917 tokens want big ones.
    sizes = [(16, 32), (32, 32), (64, 32), (64, 64), (128, 32), (128, 64)] if forward else \
        [(16, 32), (32, 32), (32, 64), (64, 32), (64, 64)]
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s)
            for m, n in sizes for w in (4, 8) for s in (2, 3) if not (w == 8 and m * n < 64 * 64)]


def _fitting_configs(configs: list, nargs: dict, **kwargs) -> list:
    """The configs whose tiles are no longer than the (rounded) sequences, so that the CLS query, the
    sorter's 4 queries and the 12-13 temporal tokens are not tuned over 128-row tiles of padding."""
    fitting = [c for c in configs if c.kwargs["BLOCK_M"] <= max(16, nargs["LQ_TUNE"])
               and c.kwargs["BLOCK_N"] <= max(32, nargs["LK_TUNE"])]
    return fitting or configs


def _autotuned(kernel, forward: bool):
    return triton.autotune(configs=_hopper_configs(forward), key=["LQ_TUNE", "LK_TUNE", "HEAD_DIM"],
                           prune_configs_by={"early_config_prune": _fitting_configs}, cache_results=True)(kernel)


_fwd_tuned = _autotuned(_fwd_kernel, True)
_dkdv_tuned = _autotuned(_bwd_dkdv_kernel, False)
_dq_tuned = _autotuned(_bwd_dq_kernel, False)


def _pow2(n: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, triton.next_power_of_2(n)))


def default_blocks(lq: int, lk: int, head_dim: int) -> tuple[int, int]:
    """(BLOCK_M, BLOCK_N) without autotuning: tiles no larger than the sequences, 64 x 64 at most
    (64 x 32 past head dim 64, to stay inside the registers of pre-Hopper parts)."""
    return _pow2(lq, 16, 64), _pow2(lk, 16, 64 if head_dim <= 64 else 32)


# Without autotuning: 4 warps at every head dim. Triton lays chained dots out with warps along the rows,
# 16 rows each, so 8 warps on the default tiles (<= 64 rows) redo each other's rows: compiled for sm_80 at
# 64 x 32 and 16 x 32 tiles, head dim 80 issued 1.6-4.0x its useful MMA work padded on 8 warps, 1.0-1.6x
# split on 4 (PTX instruction counts, not timings).
LAUNCH_OPTS = dict(num_warps=4, num_stages=2)


def _use_autotune(device: torch.device) -> bool:
    return device.type == "cuda" and not INTERPRETED and torch.cuda.get_device_capability(device)[0] == 9


# -- build failures ------------------------------------------------------------------------------------

_TRITON_DIR = Path(triton.__file__).resolve().parent
_failed: dict[tuple, str] = {}  # variant -> why its kernels could not be built


def is_build_error(exc: BaseException) -> bool:
    """Whether ``exc`` says a kernel cannot be built here: Triton's compile, resource and ptxas errors, or
    a RuntimeError raised inside Triton's compiler (an MLIR/LLVM pass that cannot lower for this GPU).
    Everything else (a CUDA error at run time, running out of memory, the interpreter's errors) is not."""
    if isinstance(exc, (CompilationError, OutOfResources, PTXASError, AutotunerError)):
        return True
    if not isinstance(exc, RuntimeError) or exc.__traceback__ is None:
        return False
    where = Path(traceback.extract_tb(exc.__traceback__)[-1].filename).resolve()
    return where.is_relative_to(_TRITON_DIR / "compiler") or \
        (where.is_relative_to(_TRITON_DIR / "backends") and where.name == "compiler.py")


def _variant(q: torch.Tensor, k: torch.Tensor, key_padding_mask, blocks, head_blocks) -> tuple:
    """What decides which kernels a call compiles: dtype, matmul precision, head dim and its lane blocks,
    padding, tiles (fixed, or autotuned for the length buckets)."""
    lq, d = q.shape[-2], q.shape[-1]
    lk = k.shape[-2]
    meta = _meta(q, key_padding_mask, head_blocks)
    if blocks is None and _use_autotune(q.device):
        tiles = ("autotuned", triton.next_power_of_2(lq), triton.next_power_of_2(lk))
    else:
        tiles = ("fixed", *(blocks or default_blocks(lq, lk, d)))
    return (q.dtype, meta["PRECISION"], d, meta["BLOCK_D0"] + meta["BLOCK_D1"], meta["HAS_MASK"], tiles)


def _describe(variant: tuple) -> str:
    dtype, precision, d, lanes, has_mask, (kind, m, n) = variant
    tiles = f"autotuned for lengths {m} x {n}" if kind == "autotuned" else f"tiles {m} x {n}"
    return (f"{str(dtype).removeprefix('torch.')}, {precision}, head dim {d} ({lanes} lanes), "
            f"{'key padding' if has_mask else 'no padding'}, {tiles}")


def build_failure(q, k, key_padding_mask=None, blocks=None, head_blocks=None) -> Optional[str]:
    """Why the kernels for this call failed to build earlier in this process, or None."""
    return _failed.get(_variant(q, k, key_padding_mask, blocks, head_blocks))


def _record_failure(variant: tuple, exc: BaseException) -> None:
    # a CompilationError's str() starts with the source excerpt; its error_message says what went wrong
    text = getattr(exc, "error_message", None) or str(exc)
    first_line = next((line.strip() for line in text.splitlines() if line.strip()), "")[:300]
    why = f"failed to build for {_describe(variant)} ({type(exc).__name__}: {first_line})"
    _failed[variant] = why
    # the dispatch's once-per-message log, so that its later refusal of the variant is not a second line
    note_once(f"attention: triton {why}; using sdpa", logging.WARNING)


def _allowed_keys(key_padding_mask: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if key_padding_mask is None else key_padding_mask[:, None, None, :]


def _sdpa_forward(q, k, v, key_padding_mask, scale):
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=_allowed_keys(key_padding_mask), scale=scale)
    # contiguous like the kernel's output (the fake kernel promises those strides to torch.compile); a nan
    # log-sum-exp: the backward of a failed variant never reads it (it recomputes in fp32)
    return out.contiguous(), torch.full(q.shape[:3], float("nan"), device=q.device, dtype=torch.float32)


def _explicit_backward(grad_out, q, k, v, key_padding_mask, scale):
    """dq, dk, dv in fp32 from the materialised probabilities (autograd is off inside a custom op)."""
    qf, kf, vf, gf = (t.float() for t in (q, k, v, grad_out))
    scores = qf @ kf.transpose(-2, -1) * scale
    allowed = _allowed_keys(key_padding_mask)
    if allowed is None:
        probs = scores.softmax(-1)
    else:  # rows without a valid key: probabilities 0, so output and gradients 0
        probs = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min).softmax(-1) * allowed.any(-1, keepdim=True)
    dprobs = gf @ vf.transpose(-2, -1)
    dscores = probs * (dprobs - (probs * dprobs).sum(-1, keepdim=True))
    grads = (dscores @ kf * scale, dscores.transpose(-2, -1) @ qf * scale, probs.transpose(-2, -1) @ gf)
    return tuple(g.to(t.dtype).contiguous() for g, t in zip(grads, (q, k, v)))


# -- launchers -----------------------------------------------------------------------------------------

def _strides(t: torch.Tensor) -> tuple[int, int, int]:
    return t.stride(0), t.stride(1), t.stride(2)


def _inner_contiguous(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def _meta(q, key_padding_mask, head_blocks=None) -> dict:
    """The constexpr arguments of a call."""
    # fp32 follows torch's matmul setting: exact ("ieee") unless the run allowed TF32
    tf32 = q.dtype == torch.float32 and q.is_cuda and torch.backends.cuda.matmul.allow_tf32
    block_d0, block_d1 = head_blocks or head_dim_blocks(q.shape[-1])
    return dict(HAS_MASK=key_padding_mask is not None, UPCAST=INTERPRETED and q.dtype == torch.bfloat16,
                PRECISION="tf32" if tf32 else "ieee", BLOCK_D0=block_d0, BLOCK_D1=block_d1)


def _mask_arg(q, key_padding_mask) -> tuple[torch.Tensor, int]:
    """The padding mask as the kernels read it (int8) and its batch stride."""
    if key_padding_mask is None:
        return q, 0  # any pointer: never read
    mask = key_padding_mask.to(torch.int8)
    return mask, mask.stride(0)


def _check_head_blocks(head_blocks: Optional[tuple[int, int]], head_dim: int) -> None:
    if head_blocks is None:
        return
    d0, d1 = head_blocks
    if d0 < MIN_BLOCK_D or d0 & (d0 - 1) or (d1 and (d1 < MIN_BLOCK_D or d1 & (d1 - 1))) or d0 + d1 < head_dim:
        raise ValueError(f"head_blocks {head_blocks}: powers of two >= {MIN_BLOCK_D} (or 0 for the second) "
                         f"covering head dim {head_dim}")


def flash_forward(q, k, v, key_padding_mask: Optional[torch.Tensor], scale: float,
                  blocks: Optional[tuple[int, int]] = None,
                  head_blocks: Optional[tuple[int, int]] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """q (B, H, Lq, D), k/v (B, H, Lk, D) -> out (B, H, Lq, D) in q's dtype, lse (B, H, Lq) fp32 (base 2).

    CUDA tensors, or CPU tensors under TRITON_INTERPRET=1. ``blocks`` forces (BLOCK_M, BLOCK_N);
    otherwise Hopper autotunes and everything else uses :func:`default_blocks`. ``head_blocks`` forces
    the lane blocks (BLOCK_D0, BLOCK_D1) instead of :func:`head_dim_blocks` (``(128, 0)`` at head dim 80:
    the padded single block, for benchmarks)."""
    q, k, v = (_inner_contiguous(t) for t in (q, k, v))
    b, h, lq, d = q.shape
    lk = k.shape[2]
    _check_head_blocks(head_blocks, d)
    out = torch.empty(q.shape, device=q.device, dtype=q.dtype)
    lse = torch.empty((b, h, lq), device=q.device, dtype=torch.float32)
    meta = _meta(q, key_padding_mask, head_blocks)
    mask, smb = _mask_arg(q, key_padding_mask)
    args = (q, k, v, mask, out, lse, *_strides(q), *_strides(k), *_strides(v), *_strides(out), smb,
            h, lq, lk, d, scale * LOG2E, triton.next_power_of_2(lq), triton.next_power_of_2(lk))
    tuned = blocks is None and _use_autotune(q.device)
    if tuned:
        _fwd_tuned[lambda m: (b * h, triton.cdiv(lq, m["BLOCK_M"]))](*args, **meta)
    else:
        bm, bn = blocks or default_blocks(lq, lk, d)
        _fwd_kernel[(b * h, triton.cdiv(lq, bm))](*args, **meta, BLOCK_M=bm, BLOCK_N=bn, **LAUNCH_OPTS)
    return out, lse


def flash_backward(grad_out, q, k, v, out, lse, key_padding_mask: Optional[torch.Tensor], scale: float,
                   blocks: Optional[tuple[int, int]] = None, head_blocks: Optional[tuple[int, int]] = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients (dq, dk, dv) in the dtypes of q, k, v, recomputing the probabilities from ``lse``."""
    q, k, v, out, grad_out = (_inner_contiguous(t) for t in (q, k, v, out, grad_out))
    b, h, lq, d = q.shape
    lk = k.shape[2]
    _check_head_blocks(head_blocks, d)
    meta = _meta(q, key_padding_mask, head_blocks)
    mask, smb = _mask_arg(q, key_padding_mask)
    delta = torch.empty_like(lse)
    bm_delta = _pow2(lq, 16, 64)
    _bwd_delta_kernel[(b * h, triton.cdiv(lq, bm_delta))](
        out, grad_out, delta, *_strides(out), *_strides(grad_out), h, lq, d,
        BLOCK_M=bm_delta, BLOCK_D0=meta["BLOCK_D0"], BLOCK_D1=meta["BLOCK_D1"])
    dq = torch.empty(q.shape, device=q.device, dtype=q.dtype)
    dk = torch.empty(k.shape, device=k.device, dtype=k.dtype)
    dv = torch.empty(v.shape, device=v.device, dtype=v.dtype)
    inputs = (q, k, v, mask, grad_out, lse, delta)
    strides = (*_strides(q), *_strides(k), *_strides(v), *_strides(grad_out), smb)
    scalars = (h, lq, lk, d, scale * LOG2E, scale, triton.next_power_of_2(lq), triton.next_power_of_2(lk))
    tuned = blocks is None and _use_autotune(q.device)
    if tuned:
        _dkdv_tuned[lambda m: (b * h, triton.cdiv(lk, m["BLOCK_N"]))](
            *inputs, dk, dv, *strides, *_strides(dk), *scalars, **meta)
        _dq_tuned[lambda m: (b * h, triton.cdiv(lq, m["BLOCK_M"]))](
            *inputs, dq, *strides, *_strides(dq), *scalars, **meta)
    else:
        bm, bn = blocks or default_blocks(lq, lk, d)
        launch = dict(**meta, BLOCK_M=bm, BLOCK_N=bn, **LAUNCH_OPTS)
        _bwd_dkdv_kernel[(b * h, triton.cdiv(lk, bn))](
            *inputs, dk, dv, *strides, *_strides(dk), *scalars, **launch)
        _bwd_dq_kernel[(b * h, triton.cdiv(lq, bm))](*inputs, dq, *strides, *_strides(dq), *scalars, **launch)
    return dq, dk, dv


# -- autograd ------------------------------------------------------------------------------------------

def _forced(block_m, block_n, block_d0, block_d1):
    """The ops' integer arguments back to the launchers' overrides (0 = not forced)."""
    return (block_m, block_n) if block_m else None, (block_d0, block_d1) if block_d0 else None


@torch.library.custom_op("tvts::flash_attention_fwd", mutates_args=())
def _fwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: Optional[torch.Tensor],
            scale: float, block_m: int, block_n: int, block_d0: int, block_d1: int
            ) -> tuple[torch.Tensor, torch.Tensor]:
    blocks, head_blocks = _forced(block_m, block_n, block_d0, block_d1)
    variant = _variant(q, k, key_padding_mask, blocks, head_blocks)
    if variant not in _failed:
        try:
            return flash_forward(q, k, v, key_padding_mask, scale, blocks, head_blocks)
        except Exception as exc:  # noqa: BLE001 - only build errors are caught; the rest re-raise
            if not is_build_error(exc):
                raise
            _record_failure(variant, exc)
    return _sdpa_forward(q, k, v, key_padding_mask, scale)


@_fwd_op.register_fake
def _(q, k, v, key_padding_mask, scale, block_m, block_n, block_d0, block_d1):
    return q.new_empty(q.shape), q.new_empty(q.shape[:3], dtype=torch.float32)


@torch.library.custom_op("tvts::flash_attention_bwd", mutates_args=())
def _bwd_op(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
            lse: torch.Tensor, key_padding_mask: Optional[torch.Tensor], scale: float, block_m: int,
            block_n: int, block_d0: int, block_d1: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    blocks, head_blocks = _forced(block_m, block_n, block_d0, block_d1)
    variant = _variant(q, k, key_padding_mask, blocks, head_blocks)
    # failures only accumulate: a variant that has not failed yet had its forward (and lse) from the kernel
    if variant not in _failed:
        try:
            return flash_backward(grad_out, q, k, v, out, lse, key_padding_mask, scale, blocks, head_blocks)
        except Exception as exc:  # noqa: BLE001 - only build errors are caught; the rest re-raise
            if not is_build_error(exc):
                raise
            _record_failure(variant, exc)
    return _explicit_backward(grad_out, q, k, v, key_padding_mask, scale)


@_bwd_op.register_fake
def _(grad_out, q, k, v, out, lse, key_padding_mask, scale, block_m, block_n, block_d0, block_d1):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


class FlashAttention(torch.autograd.Function):
    """Saves q, k, v, the output and the log-sum-exp; backward recomputes the probabilities."""

    @staticmethod
    def forward(ctx, q, k, v, key_padding_mask, scale, block_m, block_n, block_d0, block_d1):
        out, lse = _fwd_op(q, k, v, key_padding_mask, scale, block_m, block_n, block_d0, block_d1)
        ctx.save_for_backward(q, k, v, out, lse, key_padding_mask)
        ctx.scale, ctx.forced = scale, (block_m, block_n, block_d0, block_d1)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse, key_padding_mask = ctx.saved_tensors
        dq, dk, dv = _bwd_op(grad_out, q, k, v, out, lse, key_padding_mask, ctx.scale, *ctx.forced)
        return dq, dk, dv, None, None, None, None, None, None


def refusal(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
            key_padding_mask: Optional[torch.Tensor] = None) -> Optional[str]:
    """Why :func:`flash_attention` cannot run these inputs (or failed to build for them), or None."""
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
    return build_failure(q, k, key_padding_mask)


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    key_padding_mask: Optional[torch.Tensor] = None, scale: Optional[float] = None,
                    blocks: Optional[tuple[int, int]] = None,
                    head_blocks: Optional[tuple[int, int]] = None) -> torch.Tensor:
    """softmax(q k^T * scale, masked) v. q (B, H, Lq, D); k, v (B, H, Lk, D); key_padding_mask (B, Lk) bool,
    True where the key is valid. Returns (B, H, Lq, D) in q's dtype. ``blocks`` forces (BLOCK_M, BLOCK_N),
    ``head_blocks`` the lane blocks (BLOCK_D0, BLOCK_D1) (see :func:`flash_forward`)."""
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    block_m, block_n = blocks or (0, 0)
    block_d0, block_d1 = head_blocks or (0, 0)
    return FlashAttention.apply(q, k, v, key_padding_mask, scale, block_m, block_n, block_d0, block_d1)
