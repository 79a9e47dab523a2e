"""Uploader genre distributions u_g (DebCM's confounder) and the training prior used at inference.

Only TRAINING choices count: an uploader's val/test music would leak the answers into the confounder
features, so `uploader_genre_dist` never looks at a video outside the split's train set.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from pipeline.data.schema import GENRES
from pipeline.errors import DataError
from pipeline.sampling.common import genre_lookup, member

log = logging.getLogger(__name__)

GENRE_COLUMNS = list(GENRES)


def _training_choices(videos: pd.DataFrame, pairs: pd.DataFrame, split: pd.DataFrame,
                      music_genres: pd.DataFrame) -> pd.DataFrame:
    """video_id, uploader_id, genre of the training videos only."""
    train_ids = split.loc[split["split"] == "train", "video_id"]
    pairs = pairs.reset_index(drop=True)  # error messages name the row position
    train = pairs.loc[member(pairs["video_id"], train_ids), ["video_id", "music_id"]]
    missing = set(train_ids) - set(train["video_id"])
    if missing:
        raise DataError(f"split: training video {sorted(missing)[0]!r} has no pair (music) in pairs")
    genre_of = genre_lookup(music_genres)
    unknown = ~member(train["music_id"], genre_of.index)
    if unknown.any():
        row = train.index[unknown][0]
        raise DataError(f"pairs row {row}: music_id {train.loc[row, 'music_id']!r} has no genre label")
    uploader_of = videos.set_index("video_id")["uploader_id"]
    no_video = ~member(train["video_id"], uploader_of.index)
    if no_video.any():
        raise DataError(f"videos: training video {train.loc[no_video, 'video_id'].iloc[0]!r} not in the videos table")
    return pd.DataFrame({"video_id": train["video_id"].to_numpy(),
                         "uploader_id": uploader_of.loc[train["video_id"]].to_numpy(),
                         "genre": genre_of.loc[train["music_id"]].to_numpy()})


def uploader_genre_dist(videos: pd.DataFrame, pairs: pd.DataFrame, split: pd.DataFrame,
                        music_genres: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """Per-uploader genre shares of their training music, and the training prior.

    u_g = (training videos of u whose music is in genre g) / (training videos of u)   (DebCM, u_g).
    Returned for every uploader who owns a video of the split (any set); an uploader with no training
    video gets the prior, since nothing about their taste may be learnt from val/test choices.

    The prior is the mean of u over training *videos* (= the genre share of all training music). DebCM
    takes the batch mean of u during training; over random batches that mean is exactly this
    video-weighted average, so using it at inference keeps the backdoor adjustment's P(u) consistent.

    Returns (DataFrame uploader_id, n_train, <one float column per genre>, sorted by uploader_id;
    prior as float64 [len(GENRES)]).
    """
    choices = _training_choices(videos, pairs, split, music_genres)
    if choices.empty:
        raise DataError("split: the train set is empty; uploader genre distributions need training videos")
    code = pd.Categorical(choices["genre"], categories=GENRES).codes
    weights = genre_weights(code)
    genre_totals = weights.sum(axis=0)
    prior = genre_totals / genre_totals.sum()
    # A video without an uploader (a release that omits them) counts in the prior, not in any u.
    owned = choices["uploader_id"].notna().to_numpy()
    in_split = videos.loc[member(videos["video_id"], split["video_id"]), "uploader_id"].dropna()
    uploaders = np.unique(np.concatenate([in_split.to_numpy(dtype=object),
                                          choices["uploader_id"].to_numpy(dtype=object)[owned]]).astype(str))
    row = np.searchsorted(uploaders, choices["uploader_id"].to_numpy(dtype=object)[owned].astype(str))
    counts = np.zeros((len(uploaders), len(GENRES)))
    np.add.at(counts, row, weights[owned])
    n_train = counts.sum(axis=1)
    shares = np.where(n_train[:, None] > 0, counts / np.maximum(n_train, 1)[:, None], prior[None, :])
    out = pd.DataFrame(shares, columns=GENRE_COLUMNS)
    out.insert(0, "n_train", n_train.astype(np.int64))
    out.insert(0, "uploader_id", uploaders.tolist())
    n_cold = int((n_train == 0).sum())
    if n_cold:
        log.info("%d of %d uploaders have no training video: they get the training prior", n_cold, len(out))
    return out, prior


def genre_weights(code: np.ndarray) -> np.ndarray:
    """[N, len(GENRES)]: one-hot of each genre code; code -1 (a music without a genre label) is uniform."""
    out = np.full((len(code), len(GENRES)), 1.0 / len(GENRES))
    known = code >= 0
    out[known] = 0.0
    out[np.flatnonzero(known), code[known]] = 1.0
    return out


def dist_matrix(dists: pd.DataFrame) -> np.ndarray:
    """The [U, len(GENRES)] float array of a distribution table, in its row order."""
    return dists[GENRE_COLUMNS].to_numpy(dtype=np.float64)


def video_uploader_dist(videos: pd.DataFrame, video_ids, dists: pd.DataFrame, prior: np.ndarray) -> np.ndarray:
    """Genre distribution of each video's uploader, [len(video_ids), len(GENRES)] (the train.npy user_prior).

    A video whose uploader is unknown (null uploader_id) gets the prior, as a cold uploader does.
    """
    video_ids = list(video_ids)
    table = videos.set_index("video_id")
    absent = [v for v in video_ids if v not in table.index]
    if absent:
        raise DataError(f"videos: video {absent[0]!r} not in the videos table")
    uploader = table["uploader_id"].reindex(video_ids)
    by_uploader = dists.set_index("uploader_id")[GENRE_COLUMNS]
    missing = uploader.notna().to_numpy() & ~member(uploader, by_uploader.index)
    if missing.any():
        raise DataError(f"uploader distributions: no row for uploader {uploader[missing].iloc[0]!r} "
                        f"(video {uploader.index[missing][0]!r})")
    out = np.tile(np.asarray(prior, dtype=np.float64), (len(video_ids), 1))
    known = uploader.notna().to_numpy()
    out[known] = by_uploader.loc[uploader[known].to_numpy()].to_numpy(dtype=np.float64)
    return out


def dists_from_source(source: pd.DataFrame, computed: pd.DataFrame, where: str = "uploaders.parquet") -> pd.DataFrame:
    """Take the distributions a source ships (uploader_id, genre_dist list), keep computed rows for the rest."""
    for col in ("uploader_id", "genre_dist"):
        if col not in source.columns:
            raise DataError(f"{where}: missing column {col!r}; expected uploader_id, genre_dist")
    rows = np.array([np.asarray(d, dtype=np.float64) for d in source["genre_dist"]]) if len(source) else \
        np.zeros((0, len(GENRES)))
    if rows.ndim != 2 or rows.shape[1] != len(GENRES):
        raise DataError(f"{where}: genre_dist must hold {len(GENRES)} floats per uploader, got shape {rows.shape}")
    shipped = pd.DataFrame(rows, columns=GENRE_COLUMNS, index=source["uploader_id"].to_numpy())
    out = computed.set_index("uploader_id").copy()
    keep = shipped.index.intersection(out.index)
    out.loc[keep, GENRE_COLUMNS] = shipped.loc[keep].to_numpy()
    return out.reset_index()
