"""Evaluation of every model on every test set: weighted Recall/NDCG@K under the sampled (100-negative) and
full-ranking protocols, and, on the simulated world, metrics against the true compatibility.

This is the ONLY library module that reads the world's truth (`data/raw/truth/`); training never does.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from pipeline.data.schema import GENRES, MUSIC_IDS_FILE, VIDEO_IDS_FILE
from pipeline.errors import DataError
from pipeline.io import atomic_path, read_ids
from pipeline.metrics import DEFAULT_KS, ScoreMatrix, full_ranks, ranking_metrics, sampled_ranks, truth_metrics
from pipeline.sampling.dataset import Dataset
from pipeline.train import Features, embed, music_genre_matrix

log = logging.getLogger(__name__)

# Eval-set suffix -> the name metrics use; "test" takes the scheme's own name (weak, strong, intervention_X).
SET_NAMES = {"diverse": "t_diverse", "matching": "t_matching"}
PROTOCOLS = ("sampled", "full")


@dataclass
class Truth:
    """The simulated world's truth restricted to the dataset's videos (rows) and music (columns)."""

    video_ids: list[str]
    music_ids: list[str]
    compatibility: np.ndarray  # float16 [V, M] c(v, m), the graded relevance
    music_genre: np.ndarray  # int64 [M] true genre code (index in GENRES)
    uploader_taste: dict[str, np.ndarray]  # uploader_id -> true pi_u (for reports; not used by the metrics)

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
    """Read compatibility.npy (float16, rows/columns in truth/{video,music}_ids.txt order), the true genres
    (music_latents.parquet) and tastes (uploaders.parquet), restricted to `video_ids` x `music_ids`."""
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
    taste = {}
    if (d / "uploaders.parquet").exists():
        ups = pd.read_parquet(d / "uploaders.parquet")
        taste = {str(u): np.asarray(t, dtype=np.float64) for u, t in zip(ups["uploader_id"], ups["taste"])}
    return Truth(list(video_ids), list(music_ids), sub, np.array([GENRES.index(g) for g in genres], dtype=np.int64),
                 taste)


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


@contextlib.contextmanager
def _eval_mode(model):
    """The model in eval mode (no dropout, posterior means) for the block, its own mode restored after."""
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def pool_embedding(model, features: Features, dataset: Dataset, music_genre: np.ndarray | None = None):
    """Inference embedding of every dataset music clip (rows in dataset.music_ids order), on the model's device;
    `music_genre` [M, G] defaults to the genre stage's probabilities (what DebCM's music side reads)."""
    device = next(model.parameters()).device
    genre = music_genre if music_genre is not None else music_genre_matrix(dataset)
    rows = features.music_rows(dataset.music_ids, "dataset music")
    return embed(model.music_embedding, {"music": features.music[rows].to(device),
                                         "music_genre": torch.as_tensor(genre, dtype=torch.float32, device=device)})


def video_embedding(model, features: Features, video_ids: Sequence[str], what: str):
    """Inference embedding of these videos (PoE of visual and, where present, text) on the model's device."""
    device = next(model.parameters()).device
    rows = features.video_rows(list(video_ids), what)
    return embed(model.video_embedding, {k: v.to(device) for k, v in features.video_batch(rows).items()})


@torch.no_grad()
def evaluate_model(model, features: Features, dataset: Dataset, truth: Truth | None = None,
                   ks: Sequence[int] = DEFAULT_KS, *, sets: Sequence[str] | None = None,
                   primary: str | None = None, music_genre: np.ndarray | None = None) -> dict[str, float]:
    """Flat metrics `<set>/<sampled|full>/<recall|ndcg>@K`, and with `truth` `<set>/truth/<metric>@K`
    plus `truth/<metric>@K` for the `primary` set (default: the scheme T_diverse/T_matching came from).

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
    with _eval_mode(model):
        music_z = pool_embedding(model, features, dataset, music_genre)
        out: dict[str, float] = {}
        for name, key in names.items():
            es = dataset.eval_sets[key]
            video_z = video_embedding(model, features, list(es.video_id), f"test set {key}")
            scores = ScoreMatrix(video_emb=video_z, music_emb=music_z)
            candidates = np.concatenate([es.positive[:, None], es.negatives], axis=1)
            ranks = {"sampled": sampled_ranks(scores, candidates), "full": full_ranks(scores, np.array(es.positive))}
            for protocol in PROTOCOLS:
                for metric, value in ranking_metrics(ranks[protocol], ks, es.weight).items():
                    out[f"{name}/{protocol}/{metric}"] = value
            if truth is not None:
                rel = truth.compatibility[truth.rows(list(es.video_id))].astype(np.float32)
                major = majority_genre(dataset, key.rsplit("/", 1)[0], list(es.video_id))
                for metric, value in truth_metrics(scores, rel, ks, truth.music_genre, major).items():
                    out[f"{name}/truth/{metric.replace('truth_', '')}"] = value
            log.info("%s: %d videos, full recall@%d %.4f", name, len(es.video_id), ks[-1],
                     out[f"{name}/full/recall@{ks[-1]}"])
    if truth is not None and primary in names:
        prefix = f"{primary}/truth/"
        out.update({"truth/" + k[len(prefix):]: v for k, v in list(out.items()) if k.startswith(prefix)})
    return out


def evaluate_models(models: Mapping[str, object], features: Features, dataset: Dataset, truth: Truth | None = None,
                    ks: Sequence[int] = DEFAULT_KS, **kwargs) -> dict[str, dict[str, float]]:
    """evaluate_model for each named model (student, student without teacher, CMVAE, DecRS, ...)."""
    return {name: evaluate_model(m, features, dataset, truth, ks, **kwargs) for name, m in models.items()}


@torch.no_grad()
def top_music(model, features: Features, dataset: Dataset, video_ids: Sequence[str], k: int,
              music_genre: np.ndarray | None = None) -> np.ndarray:
    """[N, k] indices into dataset.music_ids of each video's k best-scored music, best first, scored as
    evaluate_model scores (model.video_embedding against model.music_embedding over the whole pool)."""
    if not 0 < k <= len(dataset.music_ids):
        raise DataError(f"top_music: k={k}, expected 1..{len(dataset.music_ids)} (the pool size)")
    with _eval_mode(model):
        scores = video_embedding(model, features, video_ids, "top_music videos") @ \
            pool_embedding(model, features, dataset, music_genre).T
        # stable: ties keep the lower music index, so the same scores give the same lists everywhere
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    return order.cpu().numpy().astype(np.int64)


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
                  truth: Truth | None = None, ks: Sequence[int] = DEFAULT_KS) -> dict[int, dict[str, float]]:
    """Per seed, the flat metrics of one variant: each (scheme, seed) model scored on its scheme's sets only."""
    per_seed: dict[int, dict[str, float]] = {}
    genre = music_genre_matrix(dataset)
    primary = dataset.info.get("intervene_scheme")
    for (scheme, seed), model in sorted(models.items()):
        sets = sets_of_scheme(dataset, scheme)
        if not sets:
            raise DataError(f"evaluate: scheme {scheme!r} has no test set in the dataset")
        out = evaluate_model(model, features, dataset, truth, ks, sets=sets, primary=primary, music_genre=genre)
        per_seed.setdefault(seed, {}).update(out)
    return per_seed
