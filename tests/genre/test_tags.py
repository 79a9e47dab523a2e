import numpy as np
import pytest

from pipeline.data.schema import GENRES
from pipeline.errors import DataError, ParamsError
from pipeline.genre.tags import (
    MSD_TAGS, MTT_TAGS, TAG_TO_GENRE, check_against_musicnn, mapping_matrix, tags_to_genres, unmappable_genres,
    vocabulary_name,
)


def _vector(vocab, **probs):
    tags = MSD_TAGS if vocab == "msd" else MTT_TAGS
    v = np.zeros(len(tags))
    for tag, p in probs.items():
        v[tags.index(tag.replace("_", " ").replace("HipHop", "Hip-Hop"))] = p
    return v


def test_vocabularies():
    assert len(MSD_TAGS) == len(set(MSD_TAGS)) == 50 and len(MTT_TAGS) == len(set(MTT_TAGS)) == 50
    assert MSD_TAGS[:3] == ("rock", "pop", "alternative") and MSD_TAGS[-1] == "happy"
    assert MTT_TAGS[:2] == ("guitar", "classical") and MTT_TAGS[-1] == "choral"
    for key, tags in (("msd", MSD_TAGS), ("mtt", MTT_TAGS)):
        assert set(TAG_TO_GENRE[key]) <= set(tags) and set(TAG_TO_GENRE[key].values()) <= set(GENRES)
    # musicnn is not installed here; when it is, the check compares the lists instead of skipping
    assert check_against_musicnn() in (True, False)


def test_model_names_and_unmappable():
    assert vocabulary_name("MSD_vgg") == vocabulary_name("MSD_musicnn") == "msd"
    assert vocabulary_name("MTT_musicnn") == vocabulary_name("mtt") == "mtt"
    with pytest.raises(ParamsError, match="unknown tag vocabulary"):
        vocabulary_name("audioset")
    assert unmappable_genres("msd") == ("classical", "reggae")
    assert unmappable_genres("mtt") == ("jazz", "hiphop", "reggae")
    assert mapping_matrix("msd").sum() == len(TAG_TO_GENRE["msd"])


def test_hand_built_msd_vectors():
    rows = np.stack([
        _vector("msd", jazz=0.8, HipHop=0.5, rnb=0.5, rock=0.9, sad=0.7),
        _vector("msd", metal=0.5, heavy_metal=0.5, pop=0.25),
        _vector("msd", rock=1.0, sad=1.0),  # no genre tag fires
        _vector("msd", pop=1.0),
    ])
    out = tags_to_genres(rows, "MSD_musicnn")
    assert out.unmappable == ("classical", "reggae")
    g = {name: i for i, name in enumerate(GENRES)}
    # row 0: jazz 0.8, hiphop 1 - 0.5 * 0.5 = 0.75 (noisy-OR), total 1.55
    np.testing.assert_allclose(out.proba[0, g["jazz"]], 0.8 / 1.55, rtol=1e-6)
    np.testing.assert_allclose(out.proba[0, g["hiphop"]], 0.75 / 1.55, rtol=1e-6)
    # row 1: metal 0.75, pop 0.25
    np.testing.assert_allclose(out.proba[1, [g["metal"], g["pop"]]], [0.75, 0.25], rtol=1e-6)
    np.testing.assert_allclose(out.evidence[:2], [1.55, 1.0], rtol=1e-6)
    # row 2: no evidence -> uniform over the four mappable genres
    assert out.evidence[2] == 0
    np.testing.assert_allclose(out.proba[2], [0, 0.25, 0.25, 0, 0.25, 0.25])
    np.testing.assert_allclose(out.proba[3, g["pop"]], 1.0, rtol=1e-6)
    assert np.all(out.proba[:, [g["classical"], g["reggae"]]] == 0)
    np.testing.assert_allclose(out.proba.sum(axis=1), 1.0, rtol=1e-6)


def test_matches_brute_force_noisy_or_on_mtt():
    rng = np.random.default_rng(0)
    tags = rng.uniform(0, 1, size=(20, 50))
    out = tags_to_genres(tags, "MTT_vgg")
    for n in range(len(tags)):
        scores = np.zeros(len(GENRES))
        for genre_i, genre in enumerate(GENRES):
            none = 1.0
            for tag, mapped in TAG_TO_GENRE["mtt"].items():
                if mapped == genre:
                    none *= 1 - tags[n, MTT_TAGS.index(tag)]
            scores[genre_i] = 1 - none if genre in TAG_TO_GENRE["mtt"].values() else 0.0
        np.testing.assert_allclose(out.proba[n], scores / scores.sum(), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(out.evidence[n], scores.sum(), rtol=1e-5)


def test_bad_tag_matrices():
    with pytest.raises(DataError, match="width 49 does not match the MSD vocabulary \\(50 tags\\)"):
        tags_to_genres(np.zeros((2, 49)), "msd")
    with pytest.raises(DataError, match="expected a matrix"):
        tags_to_genres(np.zeros(50), "msd")
    bad = np.zeros((3, 50))
    bad[1, 4] = 1.5
    with pytest.raises(DataError, match="row 1"):
        tags_to_genres(bad, "mtt")
    bad[1, 4] = np.nan
    with pytest.raises(DataError, match="row 1"):
        tags_to_genres(bad, "mtt")
