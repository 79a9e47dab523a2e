import itertools

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import DataError, ParamsError
from pipeline.sampling.common import allocate, genre_lookup
from pipeline.sampling.splits import (achievable_counts, intervention_split, popularity_strata,
                                      strong_split, weak_split)

X_VALUES = (0.5, 0.6, 0.7, 0.8)


def ugc_of(pairs):
    return pairs[pairs["kind"] == "ugc"]


def test_allocate_hand_values():
    assert allocate(1, (0.8, 0.1, 0.1)) == (1, 0, 0)
    assert allocate(2, (0.8, 0.1, 0.1)) == (2, 0, 0)
    assert allocate(3, (0.8, 0.1, 0.1)) == (1, 1, 1)
    assert allocate(4, (0.8, 0.1, 0.1)) == (2, 1, 1)
    assert allocate(10, (0.8, 0.1, 0.1)) == (8, 1, 1)
    assert allocate(25, (0.8, 0.1, 0.1)) == (19, 3, 3)  # 2.5 rounds half up
    assert allocate(3, (0.2, 0.4, 0.4)) == (1, 1, 1)  # train always keeps one


def test_weak_split_per_music_counts(world):
    videos, pairs, genres, _ = world
    split = weak_split(pairs, seed=0)
    ugc = ugc_of(pairs)
    assert sorted(split["video_id"]) == sorted(ugc["video_id"])  # every UGC video once, no PGC
    assert not split["video_id"].duplicated().any()
    merged = ugc.merge(split, on="video_id")
    for music, group in merged.groupby("music_id"):
        counts = group["split"].value_counts()
        expected = allocate(len(group), (0.8, 0.1, 0.1))
        assert tuple(counts.get(s, 0) for s in ("train", "val", "test")) == expected, music


def test_weak_split_small_music_stay_in_train(world):
    _, pairs, _, _ = world
    extra = pd.DataFrame({"video_id": ["x1", "x2", "x3"], "music_id": ["new_a", "new_a", "new_b"], "kind": "ugc"})
    split = weak_split(pd.concat([pairs, extra]), seed=0).set_index("video_id")["split"]
    assert (split.loc[["x1", "x2", "x3"]] == "train").all()


def test_weak_split_empty_set_is_named():
    pairs = pd.DataFrame({"video_id": ["a", "b", "c"], "music_id": ["m1", "m1", "m2"], "kind": "ugc"})
    with pytest.raises(DataError, match=r"'weak'.*val set is empty"):
        weak_split(pairs)


def test_popularity_strata_hand_case():
    pop = pd.Series({"m5": 9, "m1": 1, "m3": 3, "m2": 3, "m4": 2, "m6": 5})
    strata = popularity_strata(pop, 3)
    # rank by (pop, id): m1(1) m4(2) m2(3) m3(3) m6(5) m5(9) -> bins of two
    assert strata.to_dict() == {"m1": 0, "m2": 1, "m3": 1, "m4": 0, "m5": 2, "m6": 2}


def test_strong_split_music_disjoint_and_stratified(world):
    _, pairs, _, _ = world
    ugc = ugc_of(pairs)
    split = strong_split(pairs, n_strata=5, seed=3)
    merged = ugc.merge(split, on="video_id")
    assert len(merged) == len(ugc)
    sets_per_music = merged.groupby("music_id")["split"].nunique()
    assert (sets_per_music == 1).all()  # music-disjoint, every video follows its music
    pop = ugc.groupby("music_id").size()
    # brute force strata: 40 music, 5 equal bins of the (pop, id) order
    order = sorted(pop.index, key=lambda m: (pop[m], m))
    stratum = {m: i * 5 // len(order) for i, m in enumerate(order)}
    music_set = merged.groupby("music_id")["split"].first()
    for s in range(5):
        sets = {music_set[m] for m in order if stratum[m] == s}
        assert sets == {"train", "val", "test"}, f"stratum {s} has only {sets}"


def test_achievable_counts_matches_brute_force():
    for n1, n2, share in itertools.product(range(0, 13), range(0, 13), (0.5, 0.6, 0.7, 0.8, 0.2, 0.3, 0.4)):
        best = 0
        for a in range(n1 + 1):
            for b in range(n2 + 1):
                if a + b and abs(a - share * (a + b)) <= 0.5 + 1e-12:
                    best = max(best, a + b)
        a, b = achievable_counts(n1, n2, share)
        assert a + b == best, (n1, n2, share)
        assert a <= n1 and b <= n2
        if best:
            assert abs(a / (a + b) - share) <= 1 / (2 * (a + b)) + 1e-12


def test_achievable_counts_rejects_bad_share():
    with pytest.raises(ParamsError):
        achievable_counts(5, 5, 1.0)


@pytest.mark.parametrize("x", X_VALUES)
def test_intervention_ratios_and_disjointness(world, x):
    _, pairs, genres, _ = world
    split = intervention_split(pairs, genres, x, seed=0)
    genre_of = genre_lookup(genres)
    merged = ugc_of(pairs).merge(split, on="video_id")
    merged["genre"] = genre_of.loc[merged["music_id"]].to_numpy()
    assert set(merged["genre"]) <= {"hiphop", "jazz"}
    assert not split["video_id"].duplicated().any()
    assert (merged.groupby("music_id")["split"].nunique() == 1).all()  # music-disjoint, val included
    for name, target in (("train", x), ("val", x), ("test", 1 - x)):
        sub = merged[merged["split"] == name]
        total = len(sub)
        share = (sub["genre"] == "hiphop").mean()
        # integer counts: the closest achievable share is within 1/(2T) of the target
        assert abs(share - target) <= 1 / (2 * total) + 1e-12, (name, share, target, total)
        # and the set is as large as the pools of its music allow at that share
        pool = ugc_of(pairs)[ugc_of(pairs)["music_id"].isin(sub["music_id"])]
        pool_genre = genre_of.loc[pool["music_id"]]
        a, b = achievable_counts(int((pool_genre == "hiphop").sum()), int((pool_genre == "jazz").sum()), target)
        assert total >= a + b


def test_intervention_music_split_shared_across_x(world):
    _, pairs, genres, _ = world
    music_sets = []
    for x in X_VALUES:
        merged = ugc_of(pairs).merge(intervention_split(pairs, genres, x, seed=0), on="video_id")
        music_sets.append(merged.groupby("music_id")["split"].first())
    for other in music_sets[1:]:
        common = music_sets[0].index.intersection(other.index)
        assert (music_sets[0][common] == other[common]).all()


def test_intervention_missing_genre(world):
    _, pairs, genres, _ = world
    no_jazz = genres.assign(genre=genres["genre"].replace("jazz", "classical"))
    with pytest.raises(DataError, match=r"intervention_0.7.*no UGC videos of genre 'jazz'"):
        intervention_split(pairs, no_jazz, 0.7)


def test_intervention_empty_set_is_named(world):
    _, pairs, genres, _ = world
    # only two hiphop music left: both stay in train, so val and test have no hiphop at all
    hiphop = sorted(genres.loc[genres["genre"] == "hiphop", "music_id"])
    genres = genres.assign(genre=np.where(genres["music_id"].isin(hiphop[2:]), "pop", genres["genre"]))
    with pytest.raises(DataError, match=r"'intervention_0.6': the val set is empty"):
        intervention_split(pairs, genres, 0.6)


def test_unknown_music_in_pairs(world):
    _, pairs, genres, _ = world
    bad = pd.concat([pairs, pd.DataFrame({"video_id": ["zz"], "music_id": ["m999"], "kind": ["ugc"]})])
    with pytest.raises(DataError, match=r"m999.*no genre label"):
        intervention_split(bad, genres, 0.5)


def test_determinism_and_order_independence(world):
    _, pairs, genres, _ = world

    def every_scheme(pairs, genres, seed):
        return {"weak": weak_split(pairs, seed=seed), "strong": strong_split(pairs, seed=seed),
                "intervention_0.6": intervention_split(pairs, genres, 0.6, seed=seed, scheme="intervention_0.6")}

    a = every_scheme(pairs, genres, 11)
    b = every_scheme(pairs.sample(frac=1.0, random_state=1), genres.sample(frac=1.0, random_state=2), 11)
    c = every_scheme(pairs, genres, 12)
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name])
        assert not a[name].equals(c[name]), name
