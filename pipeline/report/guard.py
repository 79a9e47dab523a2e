"""A guard a practitioner can read without truth (docs/architecture.md section 10): is the PGC teacher any good
on UGC, and how far
do PGC inputs sit from UGC inputs?

A biased or style-shifted professional set drags the student below plain CMVAE while nothing else in the
pipeline shows it (measured on a release: truth precision@15 0.317 vs 0.785). Two truth-free readings:
the teacher's Recall@K on the scheme's UGC validation set against the UGC-only reference model's (both on
the same videos and candidates) under each truth-free criterion, the warning under report.guard_criterion; and per video modality a domain classifier's cross-validated AUC
separating PGC from UGC videos (0.5: indistinguishable; 1: disjoint); scikit-learn's logistic regression.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pipeline.data.features import Features
from pipeline.experiment import model_path, teacher_path
from pipeline.models.registry import load_model
from pipeline.sampling.dataset import Dataset
from pipeline.training.data import build_train_data
from pipeline.training.loop import criteria_scores

log = logging.getLogger(__name__)
MAX_ROWS = 2000  # per domain, for the classifier (a subsample drawn with a fixed seed)


def domain_auc(a: np.ndarray, b: np.ndarray, seed: int = 0) -> float:
    """5-fold cross-validated ROC AUC of a logistic regression telling rows of `a` from rows of `b`
    (standardised; at most MAX_ROWS of each); NaN when either side has fewer than 10 rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(a) < 10 or len(b) < 10:
        return float("nan")
    rng = np.random.default_rng(seed)
    a = a[np.sort(rng.permutation(len(a))[:MAX_ROWS])]
    b = b[np.sort(rng.permutation(len(b))[:MAX_ROWS])]
    x = np.vstack([a, b]).astype(np.float64)
    y = np.r_[np.zeros(len(a)), np.ones(len(b))]
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    return float(np.mean(cross_val_score(clf, x, y, cv=5, scoring="roc_auc")))


def teacher_guard(dataset: Dataset, features: Features, models: Path, scheme: str, seeds, k: int,
                  reference: str = "cmvae", criterion: str = "diverse") -> dict:
    """{teacher_val, reference, reference_val, criterion, teacher: {criterion: Recall}, reference_scores: {...},
    domain_auc: {modality: auc}, warning} (means over seeds); {} without PGC or trained teachers.

    The teacher and the reference are scored under every truth-free criterion (training.loop.criteria_scores);
    the warning compares them under `criterion` (report.guard_criterion). Plain validation (`val`) holds the
    uploaders' confounded choices, which a teacher trained elsewhere cannot match even when it ranks the truth
    better: in science v2 it warned in all six cells, clean ones included. `diverse` (the high-entropy
    uploaders' videos) ordered teacher and reference as the truth did in all six cells; that default was chosen
    after seeing those cells (post hoc, reports/findings.md section 0)."""
    # the teacher_alone variant's models when it ran (they carry train.teacher_scaling, as the student's teacher
    # does), else the teachers as trained
    teachers = [model_path(models / "baselines" / "teacher_alone", scheme, s) for s in seeds]
    if not all(p.exists() for p in teachers):
        teachers = [teacher_path(models / "teacher", s) for s in seeds]
    if dataset.pgc.empty or not all(p.exists() for p in teachers):
        return {}
    data = build_train_data(features, dataset, scheme)
    teacher = mean_scores([criteria_scores(load_model(p), data, k) for p in teachers])
    crit = criterion if criterion in teacher else "val"  # a source without uploaders has only `val`
    out = {"scheme": scheme, "criterion": crit, "teacher": teacher, "teacher_val": teacher[crit]}
    ref = [model_path(models / "baselines" / reference, scheme, s) for s in seeds]
    if all(p.exists() for p in ref):
        scores = mean_scores([criteria_scores(load_model(p), data, k) for p in ref])
        out.update(reference=reference, reference_scores=scores, reference_val=scores[crit])
    ugc_ids = dataset.split(scheme).query("split == 'train'")["video_id"].tolist()
    pgc_ids = dataset.pgc["video_id"].tolist()
    ugc_rows, pgc_rows = features.video_rows(ugc_ids, "UGC training videos"), features.video_rows(pgc_ids, "PGC videos")
    aucs = {"visual": domain_auc(features.visual[pgc_rows].numpy(), features.visual[ugc_rows].numpy())}
    if features.text is not None:
        mask_u, mask_p = features.text_mask[ugc_rows].numpy(), features.text_mask[pgc_rows].numpy()
        aucs["text"] = domain_auc(features.text[pgc_rows].numpy()[mask_p], features.text[ugc_rows].numpy()[mask_u])
    out["domain_auc"] = aucs
    out["warning"] = guard_warning(out, k)
    if out["warning"]:
        log.warning("%s", out["warning"])
    return out


def mean_scores(runs: list[dict[str, float]]) -> dict[str, float]:
    """{criterion: mean over runs} of criteria_scores dicts (the criteria every run has)."""
    keys = sorted(set.intersection(*(set(r) for r in runs))) if runs else []
    return {c: float(np.mean([r[c] for r in runs])) for c in keys}


def guard_warning(guard: dict, k: int) -> str | None:
    """The one-line warning when the teacher scores below the reference under the guard's criterion."""
    if "reference_val" not in guard or guard["teacher_val"] >= guard["reference_val"]:
        return None
    crit = guard.get("criterion", "val")
    return (f"⚠ the PGC teacher is worse than the UGC-only {guard['reference']} on UGC validation ({crit} "
            f"Recall@{k} {guard['teacher_val']:.4f} vs {guard['reference_val']:.4f}; PGC vs UGC visual domain AUC "
            f"{guard['domain_auc'].get('visual', float('nan')):.2f}): the professional set may be biased or look "
            "different, and the student it guides may fall below plain CMVAE.")


def guard_md(guard: dict, k: int) -> str:
    if not guard:
        return "## Teacher guard\n\nNo PGC teacher on this source: nothing to check.\n"
    crit = guard.get("criterion", "val")
    lines = ["## Teacher guard (truth-free, docs/architecture.md section 10)\n",
             guard["warning"] or f"The PGC teacher is at least as good as the UGC-only model on UGC validation "
                                 f"({crit} Recall@{k}).",
             "", f"| reading | value |", "|---|---|",
             f"| teacher's {crit} Recall@{k} on {guard['scheme']} UGC validation (mean over seeds; the warning's "
             f"criterion) | {guard['teacher_val']:.4f} |"]
    if "reference_val" in guard:
        lines.append(f"| {guard['reference']}'s {crit} Recall@{k} there | {guard['reference_val']:.4f} |")
    for other in sorted(set(guard.get("teacher", {})) - {crit}):
        ref = guard.get("reference_scores", {}).get(other)
        lines.append(f"| teacher / {guard.get('reference', 'reference')} under {other} Recall@{k} (not the warning's) | "
                     f"{guard['teacher'][other]:.4f} / " + (f"{ref:.4f}" if ref is not None else "–") + " |")
    for modality, auc in guard["domain_auc"].items():
        lines.append(f"| PGC vs UGC {modality} features: domain classifier AUC (0.5 = alike) | {auc:.3f} |")
    return "\n".join(lines) + "\n"
