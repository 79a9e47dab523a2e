import numpy as np
import pandas as pd
import pytest

from pipeline.config import from_group
from pipeline.errors import DataError, ParamsError
from pipeline.io import tree_md5
from pipeline.sampling.dataset import SplitConfig, build_dataset, load_dataset, save_dataset
from pipeline.sampling.negatives import inverse_popularity_weights

CFG = dict(n_negatives=20, intervention_ratios=(0.5, 0.8), diverse_top_uploaders=4, matching_top_fraction=0.25)


@pytest.fixture(scope="module")
def ds(world):
    videos, pairs, genres, rhythm = world
    return build_dataset(videos, pairs, genres, rhythm, SplitConfig(seed=5, **CFG))


def assert_same(a, b):
    for name in ("ugc", "pgc", "splits", "uploaders", "priors"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name), check_dtype=False)
    assert a.video_ids == b.video_ids and a.music_ids == b.music_ids
    assert list(a.eval_sets) == list(b.eval_sets)
    for key in a.eval_sets:
        x, y = a.eval_sets[key], b.eval_sets[key]
        assert list(x.video_id) == list(y.video_id), key
        np.testing.assert_array_equal(x.positive, y.positive)
        np.testing.assert_array_equal(x.negatives, y.negatives)
        np.testing.assert_array_equal(x.weight, y.weight)


def test_schemes_and_eval_sets_consistent(ds, world):
    _, pairs, _, _ = world
    assert ds.schemes == ["weak", "strong", "intervention_0.5", "intervention_0.8"]
    assert not ds.splits.duplicated(["scheme", "video_id"]).any()  # no video in two sets of a scheme
    music_of = pairs.set_index("video_id")["music_id"]
    for scheme in ds.schemes:
        split = ds.split(scheme)
        train = split.loc[split["split"] == "train", "video_id"]
        train_music = np.array([ds.music_ids.index(m) for m in music_of.loc[train]])
        for name in ("val", "test"):
            es = ds.eval_sets[f"{scheme}/{name}"]
            assert list(es.video_id) == sorted(split.loc[split["split"] == name, "video_id"])
            assert [ds.music_ids[i] for i in es.positive] == list(music_of.loc[es.video_id])
            assert es.negatives.shape == (len(es.video_id), 20)
            assert not (es.negatives == es.positive[:, None]).any()
            np.testing.assert_allclose(es.weight, inverse_popularity_weights(es.positive, train_music, 40))
            assert es.weight.sum() == pytest.approx(1.0)


def test_intervened_sets_are_renormalised_subsets(ds):
    test = ds.eval_sets["weak/test"]
    for name in ("diverse", "matching"):
        sub = ds.eval_sets[f"weak/{name}"]
        assert len(sub.video_id) and set(sub.video_id) <= set(test.video_id)
        keep = np.isin(test.video_id, sub.video_id)
        np.testing.assert_array_equal(sub.negatives, test.negatives[keep])
        np.testing.assert_allclose(sub.weight, test.weight[keep] / test.weight[keep].sum())
    assert len(ds.info["diverse"]["uploaders"]) == 4
    assert ds.info["matching"]["fallback"] is False
    assert ds.eval_sets["weak/matching"].video_id.size == int(np.ceil(0.25 * len(test.video_id)))


def test_pgc_split(ds, world):
    _, pairs, _, _ = world
    assert sorted(ds.pgc["video_id"]) == sorted(pairs.loc[pairs["kind"] == "pgc", "video_id"])
    assert (ds.pgc["split"] == "val").sum() == 4  # 10% of 40


def test_a_schemes_teacher_never_sees_music_it_tests_without_training_on(ds):
    """The leak: a teacher trained on a PGC pair of a strong-split test clip hands its look to the student."""
    music_of = ds.ugc.set_index("video_id")["music_id"]
    for scheme in ds.schemes:
        split = ds.split(scheme)
        train = set(music_of.loc[split.loc[split["split"] == "train", "video_id"]])
        held = set(music_of.loc[split.loc[split["split"] != "train", "video_id"]]) - train
        teacher_music = set(ds.pgc_pairs(scheme)["music_id"])
        assert not held & teacher_music, scheme
        assert held == ds.held_out_music(scheme)
        assert ds.info["pgc"][scheme]["excluded"] == int(ds.pgc["music_id"].isin(held).sum())
    assert ds.held_out_music("strong")  # music-disjoint: its teacher loses those pairs, the weak one keeps all
    assert len(ds.pgc_pairs("weak")) == len(ds.pgc) - len(ds.pgc[ds.pgc["music_id"].isin(ds.held_out_music("weak"))])
    assert set(ds.pgc_pairs()["music_id"]).isdisjoint(ds.held_out_music())  # no scheme: excluded for all


def test_pgc_validation_negatives_are_drawn_once_by_split(ds):
    es = ds.eval_sets["pgc/val"]
    assert list(es.video_id) == sorted(ds.pgc.loc[ds.pgc["split"] == "val", "video_id"])
    assert es.negatives.shape == (len(es.video_id), 20) and not (es.negatives == es.positive[:, None]).any()


def test_ranking_pool_excludes_music_only_pgc_pairs_use(world):
    videos, pairs, genres, rhythm = world
    extra = pd.DataFrame({"music_id": ["pm000", "zz_unused"], "genre": ["jazz", "pop"]})
    pgc_only = pairs.copy()
    pgc_rows = pgc_only.index[pgc_only["kind"] == "pgc"][:5]
    pgc_only.loc[pgc_rows, "music_id"] = "pm000"
    built = build_dataset(videos, pgc_only, pd.concat([genres, extra], ignore_index=True), rhythm,
                          SplitConfig(seed=5, schemes=("weak",), **CFG))
    pool = dict(zip(built.music_ids, built.pool_mask()))
    assert pool["pm000"] is np.False_ and pool["zz_unused"] is np.True_ and sum(pool.values()) == 41
    index = built.music_ids.index("pm000")
    for key, es in built.eval_sets.items():
        if not key.startswith("pgc/"):
            assert not (es.negatives == index).any(), key


def test_determinism_and_seed(ds, world):
    videos, pairs, genres, rhythm = world
    again = build_dataset(videos.sample(frac=1.0, random_state=3), pairs.sample(frac=1.0, random_state=4),
                          genres, rhythm, SplitConfig(seed=5, **CFG))
    assert_same(ds, again)
    other = build_dataset(videos, pairs, genres, rhythm, SplitConfig(seed=6, **CFG))
    assert not other.splits.equals(ds.splits)
    assert not np.array_equal(other.eval_sets["strong/test"].positive, ds.eval_sets["strong/test"].positive) or \
        not np.array_equal(other.eval_sets["strong/test"].negatives, ds.eval_sets["strong/test"].negatives)


def test_save_load_roundtrip_and_bytes(ds, tmp_path):
    save_dataset(ds, tmp_path / "a")
    save_dataset(ds, tmp_path / "b")
    assert tree_md5(tmp_path / "a") == tree_md5(tmp_path / "b")
    loaded = load_dataset(tmp_path / "a")
    assert_same(ds, loaded)
    assert loaded.info == ds.info
    np.testing.assert_allclose(loaded.prior("weak"), ds.prior("weak"))
    with pytest.raises(DataError, match="no built dataset"):
        load_dataset(tmp_path / "missing")


def test_source_split_and_negatives_are_kept(ds, world):
    videos, pairs, genres, _ = world
    shipped_split = ds.split("strong")
    shipped_negs = []
    for name in ("val", "test"):
        es = ds.eval_sets[f"strong/{name}"]
        for vid, row in list(zip(es.video_id, es.negatives))[::2]:  # ship every other row only
            shipped_negs.append((vid, name, [ds.music_ids[i] for i in row[::-1]]))
    shipped = pd.DataFrame(shipped_negs, columns=["video_id", "split", "negatives"])
    built = build_dataset(videos, pairs, genres, None, SplitConfig(seed=9, schemes=("weak",), **CFG),
                          source_split=shipped_split, source_negatives=shipped)
    assert built.schemes == ["source", "weak"]
    pd.testing.assert_frame_equal(built.split("source"), shipped_split)
    es = built.eval_sets["source/test"]
    mine = ds.eval_sets["strong/test"]
    np.testing.assert_array_equal(es.negatives[::2], mine.negatives[::2, ::-1])  # shipped rows kept as shipped
    assert not np.array_equal(es.negatives[1::2], mine.negatives[1::2])  # the rest sampled anew
    assert not (es.negatives == es.positive[:, None]).any()
    assert built.info["intervene_scheme"] == "source"
    assert built.info["matching"]["fallback"] is True  # no rhythm given: popularity alone, and said so
    assert "source/diverse" in built.eval_sets


def test_errors(world):
    videos, pairs, genres, rhythm = world
    bad = pairs.copy()
    bad.loc[bad.index[5], "music_id"] = "m_unknown"
    with pytest.raises(DataError, match="m_unknown"):
        build_dataset(videos, bad, genres, rhythm, SplitConfig(**CFG))
    with pytest.raises(DataError, match="ranking pool has 1 music"):
        one = pairs.assign(music_id="m000")
        build_dataset(videos, one, genres[genres["music_id"] == "m000"], rhythm, SplitConfig(schemes=("weak",)))
    with pytest.raises(DataError, match="is not in the videos table"):
        build_dataset(videos.iloc[10:], pairs, genres, rhythm, SplitConfig(**CFG))
    with pytest.raises(DataError, match="split.parquet.*'nope'"):
        build_dataset(videos, pairs, genres, rhythm, SplitConfig(**CFG),
                      source_split=pd.DataFrame({"video_id": ["nope"], "split": ["train"]}))


def test_small_pools_and_schemes_degrade_with_the_reason(world):
    """40 music cannot give 100 negatives: every other music becomes a candidate and info says so; an
    intervention scheme the data cannot fill is skipped with its reason, the rest go on."""
    videos, pairs, genres, rhythm = world
    metal = set(genres.loc[genres["genre"] == "metal", "music_id"])  # no metal: no intervention with metal
    pairs, genres = pairs[~pairs["music_id"].isin(metal)], genres[~genres["music_id"].isin(metal)]
    built = build_dataset(videos, pairs, genres, rhythm, SplitConfig(schemes=("weak", "intervention"),
                                                                     intervention_genres=("hiphop", "metal")))
    assert built.eval_sets["weak/test"].negatives.shape[1] == 36
    assert built.info["negatives_capped"]["UGC pool"] == {"asked": 100, "used": 36, "pool": 37}
    assert built.schemes == ["weak"] and "intervention_0.5" in built.info["skipped"]
    assert "split.intervention_ratios" in built.info["skipped"]["intervention_0.5"]


def test_source_without_validation_rows_gets_a_seeded_hold_out(world):
    videos, pairs, genres, rhythm = world
    ugc = pairs[pairs["kind"] == "ugc"].sort_values("video_id")
    shipped = pd.DataFrame({"video_id": ugc["video_id"], "split": ["test" if i % 10 == 0 else "train"
                                                                   for i in range(len(ugc))]})
    built = build_dataset(videos, pairs, genres, None, SplitConfig(**CFG), source_split=shipped)
    assert built.schemes == ["source"]  # "auto": a shipped split is not re-split
    split = built.split("source")
    assert (split["split"] == "val").sum() == round(0.1 * (shipped["split"] == "train").sum())
    assert set(split.loc[split["split"] == "test", "video_id"]) == set(shipped.loc[shipped["split"] == "test",
                                                                                   "video_id"])
    assert "source_val" in built.info


def test_config_from_params():
    cfg = from_group(SplitConfig, {"seed": 3, "ratios": [0.7, 0.15, 0.15], "schemes": ["weak"]}, "split")
    assert cfg.seed == 3 and list(cfg.ratios) == [0.7, 0.15, 0.15]
    with pytest.raises(ParamsError, match="unknown key"):
        from_group(SplitConfig, {"sed": 3}, "split")
    with pytest.raises(ParamsError, match="intervention_ratios"):
        from_group(SplitConfig, {"intervention_ratios": [1.2]}, "split")
    with pytest.raises(ParamsError, match="schemes"):
        from_group(SplitConfig, {"schemes": ["random"]}, "split")
    with pytest.raises(ParamsError, match="diverse_top_uploaders"):
        from_group(SplitConfig, {"diverse_top_uploaders": 1.5}, "split")
    assert from_group(SplitConfig, {"diverse_top_uploaders": 7}, "split").diverse_top_uploaders == 7
