"""Linear probe on frozen features: multinomial logistic regression, weight decay chosen on held-out train.

The protocol, exactly (also written into every result as ``protocol``):

1. Features: centred by the mean of the training features it is fitted on, then L2-normalised.
2. Model: logits = x W + b, loss = mean cross-entropy + wd / 2 * ||W||^2 (b not decayed), W and b
   starting at zero, minimised full-batch in float64 by L-BFGS (strong-Wolfe line search) to
   convergence or ``max_iter`` iterations. The objective is convex, so the result does not depend on
   batch order, learning rates or seeds.
3. Weight decay: every value of ``wd_grid`` is fitted on train minus a held-out ``holdout`` fraction
   (drawn per class with ``seed``) and scored on the held-out part; the best top-1 wins (ties: the
   lower held-out loss, then the larger wd). The probe is then refitted on all of train with it.
4. Reported: top-1 / top-5 on the evaluation list, one view per clip.

Why not the official recipe: the v1 probe (``run_class_linear.py``) trains a linear head for 100 epochs
with VideoMAE's fine-tuning augmentation (RandAugment, mixup, cutmix, random erasing), multi-view
testing, and an ``--opt sgd`` flag that DeepSpeed silently replaces by Adam(W) at lr 0.15 (method §4.2).
Features here are fixed single-view CLS vectors, so a convex fit with a validated regulariser is the
reproducible equivalent; its numbers are not comparable with the paper's 31.5 % SSV2 top-1.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from tvts.eval.datasets import classification_data
from tvts.eval.features import feature_kind, features_of
from tvts.eval.metrics import topk_accuracy
from tvts.eval.report import make_result

PROTOCOL = ("features centred on the fitting set's mean, then L2-normalised; multinomial logistic regression "
            "(mean cross-entropy + wd/2 ||W||^2, bias not decayed) fitted full-batch in float64 by L-BFGS from zero; "
            "wd chosen by held-out top-1 on a per-class random {holdout:.0%} of train (seed {seed}), "
            "then refitted on all of train; top-1/top-5 on the evaluation list, 1 view")


def prepare(fit: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Centre on ``fit``'s mean and L2-normalise ``fit`` and ``others``: float64 (N, D) tensors."""
    mean = fit.double().mean(0, keepdim=True)
    return [F.normalize(x.double() - mean, dim=1) for x in (fit, *others)]


def fit_logistic(x: torch.Tensor, y: torch.Tensor, num_classes: int, weight_decay: float,
                 max_iter: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """x (N, D) float64, y (N,) int64 -> (W (D, C), b (C,)) minimising mean CE + wd/2 ||W||^2."""
    weight = torch.zeros(x.shape[1], num_classes, dtype=x.dtype, device=x.device, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=x.dtype, device=x.device, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, max_eval=2 * max_iter, history_size=20,
                            tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ weight + bias, y) + 0.5 * weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return weight.detach(), bias.detach()


def holdout_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit indices, held-out indices): ``round(fraction * n_c)`` clips of each class c held out (at least
    one when the class has two or more, none when it has one), chosen by ``seed``."""
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if len(members) < 2:
            continue
        k = min(len(members) - 1, max(1, int(round(fraction * len(members)))))
        held.extend(rng.permutation(members)[:k].tolist())
    held_idx = np.array(sorted(held), dtype=np.int64)
    fit_idx = np.setdiff1d(np.arange(len(labels)), held_idx)
    return fit_idx, held_idx


def linear_probe(train_x: torch.Tensor, train_y: Sequence[int], eval_x: torch.Tensor, eval_y: Sequence[int],
                 num_classes: int, wd_grid: Sequence[float], holdout: float = 0.2, max_iter: int = 1000,
                 seed: int = 0) -> dict:
    """Run the protocol of the module docstring. Returns {"metrics": {"top1", "top5"}, "weight_decay",
    "selection": [{"wd", "holdout_top1", "holdout_loss"}], "protocol", sizes}."""
    if not 0.0 < holdout < 1.0:
        raise ValueError(f"holdout must be in (0, 1), got {holdout}")
    if not wd_grid:
        raise ValueError("wd_grid is empty")
    ytr = torch.as_tensor(np.asarray(train_y), dtype=torch.int64)
    yev = torch.as_tensor(np.asarray(eval_y), dtype=torch.int64)
    fit_idx, held_idx = holdout_split(ytr.numpy(), holdout, seed)
    selection = []
    if len(held_idx):
        xf, xh = prepare(train_x[fit_idx], train_x[held_idx])
        for wd in wd_grid:
            w, b = fit_logistic(xf, ytr[fit_idx], num_classes, wd, max_iter)
            logits = xh @ w + b
            selection.append({"wd": float(wd), "holdout_top1": topk_accuracy(logits, ytr[held_idx], (1,))["top1"],
                              "holdout_loss": float(F.cross_entropy(logits, ytr[held_idx]))})
        best = max(selection, key=lambda r: (r["holdout_top1"], -r["holdout_loss"], r["wd"]))
        chosen = best["wd"]
    else:  # every class has a single clip: nothing to validate on
        chosen = float(max(wd_grid))
    xtr, xev = prepare(train_x, eval_x)
    w, b = fit_logistic(xtr, ytr, num_classes, chosen, max_iter)
    logits = xev @ w + b
    return {
        "metrics": topk_accuracy(logits, yev, (1, 5)),
        "train_top1": topk_accuracy(xtr @ w + b, ytr, (1,))["top1"],
        "weight_decay": chosen,
        "selection": selection,
        "num_train": int(len(ytr)), "num_holdout": int(len(held_idx)), "num_eval": int(len(yev)),
        "num_classes": int(num_classes),
        "protocol": PROTOCOL.format(holdout=holdout, seed=seed),
    }


def run(model, data, out_dir, opts) -> dict:
    """The ``linear`` task: features of the train and evaluation lists, then :func:`linear_probe`.

    Feature: ``cls`` by default, the [CLS] after the encoder's final LayerNorm (v1 ``norm``, v2
    ``ln_post`` before ``proj``), as the official v1 probe; ``feature=embed`` probes the video-text space."""

    ds = classification_data(data, opts, need_train=True)
    kind = feature_kind(opts, "cls")
    train = features_of(model, ds.train, ds.video_root, out_dir, opts, "train")
    evals = features_of(model, ds.eval, ds.video_root, out_dir, opts, "eval")
    res = linear_probe(train.get(kind), [it.label for it in ds.train], evals.get(kind), [it.label for it in ds.eval],
                       ds.num_classes, opts.wd_grid, opts.holdout, opts.max_iter, opts.seed)
    m = res["metrics"]
    rows = [["top-1", m["top1"]], ["top-5", m["top5"]], ["train top-1", res["train_top1"]],
            ["weight decay", f"{res['weight_decay']:g}"], ["train / held-out / eval clips",
                                                          f"{res['num_train']} / {res['num_holdout']} / {res['num_eval']}"]]
    return make_result("linear", model, opts, ds.files, m, ["metric", "value"], rows,
                       protocol={"probe": res.pop("protocol")}, feature=kind, probe=res)
