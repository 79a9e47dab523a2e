"""Stage `split`: weak / strong / intervention splits, uploader genre distributions, negatives and weights.

Videos and music whose features failed (the extract stages' failures tables) leave the dataset here, so
every id the dataset names has a feature row (pipeline/sampling/inputs.py reads and filters the inputs).
"""
import logging
from pathlib import Path

from pipeline.config import from_group
from pipeline.sampling.dataset import build_dataset, save_dataset
from pipeline.sampling.inputs import SplitParams, read_split_inputs
from stages.common import run, setup

RAW = Path("data/raw")
LABELS = Path("data/genre/labels.parquet")
FAILURES = {"video_id": [Path("data/features/video/failures.parquet")],
            "music_id": [Path("data/features/music/failures.parquet"), Path("data/features/smile/failures.parquet")]}
OUT = Path("data/dataset")
log = logging.getLogger("stages.split")


def main() -> None:
    p = from_group(SplitParams, setup("split"), "split")
    inputs = read_split_inputs(RAW, LABELS, FAILURES, p.rhythm)
    ds = build_dataset(inputs.videos, inputs.pairs, inputs.labels, inputs.rhythm, p.split_config(), **inputs.sources)
    ds.info["dropped"] = inputs.dropped
    save_dataset(ds, OUT)
    log.info("split: %d UGC videos, %d music, schemes %s", len(ds.video_ids), len(ds.music_ids), ds.schemes)


if __name__ == "__main__":
    run(main)
