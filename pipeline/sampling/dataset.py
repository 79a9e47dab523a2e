"""The built dataset (`data/dataset/`): every split scheme with its uploader distributions, evaluation
rows, sampled negatives and weights, plus the intervened test sets; built once, read by training/evaluation.

A source that ships its own split, negatives or uploader distributions (a TT-150k release) keeps them as
the scheme "source"; only what it lacks is computed. Full ranking and sampled negatives use the UGC pool:
music a UGC video uses or no pair uses, never a clip only PGC pairs use (a release's separate PGC clips).
A generated scheme the data is too small for is skipped with its reason in `info["skipped"]`.

This module builds it (`SplitConfig`, `build_dataset`); the `Dataset` itself and its folder form
(`save_dataset`, `load_dataset`) are pipeline.sampling.store, re-exported here.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.data.schema import GENRES, SPLITS
from pipeline.errors import DataError, ParamsError
from pipeline.sampling import intervene, negatives, splits, uploaders
from pipeline.sampling.common import check_nonempty, member, rng_for, round_half_up, ugc_pairs
from pipeline.sampling.store import PROBA_COLUMNS, Dataset, EvalSet, load_dataset, music_table, save_dataset

__all__ = ["PROBA_COLUMNS", "SCHEME_KINDS", "Dataset", "EvalSet", "SplitConfig", "build_dataset", "load_dataset",
           "music_table", "save_dataset"]

log = logging.getLogger(__name__)

SCHEME_KINDS = ("weak", "strong", "intervention")


@dataclass
class SplitConfig:
    """The `split` params group."""

    seed: int = 0
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train, val, test
    n_strata: int = 5  # popularity quantile bins of the strong (and intervention) music split
    # generated schemes to build; "auto": all of them, or none when the source ships its own split
    # (the shipped split is always built, as the scheme "source")
    schemes: tuple[str, ...] | str = "auto"
    intervention_ratios: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8)  # X: train hiphop share
    intervention_genres: tuple[str, str] = ("hiphop", "jazz")
    n_negatives: int = 100
    diverse_top_uploaders: float | int = 0.1  # int: count of uploaders; float in (0, 1]: fraction
    matching_top_fraction: float = 0.2
    matching_popularity_weight: float = 0.5  # w in w * rank(pop) + (1 - w) * rank(rhythm)
    intervene_scheme: str = "auto"  # test set T_diverse/T_matching come from; auto: source, else weak
    pgc_val_fraction: float = 0.1  # PGC pairs held out to select the teacher

    def __post_init__(self) -> None:
        if not isinstance(self.schemes, str):
            self.schemes = tuple(self.schemes)

    def generated(self, shipped: bool) -> tuple[str, ...]:
        """The generated schemes to build when the source does (not) ship a split."""
        if self.schemes == "auto":
            return () if shipped else SCHEME_KINDS
        return tuple(self.schemes)

    def validate(self) -> None:
        if len(self.ratios) != 3 or min(self.ratios) <= 0:
            raise ParamsError(f"split.ratios {self.ratios}: expected three positive numbers")
        if isinstance(self.schemes, str) and self.schemes != "auto":
            raise ParamsError(f"split.schemes {self.schemes!r}: expected 'auto' or a list of {SCHEME_KINDS}")
        unknown = sorted(set(self.generated(False)) - set(SCHEME_KINDS))
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
    """PGC pairs -> train | val. A shipped PGC split is kept, otherwise a seeded random hold-out. Which of them
    a scheme's teacher may use is Dataset.pgc_pairs(scheme)'s business (held-out music)."""
    pgc = pgc.sort_values("video_id").reset_index(drop=True)
    if shipped is not None and len(shipped):
        split = pgc["video_id"].map(shipped.set_index("video_id")["split"])
        if split.isna().any():
            raise DataError(f"split.parquet: PGC video {pgc.loc[split.isna(), 'video_id'].iloc[0]!r} has no split; "
                            "a source that ships a PGC split must give every PGC video one")
        labels = split.replace({"test": "val"}).to_numpy(dtype=object)
    else:
        n_val = round_half_up(len(pgc) * cfg.pgc_val_fraction) if len(pgc) >= 2 else 0
        labels = np.array(["train"] * len(pgc), dtype=object)
        labels[rng_for(cfg.seed, "pgc").permutation(len(pgc))[:n_val]] = "val"
    return pgc.assign(split=labels)


def _held_out_music(ugc: pd.DataFrame, scheme_splits: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """scheme, music_id: music each scheme evaluates on (val/test) but never trains on; its PGC teacher must
    not see it (sorted, so the table's bytes are stable)."""
    music_of = ugc.set_index("video_id")["music_id"]
    rows = []
    for scheme, split in scheme_splits.items():
        by_set = {name: set(music_of.reindex(split.loc[split["split"] == name, "video_id"]).dropna())
                  for name in SPLITS}
        rows += [(scheme, m) for m in sorted((by_set["val"] | by_set["test"]) - by_set["train"])]
    return pd.DataFrame(rows, columns=["scheme", "music_id"])


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


def _eval_set(rows: pd.DataFrame, train_music: np.ndarray, n_music: int, n_negatives: int, rng,
              shipped: dict[str, np.ndarray], where: str, pool: np.ndarray) -> EvalSet:
    positive = rows["music_idx"].to_numpy(dtype=np.int64)
    k = len(next(iter(shipped.values()))) if shipped else n_negatives
    if any(len(v) != k for v in shipped.values()):
        raise DataError(f"negatives.parquet ({where}): rows hold different numbers of negatives")
    has = member(rows["video_id"], list(shipped))
    negs = np.empty((len(rows), k), dtype=np.int64)
    if not has.all():  # only what the source lacks is sampled
        negs[~has] = negatives.sample_negatives(positive[~has], n_music, k, rng, where=where, pool=pool)
    if has.any():
        negs[has] = np.stack([shipped[v] for v in rows["video_id"][has]])
    weight = negatives.inverse_popularity_weights(positive, train_music, n_music)
    if "weight" in rows.columns and len(rows) and rows["weight"].notna().all():  # shipped lambda_v: keep it
        weight = rows["weight"].to_numpy(np.float64) / rows["weight"].sum()
    return EvalSet(rows["video_id"].to_numpy(dtype=object), positive, negs, weight)


def _n_negatives(cfg: SplitConfig, pool_size: int, what: str, info: dict) -> int:
    """split.n_negatives, or pool - 1 when the pool is smaller (every other music is then a candidate)."""
    if pool_size < 2:
        raise DataError(f"{what}: the ranking pool has {pool_size} music; at least 2 are needed to rank")
    if cfg.n_negatives <= pool_size - 1:
        return cfg.n_negatives
    log.warning("%s: split.n_negatives=%d needs %d music, the pool has %d; using %d negatives (every other "
                "music)", what, cfg.n_negatives, cfg.n_negatives + 1, pool_size, pool_size - 1)
    info.setdefault("negatives_capped", {})[what] = {"asked": cfg.n_negatives, "used": pool_size - 1,
                                                     "pool": pool_size}
    return pool_size - 1


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
        try:
            ids, info["diverse"] = intervene.diverse_test_set(with_uploader, dists, cfg.diverse_top_uploaders)
            eval_sets[f"{target}/diverse"] = test_set.subset(ids)
        except DataError as e:
            info["diverse"] = {"skipped": str(e)}
    if rhythm is not None:
        covered = int(member(test["video_id"], rhythm["video_id"]).sum())
        if covered < len(test):
            info["rhythm_coverage"] = f"rhythm scores for {covered} of {len(test)} test videos: not used"
            log.warning("T_matching: %s", info["rhythm_coverage"])
            rhythm = None
    if test["popularity"].isna().all() and rhythm is None:
        info["matching"] = {"skipped": "no video popularity and no rhythm scores"}
        log.warning("T_matching skipped: the source has no video popularity and no rhythm scores")
        return
    ids, info["matching"] = intervene.matching_test_set(test, rhythm, cfg.matching_top_fraction,
                                                        cfg.matching_popularity_weight)
    eval_sets[f"{target}/matching"] = test_set.subset(ids)
    if "diverse" in info and "skipped" in info["diverse"]:
        log.warning("T_diverse skipped: %s", info["diverse"]["skipped"])


def _carve_val(split: pd.DataFrame, cfg: SplitConfig, info: dict) -> pd.DataFrame:
    """A shipped split without validation rows: a seeded share (split.ratios' val part) of train becomes val,
    so early stopping never looks at the test set; `info` says so."""
    if (split["split"] == "val").any():
        return split
    train = split.index[split["split"] == "train"]
    n_val = max(1, round_half_up(len(train) * cfg.ratios[1] / sum(cfg.ratios)))
    if len(train) - n_val < 1:
        raise DataError(f"split.parquet: {len(train)} training video(s) and no validation set; too few to hold "
                        "one out for early stopping")
    chosen = train[rng_for(cfg.seed, "source", "val").permutation(len(train))[:n_val]]
    info["source_val"] = f"the source ships no validation rows: {n_val} of its {len(train)} training videos held out"
    log.warning("split: %s", info["source_val"])
    split = split.copy()
    split.loc[chosen, "split"] = "val"
    return split


def _generated_schemes(ugc: pd.DataFrame, music_genres: pd.DataFrame, cfg: SplitConfig, shipped: bool,
                       info: dict) -> dict[str, pd.DataFrame]:
    """The generated schemes (weak, strong, intervention_X); one the data is too small for is skipped with
    its reason in info["skipped"] (the rest go on)."""
    builders = {}
    kinds = cfg.generated(shipped)
    if "weak" in kinds:
        builders["weak"] = lambda: splits.weak_split(ugc, cfg.ratios, cfg.seed)
    if "strong" in kinds:
        builders["strong"] = lambda: splits.strong_split(ugc, cfg.ratios, cfg.n_strata, cfg.seed)
    if "intervention" in kinds:
        for x in cfg.intervention_ratios:
            name = f"intervention_{x:g}"
            builders[name] = lambda x=x, name=name: splits.intervention_split(
                ugc.assign(kind="ugc"), music_genres, x, cfg.ratios, cfg.n_strata, cfg.seed,
                cfg.intervention_genres, name)
    out = {}
    for name, build in builders.items():
        try:
            out[name] = build()
        except DataError as e:
            key = "split.intervention_ratios / split.schemes" if name.startswith("intervention") else "split.schemes"
            info.setdefault("skipped", {})[name] = f"{e} (to drop it, edit {key})"
            log.warning("split scheme %s skipped: %s (edit %s to drop it)", name, e, key)
    return out


def _pgc_val_set(pgc: pd.DataFrame, music_index: pd.Series, cfg: SplitConfig, info: dict) -> EvalSet | None:
    """The teacher's validation set, drawn once (every teacher seed selects on the same candidates): PGC val
    pairs against negatives from every music (the teacher ranks PGC clips too)."""
    val, train = pgc[pgc["split"] == "val"], pgc[pgc["split"] == "train"]
    if val.empty:
        return None
    positive = music_index.loc[val["music_id"]].to_numpy(np.int64)
    k = _n_negatives(cfg, len(music_index), "pgc/val", info)
    negs = negatives.sample_negatives(positive, len(music_index), k, rng_for(cfg.seed, "negatives", "pgc", "val"),
                                      where="pgc/val")
    weight = negatives.inverse_popularity_weights(positive, music_index.loc[train["music_id"]].to_numpy(np.int64),
                                                  len(music_index))
    return EvalSet(val["video_id"].to_numpy(dtype=object), positive, negs, weight)


def build_dataset(videos: pd.DataFrame, pairs: pd.DataFrame, music_genres: pd.DataFrame,
                  rhythm: pd.DataFrame | None, cfg: SplitConfig, *, source_split: pd.DataFrame | None = None,
                  source_negatives: pd.DataFrame | None = None,
                  source_uploaders: pd.DataFrame | None = None) -> Dataset:
    """Build every scheme, its uploader distributions and evaluation sets, and the intervened test sets.

    music_genres: music_id, genre (optionally p_<genre> probabilities) for every music; its sorted ids are the
    dataset's music. rhythm: video_id, score, or None (T_matching then uses popularity alone; `info` says so).

    Long on purpose: a linear recipe of named steps (each a call into pipeline.sampling) that records every skip
    reason in one info dict.
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
    # the UGC pool: music UGC videos use, and music no pair uses (a folder's unused clips); not PGC-only clips
    pool_ids = set(ugc["music_id"]) | (set(music_ids) - set(pairs["music_id"]))
    pool = music_index.loc[sorted(pool_ids)].to_numpy(np.int64)

    info: dict = {"schemes": {}}
    scheme_splits: dict[str, pd.DataFrame] = {}
    shipped_pgc = None
    if source_split is not None:
        scheme_splits["source"], shipped_pgc = _source_split(source_split, set(ugc["video_id"]), set(pgc["video_id"]))
        check_nonempty(scheme_splits["source"], "source", sets=("train", "test"))
        scheme_splits["source"] = _carve_val(scheme_splits["source"], cfg, info)
    scheme_splits.update(_generated_schemes(ugc, music_genres, cfg, source_split is not None, info))
    if not scheme_splits:
        raise ParamsError(f"split.schemes: no scheme could be built ({info.get('skipped') or 'none asked for'})")
    held_out = _held_out_music(ugc, scheme_splits)
    pgc = _pgc_split(pgc, cfg, shipped_pgc)

    ugc_idx = ugc.assign(music_idx=music_index.loc[ugc["music_id"]].to_numpy())
    n_neg = _n_negatives(cfg, len(pool), "UGC pool", info)
    upl_frames, prior_rows, eval_sets = [], [], {}
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
            eval_sets[f"{scheme}/{set_name}"] = _eval_set(set_rows, train_music, len(music_ids), n_neg,
                                                          rng_for(cfg.seed, "negatives", scheme, set_name),
                                                          shipped, f"{scheme}/{set_name}", pool)
        info["schemes"][scheme] = {s: int((split["split"] == s).sum()) for s in SPLITS}
    pgc_val = _pgc_val_set(pgc, music_index, cfg, info)
    if pgc_val is not None:
        eval_sets["pgc/val"] = pgc_val

    target = cfg.intervene_scheme if cfg.intervene_scheme != "auto" else \
        ("source" if "source" in scheme_splits else "weak" if "weak" in scheme_splits else next(iter(scheme_splits)))
    if target not in scheme_splits:
        raise ParamsError(f"split.intervene_scheme {target!r}: not built; have {list(scheme_splits)}")
    dists = upl_frames[list(scheme_splits).index(target)]
    _add_intervened_sets(eval_sets, target, ugc, videos, dists, rhythm, cfg, info)
    pgc_used = {}
    for scheme in scheme_splits:
        used = pgc[~member(pgc["music_id"], held_out.loc[held_out["scheme"] == scheme, "music_id"])]
        pgc_used[scheme] = {s: int((used["split"] == s).sum()) for s in ("train", "val")}
        pgc_used[scheme]["excluded"] = len(pgc) - len(used)
    info.update(intervene_scheme=target, n_music=len(music_ids), n_pool=len(pool), n_ugc=len(ugc), n_pgc=len(pgc),
                pgc=pgc_used,
                n_uploaders=int(ugc["uploader_id"].dropna().nunique()),
                shipped={"split": source_split is not None, "negatives": source_negatives is not None,
                         "uploaders": source_uploaders is not None})
    for scheme, used in pgc_used.items():
        if used["excluded"]:
            log.info("PGC: %d pairs use music scheme %s holds out; its teacher does not train on them",
                     used["excluded"], scheme)

    all_splits = pd.concat([s.assign(scheme=k) for k, s in scheme_splits.items()], ignore_index=True)
    return Dataset(
        video_ids=ugc["video_id"].tolist(), music_ids=music_ids, ugc=ugc.reset_index(drop=True),
        pgc=pgc.reset_index(drop=True), splits=all_splits[["scheme", "video_id", "split"]],
        uploaders=pd.concat(upl_frames, ignore_index=True)[["scheme", "uploader_id", "n_train", *GENRES]],
        priors=pd.DataFrame(prior_rows, columns=["scheme", *GENRES]), eval_sets=eval_sets, info=info,
        music=music_table(music_genres, music_ids, pool_ids), held_out=held_out)
