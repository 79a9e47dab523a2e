"""Stage `split`: weak / strong / intervention splits, uploader genre distributions, negatives and weights.

Videos and music whose features failed (the extract stages' failures tables) leave the dataset here, so
every id the dataset names has a feature row.
"""
import logging
from dataclasses import dataclass, fields
from pathlib import Path

import pandas as pd

from pipeline.config import from_group
from pipeline.data.schema import read_raw
from pipeline.errors import DataError
from pipeline.sampling.dataset import PROBA_COLUMNS, SplitConfig, build_dataset, save_dataset
from stages.common import run, setup

RAW = Path("data/raw")
LABELS = Path("data/genre/labels.parquet")
FAILURES = {"video_id": [Path("data/features/video/failures.parquet")],
            "music_id": [Path("data/features/music/failures.parquet"), Path("data/features/smile/failures.parquet")]}
OUT = Path("data/dataset")
log = logging.getLogger("stages.split")


@dataclass
class SplitParams(SplitConfig):
    rhythm: str | None = None  # the rhythm stage's table (data/features/rhythm.parquet); null: popularity only


def failed(column: str) -> set[str]:
    """Ids listed in the failures tables of the extract stages (absent tables: none failed)."""
    return {str(i) for path in FAILURES[column] if path.exists() for i in pd.read_parquet(path)[column]}


def optional(name: str) -> pd.DataFrame | None:
    path = RAW / f"{name}.parquet"
    return pd.read_parquet(path) if path.exists() else None


def main() -> None:
    p = from_group(SplitParams, setup("split"), "split")
    as_tuple = lambda v: tuple(v) if isinstance(v, list) else v  # noqa: E731  YAML lists -> the config's tuples
    cfg = SplitConfig(**{f.name: as_tuple(getattr(p, f.name)) for f in fields(SplitConfig)})
    videos, _, pairs = read_raw(RAW)
    if not LABELS.exists():
        raise DataError(f"{LABELS}: missing; run the genre stage first")
    labels = pd.read_parquet(LABELS)
    if "labelled_by" in labels.columns:  # the uniform g(m) is no genre: it must not count as its argmax
        labels["genre"] = labels["genre"].where(labels["labelled_by"] != "uniform", None)
    labels = labels[["music_id", "genre", *[c for c in PROBA_COLUMNS if c in labels.columns]]]
    bad_videos, bad_music = failed("video_id"), failed("music_id")
    keep = ~pairs["video_id"].isin(bad_videos) & ~pairs["music_id"].isin(bad_music)
    pairs, labels = pairs[keep], labels[~labels["music_id"].isin(bad_music)]
    rhythm = None
    if p.rhythm is not None:
        if not Path(p.rhythm).exists():
            raise DataError(f"{p.rhythm}: split.rhythm names a missing table; run the rhythm stage or set it to null")
        rhythm = pd.read_parquet(p.rhythm)[["video_id", "score"]]
    source_split = optional("split")
    if source_split is not None:
        source_split = source_split[source_split["video_id"].isin(pairs["video_id"])]
    ds = build_dataset(videos, pairs, labels, rhythm, cfg, source_split=source_split,
                       source_negatives=optional("negatives"), source_uploaders=optional("uploaders"))
    ds.info["dropped"] = {"videos": sorted(bad_videos), "music": sorted(bad_music), "pairs": int((~keep).sum())}
    save_dataset(ds, OUT)
    log.info("split: %d UGC videos, %d music, schemes %s", len(ds.video_ids), len(ds.music_ids), ds.schemes)


if __name__ == "__main__":
    run(main)
