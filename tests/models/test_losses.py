import math

import torch
import torch.nn.functional as F

from tvts.models.losses import sort_accuracy, sort_loss, vtc_loss
from tvts.testing import spawn_ranks


def _hand_vtc(v, t, temp):
    """-(mean_i log softmax_j(s_ij / temp)[i]) - (mean_j log softmax_i(s_ij / temp)[j]), with loops."""
    n = v.shape[0]
    sim = [[float(F.cosine_similarity(t[i], v[j], dim=0)) / temp for j in range(n)] for i in range(n)]
    rows = sum(sim[i][i] - math.log(sum(math.exp(x) for x in sim[i])) for i in range(n)) / n
    cols = sum(sim[j][j] - math.log(sum(math.exp(sim[i][j]) for i in range(n))) for j in range(n)) / n
    return -rows - cols


def test_vtc_equals_hand_computation():
    g = torch.Generator().manual_seed(0)
    v, t = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    assert abs(vtc_loss(v, t, 0.05).item() - _hand_vtc(v, t, 0.05)) < 1e-4
    # perfectly aligned, well-separated pairs give ~0 loss; the directions are summed (2 x one direction)
    eye = torch.eye(4)
    assert vtc_loss(eye, eye, 0.05).item() < 1e-6
    same = torch.ones(4, 3)
    assert abs(vtc_loss(same, same, 0.05).item() - 2 * math.log(4)) < 1e-5


def test_vtc_runs_in_fp32_under_bf16_autocast():
    """Autocast would run the similarity matmul in bf16 (logits up to 1/0.05 = 20, steps of ~0.125)."""
    g = torch.Generator().manual_seed(0)
    video, text = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    want = vtc_loss(video, text)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = vtc_loss(video, text)
    assert got.dtype == torch.float32 and torch.equal(got, want)


def test_sort_loss_and_accuracy():
    logits = torch.tensor([[[5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0]], [[0, 5.0, 0], [5.0, 0, 0], [5.0, 0, 0]]])
    labels = torch.tensor([[0, 1, 2], [1, 0, 2]])
    acc, acc_all = sort_accuracy(logits, labels)
    assert abs(acc.item() - 5 / 6) < 1e-6 and abs(acc_all.item() - 0.5) < 1e-6
    ref = F.cross_entropy(logits.reshape(-1, 3), labels.reshape(-1))
    assert torch.allclose(sort_loss(logits, labels), ref)


def _data(seed=0, n=8, d_in=6, d=4):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d_in, generator=g), torch.randn(n, d_in, generator=g), torch.randn(d, d_in, generator=g)


def _loss_and_grad(x_v, x_t, w):
    w = w.clone().requires_grad_(True)
    loss = vtc_loss(x_v @ w.T, x_t @ w.T, 0.05)
    loss.backward()
    return loss.detach(), w.grad


def _rank_fn(rank, world):
    import torch.distributed as dist

    x_v, x_t, w = _data()
    rows = x_v.shape[0] // world
    sl = slice(rank * rows, (rank + 1) * rows)
    loss, grad = _loss_and_grad(x_v[sl], x_t[sl], w)
    dist.all_reduce(grad)
    return loss, grad / world  # what DDP / FSDP / ZeRO do with parameter gradients: average over ranks


def test_gather_with_grad_on_two_ranks_equals_full_batch():
    full_loss, full_grad = _loss_and_grad(*_data())
    results = spawn_ranks(_rank_fn, 2)
    for loss, grad in results:
        assert torch.allclose(loss, full_loss, atol=1e-5)
        assert torch.allclose(grad, full_grad, atol=1e-5)
