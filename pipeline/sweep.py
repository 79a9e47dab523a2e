"""The student's teacher-transfer weight, swept on validation: one row per `student.kl_weight`.

`kl_sweep` trains the student on every scheme x seed for each weight (temporary folders; the teachers are
reused) and keeps each run's best validation Recall@val_k, the score early stopping already selects on.
The test sets are never looked at, so the sweep can choose the weight without touching what `evaluate`
reports. The `sweep` stage writes the table to reports/kl_sweep.csv; `python -m pipeline.sweep 0 1 10 40`
prints the same rows as JSON lines for a quick look outside DVC.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from pipeline.errors import ParamsError
from pipeline.experiment import RunsConfig, skipped, train_run
from pipeline.models.baselines import BaselineParams
from pipeline.models.debcm import DebCMConfig
from pipeline.sampling.dataset import Dataset
from pipeline.data.features import Features
from pipeline.training.parallel import map_runs

log = logging.getLogger(__name__)


def check_kl_weights(weights: Sequence[float]) -> tuple[float, ...]:
    """The weights as floats; a ParamsError unless they are distinct and >= 0 (params key sweep.kl_weights)."""
    weights = tuple(float(w) for w in weights)
    if len(set(weights)) != len(weights) or (weights and min(weights) < 0):
        raise ParamsError(f"sweep.kl_weights: {list(weights)}; expected distinct values >= 0 (empty: no sweep)")
    return weights


@dataclasses.dataclass
class SweepParams:
    """The `sweep` params group: the KL weights to train the student at, and the schemes to train on."""

    kl_weights: tuple[float, ...] = (0.0, 0.1, 1.0, 4.0, 10.0, 40.0, 100.0, 400.0)
    schemes: tuple[str, ...] = ("weak", "strong")  # those the dataset has; none of them (or empty): train.schemes

    def __post_init__(self) -> None:
        self.schemes = tuple(str(s) for s in self.schemes)

    def validate(self) -> None:
        self.kl_weights = check_kl_weights(self.kl_weights)


def sweep_row(weight: float, scores: dict[str, float], schemes: Sequence[str]) -> dict[str, float]:
    """One sweep row from {run name `<scheme>_s<seed>`: best validation score}: the mean over every run, the
    seed spread (sample std over seeds of each seed's mean over the schemes; 0 for one seed), then the mean
    per scheme (`val_<scheme>`)."""
    parsed = [(run.rsplit("_s", 1), float(v)) for run, v in scores.items()]
    by_seed: dict[str, list[float]] = {}
    for (_, seed), v in parsed:
        by_seed.setdefault(seed, []).append(v)
    seed_means = np.array([np.mean(v) for _, v in sorted(by_seed.items())], dtype=np.float64)
    row = {"kl_weight": float(weight), "val_recall": float(np.mean([v for _, v in parsed])),
           "val_recall_std": float(seed_means.std(ddof=1)) if len(seed_means) > 1 else 0.0}
    for scheme in schemes:
        row[f"val_{scheme}"] = float(np.mean([v for (sch, _), v in parsed if sch == scheme]))
    return row


def kl_sweep(features: Features, dataset: Dataset, student: DebCMConfig, runs: RunsConfig,
             weights: Sequence[float], teacher_dir: Path) -> pd.DataFrame:
    """Validation score of the student for each KL weight (rows sorted by weight)."""
    weights = sorted(check_kl_weights(weights))
    schemes = runs.schemes_of(dataset)
    no_teacher = skipped(teacher_dir / "summary.json")
    if no_teacher and any(w > 0 for w in weights):
        log.warning("sweep: kl_weight > 0 skipped: %s", no_teacher)
        weights = [w for w in weights if w == 0]
    rows = []
    if not weights:
        log.info("sweep: sweep.kl_weights is empty; no student is retrained")
    # every weight's runs in one pool of processes (pipeline.training.parallel): the same runs train_variant
    # would make for each weight, without a pool per weight
    tasks = [(weight, scheme, seed) for weight in weights for scheme in schemes for seed in runs.seeds]
    with tempfile.TemporaryDirectory(prefix="kl_sweep.") as tmp:
        shared = dict(name="student", features=features, dataset=dataset, student=student, runs=runs,
                      out_dir=Path(tmp) / "models", work_dir=Path(tmp) / "work", teacher_dir=Path(teacher_dir),
                      live_dir=None, params=BaselineParams())
        done = map_runs(_sweep_run, tasks, shared, runs.loop.threads, runs.workers, desc="kl sweep")
    for weight in weights:
        scores = {run: summary["best_score"] for w, run, summary in done if w == weight}
        rows.append(sweep_row(weight, scores, schemes))
        log.info("kl_weight %g: validation recall %.4f", weight, rows[-1]["val_recall"])
    columns = ["kl_weight", "val_recall", "val_recall_std", *[f"val_{s}" for s in schemes]]
    return pd.DataFrame(rows, columns=columns)


def _sweep_run(shared: dict, weight: float, scheme: str, seed: int) -> tuple[float, str, dict]:
    """One student run at `weight` (kl_weight 0 needs no teacher: the no-teacher student), in its own folders."""
    run = dict(shared, student=dataclasses.replace(shared["student"], kl_weight=weight),
               teacher_dir=shared["teacher_dir"] if weight > 0 else None,
               out_dir=shared["out_dir"] / f"kl_{weight:g}", work_dir=shared["work_dir"] / f"kl_{weight:g}")
    return (weight, *train_run(run, scheme, seed))


def main(argv=None) -> None:
    from pipeline.config import from_group, load_params
    from pipeline.sampling.dataset import load_dataset
    from pipeline.data.features import load_features

    ap = argparse.ArgumentParser(description="Validation score of the student for each kl_weight (JSON lines).")
    ap.add_argument("kl_weights", nargs="+", type=float)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--schemes", nargs="*", default=None, help="limit to these schemes (default: train.schemes)")
    args = ap.parse_args(argv)
    logging.basicConfig(level="WARNING")
    params = load_params(args.params)
    student = from_group(DebCMConfig, params.get("student"), "student")
    runs = from_group(RunsConfig, params.get("train"), "train")
    if args.schemes:
        runs = dataclasses.replace(runs, schemes=tuple(args.schemes))
    table = kl_sweep(load_features("data/features"), load_dataset("data/dataset"), student, runs,
                     args.kl_weights, Path("models/teacher"))
    for row in table.to_dict(orient="records"):
        print(json.dumps({k: round(v, 4) for k, v in row.items()}), flush=True)


if __name__ == "__main__":
    main()
