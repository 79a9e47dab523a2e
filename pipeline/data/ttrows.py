"""Readers of a TT-150k release's row files (train.npy, 100neg/*.npy, pgc pairs, weights, priors, uploaders).

Each turns one file into validated Python rows, or raises a DataError naming the file, the row and what was
expected. Files are read with pipeline.data.safenpy: nothing in them is executed.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.data.importcommon import SUM_TOL, TT_FILES
from pipeline.data.safenpy import load_array
from pipeline.data.schema import GENRES
from pipeline.errors import DataError


def _load_rows(path: Path):
    arr = load_array(path)
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


def _genre(g, codes: tuple[int | None, ...], path: Path, i: int) -> int | None:
    """A row's genre field -> index into GENRES; None when the release gives none (None, "" or a null code)."""
    if g is None or (isinstance(g, str) and not g.strip()):
        return None
    if not (_is_int(g) or isinstance(g, str) and re.fullmatch(r"\d+", g.strip())):
        raise DataError(f"{path} row {i}: genre {g!r} is not a decimal genre code")
    if not 0 <= int(g) < len(codes):
        raise DataError(f"{path} row {i}: genre code {g!r} has no name; ingest.genre_names names codes "
                        f"0..{len(codes) - 1}; list the genre of every code of the release there")
    return codes[int(g)]


def _floats(x) -> tuple[float, ...] | None:
    """A non-empty sequence of finite non-negative numbers as floats, else None."""
    if isinstance(x, (str, bytes)) or (isinstance(x, np.ndarray) and x.ndim != 1) or not hasattr(x, "__len__"):
        return None
    values = list(x)
    if not values or not all(_is_real(v) and v >= 0 for v in values):
        return None
    return tuple(float(v) for v in values)


def parse_train(path: Path, n_videos: int, n_music: int, spaces: tuple[str, str],
                 codes: tuple[int | None, ...]) -> list[tuple]:
    """Rows [video, music, genre code str, uploader genre distribution (L floats, one per code), propensity].

    Returns (video, music, index into GENRES or None, the distribution as released, propensity).
    """
    form = "[video int, music int, genre code str, genre distribution floats, propensity float]"
    rows, seen, genre_of, width = [], {}, {}, None
    arr = _load_rows(path)
    for i, row in enumerate(tqdm(arr, desc=path.name, disable=len(arr) < 10000, leave=False)):
        _row(row, 5, path, i, form)
        v = _index(row[0], n_videos, path, i, "video", spaces[0])
        m = _index(row[1], n_music, path, i, "music", spaces[1])
        g = _genre(row[2], codes, path, i)
        dist = _floats(row[3])
        if dist is None:
            raise DataError(f"{path} row {i}: uploader genre distribution {row[3]!r:.80} is not a list of finite "
                            "non-negative floats")
        if len(dist) > len(codes):
            raise DataError(f"{path} row {i}: uploader genre distribution has {len(dist)} values but "
                            f"ingest.genre_names names {len(codes)} codes; give a genre (or null) for every code")
        width = width or (len(dist), i)
        if len(dist) != width[0]:
            raise DataError(f"{path} row {i}: uploader genre distribution has {len(dist)} values but row "
                            f"{width[1]} has {width[0]}; expected one length (one value per genre code)")
        if not _is_real(row[4]):
            raise DataError(f"{path} row {i}: propensity {row[4]!r} is not a finite float")
        if v in seen:
            raise DataError(f"{path} rows {seen[v]} and {i}: video {v} appears twice; expected one row per video")
        seen[v] = i
        first_g, first = genre_of.setdefault(m, (g, i))
        if first_g != g:
            raise DataError(f"{path} row {i}: music {m} has genre {row[2]!r} ({_name(g)}) but {_name(first_g)} in "
                            f"row {first}")
        rows.append((v, m, g, dist, float(row[4])))
    return rows


def _name(g: int | None) -> str:
    return "no genre" if g is None else GENRES[g]


def parse_neg(path: Path, n_videos: int, n_music: int, spaces: tuple[str, str]) -> list[tuple]:
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


def parse_pgc_pairs(path: Path, n_videos: int, n_music: int, spaces: tuple[str, str]) -> list[tuple]:
    """Rows [video, music] of the PGC folder (the teacher's training pairs)."""
    rows = []
    for i, r in enumerate(_load_rows(path)):
        _row(r, 2, path, i, "[video int, music int]")
        rows.append((_index(r[0], n_videos, path, i, "video", spaces[0]),
                     _index(r[1], n_music, path, i, "music", spaces[1])))
    return rows


def load_distribution(path: Path, n: int, what: str) -> np.ndarray:
    """Non-negative finite floats summing to 1 (popularity weights over test rows, or the genre prior)."""
    arr = np.asarray(_load_rows(path))
    if arr.dtype.kind != "f" or arr.shape != (n,):
        raise DataError(f"{path}: shape {arr.shape} dtype {arr.dtype}; expected {what}")
    arr = arr.astype(np.float64)
    bad = ~np.isfinite(arr) | (arr < 0)
    if bad.any():
        raise DataError(f"{path} row {int(np.flatnonzero(bad)[0])}: {arr[bad][0]} is not a finite non-negative float")
    if abs(arr.sum() - 1.0) > SUM_TOL:
        raise DataError(f"{path}: sums to {arr.sum():.6f}; expected {what} summing to 1")
    return arr


def file_uploaders(path: Path, n_videos: int) -> np.ndarray | None:
    """The optional TT_UPLOADER_FILE: one uploader int per row of the visual matrix, -1 for unknown."""
    if not path.is_file():
        return None
    arr = load_array(path)
    if arr.shape != (n_videos,) or arr.dtype.kind not in "iu":
        raise DataError(f"{path}: shape {arr.shape} dtype {arr.dtype}; expected ({n_videos},) integers, the "
                        f"uploader of each row of {TT_FILES[0]} (-1: unknown)")
    arr = arr.astype(np.int64)
    bad = arr < -1
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path} row {i}: uploader {arr[i]}; expected an id >= 0, or -1 for unknown")
    return arr
