"""The canonical raw layout (docs/architecture.md section 2): the one data contract every source is
imported into.

```
data/raw/
  videos.parquet     video_id, uploader_id, kind (ugc|pgc), path, text, popularity
  music.parquet      music_id, path, popularity, genre (nullable: only when the source ships labels)
  pairs.parquet      video_id, music_id, kind
  split.parquet      optional: video_id, split (train|val|test), when the source ships its own split
  negatives.parquet  optional: video_id, split, negatives (list of music ids), when the source ships them
  uploaders.parquet  optional: uploader_id, genre_dist (list of len(GENRES) floats), when the source ships them
  features/          optional precomputed matrices: <name>.npy (float32) in the row order of
                     video_ids.txt / music_ids.txt (sorted ids); names in VIDEO_FEATURES / MUSIC_FEATURES
  media/             media files that `path` points to (relative to data/raw/), when the source has media
  truth/             simulated world only: never read by training code
  source.json        what was imported, from where, and the counts
```
Ids are strings. `path` is relative to the raw directory (or null when a source ships no media).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import DataError

# TT-150k-genre's six genres; the integer code of a genre is its index here.
GENRES: tuple[str, ...] = ("classical", "jazz", "hiphop", "reggae", "pop", "metal")
# Genre counts of TT-150k-genre's 3,003 clips (docs/architecture.md section 8), to skew the simulated world.
GENRE_COUNTS: tuple[int, ...] = (1330, 665, 651, 311, 42, 4)

KINDS = ("ugc", "pgc")
SPLITS = ("train", "val", "test")

VIDEO_COLUMNS = ("video_id", "uploader_id", "kind", "path", "text", "popularity")
MUSIC_COLUMNS = ("music_id", "path", "popularity", "genre")
PAIR_COLUMNS = ("video_id", "music_id", "kind")

# Precomputed feature matrices a source may ship (extraction passes them through).
VIDEO_FEATURES = ("video_visual", "video_text")  # video_text rows are zero where video_text_mask is 0
VIDEO_MASKS = ("video_text_mask",)  # uint8, 1 = the video has a caption
MUSIC_FEATURES = ("music_audio", "music_smile")

# What an id may not hold: C0/C1 control characters and the separators str.splitlines() breaks on (id lists
# such as video_ids.txt hold one id per line and are read back with it)
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")

VIDEO_IDS_FILE = "video_ids.txt"
MUSIC_IDS_FILE = "music_ids.txt"


def _require_columns(df: pd.DataFrame, columns, where: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{where}: missing column(s) {missing}; expected {list(columns)}")


def _require_unique(series: pd.Series, where: str) -> None:
    dup = series[series.duplicated(keep=False)]
    if len(dup):
        first = dup.index[0]
        raise DataError(f"{where}: duplicate id {dup.iloc[0]!r} (row {first}); ids must be unique")


def _require_one_line(ids: pd.Series, where: str, column: str) -> None:
    """Ids are written one per line (video_ids.txt): a control character or line break would shift the rows."""
    bad = ids.astype("str").str.contains(CONTROL.pattern, regex=True, na=False)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{where} row {i}: {column} {ids.iloc[i]!r} holds a control character (newline, tab, ...); "
                        "ids are stored one per line: rename it")


def validate_tables(videos: pd.DataFrame, music: pd.DataFrame, pairs: pd.DataFrame, where: str) -> None:
    """Check the three canonical tables against each other; raise DataError naming the first bad row."""
    _require_columns(videos, VIDEO_COLUMNS, f"{where}/videos.parquet")
    _require_columns(music, MUSIC_COLUMNS, f"{where}/music.parquet")
    _require_columns(pairs, PAIR_COLUMNS, f"{where}/pairs.parquet")
    _require_unique(videos["video_id"], f"{where}/videos.parquet")
    _require_unique(music["music_id"], f"{where}/music.parquet")
    for df, col, name in ((videos, "video_id", "videos"), (videos, "uploader_id", "videos"),
                          (music, "music_id", "music")):
        _require_one_line(df[col], f"{where}/{name}.parquet", col)
    bad_kind = ~videos["kind"].isin(KINDS)
    if bad_kind.any():
        i = int(np.flatnonzero(bad_kind.to_numpy())[0])
        raise DataError(f"{where}/videos.parquet row {i}: kind {videos['kind'].iloc[i]!r} not in {KINDS}")
    known_music = set(music["music_id"])
    unknown = ~pairs["music_id"].isin(known_music)
    if unknown.any():
        i = int(np.flatnonzero(unknown.to_numpy())[0])
        raise DataError(f"{where}/pairs.parquet row {i}: music_id {pairs['music_id'].iloc[i]!r} is not in music.parquet")
    unknown = ~pairs["video_id"].isin(set(videos["video_id"]))
    if unknown.any():
        i = int(np.flatnonzero(unknown.to_numpy())[0])
        raise DataError(f"{where}/pairs.parquet row {i}: video_id {pairs['video_id'].iloc[i]!r} is not in videos.parquet")
    _require_unique(pairs["video_id"], f"{where}/pairs.parquet (one music per video)")
    genre = music["genre"].dropna()
    bad = ~genre.isin(GENRES)
    if bad.any():
        raise DataError(f"{where}/music.parquet row {bad.index[bad][0]}: genre {genre[bad].iloc[0]!r} not in {GENRES}")


def validate_matrix(array: np.ndarray, n_rows: int, path: str | Path, dim: int | None = None) -> None:
    """A feature matrix: 2-d float32, one row per id, no NaN or infinite row."""
    if array.ndim != 2:
        raise DataError(f"{path}: expected a 2-d matrix, got shape {array.shape}")
    if array.shape[0] != n_rows:
        raise DataError(f"{path}: {array.shape[0]} rows, expected {n_rows} (one per id)")
    if dim is not None and array.shape[1] != dim:
        raise DataError(f"{path}: {array.shape[1]} columns, expected {dim}")
    if array.dtype != np.float32:
        fix = f"; convert it once: np.save({str(path)!r}, np.load({str(path)!r}).astype(np.float32))" \
            if array.dtype.kind in "fiu" else ""
        raise DataError(f"{path}: dtype {array.dtype}, expected float32{fix}")
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        raise DataError(f"{path}: row {int(np.flatnonzero(~finite)[0])} holds NaN or inf")


def read_raw(raw_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Read and validate the three canonical tables of a raw directory."""
    raw_dir = Path(raw_dir)
    tables = []
    for name in ("videos", "music", "pairs"):
        path = raw_dir / f"{name}.parquet"
        if not path.exists():
            raise DataError(f"{path}: missing; run the world or ingest stage first")
        tables.append(pd.read_parquet(path))
    validate_tables(*tables, where=str(raw_dir))
    return tables[0], tables[1], tables[2]
