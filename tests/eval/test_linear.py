"""The linear probe: recovers a separable problem, fits the stated objective, validates the weight decay."""
import numpy as np
import torch
import torch.nn.functional as F

from tvts.eval.linear import fit_logistic, holdout_split, linear_probe, prepare


def _blobs(n_per_class, classes=4, dim=16, seed=0, spread=0.3):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)) * 3
    x = np.concatenate([centres[c] + spread * rng.normal(size=(n_per_class, dim)) for c in range(classes)])
    y = np.repeat(np.arange(classes), n_per_class)
    return torch.tensor(x, dtype=torch.float32), y


def test_recovers_a_separable_problem():
    xtr, ytr = _blobs(20, seed=0)
    xev, yev = _blobs(10, seed=0)  # same centres (same seed), new noise draws below
    xev = xev + 0.1 * torch.randn(xev.shape, generator=torch.Generator().manual_seed(1))
    res = linear_probe(xtr, ytr, xev, yev, 4, [1e-4, 1e-2, 1.0], holdout=0.25, max_iter=200)
    assert res["metrics"]["top1"] == 100.0 and res["metrics"]["top5"] == 100.0
    assert res["weight_decay"] in (1e-4, 1e-2, 1.0) and len(res["selection"]) == 3
    assert res["num_holdout"] == 20 and "L-BFGS" in res["protocol"]


def test_labels_that_are_noise_stay_near_chance():
    xtr, _ = _blobs(30, seed=2)
    rng = np.random.default_rng(3)
    res = linear_probe(xtr, rng.integers(0, 4, 120), xtr[:60], rng.integers(0, 4, 60), 4, [1e-3, 1e-1], max_iter=100)
    assert res["metrics"]["top1"] < 50.0


def test_fit_reaches_the_stationary_point_of_the_stated_objective():
    x, y = _blobs(10, classes=3, dim=5, seed=4)
    x64 = prepare(x)[0]
    yt = torch.as_tensor(y)
    wd = 0.05
    w, b = fit_logistic(x64, yt, 3, wd, max_iter=500)
    w.requires_grad_(True), b.requires_grad_(True)
    loss = F.cross_entropy(x64 @ w + b, yt) + 0.5 * wd * w.pow(2).sum()
    gw, gb = torch.autograd.grad(loss, (w, b))
    assert gw.abs().max() < 1e-6 and gb.abs().max() < 1e-6


def test_prepare_centres_on_the_fit_set_and_normalises():
    fit = torch.tensor([[1.0, 2.0], [3.0, 2.0]])
    other = torch.tensor([[2.0, 5.0]])
    f, o = prepare(fit, other)
    torch.testing.assert_close(f, torch.tensor([[-1.0, 0.0], [1.0, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(o, torch.tensor([[0.0, 1.0]], dtype=torch.float64))


def test_holdout_is_per_class_and_seeded():
    labels = np.array([0] * 10 + [1] * 5 + [2])
    fit, held = holdout_split(labels, 0.2, seed=0)
    assert sorted(np.concatenate([fit, held]).tolist()) == list(range(16))
    assert np.bincount(labels[held], minlength=3).tolist() == [2, 1, 0]  # a single-clip class is never held out
    assert holdout_split(labels, 0.2, seed=0)[1].tolist() == held.tolist()
