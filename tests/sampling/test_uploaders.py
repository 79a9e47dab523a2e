import numpy as np
import pandas as pd
import pytest

from pipeline.data.schema import GENRES
from pipeline.errors import DataError
from pipeline.sampling.splits import weak_split
from pipeline.sampling.uploaders import (GENRE_COLUMNS, dist_matrix, dists_from_source, uploader_genre_dist,
                                         video_uploader_dist)


@pytest.fixture
def tiny():
    """Uploader a: train jazz, jazz, hiphop; test classical. b: test only. c: train metal; val pop."""
    videos = pd.DataFrame({"video_id": ["v1", "v2", "v3", "v4", "v5", "v6", "v7"],
                           "uploader_id": ["a", "a", "a", "a", "b", "c", "c"]})
    music = {"v1": "mj1", "v2": "mj2", "v3": "mh1", "v4": "mc1", "v5": "mh1", "v6": "mm1", "v7": "mp1"}
    pairs = pd.DataFrame({"video_id": list(music), "music_id": list(music.values()), "kind": "ugc"})
    genres = pd.DataFrame({"music_id": ["mj1", "mj2", "mh1", "mc1", "mm1", "mp1"],
                           "genre": ["jazz", "jazz", "hiphop", "classical", "metal", "pop"]})
    split = pd.DataFrame({"video_id": list(music),
                          "split": ["train", "train", "train", "test", "test", "train", "val"]})
    return videos, pairs, genres, split


def vec(**shares):
    return np.array([shares.get(g, 0.0) for g in GENRES])


def test_hand_computed_distributions(tiny):
    videos, pairs, genres, split = tiny
    dists, prior = uploader_genre_dist(videos, pairs, split, genres)
    table = dists.set_index("uploader_id")
    # 4 training videos: jazz 2, hiphop 1, metal 1
    np.testing.assert_allclose(prior, vec(jazz=0.5, hiphop=0.25, metal=0.25))
    np.testing.assert_allclose(table.loc["a", GENRE_COLUMNS].to_numpy(float), vec(jazz=2 / 3, hiphop=1 / 3))
    np.testing.assert_allclose(table.loc["c", GENRE_COLUMNS].to_numpy(float), vec(metal=1.0))
    np.testing.assert_allclose(table.loc["b", GENRE_COLUMNS].to_numpy(float), prior)  # no training video
    assert table["n_train"].to_dict() == {"a": 3, "b": 0, "c": 1}
    assert list(dists["uploader_id"]) == ["a", "b", "c"]


def test_prior_is_video_weighted_mean(world):
    videos, pairs, genres, _ = world
    dists, prior = uploader_genre_dist(videos, pairs, weak_split(pairs, seed=0), genres)
    warm = dists[dists["n_train"] > 0]
    np.testing.assert_allclose(np.average(dist_matrix(warm), axis=0, weights=warm["n_train"]), prior)
    np.testing.assert_allclose(dist_matrix(dists).sum(axis=1), 1.0)


def test_no_leakage_from_held_out_videos(world):
    videos, pairs, genres, _ = world
    split = weak_split(pairs, seed=0)
    base, base_prior = uploader_genre_dist(videos, pairs, split, genres)
    held = set(split.loc[split["split"] != "train", "video_id"])
    genre_of = genres.set_index("music_id")["genre"]
    metal = genres.loc[genres["genre"] == "metal", "music_id"].iloc[0]
    changed = pairs.copy()
    # every val/test video now uses a metal clip: no distribution may move
    changed.loc[changed["video_id"].isin(held), "music_id"] = metal
    assert (genre_of.loc[pairs.loc[pairs["video_id"].isin(held), "music_id"]] != "metal").any()
    after, after_prior = uploader_genre_dist(videos, changed, split, genres)
    pd.testing.assert_frame_equal(base, after)
    np.testing.assert_array_equal(base_prior, after_prior)
    # the same change on one training video does move its uploader (so the check above can fail)
    train_vid = split.loc[split["split"] == "train", "video_id"].iloc[0]
    if genre_of[pairs.set_index("video_id").loc[train_vid, "music_id"]] == "metal":
        metal = genres.loc[genres["genre"] == "jazz", "music_id"].iloc[0]
    changed.loc[changed["video_id"] == train_vid, "music_id"] = metal
    moved, _ = uploader_genre_dist(videos, changed, split, genres)
    assert not moved.equals(base)


def test_null_uploader_counts_in_prior_only(tiny):
    videos, pairs, genres, split = tiny
    videos = videos.assign(uploader_id=videos["uploader_id"].where(videos["video_id"] != "v6", None))
    dists, prior = uploader_genre_dist(videos, pairs, split, genres)
    np.testing.assert_allclose(prior, vec(jazz=0.5, hiphop=0.25, metal=0.25))  # v6 (metal) still counted
    table = dists.set_index("uploader_id")
    assert table.loc["c", "n_train"] == 0  # c's only training video lost its uploader
    out = video_uploader_dist(videos, ["v1", "v6"], dists, prior)
    np.testing.assert_allclose(out[0], vec(jazz=2 / 3, hiphop=1 / 3))
    np.testing.assert_allclose(out[1], prior)


def test_source_distributions_override(tiny):
    videos, pairs, genres, split = tiny
    dists, _ = uploader_genre_dist(videos, pairs, split, genres)
    shipped = pd.DataFrame({"uploader_id": ["a", "zz"], "genre_dist": [list(vec(pop=1.0)), list(vec(jazz=1.0))]})
    out = dists_from_source(shipped, dists).set_index("uploader_id")
    np.testing.assert_allclose(out.loc["a", GENRE_COLUMNS].to_numpy(float), vec(pop=1.0))
    np.testing.assert_allclose(out.loc["c", GENRE_COLUMNS].to_numpy(float), vec(metal=1.0))  # computed kept
    assert "zz" not in out.index
    with pytest.raises(DataError, match="genre_dist must hold 6"):
        dists_from_source(pd.DataFrame({"uploader_id": ["a"], "genre_dist": [[0.5, 0.5]]}), dists)


def test_errors_name_the_id(tiny):
    videos, pairs, genres, split = tiny
    with pytest.raises(DataError, match="mj1.*no genre label"):
        uploader_genre_dist(videos, pairs, split, genres[genres["music_id"] != "mj1"])
    with pytest.raises(DataError, match="'v2' not in the videos table"):
        uploader_genre_dist(videos[videos["video_id"] != "v2"], pairs, split, genres)
    with pytest.raises(DataError, match="train set is empty"):
        uploader_genre_dist(videos, pairs, split.assign(split="test"), genres)


def test_music_without_a_genre_label_counts_uniformly(world):
    """A clip the genre stage could not label (uniform g(m)) is not its argmax genre: it adds 1/6 to each."""
    videos, pairs, genres, _ = world
    unlabelled = genres.assign(genre=genres["genre"].where(genres["music_id"] != genres["music_id"].iloc[0], None))
    ugc = pairs[pairs["kind"] == "ugc"]
    split = pd.DataFrame({"video_id": ugc["video_id"], "split": "train"})
    dists, prior = uploader_genre_dist(videos, ugc, split, unlabelled)
    base, base_prior = uploader_genre_dist(videos, ugc, split, genres)
    n = (ugc["music_id"] == genres["music_id"].iloc[0]).sum()
    g = GENRES.index(genres["genre"].iloc[0])
    expected = base_prior * len(ugc)
    expected[g] -= n
    expected += n / len(GENRES)
    np.testing.assert_allclose(prior, expected / len(ugc))
    np.testing.assert_allclose(dists[list(GENRES)].sum(axis=1), 1.0)
