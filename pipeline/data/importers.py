"""Importers of the `ingest` stage: a simulated world, a TT-150k release, or a folder of real media + CSV.

Each writes the canonical raw layout (pipeline.data.schema) as a whole: it is built in a temporary sibling
and swapped in only after every check passed, so bad input leaves no partial output and no broken `out`.
"""
from __future__ import annotations

import inspect
import logging
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from pipeline.data.schema import (GENRES, KINDS, MUSIC_COLUMNS, MUSIC_FEATURES, MUSIC_IDS_FILE, PAIR_COLUMNS,
                                  VIDEO_COLUMNS, VIDEO_FEATURES, VIDEO_IDS_FILE, VIDEO_MASKS, validate_matrix,
                                  validate_tables)
from pipeline.errors import DataError, ParamsError
from pipeline.io import atomic_dir, read_ids, write_ids, write_json, write_parquet

log = logging.getLogger(__name__)

VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".webm", ".avi")
MUSIC_EXTS = (".wav", ".mp3", ".flac", ".ogg", ".m4a", ".au")
WORLD_TABLES = ("videos", "music", "pairs")
WORLD_OPTIONAL = ("split", "negatives", "uploaders")
WORLD_DIRS = ("media", "features", "truth", "genre_corpus")
TT_FILES = ("visual_features_resnet_V.npy", "music_features.npy", "new_music_smile_features_norm.npy",
            "train.npy", "100neg/val.npy", "100neg/test.npy", "video_popularity_val.npy",
            "video_popularity_test.npy", "user_prior_mean.npy")
PGC_FILES = ("train.npy", "val.npy", "mv_video_resnet_features.npy", "vggish_features.npy",
             "opensmile_features_norm.npy")
TT_VISUAL_DIM = 2048  # ResNet-50 pooled features of the reference release
TT_AUDIO_DIM = 128  # VGGish, and openSMILE after PCA
SUM_TOL = 1e-3  # distributions and weights stored as float32 sum to 1 only this closely


# ----------------------------------------------------------------------------------------- shared helpers

def _check_out(src: Path, out: Path) -> None:
    if not src.is_dir():
        raise DataError(f"{src}: source directory does not exist")
    s, o = src.resolve(), out.resolve()
    if o == s or s in o.parents or o in s.parents:
        raise DataError(f"{out}: output must not be, contain or lie inside the source {src}")


def _link(src: Path, dst: Path) -> None:
    """Hard-link (media can be large); copy when the link is impossible, e.g. across devices."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _link_tree(src_dir: Path, dst_dir: Path) -> int:
    files = sorted(p for p in src_dir.rglob("*") if p.is_file())
    for p in tqdm(files, desc=f"link {src_dir.name}", disable=len(files) < 2000, leave=False):
        _link(p, dst_dir / p.relative_to(src_dir))
    return len(files)


def _str(values) -> pd.Series:
    """A nullable string column, so an all-null column is still typed string in parquet."""
    return pd.Series(list(values), dtype="str")


def _write_tables(tmp: Path, videos: pd.DataFrame, music: pd.DataFrame, pairs: pd.DataFrame, where: str,
                  **optional: pd.DataFrame) -> None:
    videos = videos[list(VIDEO_COLUMNS)].sort_values("video_id", kind="stable").reset_index(drop=True)
    music = music[list(MUSIC_COLUMNS)].sort_values("music_id", kind="stable").reset_index(drop=True)
    pairs = pairs[list(PAIR_COLUMNS)].sort_values("video_id", kind="stable").reset_index(drop=True)
    validate_tables(videos, music, pairs, where)
    for name, df in {"videos": videos, "music": music, "pairs": pairs, **optional}.items():
        write_parquet(df, tmp / f"{name}.parquet")


def _id_maker(prefix: str, n: int):
    """Ids zero-padded to the width of the largest index, so string order equals numeric order."""
    width = max(5, len(str(max(n - 1, 0))))
    return lambda i: f"{prefix}{int(i):0{width}d}"


# ------------------------------------------------------------------------------------------------ world

def _check_media_paths(src: Path, df: pd.DataFrame, id_col: str, where: Path) -> int:
    n = 0
    for i, (ident, rel) in enumerate(zip(df[id_col], df["path"])):
        if rel is None or pd.isna(rel):
            continue
        parts = Path(rel).parts
        if Path(rel).is_absolute() or not parts or parts[0] != "media" or ".." in parts:
            raise DataError(f"{where} row {i} ({id_col} {ident!r}): path {rel!r} must be relative and under media/")
        if not (src / rel).is_file():
            raise DataError(f"{where} row {i} ({id_col} {ident!r}): media file {src / rel} does not exist")
        n += 1
    return n


def _check_id_list(path: Path, expected: list[str]) -> int:
    if not path.is_file():
        raise DataError(f"{path}: missing; a feature matrix needs its row-order id list")
    ids, expected = read_ids(path), sorted(expected)
    for i, (got, want) in enumerate(zip(ids, expected)):
        if got != want:
            raise DataError(f"{path} line {i}: id {got!r}, expected {want!r} (the sorted ids of the table)")
    if len(ids) != len(expected):
        raise DataError(f"{path}: {len(ids)} ids, expected {len(expected)} (one per row of the table)")
    return len(ids)


def _check_features(fdir: Path, video_ids: list[str], music_ids: list[str]) -> list[str]:
    """Every matrix: float32, one finite row per id of its sorted id list; masks: uint8 0/1 per video."""
    names = sorted(p.stem for p in fdir.glob("*.npy"))
    for group, ids_file, ids in ((VIDEO_FEATURES + VIDEO_MASKS, VIDEO_IDS_FILE, video_ids),
                                 (MUSIC_FEATURES, MUSIC_IDS_FILE, music_ids)):
        present = [n for n in names if n in group]
        if not present:
            continue
        n_rows = _check_id_list(fdir / ids_file, ids)
        for name in present:
            path = fdir / f"{name}.npy"
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            if name in VIDEO_MASKS:
                if arr.shape != (n_rows,) or arr.dtype != np.uint8 or not np.isin(arr, (0, 1)).all():
                    raise DataError(f"{path}: shape {arr.shape} dtype {arr.dtype}; expected ({n_rows},) uint8 of 0/1")
            else:
                validate_matrix(arr, n_rows, path)
    unknown = [n for n in names if n not in VIDEO_FEATURES + VIDEO_MASKS + MUSIC_FEATURES]
    if unknown:
        log.warning("%s: passing through matrices with non-canonical names %s", fdir, unknown)
    return names


def import_world(src: Path, out: Path) -> dict:
    """Import a world directory: copy its (already canonical) tables, hard-link media, features and truth."""
    src, out = Path(src), Path(out)
    _check_out(src, out)
    tables = {}
    for name in WORLD_TABLES:
        path = src / f"{name}.parquet"
        if not path.is_file():
            raise DataError(f"{path}: missing; expected the world stage's {name} table")
        tables[name] = pd.read_parquet(path)
    validate_tables(tables["videos"], tables["music"], tables["pairs"], str(src))
    n_media = _check_media_paths(src, tables["videos"], "video_id", src / "videos.parquet")
    n_media += _check_media_paths(src, tables["music"], "music_id", src / "music.parquet")
    features = []
    if (src / "features").is_dir():
        features = _check_features(src / "features", list(tables["videos"]["video_id"]),
                                   list(tables["music"]["music_id"]))
    with atomic_dir(out) as tmp:
        copied = [n for n in WORLD_TABLES + WORLD_OPTIONAL if (src / f"{n}.parquet").is_file()]
        for name in copied:
            shutil.copyfile(src / f"{name}.parquet", tmp / f"{name}.parquet")
        linked = {d: _link_tree(src / d, tmp / d) for d in WORLD_DIRS if (src / d).is_dir()}
        kind = tables["videos"]["kind"]
        summary = {"source": "world", "src": str(src), "tables": copied, "features": features,
                   "counts": {"videos": len(kind), "ugc": int((kind == "ugc").sum()), "pgc": int((kind == "pgc").sum()),
                              "music": len(tables["music"]), "pairs": len(tables["pairs"]), "media_files": n_media,
                              **{f"{d}_files": n for d, n in linked.items()}}}
        write_json(summary, tmp / "source.json")
    log.info("imported world %s -> %s: %s", src, out, summary["counts"])
    return summary


# ---------------------------------------------------------------------------------------------- TT-150k

def _require_files(root: Path, names) -> None:
    for name in names:
        if not (root / name).is_file():
            raise DataError(f"{root / name}: missing; a TT-150k release holds {list(names)}")


def _load_matrix(path: Path, dim: int) -> np.ndarray:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise DataError(f"{path}: not a numeric matrix ({e})") from e
    validate_matrix(arr, len(arr) if arr.ndim else 0, path, dim)
    return arr


def _load_rows(path: Path):
    try:
        arr = np.load(path, allow_pickle=True)
    except Exception as e:  # a corrupt pickle can raise nearly anything
        raise DataError(f"{path}: cannot be read as a numpy array ({type(e).__name__}: {e})") from e
    if arr.ndim == 0:
        raise DataError(f"{path}: a scalar, expected an array of rows")
    return arr


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _is_real(x) -> bool:
    return (_is_int(x) or isinstance(x, (float, np.floating))) and bool(np.isfinite(x))


def _row(row, n: int, path: Path, i: int, form: str):
    if isinstance(row, (str, bytes)) or not hasattr(row, "__len__") or len(row) != n:
        raise DataError(f"{path} row {i}: {row!r:.80}; expected {n} fields {form}")
    return row


def _index(x, hi: int, path: Path, i: int, what: str, space: str) -> int:
    if not _is_int(x):
        raise DataError(f"{path} row {i}: {what} {x!r} is not an integer")
    if not 0 <= x < hi:
        raise DataError(f"{path} row {i}: {what} {x} out of range; {space} has {hi} rows")
    return int(x)


def _parse_train(path: Path, n_videos: int, n_music: int, spaces: tuple[str, str]) -> list[tuple]:
    """Rows [video, music, genre code string, uploader genre distribution (6 floats), propensity]."""
    form = "[video int, music int, genre code str, 6-float genre distribution, propensity float]"
    rows, seen, genre_of = [], {}, {}
    arr = _load_rows(path)
    for i, row in enumerate(tqdm(arr, desc=path.name, disable=len(arr) < 10000, leave=False)):
        _row(row, 5, path, i, form)
        v = _index(row[0], n_videos, path, i, "video", spaces[0])
        m = _index(row[1], n_music, path, i, "music", spaces[1])
        g = row[2]
        if not isinstance(g, str) or not re.fullmatch(r"\d+", g.strip()) or int(g) >= len(GENRES):
            raise DataError(f"{path} row {i}: genre {g!r} is not a decimal code 0..{len(GENRES) - 1} of {GENRES}")
        dist = row[3]
        if (isinstance(dist, (str, bytes)) or not hasattr(dist, "__len__") or len(dist) != len(GENRES)
                or not all(_is_real(x) and x >= 0 for x in dist)):
            raise DataError(f"{path} row {i}: uploader genre distribution {dist!r:.80} is not "
                            f"{len(GENRES)} finite non-negative floats")
        if not _is_real(row[4]):
            raise DataError(f"{path} row {i}: propensity {row[4]!r} is not a finite float")
        if v in seen:
            raise DataError(f"{path} rows {seen[v]} and {i}: video {v} appears twice; expected one row per video")
        seen[v] = i
        code, first = genre_of.setdefault(m, (int(g), i))
        if code != int(g):
            raise DataError(f"{path} row {i}: music {m} has genre {g!r} but genre {code} in row {first}")
        rows.append((v, m, int(g), tuple(float(x) for x in dist), float(row[4])))
    return rows


def _parse_neg(path: Path, n_videos: int, n_music: int, spaces: tuple[str, str]) -> list[tuple]:
    """Rows [video, positive music, integer array of sampled negative music]."""
    rows = []
    for i, row in enumerate(_load_rows(path)):
        _row(row, 3, path, i, "[video int, music int, int array of negatives]")
        v = _index(row[0], n_videos, path, i, "video", spaces[0])
        m = _index(row[1], n_music, path, i, "music", spaces[1])
        negs = np.asarray(row[2])
        if negs.dtype == object and all(_is_int(x) for x in negs.ravel()):
            negs = negs.astype(np.int64)
        if negs.ndim != 1 or negs.size == 0 or negs.dtype.kind not in "iu":
            raise DataError(f"{path} row {i}: negatives {row[2]!r:.80} are not a 1-d integer array")
        bad = (negs < 0) | (negs >= n_music)
        if bad.any():
            raise DataError(f"{path} row {i}: negative music {negs[bad][0]} out of range; {spaces[1]} has "
                            f"{n_music} rows")
        if (negs == m).any():
            raise DataError(f"{path} row {i}: the negatives of video {v} contain its positive music {m}")
        rows.append((v, m, negs.astype(np.int64)))
    return rows


def _load_distribution(path: Path, n: int | None, what: str) -> np.ndarray:
    """Non-negative finite floats summing to 1 (popularity weights over test rows, or the genre prior)."""
    arr = np.asarray(_load_rows(path))
    if arr.dtype.kind != "f" or (n is not None and arr.shape != (n,)) or (n is None and arr.size != len(GENRES)):
        raise DataError(f"{path}: shape {arr.shape} dtype {arr.dtype}; expected {what}")
    arr = arr.ravel().astype(np.float64)
    bad = ~np.isfinite(arr) | (arr < 0)
    if bad.any():
        raise DataError(f"{path} row {int(np.flatnonzero(bad)[0])}: {arr[bad][0]} is not a finite non-negative float")
    if abs(arr.sum() - 1.0) > SUM_TOL:
        raise DataError(f"{path}: sums to {arr.sum():.6f}; expected {what} summing to 1")
    return arr


def _parse_pgc_pairs(path: Path, n_videos: int, n_music: int, spaces: tuple[str, str]) -> list[tuple]:
    """Rows [video, music] of the PGC folder (the teacher's training pairs)."""
    rows = []
    for i, r in enumerate(_load_rows(path)):
        _row(r, 2, path, i, "[video int, music int]")
        rows.append((_index(r[0], n_videos, path, i, "video", spaces[0]),
                     _index(r[1], n_music, path, i, "music", spaces[1])))
    return rows


def _write_gathered(blocks: list[tuple[list[str], np.ndarray, np.ndarray]], path: Path,
                    chunk: int = 16384) -> list[str]:
    """Write rows of several matrices (ids, matrix, row indices) as one float32 .npy in sorted-id order.

    Streams through a memory map chunk by chunk: a TT-150k visual matrix is 1.2 GB.
    """
    ids = [i for b in blocks for i in b[0]]
    order = np.argsort(np.array(ids), kind="stable")
    where = np.empty(len(ids), dtype=np.int64)
    where[order] = np.arange(len(ids))
    path.parent.mkdir(parents=True, exist_ok=True)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(len(ids), blocks[0][1].shape[1]))
    start = 0
    for _, mat, rows in blocks:
        for s in tqdm(range(0, len(rows), chunk), desc=path.name, disable=len(rows) < 8 * chunk, leave=False):
            stop = min(s + chunk, len(rows))
            out[where[start + s : start + stop]] = mat[rows[s:stop]]
        start += len(rows)
    out.flush()
    validate_matrix(out, len(ids), path)
    del out
    return [ids[j] for j in order]


def _split_of(named_rows: list[tuple[Path, list[tuple]]], what: str) -> list[int]:
    """Each video in exactly one row of one split file; returns the videos used, sorted."""
    seen: dict[int, str] = {}
    for path, rows in named_rows:
        for i, r in enumerate(rows):
            if r[0] in seen:
                raise DataError(f"{path} row {i}: {what} {r[0]} already in {seen[r[0]]}; "
                                "expected one music per video and one of the splits per video")
            seen[r[0]] = f"{path.name} row {i}"
    return sorted(seen)


def _ugc_part(src: Path) -> dict:
    """The UGC release as canonical rows; uploaders derived from train rows' genre distributions."""
    _require_files(src, TT_FILES)
    dims = (TT_VISUAL_DIM, TT_AUDIO_DIM, TT_AUDIO_DIM)
    visual, audio, smile = (_load_matrix(src / f, d) for f, d in zip(TT_FILES, dims))
    if len(smile) != len(audio):
        raise DataError(f"{src / TT_FILES[2]}: {len(smile)} rows, expected {len(audio)} (one per row of {TT_FILES[1]})")
    spaces = (TT_FILES[0], TT_FILES[1])
    train = _parse_train(src / "train.npy", len(visual), len(audio), spaces)
    held = {s: _parse_neg(src / f"100neg/{s}.npy", len(visual), len(audio), spaces) for s in ("val", "test")}
    weights = {s: _load_distribution(src / f"video_popularity_{s}.npy", len(held[s]),
                                     f"({len(held[s])},) float weights, one per row of 100neg/{s}.npy") for s in held}
    prior = _load_distribution(src / "user_prior_mean.npy", None, f"{len(GENRES)} floats (mean uploader genre prior)")
    used = _split_of([(src / "train.npy", train)] + [(src / f"100neg/{s}.npy", held[s]) for s in held], "video")

    vid, mid = _id_maker("v", len(visual)), _id_maker("m", len(audio))
    dists = sorted({r[3] for r in train})  # the release has no uploader ids: one uploader per distinct vector
    uid = _id_maker("u", len(dists))
    uploader_of = {d: uid(k) for k, d in enumerate(dists)}
    uploader = {r[0]: uploader_of[r[3]] for r in train}
    pop = np.bincount([r[1] for r in train], minlength=len(audio))
    genre = {r[1]: GENRES[r[2]] for r in train}
    v_ids, m_ids = [vid(v) for v in used], [mid(m) for m in range(len(audio))]
    m_arr = np.array(m_ids, dtype=object)
    rows = np.arange(len(audio))
    return {
        "videos": [(i, uploader.get(v), "ugc") for i, v in zip(v_ids, used)],
        "music": [(i, int(pop[m]), genre.get(m)) for i, m in zip(m_ids, rows)],
        "pairs": [(vid(r[0]), mid(r[1]), "ugc") for part in (train, *held.values()) for r in part],
        "split": [(vid(r[0]), "train", None, r[4]) for r in train]
        + [(vid(r[0]), s, float(w), None) for s in held for r, w in zip(held[s], weights[s])],
        "negatives": [(vid(r[0]), s, m_arr[r[2]].tolist()) for s in held for r in held[s]],
        "uploaders": [(uid(k), list(d)) for k, d in enumerate(dists)],
        "video_visual": [(v_ids, visual, np.array(used, dtype=np.int64))],
        "music_audio": [(m_ids, audio, rows)], "music_smile": [(m_ids, smile, rows)],
        "prior": [float(x) for x in prior],
        "counts": {"ugc_videos": len(used), "unused_video_rows": len(visual) - len(used), "music": len(audio),
                   "train": len(train), "val": len(held["val"]), "test": len(held["test"]),
                   "uploaders": len(dists), "music_without_genre": len(audio) - len(genre)},
    }


def _pgc_part(pgc: Path) -> dict:
    """The PGC folder: its own video ids "p<int>" and music ids "pm<int>" (the release shares no ids)."""
    _require_files(pgc, PGC_FILES)
    dims = (TT_VISUAL_DIM, TT_AUDIO_DIM, TT_AUDIO_DIM)
    visual, audio, smile = (_load_matrix(pgc / f, d) for f, d in zip(PGC_FILES[2:], dims))
    if len(smile) != len(audio):
        raise DataError(f"{pgc / PGC_FILES[4]}: {len(smile)} rows, expected {len(audio)} (as {PGC_FILES[3]})")
    split = {s: _parse_pgc_pairs(pgc / f"{s}.npy", len(visual), len(audio), PGC_FILES[2:4]) for s in ("train", "val")}
    used = _split_of([(pgc / f"{s}.npy", rows) for s, rows in split.items()], "PGC video")
    vid, mid = _id_maker("p", len(visual)), _id_maker("pm", len(audio))
    pop = np.bincount([m for _, m in split["train"]], minlength=len(audio))
    v_ids, m_ids, rows = [vid(v) for v in used], [mid(m) for m in range(len(audio))], np.arange(len(audio))
    return {
        "videos": [(i, None, "pgc") for i in v_ids], "music": [(i, int(pop[m]), None) for i, m in zip(m_ids, rows)],
        "pairs": [(vid(v), mid(m), "pgc") for s in split for v, m in split[s]],
        "split": [(vid(v), s, None, None) for s in split for v, _ in split[s]], "negatives": [], "uploaders": [],
        "video_visual": [(v_ids, visual, np.array(used, dtype=np.int64))],
        "music_audio": [(m_ids, audio, rows)], "music_smile": [(m_ids, smile, rows)],
        "counts": {"pgc_videos": len(used), "pgc_music": len(audio)},
    }


def import_tt150k(src: Path, out: Path, pgc: Path | None = None) -> dict:
    """Import a TT-150k release (DESIGN section 1, release format), keeping its split, negatives and weights.

    `pgc` is the sibling PGC folder (default `<src>/pgc` when it exists); its features are appended to the
    same matrices under their own ids. Music popularity = train rows using it (PGC train pairs for "pm").
    """
    src, out = Path(src), Path(out)
    _check_out(src, out)
    pgc = Path(pgc) if pgc is not None else (src / "pgc" if (src / "pgc").is_dir() else None)
    parts = [_ugc_part(src)] + ([_pgc_part(pgc)] if pgc is not None else [])
    rows = {k: [r for p in parts for r in p[k]] for k in parts[0] if k not in ("prior", "counts")}
    v = pd.DataFrame(rows["videos"], columns=["video_id", "uploader_id", "kind"])
    videos = pd.DataFrame({"video_id": _str(v.video_id), "uploader_id": _str(v.uploader_id), "kind": _str(v.kind),
                           "path": _str([None] * len(v)), "text": _str([None] * len(v)),
                           "popularity": np.full(len(v), np.nan)})
    m = pd.DataFrame(rows["music"], columns=["music_id", "popularity", "genre"])
    music = pd.DataFrame({"music_id": _str(m.music_id), "path": _str([None] * len(m)),
                          "popularity": m.popularity.astype(np.int64), "genre": _str(m.genre)})
    pairs = pd.DataFrame(rows["pairs"], columns=list(PAIR_COLUMNS))
    split = pd.DataFrame(rows["split"], columns=["video_id", "split", "weight", "propensity"]).astype(
        {"weight": np.float64, "propensity": np.float64}).sort_values("video_id", kind="stable")
    negatives = pd.DataFrame(rows["negatives"], columns=["video_id", "split", "negatives"]).sort_values("video_id")
    uploaders = pd.DataFrame(rows["uploaders"], columns=["uploader_id", "genre_dist"])
    summary = {"source": "tt150k", "src": str(src), "pgc": None if pgc is None else str(pgc),
               "user_prior_mean": parts[0]["prior"], "counts": {k: n for p in parts for k, n in p["counts"].items()}}
    with atomic_dir(out) as tmp:
        _write_tables(tmp, videos, music, pairs, str(src), split=split, negatives=negatives, uploaders=uploaders)
        for name, ids_file in (("video_visual", VIDEO_IDS_FILE), ("music_audio", MUSIC_IDS_FILE),
                               ("music_smile", MUSIC_IDS_FILE)):
            ids = _write_gathered(rows[name], tmp / "features" / f"{name}.npy")
            write_ids(ids, tmp / "features" / ids_file)
        write_json(summary, tmp / "source.json")
    log.info("imported TT-150k release %s -> %s: %s", src, out, summary["counts"])
    return summary


# ----------------------------------------------------------------------------------------------- folder

def _media_index(folder: Path, exts: tuple[str, ...]) -> dict[str, list[Path]]:
    """Media files of a folder by id (file name without extension); hidden files are skipped."""
    index: dict[str, list[Path]] = {}
    if folder.is_dir():
        for p in sorted(folder.iterdir()):
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in exts:
                index.setdefault(p.stem, []).append(p)
    return index


def _one_file(index: dict[str, list[Path]], ident: str, folder: Path, exts, where: str) -> Path:
    files = index.get(ident, [])
    if not files:
        raise DataError(f"{where}: no media file {folder}/{ident}.<ext>; expected one of extensions {list(exts)}")
    if len(files) > 1:
        raise DataError(f"{where}: id {ident!r} is ambiguous, several files {[str(f) for f in files]}; expected one")
    return files[0]


def import_folder(src: Path, out: Path, csv: str = "pairs.csv") -> dict:
    """Import real media: `<csv>` pairs each video with its uploader and music; files are found by id."""
    src, out = Path(src), Path(out)
    _check_out(src, out)
    table = src / csv
    if not table.is_file():
        raise DataError(f"{table}: missing; expected a CSV with columns video_id, uploader_id, music_id[, text, kind]")
    try:
        df = pd.read_csv(table, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"{table}: cannot be parsed as CSV ({e})") from e
    missing = [c for c in ("video_id", "uploader_id", "music_id") if c not in df.columns]
    if missing:
        raise DataError(f"{table}: missing column(s) {missing}; expected video_id, uploader_id, music_id[, text, kind]")
    df = df.apply(lambda col: col.str.strip())
    df["kind"] = df["kind"].replace("", "ugc") if "kind" in df.columns else "ugc"
    text = df["text"] if "text" in df.columns else pd.Series([""] * len(df))
    first_row: dict[str, int] = {}
    vdir, mdir = src / "videos", src / "music"
    v_index, m_index = _media_index(vdir, VIDEO_EXTS), _media_index(mdir, MUSIC_EXTS)
    video_file, music_file = {}, {}
    for i, r in enumerate(df.itertuples(index=False)):
        where = f"{table} row {i} (video_id {r.video_id!r})"
        if r.kind not in KINDS:
            raise DataError(f"{where}: kind {r.kind!r} not in {KINDS}")
        for col in ("video_id", "music_id") + (("uploader_id",) if r.kind == "ugc" else ()):
            if not getattr(r, col):
                raise DataError(f"{where}: empty {col}; every {r.kind} row needs one")
        if r.video_id in first_row:
            raise DataError(f"{where}: duplicate video_id, also in row {first_row[r.video_id]}; "
                            "expected one row per video")
        first_row[r.video_id] = i
        video_file[r.video_id] = _one_file(v_index, r.video_id, vdir, VIDEO_EXTS, where)
        music_file[r.music_id] = _one_file(m_index, r.music_id, mdir, MUSIC_EXTS,
                                           f"{where}, music_id {r.music_id!r}")
    for ident in m_index:  # music never used is still part of the pool
        if ident not in music_file:
            music_file[ident] = _one_file(m_index, ident, mdir, MUSIC_EXTS, f"{mdir} (music never used in {csv})")
    unused_videos = sorted(set(v_index) - set(video_file))
    if unused_videos:
        log.warning("%s: %d video file(s) not in %s are skipped, e.g. %s", vdir, len(unused_videos), csv,
                    unused_videos[:3])

    v_path = {v: f"media/video/{v}{f.suffix}" for v, f in video_file.items()}
    m_path = {m: f"media/music/{m}{f.suffix}" for m, f in music_file.items()}
    ugc = df["kind"] == "ugc"
    counts = df.loc[ugc, "music_id"].value_counts()
    m_ids = sorted(music_file)
    videos_df = pd.DataFrame({"video_id": _str(df["video_id"]),
                              "uploader_id": _str(u if u else None for u in df["uploader_id"]),
                              "kind": _str(df["kind"]), "path": _str(v_path[v] for v in df["video_id"]),
                              "text": _str(t if t else None for t in text), "popularity": np.full(len(df), np.nan)})
    music_df = pd.DataFrame({"music_id": _str(m_ids), "path": _str(m_path[m] for m in m_ids),
                             "popularity": np.array([int(counts.get(m, 0)) for m in m_ids], dtype=np.int64),
                             "genre": _str([None] * len(m_ids))})
    pairs_df = pd.DataFrame({"video_id": _str(df["video_id"]), "music_id": _str(df["music_id"]),
                             "kind": _str(df["kind"])})
    summary = {"source": "folder", "src": str(src), "csv": csv,
               "counts": {"videos": len(df), "ugc": int(ugc.sum()), "pgc": int((~ugc).sum()), "music": len(m_ids),
                          "music_unused": len(set(m_ids) - set(df["music_id"])),
                          "uploaders": int(df.loc[df["uploader_id"] != "", "uploader_id"].nunique()),
                          "skipped_video_files": len(unused_videos)}}
    with atomic_dir(out) as tmp:
        _write_tables(tmp, videos_df, music_df, pairs_df, str(src))
        files = sorted(video_file.items())
        for ident, f in tqdm(files, desc="link videos", disable=len(files) < 2000, leave=False):
            _link(f, tmp / v_path[ident])
        for ident, f in sorted(music_file.items()):
            _link(f, tmp / m_path[ident])
        write_json(summary, tmp / "source.json")
    log.info("imported folder %s -> %s: %s", src, out, summary["counts"])
    return summary


IMPORTERS = {"world": import_world, "tt150k": import_tt150k, "folder": import_folder}


def ingest(source: str, src: Path, out: Path, **kw) -> dict:
    """Dispatch on the `ingest.source` param; extra keywords are the chosen importer's options."""
    if source not in IMPORTERS:
        raise ParamsError(f"ingest.source {source!r}: expected one of {sorted(IMPORTERS)}")
    fn = IMPORTERS[source]
    allowed = set(inspect.signature(fn).parameters) - {"src", "out"}
    unknown = sorted(set(kw) - allowed)
    if unknown:
        raise ParamsError(f"ingest: option(s) {unknown} do not apply to source {source!r}; known: {sorted(allowed)}")
    return fn(Path(src), Path(out), **kw)
