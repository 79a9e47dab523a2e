"""Stage `genre`: a genre distribution for every music clip (pipeline.genre.label says who labels what).

When data/raw/truth/ exists (the simulated world) this stage also scores its labels against the pool's true
genres: that one metric is the only use of truth here, evaluation-side; the labels themselves never see it.
"""
import logging
from dataclasses import asdict
from pathlib import Path

from pipeline.config import from_group
from pipeline.data.schema import read_raw
from pipeline.features.mediacheck import MediaParams
from pipeline.genre import lstm
from pipeline.genre.label import GenreConfig, label_music, score_against_truth
from pipeline.io import atomic_dir, write_json, write_parquet
from stages.common import group, run, setup

RAW = Path("data/raw")
OUT, METRICS = Path("data/genre"), Path("metrics/genre.json")
TRUTH = RAW / "truth" / "music_latents.parquet"
log = logging.getLogger("stages.genre")

GenreParams = GenreConfig  # the params group's dataclass, under the name the other stages use


def main() -> None:
    p = from_group(GenreParams, setup("genre"), "genre")
    media = from_group(MediaParams, group("media"), "media")  # one switch for every stage that reads media
    _, music, _ = read_raw(RAW)
    labels, metrics, model = label_music(music, RAW, p, media.on_error)
    if TRUTH.exists():
        metrics["pool_truth"] = score_against_truth(labels, TRUTH)
    with atomic_dir(OUT) as tmp:
        write_parquet(labels, tmp / "labels.parquet")
        if model is not None:
            lstm.save(model, tmp / "model.pt", meta={"frames": asdict(p.frames)})
    write_json(metrics, METRICS)
    log.info("genre: %d music labelled %s", len(labels), labels["genre"].value_counts().to_dict())


if __name__ == "__main__":  # frame features run on a process pool
    run(main)
