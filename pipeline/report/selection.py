"""Truth-free selection, judged against the truth (docs/architecture.md section 10): which `student.kl_weight`
(and early-stopping
epoch) each criterion would pick from the sweep, and what that choice costs in truth NDCG@K.

The sweep (pipeline/sweep.py) trained the student at each weight and kept, per run, the best state under each
criterion (val, ips, diverse: training.config.CRITERIA) without looking at test sets or truth. Here, on a
source with truth, every kept model is scored on its own scheme's test set: a criterion's choice is the
weight with its best mean validation column, its regret the truth NDCG@K of the truth-best weight (under the
same criterion's checkpoints) minus that of the chosen one. Without truth the table still lists the choices.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.data.features import Features
from pipeline.evaluate import Truth, evaluate_model
from pipeline.models.registry import load_model
from pipeline.sampling.dataset import Dataset
from pipeline.sweep import criterion_column, weight_dir
from pipeline.training.config import CRITERIA

log = logging.getLogger(__name__)


def truth_of_kept(models: Path, weights, dataset: Dataset, features: Features, truth: Truth, k: int
                  ) -> pd.DataFrame:
    """kl_weight, criterion, run, truth NDCG@k on the run's scheme test set, for every kept sweep model."""
    rows = []
    for weight in weights:
        for criterion in CRITERIA:
            for path in sorted((models / weight_dir(weight) / criterion).glob("*_s*.pt")):
                scheme = path.stem.rsplit("_s", 1)[0]
                flat, _ = evaluate_model(load_model(path), features, dataset, truth, ks=[k], sets=[scheme])
                rows.append({"kl_weight": float(weight), "criterion": criterion, "run": path.stem,
                             "truth_ndcg": flat[f"{scheme}/truth/ndcg@{k}"]})
    return pd.DataFrame(rows, columns=["kl_weight", "criterion", "run", "truth_ndcg"])


def selection_table(sweep: pd.DataFrame, scored: pd.DataFrame | None) -> pd.DataFrame:
    """One row per criterion: the weight it picks (argmax of its sweep column; the smaller weight on a tie),
    and with `scored` its truth NDCG, the truth-best weight, that weight's truth NDCG and the regret."""
    rows = []
    for criterion in CRITERIA:
        column = criterion_column(criterion)
        if column not in sweep.columns or sweep.empty:
            continue
        ordered = sweep.sort_values("kl_weight", kind="stable")
        chosen = float(ordered.loc[ordered[column].idxmax(), "kl_weight"])
        row = {"criterion": criterion, "chosen_kl_weight": chosen, "validation": float(ordered[column].max())}
        if scored is not None and not scored.empty:
            mine = scored[scored["criterion"] == criterion].groupby("kl_weight")["truth_ndcg"]
            means, stds = mine.mean(), mine.std(ddof=1).fillna(0.0)
            if chosen in means.index:
                best = float(means.idxmax())
                row.update(chosen_truth_ndcg=float(means[chosen]), chosen_truth_std=float(stds[chosen]),
                           best_kl_weight=best, best_truth_ndcg=float(means[best]),
                           regret=float(means[best] - means[chosen]))
        rows.append(row)
    return pd.DataFrame(rows)


def selection_md(table: pd.DataFrame, k: int, kl_weight: float | None) -> str:
    head = ["# Choosing `student.kl_weight` without truth (docs/architecture.md section 10)\n",
            "Each truth-free criterion picks the weight with its best mean validation Recall@val_k in "
            "reports/kl_sweep.csv, with early stopping by the same criterion (val: the papers' validation "
            "Recall on the uploaders' own choices; ips: each validation video weighted by the inverse propensity "
            "of its uploader's taste picking that genre; diverse: only the validation videos of the uploaders "
            "with the most even taste). "
            f"Truth NDCG@{k}: mean over the sweep's runs (± std) of the kept model on its scheme's test set; "
            "regret: the truth-best weight's truth NDCG minus the chosen weight's. "
            f"params.yaml's student.kl_weight: {kl_weight if kl_weight is not None else '–'}.\n"]
    if table.empty:
        return "\n".join(head + ["No sweep ran (sweep.kl_weights is empty), so nothing was chosen.\n"])
    has_truth = "regret" in table.columns
    lines = ["| criterion | chosen kl_weight | its validation Recall | " +
             (f"its truth NDCG@{k} | truth-best kl_weight | its truth NDCG@{k} | regret |" if has_truth else ""),
             "|---|---|---|" + ("---|---|---|---|" if has_truth else "")]
    for r in table.to_dict(orient="records"):
        line = f"| {r['criterion']} | {r['chosen_kl_weight']:g} | {r['validation']:.4f} |"
        if has_truth and not np.isnan(r.get("regret", np.nan)):
            line += (f" {r['chosen_truth_ndcg']:.4f} ± {r['chosen_truth_std']:.4f} | {r['best_kl_weight']:g} "
                     f"| {r['best_truth_ndcg']:.4f} | {r['regret']:.4f} |")
        lines.append(line)
    if not has_truth:
        lines.append("\nNo truth on this source: the choices are shown, their regret cannot be measured.")
    return "\n".join(head + lines) + "\n"
