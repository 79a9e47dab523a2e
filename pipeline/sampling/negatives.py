"""Sampled negatives for the 100-candidate protocol, and the inverse-popularity weights lambda_v.

Music are referred to by their index in the sorted music id list. The candidate pool is every music of
the UGC pool, test-only music included: in the strong and intervention splits test music is never seen in
training, so excluding it would make the protocol ask nothing about unseen music; the papers sample from
the whole music library (the UGC one: clips only PGC pairs use are not what the source ranks).
"""
from __future__ import annotations

import logging

import numpy as np
from tqdm import tqdm

from pipeline.errors import DataError

log = logging.getLogger(__name__)

_CHUNK_CELLS = 1 << 22  # random keys drawn per chunk of rows (~32 MB of float64)


def sample_negatives(positives: np.ndarray, n_music: int, n_negatives: int,
                     rng: np.random.Generator, where: str = "test set", pool: np.ndarray | None = None) -> np.ndarray:
    """[N, n_negatives] int64: for each row, distinct music drawn uniformly from the pool but its positive.

    `pool`: the candidate music indices (default: all n_music). Each row ranks independent uniform keys over
    the pool with the positive's key set to +inf and keeps the n_negatives smallest (in key order): a uniform
    sample without replacement that cannot hold the positive, computed for a chunk of rows at once. With the
    whole pool the draws are those of an index space of n_music, so a pool of every music changes nothing.
    """
    positives = np.asarray(positives, dtype=np.int64)
    pool = np.arange(n_music, dtype=np.int64) if pool is None else np.asarray(pool, dtype=np.int64)
    if len(positives) and (positives.min() < 0 or positives.max() >= n_music):
        bad = int(positives[(positives < 0) | (positives >= n_music)][0])
        raise DataError(f"{where}: positive music index {bad} outside the pool of {n_music}")
    slot = np.full(n_music, -1, dtype=np.int64)
    slot[pool] = np.arange(len(pool))
    local = slot[positives]
    if (local < 0).any():
        raise DataError(f"{where}: positive music index {int(positives[local < 0][0])} is not in the ranking pool")
    if len(pool) - 1 < n_negatives:
        raise DataError(f"{where}: {n_negatives} negatives per row need at least {n_negatives + 1} music, "
                        f"the pool has {len(pool)}; lower split.n_negatives")
    out = np.empty((len(positives), n_negatives), dtype=np.int64)
    chunk = max(1, _CHUNK_CELLS // max(len(pool), 1))
    starts = range(0, len(positives), chunk)
    for start in tqdm(starts, desc=f"negatives {where}", leave=False, disable=len(starts) < 10):
        pos = local[start:start + chunk]
        keys = rng.random((len(pos), len(pool)))
        keys[np.arange(len(pos)), pos] = np.inf
        part = np.argpartition(keys, n_negatives - 1, axis=1)[:, :n_negatives] if n_negatives else \
            np.empty((len(pos), 0), dtype=np.int64)
        order = np.argsort(np.take_along_axis(keys, part, axis=1), axis=1, kind="stable")
        out[start:start + len(pos)] = pool[np.take_along_axis(part, order, axis=1)]
    return out


def music_popularity(train_music: np.ndarray, n_music: int) -> np.ndarray:
    """pop(m): the number of TRAINING videos that use music m, [n_music] int64."""
    return np.bincount(np.asarray(train_music, dtype=np.int64), minlength=n_music)


def inverse_popularity_weights(eval_music: np.ndarray, train_music: np.ndarray, n_music: int) -> np.ndarray:
    """lambda_v = (1 / pop(m_v)) / sum_v' (1 / pop(m_v')) over one evaluation set (docs/architecture.md, 7).

    pop is clipped at 1: music unseen in training (all test music in music-disjoint splits) counts as if
    one training video used it, the largest weight, instead of dividing by zero.
    """
    eval_music = np.asarray(eval_music, dtype=np.int64)
    if len(eval_music) == 0:
        return np.zeros(0, dtype=np.float64)
    pop = np.maximum(music_popularity(train_music, n_music), 1).astype(np.float64)
    inv = 1.0 / pop[eval_music]
    return inv / inv.sum()
