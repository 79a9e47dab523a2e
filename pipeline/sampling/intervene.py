"""Intervened test sets (DebCM): T_diverse, videos of the uploaders whose taste is the most spread over
genres, and T_matching, videos whose music choice is most likely driven by content rather than taste.

Both are subsets of one scheme's test set; ranking ties always break by id so the sets are reproducible.
"""
from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd

from pipeline.errors import DataError, ParamsError
from pipeline.sampling.common import member
from pipeline.sampling.uploaders import dist_matrix

log = logging.getLogger(__name__)


def genre_entropy(dist: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of each row of a [U, G] distribution; 0 log 0 = 0."""
    dist = np.asarray(dist, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(dist > 0, -dist * np.log(dist), 0.0)
    return terms.sum(axis=1)


def _top_count(top: float, n: int, what: str) -> int:
    """An int >= 1 is a count; a float in (0, 1] is a fraction of n (rounded up, at least one)."""
    if isinstance(top, (bool, np.bool_)):
        raise ParamsError(f"{what}: {top!r} is not a count or a fraction")
    if isinstance(top, (int, np.integer)):
        if top < 1:
            raise ParamsError(f"{what}: count {top} must be >= 1")
        return min(int(top), n)
    if not 0.0 < float(top) <= 1.0:
        raise ParamsError(f"{what}: fraction {top} must be in (0, 1]")
    return min(n, max(1, math.ceil(float(top) * n - 1e-9)))


def diverse_test_set(test_videos: pd.DataFrame, dists: pd.DataFrame, top_uploaders: float) -> tuple[list[str], dict]:
    """T_diverse: the test videos of the `top_uploaders` uploaders with the highest genre entropy.

    test_videos: video_id, uploader_id of the scheme's test set. dists: `uploader_genre_dist` output.
    Only uploaders with at least one training video and one test video compete: an uploader without
    training videos carries the prior, not an observed taste. Entropies are rounded to 12 decimals so
    that mathematically equal entropies tie exactly and the tie breaks by uploader id.
    """
    table = dists.set_index("uploader_id")
    missing = ~member(test_videos["uploader_id"], table.index)
    if missing.any():
        raise DataError(f"T_diverse: test video {test_videos.loc[missing, 'video_id'].iloc[0]!r} has uploader "
                        f"{test_videos.loc[missing, 'uploader_id'].iloc[0]!r} without a genre distribution")
    candidates = table.loc[sorted(set(test_videos["uploader_id"]))]
    candidates = candidates[candidates["n_train"] > 0]
    if candidates.empty:
        raise DataError("T_diverse: no uploader has both a training and a test video")
    ranked = pd.DataFrame({"uploader_id": candidates.index,
                           "entropy": np.round(genre_entropy(dist_matrix(candidates)), 12)})
    ranked = ranked.sort_values(["entropy", "uploader_id"], ascending=[False, True], kind="stable")
    k = _top_count(top_uploaders, len(ranked), "diverse_top_uploaders")
    chosen = ranked["uploader_id"].iloc[:k]
    ids = sorted(test_videos.loc[member(test_videos["uploader_id"], chosen), "video_id"])
    info = {"uploaders": chosen.tolist(), "n_candidates": len(ranked),
            "min_entropy": float(ranked["entropy"].iloc[k - 1]), "n_videos": len(ids)}
    log.info("T_diverse: %d uploaders of %d (entropy >= %.4f), %d videos", k, len(ranked), info["min_entropy"],
             len(ids))
    return ids, info


def _rank_norm(values: np.ndarray) -> np.ndarray:
    """Average ranks scaled to [0, 1] (0 = lowest); a single value maps to 1."""
    if len(values) == 1:
        return np.ones(1)
    from scipy.stats import rankdata  # here, not at the top: scipy.stats costs ~1.5 s of `recommend`'s start-up

    return (rankdata(values, method="average") - 1.0) / (len(values) - 1.0)


def matching_degree(test_videos: pd.DataFrame, rhythm: pd.DataFrame | None,
                    popularity_weight: float = 0.5) -> tuple[pd.Series, str]:
    """Matching degree of each test video: w * rank(popularity) + (1 - w) * rank(rhythm score).

    Both terms are rank-normalised to [0, 1] over the test set, so neither scale (view counts are
    heavy-tailed, rhythm scores are bounded) dominates; w = `popularity_weight`. Without rhythm scores the
    degree is the popularity rank alone. Returns (degree indexed by video_id, the rule used in words).
    """
    if not 0.0 <= popularity_weight <= 1.0:
        raise ParamsError(f"matching_popularity_weight {popularity_weight}: expected in [0, 1]")
    pop = pd.to_numeric(test_videos["popularity"], errors="coerce").to_numpy(dtype=np.float64)
    has_pop = not np.isnan(pop).all()  # a release without video popularity: rhythm alone
    if has_pop and np.isnan(pop).any():
        bad = test_videos["video_id"].to_numpy()[np.isnan(pop)][0]
        raise DataError(f"T_matching: test video {bad!r} has no popularity in videos.parquet")
    if not has_pop and rhythm is None:
        raise DataError("T_matching: the test videos have neither popularity nor rhythm scores")
    degree = _rank_norm(pop) if has_pop else None
    if rhythm is None:
        rule = "popularity only (no rhythm scores)"
    else:
        for col in ("video_id", "score"):
            if col not in rhythm.columns:
                raise DataError(f"rhythm scores: missing column {col!r}; expected video_id, score")
        score = rhythm.drop_duplicates("video_id").set_index("video_id")["score"].reindex(test_videos["video_id"])
        if score.isna().any():
            raise DataError(f"rhythm scores: no score for test video {score.index[score.isna()][0]!r}")
        rhythm_rank = _rank_norm(score.to_numpy(np.float64))
        if has_pop:
            degree = popularity_weight * degree + (1.0 - popularity_weight) * rhythm_rank
            rule = f"{popularity_weight:g} * popularity rank + {1 - popularity_weight:g} * rhythm rank"
        else:
            degree, rule = rhythm_rank, "rhythm only (no video popularity)"
    return pd.Series(degree, index=test_videos["video_id"].to_numpy(), name="matching_degree"), rule


def matching_test_set(test_videos: pd.DataFrame, rhythm: pd.DataFrame | None, top_fraction: float,
                      popularity_weight: float = 0.5) -> tuple[list[str], dict]:
    """T_matching: the `top_fraction` of test videos with the highest matching degree (ties by video id).

    test_videos: video_id, popularity. The returned info says which rule was used, in particular when
    the rhythm scores are absent and the set falls back to popularity alone.
    """
    if test_videos.empty:
        raise DataError("T_matching: the test set is empty")
    degree, rule = matching_degree(test_videos, rhythm, popularity_weight)
    if rhythm is None:
        log.warning("T_matching: no rhythm scores; falling back to video popularity alone")
    ranked = pd.DataFrame({"video_id": degree.index, "degree": np.round(degree.to_numpy(), 12)})
    ranked = ranked.sort_values(["degree", "video_id"], ascending=[False, True], kind="stable")
    k = _top_count(float(top_fraction), len(ranked), "matching_top_fraction")
    ids = sorted(ranked["video_id"].iloc[:k])
    info = {"rule": rule, "fallback": rhythm is None, "n_videos": k, "min_degree": float(ranked["degree"].iloc[k - 1])}
    log.info("T_matching: %d of %d test videos by %s", k, len(ranked), rule)
    return ids, info
