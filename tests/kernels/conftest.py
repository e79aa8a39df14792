"""Inputs and the reference check shared by the attention tests (dispatch and Triton kernel).

Handed to the tests as fixtures (conftest modules are not imported by tests). Nothing here imports
triton: test_triton.py must set TRITON_INTERPRET before triton is first imported.
"""
from __future__ import annotations

import pytest
import torch

from tvts.kernels.attention import attention_reference


def make_inputs(b, h, lq, lk, d, padded, dtype, device="cpu", seed=0):
    """q (B, H, Lq, D), k, v (B, H, Lk, D) requiring grad, and a (B, Lk) key padding mask or None.

    The mask pads random keys plus a whole leading run (up to 16 keys: the first key block of the
    multi-block Triton cases, so the online softmax starts from nothing) and keeps the last key valid."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, n, d, generator=g).to(device, dtype).requires_grad_() for n in (lq, lk, lk))
    mask = None
    if padded:
        mask = torch.rand(b, lk, generator=g) > 0.3
        mask[:, :min(16, lk // 2)] = False
        mask[:, -1] = True
        mask = mask.to(device)
    return q, k, v, mask


def check_against_reference(run, q, k, v, mask, tol):
    """``run(q, k, v, mask)`` and its gradients against the fp32 reference, in the inputs' dtype."""
    out = run(q, k, v, mask)
    grad = torch.randn_like(out)
    got = (out, *torch.autograd.grad(out, (q, k, v), grad))
    ref = attention_reference(q, k, v, key_padding_mask=mask)
    want = (ref, *torch.autograd.grad(ref, (q, k, v), grad))
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, want):
        assert a.dtype == q.dtype and a.shape == b.shape, name
        err = (a.float() - b.float()).abs().max().item()
        assert torch.allclose(a.float(), b.float(), atol=tol, rtol=tol), (name, err)


@pytest.fixture(name="make_inputs")
def make_inputs_fixture():
    return make_inputs


@pytest.fixture(name="check_against_reference")
def check_against_reference_fixture():
    return check_against_reference
