"""Stage `rhythm`: CMT-style matching score of each UGC video with its music (optical flow vs beats)."""
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from pipeline.config import from_group
from pipeline.data.schema import read_raw
from pipeline.features.mediacheck import MediaParams
from pipeline.features.rhythm import FAILURE_COLUMNS, RhythmConfig, rhythm_table
from pipeline.io import write_parquet
from stages.common import group, run, setup

RAW = Path("data/raw")
OUT = Path("data/features/rhythm.parquet")
FAILURES = Path("data/features/rhythm_failures.parquet")
log = logging.getLogger("stages.rhythm")


@dataclass(frozen=True)
class RhythmParams:
    workers: int = 0  # 0: every core
    score: RhythmConfig = field(default_factory=RhythmConfig)


def main() -> None:
    p = from_group(RhythmParams, setup("rhythm"), "rhythm")
    media = from_group(MediaParams, group("media"), "media")
    videos, music, pairs = read_raw(RAW)
    pairs = pairs[pairs["kind"] == "ugc"]
    if videos["path"].isna().all():  # a feature-level source ships no media: an empty table says so
        table = pd.DataFrame(columns=["video_id", "music_id", "score"])
        failures = pd.DataFrame(columns=list(FAILURE_COLUMNS), dtype=str)
    else:
        vpaths = {v: str(RAW / f) for v, f in zip(videos["video_id"], videos["path"]) if f is not None}
        mpaths = {m: str(RAW / f) for m, f in zip(music["music_id"], music["path"]) if f is not None}
        table, failures = rhythm_table(pairs, vpaths, mpaths, workers=p.workers, on_error=media.on_error,
                                       cfg=p.score)
    write_parquet(table, OUT)
    write_parquet(failures, FAILURES)
    log.info("rhythm: %d pairs scored, %d failures; params %s, media %s", len(table), len(failures), asdict(p),
             asdict(media))


if __name__ == "__main__":  # the analysis pool spawns processes that re-import this module
    run(main)
