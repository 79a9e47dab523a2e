"""Train/val/test splits of the UGC videos (docs/architecture.md section 7): weak generalisation, strong
generalisation (music-disjoint, popularity-stratified) and genre intervention (hiphop:jazz shifted between
train and test).

Each function returns a DataFrame video_id, split (train|val|test) sorted by video id; a video absent from
it is not used by the scheme. Only UGC pairs take part (PGC pairs train the teacher and are split apart).
"""
from __future__ import annotations

import logging
import math
from fractions import Fraction

import numpy as np
import pandas as pd

from pipeline.data.schema import SPLITS
from pipeline.errors import DataError, ParamsError
from pipeline.sampling.common import assign_sets, check_nonempty, rng_for, ugc_pairs

log = logging.getLogger(__name__)

RATIOS = (0.8, 0.1, 0.1)
INTERVENTION_GENRES = ("hiphop", "jazz")


def _ugc(pairs: pd.DataFrame) -> pd.DataFrame:
    if "kind" in pairs.columns:
        pairs = pairs[pairs["kind"] == "ugc"]
    return pairs[["video_id", "music_id"]].sort_values("video_id", kind="stable").reset_index(drop=True)


def _check_ratios(ratios) -> tuple[float, float, float]:
    ratios = tuple(float(r) for r in ratios)
    if len(ratios) != 3 or min(ratios) <= 0:
        raise ParamsError(f"split ratios {ratios}: expected three positive numbers (train, val, test)")
    return ratios


def _frame(assignment: dict[str, str]) -> pd.DataFrame:
    df = pd.DataFrame({"video_id": list(assignment), "split": list(assignment.values())})
    return df.sort_values("video_id", kind="stable").reset_index(drop=True)


def weak_split(pairs: pd.DataFrame, ratios=RATIOS, seed: int = 0, scheme: str = "weak") -> pd.DataFrame:
    """Each music's videos split 8:1:1, so every test music was seen in training.

    Music with fewer than 3 videos keep all of them in train (holding one out would leave the music unseen
    or a set without it); with 3 or more, val and test get at least one video each (`common.allocate`).
    """
    ratios = _check_ratios(ratios)
    ugc = _ugc(pairs)
    rng = rng_for(seed, scheme)
    assignment: dict[str, str] = {}
    for _, group in ugc.groupby("music_id", sort=True):
        assignment.update(assign_sets(group["video_id"].tolist(), rng, ratios))
    split = _frame(assignment)
    check_nonempty(split, scheme)
    return split


def popularity_strata(music_popularity: pd.Series, n_strata: int) -> pd.Series:
    """Quantile bins of music popularity (0 = least popular).

    Bins are cut on the popularity *rank* (ties broken by music id) rather than on the values, so strata
    have equal sizes even when many music share a count (TT-150k: hundreds of clips with 3 videos).
    """
    if n_strata < 1:
        raise ParamsError(f"n_strata {n_strata}: expected >= 1")
    pop = music_popularity.sort_index()
    order = np.lexsort((np.arange(len(pop)), pop.to_numpy()))  # by popularity, then by sorted id
    rank = np.empty(len(pop), dtype=np.int64)
    rank[order] = np.arange(len(pop))
    n_bins = min(n_strata, max(len(pop), 1))
    return pd.Series(rank * n_bins // max(len(pop), 1), index=pop.index, name="stratum")


def _stratified_music_sets(music_popularity: pd.Series, n_strata: int, rng: np.random.Generator,
                           ratios) -> dict[str, str]:
    """music_id -> train/val/test, allocated 8:1:1 inside each popularity stratum.

    The number of strata is capped at n_music // 3 so every stratum can give val and test a music.
    """
    strata = popularity_strata(music_popularity, max(1, min(n_strata, len(music_popularity) // 3)))
    assignment: dict[str, str] = {}
    for _, members in strata.groupby(strata, sort=True):
        assignment.update(assign_sets(members.index.tolist(), rng, ratios))
    return assignment


def strong_split(pairs: pd.DataFrame, ratios=RATIOS, n_strata: int = 5, seed: int = 0,
                 scheme: str = "strong") -> pd.DataFrame:
    """Music-disjoint 8:1:1 split of the music, stratified by popularity; every video follows its music.

    Popularity = number of UGC videos per music; at most n_music // 3 strata (each needs >= 3 music).
    """
    ratios = _check_ratios(ratios)
    ugc = _ugc(pairs)
    music_pop = ugc.groupby("music_id").size()
    music_set = _stratified_music_sets(music_pop, n_strata, rng_for(seed, scheme), ratios)
    split = pd.DataFrame({"video_id": ugc["video_id"], "split": ugc["music_id"].map(music_set)})
    check_nonempty(split, scheme)
    return split


def achievable_counts(n_first: int, n_second: int, share: float) -> tuple[int, int]:
    """Largest total a + b with a <= n_first, b <= n_second and |a - share * (a + b)| <= 1/2.

    So a is share * T rounded (T = a + b), and |a / T - share| <= 1 / (2T): the tolerance the
    intervention tests check. Exact rational arithmetic: 6 / 0.6 must be 10, not 9.999.
    """
    if not 0.0 < share < 1.0:
        raise ParamsError(f"intervention share {share}: expected strictly between 0 and 1")
    s = Fraction(share).limit_denominator(10**6)
    half = Fraction(1, 2)
    total = min(n_first + n_second, int((n_first + half) / s), int((n_second + half) / (1 - s)))
    while total > 0:
        target = s * total
        for a in sorted({math.floor(target), math.ceil(target)}, key=lambda a: (abs(a - target), -a)):
            if abs(a - target) <= half and a <= n_first and total - a <= n_second:
                return a, total - a
        total -= 1
    return 0, 0


def intervention_split(pairs: pd.DataFrame, music_genres: pd.DataFrame, x: float, ratios=RATIOS,
                       n_strata: int = 5, seed: int = 0, genres=INTERVENTION_GENRES,
                       scheme: str | None = None) -> pd.DataFrame:
    """Genre intervention: train (and val) hiphop:jazz = x:(1-x), test about (1-x):x, music-disjoint.

    Only videos of the two genres take part, as in the paper; videos of other genres are left out of the
    scheme. The music of each genre are split 8:1:1 into train/val/test music (popularity-stratified inside
    the genre, so val is carved from the training side and stays music-disjoint too). That music split is
    the same for every x (its generator ignores x), so a sweep over x changes the genre mix only. Each set's videos
    are then subsampled uniformly to the largest count that meets the set's target share
    (`achievable_counts`).
    """
    ratios = _check_ratios(ratios)
    scheme = scheme or f"intervention_{x:g}"
    first, second = genres
    ugc = ugc_pairs(pairs if "kind" in pairs.columns else pairs.assign(kind="ugc"), music_genres,
                    where=f"split scheme {scheme!r}: pairs")
    music_rng, rng = rng_for(seed, "intervention", *genres), rng_for(seed, scheme)
    per_genre: dict[str, pd.DataFrame] = {}
    for genre in genres:
        sub = ugc[ugc["genre"] == genre]
        if sub.empty:
            raise DataError(f"split scheme {scheme!r}: no UGC videos of genre {genre!r} "
                            f"(the intervention needs videos of both {genres})")
        music_set = _stratified_music_sets(sub.groupby("music_id").size(), n_strata, music_rng, ratios)
        per_genre[genre] = sub.assign(split=sub["music_id"].map(music_set))
    targets = {"train": x, "val": x, "test": 1.0 - x}
    chosen = []
    for name in SPLITS:
        pools = [per_genre[g].loc[per_genre[g]["split"] == name, "video_id"].sort_values() for g in genres]
        n_a, n_b = achievable_counts(len(pools[0]), len(pools[1]), targets[name])
        if n_a + n_b == 0:
            raise DataError(f"split scheme {scheme!r}: the {name} set is empty ({len(pools[0])} {first} and "
                            f"{len(pools[1])} {second} videos on its music cannot meet "
                            f"{first} share {targets[name]:g})")
        for pool, n in zip(pools, (n_a, n_b)):
            keep = rng.choice(len(pool), size=n, replace=False)
            chosen.append(pd.DataFrame({"video_id": pool.to_numpy()[np.sort(keep)], "split": name}))
        log.info("%s %s: %d %s + %d %s videos (%s share %.4f, target %.4f)", scheme, name, n_a, first,
                 n_b, second, first, n_a / (n_a + n_b), targets[name])
    split = pd.concat(chosen, ignore_index=True).sort_values("video_id", kind="stable").reset_index(drop=True)
    check_nonempty(split, scheme)
    return split
