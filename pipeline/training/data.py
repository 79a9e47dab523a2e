"""The tensors of one training run: a scheme's UGC triples (student, baselines), the PGC pairs (teacher) or
both (the UGC + PGC baselines), their validation set, and each uploader's genre distribution, all indexed for
batch gathering."""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from pipeline.data.features import Features, load_features, video_batch
from pipeline.data.schema import GENRES
from pipeline.errors import DataError, ParamsError
from pipeline.sampling.dataset import Dataset
from pipeline.sampling.negatives import inverse_popularity_weights

log = logging.getLogger(__name__)


@dataclass
class TrainData:
    """Everything one training run reads, as tensors (rows: the run's videos and the dataset's music)."""

    visual: torch.Tensor  # [V, Fv]
    music: torch.Tensor  # [M, Fm]
    video_idx: torch.Tensor  # [N] long: training triples (video row, music row, uploader row)
    music_idx: torch.Tensor
    uploader_idx: torch.Tensor
    uploader_dist: torch.Tensor  # [U, 6] u_g of each uploader (training choices only)
    music_genre: torch.Tensor  # [M, 6] g(m), the genre stage's probabilities
    val_video: torch.Tensor  # [Nv] video rows of the validation set
    val_candidates: torch.Tensor  # [Nv, 1 + negatives] music rows, the positive first
    val_weight: np.ndarray  # [Nv] lambda_v
    prior: np.ndarray  # [6] mean training uploader distribution (DebCM's inference prior)
    text: torch.Tensor | None = None
    text_mask: torch.Tensor | None = None
    teacher: dict[str, torch.Tensor] = field(default_factory=dict)  # teacher_{video,music}_{mu,logvar}
    # truth-free selection criteria other than val (training.config.CRITERIA): name -> weights over the
    # validation rows summing to 1 (UGC runs only: PGC videos have no uploader)
    val_criteria: dict[str, np.ndarray] = field(default_factory=dict)

    def to(self, device) -> "TrainData":
        moved = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for k, v in moved.items():
            if isinstance(v, torch.Tensor):
                moved[k] = v.to(device)
        moved["teacher"] = {k: v.to(device) for k, v in self.teacher.items()}
        return TrainData(**moved)

    def video_batch(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        return video_batch(self, rows)

    def music_batch(self, rows: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if rows is None:
            return {"music": self.music, "music_genre": self.music_genre}
        return {"music": self.music[rows], "music_genre": self.music_genre[rows]}

    def batch(self, sel: torch.Tensor) -> dict[str, torch.Tensor]:
        """Gather one training batch by index tensors (no per-sample Python)."""
        v, m, u = self.video_idx[sel], self.music_idx[sel], self.uploader_idx[sel]
        out = {**self.video_batch(v), **self.music_batch(m), "music_idx": m, "uploader_dist": self.uploader_dist[u]}
        for key, table in self.teacher.items():
            out[key] = table[v] if key.startswith("teacher_video") else table[m]
        return out

    def scaling_rows(self) -> dict[str, torch.Tensor]:
        """The rows a model's input standardisation is fitted on: the training videos and music (each once),
        and the training videos' captions where they have one. Validation rows never enter."""
        videos, music = torch.unique(self.video_idx), torch.unique(self.music_idx)
        out = {"visual": self.visual[videos], "music": self.music[music]}
        if self.text is not None:
            out["text"] = self.text[videos][self.text_mask[videos]]
        return out


def _ugc_triples(dataset: Dataset, scheme: str) -> tuple[list[str], list[str], list[int], torch.Tensor, np.ndarray]:
    """(train video ids, their music ids, uploader rows, uploader distributions [U + 1, 6], prior).

    The last distribution row is the training prior: a training video without a known uploader (a release
    that omits them, sampling/uploaders.py) or with an uploader the scheme has no distribution for gets it.
    """
    split = dataset.split(scheme)
    train_ids = split.loc[split["split"] == "train", "video_id"].tolist()
    ugc = dataset.ugc.set_index("video_id")
    dists = dataset.uploader_dists(scheme)
    prior = dataset.prior(scheme)
    u_index = {u: i for i, u in enumerate(dists["uploader_id"])}
    uploaders = ugc.loc[train_ids, "uploader_id"]
    rows = [u_index.get(u, len(dists)) for u in uploaders]
    unknown = sum(r == len(dists) for r in rows)
    if unknown:
        log.info("%s: %d of %d training videos have no uploader distribution; they carry the training prior",
                 scheme, unknown, len(rows))
    table = np.vstack([dists[list(GENRES)].to_numpy(np.float32), prior[None, :].astype(np.float32)])
    return train_ids, ugc.loc[train_ids, "music_id"].tolist(), rows, torch.from_numpy(table), prior


def build_train_data(features: Features | str, dataset: Dataset, scheme: str, kind: str = "ugc") -> TrainData:
    """TrainData of one split scheme (UGC: the student and baselines) or of the PGC pairs (the teacher)."""
    feats = features if isinstance(features, Features) else load_features(features)
    music_rows = feats.music_rows(dataset.music_ids, "dataset music")
    m_index = {m: i for i, m in enumerate(dataset.music_ids)}
    if kind == "ugc":
        ids = dataset.video_ids
        train_ids, music_of, uploader, uploader_dist, prior = _ugc_triples(dataset, scheme)
        key = f"{scheme}/val"
    elif kind == "pgc":  # the teacher of `scheme`'s students (another name: a teacher for every scheme)
        pgc = dataset.pgc_pairs(scheme if scheme in dataset.schemes else None)
        ids = pgc["video_id"].tolist()
        train = pgc[pgc["split"] == "train"]
        train_ids, music_of = train["video_id"].tolist(), train["music_id"].tolist()
        uploader, uploader_dist = [0] * len(train_ids), torch.full((1, len(GENRES)), 1.0 / len(GENRES))
        prior = np.full(len(GENRES), 1.0 / len(GENRES))
        key = "pgc/val"
    else:
        raise ParamsError(f"build_train_data: kind={kind!r}, expected 'ugc' or 'pgc'")
    if not train_ids:
        raise DataError(f"dataset {scheme} ({kind}): no training pairs")
    if key not in dataset.eval_sets:
        raise DataError(f"dataset: no validation set {key!r}; have {sorted(dataset.eval_sets)}")
    es = dataset.eval_sets[key]
    if kind == "pgc":  # the PGC val pairs the scheme does not hold out
        es = es.subset(pgc.loc[pgc["split"] == "val", "video_id"])
    val_ids = list(es.video_id)
    candidates = np.concatenate([es.positive[:, None], es.negatives], axis=1)
    val_weight = es.weight
    if kind == "pgc":  # lambda_v from the PGC training pairs' music popularity
        train_music = np.array([m_index[m] for m in music_of], dtype=np.int64)
        val_weight = inverse_popularity_weights(es.positive, train_music, len(dataset.music_ids))
    v_index = {v: i for i, v in enumerate(ids)}
    vb = feats.video_batch(feats.video_rows(ids, f"dataset {kind} videos"))
    data = TrainData(
        visual=vb["visual"], music=feats.music[music_rows],
        video_idx=torch.tensor([v_index[v] for v in train_ids], dtype=torch.long),
        music_idx=torch.tensor([m_index[m] for m in music_of], dtype=torch.long),
        uploader_idx=torch.tensor(uploader, dtype=torch.long), uploader_dist=uploader_dist,
        music_genre=torch.from_numpy(dataset.genre_matrix()),
        val_video=torch.tensor([v_index[v] for v in val_ids], dtype=torch.long),
        val_candidates=torch.from_numpy(np.ascontiguousarray(candidates, dtype=np.int64)),
        val_weight=np.asarray(val_weight, dtype=np.float64), prior=np.asarray(prior, dtype=np.float64),
        text=vb.get("text"), text_mask=vb.get("text_mask"))
    if kind == "ugc":
        uploader_val = uploader_distributions(dataset, scheme, val_ids)
        data.val_criteria = selection_weights(data.val_weight, uploader_val,
                                              dataset.genre_matrix()[candidates[:, 0]])
    log.info("%s/%s: %d training pairs, %d videos, %d music, %d validation rows", kind, scheme,
             len(train_ids), len(ids), len(dataset.music_ids), len(val_ids))
    return data


PROPENSITY_CLIP = 0.05  # as baselines.propensity_clip: a weight is at most 20x the plain one
DIVERSE_SHARE = 0.2  # the validation videos whose uploaders' taste is most even (science grid's T_diverse share)


def selection_weights(weight: np.ndarray, uploader: np.ndarray, positive_genre: np.ndarray) -> dict[str, np.ndarray]:
    """The truth-free validation criteria's weights (training.config.CRITERIA) over validation rows, from
    lambda_v, each video's uploader genre distribution u [N, G] (training choices) and the chosen music's
    genre probabilities g(m) [N, G].

    ips: lambda_v / max(u . g(m), clip), the inverse propensity of the uploader's taste picking that genre.
    diverse: lambda_v on the videos whose uploader's genre entropy is in the top DIVERSE_SHARE, 0 elsewhere.
    """
    w = np.asarray(weight, dtype=np.float64)
    propensity = np.maximum(np.sum(np.asarray(uploader, np.float64) * np.asarray(positive_genre, np.float64), axis=1),
                            PROPENSITY_CLIP)
    ips = w / propensity
    u = np.clip(np.asarray(uploader, dtype=np.float64), 1e-12, None)
    entropy = -np.sum(u * np.log(u), axis=1)
    diverse = w * (entropy >= np.quantile(entropy, 1 - DIVERSE_SHARE)) if len(w) else w
    return {name: v / v.sum() if v.sum() > 0 else w for name, v in (("ips", ips), ("diverse", diverse))}


def union_pairs(dataset: Dataset, scheme: str) -> pd.DataFrame:
    """video_id, music_id, source (ugc | pgc) of the UGC + PGC training setting: the scheme's UGC training pairs
    and its teacher's PGC training pairs (Dataset.pgc_pairs(scheme): never a validation pair, nor one whose
    music the scheme holds out)."""
    split = dataset.split(scheme)
    train_ids = split.loc[split["split"] == "train", "video_id"]
    ugc = dataset.ugc.loc[dataset.ugc["video_id"].isin(train_ids), ["video_id", "music_id"]]
    pgc = dataset.pgc_pairs(scheme)
    pgc = pgc.loc[pgc["split"] == "train", ["video_id", "music_id"]]
    return pd.concat([ugc.assign(source="ugc"), pgc.assign(source="pgc")], ignore_index=True)


def build_union_data(features: Features | str, dataset: Dataset, scheme: str) -> TrainData:
    """TrainData of the UGC + PGC setting: the scheme's UGC TrainData (its validation set, uploaders, prior)
    with the PGC training pairs appended; their videos have no uploader, so they carry the training prior."""
    feats = features if isinstance(features, Features) else load_features(features)
    data = build_train_data(feats, dataset, scheme, kind="ugc")
    pgc = union_pairs(dataset, scheme).query("source == 'pgc'")
    if pgc.empty:
        raise DataError(f"dataset {scheme}: no PGC training pairs for the UGC + PGC setting (the source has no PGC, "
                        "or every PGC pair is held out)")
    vb = feats.video_batch(feats.video_rows(pgc["video_id"].tolist(), "PGC training videos"))
    m_index = {m: i for i, m in enumerate(dataset.music_ids)}
    n_videos, n = data.visual.shape[0], len(pgc)
    prior_row = data.uploader_dist.shape[0] - 1  # _ugc_triples puts the training prior last
    extra = {"visual": torch.cat([data.visual, vb["visual"]]),
             "video_idx": torch.cat([data.video_idx, torch.arange(n_videos, n_videos + n)]),
             "music_idx": torch.cat([data.music_idx, torch.tensor([m_index[m] for m in pgc["music_id"]],
                                                                  dtype=torch.long)]),
             "uploader_idx": torch.cat([data.uploader_idx, torch.full((n,), prior_row, dtype=torch.long)])}
    if data.text is not None:
        extra["text"] = torch.cat([data.text, vb["text"]])
        extra["text_mask"] = torch.cat([data.text_mask, vb["text_mask"]])
    log.info("ugc+pgc/%s: %d UGC + %d PGC training pairs", scheme, data.video_idx.shape[0], n)
    return dataclasses.replace(data, **extra)


def uploader_distributions(dataset: Dataset, scheme: str, video_ids) -> np.ndarray:
    """float32 [N, 6]: the training genre distribution of each video's uploader under `scheme` (what DebCM's
    u_g and the calibration read); a video without a known uploader, or with none in the scheme, gets the
    scheme's training prior, as in training."""
    dists = dataset.uploader_dists(scheme).set_index("uploader_id")[list(GENRES)]
    uploader = dataset.ugc.set_index("video_id")["uploader_id"].reindex(list(video_ids))
    out = np.tile(dataset.prior(scheme).astype(np.float32), (len(uploader), 1))
    known = uploader.isin(dists.index).to_numpy()
    out[known] = dists.loc[uploader[known].to_numpy()].to_numpy(np.float32)
    return out
