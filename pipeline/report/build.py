"""The report stage's work: read evaluate's per-video table and split's info, write every report file.

reports/claim.md (paired verdicts), reports/tables.md (the papers' layouts and every set and protocol),
reports/degradations.md (what was skipped and why), metrics/headline.json (the numbers DVC tracks),
reports/intervention.csv and sweeps.png, and from the models: genre_share.csv / .png and case_study.md.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd

from pipeline.errors import ParamsError
from pipeline.evaluate import eval_set_names, load_truth
from pipeline.io import atomic_path, write_json
from pipeline.report.cases import genre_and_cases
from pipeline.report.claim import claim_keys, claim_rows, claim_table, confirmatory_key, headline, parse_contrast
from pipeline.report.degrade import degradations
from pipeline.report.figures import plot_sweeps
from pipeline.report.pervideo import MetricKey, read_per_video, set_sizes, summarize, uses_pgc, variants_of
from pipeline.report.summary import claim_json
from pipeline.report.tables import Degeneracy, SetShape, intervention_table, tables_md
from pipeline.sampling.dataset import Dataset, load_dataset
from pipeline.truth import TRUTH_DIR

log = logging.getLogger(__name__)


@dataclass
class ReportParams:
    claim_k: int = 25  # K of claim.md, headline.json and the genre shares
    case_videos: int = 3  # T_diverse videos in case_study.md (the first by sorted id)
    case_top: int = 5  # music listed per video and model
    min_videos: int = 30  # a test set with fewer videos is marked degenerate (⚠)
    resamples: int = 9999  # of the randomisation test and the bootstrap
    seed: int = 0  # of their random draws
    # the pre-registered confirmatory family (docs/architecture.md section 10): these contrasts on these metrics at
    # claim_k, Holm over
    # them alone; every other row is exploratory. A metric is '<set>/<protocol>/<metric>' (set 'primary': the
    # intervene scheme's own test set)
    contrasts: tuple[str, ...] = ("student vs cmvae", "student vs cmvae_kl", "cmvae_kl vs cmvae",
                                  "student vs no_teacher", "no_teacher vs cmvae", "student vs linear_pgc")
    confirmatory: tuple[str, ...] = ("primary/truth/ndcg", "primary/truth/bias_amplification", "t_diverse/truth/ndcg",
                                     "t_diverse/full/recall", "t_matching/full/recall")
    # the teacher guard's criterion (pipeline/report/guard.py): val | ips | diverse (training.config.CRITERIA)
    guard_criterion: str = "diverse"

    def validate(self) -> None:
        self.contrasts, self.confirmatory = tuple(self.contrasts), tuple(self.confirmatory)
        for text in self.contrasts:
            parse_contrast(text)
        for pattern in self.confirmatory:
            confirmatory_key(MetricKey("x", "x", "x", 1), [pattern], None)
        for key in ("claim_k", "case_videos", "case_top", "min_videos"):
            if getattr(self, key) < 1:
                raise ParamsError(f"report.{key}: {getattr(self, key)}, expected >= 1")
        from pipeline.training.config import CRITERIA

        if self.guard_criterion not in CRITERIA:
            raise ParamsError(f"report.guard_criterion: {self.guard_criterion!r}, expected one of {list(CRITERIA)}")
        if self.resamples < 99:
            raise ParamsError(f"report.resamples: {self.resamples}, expected >= 99 (p-values below 0.01 need them)")


@dataclass(frozen=True)
class ReportPaths:
    """Where the stage reads and writes (the DVC layout lives in stages/report.py)."""

    per_video: Path
    dataset: Path
    raw: Path  # data/raw: its truth/ only on the simulated world
    features: Path
    labels: Path
    genre_metrics: Path
    models: Path
    kl_sweep: Path
    out: Path
    headline: Path


def check_claim_k(claim_k: int, ks: Sequence[int]) -> None:
    if claim_k not in ks:
        raise ParamsError(f"report.claim_k: {claim_k} is not one of evaluate.ks {list(ks)}; the truth metrics "
                          "exist only at those K")


def set_shapes(dataset: Dataset, sizes: dict[str, int]) -> dict[str, SetShape]:
    """Videos and candidates of each test set the per-video table scored."""
    pool = int(dataset.pool_mask().sum())
    return {name: SetShape(sizes[name], 1 + dataset.eval_sets[key].negatives.shape[1], pool)
            for name, key in eval_set_names(dataset).items() if name in sizes}


def training_summaries(models: Path) -> dict[str, dict]:
    """models/<teacher|student|baselines/*>/summary.json, by name (skipped runs say {"skipped": reason})."""
    paths = {"teacher": models / "teacher" / "summary.json", "student": models / "student" / "summary.json"}
    paths.update({p.parent.name: p for p in sorted((models / "baselines").glob("*/summary.json"))})
    return {name: json.loads(p.read_text()) for name, p in paths.items() if p.exists()}


def _text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_report(p: ReportParams, paths: ReportPaths, ks: Sequence[int], kl_weight: float | None) -> None:
    check_claim_k(p.claim_k, ks)
    per_video, dataset = read_per_video(paths.per_video), load_dataset(paths.dataset)
    primary, variants = dataset.info.get("intervene_scheme"), variants_of(per_video)
    seeds = sorted(int(s) for s in per_video["seed"].unique())
    summary, sizes = summarize(per_video, ks, primary), set_sizes(per_video)
    flags = Degeneracy(set_shapes(dataset, sizes), p.min_videos, primary)
    rows = claim_rows(per_video, claim_keys(p.claim_k, list(sizes), primary), variants, resamples=p.resamples,
                      seed=p.seed, contrasts=[parse_contrast(c) for c in p.contrasts], confirmatory=p.confirmatory,
                      primary=primary, flag=flags)
    paths.out.mkdir(parents=True, exist_ok=True)
    table = claim_table(rows, flag=flags)
    _text(paths.out / "claim.md", f"# Does each debiasing variant beat CMVAE? (K = {p.claim_k}, paired over the same "
                                  f"test videos and seeds {seeds})\n\n{table}")
    log.info("claim table:\n%s", table)
    # the student learns from the PGC teacher only when kl_weight > 0; the others as registered
    with_pgc = [v for v in variants if (kl_weight if v == "student" else uses_pgc(v))]
    _text(paths.out / "tables.md", tables_md(summary, ks, seeds, with_pgc,
                                             {(r.challenger, r.key.key): r.verdict for r in rows
                                              if r.baseline == "cmvae" and r.family == "confirmatory"}, flags))
    genre = json.loads(paths.genre_metrics.read_text()) if paths.genre_metrics.exists() else None
    _text(paths.out / "degradations.md", degradations(dataset.info, genre, training_summaries(paths.models), variants,
                                                      flags.flagged(ks, summary)))
    write_json(headline(summary, p.claim_k, list(sizes), primary), paths.headline)
    write_json(claim_json(per_video, claim_keys(p.claim_k, list(sizes), primary), variants, rows, p.resamples, p.seed),
               paths.out / "claim.json")
    inter = intervention_table(summary, p.claim_k, variants=variants)
    with atomic_path(paths.out / "intervention.csv") as tmp:
        inter.to_csv(tmp, index=False, float_format="%.6f")
    kl = pd.read_csv(paths.kl_sweep) if paths.kl_sweep.exists() else None
    if kl is None:
        log.info("report: no %s (the sweep stage writes it); its panel is left empty", paths.kl_sweep)
    with atomic_path(paths.out / "sweeps.png") as tmp:
        plot_sweeps(kl, inter, variants, p.claim_k, kl_weight, tmp)
    truth_dir = paths.raw / TRUTH_DIR
    truth = load_truth(truth_dir, dataset.video_ids, dataset.music_ids) if truth_dir.exists() else None
    genre_and_cases(paths.out, dataset, truth, variants, seeds, p.claim_k, p.case_videos, p.case_top, paths.features,
                    paths.labels, paths.models, paths.raw)
    selection_and_guard(paths, dataset, truth, kl, seeds, primary, p.claim_k, kl_weight, p.guard_criterion)


def selection_and_guard(paths: ReportPaths, dataset: Dataset, truth, sweep: pd.DataFrame | None, seeds, primary,
                        k: int, kl_weight: float | None, guard_criterion: str = "diverse") -> None:
    """reports/selection.{md,json}: each truth-free criterion's kl_weight and its regret (truth sources), and
    the teacher guard (pipeline/report/guard.py), for a reader and for the science grid's collection."""
    from pipeline.data.features import load_features
    from pipeline.report.guard import guard_md, teacher_guard
    from pipeline.report.selection import selection_md, selection_table, truth_of_kept

    features = load_features(paths.features)
    sweep = sweep if sweep is not None else pd.DataFrame()
    kept = paths.models / "sweep"
    scored = truth_of_kept(kept, sweep["kl_weight"], dataset, features, truth, k) \
        if truth is not None and kept.is_dir() and not sweep.empty else None
    table = selection_table(sweep, scored)
    scheme = primary if primary in dataset.schemes else dataset.schemes[0]
    guard = teacher_guard(dataset, features, paths.models, scheme, seeds, k, criterion=guard_criterion)
    _text(paths.out / "selection.md", selection_md(table, k, kl_weight) + "\n" + guard_md(guard, k))
    write_json({"selection": table.to_dict(orient="records"), "guard": guard}, paths.out / "selection.json")
