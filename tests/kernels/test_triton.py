"""The Triton flash-attention kernel, forward and backward, against the fp32 reference.

Without a GPU the kernels run in Triton's interpreter: TRITON_INTERPRET=1 must be set before triton is
first imported, so this module sets it when no GPU is present and triton is not loaded yet. Shapes stay
tiny (interpreted kernels are ~1000x slower than sdpa). With a GPU the same checks run compiled
(``@pytest.mark.gpu``); the interpreter twins then need ``TRITON_INTERPRET=1 pytest tests/kernels``.
"""
import importlib
import logging
import os
import sys

import pytest
import torch

if not torch.cuda.is_available() and "triton" not in sys.modules:
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")

from tvts.kernels import triton_attention as ta  # noqa: E402
from tvts.kernels.attention import attention, attention_reference, choose_backend  # noqa: E402

attn_mod = importlib.import_module("tvts.kernels.attention")

interpreted = pytest.mark.skipif(not ta.INTERPRETED, reason="kernels are compiled in this process; "
                                 "the interpreter twins need TRITON_INTERPRET=1 before triton is imported")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy 2.3 vs the interpreter
TOL = {torch.float32: 1e-5, torch.bfloat16: 3e-2, torch.float16: 5e-3}

# (B, H, Lq, Lk, D, key padding, blocks): odd lengths, Lq != Lk, head dim 80, padding, several blocks
SHAPES = {
    "odd_lq_ne_lk": (1, 2, 37, 53, 32, False, None),
    "hd80_padding": (2, 1, 20, 45, 80, True, None),
    "multi_block_padding": (1, 1, 40, 50, 32, True, (16, 16)),
    "sort_readout": (2, 1, 4, 37, 64, True, None),
    "v2_temporal": (3, 1, 12, 13, 64, False, None),
}


def _check(shape, dtype, device, make_inputs, check_against_reference):
    *dims, padded, blocks = SHAPES[shape]
    q, k, v, mask = make_inputs(*dims, padded, dtype, device)
    check_against_reference(lambda *qkvm: ta.flash_attention(*qkvm, blocks=blocks), q, k, v, mask, TOL[dtype])


@interpreted
@pytest.mark.parametrize("shape", list(SHAPES))
def test_fp32_matches_reference(shape, make_inputs, check_against_reference):
    _check(shape, torch.float32, "cpu", make_inputs, check_against_reference)


@interpreted
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("shape", ["hd80_padding", "multi_block_padding"])
def test_half_matches_reference(shape, dtype, make_inputs, check_against_reference):
    _check(shape, dtype, "cpu", make_inputs, check_against_reference)


@interpreted
def test_log_sum_exp_and_custom_scale(make_inputs):
    q, k, v, mask = make_inputs(1, 2, 9, 21, 32, True, torch.float32, "cpu")
    out, lse = ta.flash_forward(q, k, v, mask, 0.3)
    scores = (q @ k.transpose(-2, -1) * 0.3).masked_fill(~mask[:, None, None, :], float("-inf"))
    assert torch.allclose(lse, scores.logsumexp(-1) * ta.LOG2E, atol=1e-5)  # base 2
    assert torch.allclose(out, attention_reference(q, k, v, mask, scale=0.3), atol=1e-5)


@interpreted
def test_strided_inputs_from_a_packed_projection():
    # q, k, v as Attention.split_heads makes them: views into one (B, L, 3, H, d) tensor
    qkv = torch.randn(2, 19, 3, 2, 32)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    assert not q.is_contiguous()
    assert torch.allclose(ta.flash_attention(q, k, v), attention_reference(q, k, v), atol=1e-5)


@interpreted
def test_query_without_valid_keys_gives_zeros_and_finite_gradients(make_inputs):
    q, k, v, _ = make_inputs(2, 1, 5, 20, 16, False, torch.float32, "cpu")
    mask = torch.ones(2, 20, dtype=torch.bool)
    mask[1] = False
    out = ta.flash_attention(q, k, v, mask)
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    grads = torch.autograd.grad(out.sum(), (q, k, v))
    assert all(torch.isfinite(g).all() for g in grads)
    assert torch.allclose(out, attention_reference(q, k, v, mask), atol=1e-5)


@interpreted
def test_dispatch_runs_triton_and_falls_back_where_it_refuses(caplog, make_inputs):
    q, k, v, mask = make_inputs(1, 1, 6, 10, 16, True, torch.float32, "cpu")
    assert choose_backend(q, k, v, mask, backend="triton") == "triton"
    assert torch.allclose(attention(q, k, v, mask, backend="triton"), attention_reference(q, k, v, mask), atol=1e-5)
    attn_mod._logged.clear()
    wide = torch.randn(1, 1, 6, 160)
    with caplog.at_level(logging.INFO, logger="tvts.kernels.attention"):
        assert choose_backend(q, k, v, causal=True, backend="triton") == "sdpa"
        assert choose_backend(wide, wide, wide, backend="triton") == "sdpa"
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["attention: triton is non-causal only; using sdpa",
                     "attention: triton supports head dims up to 128, got 160; using sdpa"]
    # auto never sends CPU work to the interpreter
    assert choose_backend(q, k, v, mask, backend="auto") == "sdpa"


# -- GPU: the compiled kernels (CPU twins: the interpreted tests above) ----------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or ta.INTERPRETED, reason="needs a CUDA GPU and compiled kernels")
def test_gpu_matches_reference(shape, dtype, make_inputs, check_against_reference):
    _check(shape, dtype, "cuda", make_inputs, check_against_reference)


@pytest.mark.parametrize("lq, lk, d", [(393, 393, 64), (98, 99, 64), (12, 13, 80), (4, 917, 64), (913, 913, 80)])
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or ta.INTERPRETED, reason="needs a CUDA GPU and compiled kernels")
def test_gpu_tvts_shapes_autotuned(lq, lk, d, make_inputs):
    q, k, v, _ = make_inputs(2, 4, lq, lk, d, False, torch.bfloat16, "cuda")
    out = ta.flash_attention(q, k, v)  # autotuned on Hopper, default blocks elsewhere
    grads = torch.autograd.grad(out.float().square().sum(), (q, k, v))
    ref = attention_reference(q, k, v)
    ref_grads = torch.autograd.grad(ref.float().square().sum(), (q, k, v))
    assert torch.allclose(out.float(), ref.float(), atol=3e-2, rtol=3e-2)
    for a, b in zip(grads, ref_grads):
        assert torch.allclose(a.float(), b.float(), atol=5e-2, rtol=5e-2)
