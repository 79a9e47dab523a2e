"""What the split stage reads before building the dataset: the raw tables, the genre labels, the rhythm
table and a source's own split, negatives and uploader distributions, with every id whose features failed
already dropped.

Videos and music listed in the extract stages' failures tables leave the pairs (and music the labels)
here, so every id the built dataset names has a feature row; `dropped` records them for `info.json`.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from pipeline.data.schema import read_raw
from pipeline.errors import DataError
from pipeline.sampling.dataset import PROBA_COLUMNS, SplitConfig

SOURCE_TABLES = ("split", "negatives", "uploaders")  # optional raw tables a source may ship


@dataclass
class SplitParams(SplitConfig):
    """The `split` params group: the dataset's SplitConfig plus where the rhythm table is."""

    rhythm: str | None = None  # the rhythm stage's table (data/features/rhythm.parquet); null: popularity only

    def split_config(self) -> SplitConfig:
        """The SplitConfig part, YAML lists turned into the config's tuples."""
        as_tuple = lambda v: tuple(v) if isinstance(v, list) else v  # noqa: E731
        return SplitConfig(**{f.name: as_tuple(getattr(self, f.name)) for f in fields(SplitConfig)})


@dataclass
class SplitInputs:
    """The arguments of build_dataset, read from disk, and what was dropped for failed features."""

    videos: pd.DataFrame
    pairs: pd.DataFrame
    labels: pd.DataFrame  # music_id, genre, p_<genre> when the genre stage wrote them
    rhythm: pd.DataFrame | None  # video_id, score
    sources: dict[str, pd.DataFrame | None]  # source_split, source_negatives, source_uploaders
    dropped: dict  # videos, music (sorted ids), pairs (count)


def failed_ids(paths: Sequence[Path], column: str) -> set[str]:
    """Ids listed in the failures tables at `paths` (absent tables: none failed)."""
    return {str(i) for path in paths if Path(path).exists() for i in pd.read_parquet(path)[column]}


def genre_labels(path: Path) -> pd.DataFrame:
    """music_id, genre and the probabilities the genre stage wrote. The uniform labeller's g(m) is no genre:
    its label is None, so it never counts as its argmax."""
    if not path.exists():
        raise DataError(f"{path}: missing; run the genre stage first")
    labels = pd.read_parquet(path)
    if "labelled_by" in labels.columns:
        labels["genre"] = labels["genre"].where(labels["labelled_by"] != "uniform", None)
    return labels[["music_id", "genre", *[c for c in PROBA_COLUMNS if c in labels.columns]]]


def rhythm_table(path: str | None) -> pd.DataFrame | None:
    """video_id, score of the rhythm stage's table; None when split.rhythm is null (popularity only)."""
    if path is None:
        return None
    if not Path(path).exists():
        raise DataError(f"{path}: split.rhythm names a missing table; run the rhythm stage or set it to null")
    return pd.read_parquet(path)[["video_id", "score"]]


def optional_table(raw: Path, name: str) -> pd.DataFrame | None:
    """A raw table only some sources ship (raw/<name>.parquet), or None."""
    path = raw / f"{name}.parquet"
    return pd.read_parquet(path) if path.exists() else None


def read_split_inputs(raw: Path, labels_path: Path, failures: Mapping[str, Sequence[Path]],
                      rhythm: str | None) -> SplitInputs:
    """Read everything build_dataset needs; `failures` maps video_id / music_id to failures tables."""
    videos, _, pairs = read_raw(raw)
    labels = genre_labels(labels_path)
    bad_videos, bad_music = failed_ids(failures["video_id"], "video_id"), failed_ids(failures["music_id"], "music_id")
    keep = ~pairs["video_id"].isin(bad_videos) & ~pairs["music_id"].isin(bad_music)
    pairs, labels = pairs[keep], labels[~labels["music_id"].isin(bad_music)]
    rhythm_scores = rhythm_table(rhythm)
    sources = {f"source_{name}": optional_table(raw, name) for name in SOURCE_TABLES}
    if sources["source_split"] is not None:
        sources["source_split"] = sources["source_split"][sources["source_split"]["video_id"].isin(pairs["video_id"])]
    return SplitInputs(videos, pairs, labels, rhythm_scores, sources,
                       {"videos": sorted(bad_videos), "music": sorted(bad_music), "pairs": int((~keep).sum())})
