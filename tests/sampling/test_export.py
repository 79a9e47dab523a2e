"""Export to the TT-150k release format, and the round trip export -> import_tt150k -> the same dataset.

The round trip needs pipeline.data.importers (another module of this project); it is imported at the top on
purpose so that this file fails loudly, rather than skips, when the importer is missing.
"""
import numpy as np
import pandas as pd
import pytest

from pipeline.data.importers import import_tt150k
from pipeline.data.schema import GENRES
from pipeline.errors import DataError
from pipeline.io import read_ids
from pipeline.sampling.dataset import SplitConfig, build_dataset
from pipeline.sampling.export import export_tt150k
from pipeline.sampling.uploaders import GENRE_COLUMNS

CFG = SplitConfig(seed=2, n_negatives=25, schemes=("weak", "strong"), diverse_top_uploaders=3)


@pytest.fixture(scope="module")
def exported(world, tmp_path_factory):
    videos, pairs, genres, rhythm = world
    ds = build_dataset(videos, pairs, genres, rhythm, CFG)
    rng = np.random.default_rng(0)
    video_ids = sorted(videos["video_id"])  # UGC and PGC, as extraction writes them
    feats = {"video_visual": rng.standard_normal((len(video_ids), 2048)).astype(np.float32),
             "music_audio": rng.standard_normal((40, 128)).astype(np.float32),
             "music_smile": rng.standard_normal((40, 128)).astype(np.float32)}
    music_ids = sorted(genres["music_id"])
    out = tmp_path_factory.mktemp("export") / "tt150k"
    summary = export_tt150k(ds, out, scheme="weak", video_visual=feats["video_visual"], video_feature_ids=video_ids,
                            music_audio=feats["music_audio"], music_smile=feats["music_smile"],
                            music_feature_ids=music_ids)
    return ds, out, feats, video_ids, music_ids, summary


def test_release_forms(exported, world):
    ds, out, feats, video_ids, music_ids, summary = exported
    _, pairs, genres, _ = world
    train = np.load(out / "train.npy", allow_pickle=True)
    split = ds.split("weak")
    train_ids = sorted(split.loc[split["split"] == "train", "video_id"])
    assert train.dtype == object and train.shape == (len(train_ids), 5) == (summary["train"], 5)
    music_of = pairs.set_index("video_id")["music_id"]
    genre_of = genres.set_index("music_id")["genre"]
    pop = music_of.loc[train_ids].value_counts()
    dists = ds.uploader_dists("weak").set_index("uploader_id")
    uploader_of = ds.ugc.set_index("video_id")["uploader_id"]
    for row in train[::37]:
        vid = ds.video_ids[row[0]]
        music = music_of[vid]
        assert isinstance(row[0], int) and isinstance(row[1], int) and ds.music_ids[row[1]] == music
        assert isinstance(row[2], str) and row[2] == str(GENRES.index(genre_of[music]))
        assert isinstance(row[3], list) and len(row[3]) == 6
        np.testing.assert_allclose(row[3], dists.loc[uploader_of[vid], GENRE_COLUMNS].to_numpy(float))
        assert row[4] == pytest.approx(pop[music] / len(train_ids))  # training popularity share
    for name in ("val", "test"):
        rows = np.load(out / "100neg" / f"{name}.npy", allow_pickle=True)
        es = ds.eval_sets[f"weak/{name}"]
        assert rows.shape == (len(es.video_id), 3)
        assert [ds.video_ids[r[0]] for r in rows] == list(es.video_id)
        assert all(r[2].dtype == np.int64 and r[2].shape == (25,) and r[1] not in r[2] for r in rows)
        weights = np.load(out / f"video_popularity_{name}.npy")
        np.testing.assert_array_equal(weights, es.weight)
        assert weights.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(np.load(out / "user_prior_mean.npy"), ds.prior("weak"))
    visual = np.load(out / "visual_features_resnet_V.npy")
    assert visual.shape == (600, 2048) and visual.dtype == np.float32
    np.testing.assert_array_equal(visual[7], feats["video_visual"][video_ids.index(ds.video_ids[7])])
    np.testing.assert_array_equal(np.load(out / "new_music_smile_features_norm.npy"), feats["music_smile"])
    pgc_train = np.load(out / "pgc" / "train.npy")
    assert pgc_train.dtype == np.int64 and pgc_train.shape[1] == 2
    # the teacher's pairs: PGC pairs whose music no music-disjoint scheme holds out (the rest would leak)
    assert len(pgc_train) + len(np.load(out / "pgc" / "val.npy")) == len(ds.pgc_pairs("weak")) <= 40


def imported_index(ids: pd.Series, prefix: str) -> np.ndarray:
    """v00012 -> 12: the importer's ids are the release's ints, zero-padded."""
    assert ids.str.fullmatch(prefix + r"\d+").all()
    return ids.str[len(prefix):].astype(int).to_numpy()


def test_round_trip_through_importer(exported, tmp_path):
    ds, out, feats, video_ids, music_ids, _ = exported
    raw = tmp_path / "raw"
    import_tt150k(out, raw)
    videos = pd.read_parquet(raw / "videos.parquet")
    pairs = pd.read_parquet(raw / "pairs.parquet")
    split = pd.read_parquet(raw / "split.parquet")
    negs = pd.read_parquet(raw / "negatives.parquet")
    shipped_uploaders = pd.read_parquet(raw / "uploaders.parquet")
    ugc_v = lambda s: [ds.video_ids[i] for i in imported_index(s, "v")]  # noqa: E731
    music = lambda s: [ds.music_ids[i] for i in imported_index(s, "m")]  # noqa: E731

    # same UGC pairs and split
    ugc = pairs[pairs["kind"] == "ugc"]
    got = pd.DataFrame({"video_id": ugc_v(ugc["video_id"]), "music_id": music(ugc["music_id"])})
    pd.testing.assert_frame_equal(got.sort_values("video_id").reset_index(drop=True),
                                  ds.ugc[["video_id", "music_id"]])
    u_split = split[split["video_id"].str.startswith("v")]
    got = pd.DataFrame({"video_id": ugc_v(u_split["video_id"]), "split": u_split["split"].to_numpy()})
    pd.testing.assert_frame_equal(got.sort_values("video_id").reset_index(drop=True), ds.split("weak"),
                                  check_dtype=False)
    # same negatives and weights
    for name in ("val", "test"):
        es = ds.eval_sets[f"weak/{name}"]
        rows = negs[negs["split"] == name]
        lookup = dict(zip(ugc_v(rows["video_id"]), rows["negatives"]))
        assert sorted(lookup) == list(es.video_id)
        for vid, row in zip(es.video_id, es.negatives):
            assert music(pd.Series(list(lookup[vid]))) == [ds.music_ids[i] for i in row]
        w = u_split[u_split["split"] == name]
        np.testing.assert_allclose(w.sort_values("video_id")["weight"].to_numpy(), es.weight)
    # same features
    fdir = raw / "features"
    f_ids = read_ids(fdir / "video_ids.txt")
    visual = np.load(fdir / "video_visual.npy")
    for k in (0, 123, 599):
        vid = ds.video_ids[k]
        np.testing.assert_array_equal(visual[f_ids.index(f"v{k:05d}")], feats["video_visual"][video_ids.index(vid)])
    m_ids = read_ids(fdir / "music_ids.txt")
    audio = np.load(fdir / "music_audio.npy")
    np.testing.assert_array_equal(audio[[m_ids.index(f"m{k:05d}") for k in range(40)]], feats["music_audio"])
    # same PGC pairs (the importer gives PGC music its own ids; our export shares the music index space)
    pgc = pairs[pairs["kind"] == "pgc"]
    teacher_pairs = ds.pgc_pairs("weak")
    pgc_sorted = sorted(teacher_pairs["video_id"])
    got = {(pgc_sorted[v], ds.music_ids[m]) for v, m in zip(imported_index(pgc["video_id"], "p"),
                                                             imported_index(pgc["music_id"], "pm"))}
    assert got == set(zip(teacher_pairs["video_id"], teacher_pairs["music_id"]))

    # the imported release rebuilt as a dataset: its "source" scheme is our weak scheme
    music_table = pd.read_parquet(raw / "music.parquet")
    genre_of = dict(zip(ds.music_ids, ds.ugc.drop_duplicates("music_id").set_index("music_id")["genre"]
                        .reindex(ds.music_ids).fillna("classical")))
    labels = pd.DataFrame({"music_id": music_table["music_id"],
                           "genre": [genre_of[ds.music_ids[int(m.lstrip("pm"))]] for m in music_table["music_id"]]})
    rebuilt = build_dataset(videos, pairs, labels, None, SplitConfig(seed=99, n_negatives=25, schemes=()),
                            source_split=split, source_negatives=negs, source_uploaders=shipped_uploaders)
    assert rebuilt.schemes == ["source"]
    for name in ("val", "test"):
        a, b = rebuilt.eval_sets[f"source/{name}"], ds.eval_sets[f"weak/{name}"]
        assert ugc_v(pd.Series(a.video_id)) == list(b.video_id)
        np.testing.assert_array_equal(a.positive, b.positive)  # m ids sort before pm ids: same indices
        np.testing.assert_array_equal(a.negatives, b.negatives)
        np.testing.assert_allclose(a.weight, b.weight)
    np.testing.assert_allclose(rebuilt.prior("source"), ds.prior("weak"))
    assert rebuilt.info["diverse"] == {"skipped": "no test video has an uploader"}  # the release has none
    assert "skipped" in rebuilt.info["matching"]


def test_export_errors(exported, tmp_path):
    ds, _, feats, video_ids, music_ids, _ = exported
    with pytest.raises(DataError, match="no scheme 'nope'"):
        export_tt150k(ds, tmp_path / "x", scheme="nope", video_visual=feats["video_visual"],
                      video_feature_ids=video_ids, music_audio=feats["music_audio"],
                      music_smile=feats["music_smile"], music_feature_ids=music_ids)
    with pytest.raises(DataError, match="no feature row for id"):
        export_tt150k(ds, tmp_path / "x", scheme="weak", video_visual=feats["video_visual"][1:],
                      video_feature_ids=video_ids[1:], music_audio=feats["music_audio"],
                      music_smile=feats["music_smile"], music_feature_ids=music_ids)
    assert not (tmp_path / "x").exists()  # nothing half-written


def test_the_export_command_writes_the_same_release_from_the_stage_folders(exported, tmp_path, capsys):
    """`python -m pipeline export-tt150k OUT` reads data/dataset and data/features as the stages write them and
    writes what export_tt150k writes; a missing feature folder is one line and exit 1."""
    from pipeline.__main__ import main
    from pipeline.data.schema import MUSIC_IDS_FILE, VIDEO_IDS_FILE
    from pipeline.io import write_ids
    from pipeline.sampling.store import save_dataset

    ds, out, feats, video_ids, music_ids, _ = exported
    save_dataset(ds, tmp_path / "dataset")
    features = tmp_path / "features"
    for folder, name, ids, file in (("video", "video_visual", video_ids, VIDEO_IDS_FILE),
                                    ("music", "music_audio", music_ids, MUSIC_IDS_FILE),
                                    ("smile", "music_smile", music_ids, MUSIC_IDS_FILE)):
        (features / folder).mkdir(parents=True)
        np.save(features / folder / f"{name}.npy", feats[name])
        write_ids(ids, features / folder / file)
    args = ["export-tt150k", str(tmp_path / "release"), "--scheme", "weak", "--dataset", str(tmp_path / "dataset"),
            "--features", str(features)]
    assert main(args) == 0
    assert "scheme=weak" in capsys.readouterr().out
    written = sorted(p.relative_to(out) for p in out.rglob("*.npy"))
    assert written and written == sorted(p.relative_to(tmp_path / "release")
                                         for p in (tmp_path / "release").rglob("*.npy"))
    for rel in written:
        assert (out / rel).read_bytes() == (tmp_path / "release" / rel).read_bytes(), rel
    (features / "smile" / "music_smile.npy").unlink()
    assert main(args) == 1
    assert "music_smile.npy: missing" in capsys.readouterr().err
