"""The built dataset as training and evaluation read it (`Dataset`, its `EvalSet`s) and its folder form
(`save_dataset` / `load_dataset`). How it is built from the raw tables is pipeline.sampling.dataset, which
re-exports these names; this module imports nothing from the builder.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.data.schema import GENRES
from pipeline.errors import DataError
from pipeline.io import atomic_dir, read_ids, write_ids, write_json, write_npy, write_parquet
from pipeline.sampling.common import member


@dataclass
class EvalSet:
    """Rows of one evaluation set, sorted by video id: positive and negatives are music indices."""

    video_id: np.ndarray
    positive: np.ndarray  # int64 [N]
    negatives: np.ndarray  # int64 [N, n_negatives]
    weight: np.ndarray  # float64 [N], lambda_v, sums to 1

    def subset(self, video_ids) -> "EvalSet":
        """The rows of `video_ids`, weights renormalised over them (lambda_v is per test set)."""
        keep = member(self.video_id, list(video_ids))
        w = self.weight[keep]
        return EvalSet(self.video_id[keep], self.positive[keep], self.negatives[keep], w / w.sum() if len(w) else w)


@dataclass
class Dataset:
    """Everything training and evaluation read, indexed like the feature matrices (sorted ids)."""

    video_ids: list[str]  # sorted UGC video ids: a video's int index
    music_ids: list[str]  # sorted music ids: a music's int index
    ugc: pd.DataFrame  # video_id, uploader_id, music_id, genre (sorted by video_id)
    pgc: pd.DataFrame  # video_id, music_id, split (train|val)
    splits: pd.DataFrame  # scheme, video_id, split
    uploaders: pd.DataFrame  # scheme, uploader_id, n_train, one column per genre
    priors: pd.DataFrame  # scheme, one column per genre: the training prior of u
    eval_sets: dict[str, EvalSet]  # "scheme/set", set in val|test|diverse|matching; "pgc/val" (the teacher's)
    info: dict = field(default_factory=dict)
    # music_id (sorted, = music_ids), genre, p_<genre> probabilities g(m), pool (the UGC ranking pool)
    music: pd.DataFrame | None = None
    held_out: pd.DataFrame | None = None  # scheme, music_id: music the scheme evaluates on but never trains on

    @property
    def schemes(self) -> list[str]:
        return list(dict.fromkeys(self.splits["scheme"]))

    def split(self, scheme: str) -> pd.DataFrame:
        out = self.splits[self.splits["scheme"] == scheme]
        if out.empty:
            raise DataError(f"dataset: no split scheme {scheme!r}; have {self.schemes}")
        return out[["video_id", "split"]].reset_index(drop=True)

    def uploader_dists(self, scheme: str) -> pd.DataFrame:
        return self.uploaders[self.uploaders["scheme"] == scheme].drop(columns="scheme").reset_index(drop=True)

    def prior(self, scheme: str) -> np.ndarray:
        row = self.priors[self.priors["scheme"] == scheme]
        return row[list(GENRES)].to_numpy(dtype=np.float64)[0]

    def genre_matrix(self) -> np.ndarray:
        """g(m) [M, 6] float32 in music_ids order: the genre stage's probabilities (one-hot of the label when
        a table has none; a music without any label: uniform)."""
        table = self.music if self.music is not None else music_table(self.ugc.drop_duplicates("music_id"),
                                                                      self.music_ids, set(self.music_ids))
        return table[PROBA_COLUMNS].to_numpy(np.float32)

    def pool_mask(self) -> np.ndarray:
        """[M] bool: the UGC ranking pool (full ranking and sampled negatives never leave it)."""
        if self.music is None:
            return np.ones(len(self.music_ids), dtype=bool)
        return self.music["pool"].to_numpy(dtype=bool)

    def held_out_music(self, scheme: str | None = None) -> set:
        """Music `scheme` evaluates on but never trains on (None: of any scheme)."""
        if self.held_out is None:
            return set()
        rows = self.held_out if scheme is None else self.held_out[self.held_out["scheme"] == scheme]
        return set(rows["music_id"])

    def pgc_pairs(self, scheme: str | None = None) -> pd.DataFrame:
        """The teacher's pairs for a student of `scheme` (video_id, music_id, split train|val), sorted by video
        id: PGC pairs whose music the scheme does not hold out (None: that no scheme holds out). A teacher
        trained on a held-out clip would pass that clip's look to the student: a leak (docs/architecture.md)."""
        keep = self.pgc[self.pgc["split"].isin(("train", "val")) & ~member(self.pgc["music_id"],
                                                                             self.held_out_music(scheme))]
        return keep.sort_values("video_id").reset_index(drop=True)


PROBA_COLUMNS = [f"p_{g}" for g in GENRES]


def music_table(music_genres: pd.DataFrame, music_ids: list[str], pool: set) -> pd.DataFrame:
    """music_id, genre, p_<genre>, pool for every music id: probabilities as the genre table gives them,
    else one-hot of its label; a music the table has no label for gets the uniform distribution."""
    table = music_genres.drop_duplicates("music_id").set_index("music_id").reindex(music_ids)
    if all(c in table.columns for c in PROBA_COLUMNS):
        proba = np.array(table[PROBA_COLUMNS].to_numpy(np.float64))
    else:
        proba = np.zeros((len(music_ids), len(GENRES)))
        labelled = table["genre"].isin(GENRES).to_numpy()
        codes = pd.Categorical(table["genre"], categories=GENRES).codes
        proba[np.flatnonzero(labelled), codes[labelled]] = 1.0
    unlabelled = ~np.isfinite(proba).all(axis=1) | (proba.sum(axis=1) <= 0)
    proba[unlabelled] = 1.0 / len(GENRES)
    proba = proba / proba.sum(axis=1, keepdims=True)
    out = pd.DataFrame({"music_id": music_ids, "genre": table["genre"].to_numpy(dtype=object)})
    out[PROBA_COLUMNS] = proba.astype(np.float32)
    out["pool"] = member(out["music_id"], pool)
    return out


def _file_key(key: str) -> str:
    return key.replace("/", "__")


def save_dataset(ds: Dataset, out_dir: str | Path) -> None:
    """Write the dataset as Parquet + npy; the folder is swapped in whole (pipeline.io.atomic_dir)."""
    with atomic_dir(out_dir) as tmp:
        write_ids(ds.video_ids, tmp / "video_ids.txt")
        write_ids(ds.music_ids, tmp / "music_ids.txt")
        for name in ("ugc", "pgc", "splits", "uploaders", "priors", "music", "held_out"):
            if getattr(ds, name) is not None:
                write_parquet(getattr(ds, name), tmp / f"{name}.parquet")
        rows = []
        for key, es in ds.eval_sets.items():
            rows.append(pd.DataFrame({"key": key, "video_id": es.video_id.astype(str), "positive": es.positive,
                                      "weight": es.weight}))
            write_npy(es.negatives, tmp / "negatives" / f"{_file_key(key)}.npy")
        write_parquet(pd.concat(rows, ignore_index=True), tmp / "eval.parquet")
        write_json(ds.info, tmp / "info.json")


def load_dataset(data_dir: str | Path) -> Dataset:
    """Read a dataset written by `save_dataset`."""
    data_dir = Path(data_dir)
    if not (data_dir / "eval.parquet").exists():
        raise DataError(f"{data_dir}: no built dataset (eval.parquet missing); run the split stage first")
    tables = {n: pd.read_parquet(data_dir / f"{n}.parquet") for n in ("ugc", "pgc", "splits", "uploaders", "priors")}
    eval_rows = pd.read_parquet(data_dir / "eval.parquet")
    eval_sets = {}
    for key, rows in eval_rows.groupby("key", sort=False):
        negs = np.load(data_dir / "negatives" / f"{_file_key(key)}.npy")
        if len(negs) != len(rows):
            raise DataError(f"{data_dir}/negatives/{_file_key(key)}.npy: {len(negs)} rows, "
                            f"eval.parquet has {len(rows)} for {key}")
        eval_sets[key] = EvalSet(rows["video_id"].to_numpy(dtype=object), rows["positive"].to_numpy(np.int64),
                                 negs, rows["weight"].to_numpy(np.float64))
    optional = {n: pd.read_parquet(data_dir / f"{n}.parquet") if (data_dir / f"{n}.parquet").exists() else None
                for n in ("music", "held_out")}
    return Dataset(video_ids=read_ids(data_dir / "video_ids.txt"), music_ids=read_ids(data_dir / "music_ids.txt"),
                   eval_sets=eval_sets, info=json.loads((data_dir / "info.json").read_text()), **optional, **tables)
