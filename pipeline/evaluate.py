"""Evaluation of every model on every test set: weighted Recall/NDCG@K under the sampled (100-negative) and
full-ranking protocols, and, on the simulated world, metrics against the true compatibility.

This is the ONLY library module that reads the world's truth (`data/raw/truth/`); training never does.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from pipeline.data.schema import GENRES, MUSIC_IDS_FILE, VIDEO_IDS_FILE
from pipeline.errors import DataError, ParamsError
from pipeline.experiment import load_runs, skipped, variant_dir
from pipeline.io import atomic_path, read_ids
from pipeline.metrics import (DEFAULT_KS, ScoreMatrix, aggregate, full_ranks, ranking_metrics, sampled_ranks,
                              truth_per_video)
from pipeline.data.features import Features
from pipeline.inference import eval_mode, pool_embedding, video_embedding
from pipeline.sampling.dataset import Dataset
from pipeline.training.data import uploader_distributions

log = logging.getLogger(__name__)

# Eval-set suffix -> the name metrics use; "test" takes the scheme's own name (weak, strong, intervention_X).
SET_NAMES = {"diverse": "t_diverse", "matching": "t_matching"}
PROTOCOLS = ("sampled", "full")


@dataclass
class EvaluateParams:
    """The `evaluate` params group: the cut-offs K of every ranking metric."""

    ks: tuple[int, ...] = (10, 15, 20, 25)

    def __post_init__(self) -> None:
        self.ks = tuple(int(k) for k in self.ks)

    def validate(self) -> None:
        if not self.ks or min(self.ks) < 1:
            raise ParamsError(f"evaluate.ks: {list(self.ks)}, expected positive integers")


@dataclass
class Truth:
    """The simulated world's truth restricted to the dataset's videos (rows) and music (columns)."""

    video_ids: list[str]
    music_ids: list[str]
    compatibility: np.ndarray  # float16 [V, M] c(v, m), the graded relevance
    music_genre: np.ndarray  # int64 [M] true genre code (index in GENRES)

    def rows(self, video_ids) -> np.ndarray:
        index = {v: i for i, v in enumerate(self.video_ids)}
        missing = [v for v in video_ids if v not in index]
        if missing:
            raise DataError(f"truth: video {missing[0]!r} has no compatibility row")
        return np.array([index[v] for v in video_ids], dtype=np.int64)


def _index(pool: list[str], ids: Sequence[str], where: str) -> np.ndarray:
    index = {v: i for i, v in enumerate(pool)}
    for v in ids:
        if v not in index:
            raise DataError(f"{where}: id {v!r} is missing; expected every dataset id to be listed")
    return np.array([index[v] for v in ids], dtype=np.int64)


def load_truth(truth_dir: str | Path, video_ids: Sequence[str], music_ids: Sequence[str]) -> Truth:
    """Read compatibility.npy (float16, rows/columns in truth/{video,music}_ids.txt order) and the true genres
    (music_latents.parquet), restricted to `video_ids` x `music_ids`."""
    d = Path(truth_dir)
    for name in ("compatibility.npy", VIDEO_IDS_FILE, MUSIC_IDS_FILE, "music_latents.parquet"):
        if not (d / name).exists():
            raise DataError(f"{d / name}: missing; truth exists only for a simulated world")
    all_videos, all_music = read_ids(d / VIDEO_IDS_FILE), read_ids(d / MUSIC_IDS_FILE)
    compat = np.load(d / "compatibility.npy", mmap_mode="r")
    if compat.shape != (len(all_videos), len(all_music)):
        raise DataError(f"{d / 'compatibility.npy'}: shape {compat.shape}, expected "
                        f"({len(all_videos)}, {len(all_music)}) from the id files")
    rows = _index(all_videos, list(video_ids), f"{d / VIDEO_IDS_FILE}")
    cols = _index(all_music, list(music_ids), f"{d / MUSIC_IDS_FILE}")
    order = np.argsort(rows, kind="stable")  # read the memmap in file order, then restore
    sub = np.empty((len(rows), len(cols)), dtype=np.float16)
    sub[order] = np.asarray(compat[rows[order]])[:, cols]
    latents = pd.read_parquet(d / "music_latents.parquet", columns=["music_id", "genre"])
    genre_of = latents.set_index("music_id")["genre"]
    missing = [m for m in music_ids if m not in genre_of.index]
    if missing:
        raise DataError(f"{d / 'music_latents.parquet'}: music {missing[0]!r} has no true genre")
    genres = genre_of.loc[list(music_ids)]
    bad = ~genres.isin(GENRES)
    if bad.any():
        raise DataError(f"{d / 'music_latents.parquet'}: music {genres.index[bad][0]!r} has genre "
                        f"{genres[bad].iloc[0]!r}, not in {GENRES}")
    return Truth(list(video_ids), list(music_ids), sub, np.array([GENRES.index(g) for g in genres], dtype=np.int64))


def eval_set_names(dataset: Dataset) -> dict[str, str]:
    """Metric name -> eval-set key: each scheme's test set, T_diverse and T_matching (when present)."""
    out = {}
    for key in dataset.eval_sets:
        scheme, part = key.rsplit("/", 1)
        if part == "test":
            out[scheme] = key
        elif part in SET_NAMES:
            out[SET_NAMES[part]] = key
    return out


def majority_genre(dataset: Dataset, scheme: str, video_ids: Sequence[str]) -> np.ndarray:
    """Per video: argmax of its uploader's TRAINING genre distribution under `scheme` (ties: first genre)."""
    dists = dataset.uploader_dists(scheme)
    major = pd.Series(dists[list(GENRES)].to_numpy().argmax(axis=1), index=dists["uploader_id"].to_numpy())
    uploader = dataset.ugc.set_index("video_id").loc[list(video_ids), "uploader_id"]
    missing = ~uploader.isin(major.index)
    if missing.any():
        raise DataError(f"dataset {scheme}: video {uploader.index[missing][0]!r} has an uploader "
                        f"({uploader[missing].iloc[0]!r}) with no genre distribution")
    return np.array(major.loc[uploader.to_numpy()].to_numpy(), dtype=np.int64)


def _score_set(model, features: Features, dataset: Dataset, key: str, music_z, truth: Truth | None,
               ks: Sequence[int]) -> pd.DataFrame:
    """Per-video results of one eval set: weight, ranks under both protocols (full: within the UGC pool),
    and with truth the per-video truth metrics."""
    es = dataset.eval_sets[key]
    uploader = uploader_distributions(dataset, key.rsplit("/", 1)[0], es.video_id)  # calibration reads it
    video_z = video_embedding(model, features, list(es.video_id), f"test set {key}", uploader)
    scores = ScoreMatrix(video_emb=video_z, music_emb=music_z)
    candidates = np.concatenate([es.positive[:, None], es.negatives], axis=1)
    pool = dataset.pool_mask()
    table = pd.DataFrame({"video_id": es.video_id.astype(str), "weight": es.weight,
                          "rank_sampled": sampled_ranks(scores, candidates),
                          "rank_full": full_ranks(scores, np.array(es.positive), candidate_mask=pool)})
    if truth is not None:
        rel = truth.compatibility[truth.rows(list(es.video_id))].astype(np.float32)
        major = majority_genre(dataset, key.rsplit("/", 1)[0], list(es.video_id))
        per_video = truth_per_video(scores, rel, [k for k in ks if k <= int(pool.sum())], truth.music_genre, major,
                                    candidate_mask=pool)
        for metric, values in per_video.items():
            table[metric.replace("truth_", "")] = values
    return table


def set_metrics(table: pd.DataFrame, name: str, ks: Sequence[int]) -> dict[str, float]:
    """Flat metrics `<name>/<sampled|full>/<recall|ndcg>@K` (and `<name>/truth/...`) of one per-video table."""
    out = {}
    for protocol in PROTOCOLS:
        for metric, value in ranking_metrics(table[f"rank_{protocol}"].to_numpy(), ks, table["weight"]).items():
            out[f"{name}/{protocol}/{metric}"] = value
    for column in table.columns:
        if column.startswith(("ndcg@", "pred_share@", "true_share@")):
            out[f"{name}/truth/{column}"] = float(table[column].mean())
    for k in ks:
        if f"pred_share@{k}" in table.columns:
            out[f"{name}/truth/bias_amplification@{k}"] = out[f"{name}/truth/pred_share@{k}"] - \
                out[f"{name}/truth/true_share@{k}"]
    return out


@torch.no_grad()
def evaluate_model(model, features: Features, dataset: Dataset, truth: Truth | None = None,
                   ks: Sequence[int] = DEFAULT_KS, *, sets: Sequence[str] | None = None,
                   primary: str | None = None) -> tuple[dict[str, float], pd.DataFrame]:
    """(flat metrics, per-video table) of one model. Metrics: `<set>/<sampled|full>/<recall|ndcg>@K`, with
    `truth` also `<set>/truth/<metric>@K` and `truth/<metric>@K` for the `primary` set (default: the scheme
    T_diverse/T_matching came from). The per-video table has a `set` column and one row per test video.

    Scores come from model.video_embedding / music_embedding (what inference ranks with). `sets` limits
    the test sets by metric name: a model trained on one scheme should be scored on that scheme's test set
    and the intervened sets drawn from it; another scheme's test videos may be in its training set.
    """
    names = eval_set_names(dataset)
    if sets is not None:
        unknown = sorted(set(sets) - set(names))
        if unknown:
            raise DataError(f"evaluate: test set(s) {unknown} not in the dataset; have {sorted(names)}")
        names = {n: names[n] for n in sets}
    if not names:
        raise DataError(f"evaluate: the dataset holds no test set (eval sets: {sorted(dataset.eval_sets)})")
    primary = primary or dataset.info.get("intervene_scheme") or next(iter(names))
    out: dict[str, float] = {}
    tables = []
    with eval_mode(model):
        music_z = pool_embedding(model, features, dataset.music_ids, dataset.genre_matrix())
        for name, key in names.items():
            table = _score_set(model, features, dataset, key, music_z, truth, ks)
            out.update(set_metrics(table, name, ks))
            tables.append(table.assign(set=name))
            log.info("%s: %d videos, full recall@%d %.4f", name, len(table), ks[-1],
                     out[f"{name}/full/recall@{ks[-1]}"])
    if truth is not None and primary in names:
        prefix = f"{primary}/truth/"
        out.update({"truth/" + k[len(prefix):]: v for k, v in list(out.items()) if k.startswith(prefix)})
    per_video = pd.concat(tables, ignore_index=True)
    return out, per_video[["set", *[c for c in per_video.columns if c != "set"]]]


PLOTTED = ("recall", "ndcg", "bias_amplification")  # per-K metrics drawn by `dvc plots`


def plot_tables(summaries: Mapping[str, Mapping[str, float]]) -> dict[str, pd.DataFrame]:
    """{`<metric>/<where>.csv`: table (k, one column per model)} from each model's flat metrics.

    `<where>` is the key's prefix with "/" as "_" (`t_diverse_full`, `truth`, `t_diverse_truth`), so one
    file is one plot: K against the metric for every model on one test set and protocol, which is the
    comparison `dvc plots diff` then overlays across revisions.
    """
    cells: dict[tuple[str, str], dict[int, dict[str, float]]] = {}
    for model, metrics in summaries.items():
        for key, value in metrics.items():
            prefix, _, last = key.rpartition("/")
            metric, at, k = last.partition("@")
            if not at or metric not in PLOTTED or not prefix:
                continue
            cells.setdefault((metric, prefix.replace("/", "_")), {}).setdefault(int(k), {})[model] = value
    models = list(summaries)
    return {f"{metric}/{where}.csv": pd.DataFrame([{"k": k, **row} for k, row in sorted(rows.items())],
                                                  columns=["k", *models])
            for (metric, where), rows in sorted(cells.items())}


def write_plots(summaries: Mapping[str, Mapping[str, float]], out_dir: str | Path) -> list[Path]:
    """Write every `plot_tables` table under `out_dir`, each file atomically; the paths written."""
    tables = plot_tables(summaries)
    if not tables:
        raise DataError(f"write_plots: no <set>/<protocol>/<metric>@K entries for {sorted(summaries)}")
    paths = []
    for name, table in tables.items():
        path = Path(out_dir) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            table.to_csv(tmp, index=False, float_format="%.6f")
        paths.append(path)
    return paths


def sets_of_scheme(dataset: Dataset, scheme: str) -> list[str]:
    """Metric names of the test sets a model trained on `scheme` may see: its own test set and the
    intervened sets drawn from it (T_diverse, T_matching when `scheme` is the dataset's intervene scheme)."""
    return sorted(name for name, key in eval_set_names(dataset).items() if key.rsplit("/", 1)[0] == scheme)


def evaluate_runs(models: Mapping[tuple[str, int], object], features: Features, dataset: Dataset,
                  truth: Truth | None = None, ks: Sequence[int] = DEFAULT_KS
                  ) -> tuple[dict[int, dict[str, float]], pd.DataFrame]:
    """Per seed, the flat metrics of one variant (each (scheme, seed) model scored on its scheme's sets only),
    and every model's per-video table with a `seed` column."""
    per_seed: dict[int, dict[str, float]] = {}
    tables = []
    primary = dataset.info.get("intervene_scheme")
    for (scheme, seed), model in sorted(models.items()):
        sets = sets_of_scheme(dataset, scheme)
        if not sets:
            raise DataError(f"evaluate: scheme {scheme!r} has no test set in the dataset")
        out, table = evaluate_model(model, features, dataset, truth, ks, sets=sets, primary=primary)
        per_seed.setdefault(seed, {}).update(out)
        tables.append(table.assign(seed=seed))
    return per_seed, pd.concat(tables, ignore_index=True)


def evaluate_variants(variants: Sequence[str], schemes: Sequence[str], seeds: Sequence[int], features: Features,
                      dataset: Dataset, truth: Truth | None = None, ks: Sequence[int] = DEFAULT_KS,
                      models_root: str | Path = "models"
                      ) -> tuple[dict[str, dict], dict[str, dict[str, dict[str, float]]], pd.DataFrame]:
    """What the evaluate stage writes, for every variant's (scheme, seed) models under `models_root`.

    Returns (summary, per-seed metrics, per-video table). summary: per variant the seed mean and std
    ({"mean": ..., "std": ...}), or {"skipped": reason} for a variant its training stage skipped, so the
    metrics folder still names it; per-seed: per evaluated variant {seed: metrics}; the per-video table
    has one row per test video, variant and seed (`variant`, `seed` first): what the report's paired
    tests compare.
    """
    summary: dict[str, dict] = {}
    per_seed_of: dict[str, dict[str, dict[str, float]]] = {}
    tables = []
    for name in variants:
        reason = skipped(variant_dir(name, models_root) / "summary.json")
        if reason:
            summary[name] = {"skipped": reason}
            continue
        per_seed, table = evaluate_runs(load_runs(variant_dir(name, models_root), schemes, seeds), features,
                                        dataset, truth, ks)
        per_seed_of[name] = {str(s): m for s, m in sorted(per_seed.items())}
        summary[name] = aggregate(per_seed)
        tables.append(table.assign(variant=name))
    if not tables:  # every variant skipped: nothing to score (the stage's write_plots then says so)
        return summary, per_seed_of, pd.DataFrame(columns=["variant", "seed"])
    per_video = pd.concat(tables, ignore_index=True)
    return summary, per_seed_of, per_video[["variant", "seed",
                                            *[c for c in per_video.columns if c not in ("variant", "seed")]]]
