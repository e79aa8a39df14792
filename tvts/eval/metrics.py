"""Ranking metrics of the evaluation protocols, on similarity or score matrices (float64 numpy).

Ties follow the official metric (TVTSv2's ``model/metric.py``, from Frozen in Time):

- text -> video: **optimistic**. A query's rank is 1 + the number of candidates scored strictly
  higher than its ground truth (Frozen's first match in the sorted row).
- video -> text: **averaged**. The rank of one caption is 1 + (strictly higher) + (other captions
  tied with it) / 2, the mean position of the tie group; a video's rank is the best over its captions.

R@k is the percentage of queries with rank <= k, MedR the median rank and MeanR the mean rank (both
1-based, as Frozen's ``median(cols) + 1``). Classification top-k counts the classes scored strictly
higher plus the tied ones with a smaller class id (a fixed, stable order), correct when that is < k.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def _array(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def topk_accuracy(scores, labels, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """scores (N, C), labels (N,) -> {"top1": %, "top5": %}; k larger than C counts as C."""
    s = _array(scores)
    y = np.asarray(labels, dtype=np.int64)
    true = s[np.arange(len(y)), y][:, None]
    cols = np.arange(s.shape[1])[None, :]
    rank = (s > true).sum(1) + ((s == true) & (cols < y[:, None])).sum(1)
    return {f"top{k}": 100.0 * float(np.mean(rank < min(k, s.shape[1]))) for k in ks}


def rank_summary(ranks) -> dict[str, float]:
    """1-based ranks (N,) -> R@1/5/10 (%), MedR, MeanR."""
    r = np.asarray(ranks, dtype=np.float64)
    out = {f"R@{k}": 100.0 * float(np.mean(r <= k)) for k in (1, 5, 10)}
    out["MedR"] = float(np.median(r))
    out["MeanR"] = float(np.mean(r))
    return out


def t2v_ranks(sims, text_video) -> np.ndarray:
    """sims (T, V) text x video, text_video (T,) ground-truth video of each text -> (T,) 1-based ranks
    with ties broken optimistically."""
    s = _array(sims)
    gt = np.asarray(text_video, dtype=np.int64)
    true = s[np.arange(len(gt)), gt][:, None]
    return (s > true).sum(1) + 1.0


def v2t_ranks(sims, text_video) -> np.ndarray:
    """sims (T, V) -> (V,) 1-based ranks of each video's best caption among all T texts, ties averaged.

    A video without captions gets rank inf (it is still counted: no caption can be retrieved)."""
    s = _array(sims)
    gt = np.asarray(text_video, dtype=np.int64)
    ranks = np.full(s.shape[1], np.inf)
    for t, v in enumerate(gt):
        column = s[:, v]
        higher = float((column > column[t]).sum())
        tied_others = float((column == column[t]).sum() - 1)
        ranks[v] = min(ranks[v], 1.0 + higher + tied_others / 2.0)
    return ranks


def dual_softmax(sims, scale: float, axis: int) -> np.ndarray:
    """Dual-softmax re-ranking (CAMoE's DSL): ``sims * softmax(scale * sims, axis)``.

    For text -> video ranking normalise over texts (axis 0 of a (T, V) matrix): a video then prefers the
    texts it is the best match for among all queries; for video -> text, over videos (axis 1). It uses
    the whole query set, so it is a transductive post-processing, reported beside the plain numbers."""
    s = _array(sims)
    z = scale * s
    z = z - z.max(axis=axis, keepdims=True)
    p = np.exp(z)
    return s * (p / p.sum(axis=axis, keepdims=True))


def retrieval_metrics(sims, text_video, dsl_scale: float = 0.0) -> dict[str, dict[str, float]]:
    """{"t2v": {...}, "v2t": {...}} and, with ``dsl_scale`` > 0, "t2v+DSL" / "v2t+DSL"."""
    out = {"t2v": rank_summary(t2v_ranks(sims, text_video)), "v2t": rank_summary(v2t_ranks(sims, text_video))}
    if dsl_scale > 0:
        out["t2v+DSL"] = rank_summary(t2v_ranks(dual_softmax(sims, dsl_scale, 0), text_video))
        out["v2t+DSL"] = rank_summary(v2t_ranks(dual_softmax(sims, dsl_scale, 1), text_video))
    return out


def v2v_recall(features, labels, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """TVTS v1 zero-shot video-to-video retrieval: cosine similarity of every clip with every other (itself
    excluded); a query is a hit at k when one of its k nearest clips shares its class. Neighbours with
    equal similarity are ordered by list position (stable). Returns {"R@k": %}."""
    x = _array(features)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    y = np.asarray(labels, dtype=np.int64)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    kmax = min(max(ks), len(y) - 1)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :kmax]
    same = y[order] == y[:, None]
    return {f"R@{k}": 100.0 * float(np.mean(same[:, :min(k, kmax)].any(1))) for k in ks}
