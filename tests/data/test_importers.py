"""Importers of the ingest stage on tiny hand-built sources: a TT-150k release, a world dir, a media folder."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.data.importers import _write_gathered, import_folder, import_tt150k, import_world, ingest
from pipeline.data.schema import GENRES
from pipeline.errors import DataError, ParamsError
from pipeline.io import read_ids, tree_md5
from tests.fixtures.releases import write_media_folder
from tests.fixtures.releases import write_release as _write_release_fixture


@pytest.fixture(autouse=True)
def _placeholder_media_pass_the_probe(monkeypatch):
    """These tests pin the tables' checks on placeholder media bytes (b"clip_a.mp4"); ingest's header probe
    of real media has its own tests (tests/features/test_mediacheck.py: a text file named .mp4 is refused).
    """
    monkeypatch.setattr("pipeline.data.importers.probe_media", lambda *a, **k: [])

# ------------------------------------------------------------------------------------------ TT-150k fake

N_VIDEOS, N_MUSIC = 22, 6  # video rows 20 and 21 are never used
DISTS = [[0.5, 0.5, 0, 0, 0, 0], [0.0, 0.2, 0.8, 0, 0, 0], [1.0, 0, 0, 0, 0, 0]]
# train rows: (video, music, genre code of the music, uploader dist index, propensity)
MUSIC_GENRE = {0: 0, 1: 1, 2: 2, 3: 0, 4: 3}  # music 5 never appears in train
TRAIN = [(v, v % 5, MUSIC_GENRE[v % 5], v % 3, 0.1 + v / 100) for v in range(14)]
VAL = [(14, 5, [0, 1, 2]), (15, 0, [1, 2, 3]), (16, 1, [2, 3, 4])]
TEST = [(17, 2, [3, 4, 5]), (18, 3, [4, 5, 0]), (19, 4, [5, 0, 1])]


def _obj(rows, two_d=False):
    """An object array as the public code stores it (np.save with pickled Python objects)."""
    arr = np.empty((len(rows), len(rows[0])) if two_d else len(rows), dtype=object)
    for i, r in enumerate(rows):
        if two_d:
            for j, x in enumerate(r):
                arr[i, j] = x
        else:
            arr[i] = list(r)
    return arr


def tt_release() -> dict:
    """The files of a fake release: {relative path: array}. Tests mutate it before writing."""
    rng = np.random.default_rng(0)
    train = [[v, m, str(g), list(map(float, DISTS[d])), p] for v, m, g, d, p in TRAIN]
    files = {
        "visual_features_resnet_V.npy": rng.standard_normal((N_VIDEOS, 2048)).astype(np.float32),
        "music_features.npy": rng.standard_normal((N_MUSIC, 128)).astype(np.float32),
        "new_music_smile_features_norm.npy": rng.standard_normal((N_MUSIC, 128)).astype(np.float32),
        "train.npy": _obj(train, two_d=True),
        "100neg/val.npy": _obj([[v, m, np.array(n, dtype=np.int64)] for v, m, n in VAL]),
        "100neg/test.npy": _obj([[v, m, np.array(n, dtype=np.int64)] for v, m, n in TEST]),
        "video_popularity_val.npy": np.array([0.5, 0.25, 0.25]),
        "video_popularity_test.npy": np.array([0.2, 0.3, 0.5], dtype=np.float32),
        "user_prior_mean.npy": np.array([0.4, 0.2, 0.2, 0.1, 0.05, 0.05]),
        "pgc/train.npy": np.array([[0, 1], [2, 0], [3, 1]], dtype=np.int64),
        "pgc/val.npy": np.array([[4, 2]], dtype=np.int64),
        "pgc/mv_video_resnet_features.npy": rng.standard_normal((5, 2048)).astype(np.float32),
        "pgc/vggish_features.npy": rng.standard_normal((3, 128)).astype(np.float32),
        "pgc/opensmile_features_norm.npy": rng.standard_normal((3, 128)).astype(np.float32),
    }
    return files


def write_release(root, files):
    for rel, arr in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        np.save(root / rel, arr, allow_pickle=True)
    return root


@pytest.fixture
def release(tmp_path):
    return write_release(tmp_path / "tt", tt_release())


def test_tt150k_tables_ids_and_splits(release, tmp_path):
    out = tmp_path / "raw"
    summary = import_tt150k(release, out)
    videos, music, pairs = (pd.read_parquet(out / f"{n}.parquet") for n in ("videos", "music", "pairs"))
    ugc = videos[videos.kind == "ugc"]
    assert list(ugc.video_id) == [f"v{i:05d}" for i in range(20)]  # rows 20, 21 unused: dropped
    # PGC video 1 is in neither pgc/train.npy nor pgc/val.npy
    assert list(videos[videos.kind == "pgc"].video_id) == ["p00000", "p00002", "p00003", "p00004"]
    assert videos.path.isna().all() and videos.text.isna().all() and videos.popularity.isna().all()
    # uploaders: one per distinct distribution, numbered in sorted order of the vectors
    order = sorted(tuple(d) for d in DISTS)
    ups = pd.read_parquet(out / "uploaders.parquet")
    assert list(ups.uploader_id) == ["u00000", "u00001", "u00002"]
    assert [tuple(d) for d in ups.genre_dist] == order
    for v, _, _, d, _ in TRAIN:
        assert ugc.set_index("video_id").uploader_id[f"v{v:05d}"] == f"u{order.index(tuple(DISTS[d])):05d}"
    assert ugc.uploader_id.iloc[14:].isna().all()  # val/test videos: no uploader
    # music: genre from train rows, popularity = train rows, music 5 unseen -> null genre
    m = music.set_index("music_id")
    assert list(m.index) == [f"m{i:05d}" for i in range(6)] + ["pm00000", "pm00001", "pm00002"]
    assert [m.genre[f"m{i:05d}"] for i in range(5)] == [GENRES[MUSIC_GENRE[i]] for i in range(5)]
    assert pd.isna(m.genre["m00005"])
    assert [m.popularity[f"m{i:05d}"] for i in range(6)] == [3, 3, 3, 3, 2, 0]  # v % 5 over v < 14
    assert [m.popularity[f"pm{i:05d}"] for i in range(3)] == [1, 2, 0]  # PGC train pairs
    p = pairs.set_index("video_id")
    assert p.music_id["v00017"] == "m00002" and p.music_id["p00004"] == "pm00002" and p.kind["p00004"] == "pgc"
    assert len(pairs) == 24
    split = pd.read_parquet(out / "split.parquet").set_index("video_id")
    assert split.split["v00013"] == "train" and split.split["v00015"] == "val" and split.split["v00019"] == "test"
    assert split.split["p00002"] == "train" and split.split["p00004"] == "val"
    assert split.weight["v00014"] == 0.5 and split.weight["v00019"] == pytest.approx(0.5)
    assert np.isnan(split.weight["v00000"]) and split.propensity["v00010"] == pytest.approx(0.2)
    neg = pd.read_parquet(out / "negatives.parquet").set_index("video_id")
    assert list(neg.negatives["v00018"]) == ["m00004", "m00005", "m00000"] and neg.split["v00018"] == "test"
    assert len(neg) == 6
    src = json.loads((out / "source.json").read_text())
    assert src == summary and src["user_prior_mean"] == [0.4, 0.2, 0.2, 0.1, 0.05, 0.05]
    assert src["counts"]["unused_video_rows"] == 2 and src["counts"]["uploaders"] == 3


def test_tt150k_features_follow_sorted_ids(release, tmp_path):
    out = tmp_path / "raw"
    import_tt150k(release, out)
    f = tt_release()  # same seed: the same arrays
    vids, mids = read_ids(out / "features/video_ids.txt"), read_ids(out / "features/music_ids.txt")
    assert vids == sorted(vids) and mids == sorted(mids) and len(vids) == 24 and len(mids) == 9
    visual, audio, smile = (np.load(out / f"features/{n}.npy") for n in ("video_visual", "music_audio", "music_smile"))
    assert visual.dtype == np.float32 and visual.shape == (24, 2048)
    for row, vid in enumerate(vids):
        src = f["pgc/mv_video_resnet_features.npy"] if vid[0] == "p" else f["visual_features_resnet_V.npy"]
        np.testing.assert_array_equal(visual[row], src[int(vid[1:])])
    for row, mid in enumerate(mids):
        pgc, i = mid.startswith("pm"), int(mid[-5:])
        np.testing.assert_array_equal(audio[row], f["pgc/vggish_features.npy" if pgc else "music_features.npy"][i])
        smile_src = f["pgc/opensmile_features_norm.npy" if pgc else "new_music_smile_features_norm.npy"]
        np.testing.assert_array_equal(smile[row], smile_src[i])


def test_tt150k_without_pgc_and_twice_identical(tmp_path):
    files = {k: v for k, v in tt_release().items() if not k.startswith("pgc/")}
    src = write_release(tmp_path / "tt", files)
    a, b = tmp_path / "a", tmp_path / "b"
    import_tt150k(src, a)
    import_tt150k(src, b)
    assert tree_md5(a) == tree_md5(b)
    assert (pd.read_parquet(a / "videos.parquet").kind == "ugc").all()
    assert np.load(a / "features/music_audio.npy").shape == (6, 128)


def test_gathered_matrix_matches_brute_force(tmp_path):
    """Rows of two matrices interleaved by sorted id, streamed in chunks smaller than a block."""
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((7, 3)).astype(np.float32), rng.standard_normal((4, 3)).astype(np.float32)
    blocks = [(["v3", "v0", "v5", "v6"], a, np.array([3, 0, 5, 6])), (["p1", "u0", "a2"], b, np.array([1, 0, 2]))]
    ids = _write_gathered(blocks, tmp_path / "x.npy", chunk=2)
    assert ids == ["a2", "p1", "u0", "v0", "v3", "v5", "v6"]
    source = {"v3": a[3], "v0": a[0], "v5": a[5], "v6": a[6], "p1": b[1], "u0": b[0], "a2": b[2]}
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), np.stack([source[i] for i in ids]))


def _set(rel, fn):
    def mutate(files):
        files[rel] = fn(files[rel])
    return mutate


def _train_row(i, j, value):
    def fn(arr):
        arr = arr.copy()
        arr[i, j] = value
        return arr
    return _set("train.npy", fn)


def _nan_row(arr):
    arr = arr.copy()
    arr[7, 3] = np.nan
    return arr


def _drop(rel):
    return lambda files: files.pop(rel)


BROKEN_TT = {
    "missing file": (_drop("100neg/test.npy"), ["100neg/test.npy", "missing"]),
    "missing pgc file": (_drop("pgc/vggish_features.npy"), ["pgc/vggish_features.npy", "missing"]),
    "short row": (_set("100neg/val.npy", lambda a: _obj([list(r)[:2] for r in a])),
                  ["100neg/val.npy", "row 0", "3 fields"]),
    "video not int": (_train_row(2, 0, "2"), ["train.npy", "row 2", "not an integer"]),
    "music out of range": (_train_row(4, 1, 6), ["train.npy", "row 4", "music 6 out of range", "music_features.npy"]),
    "negative out of range": (_set("100neg/test.npy", lambda a: _obj([[17, 2, np.array([3, 9])]] + list(a[1:]))),
                              ["100neg/test.npy", "row 0", "negative music 9"]),
    "negatives hold positive": (_set("100neg/test.npy", lambda a: _obj([[17, 2, np.array([2, 3])]] + list(a[1:]))),
                                ["100neg/test.npy", "row 0", "positive music 2"]),
    "video in two splits": (_set("100neg/test.npy", lambda a: _obj([[3, 2, np.array([4])]] + list(a[1:]))),
                            ["100neg/test.npy", "row 0", "video 3", "train.npy row 3"]),
    "duplicate train video": (_train_row(9, 0, 4), ["train.npy", "rows 4 and 9", "video 4"]),
    "nan row": (_set("visual_features_resnet_V.npy", _nan_row), ["visual_features_resnet_V.npy", "row 7", "NaN"]),
    "pgc width differs": (_set("visual_features_resnet_V.npy", lambda a: a[:, :2047].copy()),
                          ["pgc/mv_video_resnet_features.npy", "2048 columns", "visual_features_resnet_V.npy",
                           "has 2047"]),
    "pgc music width differs": (_set("pgc/opensmile_features_norm.npy", lambda a: a[:, :100].copy()),
                                ["pgc/opensmile_features_norm.npy", "100 columns", "new_music_smile_features_norm.npy",
                                 "has 128"]),
    "float64 matrix": (_set("music_features.npy", lambda a: a.astype(np.float64)), ["music_features.npy", "float64"]),
    "smile rows": (_set("new_music_smile_features_norm.npy", lambda a: a[:5].copy()),
                   ["new_music_smile_features_norm.npy", "5 rows", "expected 6"]),
    "genre not a code": (_train_row(5, 2, "7"), ["train.npy", "row 5", "'7'", "genre"]),
    "genre not decimal": (_train_row(5, 2, "hiphop"), ["train.npy", "row 5", "'hiphop'"]),
    "conflicting genre": (_train_row(6, 2, "3"), ["train.npy", "row 6", "music 1", "row 1"]),
    "bad distribution": (_train_row(8, 3, [0.5, 0.5]), ["train.npy", "row 8", "genre distribution"]),
    "prior sum": (_set("user_prior_mean.npy", lambda a: a * 0.9), ["user_prior_mean.npy", "sums to 0.9"]),
    "prior length": (_set("user_prior_mean.npy", lambda a: a[:5] / a[:5].sum()), ["user_prior_mean.npy", "6 floats"]),
    "prior negative": (_set("user_prior_mean.npy", lambda a: np.array([0.6, -0.1, 0.2, 0.1, 0.1, 0.1])),
                       ["user_prior_mean.npy", "row 1", "-0.1"]),
    "weights length": (_set("video_popularity_val.npy", lambda a: np.array([0.5, 0.5])),
                       ["video_popularity_val.npy", "(3,)", "100neg/val.npy"]),
    "weights sum": (_set("video_popularity_test.npy", lambda a: np.array([0.2, 0.3, 0.6])),
                    ["video_popularity_test.npy", "sums to 1.1"]),
    "pgc pair out of range": (_set("pgc/val.npy", lambda a: np.array([[5, 0]])),
                              ["pgc/val.npy", "row 0", "video 5", "mv_video_resnet_features.npy"]),
    "pgc video twice": (_set("pgc/val.npy", lambda a: np.array([[2, 2]])), ["pgc/val.npy", "row 0", "PGC video 2"]),
}


@pytest.mark.parametrize("case", sorted(BROKEN_TT))
def test_tt150k_broken_input_names_place_and_writes_nothing(case, tmp_path):
    mutate, words = BROKEN_TT[case]
    files = tt_release()
    mutate(files)
    src = write_release(tmp_path / "tt", files)
    out = tmp_path / "raw"
    with pytest.raises(DataError) as err:
        import_tt150k(src, out)
    for w in words:
        assert w in str(err.value), (w, str(err.value))
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".raw")]  # no temporary left behind


def test_failed_import_leaves_previous_output_untouched(release, tmp_path):
    out = tmp_path / "raw"
    import_tt150k(release, out)
    before = tree_md5(out)
    np.save(release / "user_prior_mean.npy", np.ones(6))
    with pytest.raises(DataError, match="user_prior_mean.npy"):
        import_tt150k(release, out)
    assert tree_md5(out) == before


# -------------------------------------------------------------------------------------------- world dir

def make_world(root):
    """A world directory written by hand: canonical tables, dummy media, features, truth, genre corpus."""
    vids = ["p00000", "p00001", "v00000", "v00001", "v00002", "v00003"]
    mids = ["m00000", "m00001", "m00002"]
    videos = pd.DataFrame({"video_id": vids, "uploader_id": [None, None, "u00000", "u00000", "u00001", "u00001"],
                           "kind": ["pgc"] * 2 + ["ugc"] * 4, "path": [f"media/video/{v}.mp4" for v in vids],
                           "text": [None, "a beach", "une fête", None, "city", "sport"], "popularity": [np.nan] * 6})
    music = pd.DataFrame({"music_id": mids, "path": [f"media/music/{m}.wav" for m in mids],
                          "popularity": [2, 1, 1], "genre": ["jazz", "hiphop", "classical"]})
    pairs = pd.DataFrame({"video_id": vids, "music_id": ["m00000", "m00001", "m00000", "m00000", "m00001", "m00002"],
                          "kind": ["pgc"] * 2 + ["ugc"] * 4})
    root.mkdir(parents=True)
    for name, df in (("videos", videos), ("music", music), ("pairs", pairs)):
        df.to_parquet(root / f"{name}.parquet", index=False)
    for rel in list(videos.path) + list(music.path) + ["genre_corpus/genres/jazz/g00000.wav", "truth/compat.npy"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(rel.encode())
    f = root / "features"
    f.mkdir()
    rng = np.random.default_rng(1)
    np.save(f / "video_visual.npy", rng.standard_normal((6, 8)).astype(np.float32))
    np.save(f / "video_text_mask.npy", np.array([0, 1, 1, 0, 1, 1], dtype=np.uint8))
    np.save(f / "music_audio.npy", rng.standard_normal((3, 4)).astype(np.float32))
    (f / "video_ids.txt").write_text("".join(v + "\n" for v in vids))
    (f / "music_ids.txt").write_text("".join(m + "\n" for m in mids))
    return root


def test_world_import_copies_tables_and_links_media(tmp_path):
    src = make_world(tmp_path / "world")
    out = tmp_path / "raw"
    summary = import_world(src, out)
    s, o = tree_md5(src), tree_md5(out)
    assert set(s) <= set(o) and all(o[k] == s[k] for k in s)
    assert set(o) - set(s) == {"source.json"}
    assert os.stat(out / "media/video/v00002.mp4").st_ino == os.stat(src / "media/video/v00002.mp4").st_ino
    c = summary["counts"]
    assert (c["videos"], c["ugc"], c["pgc"], c["music"], c["media_files"], c["truth_files"]) == (6, 4, 2, 3, 9, 1)
    assert summary["features"] == ["music_audio", "video_text_mask", "video_visual"]
    import_world(src, tmp_path / "raw2")
    assert tree_md5(out) == tree_md5(tmp_path / "raw2")


def _edit_table(name, fn):
    def mutate(root):
        df = pd.read_parquet(root / f"{name}.parquet")
        fn(df).to_parquet(root / f"{name}.parquet", index=False)
    return mutate


def _nan_feature(root):
    a = np.load(root / "features/music_audio.npy")
    a[2, 0] = np.inf
    np.save(root / "features/music_audio.npy", a)


BROKEN_WORLD = {
    "missing table": (lambda r: (r / "music.parquet").unlink(), ["music.parquet", "missing"]),
    "missing media": (lambda r: (r / "media/video/v00001.mp4").unlink(),
                      ["videos.parquet", "row 3", "'v00001'", "v00001.mp4", "does not exist"]),
    "path escapes": (_edit_table("music", lambda d: d.assign(path=["media/music/m00000.wav", "../x.wav",
                                                                 "media/music/m00002.wav"])),
                     ["music.parquet", "row 1", "'m00001'", "under media/"]),
    "unknown music in pairs": (_edit_table("pairs", lambda d: d.assign(music_id=["m00009"] + list(d.music_id[1:]))),
                               ["pairs.parquet", "row 0", "m00009"]),
    "id list mismatch": (lambda r: (r / "features/music_ids.txt").write_text("m00000\nm00002\nm00001\n"),
                         ["music_ids.txt", "line 1", "'m00002'"]),
    "inf feature row": (_nan_feature, ["music_audio.npy", "row 2"]),
    "mask dtype": (lambda r: np.save(r / "features/video_text_mask.npy", np.ones(6)), ["video_text_mask.npy", "uint8"]),
}


@pytest.mark.parametrize("case", sorted(BROKEN_WORLD))
def test_world_broken_input(case, tmp_path):
    mutate, words = BROKEN_WORLD[case]
    src = make_world(tmp_path / "world")
    mutate(src)
    out = tmp_path / "raw"
    with pytest.raises(DataError) as err:
        import_world(src, out)
    for w in words:
        assert w in str(err.value), (w, str(err.value))
    assert not out.exists()


def test_output_inside_source_is_refused(tmp_path):
    src = make_world(tmp_path / "world")
    with pytest.raises(DataError, match="inside"):
        import_world(src, src / "raw")


# ----------------------------------------------------------------------------------------- media folder

CSV = ("video_id,uploader_id,music_id,text,kind\n"
       "clip_b,alice,song1,sunny beach,ugc\n"
       "clip_a,alice,song2,,\n"
       "clip_c,bob,song1,fête,ugc\n"
       "mv_1,,song2,official video,pgc\n")


def make_folder(root, csv=CSV):
    (root / "videos").mkdir(parents=True)
    (root / "music").mkdir()
    (root / "pairs.csv").write_text(csv)
    for name in ("clip_a.mp4", "clip_b.MOV", "clip_c.webm", "mv_1.mkv", "extra.mp4", "notes.txt"):
        (root / "videos" / name).write_bytes(name.encode())
    for name in ("song1.wav", "song2.mp3", "song3.flac", ".hidden.wav"):
        (root / "music" / name).write_bytes(name.encode())
    return root


def test_folder_import(tmp_path):
    src = make_folder(tmp_path / "folder")
    out = tmp_path / "raw"
    summary = import_folder(src, out)
    videos = pd.read_parquet(out / "videos.parquet").set_index("video_id")
    music = pd.read_parquet(out / "music.parquet").set_index("music_id")
    pairs = pd.read_parquet(out / "pairs.parquet")
    assert list(videos.index) == ["clip_a", "clip_b", "clip_c", "mv_1"]
    assert videos.path["clip_b"] == "media/video/clip_b.MOV" and videos.kind["clip_a"] == "ugc"
    assert videos.kind["mv_1"] == "pgc" and pd.isna(videos.uploader_id["mv_1"])
    assert pd.isna(videos.text["clip_a"]) and videos.text["clip_c"] == "fête"
    assert videos.popularity.isna().all()
    assert list(music.index) == ["song1", "song2", "song3"]  # song3 unused but in the pool; hidden file skipped
    assert list(music.popularity) == [2, 1, 0]  # UGC uses only: mv_1 (pgc) does not count
    assert music.genre.isna().all() and music.path["song3"] == "media/music/song3.flac"
    assert list(pairs.video_id) == ["clip_a", "clip_b", "clip_c", "mv_1"] and pairs.kind.iloc[3] == "pgc"
    for rel in list(videos.path) + list(music.path):
        original = src / rel.replace("media/video", "videos").replace("media/music", "music")
        assert (out / rel).read_bytes() == original.read_bytes()
    assert not (out / "media/video/extra.mp4").exists()
    assert summary["counts"] == {"videos": 4, "ugc": 3, "pgc": 1, "music": 3, "music_unused": 1, "uploaders": 2,
                                 "skipped_video_files": 1}
    again = ingest("folder", src, tmp_path / "raw2", csv="pairs.csv")
    assert again == summary and tree_md5(out) == tree_md5(tmp_path / "raw2")


BROKEN_FOLDER = {
    "no csv": (lambda r: (r / "pairs.csv").unlink(), ["pairs.csv", "missing"]),
    "missing column": (lambda r: (r / "pairs.csv").write_text("video_id,music_id\nclip_a,song1\n"),
                       ["pairs.csv", "uploader_id"]),
    "duplicate video": (lambda r: (r / "pairs.csv").write_text(CSV + "clip_a,bob,song1,,\n"),
                        ["pairs.csv", "row 4", "'clip_a'", "row 1"]),
    "empty id": (lambda r: (r / "pairs.csv").write_text(CSV + "clip_d,bob,,,ugc\n"),
                 ["pairs.csv", "row 4", "'clip_d'", "empty music_id"]),
    "empty uploader": (lambda r: (r / "pairs.csv").write_text(CSV + "extra,,song1,,\n"),
                       ["pairs.csv", "row 4", "empty uploader_id"]),
    "bad kind": (lambda r: (r / "pairs.csv").write_text(CSV + "extra,bob,song1,,ad\n"), ["row 4", "kind 'ad'"]),
    "missing video": (lambda r: (r / "videos/clip_c.webm").unlink(),
                      ["pairs.csv", "row 2", "'clip_c'", "no media file"]),
    "missing music": (lambda r: (r / "music/song2.mp3").unlink(),
                      ["pairs.csv", "row 1", "'clip_a'", "music_id 'song2'", "no media file"]),
    "ambiguous video": (lambda r: (r / "videos/clip_a.avi").write_bytes(b"x"),
                        ["row 1", "'clip_a'", "ambiguous", "clip_a.avi", "clip_a.mp4"]),
    "ambiguous unused music": (lambda r: (r / "music/song3.ogg").write_bytes(b"x"),
                               ["song3", "ambiguous", "song3.flac", "song3.ogg"]),
}


@pytest.mark.parametrize("case", sorted(BROKEN_FOLDER))
def test_folder_broken_input(case, tmp_path):
    mutate, words = BROKEN_FOLDER[case]
    src = make_folder(tmp_path / "folder")
    mutate(src)
    out = tmp_path / "raw"
    with pytest.raises(DataError) as err:
        import_folder(src, out)
    for w in words:
        assert w in str(err.value), (w, str(err.value))
    assert not out.exists()


def test_ingest_dispatch_rejects_unknown_source_and_options(tmp_path):
    src = make_folder(tmp_path / "folder")
    with pytest.raises(ParamsError, match="'youtube'"):
        ingest("youtube", src, tmp_path / "raw")
    with pytest.raises(ParamsError, match="pgc"):
        ingest("folder", src, tmp_path / "raw", pgc=tmp_path)
    assert ingest("folder", src, tmp_path / "raw")["source"] == "folder"


# ------------------------------------------------------------------------------------- untrusted pickles

class _Marker:
    """Pickles as a call of os.system that creates `path`: what a crafted release file could hold."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


@pytest.mark.parametrize("rel", ["train.npy", "100neg/test.npy", "pgc/val.npy"])
def test_crafted_pickle_is_refused_and_never_runs(rel, tmp_path):
    marker = tmp_path / "pwned"
    files = tt_release()
    crafted = files[rel].astype(object)  # pgc/val.npy is an int array in the fake: made an object array here
    crafted[0] = [_Marker(marker)] + list(crafted[0])[1:]  # 100neg rows are lists, the others array rows
    files[rel] = crafted
    src = write_release(tmp_path / "tt", files)
    with pytest.raises(DataError) as err:
        import_tt150k(src, tmp_path / "raw")
    assert str(src / rel) in str(err.value) and "refused to unpickle posix.system" in str(err.value)
    assert not marker.exists() and not (tmp_path / "raw").exists()
    np.load(src / rel, allow_pickle=True)  # the file is a live exploit: plain np.load runs it
    assert marker.exists()


def test_restricted_unpickler_reads_numpy1_and_python2_style_pickles(tmp_path):
    """Object arrays pickled with protocol 2 and numpy 1.x module names (numpy.core.multiarray) still load."""
    import pickle

    from pipeline.data.safenpy import load_array

    arr = _obj([[3, 1, "2", [0.5, 0.5], np.float64(0.25)], [4, 0, "1", [1.0, 0.0], 0.5]], two_d=True)
    arr[1, 3] = np.array([1.0, 0.0])
    payload = pickle.dumps(arr, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in payload and b"_codecs" in payload  # the bytes a py2/numpy-1 file holds
    with open(tmp_path / "old.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, np.lib.format.header_data_from_array_1_0(arr))
        f.write(payload)
    back = load_array(tmp_path / "old.npy")
    assert back.shape == (2, 5) and back[0, 2] == "2" and back[0, 4] == 0.25
    np.testing.assert_array_equal(back[1, 3], [1.0, 0.0])
    np.save(tmp_path / "evil.npy", np.array([eval], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"evil.npy: refused to unpickle builtins.eval"):
        load_array(tmp_path / "evil.npy")
    (tmp_path / "text.npy").write_text("not numpy")
    with pytest.raises(DataError, match="text.npy: not a .npy file"):
        load_array(tmp_path / "text.npy")


# ------------------------------------------------------------------------ releases in foreign shapes

def write_release_fixture(path, **shape):
    """tests.fixtures.releases.write_release, remembering what it wrote (the genre code of each music)."""
    write_release_fixture.last = _write_release_fixture(path, **shape)
    return write_release_fixture.last


def _import(src, out, **kw):
    summary = import_tt150k(src, out, **kw)
    tables = {n: pd.read_parquet(out / f"{n}.parquet") for n in ("videos", "music", "pairs", "split", "negatives")}
    return summary, tables


def test_foreign_release_imports_with_its_own_widths_and_one_uploader(tmp_path):
    """The release another tool wrote: 2304-d video, zero openSMILE, one uploader, codes "0", [1.0], no PGC."""
    info = write_release_fixture(tmp_path / "rel")
    summary, t = _import(tmp_path / "rel", tmp_path / "raw")
    assert np.load(tmp_path / "raw/features/video_visual.npy").shape == (320, 2304)
    smile = np.load(tmp_path / "raw/features/music_smile.npy")
    assert smile.shape == (30, 128) and not smile.any()
    ugc = t["videos"].set_index("video_id")
    train = t["split"].set_index("video_id").split == "train"
    assert ugc.uploader_id[train].nunique() == 1 and ugc.uploader_id[~train].isna().all()
    assert summary["uploaders"]["pseudo_uploaders"] and summary["uploaders"]["val_test_videos_with_uploader"] == 0
    assert summary["user_prior_mean"] == [1.0, 0, 0, 0, 0, 0]  # code 0 is classical in GENRES order
    assert pd.read_parquet(tmp_path / "raw/uploaders.parquet").genre_dist.map(list).tolist() == [[1.0, 0, 0, 0, 0, 0]]
    assert (t["music"].genre == "classical").all() and summary["genre_counts"]["classical"] == 30
    assert summary["counts"]["genre_codes"] == 1 and summary["pgc"] is None
    assert (summary["counts"]["train"], summary["counts"]["val"], summary["counts"]["test"]) == (240, 40, 40)
    assert len(t["negatives"]) == 80 and t["negatives"].negatives.map(len).eq(29).all()
    assert info["n_rows"] == 322 and summary["counts"]["unused_video_rows"] == 2


def test_genre_names_map_reorder_and_drop_codes(tmp_path):
    write_release_fixture(tmp_path / "rel", genres="codes", n_genre_codes=3, n_uploaders=4, smile_zero=False)
    names = ["jazz", None, "hiphop"]  # code 0 is jazz, code 1 carries no genre, code 2 is hiphop
    summary, t = _import(tmp_path / "rel", tmp_path / "raw", genre_names=names)
    codes = write_release_fixture.last["codes"]
    music = t["music"].set_index("music_id").genre
    for m, code in enumerate(codes):
        want = names[code]
        assert (pd.isna(music[f"m{m:05d}"]) if want is None else music[f"m{m:05d}"] == want), (m, code)
    ups = pd.read_parquet(tmp_path / "raw/uploaders.parquet")
    for dist in ups.genre_dist.map(np.asarray):
        assert dist[GENRES.index("classical")] == 0 and dist[GENRES.index("reggae")] == 0
        assert dist.sum() == pytest.approx(1.0)  # code 1's share dropped, the rest rescaled
    assert summary["genre_names"] == names and summary["counts"]["music_without_genre"] == codes.count(1)
    assert sum(summary["genre_counts"].values()) == 30 - codes.count(1)


@pytest.mark.parametrize("names, words", [
    (["pop", "jazz"], ["train.npy row 0", "3 values", "ingest.genre_names names 2 codes"]),
    (["pop", "jazz", "metal", "reggae", "hiphop", "classical", "pop"], ["ingest.genre_names"]),
    (["rock", "jazz", "pop"], ["ingest.genre_names", "'rock'"]),
    (["jazz", "jazz", "pop"], ["ingest.genre_names", "distinct"]),
])
def test_genre_names_that_cannot_name_the_codes_are_named(names, words, tmp_path):
    write_release_fixture(tmp_path / "rel", genres="codes", n_genre_codes=3)
    with pytest.raises((DataError, ParamsError)) as err:
        import_tt150k(tmp_path / "rel", tmp_path / "raw", genre_names=names)
    for w in words:
        assert w in str(err.value), (w, str(err.value))


def test_genre_code_beyond_the_mapping_is_named(tmp_path):
    files = tt_release()
    files["train.npy"][3, 2] = "6"  # the fake's distributions have 6 values, codes 0..5
    src = write_release(tmp_path / "tt", files)
    with pytest.raises(DataError, match=r"train.npy row 3: genre code '6' has no name; ingest.genre_names"):
        import_tt150k(src, tmp_path / "raw")


def test_genre_counts_checked_against_tt150k_on_a_large_release(tmp_path, caplog):
    write_release_fixture(tmp_path / "rel", genres="codes", n_genre_codes=6, n_music=1000, n_train=1100,
                          n_val=20, n_test=20, video_dim=4, music_dim=4, smile_dim=4, n_negatives=5)
    with caplog.at_level("WARNING"):
        summary = import_tt150k(tmp_path / "rel", tmp_path / "a")
    assert not [r for r in caplog.records if "ingest.genre_names" in r.message]
    assert summary["genre_counts"]["classical"] > summary["genre_counts"]["jazz"] > summary["genre_counts"]["reggae"]
    caplog.clear()
    with caplog.at_level("WARNING"):  # the same release read with its codes in another order
        import_tt150k(tmp_path / "rel", tmp_path / "b", genre_names=["jazz", "classical", "hiphop", "reggae", "pop",
                                                                      "metal"])
    assert [r for r in caplog.records if "ingest.genre_names" in r.message and "differ" in r.message]


def test_uploader_file_gives_val_and_test_videos_their_uploader(tmp_path):
    write_release_fixture(tmp_path / "rel", n_uploaders=3, uploader_file=True, genres="codes", n_genre_codes=6)
    summary, t = _import(tmp_path / "rel", tmp_path / "raw")
    videos = t["videos"].set_index("video_id")
    assert videos.uploader_id.notna().all()
    for vid, up in videos.uploader_id.items():
        assert int(up[1:]) == int(vid[1:]) % 3  # video row i -> uploader i % 3, as the fixture wrote it
    held = t["split"].set_index("video_id").split != "train"
    assert summary["uploaders"] == {"from": "video_uploader.npy", "uploaders": 3, "pseudo_uploaders": False,
                                    "val_test_videos_with_uploader": int(held.sum()), "videos_without_uploader": 0}
    assert len(pd.read_parquet(tmp_path / "raw/uploaders.parquet")) == 3
    np.save(tmp_path / "rel/video_uploader.npy", np.full(5, 1))
    with pytest.raises(DataError, match=r"video_uploader.npy: shape \(5,\).*\(322,\) integers"):
        import_tt150k(tmp_path / "rel", tmp_path / "raw2")


@pytest.mark.parametrize("where", ["sibling", "child"])
def test_pgc_found_beside_or_inside_and_shared_clips_keep_their_genre(where, tmp_path):
    info = write_release_fixture(tmp_path / "rel" / "ugc", pgc=where, genres="codes", n_genre_codes=6)
    summary, t = _import(tmp_path / "rel" / "ugc", tmp_path / "raw")
    assert summary["pgc_found"] == where and summary["pgc"] == info["pgc"]
    music = t["music"].set_index("music_id").genre
    for m in range(8):  # the fixture's first 3 PGC music repeat UGC music 0..2 exactly
        want = GENRES[info["codes"][m]] if m < 3 else None
        assert (music[f"pm{m:05d}"] == want) if want else pd.isna(music[f"pm{m:05d}"])
    assert summary["counts"]["pgc_music_with_genre"] == 3 and (t["videos"].kind == "pgc").sum() == 20


def test_pgc_explicit_and_ambiguous(tmp_path):
    write_release_fixture(tmp_path / "rel" / "ugc", pgc="sibling")
    write_release_fixture(tmp_path / "other", pgc="child", seed=1)  # a second PGC folder: other/pgc
    summary = import_tt150k(tmp_path / "rel" / "ugc", tmp_path / "a", pgc=tmp_path / "other" / "pgc")
    assert summary["pgc_found"] == "ingest.pgc" and summary["pgc"] == str(tmp_path / "other" / "pgc")
    (tmp_path / "rel" / "ugc" / "pgc").symlink_to(tmp_path / "other" / "pgc")
    with pytest.raises(DataError, match=r"two PGC folders.*set ingest.pgc"):
        import_tt150k(tmp_path / "rel" / "ugc", tmp_path / "b")
    with pytest.raises(DataError, match=r"nowhere: ingest.pgc names no folder"):
        import_tt150k(tmp_path / "rel" / "ugc", tmp_path / "b", pgc=tmp_path / "nowhere")


def test_ingest_stage_params_pgc_is_relative_to_the_path():
    from stages.ingest import IngestParams

    assert IngestParams(source="tt150k", path="/d/ugc", pgc=".").pgc_folder is None  # look beside and inside
    assert IngestParams(source="tt150k", path="/d/ugc", pgc="./").pgc_folder is None
    assert IngestParams(source="tt150k", path="/d/ugc", pgc="../pgc").pgc_folder == Path("/d/ugc/../pgc")
    with pytest.raises(ParamsError, match="relative to ingest.path"):
        IngestParams(source="tt150k", path="/d/ugc", pgc="/d/pgc").pgc_folder
    with pytest.raises(ParamsError, match="ingest.genre_names"):
        IngestParams(genre_names=["rock"]).validate()


def test_media_folder_fixture_imports(tmp_path):
    info = write_media_folder(tmp_path / "mine")
    summary = ingest("folder", tmp_path / "mine", tmp_path / "raw")
    assert summary["counts"]["videos"] == info["videos"] >= 10 and summary["counts"]["uploaders"] == 3
    music = pd.read_parquet(tmp_path / "raw/music.parquet")
    assert music.genre.isna().all() and not (tmp_path / "raw/genre_corpus").exists()
    assert {p.suffix for p in (tmp_path / "raw/media/music").iterdir()} == {".wav", ".flac"}


def test_params_default_pgc_is_the_source_path_so_the_dvc_dependency_exists():
    """dvc.yaml lists ${ingest.path}/${ingest.pgc} as a dependency of ingest: the default "." is the source
    itself (a path that exists) and means "look for the PGC folder beside and inside it"."""
    import yaml

    from stages.ingest import IngestParams

    root = Path(__file__).resolve().parents[2]
    params = yaml.safe_load((root / "params.yaml").read_text())["ingest"]
    assert params["pgc"] == "." and IngestParams(**params).pgc_folder is None  # relative to ingest.path
    assert "${ingest.path}/${ingest.pgc}" in yaml.safe_load((root / "dvc.yaml").read_text())["stages"]["ingest"]["deps"]
    assert IngestParams(**{**params, "pgc": "../pgc"}).pgc_folder == Path(params["path"]) / "../pgc"


FIXTURE_SHAPES = {
    "foreign default": ({}, {}),
    "sibling pgc": ({"pgc": "sibling"}, {}),
    "child pgc, ResNet widths": ({"pgc": "child", "video_dim": 2048, "smile_zero": False}, {}),
    "six codes, three uploaders with a file": ({"genres": "codes", "n_genre_codes": 6, "n_uploaders": 3,
                                                "uploader_file": True}, {}),
    "no genre field": ({"genres": "none", "n_genre_codes": 2}, {}),
    "codes 0 named by one genre": ({}, {"genre_names": ["pop"]}),
}


@pytest.mark.parametrize("case", sorted(FIXTURE_SHAPES))
def test_every_fixture_shape_imports_through_ingest(case, tmp_path):
    shape, options = FIXTURE_SHAPES[case]
    info = write_release_fixture(tmp_path / "rel" / "ugc", **shape)
    summary = ingest("tt150k", tmp_path / "rel" / "ugc", tmp_path / "raw", **options)
    assert json.loads((tmp_path / "raw/source.json").read_text()) == summary
    music = pd.read_parquet(tmp_path / "raw/music.parquet")
    ugc_music = music[~music.music_id.str.startswith("pm")]
    assert summary["counts"]["ugc_videos"] == 320 and len(ugc_music) == 30
    assert (summary["pgc"] is None) == (info["pgc"] is None)
    if shape.get("genres") == "none":
        assert ugc_music.genre.isna().all() and summary["counts"]["music_without_genre"] == 30
    elif "genre_names" in options:
        assert (ugc_music.genre == "pop").all() and summary["user_prior_mean"][GENRES.index("pop")] == 1.0
    visual = np.load(tmp_path / "raw/features/video_visual.npy", mmap_mode="r")
    assert visual.shape[1] == shape.get("video_dim", 2304)
