"""Signal check of the extracted features: linear probes (scikit-learn) that predict the simulated world's
latents from them, scored by seeded K-fold cross-validation against the chance level.

Evaluation-side code: it reads the world's truth (latents), which training never does. A regression in an
extractor shows as a drop in `metrics/features.json` under `dvc metrics diff`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from pipeline.errors import DataError, ParamsError

log = logging.getLogger(__name__)


@dataclass
class ProbeConfig:
    folds: int = 5
    seed: int = 0
    c: float = 1.0  # inverse L2 strength of the logistic probes
    alpha: float = 10.0  # L2 strength of the ridge probes

    def validate(self) -> None:
        if self.folds < 2:
            raise ParamsError(f"probe.folds: {self.folds}, expected >= 2")
        if self.c <= 0 or self.alpha < 0:
            raise ParamsError(f"probe: c={self.c} must be > 0 and alpha={self.alpha} >= 0")


def _aligned(x: np.ndarray, ids: list[str], target: pd.Series, where: str) -> tuple[np.ndarray, np.ndarray]:
    missing = [i for i in ids if i not in target.index]
    if missing:
        raise DataError(f"{where}: id {missing[0]!r} has no latent in the truth tables")
    return x, target.loc[ids].to_numpy()


def classification_probe(x: np.ndarray, y: np.ndarray, cfg: ProbeConfig) -> dict[str, float]:
    """Cross-validated accuracy of a standardised logistic regression, and the majority-class accuracy."""
    classes, counts = np.unique(y, return_counts=True)
    folds = min(cfg.folds, int(counts.min()))
    if len(classes) < 2 or folds < 2:
        raise DataError(f"classification probe: {len(classes)} classes, smallest has {counts.min()} rows; "
                        "need two classes with two rows each")
    model = make_pipeline(StandardScaler(), LogisticRegression(C=cfg.c, max_iter=2000))
    cv = StratifiedKFold(folds, shuffle=True, random_state=cfg.seed)
    acc = cross_val_score(model, x, y, cv=cv, scoring="accuracy")
    return {"accuracy": float(acc.mean()), "chance": float(counts.max() / counts.sum()), "folds": folds}


def regression_probe(x: np.ndarray, y: np.ndarray, cfg: ProbeConfig) -> dict[str, float]:
    """Cross-validated R^2 of a standardised ridge regression (chance: 0, predicting the mean)."""
    if len(y) < 2 * cfg.folds:
        raise DataError(f"regression probe: {len(y)} rows are too few for {cfg.folds} folds")
    model = make_pipeline(StandardScaler(), Ridge(alpha=cfg.alpha))
    r2 = cross_val_score(model, x, y.astype(np.float64), cv=KFold(cfg.folds, shuffle=True, random_state=cfg.seed),
                         scoring="r2")
    return {"r2": float(r2.mean()), "chance": 0.0, "folds": cfg.folds}


def probe_features(matrices: dict[str, tuple[np.ndarray, list[str]]], music: pd.DataFrame, videos: pd.DataFrame,
                   cfg: ProbeConfig) -> dict[str, dict[str, float]]:
    """Probe scores: music genre from each music matrix, video scene / energy / valence from the visual one.

    `matrices`: name -> (matrix, row ids), names starting with `music_` or `video_`; `music` and `videos`: the
    truth latents (music_id, genre, energy, valence / video_id, scene, energy, valence).
    """
    cfg.validate()
    m, v = music.set_index("music_id"), videos.set_index("video_id")
    out: dict[str, dict[str, float]] = {}
    for name, (x, ids) in sorted(matrices.items()):
        if name.startswith("music_"):
            table, targets = m, (("genre", classification_probe), ("energy", regression_probe),
                                 ("valence", regression_probe))
        elif name.startswith("video_"):
            table, targets = v, (("scene", classification_probe), ("energy", regression_probe),
                                 ("valence", regression_probe))
        else:
            raise DataError(f"probe: matrix {name!r} is neither music_* nor video_*")
        for latent, probe in targets:
            xs, y = _aligned(x, ids, table[latent], name)
            try:
                out[f"{name}/{latent}"] = probe(xs, y, cfg)
            except DataError as e:  # a world too small to cross-validate (tests' tiny worlds): say so
                out[f"{name}/{latent}"] = {"skipped": str(e)}
        log.info("probe %s: %s", name, {k: s for k, s in out.items() if k.startswith(name)})
    return out
