"""Ranking metrics against hand-computed similarity matrices, ties included."""
import numpy as np
import pytest

from tvts.eval.metrics import (dual_softmax, rank_summary, retrieval_metrics, t2v_ranks, topk_accuracy, v2t_ranks,
                               v2v_recall)

# text x video; text i belongs to video i
SIMS = np.array([
    [0.9, 0.9, 0.3],  # t0: tied with v1 -> optimistic rank 1
    [0.5, 0.2, 0.5],  # t1: two videos strictly higher -> rank 3
    [0.3, 0.3, 0.3],  # t2: all tied -> rank 1
])


def test_t2v_ties_are_broken_optimistically():
    assert t2v_ranks(SIMS, [0, 1, 2]).tolist() == [1, 3, 1]


def test_v2t_ties_are_averaged():
    # v0 column (0.9, 0.5, 0.3): t0 best -> 1; v1 column (0.9, 0.2, 0.3): t1 below two -> 3;
    # v2 column (0.3, 0.5, 0.3): t2 below t1, tied with t0 -> 1 + 1 + 1/2
    assert v2t_ranks(SIMS, [0, 1, 2]).tolist() == [1, 3, 2.5]


def test_summary_of_hand_ranks():
    m = retrieval_metrics(SIMS, [0, 1, 2])
    assert m["t2v"] == pytest.approx({"R@1": 200 / 3, "R@5": 100.0, "R@10": 100.0, "MedR": 1.0, "MeanR": 5 / 3})
    assert m["v2t"] == pytest.approx({"R@1": 100 / 3, "R@5": 100.0, "R@10": 100.0, "MedR": 2.5, "MeanR": 6.5 / 3})
    assert rank_summary([1, 6, 11, 2]) == pytest.approx({"R@1": 25.0, "R@5": 50.0, "R@10": 75.0, "MedR": 4.0, "MeanR": 5.0})


def test_several_captions_per_video_take_the_best_caption_for_v2t():
    sims = np.array([[0.1, 0.8], [0.7, 0.2], [0.6, 0.9], [0.5, 0.5]])  # t0, t1 -> v0; t2, t3 -> v1
    gt = [0, 0, 1, 1]
    assert t2v_ranks(sims, gt).tolist() == [2, 1, 1, 1]
    # v0 column (0.1, 0.7, 0.6, 0.5): t1 is first -> 1; v1 column (0.8, 0.2, 0.9, 0.5): t2 first -> 1
    assert v2t_ranks(sims, gt).tolist() == [1, 1]


def _frozen_style(sims, gt):
    """Re-derivation of the official rule from sorted positions: t2v = first position of the ground
    truth's distance in the sorted row; v2t = mean position of the tied group, min over captions."""
    t2v = []
    for t, v in enumerate(gt):
        row = np.sort(-sims[t])
        t2v.append(np.flatnonzero(row == -sims[t, v])[0] + 1)
    v2t = []
    for v in range(sims.shape[1]):
        col = np.sort(-sims[:, v])
        v2t.append(min(np.flatnonzero(col == -sims[t, v]).mean() + 1 for t in np.flatnonzero(np.asarray(gt) == v)))
    return np.array(t2v, float), np.array(v2t, float)


def test_matches_a_sorted_position_rederivation_on_many_ties():
    rng = np.random.default_rng(0)
    sims = rng.integers(0, 4, size=(12, 6)).astype(float) / 4  # four levels: ties everywhere
    gt = np.repeat(np.arange(6), 2)
    t2v, v2t = _frozen_style(sims, gt)
    np.testing.assert_array_equal(t2v_ranks(sims, gt), t2v)
    np.testing.assert_array_equal(v2t_ranks(sims, gt), v2t)


def test_dual_softmax_by_hand():
    sims = np.array([[1.0, 0.0], [1.0, 1.0]])
    e = np.e
    t2v = dual_softmax(sims, 1.0, axis=0)  # softmax over texts, per video column
    np.testing.assert_allclose(t2v, [[0.5, 0.0], [0.5, e / (1 + e)]])
    v2t = dual_softmax(sims, 1.0, axis=1)  # softmax over videos, per text row
    np.testing.assert_allclose(v2t, [[e / (1 + e), 0.0], [0.5, 0.5]])
    # v0's column ties t0 and t1 (averaged: 1.5); after DSL over videos t0 prefers v0, so v0 ranks t0 first
    assert v2t_ranks(sims, [0, 1]).tolist() == [1.5, 1]
    assert v2t_ranks(v2t, [0, 1]).tolist() == [1, 1]
    assert "t2v+DSL" in retrieval_metrics(sims, [0, 1], dsl_scale=20.0)


def test_topk_accuracy_orders_ties_by_class_id():
    scores = np.array([[0.2, 0.5, 0.5, 0.1],   # label 2: tied with class 1, which comes first -> rank 1 (0-based)
                       [0.3, 0.3, 0.3, 0.3],   # label 0: first of the tie -> top-1
                       [0.9, 0.1, 0.2, 0.3]])  # label 1: last -> rank 3
    acc = topk_accuracy(scores, [2, 0, 1], (1, 2, 4, 5))
    assert acc == pytest.approx({"top1": 100 / 3, "top2": 200 / 3, "top4": 100.0, "top5": 100.0})


def test_v2v_recall_by_hand():
    s = 2 ** -0.5
    feats = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 1]], dtype=float)
    labels = [0, 1, 1, 0, 1]
    # cosine: 0-2 = 0-4 = 1-2 = 3-4 = s, 2-4 = 1/2, every other pair 0. Nearest others, ties by position:
    # 0: 2, 4, 1, 3 (first hit at 4) | 1: 2 (hit at 1) | 2: 0, 1 (hit at 2) | 3: 4, 0 (hit at 2) | 4: 0, 3, 2 (hit at 3)
    assert s > 0.5
    m = v2v_recall(feats, labels, ks=(1, 2, 3, 4))
    assert m == pytest.approx({"R@1": 20.0, "R@2": 60.0, "R@3": 80.0, "R@4": 100.0})
