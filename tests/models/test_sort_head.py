import torch

from tvts.models.sort_head import SortHead


def _head(**kw):
    torch.manual_seed(0)
    head = SortHead(dim=16, transcript_dim=kw.pop("transcript_dim", 16), num_windows=4, depth=2, heads=2, **kw)
    with torch.no_grad():
        head.type_embed.normal_()
    return head.eval()


def test_permutation_equivariant_over_transcripts():
    head = _head()
    video, text = torch.randn(2, 9, 16), torch.randn(2, 4, 16)
    perm = torch.tensor([2, 0, 3, 1])
    out = head(video, text)
    assert out.shape == (2, 4, 4)
    assert torch.allclose(head(video, text[:, perm]), out[:, perm], atol=1e-5)


def test_readout_depends_on_video():
    head = _head()
    text = torch.randn(1, 4, 16)
    assert not torch.allclose(head(torch.randn(1, 9, 16), text), head(torch.randn(1, 9, 16), text), atol=1e-4)


def test_transcript_adapter_and_centering():
    head = _head(transcript_dim=24, transcript_norm="center_l2").train()
    text = torch.randn(3, 4, 24) + 5.0  # anisotropic: a large shared offset
    head(torch.randn(3, 9, 16), text)
    assert torch.allclose(head.transcript_mean, text.reshape(-1, 24).mean(0), atol=1e-5)  # first batch sets it
    prepared = head.prepare_transcripts(text)
    assert torch.allclose(prepared.norm(dim=-1), torch.ones(3, 4), atol=1e-5)
    head.eval()
    before = head.transcript_mean.clone()
    head(torch.randn(3, 9, 16), text + 1)
    assert torch.equal(head.transcript_mean, before)  # eval never updates the running mean
