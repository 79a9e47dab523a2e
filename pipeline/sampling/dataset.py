"""The built dataset (`data/dataset/`): every split scheme with its uploader distributions, evaluation
rows, sampled negatives and weights, plus the intervened test sets; built once, read by training/evaluation.

A source that ships its own split, negatives or uploader distributions (a TT-150k release) keeps them as
the scheme "source"; only what it lacks is computed.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.data.schema import GENRES, SPLITS
from pipeline.errors import DataError, ParamsError
from pipeline.io import atomic_dir, read_ids, write_ids, write_json, write_npy, write_parquet
from pipeline.sampling import intervene, negatives, splits, uploaders
from pipeline.sampling.common import check_nonempty, member, rng_for, round_half_up, ugc_pairs

log = logging.getLogger(__name__)

SCHEME_KINDS = ("weak", "strong", "intervention")


@dataclass
class SplitConfig:
    """The `split` params group."""

    seed: int = 0
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train, val, test
    n_strata: int = 5  # popularity quantile bins of the strong (and intervention) music split
    schemes: tuple[str, ...] = SCHEME_KINDS  # which generated schemes to build
    intervention_ratios: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8)  # X: train hiphop share
    intervention_genres: tuple[str, str] = ("hiphop", "jazz")
    n_negatives: int = 100
    diverse_top_uploaders: float = 0.1  # int: count of uploaders; float in (0, 1]: fraction
    matching_top_fraction: float = 0.2
    matching_popularity_weight: float = 0.5  # w in w * rank(pop) + (1 - w) * rank(rhythm)
    intervene_scheme: str = "auto"  # test set T_diverse/T_matching come from; auto: source, else weak
    pgc_val_fraction: float = 0.1  # PGC pairs held out to select the teacher

    def validate(self) -> None:
        if len(self.ratios) != 3 or min(self.ratios) <= 0:
            raise ParamsError(f"split.ratios {self.ratios}: expected three positive numbers")
        unknown = sorted(set(self.schemes) - set(SCHEME_KINDS))
        if unknown:
            raise ParamsError(f"split.schemes: unknown {unknown}; known {SCHEME_KINDS}")
        if any(not 0 < x < 1 for x in self.intervention_ratios):
            raise ParamsError(f"split.intervention_ratios {self.intervention_ratios}: each must be in (0, 1)")
        if len(self.intervention_genres) != 2 or not set(self.intervention_genres) <= set(GENRES):
            raise ParamsError(f"split.intervention_genres {self.intervention_genres}: two of {GENRES}")
        if self.n_negatives < 1:
            raise ParamsError(f"split.n_negatives {self.n_negatives}: expected >= 1")
        if not 0 <= self.pgc_val_fraction < 1:
            raise ParamsError(f"split.pgc_val_fraction {self.pgc_val_fraction}: expected in [0, 1)")
        top = self.diverse_top_uploaders
        if isinstance(top, bool) or (top < 1 if isinstance(top, int) else not 0 < top <= 1):
            raise ParamsError(f"split.diverse_top_uploaders {top!r}: an int count >= 1 or a fraction in (0, 1]")
        if not 0 < self.matching_top_fraction <= 1:
            raise ParamsError(f"split.matching_top_fraction {self.matching_top_fraction}: expected in (0, 1]")
        if not 0 <= self.matching_popularity_weight <= 1:
            raise ParamsError(f"split.matching_popularity_weight {self.matching_popularity_weight}: expected in [0, 1]")


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
        return EvalSet(self.video_id[keep], self.positive[keep], self.negatives[keep], w / w.sum())


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
    eval_sets: dict[str, EvalSet]  # "scheme/set", set in val|test|diverse|matching
    info: dict = field(default_factory=dict)

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


def _source_split(source: pd.DataFrame, ugc_ids: set, pgc_ids: set) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a shipped split.parquet into its UGC scheme and its PGC part."""
    for col in ("video_id", "split"):
        if col not in source.columns:
            raise DataError(f"split.parquet: missing column {col!r}; expected video_id, split")
    bad = ~source["split"].isin(SPLITS)
    if bad.any():
        raise DataError(f"split.parquet row {source.index[bad.to_numpy()][0]}: split "
                        f"{source.loc[bad, 'split'].iloc[0]!r} not in {SPLITS}")
    unknown = ~member(source["video_id"], ugc_ids | pgc_ids)
    if unknown.any():
        raise DataError(f"split.parquet: video_id {source.loc[unknown, 'video_id'].iloc[0]!r} has no pair")
    cols = ["video_id", "split"] + (["weight"] if "weight" in source.columns else [])
    ugc = source[member(source["video_id"], ugc_ids)][cols]
    pgc = source[member(source["video_id"], pgc_ids)][["video_id", "split"]]
    return ugc.sort_values("video_id").reset_index(drop=True), pgc


def _pgc_split(pgc: pd.DataFrame, cfg: SplitConfig, shipped: pd.DataFrame | None) -> pd.DataFrame:
    """PGC pairs -> train|val; a shipped PGC split is kept, otherwise a seeded random hold-out."""
    pgc = pgc.sort_values("video_id").reset_index(drop=True)
    if shipped is not None and len(shipped):
        split = pgc["video_id"].map(shipped.set_index("video_id")["split"]).fillna("train")
        return pgc.assign(split=split.replace({"test": "val"}).to_numpy())
    n_val = round_half_up(len(pgc) * cfg.pgc_val_fraction) if len(pgc) >= 2 else 0
    labels = np.array(["train"] * len(pgc), dtype=object)
    labels[rng_for(cfg.seed, "pgc").permutation(len(pgc))[:n_val]] = "val"
    return pgc.assign(split=labels)


def _shipped_negatives(source: pd.DataFrame | None, scheme_rows: pd.DataFrame, set_name: str,
                       music_index: pd.Series) -> dict[str, np.ndarray]:
    """video_id -> negative music indices for the rows a source ships negatives for."""
    if source is None:
        return {}
    rows = source[(source["split"] == set_name) & member(source["video_id"], scheme_rows["video_id"])]
    out = {}
    for vid, negs in zip(rows["video_id"], rows["negatives"]):
        idx = music_index.reindex(list(negs))
        if idx.isna().any():
            raise DataError(f"negatives.parquet: video {vid!r} lists unknown music {idx.index[idx.isna()][0]!r}")
        out[vid] = idx.to_numpy(dtype=np.int64)
    return out


def _eval_set(rows: pd.DataFrame, train_music: np.ndarray, n_music: int, cfg: SplitConfig, rng,
              shipped: dict[str, np.ndarray], where: str) -> EvalSet:
    positive = rows["music_idx"].to_numpy(dtype=np.int64)
    k = len(next(iter(shipped.values()))) if shipped else cfg.n_negatives
    if any(len(v) != k for v in shipped.values()):
        raise DataError(f"negatives.parquet ({where}): rows hold different numbers of negatives")
    has = member(rows["video_id"], list(shipped))
    negs = np.empty((len(rows), k), dtype=np.int64)
    if not has.all():  # only what the source lacks is sampled
        negs[~has] = negatives.sample_negatives(positive[~has], n_music, k, rng, where=where)
    if has.any():
        negs[has] = np.stack([shipped[v] for v in rows["video_id"][has]])
    weight = negatives.inverse_popularity_weights(positive, train_music, n_music)
    if "weight" in rows.columns and len(rows) and rows["weight"].notna().all():  # shipped lambda_v: keep it
        weight = rows["weight"].to_numpy(np.float64) / rows["weight"].sum()
    return EvalSet(rows["video_id"].to_numpy(dtype=object), positive, negs, weight)


def _add_intervened_sets(eval_sets: dict, target: str, ugc: pd.DataFrame, videos: pd.DataFrame,
                         dists: pd.DataFrame, rhythm: pd.DataFrame | None, cfg: SplitConfig, info: dict) -> None:
    """T_diverse and T_matching as subsets of `target`'s test set, when the source has what they need.

    A release without uploaders on its test rows cannot give T_diverse, and one with neither video
    popularity nor rhythm scores cannot give T_matching: the set is then skipped and `info` says why.
    """
    test_set = eval_sets[f"{target}/test"]
    test = ugc[member(ugc["video_id"], test_set.video_id)].merge(videos[["video_id", "popularity"]], on="video_id")
    with_uploader = test[test["uploader_id"].notna()]
    if with_uploader.empty:
        info["diverse"] = {"skipped": "no test video has an uploader"}
    else:
        ids, info["diverse"] = intervene.diverse_test_set(with_uploader, dists, cfg.diverse_top_uploaders)
        eval_sets[f"{target}/diverse"] = test_set.subset(ids)
    if test["popularity"].isna().all() and rhythm is None:
        info["matching"] = {"skipped": "no video popularity and no rhythm scores"}
        log.warning("T_matching skipped: the source has no video popularity and no rhythm scores")
        return
    ids, info["matching"] = intervene.matching_test_set(test, rhythm, cfg.matching_top_fraction,
                                                        cfg.matching_popularity_weight)
    eval_sets[f"{target}/matching"] = test_set.subset(ids)


def build_dataset(videos: pd.DataFrame, pairs: pd.DataFrame, music_genres: pd.DataFrame,
                  rhythm: pd.DataFrame | None, cfg: SplitConfig, *, source_split: pd.DataFrame | None = None,
                  source_negatives: pd.DataFrame | None = None,
                  source_uploaders: pd.DataFrame | None = None) -> Dataset:
    """Build every scheme, its uploader distributions and evaluation sets, and the intervened test sets.

    music_genres: music_id, genre for every music (the candidate pool is its sorted ids). rhythm:
    video_id, score, or None (T_matching then uses popularity alone and `info` says so).
    """
    cfg.validate()
    music_ids = sorted(music_genres["music_id"])
    music_index = pd.Series(np.arange(len(music_ids)), index=music_ids)
    ugc = ugc_pairs(pairs, music_genres)
    uploader_of = videos.set_index("video_id")["uploader_id"]
    unknown = ~member(ugc["video_id"], uploader_of.index)
    if unknown.any():
        raise DataError(f"pairs: video_id {ugc.loc[unknown, 'video_id'].iloc[0]!r} is not in the videos table")
    ugc.insert(1, "uploader_id", uploader_of.loc[ugc["video_id"]].to_numpy())
    pgc = pairs.loc[pairs["kind"] == "pgc", ["video_id", "music_id"]]
    bad = ~member(pgc["music_id"], music_index.index)
    if bad.any():
        raise DataError(f"pairs: PGC video {pgc.loc[bad, 'video_id'].iloc[0]!r} uses music "
                        f"{pgc.loc[bad, 'music_id'].iloc[0]!r} absent from the genre table")

    scheme_splits: dict[str, pd.DataFrame] = {}
    shipped_pgc = None
    if source_split is not None:
        scheme_splits["source"], shipped_pgc = _source_split(source_split, set(ugc["video_id"]), set(pgc["video_id"]))
        check_nonempty(scheme_splits["source"], "source", sets=("train", "test"))  # a release may lack val
    pgc = _pgc_split(pgc, cfg, shipped_pgc)
    if "weak" in cfg.schemes:
        scheme_splits["weak"] = splits.weak_split(ugc, cfg.ratios, cfg.seed)
    if "strong" in cfg.schemes:
        scheme_splits["strong"] = splits.strong_split(ugc, cfg.ratios, cfg.n_strata, cfg.seed)
    if "intervention" in cfg.schemes:
        for x in cfg.intervention_ratios:
            name = f"intervention_{x:g}"
            scheme_splits[name] = splits.intervention_split(ugc.assign(kind="ugc"), music_genres, x, cfg.ratios,
                                                            cfg.n_strata, cfg.seed, cfg.intervention_genres, name)
    if not scheme_splits:
        raise ParamsError("split.schemes is empty and the source ships no split: nothing to build")

    ugc_idx = ugc.assign(music_idx=music_index.loc[ugc["music_id"]].to_numpy())
    upl_frames, prior_rows, eval_sets, info = [], [], {}, {"schemes": {}}
    for scheme, split in scheme_splits.items():
        dists, prior = uploaders.uploader_genre_dist(videos, ugc.assign(kind="ugc"), split, music_genres)
        if scheme == "source" and source_uploaders is not None:
            dists = uploaders.dists_from_source(source_uploaders, dists)
            train_ids = split.loc[split["split"] == "train", "video_id"]
            prior = uploaders.video_uploader_dist(videos, train_ids, dists, prior).mean(axis=0)
        upl_frames.append(dists.assign(scheme=scheme))
        prior_rows.append([scheme, *prior])
        rows = ugc_idx.merge(split, on="video_id").sort_values("video_id").reset_index(drop=True)
        train_music = rows.loc[rows["split"] == "train", "music_idx"].to_numpy()
        for set_name in ("val", "test"):
            set_rows = rows[rows["split"] == set_name]
            shipped = _shipped_negatives(source_negatives if scheme == "source" else None, set_rows, set_name,
                                         music_index)
            eval_sets[f"{scheme}/{set_name}"] = _eval_set(set_rows, train_music, len(music_ids), cfg,
                                                          rng_for(cfg.seed, "negatives", scheme, set_name),
                                                          shipped, where=f"{scheme}/{set_name}")
        info["schemes"][scheme] = {s: int((split["split"] == s).sum()) for s in SPLITS}

    target = cfg.intervene_scheme if cfg.intervene_scheme != "auto" else \
        ("source" if "source" in scheme_splits else "weak")
    if target not in scheme_splits:
        raise ParamsError(f"split.intervene_scheme {target!r}: not built; have {list(scheme_splits)}")
    dists = upl_frames[list(scheme_splits).index(target)]
    _add_intervened_sets(eval_sets, target, ugc, videos, dists, rhythm, cfg, info)
    info.update(intervene_scheme=target, n_music=len(music_ids), n_ugc=len(ugc), n_pgc=len(pgc),
                shipped={"split": source_split is not None, "negatives": source_negatives is not None,
                         "uploaders": source_uploaders is not None})

    all_splits = pd.concat([s.assign(scheme=k) for k, s in scheme_splits.items()], ignore_index=True)
    return Dataset(
        video_ids=ugc["video_id"].tolist(), music_ids=music_ids, ugc=ugc.reset_index(drop=True),
        pgc=pgc.reset_index(drop=True), splits=all_splits[["scheme", "video_id", "split"]],
        uploaders=pd.concat(upl_frames, ignore_index=True)[["scheme", "uploader_id", "n_train", *GENRES]],
        priors=pd.DataFrame(prior_rows, columns=["scheme", *GENRES]), eval_sets=eval_sets, info=info)


def _file_key(key: str) -> str:
    return key.replace("/", "__")


def save_dataset(ds: Dataset, out_dir: str | Path) -> None:
    """Write the dataset as Parquet + npy; the folder is swapped in whole (pipeline.io.atomic_dir)."""
    with atomic_dir(out_dir) as tmp:
        write_ids(ds.video_ids, tmp / "video_ids.txt")
        write_ids(ds.music_ids, tmp / "music_ids.txt")
        for name in ("ugc", "pgc", "splits", "uploaders", "priors"):
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
    return Dataset(video_ids=read_ids(data_dir / "video_ids.txt"), music_ids=read_ids(data_dir / "music_ids.txt"),
                   eval_sets=eval_sets, info=json.loads((data_dir / "info.json").read_text()), **tables)
