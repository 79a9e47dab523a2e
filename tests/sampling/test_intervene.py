import math

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import DataError, ParamsError
from pipeline.sampling.intervene import diverse_test_set, genre_entropy, matching_degree, matching_test_set
from pipeline.sampling.splits import weak_split
from pipeline.sampling.uploaders import GENRE_COLUMNS, uploader_genre_dist


def test_entropy_hand_values():
    dist = np.array([[1 / 6] * 6, [1, 0, 0, 0, 0, 0], [0.5, 0, 0.5, 0, 0, 0], [0.25, 0.75, 0, 0, 0, 0]])
    expected = [math.log(6), 0.0, math.log(2), -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))]
    np.testing.assert_allclose(genre_entropy(dist), expected)


def dist_table(rows: dict[str, tuple[list[float], int]]) -> pd.DataFrame:
    df = pd.DataFrame([d for d, _ in rows.values()], columns=GENRE_COLUMNS)
    df.insert(0, "n_train", [n for _, n in rows.values()])
    df.insert(0, "uploader_id", list(rows))
    return df


def test_diverse_picks_highest_entropy_with_id_ties():
    dists = dist_table({
        "u4": ([0.5, 0.5, 0, 0, 0, 0], 2),
        "u1": ([0, 0, 0.5, 0.5, 0, 0], 2),  # same entropy as u4 and u2: the smallest ids win
        "u2": ([0, 0.5, 0, 0, 0, 0.5], 4),
        "u3": ([1, 0, 0, 0, 0, 0], 3),
        "u5": ([1 / 6] * 6, 0),  # the prior of a cold uploader: not an observed taste, never picked
        "u6": ([0.2, 0.2, 0.2, 0.2, 0.2, 0.0], 5),  # the most diverse observed taste
    })
    test = pd.DataFrame({"video_id": ["a", "b", "c", "d", "e", "f", "g"],
                         "uploader_id": ["u1", "u2", "u3", "u4", "u5", "u6", "u1"]})
    ids, info = diverse_test_set(test, dists, 3)
    assert info["uploaders"] == ["u6", "u1", "u2"]
    assert ids == ["a", "b", "f", "g"]
    assert info["n_candidates"] == 5
    ids, info = diverse_test_set(test, dists, 0.5)  # ceil(0.5 * 5) = 3 uploaders
    assert info["uploaders"] == ["u6", "u1", "u2"]
    with pytest.raises(ParamsError):
        diverse_test_set(test, dists, 0)
    with pytest.raises(DataError, match="'zz'"):
        diverse_test_set(pd.DataFrame({"video_id": ["x"], "uploader_id": ["zz"]}), dists, 1)


def test_diverse_on_world_matches_brute_force(world):
    videos, pairs, genres, _ = world
    split = weak_split(pairs, seed=0)
    dists, _ = uploader_genre_dist(videos, pairs, split, genres)
    test = split[split["split"] == "test"].merge(videos[["video_id", "uploader_id"]], on="video_id")
    ids, info = diverse_test_set(test, dists, 4)
    eligible = dists[(dists["n_train"] > 0) & dists["uploader_id"].isin(test["uploader_id"])]
    entropy = {u: -sum(p * math.log(p) for p in row if p > 0)
               for u, row in zip(eligible["uploader_id"], eligible[GENRE_COLUMNS].to_numpy())}
    top = sorted(entropy, key=lambda u: (-round(entropy[u], 12), u))[:4]
    assert info["uploaders"] == top
    assert min(entropy[u] for u in top) >= max(entropy[u] for u in entropy if u not in top) - 1e-12
    assert ids == sorted(test.loc[test["uploader_id"].isin(top), "video_id"])


def test_matching_degree_hand_case():
    test = pd.DataFrame({"video_id": ["a", "b", "c", "d"], "popularity": [10.0, 1000.0, 50.0, 50.0]})
    rhythm = pd.DataFrame({"video_id": ["d", "c", "b", "a", "zz"], "score": [0.9, 0.1, 0.5, 0.3, 1.0]})
    degree, rule = matching_degree(test, rhythm, popularity_weight=0.25)
    # popularity ranks 1, 4, 2.5, 2.5 -> (r-1)/3 = 0, 1, 0.5, 0.5; rhythm (a .3, b .5, c .1, d .9) -> 1/3, 2/3, 0, 1
    expected = 0.25 * np.array([0, 1, 0.5, 0.5]) + 0.75 * np.array([1 / 3, 2 / 3, 0, 1])
    np.testing.assert_allclose(degree.loc[["a", "b", "c", "d"]].to_numpy(), expected)
    assert "rhythm" in rule
    ids, info = matching_test_set(test, rhythm, 0.5, popularity_weight=0.25)
    assert ids == ["b", "d"] and not info["fallback"]


def test_matching_fallback_to_popularity(world, caplog):
    videos, _, _, _ = world
    test = videos[videos["kind"] == "ugc"].iloc[:50]
    with caplog.at_level("WARNING"):
        ids, info = matching_test_set(test, None, 0.1)
    assert info["fallback"] and "popularity only" in info["rule"]
    assert "falling back" in caplog.text
    assert ids == sorted(test.sort_values(["popularity", "video_id"], ascending=[False, True])["video_id"][:5])


def test_matching_rhythm_only_and_errors():
    test = pd.DataFrame({"video_id": ["a", "b", "c"], "popularity": [np.nan] * 3})
    rhythm = pd.DataFrame({"video_id": ["a", "b", "c"], "score": [0.2, 0.9, 0.5]})
    ids, info = matching_test_set(test, rhythm, 0.34)  # ceil(0.34 * 3) = 2
    assert ids == ["b", "c"] and info["rule"].startswith("rhythm only")
    with pytest.raises(DataError, match="neither popularity nor rhythm"):
        matching_test_set(test, None, 0.5)
    with pytest.raises(DataError, match="no score for test video 'c'"):
        matching_test_set(test.assign(popularity=1.0), rhythm.iloc[:2], 0.5)
    with pytest.raises(DataError, match="'b' has no popularity"):
        matching_test_set(test.assign(popularity=[1.0, np.nan, 2.0]), rhythm, 0.5)
