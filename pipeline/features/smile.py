"""openSMILE ComParE_2016 functionals (6373-d) per music clip, and `SmilePCA`: z-normalisation + PCA to
128-d fitted on training music only (the papers' second music feature, `music_smile`).

openSMILE crashes in a process that has loaded TensorFlow (docs/architecture.md section 11), so when
TensorFlow is already imported here the work runs in freshly spawned worker processes instead of this one
(as with workers > 1; a calling script therefore needs the usual `if __name__ == "__main__":` guard).
"""
from __future__ import annotations

import hashlib
import io
import logging
import multiprocessing
import sys
import zipfile
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from pipeline import numba_cache
from pipeline.errors import DataError, ParamsError
from pipeline.features.mediacheck import BadMedia, check_on_error, read_audio
from pipeline.features.backend import BackendConfig, run_sharded
from pipeline.features.common import check_finite_rows, failure_table, failures_raiser, in_order, raise_failures
from pipeline.io import atomic_path

log = logging.getLogger(__name__)

COMPARE_DIM = 6373  # ComParE_2016 functionals
PCA_DIM = 128
SMILE_SAMPLE_RATE = 16000  # decode rate fed to openSMILE (the same signal musicnn sees)

_smile = None  # one openSMILE instance per process, built on first use


def _compare_functionals(y: np.ndarray, sr: int) -> np.ndarray:
    global _smile
    if _smile is None:
        import opensmile

        _smile = opensmile.Smile(feature_set=opensmile.FeatureSet.ComParE_2016,
                                 feature_level=opensmile.FeatureLevel.Functionals)
    return _smile.process_signal(y, sr).to_numpy(dtype=np.float64).reshape(-1)


def _functionals_one(item: tuple[str, str], sr: int, decode_only: bool = False):
    """(music_id, float32 [6373] or None, reason or None) for one file; bad media never raises."""
    music_id, path = item
    try:
        y = read_audio(path, sr)
    except BadMedia as e:
        return music_id, None, str(e)
    if decode_only:
        return music_id, None, None
    values = _compare_functionals(y, sr)
    if values.size != COMPARE_DIM:
        return music_id, None, f"openSMILE returned {values.size} functionals, expected {COMPARE_DIM}"
    values = values.astype(np.float32)
    if not np.isfinite(values).all():
        return music_id, None, "openSMILE returned NaN or inf functionals"
    return music_id, values, None


class _InProcess(Executor):
    """The Executor surface, run synchronously in this process (no TensorFlow loaded here)."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        future.set_result(fn(*args, **kwargs))
        return future


def smile_functionals(paths: dict[str, str], on_error: str = "fail", workers: int = 1,
                      sample_rate: int = SMILE_SAMPLE_RATE) -> tuple[list[str], np.ndarray, pd.DataFrame]:
    """(sorted ids, float32 [N, 6373] ComParE_2016 functionals, failures (music_id, path, reason)).

    on_error="fail" raises one MediaError naming every bad file (after the first, files are only
    decoded, to find the rest); "skip" leaves them out. Rows are independent, so `workers` never
    changes the output bytes.
    """
    check_on_error(on_error)
    if not isinstance(workers, int) or workers < 1:
        raise ParamsError(f"features_smile.workers: {workers!r}, expected an integer >= 1")
    items = sorted((str(k), str(v)) for k, v in paths.items())
    path_of = dict(items)
    spawn = workers > 1 or "tensorflow" in sys.modules
    if spawn and workers == 1:
        log.info("TensorFlow is loaded in this process: openSMILE runs in a spawned worker process")
    if spawn:
        numba_cache.warm()  # the workers decode with librosa: compile its numba cache once, here
    pool = (ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) if spawn
            else _InProcess())
    good, rows, failures = [], [], []
    quick = lambda: (sample_rate, bool(failures) and on_error == "fail")  # noqa: E731  after a failure: decode only
    with pool:
        for music_id, values, reason in tqdm(in_order(pool, _functionals_one, items, 2 * workers, quick),
                                             total=len(items), desc="openSMILE functionals", unit="clip"):
            if reason is not None:
                failures.append((music_id, path_of[music_id], reason))
                log.warning("music %s (%s): %s", music_id, path_of[music_id], reason)
            elif values is not None:
                good.append(music_id)
                rows.append(values)
    if failures and on_error == "fail":
        raise_failures(failures, len(items), "openSMILE functionals")
    matrix = np.stack(rows) if rows else np.zeros((0, COMPARE_DIM), np.float32)
    check_finite_rows(good, matrix, "openSMILE functionals")
    return good, matrix, failure_table(failures)



def _smile_shard(ids: list[str], paths: dict, workers: int):
    """One shard of `smile_functionals` (failures collected, not raised)."""
    numba_cache.warm_locked()  # a Ray worker machine may start with a cold librosa cache
    return smile_functionals({i: paths[i] for i in ids}, on_error="skip", workers=workers)


def smile_functionals_sharded(paths: dict, on_error: str, workers: int, backend: BackendConfig):
    """(sorted ids, float32 [N, 6373], failures) like smile_functionals, shard by shard on the chosen backend.

    Rows are independent, so sharding never changes the bytes. Locally each shard uses `workers`
    processes; on Ray each task is one single-CPU process (Ray runs as many at once as a machine has
    cores), retired after its shard.
    """
    ids, features, failures = run_sharded(_smile_shard, paths, backend, "features_smile", "openSMILE shards",
                                          on_error, failures_raiser("openSMILE functionals"), COMPARE_DIM,
                                          1 if backend.backend == "ray" else workers, cpus_per_task=1,
                                          fresh_process=True)
    return ids, features, (failure_table([]) if failures is None else failures.reset_index(drop=True))


@dataclass(frozen=True)
class SmileConfig:
    """The `features_smile` keys of the functionals, their fit set and the PCA (backend keys aside)."""

    n_components: int = PCA_DIM
    whiten: bool = False
    fit_fraction: float = 0.8  # no shipped split: share of UGC music ids (by hash) that fit the z-norm + PCA
    seed: int = 0
    workers: int = 1  # local backend: processes per shard

    def validate(self) -> None:
        if not 0 < self.fit_fraction <= 1:
            raise ParamsError(f"features_smile.fit_fraction: {self.fit_fraction!r}, expected in (0, 1]")
        for key in ("n_components", "workers"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise ParamsError(f"features_smile.{key}: {getattr(self, key)!r}, expected an integer >= 1")


# ---- the fit set ---------------------------------------------------------------------------------------

def in_fit_subset(music_id: str, seed: int, fraction: float) -> bool:
    """A stable coin flip per id: the same ids are chosen on every machine and run."""
    h = int.from_bytes(hashlib.sha256(f"{seed}:{music_id}".encode()).digest()[:8], "big")
    return h / 2**64 < fraction


def fit_music(pairs: pd.DataFrame, split: pd.DataFrame | None, seed: int, fraction: float) -> set[str]:
    """The music whose functionals fit the z-norm and PCA, which must not see test music.

    The split is built later (from these features), so: the music of the source's own UGC training pairs
    when it ships a split (`split`: video_id, split); otherwise the music of UGC pairs whose id falls in a
    deterministic `fraction` by hash of (seed, id). The strong split is drawn later and independently, so
    some of its test music may be in that subset: what leaks is only unsupervised per-functional
    statistics, never a pairing (the stage writes fit_ids.txt for audit).
    """
    ugc = pairs[pairs["kind"] == "ugc"]
    if split is not None:
        return set(ugc.loc[ugc["video_id"].isin(split.loc[split["split"] == "train", "video_id"]), "music_id"])
    return {m for m in ugc["music_id"].unique() if in_fit_subset(str(m), seed, fraction)}


def project_on_fit_set(ids: list[str], functionals: np.ndarray, fit: set[str], n_components: int = PCA_DIM,
                       whiten: bool = False) -> tuple[np.ndarray, list[str], "SmilePCA"]:
    """(float32 [N, n_components] music_smile, the fit ids used, the fitted SmilePCA): z-norm + PCA fitted on
    the rows whose id is in `fit`, applied to every row."""
    fit_ids = [m for m in ids if m in fit]
    if len(fit_ids) < 2:
        raise DataError(f"openSMILE fit set: {len(fit_ids)} music clip(s) with functionals; expected >= 2 "
                        "(raise features_smile.fit_fraction)")
    rows = [i for i, m in enumerate(ids) if m in fit]
    pca = SmilePCA(n_components=n_components, whiten=whiten).fit(functionals[rows])
    return pca.transform(functionals), fit_ids, pca


# ---- z-normalisation + PCA -----------------------------------------------------------------------------

def _check_matrix(X: np.ndarray, what: str, n_features: int | None = None) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2:
        raise DataError(f"{what}: expected a 2-d matrix [clips, functionals], got shape {X.shape}")
    if n_features is not None and X.shape[1] != n_features:
        raise DataError(f"{what}: {X.shape[1]} columns, expected {n_features} (the fitted functionals)")
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        raise DataError(f"{what}: row {int(np.flatnonzero(bad)[0])} holds NaN or inf")
    return X.astype(np.float64)


@dataclass
class SmilePCA:
    """z-normalise each functional with training statistics, then project on the training PCA.

    Fitted on training music only, so no statistic of validation or test music leaks into the
    features. Fewer training rows than `n_components`: the centred training matrix has rank at most
    n_train - 1, so only k = min(n_components, n_train - 1, n_features) components are fitted and the
    remaining output columns are zero (the output keeps its n_components width for downstream shapes).
    A functional that is constant on the training music (std <= 1e-6 |mean| + 1e-12) is scaled by 1.
    """

    n_components: int = PCA_DIM
    whiten: bool = False  # divide each component by its training standard deviation
    mean: np.ndarray | None = field(default=None, repr=False)  # [F] z-normalisation mean
    scale: np.ndarray | None = field(default=None, repr=False)  # [F] z-normalisation std
    pca_mean: np.ndarray | None = field(default=None, repr=False)  # [F] of the z-scores (~0 on train)
    components: np.ndarray | None = field(default=None, repr=False)  # [k, F]
    explained_variance: np.ndarray | None = field(default=None, repr=False)  # [k]

    def zscore(self, X: np.ndarray) -> np.ndarray:
        self._require_fitted()
        X = _check_matrix(X, "SmilePCA input", self.mean.size)
        return (X - self.mean) / self.scale

    def fit(self, X_train: np.ndarray) -> "SmilePCA":
        from sklearn.decomposition import PCA

        if not isinstance(self.n_components, int) or self.n_components < 1:
            raise ParamsError(f"features_smile.n_components: {self.n_components!r}, expected an integer >= 1")
        X = _check_matrix(X_train, "SmilePCA training functionals")
        if X.shape[0] < 2:
            raise DataError(f"SmilePCA training functionals: {X.shape[0]} row(s), expected at least 2 training clips")
        self.mean = X.mean(axis=0)
        std = X.std(axis=0)
        self.scale = np.where(std <= 1e-6 * np.abs(self.mean) + 1e-12, 1.0, std)
        k = min(self.n_components, X.shape[0] - 1, X.shape[1])
        if k < self.n_components:
            log.warning("SmilePCA: %d training clips give %d components; columns %d..%d are zero",
                        X.shape[0], k, k, self.n_components - 1)
        pca = PCA(n_components=k, svd_solver="full").fit((X - self.mean) / self.scale)
        self.pca_mean, self.components = pca.mean_, pca.components_
        self.explained_variance = pca.explained_variance_
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """float32 [N, n_components]: z-scores with training stats projected on the training components."""
        z = self.zscore(X)
        out = np.zeros((z.shape[0], self.n_components))
        k = self.components.shape[0]
        out[:, :k] = (z - self.pca_mean) @ self.components.T  # sklearn's PCA.transform, written out
        if self.whiten:
            out[:, :k] /= np.sqrt(np.maximum(self.explained_variance, 1e-12))
        return out.astype(np.float32)

    def fit_transform(self, X_train: np.ndarray) -> np.ndarray:
        return self.fit(X_train).transform(X_train)

    def save(self, path: str | Path) -> None:
        """A .npz whose bytes depend only on the fit (fixed zip timestamps), written atomically."""
        self._require_fitted()
        arrays = {"mean": self.mean, "scale": self.scale, "pca_mean": self.pca_mean,
                  "components": self.components, "explained_variance": self.explained_variance,
                  "n_components": np.array(self.n_components), "whiten": np.array(self.whiten)}
        with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, array in arrays.items():
                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.ascontiguousarray(array), allow_pickle=False)
                zf.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buf.getvalue(),
                            compress_type=zipfile.ZIP_DEFLATED)

    @classmethod
    def load(cls, path: str | Path) -> "SmilePCA":
        try:
            with np.load(path, allow_pickle=False) as f:
                d = {k: f[k] for k in f.files}
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise DataError(f"{path}: cannot read a SmilePCA file ({e})") from None
        need = {"mean", "scale", "pca_mean", "components", "explained_variance", "n_components", "whiten"}
        if need - set(d):
            raise DataError(f"{path}: missing array(s) {sorted(need - set(d))}; expected a SmilePCA.save file")
        return cls(n_components=int(d["n_components"].item()), whiten=bool(d["whiten"].item()), mean=d["mean"],
                   scale=d["scale"], pca_mean=d["pca_mean"], components=d["components"],
                   explained_variance=d["explained_variance"])

    def _require_fitted(self) -> None:
        if self.components is None:
            raise DataError("SmilePCA: not fitted; call fit(X_train) on training music first")
