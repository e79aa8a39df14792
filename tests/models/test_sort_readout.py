"""The sort readout: the sorter's last block computes only the K transcript rows, exactly as slicing the
full block's output would give them (forward and gradients), with unchanged parameters; and the fused
input of the first block (TypedConcat), bitwise equal to the official sums and concatenation."""
import pytest
import torch

from tvts.models.layers import Block
from tvts.models.sort_head import SortBlock, SortHead, TypedConcat

DIM, HEADS, K = 32, 4, 4


def _block(dtype):
    torch.manual_seed(0)
    blk = SortBlock(DIM, HEADS, mlp_ratio=4.0, eps=1e-6).to(dtype)
    with torch.no_grad():  # non-trivial norms and biases, so every slice of the fused qkv matters
        for p in blk.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return blk


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 2e-6)], ids=["fp64", "fp32"])
@pytest.mark.parametrize("padded", [False, True], ids=["dense", "key_padding"])
def test_block_readout_equals_slicing_the_full_block(dtype, tol, padded):
    blk = _block(dtype)
    x = torch.randn(3, 23 + K, DIM, dtype=dtype)
    mask = None
    if padded:
        mask = torch.rand(3, 23 + K) > 0.3
        mask[:, -K:] = True
    full = blk(x, mask)
    rows = blk(x, mask, readout=K)
    assert rows.shape == (3, K, DIM)
    assert torch.allclose(rows, full[:, -K:], atol=tol, rtol=0)


DTYPE_PAIRS = {"fp32": (torch.float32, torch.float32), "fp64": (torch.float64, torch.float64),
               "bf16_tokens_fp32_embed": (torch.bfloat16, torch.float32), "bf16": (torch.bfloat16, torch.bfloat16)}


@pytest.mark.parametrize("tokens_dtype, embed_dtype", list(DTYPE_PAIRS.values()), ids=list(DTYPE_PAIRS))
def test_typed_concat_equals_sums_and_cat_bitwise(tokens_dtype, embed_dtype):
    torch.manual_seed(0)
    video = torch.randn(3, 11, DIM, dtype=tokens_dtype, requires_grad=True)
    transcripts = torch.randn(3, K, DIM, dtype=tokens_dtype, requires_grad=True)
    type_embed = torch.randn(1, 2, DIM, dtype=embed_dtype, requires_grad=True)
    fused = TypedConcat.apply(video, transcripts, type_embed)
    ref = torch.cat([video + type_embed[:, :1], transcripts + type_embed[:, 1:]], dim=1)
    assert fused.dtype == ref.dtype and torch.equal(fused, ref)  # mixed dtypes promote, as the sums do
    grad = torch.randn_like(ref)
    inputs = (video, transcripts, type_embed)
    for got, want in zip(torch.autograd.grad(fused, inputs, grad), torch.autograd.grad(ref, inputs, grad)):
        assert got.dtype == want.dtype and torch.equal(got, want)


def test_typed_concat_skips_gradients_nobody_needs():
    video = torch.randn(2, 5, DIM, requires_grad=True)
    transcripts = torch.randn(2, K, DIM)  # detached, as the sorter receives them
    type_embed = torch.zeros(1, 2, DIM)
    (grad,) = torch.autograd.grad(TypedConcat.apply(video, transcripts, type_embed).sum(), video)
    assert torch.equal(grad, torch.ones_like(video))


def _full_head_forward(head, video, transcripts):
    """The sorter as the official code runs it: every block on every row, then slice the transcripts."""
    text = head.transcript_proj(head.prepare_transcripts(transcripts))
    x = torch.cat([video + head.type_embed[:, :1], text + head.type_embed[:, 1:]], dim=1)
    for blk in head.blocks:
        x = Block.forward(blk, x)
    return head.head(head.norm(x[:, -transcripts.shape[1]:]))


@pytest.mark.parametrize("depth", [1, 2])
def test_head_logits_and_gradients_equal_the_full_computation(depth):
    torch.manual_seed(0)
    head = SortHead(DIM, transcript_dim=24, num_windows=K, depth=depth, heads=HEADS).double()
    with torch.no_grad():
        head.type_embed.normal_()
    video = torch.randn(2, 19, DIM, dtype=torch.float64, requires_grad=True)
    transcripts = torch.randn(2, K, 24, dtype=torch.float64)
    logits = head(video, transcripts)
    params = [video, *head.parameters()]
    grads = torch.autograd.grad(logits.square().sum(), params)
    ref = _full_head_forward(head, video, transcripts)
    ref_grads = torch.autograd.grad(ref.square().sum(), params)
    assert torch.allclose(logits, ref, atol=1e-12, rtol=0)
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g, r, atol=1e-12, rtol=0)


def test_parameters_and_checkpoints_are_unchanged():
    torch.manual_seed(0)
    plain = Block(DIM, HEADS, 4.0, eps=1e-6)
    sort_block = SortBlock(DIM, HEADS, 4.0, eps=1e-6)
    assert list(plain.state_dict()) == list(sort_block.state_dict())
    sort_block.load_state_dict(plain.state_dict())  # an older checkpoint loads strictly
    x = torch.randn(1, 9, DIM)
    assert torch.equal(sort_block(x), plain(x))


def test_readout_goes_through_the_block_call():
    # per-block wrappers (FSDP2 all-gathers parameters in a forward pre-hook, torch.compile) must see it
    head = SortHead(DIM, transcript_dim=DIM, num_windows=K, depth=2, heads=HEADS)
    calls = []
    head.blocks[-1].register_forward_pre_hook(lambda mod, args, kwargs: calls.append(kwargs), with_kwargs=True)
    head(torch.randn(1, 7, DIM), torch.randn(1, K, DIM))
    assert calls == [{"readout": K}]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_block_readout_equals_slicing_in_bf16():
    # on CUDA the readout's 4-row queries take auto's short-query backend (triton when present);
    # the CPU twin is test_block_readout_equals_slicing_the_full_block
    blk = _block(torch.bfloat16).cuda()
    x = torch.randn(2, 97 + K, DIM, device="cuda", dtype=torch.bfloat16)
    full = blk(x)[:, -K:].float()
    rows = blk(x, readout=K).float()
    assert torch.allclose(rows, full, atol=3e-2, rtol=3e-2)
