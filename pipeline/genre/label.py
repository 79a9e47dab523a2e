"""The `genre` stage's logic: a genre distribution g(m) for every music clip of data/raw, whatever the source.

Who labels a clip, in order: the source (a shipped genre, one-hot); for clips with audio, the LSTM when a
genre corpus exists (or `labeller: lstm` demands it), else musicnn tags; a clip with neither a shipped
label nor audio gets the uniform g(m). Every row says which (`labelled_by`), and the metrics count them.

labels.parquet: music_id, genre, p_<genre> for each of GENRES, labelled_by (source | lstm | tags | uniform).
`genre` is always one of GENRES (the argmax of p, ties to the first genre in GENRES order), so a uniform
row reads "classical" there: consumers that must not treat it as a real label check `labelled_by`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from pipeline.data.schema import GENRES
from pipeline.errors import DataError, ParamsError
from pipeline.features.mediacheck import check_audio
from pipeline.genre import lstm
from pipeline.genre.corpus import read_corpus
from pipeline.genre.frames import FrameConfig, corpus_frames

log = logging.getLogger(__name__)

LABELLERS = ("auto", "lstm", "tags")
PROBA_COLUMNS = [f"p_{g}" for g in GENRES]


@dataclass(frozen=True)
class GenreConfig:
    """The `genre` params group."""

    labeller: str = "auto"  # auto: lstm when the corpus exists, else tags | lstm: corpus required | tags
    corpus: str = "data/raw/genre_corpus"  # GTZAN layout <root>/<genre>/<clip>
    test_fraction: float = 0.2  # corpus share held out (stratified) for the reported accuracy
    workers: int = 0  # frame-feature processes; 0: every core
    tags_model: str = "MSD_musicnn"
    frames: FrameConfig = field(default_factory=FrameConfig)
    train: lstm.TrainConfig = field(default_factory=lstm.TrainConfig)

    def validate(self) -> None:
        if self.labeller not in LABELLERS:
            raise ParamsError(f"genre.labeller: {self.labeller!r}, expected one of {LABELLERS}")
        if not 0 < self.test_fraction < 1:
            raise ParamsError(f"genre.test_fraction: {self.test_fraction!r}, expected in (0, 1)")
        self.frames.validate()


def lstm_labeller(p: GenreConfig, corpus: pd.DataFrame, pool: list[str]):
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
    return proba, {"held_out": held_out, "best_epoch": summary["best_epoch"], "epochs_run": len(summary["epochs"]),
                   "selection_accuracy": summary["best_val_accuracy"]}, model


def tags_labeller(p: GenreConfig, pool: dict[str, str], on_error: str = "fail"):
    """(labelled ids, their probabilities, metrics, None, failures): musicnn taggram -> genres over the pool
    {music_id: path}; a clip failing the media check is named by its id and stops the stage, or is skipped
    (media.on_error). Needs no corpus and reads none."""
    from pipeline.features.music import MusicEmbeddingConfig, embed_music
    from pipeline.genre.tags import tags_to_genres

    cfg = MusicEmbeddingConfig(model=p.tags_model, layer="taggram")
    ids, tag_proba, failures = embed_music(pool, cfg, on_error)
    genres = tags_to_genres(tag_proba, p.tags_model)
    return ids, genres.proba, {"unmappable": list(genres.unmappable),
                               "no_tag_evidence": int((genres.evidence == 0).sum())}, None, \
        list(failures.itertuples(index=False, name=None))


@dataclass(frozen=True)
class Plan:
    """Which clips the labeller sees and why (decided before any audio or corpus is read)."""

    shipped: np.ndarray  # bool per music: the source gave its genre
    audio: np.ndarray  # bool: no shipped genre, has an audio file -> the labeller
    uniform: np.ndarray  # bool: neither -> uniform g(m)
    labeller: str | None  # lstm | tags | None when no clip needs one
    why: str


def plan(music: pd.DataFrame, p: GenreConfig) -> Plan:
    """Choose the labeller for `music` (music_id, path, genre); DataError when `lstm` lacks its corpus."""
    shipped = music["genre"].notna().to_numpy()
    audio = ~shipped & music["path"].notna().to_numpy()
    uniform = ~shipped & ~audio
    corpus = Path(p.corpus)
    labeller, why = None, "no clip without a shipped genre has audio"
    if audio.any():
        if p.labeller == "lstm" and not corpus.is_dir():
            raise DataError(f"{corpus}: no genre corpus folder; genre.labeller: lstm trains on one (set genre.corpus "
                            "to a GTZAN-layout folder <root>/<genre>/<clip>.wav, or genre.labeller: auto or tags)")
        if p.labeller == "tags":
            labeller, why = "tags", "genre.labeller: tags"
        elif corpus.is_dir():
            labeller, why = "lstm", f"genre.labeller: {p.labeller}, genre corpus {corpus}"
        else:
            labeller, why = "tags", f"genre.labeller: auto and no genre corpus at {corpus} (genre.corpus)"
    return Plan(shipped, audio, uniform, labeller, why)


def _reason(pl: Plan) -> str:
    parts = [f"{int(pl.shipped.sum())} shipped by the source"]
    if pl.labeller is not None:
        parts.append(f"{int(pl.audio.sum())} labelled by {pl.labeller} ({pl.why})")
    if pl.uniform.any():
        parts.append(f"{int(pl.uniform.sum())} with neither a shipped genre nor audio get the uniform g(m)")
    return "; ".join(parts)


def _label_audio(p: GenreConfig, pool: dict[str, str], on_error: str):
    """(labelled ids, probabilities, metrics, model, failures) of the chosen labeller over {music_id: path}.
    The LSTM reads audio through librosa, so its clips first get the media check every other stage applies."""
    if p.labeller == "tags":
        return tags_labeller(p, pool, on_error)
    failures = check_audio(pool, on_error, "genre labels", p.workers)
    ids = sorted(set(pool) - {f[0] for f in failures})
    proba, metrics, model = lstm_labeller(p, read_corpus(p.corpus), [pool[m] for m in ids])
    return ids, proba, metrics, model, failures


def label_music(music: pd.DataFrame, raw_dir: str | Path, p: GenreConfig, on_error: str = "fail"):
    """(labels table, metrics, LSTM model or None) for every row of the canonical music table.

    `on_error` (media.on_error): a clip whose audio fails the media check stops the stage naming it by id, or
    (skip) is left out of the labels and listed with its reason in metrics["media_skipped"] (present only
    then); the extract stages skip the same clips, so split drops them.

    metrics: labeller (lstm | tags for the clips without a shipped genre; uniform when none of those has
    audio; source when every clip ships one), n_music, n_shipped, n_labelled, n_uniform, reason (one line
    saying who labelled how many and why), plus the labeller's own scores.
    """
    music = music.sort_values("music_id").reset_index(drop=True)
    pl = plan(music, p)
    proba = np.full((len(music), len(GENRES)), 1.0 / len(GENRES), dtype=np.float32)
    proba[pl.shipped] = 0.0
    proba[np.flatnonzero(pl.shipped), [GENRES.index(g) for g in music.loc[pl.shipped, "genre"]]] = 1.0
    by = np.where(pl.shipped, "source", "uniform").astype(object)
    metrics, model, failures = {}, None, []
    if pl.labeller is not None:
        pool = {m: str(Path(raw_dir) / f) for m, f in zip(music.loc[pl.audio, "music_id"], music.loc[pl.audio, "path"])}
        ids, proba_audio, metrics, model, failures = _label_audio(replace(p, labeller=pl.labeller), pool, on_error)
        rows = np.flatnonzero(music["music_id"].isin(ids).to_numpy())  # sorted ids, as the music table
        proba[rows] = proba_audio
        by[rows] = pl.labeller
    n_labelled = int(pl.audio.sum()) - len(failures) if pl.labeller else 0
    metrics = {"labeller": pl.labeller or ("uniform" if pl.uniform.any() else "source"), "n_music": len(music),
               "n_shipped": int(pl.shipped.sum()), "n_labelled": n_labelled, "n_uniform": int(pl.uniform.sum()),
               "reason": _reason(pl), **metrics}
    if failures:
        metrics["media_skipped"] = {m: reason for m, _, reason in failures}
    labels = pd.DataFrame({"music_id": music["music_id"], "genre": [GENRES[i] for i in proba.argmax(axis=1)]})
    labels[PROBA_COLUMNS] = proba
    labels["labelled_by"] = pd.Series(by, dtype="str")
    labels = labels[~labels["music_id"].isin({f[0] for f in failures})].reset_index(drop=True)
    log.info("genre: %s%s", metrics["reason"], f"; {len(failures)} left out (media.on_error: skip)" * bool(failures))
    return labels, metrics, model


def score_against_truth(labels: pd.DataFrame, truth: str | Path) -> dict:
    """Evaluation only (the simulated world): how well the labels recover the true genres of the pool."""
    true = pd.read_parquet(truth).set_index("music_id").loc[labels["music_id"], "genre"]
    return lstm.evaluate(true.to_numpy(), labels[PROBA_COLUMNS].to_numpy())
