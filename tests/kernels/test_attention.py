"""The attention dispatch: every backend against the fp32 reference, the auto rules and the fallbacks.

The Triton kernel has its own file (test_triton.py): it runs interpreted on CPU, which must be decided
before triton is imported.
"""
import importlib
import logging
from types import SimpleNamespace

import pytest
import torch

from tvts.kernels.attention import attention, attention_reference, auto_order, choose_backend, set_default_backend
from tvts.kernels.reference import einsum_attention

attn_mod = importlib.import_module("tvts.kernels.attention")  # the package re-exports a function of that name
notes = importlib.import_module("tvts.kernels.notes")

CUDA = torch.cuda.is_available()

# (B, H, Lq, Lk, D, key padding): odd lengths, Lq != Lk, head dim 80, padding
CASES = {
    "odd_lq_ne_lk": (2, 2, 13, 29, 32, False),
    "hd80_padding": (2, 2, 17, 17, 80, True),
    "sort_readout": (2, 2, 4, 37, 64, True),  # K transcript queries over all tokens
}
TOL = {torch.float32: 2e-5, torch.bfloat16: 3e-2, torch.float16: 5e-3}


def _check(backend, case, dtype, make_inputs, check_against_reference, device="cpu"):
    q, k, v, mask = make_inputs(*CASES[case], dtype, device)
    check_against_reference(lambda *qkvm: attention(*qkvm, backend=backend), q, k, v, mask, TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("backend", ["sdpa", "auto"])
def test_cpu_backends_match_reference(backend, case, dtype, make_inputs, check_against_reference):
    _check(backend, case, dtype, make_inputs, check_against_reference)


@pytest.mark.parametrize("backend", ["sdpa", "math"])
def test_query_without_valid_keys_gives_zeros(backend, make_inputs):
    q, k, v, _ = make_inputs(2, 1, 3, 5, 16, False, torch.float32)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1] = False
    out = attention(q, k, v, key_padding_mask=mask, backend=backend)
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    grads = torch.autograd.grad(out.sum(), (q, k, v))
    assert all(torch.isfinite(g_).all() for g_ in grads)
    assert torch.equal(grads[0][1], torch.zeros_like(grads[0][1]))


def test_causal_is_bottom_right_aligned_in_every_cpu_backend(make_inputs):
    q, k, v, _ = make_inputs(1, 2, 5, 9, 16, False, torch.float32)
    ref = attention_reference(q, k, v, causal=True)
    assert torch.allclose(attention(q, k, v, causal=True, backend="sdpa"), ref, atol=1e-6)
    # the last query sees every key, the first sees Lk - Lq + 1 of them
    full = attention_reference(q, k, v)
    assert torch.allclose(ref[..., -1, :], full[..., -1, :], atol=1e-6)
    q5, k5, v5, _ = make_inputs(1, 2, 5, 5, 16, False, torch.float32)  # Lq == Lk takes sdpa's is_causal path
    assert torch.allclose(attention(q5, k5, v5, causal=True, backend="sdpa"),
                          attention_reference(q5, k5, v5, causal=True), atol=1e-6)


def test_official_einsum_baseline_matches_reference(make_inputs):
    q, k, v, _ = make_inputs(1, 2, 7, 11, 32, False, torch.float32)
    assert torch.allclose(einsum_attention(q, k, v), attention_reference(q, k, v), atol=1e-6)


@pytest.mark.parametrize("backend", ["flash_attn", "xformers"])
def test_gpu_only_backends_fall_back_to_sdpa_with_one_line(backend, caplog, make_inputs):
    q, k, v, _ = make_inputs(1, 1, 4, 6, 16, False, torch.float32)
    notes.logged.clear()
    with caplog.at_level(logging.INFO, logger="tvts.kernels.attention"):
        out = attention(q, k, v, backend=backend)
        attention(q, k, v, backend=backend)
    assert torch.allclose(out, attention_reference(q, k, v), atol=1e-6)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and backend in lines[0] and lines[0].endswith("using sdpa")


def test_unknown_backend_is_an_error(make_inputs):
    q, k, v, _ = make_inputs(1, 1, 4, 4, 16, False, torch.float32)
    with pytest.raises(ValueError, match="attention backend"):
        attention(q, k, v, backend="cudnn")
    with pytest.raises(ValueError, match="attention backend"):
        set_default_backend("cudnn")


def test_default_backend_reaches_calls_without_backend(monkeypatch, make_inputs):
    monkeypatch.setattr(attn_mod, "_default_backend", "auto")
    q, k, v, _ = make_inputs(1, 1, 4, 4, 16, False, torch.float32)
    set_default_backend("math")
    assert choose_backend(q, k, v) == "math"
    set_default_backend("auto")
    assert choose_backend(q, k, v) == "sdpa"


def _fake(device_is_cuda, dtype, lq, d=64):
    """A stand-in for a tensor: the auto rules read only is_cuda, dtype and shape (CPU twin of the GPU rules)."""
    return SimpleNamespace(is_cuda=device_is_cuda, dtype=dtype, shape=(2, 12, lq, d))


def test_auto_rules():
    mask = torch.ones(2, 5, dtype=torch.bool)
    assert auto_order(_fake(False, torch.bfloat16, 393), mask, False) == ("sdpa",)
    assert auto_order(_fake(True, torch.float32, 393), None, False) == ("sdpa",)
    assert auto_order(_fake(True, torch.float32, 77), None, True) == ("sdpa",)
    assert auto_order(_fake(True, torch.bfloat16, 77), None, True) == ("flash_attn", "sdpa")
    assert auto_order(_fake(True, torch.bfloat16, 393), mask, False)[0] == "triton"
    assert auto_order(_fake(True, torch.float16, 12), None, False) == ("triton", "sdpa")  # v2 temporal
    assert auto_order(_fake(True, torch.bfloat16, 913, 80), None, False) == ("flash_attn", "sdpa")


def test_auto_walks_its_order_past_refusals(monkeypatch, caplog, make_inputs):
    monkeypatch.setattr(attn_mod, "auto_order", lambda q, m, c: ("triton", "flash_attn", "sdpa"))
    monkeypatch.setitem(attn_mod._REFUSE, "triton", lambda *a: "refuses this shape (test)")
    monkeypatch.setitem(attn_mod._REFUSE, "flash_attn", lambda *a: "is not installed (test)")
    notes.logged.clear()
    q, k, v, _ = make_inputs(1, 1, 4, 4, 16, False, torch.float32)
    with caplog.at_level(logging.INFO, logger="tvts.kernels.attention"):
        assert choose_backend(q, k, v, backend="auto") == "sdpa"
        assert choose_backend(q, k, v, backend="auto") == "sdpa"
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["attention: triton refuses this shape (test); using flash_attn",
                     "attention: flash_attn is not installed (test); using sdpa",
                     "attention auto: cpu float32, head dim 16, Lq<=16 -> sdpa"]


# -- GPU: the same checks on CUDA for every backend present (CPU twin: test_cpu_backends_match_reference) --

def _installed(backend):
    return backend in ("sdpa", "auto") or attn_mod._installed(backend)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("backend", ["sdpa", "auto", "flash_attn", "xformers"])
@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_gpu_backends_match_reference(backend, case, dtype, make_inputs, check_against_reference):
    if not _installed(backend):
        pytest.skip(f"{backend} is not installed")
    if backend != "auto":
        q, k, v, mask = make_inputs(*CASES[case], dtype, "cuda")
        assert choose_backend(q, k, v, mask, backend=backend) == backend
    _check(backend, case, dtype, make_inputs, check_against_reference, "cuda")
