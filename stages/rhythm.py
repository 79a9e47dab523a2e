"""Stage `rhythm`: CMT-style matching score of each UGC video with its music (optical flow vs beats)."""
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from pipeline.config import from_group
from pipeline.data.schema import read_raw
from pipeline.features.rhythm import RhythmConfig, rhythm_table
from pipeline.io import write_parquet
from stages.common import setup

RAW = Path("data/raw")
OUT = Path("data/features/rhythm.parquet")
FAILURES = Path("data/features/rhythm_failures.parquet")


@dataclass(frozen=True)
class RhythmParams:
    workers: int = 0  # 0: every core
    on_error: str = "fail"  # fail | skip
    score: RhythmConfig = field(default_factory=RhythmConfig)


def main() -> None:
    p = from_group(RhythmParams, setup("rhythm"), "rhythm")
    videos, music, pairs = read_raw(RAW)
    pairs = pairs[pairs["kind"] == "ugc"]
    if videos["path"].isna().all():  # a feature-level source ships no media: an empty table says so
        table, failures = pd.DataFrame(columns=["video_id", "music_id", "score"]), pd.DataFrame()
    else:
        vpaths = {v: str(RAW / f) for v, f in zip(videos["video_id"], videos["path"]) if f is not None}
        mpaths = {m: str(RAW / f) for m, f in zip(music["music_id"], music["path"]) if f is not None}
        table, failures = rhythm_table(pairs, vpaths, mpaths, workers=p.workers, on_error=p.on_error, cfg=p.score)
    write_parquet(table, OUT)
    write_parquet(failures, FAILURES)
    print(f"rhythm: {len(table)} pairs scored, {len(failures)} failures; params {asdict(p)}")


if __name__ == "__main__":  # the analysis pool spawns processes that re-import this module
    main()
