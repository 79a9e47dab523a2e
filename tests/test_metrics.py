"""Metrics against ranx, brute-force loops and hand-computed values."""
import math
import time

import numpy as np
import pytest
from ranx import Qrels, Run, evaluate

from pipeline.errors import DataError
from pipeline.metrics import (DEFAULT_KS, full_ranks, ndcg_at_k, positive_ranks,
                              ranking_metrics, recall_at_k, sampled_ranks, truth_metrics)


def test_ties_are_pessimistic():
    scores = np.array([[1.0, 1.0, 0.5], [0.5, 1.0, 1.0], [0.2, 0.1, 0.0], [0.0] * 3])
    assert positive_ranks(scores, [0, 0, 0, 1]).tolist() == [2, 3, 1, 3]
    # a constant model ranks every positive last, so it scores zero
    constant = np.zeros((5, 101))
    ranks = sampled_ranks(constant, np.tile(np.arange(101), (5, 1)))
    assert ranks.tolist() == [101] * 5 and recall_at_k(ranks, 25) == 0.0


def test_full_and_sampled_ranks_match_brute_force():
    rng = np.random.default_rng(0)
    video, music = rng.standard_normal((13, 4)), rng.standard_normal((30, 4))
    video[3] = 0.0  # every score 0 for this video: ties everywhere
    positive = rng.integers(0, 30, 13)
    pool = rng.random(30) < 0.6
    pool[positive] = True
    scores = video @ music.T
    brute = [sum(scores[v, c] >= scores[v, positive[v]] for c in range(30)) for v in range(13)]
    brute_pool = [sum(scores[v, c] >= scores[v, positive[v]] for c in range(30) if pool[c]) for v in range(13)]
    assert full_ranks((video, music), positive, chunk_size=4).tolist() == brute
    assert full_ranks(scores, positive).tolist() == brute
    assert full_ranks((video, music), positive, candidate_mask=pool, chunk_size=5).tolist() == brute_pool
    assert brute[3] == 30 and brute_pool[3] == pool.sum()

    candidates = np.stack([np.concatenate([[p], rng.choice(np.delete(np.arange(30), p), 8, replace=False)])
                           for p in positive])
    brute_sampled = [sum(scores[v, c] >= scores[v, candidates[v, 0]] for c in candidates[v]) for v in range(13)]
    assert sampled_ranks((video, music), candidates, chunk_size=3).tolist() == brute_sampled
    bad = candidates.copy()
    bad[2, 5] = bad[2, 0]
    with pytest.raises(DataError, match="row 2"):
        sampled_ranks((video, music), bad)
    nan_scores = scores.copy()
    nan_scores[7, 2] = np.nan
    with pytest.raises(DataError, match="row 7"):
        full_ranks(nan_scores, positive)


@pytest.mark.parametrize("seed", [0, 1])
def test_unweighted_metrics_equal_ranx(seed):
    rng = np.random.default_rng(seed)
    n, m = 40, 60
    scores = rng.standard_normal((n, m))  # continuous: no ties, so ranx's ordering is unambiguous
    positive = rng.integers(0, m, n)
    ranks = full_ranks(scores, positive)
    qrels = Qrels({f"v{v}": {f"m{positive[v]}": 1} for v in range(n)})
    run = Run({f"v{v}": {f"m{j}": float(scores[v, j]) for j in range(m)} for v in range(n)})
    names = [f"{metric}@{k}" for k in DEFAULT_KS for metric in ("recall", "ndcg")]
    expected = evaluate(qrels, run, names)
    ours = ranking_metrics(ranks)
    for name in names:
        assert ours[name] == pytest.approx(float(expected[name]), abs=1e-12), name
    assert 0 < ours["recall@25"] < 1  # the case exercises both hits and misses


def test_weighted_metrics_equal_hand_values():
    # lambda_v of popularities [1, 2, 0, 4] (pop 0 clipped to 1): [1, 0.5, 1, 0.25] / 2.75
    weights = np.array([4 / 11, 2 / 11, 4 / 11, 1 / 11])
    ranks = np.array([1, 3, 30, 12])
    assert recall_at_k(ranks, 10, weights) == pytest.approx(6 / 11)
    assert ndcg_at_k(ranks, 10, weights) == pytest.approx(4 / 11 + (2 / 11) / 2)
    assert recall_at_k(ranks, 15, weights) == pytest.approx(7 / 11)
    assert ndcg_at_k(ranks, 15, weights) == pytest.approx(5 / 11 + (1 / 11) / math.log2(13))
    # unnormalised weights give the same value: the metric normalises, it does not trust the input
    assert recall_at_k(ranks, 10, [4, 2, 4, 1]) == pytest.approx(6 / 11)
    assert ranking_metrics(ranks, weights=weights)["recall@25"] == pytest.approx(7 / 11)
    with pytest.raises(DataError, match="weights"):
        recall_at_k(ranks, 10, [1, -1, 1, 1])


def brute_truth(scores, rel, k, music_genre, majority):
    ndcgs, pred_shares, true_shares = [], [], []
    for v in range(len(scores)):
        order = sorted(range(len(scores[v])), key=lambda j: (-scores[v][j], rel[v][j]))[:k]
        dcg = sum(rel[v][j] / math.log2(i + 2) for i, j in enumerate(order))
        ideal = sorted(rel[v], reverse=True)[:k]
        idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
        ndcgs.append(dcg / idcg)
        true = sorted(range(len(rel[v])), key=lambda j: -rel[v][j])[:k]
        pred_shares.append(sum(music_genre[j] == majority[v] for j in order) / k)
        true_shares.append(sum(music_genre[j] == majority[v] for j in true) / k)
    return np.mean(ndcgs), np.mean(pred_shares), np.mean(true_shares)


def test_truth_metrics_match_brute_force_with_ties():
    rng = np.random.default_rng(3)
    n, m = 12, 25
    scores = np.round(rng.random((n, m)), 1)  # many ties, resolved against the model
    rel = rng.random((n, m))
    music_genre, majority = rng.integers(0, 3, m), rng.integers(0, 3, n)
    out = truth_metrics(scores, rel, ks=(3, 5, 10), music_genre=music_genre, majority_genre=majority, chunk_size=5)
    for k in (3, 5, 10):
        ndcg, pred, true = brute_truth(scores.tolist(), rel.tolist(), k, music_genre, majority)
        assert out[f"truth_ndcg@{k}"] == pytest.approx(ndcg)
        assert out[f"pred_share@{k}"] == pytest.approx(pred)
        assert out[f"true_share@{k}"] == pytest.approx(true)
        assert out[f"bias_amplification@{k}"] == pytest.approx(pred - true)
    pool = np.arange(m) % 3 != 0
    masked = truth_metrics(scores, rel, ks=(4,), music_genre=music_genre, majority_genre=majority, candidate_mask=pool)
    ndcg, pred, true = brute_truth(scores[:, pool].tolist(), rel[:, pool].tolist(), 4, music_genre[pool], majority)
    assert masked["truth_ndcg@4"] == pytest.approx(ndcg) and masked["pred_share@4"] == pytest.approx(pred)
    assert masked["true_share@4"] == pytest.approx(true)
    perfect = truth_metrics(rel, rel, ks=(5,), music_genre=music_genre, majority_genre=majority)
    assert perfect["truth_ndcg@5"] == pytest.approx(1.0) and perfect["bias_amplification@5"] == 0.0
    constant = truth_metrics(np.zeros((n, m)), rel, ks=(5,))
    worst = np.mean([sum(r / math.log2(i + 2) for i, r in enumerate(sorted(row)[:5])) /
                     sum(r / math.log2(i + 2) for i, r in enumerate(sorted(row, reverse=True)[:5])) for row in rel])
    assert constant["truth_ndcg@5"] == pytest.approx(worst)  # ties pessimistic: the least relevant first


def test_bias_amplification_hand_case():
    music_genre, majority = [0, 0, 1, 1], [0, 1]
    scores = np.array([[0.9, 0.8, 0.1, 0.0],   # top-2: music 0, 1 -> both genre 0 (majority 0): share 1
                       [0.5, 0.0, 0.9, 0.1]])  # top-2: music 2, 0 -> one in genre 1: share 0.5
    rel = np.array([[1.0, 0.1, 0.9, 0.0],      # true top-2: 0, 2 -> share 0.5
                    [0.8, 0.0, 1.0, 0.1]])     # true top-2: 2, 0 -> share 0.5
    out = truth_metrics(scores, rel, ks=(2,), music_genre=music_genre, majority_genre=majority)
    assert out["pred_share@2"] == pytest.approx(0.75) and out["true_share@2"] == pytest.approx(0.5)
    assert out["bias_amplification@2"] == pytest.approx(0.25)


@pytest.mark.slow
def test_full_ranking_at_tt150k_scale_is_fast():
    rng = np.random.default_rng(0)
    video = rng.standard_normal((15_000, 129)).astype(np.float32)
    music = rng.standard_normal((3_000, 129)).astype(np.float32)
    positive = rng.integers(0, 3_000, 15_000)
    start = time.perf_counter()
    ranks = full_ranks((video, music), positive)
    elapsed = time.perf_counter() - start
    assert ranks.shape == (15_000,) and ranks.min() >= 1 and ranks.max() <= 3_000
    assert elapsed < 5.0, f"full ranking took {elapsed:.2f} s"
