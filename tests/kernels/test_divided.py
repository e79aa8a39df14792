"""v2's divided attention (one batched call per direction, CLS key/value in every group) against an
explicit loop over the groups, forward and gradients, through every CPU backend of the dispatch."""
import importlib

import pytest
import torch

from tvts.kernels.attention import attention_reference
from tvts.models.video import DividedAttention

attn_mod = importlib.import_module("tvts.kernels.attention")


def _loop_reference(module: DividedAttention, x: torch.Tensor, slots: int, over: str) -> torch.Tensor:
    """The official semantics, one group at a time: CLS queries every token; each frame's patches (space)
    or each patch across frames (time) attend to [CLS ; that group]."""
    b, length, _ = x.shape
    n = (length - 1) // slots
    q, k, v = module.qkv(x).view(b, length, 3, module.heads, module.head_dim).permute(2, 0, 3, 1, 4)
    out = torch.zeros_like(q)
    out[:, :, :1] = attention_reference(q[:, :, :1], k, v)
    tokens = torch.arange(1, length).view(slots, n)  # token index of (frame, patch)
    for group in (tokens if over == "space" else tokens.T):
        keys = torch.cat([torch.zeros(1, dtype=torch.long), group])
        out[:, :, group] = attention_reference(q[:, :, group], k[:, :, keys], v[:, :, keys])
    return module.merge_heads(out)


# math is exact in fp64; the CPU sdpa kernel (auto) is accurate to ~3e-7 even in fp64
@pytest.mark.parametrize("backend, tol", [("auto", 2e-6), ("math", 1e-12)], ids=["auto", "math"])
@pytest.mark.parametrize("over", ["time", "space"])
def test_divided_attention_equals_a_loop_over_groups(over, backend, tol, monkeypatch):
    monkeypatch.setattr(attn_mod, "_default_backend", backend)
    torch.manual_seed(0)
    module = DividedAttention(32, 4).double()
    slots, n = 3, 5
    x = torch.randn(2, 1 + slots * n, 32, dtype=torch.float64, requires_grad=True)
    out = module(x, slots, over)
    ref = _loop_reference(module, x, slots, over)
    assert torch.allclose(out, ref, atol=tol, rtol=0)
    grad = torch.randn_like(out)
    params = [x, *module.parameters()]
    for got, want in zip(torch.autograd.grad(out, params, grad), torch.autograd.grad(ref, params, grad)):
        assert torch.allclose(got, want, atol=tol, rtol=0)
