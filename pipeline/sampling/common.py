"""Helpers every sampling module shares: seeded generators per purpose, 8:1:1 rounding, genre lookup.

Every random draw goes through `rng_for(seed, *names)`, so adding a new split scheme never shifts the
draws of an existing one, and every draw happens over ids sorted first, so row order of inputs is irrelevant.
"""
from __future__ import annotations

import math
import zlib

import numpy as np
import pandas as pd

from pipeline.data.schema import GENRES, SPLITS
from pipeline.errors import DataError


def member(values, pool) -> np.ndarray:
    """Boolean mask: which of `values` are in `pool` (ids).

    pandas 3's Arrow-backed `str` isin takes ~1.5 s on a TT-150k column (and np.isin on objects far
    longer); on object dtype the same hash lookup takes ~0.2 s.
    """
    if isinstance(pool, (set, frozenset, dict)):
        pool = list(pool)
    values = pd.Series(np.asarray(values, dtype=object), dtype=object)
    return values.isin(pd.Series(np.asarray(pool, dtype=object), dtype=object)).to_numpy()


def rng_for(seed: int, *names: str) -> np.random.Generator:
    """A generator keyed by the global seed and a purpose (e.g. "weak", "negatives", "test")."""
    return np.random.default_rng([int(seed)] + [zlib.crc32(n.encode()) for n in names])


def round_half_up(x: float) -> int:
    # Python's round() is banker's rounding; 0.5 -> 0 would starve small sets.
    return int(math.floor(x + 0.5))


def allocate(n: int, ratios: tuple[float, float, float]) -> tuple[int, int, int]:
    """Split n items into (train, val, test) counts by `ratios`.

    Rule: val and test get round(n * ratio) but at least one item each whenever n >= 3, and train keeps at
    least one; with n < 3 everything goes to train (nothing can be held out without emptying a set).
    """
    if n < 3:
        return n, 0, 0
    total = sum(ratios)
    n_val = max(1, round_half_up(n * ratios[1] / total))
    n_test = max(1, round_half_up(n * ratios[2] / total))
    while n - n_val - n_test < 1:  # tiny n with large held-out ratios: shrink the bigger held-out set
        if n_val >= n_test and n_val > 1:
            n_val -= 1
        else:
            n_test -= 1
    return n - n_val - n_test, n_val, n_test


def assign_sets(ids: list[str], rng: np.random.Generator, ratios) -> dict[str, str]:
    """Shuffle sorted ids and cut them into train/val/test by `allocate`."""
    ids = sorted(ids)
    order = rng.permutation(len(ids))
    counts = allocate(len(ids), ratios)
    labels = np.repeat(np.array(SPLITS), counts)
    return {ids[i]: str(label) for i, label in zip(order, labels)}


def ugc_pairs(pairs: pd.DataFrame, music_genres: pd.DataFrame, where: str = "pairs") -> pd.DataFrame:
    """UGC pairs (video_id, music_id, genre), sorted by video id; every music must have a genre label."""
    for col in ("video_id", "music_id", "kind"):
        if col not in pairs.columns:
            raise DataError(f"{where}: missing column {col!r}; expected video_id, music_id, kind")
    genre_of = genre_lookup(music_genres)
    pairs = pairs.reset_index(drop=True)  # error messages name the row position
    ugc = pairs.loc[pairs["kind"] == "ugc", ["video_id", "music_id"]].copy()
    unknown = ~member(ugc["music_id"], genre_of.index)
    if unknown.any():
        row = ugc.index[unknown][0]
        raise DataError(f"{where} row {row}: music_id {ugc.loc[row, 'music_id']!r} (video "
                        f"{ugc.loc[row, 'video_id']!r}) has no genre label in the genre table")
    dup = ugc["video_id"].duplicated()
    if dup.any():
        raise DataError(f"{where}: video_id {ugc.loc[dup, 'video_id'].iloc[0]!r} has more than one music")
    ugc["genre"] = genre_of.loc[ugc["music_id"]].to_numpy()
    return ugc.sort_values("video_id", kind="stable").reset_index(drop=True)


def genre_lookup(music_genres: pd.DataFrame, where: str = "music genres") -> pd.Series:
    """music_id -> genre name, checked against GENRES; a null genre marks a music without a label (the genre
    stage gave it the uniform g(m)): it counts as 1/6 of each genre wherever genres are counted."""
    for col in ("music_id", "genre"):
        if col not in music_genres.columns:
            raise DataError(f"{where}: missing column {col!r}; expected music_id, genre")
    music_genres = music_genres.reset_index(drop=True)
    if music_genres["music_id"].duplicated().any():
        dup = music_genres.loc[music_genres["music_id"].duplicated(), "music_id"].iloc[0]
        raise DataError(f"{where}: music_id {dup!r} labelled twice")
    bad = ~music_genres["genre"].isin(GENRES) & music_genres["genre"].notna()
    if bad.any():
        row = music_genres.index[bad.to_numpy()][0]
        raise DataError(f"{where} row {row}: genre {music_genres.loc[row, 'genre']!r} not in {GENRES}")
    return music_genres.set_index("music_id")["genre"]


def check_nonempty(split: pd.DataFrame, scheme: str, sets=SPLITS) -> None:
    """A scheme whose train, val or test set is empty cannot be trained or evaluated: say which."""
    present = set(split["split"])
    for name in sets:
        if name not in present:
            raise DataError(f"split scheme {scheme!r}: the {name} set is empty "
                            f"({len(split)} videos in the scheme; too few videos or music to hold one out)")
