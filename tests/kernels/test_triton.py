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
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available() and "triton" not in sys.modules:
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")

import triton  # noqa: E402
from triton.compiler.errors import CompilationError  # noqa: E402
from triton.runtime.errors import InterpreterError, OutOfResources, PTXASError  # noqa: E402

from tvts.kernels import triton_attention as ta  # noqa: E402
from tvts.kernels.attention import attention, attention_reference, choose_backend  # noqa: E402

attn_mod = importlib.import_module("tvts.kernels.attention")
notes = importlib.import_module("tvts.kernels.notes")

interpreted = pytest.mark.skipif(not ta.INTERPRETED, reason="kernels are compiled in this process; "
                                 "the interpreter twins need TRITON_INTERPRET=1 before triton is imported")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy 2.3 vs the interpreter
# tests that run wherever the kernels run: interpreted on CPU tensors, or compiled on a GPU
KERNEL_DEVICE = "cpu" if ta.INTERPRETED else "cuda"
kernels_run = pytest.mark.skipif(not ta.INTERPRETED and not torch.cuda.is_available(),
                                 reason="kernels neither interpreted nor on a GPU in this process")
TOL = {torch.float32: 1e-5, torch.bfloat16: 3e-2, torch.float16: 5e-3}

# (B, H, Lq, Lk, D, key padding, blocks): odd lengths, Lq != Lk, padding, several blocks; head dims 80, 48
# and 96 take two lane blocks (64 + 16, 32 + 16, 64 + 32)
SHAPES = {
    "odd_lq_ne_lk": (1, 2, 37, 53, 32, False, None),
    "hd80_padding": (2, 1, 20, 45, 80, True, None),
    "hd80_multi_block_padding": (1, 1, 40, 50, 80, True, (16, 16)),
    "hd48_padding": (1, 2, 24, 40, 48, True, None),
    "hd96_padding": (2, 1, 17, 33, 96, True, None),
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
@pytest.mark.parametrize("shape", ["hd80_padding", "hd80_multi_block_padding", "multi_block_padding"])
def test_half_matches_reference(shape, dtype, make_inputs, check_against_reference):
    _check(shape, dtype, "cpu", make_inputs, check_against_reference)


def test_head_dim_lane_blocks():
    blocks = {d: ta.head_dim_blocks(d) for d in (8, 16, 24, 32, 40, 48, 64, 72, 80, 96, 112, 128)}
    assert blocks == {8: (16, 0), 16: (16, 0), 24: (32, 0), 32: (32, 0), 40: (32, 16), 48: (32, 16), 64: (64, 0),
                      72: (64, 16), 80: (64, 16), 96: (64, 32), 112: (128, 0), 128: (128, 0)}


@kernels_run
def test_split_head_dim_equals_one_padded_block(make_inputs):
    # head dim 80 as 64 + 16 lanes against the padded 128-lane block: same output, lse and gradients
    q, k, v, mask = make_inputs(1, 2, 20, 37, 80, True, torch.float32, KERNEL_DEVICE)
    grad = torch.randn_like(q)
    results = []
    for head_blocks in (None, (128, 0)):
        out, lse = ta.flash_forward(q, k, v, mask, 0.1, head_blocks=head_blocks)
        results.append((out, lse, *ta.flash_backward(grad, q, k, v, out, lse, mask, 0.1, head_blocks=head_blocks)))
    for name, split, padded in zip(("out", "lse", "dq", "dk", "dv"), *results):
        assert torch.allclose(split, padded, atol=1e-6, rtol=0), name


@interpreted
@pytest.mark.parametrize("d", [32, 80])
def test_log_sum_exp_and_custom_scale(d, make_inputs):
    q, k, v, mask = make_inputs(1, 2, 9, 21, d, True, torch.float32, "cpu")
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
    notes.logged.clear()
    wide = torch.randn(1, 1, 6, 160)
    with caplog.at_level(logging.INFO, logger="tvts.kernels.attention"):
        assert choose_backend(q, k, v, causal=True, backend="triton") == "sdpa"
        assert choose_backend(wide, wide, wide, backend="triton") == "sdpa"
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["attention: triton is non-causal only; using sdpa",
                     "attention: triton supports head dims up to 128, got 160; using sdpa"]
    # auto never sends CPU work to the interpreter
    assert choose_backend(q, k, v, mask, backend="auto") == "sdpa"


# -- kernels that fail to build: sdpa instead, one line, never retried ---------------------------------

@pytest.fixture(name="no_failures_yet")
def no_failures_yet_fixture(monkeypatch):
    monkeypatch.setattr(ta, "_failed", {})
    notes.logged.clear()


def _lines(caplog):
    return [r.getMessage() for r in caplog.records]


@kernels_run
def test_forward_build_failure_runs_sdpa_with_one_line(monkeypatch, caplog, make_inputs, no_failures_yet):
    launches = []

    def out_of_shared_memory(*args, **kwargs):
        launches.append(args)
        raise OutOfResources(262144, 232448, "shared memory")

    monkeypatch.setattr(ta, "flash_forward", out_of_shared_memory)
    q, k, v, mask = make_inputs(2, 2, 12, 13, 80, True, torch.float32, KERNEL_DEVICE)
    grad = torch.randn(2, 2, 12, 80, device=KERNEL_DEVICE)
    with caplog.at_level(logging.INFO, logger="tvts.kernels.attention"):
        outs = [attention(q, k, v, mask, backend="triton") for _ in range(3)]
        grads = torch.autograd.grad(outs[0], (q, k, v), grad)  # the explicit fp32 backward of a failed variant
        assert choose_backend(q, k, v, mask, backend="triton") == "sdpa"
    assert len(launches) == 1  # not retried
    sdpa = attention(q, k, v, mask, backend="sdpa")
    assert all(torch.equal(out, sdpa) for out in outs)
    ref = attention_reference(q, k, v, mask)
    for got, want in zip(grads, torch.autograd.grad(ref, (q, k, v), grad)):
        assert torch.allclose(got, want, atol=1e-5)
    [line] = _lines(caplog)
    assert line.startswith("attention: triton failed to build for float32, ieee, head dim 80 (80 lanes), key padding")
    assert "OutOfResources: out of resource: shared memory" in line and line.endswith("; using sdpa")
    assert ta.build_failure(q, k, None) is None  # another variant (no padding) is not refused


@kernels_run
def test_backward_build_failure_gives_the_reference_gradients(monkeypatch, caplog, make_inputs,
                                                             check_against_reference, no_failures_yet):
    def unsupported(*args, **kwargs):
        raise CompilationError(None, None, "bf16 dot needs compute capability 80")

    monkeypatch.setattr(ta, "flash_backward", unsupported)
    q, k, v, mask = make_inputs(1, 1, 12, 29, 48, True, torch.float32, KERNEL_DEVICE)
    with caplog.at_level(logging.INFO, logger="tvts.kernels.attention"):
        # the forward ran the kernel, its backward failed to build: gradients from the fp32 formula
        check_against_reference(lambda *qkvm: attention(*qkvm, backend="triton"), q, k, v, mask, 1e-5)
        assert choose_backend(q, k, v, mask, backend="triton") == "sdpa"
    [line] = _lines(caplog)
    assert "(CompilationError: bf16 dot needs compute capability 80); using sdpa" in line


@kernels_run
def test_build_errors_are_told_from_other_errors(monkeypatch, make_inputs, no_failures_yet):
    compiler_file = Path(triton.__file__).parent / "compiler" / "compiler.py"
    try:  # what an MLIR pass that cannot lower for this GPU raises, from inside Triton's compiler
        exec(compile("raise RuntimeError('PassManager::run failed')", str(compiler_file), "exec"))
    except RuntimeError as exc:
        from_compiler = exc
    try:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")
    except RuntimeError as exc:
        at_run_time = exc
    assert ta.is_build_error(from_compiler) and ta.is_build_error(PTXASError("ptxas fatal"))
    assert ta.is_build_error(OutOfResources(300, 255, "registers"))
    assert not ta.is_build_error(at_run_time) and not ta.is_build_error(InterpreterError("index out of range"))
    assert not ta.is_build_error(torch.OutOfMemoryError("CUDA out of memory"))

    def bug(*args, **kwargs):
        raise ValueError("a bug, not a build failure")

    monkeypatch.setattr(ta, "flash_forward", bug)
    q, k, v, _ = make_inputs(1, 1, 4, 4, 16, False, torch.float32, KERNEL_DEVICE)
    with pytest.raises(ValueError, match="a bug"):
        ta.flash_attention(q, k, v)
    assert ta._failed == {}


def test_autotuning_key_is_bucketed_and_tiles_fit_the_sequences():
    for tuned, kernel in ((ta._fwd_tuned, ta._fwd_kernel), (ta._dkdv_tuned, ta._bwd_dkdv_kernel),
                          (ta._dq_tuned, ta._bwd_dq_kernel)):
        # the autotuner drops key names that are not arguments: a typo would silently tune per call
        assert tuned.keys == ["LQ_TUNE", "LK_TUNE", "HEAD_DIM"] and set(tuned.keys) <= set(kernel.arg_names)
    configs = ta._hopper_configs(True)
    short = ta._fitting_configs(configs, {"LQ_TUNE": 16, "LK_TUNE": 16})
    assert short and {(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) for c in short} == {(16, 32)}
    assert ta._fitting_configs(configs, {"LQ_TUNE": 1024, "LK_TUNE": 1024}) == configs
    sort_readout = ta._fitting_configs(configs, {"LQ_TUNE": 4, "LK_TUNE": 1024})
    assert {c.kwargs["BLOCK_M"] for c in sort_readout} == {16}


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
