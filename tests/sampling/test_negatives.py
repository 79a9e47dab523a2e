import numpy as np
import pytest

from pipeline.errors import DataError
from pipeline.sampling.common import rng_for
from pipeline.sampling.negatives import inverse_popularity_weights, music_popularity, sample_negatives


def test_negatives_exclude_positive_unique_in_range():
    positives = np.random.default_rng(0).integers(0, 150, 500)
    negs = sample_negatives(positives, 150, 100, np.random.default_rng(1))
    assert negs.shape == (500, 100) and negs.dtype == np.int64
    assert not (negs == positives[:, None]).any()
    assert all(len(set(row)) == 100 for row in negs)
    assert negs.min() >= 0 and negs.max() < 150


def test_negatives_deterministic_and_seed_dependent():
    positives = np.arange(200) % 120
    a = sample_negatives(positives, 120, 100, rng_for(3, "negatives", "weak", "test"))
    b = sample_negatives(positives, 120, 100, rng_for(3, "negatives", "weak", "test"))
    c = sample_negatives(positives, 120, 100, rng_for(4, "negatives", "weak", "test"))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_negatives_chunking_does_not_change_the_draw(monkeypatch):
    import pipeline.sampling.negatives as mod
    positives = np.arange(300) % 50
    whole = sample_negatives(positives, 50, 10, np.random.default_rng(5))
    monkeypatch.setattr(mod, "_CHUNK_CELLS", 50 * 7)  # 7 rows per chunk: same generator stream, same rows
    chunked = sample_negatives(positives, 50, 10, np.random.default_rng(5))
    np.testing.assert_array_equal(whole, chunked)


def test_negatives_are_uniform():
    n, m, k = 20000, 10, 3
    negs = sample_negatives(np.zeros(n, dtype=int), m, k, np.random.default_rng(2))
    counts = np.bincount(negs.ravel(), minlength=m)
    assert counts[0] == 0
    p = k / (m - 1)  # each other music is in a row's sample with probability k / (m - 1)
    sd = np.sqrt(n * p * (1 - p))
    assert np.all(np.abs(counts[1:] - n * p) < 5 * sd), counts


def test_negatives_errors():
    with pytest.raises(DataError, match="at least 101 music"):
        sample_negatives(np.array([0]), 100, 100, np.random.default_rng(0))
    with pytest.raises(DataError, match="index 7 outside"):
        sample_negatives(np.array([7]), 5, 2, np.random.default_rng(0))


def test_weights_hand_computed():
    train = np.array([0, 0, 0, 1, 2, 2])
    np.testing.assert_array_equal(music_popularity(train, 4), [3, 1, 2, 0])
    w = inverse_popularity_weights(np.array([0, 1, 2, 3, 0]), train, 4)
    inv = np.array([1 / 3, 1, 1 / 2, 1, 1 / 3])  # music 3 unseen in training: pop clipped at 1
    np.testing.assert_allclose(w, inv / inv.sum())
    np.testing.assert_allclose(w, [2 / 19, 6 / 19, 3 / 19, 6 / 19, 2 / 19])
    assert w.sum() == pytest.approx(1.0)
    assert inverse_popularity_weights(np.array([], dtype=int), train, 4).shape == (0,)
