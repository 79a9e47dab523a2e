"""Importer of a TT-150k release (docs/architecture.md section 8: its release format)."""
from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from pipeline.data.importcommon import (
    PGC_FILES,
    SUM_TOL,
    TT_AUDIO_DIM,
    TT_FILES,
    TT_VISUAL_DIM,
    _check_out,
    _id_maker,
    _str,
    _write_tables,
)
from pipeline.data.schema import (
    GENRES,
    MUSIC_IDS_FILE,
    PAIR_COLUMNS,
    VIDEO_IDS_FILE,
    validate_matrix,
)
from pipeline.errors import DataError
from pipeline.io import atomic_dir, write_ids, write_json

log = logging.getLogger(__name__)

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
    """Import a TT-150k release (docs/architecture.md section 8), keeping its split, negatives and weights.

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


