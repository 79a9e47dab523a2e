"""The student's teacher-transfer weight, swept on validation: one row per `student.kl_weight`, one column
per truth-free selection criterion (training.config.CRITERIA, docs/architecture.md section 10).

`kl_sweep` trains the student on every scheme x seed for each weight (the teachers are reused) and keeps
each run's best validation Recall@val_k under every criterion, and with `models_dir` the best state of each
criterion (models/sweep/kl_<w>/<criterion>/<scheme>_s<seed>.pt). The test sets and the truth are never looked
at: the sweep is where a practitioner would choose the weight (each criterion's choice is the argmax of its
column). The report then scores those models against the truth on the simulated world and tabulates each
criterion's regret (pipeline/report/selection.py). The `sweep` stage writes the table to reports/kl_sweep.csv;
`python -m pipeline.sweep 0 1 10 40` prints the same rows as JSON lines for a quick look outside DVC.
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
from pipeline.models.debcm import DebCMConfig, student_config
from pipeline.sampling.dataset import Dataset
from pipeline.data.features import Features
from pipeline.training.config import CRITERIA
from pipeline.training.parallel import map_runs

log = logging.getLogger(__name__)
# train.backend ray (pipeline.training.remote): the kept models come back; the runs' own model files are scratch
SWEEP_FOLDERS = {"models_dir": "out", "out_dir": "scratch", "work_dir": "scratch", "live_dir": "out",
                 "teacher_dir": "in"}


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


def _mean_and_seed_std(scores: dict[str, float]) -> tuple[float, float]:
    parsed = [(run.rsplit("_s", 1), float(v)) for run, v in scores.items()]
    by_seed: dict[str, list[float]] = {}
    for (_, seed), v in parsed:
        by_seed.setdefault(seed, []).append(v)
    seed_means = np.array([np.mean(v) for _, v in sorted(by_seed.items())], dtype=np.float64)
    return float(np.mean([v for _, v in parsed])), float(seed_means.std(ddof=1)) if len(seed_means) > 1 else 0.0


def criterion_column(name: str) -> str:
    """The sweep table's column of a criterion: val_recall (the papers' validation), val_ips_recall, ..."""
    return "val_recall" if name == "val" else f"val_{name}_recall"


def sweep_row(weight: float, scores: dict[str, float], schemes: Sequence[str],
              criteria: dict[str, dict[str, float]] | None = None) -> dict[str, float]:
    """One sweep row from {run name `<scheme>_s<seed>`: best validation score}: the mean over every run, the
    seed spread (sample std over seeds of each seed's mean over the schemes; 0 for one seed), the mean per
    scheme (`val_<scheme>`), then each other criterion's mean and spread ({criterion: {run: score}})."""
    mean, std = _mean_and_seed_std(scores)
    row = {"kl_weight": float(weight), "val_recall": mean, "val_recall_std": std}
    parsed = [(run.rsplit("_s", 1)[0], float(v)) for run, v in scores.items()]
    for scheme in schemes:
        row[f"val_{scheme}"] = float(np.mean([v for sch, v in parsed if sch == scheme]))
    for name, by_run in sorted((criteria or {}).items()):
        if name != "val" and by_run:
            row[criterion_column(name)], row[criterion_column(name) + "_std"] = _mean_and_seed_std(by_run)
    return row


def kl_sweep(features: Features, dataset: Dataset, student: DebCMConfig, runs: RunsConfig,
             weights: Sequence[float], teacher_dir: Path, models_dir: Path | None = None) -> pd.DataFrame:
    """Validation score of the student for each KL weight (rows sorted by weight), under every criterion;
    `models_dir`: where each criterion's best state of each run is kept (else nothing is kept)."""
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
                      live_dir=None, params=BaselineParams(), models_dir=models_dir)
        done = map_runs(_sweep_run, tasks, shared, runs.loop.threads, runs.workers, desc="kl sweep",
                        folders=SWEEP_FOLDERS, **runs.dispatch())
    for weight in weights:
        # each criterion's best over epochs (the val column: today's early-stopping score, as before)
        mine = [(run, summary) for w, run, summary in done if w == weight]
        criteria = {c: {run: s["selection"][c]["best_score"] for run, s in mine if c in s.get("selection", {})}
                    for c in CRITERIA}
        rows.append(sweep_row(weight, criteria["val"], schemes, criteria))
        log.info("kl_weight %g: validation recall %.4f", weight, rows[-1]["val_recall"])
    columns = ["kl_weight", "val_recall", "val_recall_std", *[f"val_{s}" for s in schemes]]
    columns += [c for c in (rows[0] if rows else {}) if c not in columns]
    return pd.DataFrame(rows, columns=columns)


def weight_dir(weight: float) -> str:
    """models/sweep/<this>/: one folder per KL weight."""
    return f"kl_{weight:g}"


def _sweep_run(shared: dict, weight: float, scheme: str, seed: int) -> tuple[float, str, dict]:
    """One student run at `weight` (kl_weight 0 needs no teacher: the no-teacher student), in its own folders."""
    kept = shared.get("models_dir")
    run = dict(shared, student=dataclasses.replace(shared["student"], kl_weight=weight),
               teacher_dir=shared["teacher_dir"] if weight > 0 else None,
               out_dir=shared["out_dir"] / f"kl_{weight:g}", work_dir=shared["work_dir"] / f"kl_{weight:g}",
               criteria_dir=None if kept is None else Path(kept) / weight_dir(weight))
    return (weight, *train_run(run, scheme, seed))


def main(argv=None) -> None:
    from pipeline.config import from_group, load_params
    from pipeline.sampling.dataset import load_dataset
    from pipeline.data.features import load_features
    from pipeline.truth import forbid_truth_reads

    ap = argparse.ArgumentParser(description="Validation score of the student for each kl_weight (JSON lines).")
    ap.add_argument("kl_weights", nargs="+", type=float)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--schemes", nargs="*", default=None, help="limit to these schemes (default: train.schemes)")
    args = ap.parse_args(argv)
    logging.basicConfig(level="WARNING")
    forbid_truth_reads()  # it trains, as the sweep stage does: the simulated world's truth stays unread
    params = load_params(args.params)
    student = student_config(params.get)
    runs = from_group(RunsConfig, params.get("train"), "train")
    if args.schemes:
        runs = dataclasses.replace(runs, schemes=tuple(args.schemes))
    table = kl_sweep(load_features("data/features"), load_dataset("data/dataset"), student, runs,
                     args.kl_weights, Path("models/teacher"))
    for row in table.to_dict(orient="records"):
        print(json.dumps({k: round(v, 4) for k, v in row.items()}), flush=True)


if __name__ == "__main__":
    main()
