"""Stage `genre`: label every music clip with a genre (LSTM trained on a labelled corpus, or musicnn tags).

A source that ships genre labels keeps them (probabilities one-hot). When data/raw/truth/ exists (the
simulated world) this stage also scores its labels against the pool's true genres: that one metric is the
only use of truth here, evaluation-side; the labels themselves never see it.
"""
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from pipeline.config import from_group
from pipeline.data.schema import GENRES, read_raw
from pipeline.errors import DataError, ParamsError
from pipeline.genre import lstm
from pipeline.genre.corpus import read_corpus
from pipeline.genre.frames import FrameConfig, corpus_frames
from pipeline.io import atomic_dir, write_json, write_parquet
from stages.common import setup

RAW = Path("data/raw")
OUT, METRICS = Path("data/genre"), Path("metrics/genre.json")
TRUTH = RAW / "truth" / "music_latents.parquet"
log = logging.getLogger("stages.genre")


@dataclass(frozen=True)
class GenreParams:
    labeller: str = "lstm"  # lstm | tags (musicnn tag probabilities mapped to genres; needs no corpus)
    corpus: str = "data/raw/genre_corpus"  # GTZAN layout <root>/<genre>/<clip>
    test_fraction: float = 0.2  # corpus share held out (stratified) for the reported accuracy
    workers: int = 0  # frame-feature processes; 0: every core
    tags_model: str = "MSD_musicnn"
    frames: FrameConfig = field(default_factory=FrameConfig)
    train: lstm.TrainConfig = field(default_factory=lstm.TrainConfig)

    def validate(self) -> None:
        if self.labeller not in ("lstm", "tags"):
            raise ParamsError(f"genre.labeller: {self.labeller!r}, expected lstm or tags")
        if not 0 < self.test_fraction < 1:
            raise ParamsError(f"genre.test_fraction: {self.test_fraction!r}, expected in (0, 1)")
        self.frames.validate()


def lstm_labeller(p: GenreParams, corpus: pd.DataFrame, pool: list[str]):
    """(pool probabilities, metrics, model): train on the corpus minus a stratified held-out share."""
    y = corpus["genre"].to_numpy()
    n_test, n_classes = int(np.ceil(p.test_fraction * len(y))), len(set(y))
    if n_test < n_classes or len(y) - n_test < 2 * n_classes:  # checked before any audio is decoded
        raise DataError(f"{p.corpus}: {len(y)} clips in {n_classes} genres are too few to hold out "
                        f"test_fraction={p.test_fraction} with every genre on both sides; add clips or change it")
    _, frames = corpus_frames(corpus["path"], p.frames, p.workers)  # corpus is sorted by path, as frames are
    fit, test = train_test_split(np.arange(len(y)), test_size=p.test_fraction, stratify=y, random_state=p.train.seed)
    model, summary = lstm.train_classifier(frames[np.sort(fit)], y[np.sort(fit)], p.train)
    held_out = lstm.evaluate(y[np.sort(test)], lstm.predict_proba(model, frames[np.sort(test)]))
    order, pool_frames = corpus_frames(pool, p.frames, p.workers)  # rows in sorted-path order
    row = {path: i for i, path in enumerate(order)}
    proba = lstm.predict_proba(model, pool_frames)[[row[path] for path in pool]]
    return proba, {"held_out": held_out, "best_epoch": summary["best_epoch"],
                   "selection_accuracy": summary["best_val_accuracy"]}, model


def tags_labeller(p: GenreParams, corpus: pd.DataFrame, pool: list[str]):
    """(pool probabilities, metrics, None): musicnn taggram -> genres; the whole corpus is held out."""
    from pipeline.features.music import MusicEmbeddingConfig, embed_music
    from pipeline.genre.tags import tags_to_genres

    cfg = MusicEmbeddingConfig(model=p.tags_model, layer="taggram")
    paths = dict(enumerate(pool + list(corpus["path"])))
    ids, tag_proba, _ = embed_music({f"{i:08d}": f for i, f in paths.items()}, cfg)
    proba = tags_to_genres(tag_proba, p.tags_model).proba
    return proba[:len(pool)], {"held_out": lstm.evaluate(corpus["genre"], proba[len(pool):])}, None


def main() -> None:
    p = from_group(GenreParams, setup("genre"), "genre")
    _, music, _ = read_raw(RAW)
    music = music.sort_values("music_id").reset_index(drop=True)
    proba = np.zeros((len(music), len(GENRES)), np.float32)
    shipped = music["genre"].notna().to_numpy()
    proba[np.flatnonzero(shipped), [GENRES.index(g) for g in music.loc[shipped, "genre"]]] = 1.0
    metrics, model = {"labeller": p.labeller if not shipped.all() else "source", "n_shipped": int(shipped.sum())}, None
    if not shipped.all():
        corpus = read_corpus(p.corpus)
        pool = [str(RAW / f) for f in music.loc[~shipped, "path"]]
        labeller = lstm_labeller if p.labeller == "lstm" else tags_labeller
        proba[~shipped], scores, model = labeller(p, corpus, pool)
        metrics.update(scores)
    labels = pd.DataFrame({"music_id": music["music_id"], "genre": [GENRES[i] for i in proba.argmax(axis=1)]})
    labels[[f"p_{g}" for g in GENRES]] = proba
    if TRUTH.exists():  # evaluation only: how well the labels recover the world's true genres
        true = pd.read_parquet(TRUTH).set_index("music_id").loc[music["music_id"], "genre"]
        metrics["pool_truth"] = lstm.evaluate(true.to_numpy(), proba)
    with atomic_dir(OUT) as tmp:
        write_parquet(labels, tmp / "labels.parquet")
        if model is not None:
            lstm.save(model, tmp / "model.pt", meta={"frames": asdict(p.frames)})
    write_json(metrics, METRICS)
    log.info("genre: %d music labelled %s", len(labels), labels["genre"].value_counts().to_dict())


if __name__ == "__main__":  # frame features run on a process pool
    main()
