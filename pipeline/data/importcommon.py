"""Helpers shared by the importers of the `ingest` stage (pipeline.data.importers, pipeline.data.tt150k)."""
from __future__ import annotations

import csv
import io
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from pipeline.data.schema import (CONTROL, GENRE_COUNTS, GENRES, MUSIC_COLUMNS, PAIR_COLUMNS,
                                  VIDEO_COLUMNS, validate_tables)
from pipeline.errors import DataError, ParamsError
from pipeline.io import write_parquet


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
# Optional: int64 [rows of visual_features_resnet_V.npy], each video's uploader (-1: unknown). The public
# release has no uploader ids; with this file T_diverse can be built on val/test rows too.
TT_UPLOADER_FILE = "video_uploader.npy"
TT_LIKE_MUSIC = 1000  # a release with this many clips is compared with TT-150k-genre's genre counts
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


def check_id(ident: str, where: str) -> None:
    """An id must fit on one line: id lists (video_ids.txt) hold one per line, so a newline or another control
    character in an id would shift every row after it."""
    if CONTROL.search(ident):
        raise DataError(f"{where} {ident!r} holds a control character (newline, tab, ...); ids are stored one per "
                        "line: rename it (and its media file) without one")


def read_csv_table(table: Path) -> pd.DataFrame:
    """A CSV of strings; a file that is not UTF-8 is refused naming the row of the first bad byte."""
    raw = table.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        before = raw[:e.start].decode("utf-8-sig")
        records = [r for r in csv.reader(io.StringIO(before)) if r]  # the header is the first
        row = len(records) - (0 if not before or before.endswith(("\n", "\r")) else 1) - 1
        place = "the header" if row < 0 else f"row {row}"
        raise DataError(f"{table} {place}: byte 0x{raw[e.start]:02x} (offset {e.start}) is not UTF-8; save the file "
                        "as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None
    try:
        return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise DataError(f"{table}: cannot be parsed as CSV ({' '.join(str(e).split())})") from None


def require_training_rows(pairs: pd.DataFrame, where) -> None:
    """At least one UGC pair: without one nothing can be trained, and `split` would fail far from the cause."""
    if not (pairs["kind"] == "ugc").any():
        raise DataError(f"{where}: no UGC (video, music) rows; the training table needs at least one")


def drop_failed(tables: dict[str, pd.DataFrame], failed: list[tuple[str, str, str]], where: str) -> dict:
    """The tables without media that failed the header probe (media.on_error: skip): a failed video's rows,
    a failed music's rows, and every pair using a failed music together with its video (it has no music)."""
    bad_video = {i for kind, i, _ in failed if kind == "video"}
    bad_music = {i for kind, i, _ in failed if kind == "music"}
    pairs = tables["pairs"]
    drop = pairs["video_id"].isin(bad_video) | pairs["music_id"].isin(bad_music)
    lost = bad_video | set(pairs.loc[drop, "video_id"])
    out = dict(tables, pairs=pairs[~drop])
    if "videos" in tables:
        out["videos"] = tables["videos"][~tables["videos"]["video_id"].isin(lost)]
    if "music" in tables:
        out["music"] = tables["music"][~tables["music"]["music_id"].isin(bad_music)]
    log.warning("%s: media.on_error: skip left out %d video(s) and %d music (%d pair(s)) whose media fail the "
                "header probe", where, len(lost), len(bad_music), int(drop.sum()))
    return out


def _id_maker(prefix: str, n: int):
    """Ids zero-padded to the width of the largest index, so string order equals numeric order."""
    width = max(5, len(str(max(n - 1, 0))))
    return lambda i: f"{prefix}{int(i):0{width}d}"




# ------------------------------------------------------------------------------------------ genre codes

def genre_code_map(genre_names) -> tuple[int | None, ...]:
    """`ingest.genre_names` (the genre of each of the release's codes 0, 1, ...) -> index into GENRES per code.

    None (the default) is GENRES' own order. A null entry declares a code that carries no genre (e.g. a
    release written with "0" everywhere): its music gets no label and its share of a distribution is dropped.
    """
    names = GENRES if genre_names is None else genre_names
    if isinstance(names, str) or not 1 <= len(names) <= len(GENRES):
        raise ParamsError(f"ingest.genre_names: {names!r}; expected a list of 1..{len(GENRES)} names from {GENRES} "
                          "(or null entries), one per genre code of the release")
    bad = [n for n in names if n is not None and n not in GENRES]
    named = [n for n in names if n is not None]
    if bad or len(set(named)) != len(named):
        raise ParamsError(f"ingest.genre_names: {list(names)}; every entry must be a distinct genre of {GENRES} "
                          "or null")
    return tuple(None if n is None else GENRES.index(n) for n in names)


def to_genre_order(values, codes: tuple[int | None, ...], where: str) -> np.ndarray | None:
    """Values indexed by the release's genre codes -> a float64 vector in GENRES order (zeros where absent).

    Mass on codes without a genre is dropped and the rest rescaled to the original total; None when no
    mass is left (the vector says nothing about genres).
    """
    values = np.asarray(values, dtype=np.float64)
    if len(values) > len(codes):
        raise DataError(f"{where}: {len(values)} genre values but ingest.genre_names names {len(codes)} codes; "
                        "give a genre (or null) for every code of the release")
    out = np.zeros(len(GENRES))
    for code, x in enumerate(values):
        if codes[code] is not None:
            out[codes[code]] += x
    kept, total = out.sum(), values.sum()
    if kept <= 0:
        return None
    return out * (total / kept) if kept != total else out


def genre_counts_check(counts: dict[str, int], n_music: int, where: str) -> bool:
    """Log the per-genre music counts; warn when a TT-150k-sized release ranks its genres unlike TT-150k-genre.

    A wrong `ingest.genre_names` (codes in another order than the project's) shows up as a rank order
    unlike GENRE_COUNTS. Returns True when the counts were compared and agree.
    """
    log.info("%s: music per genre %s (%d clips)", where, counts, n_music)
    if n_music < TT_LIKE_MUSIC:
        return False
    ours = sorted(GENRES, key=lambda g: (-counts.get(g, 0), GENRES.index(g)))
    theirs = sorted(GENRES, key=lambda g: -GENRE_COUNTS[GENRES.index(g)])
    if ours != theirs:
        log.warning("%s: genres ranked by music count %s differ from TT-150k-genre's %s; check that "
                    "ingest.genre_names lists the release's genre codes in its own order", where, ours, theirs)
        return False
    return True
