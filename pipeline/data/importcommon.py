"""Helpers shared by the importers of the `ingest` stage (pipeline.data.importers, pipeline.data.tt150k)."""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from pipeline.data.schema import (MUSIC_COLUMNS, PAIR_COLUMNS,
                                  VIDEO_COLUMNS, validate_tables)
from pipeline.errors import DataError
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


