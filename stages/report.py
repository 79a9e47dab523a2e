"""Stage `report`: the papers' tables and the bias picture, from what `evaluate` measured.

Writes reports/tables.md (a table per test set and protocol, every variant, mean ± std over seeds),
reports/claim.md (DebCM vs CMVAE beyond the seed spread, at `report.claim_k`), and, when the dataset has
a T_diverse set: reports/genre_share.{csv,png} (the genre mix of each variant's top-K on T_diverse next
to the uploaders' training taste and, on the simulated world, the true top-K) and reports/case_study.md
(the top music of a few T_diverse videos, per model, with the truth beside them). Sweeps:
reports/intervention.csv (each variant's test Recall@claim_k against the intervention ratio) and
reports/sweeps.png (that, beside the `sweep` stage's validation Recall against student.kl_weight).
"""
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import from_group
from pipeline.data.schema import GENRES
from pipeline.errors import DataError, ParamsError
from pipeline.evaluate import load_truth
from pipeline.inference import top_music
from pipeline.experiment import RunsConfig, evaluated_variants, load_runs, metrics_path, variant_dir
from pipeline.io import atomic_path
from pipeline.models.baselines import VARIANTS, BaselineParams
from pipeline.training.data import uploader_distributions
from pipeline.report import (claim_table, genre_shares, intervention_table, plot_genre_shares, plot_sweeps,
                             set_tables, true_top)
from pipeline.sampling.dataset import Dataset, load_dataset
from pipeline.data.features import load_features
from stages.common import group, run, setup

TRUTH = Path("data/raw/truth")
LABELS = Path("data/genre/labels.parquet")
KL_SWEEP = Path("reports/kl_sweep.csv")
OUT = Path("reports")
log = logging.getLogger("stages.report")


@dataclass
class ReportParams:
    claim_k: int = 25  # K of claim.md and of the genre shares; one of evaluate.ks
    case_videos: int = 3  # T_diverse videos in case_study.md (the first by sorted id)
    case_top: int = 5  # music listed per video and model

    def validate(self) -> None:
        ks = [int(k) for k in (group("evaluate").get("ks") or (10, 15, 20, 25))]
        if self.claim_k not in ks:
            raise ParamsError(f"report.claim_k: {self.claim_k} is not one of evaluate.ks {ks}")
        for key in ("case_videos", "case_top"):
            if getattr(self, key) < 1:
                raise ParamsError(f"report.{key}: {getattr(self, key)}, expected >= 1")


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _genre_codes(dataset: Dataset, truth) -> tuple[np.ndarray, str]:
    """Per dataset music: the true genre on the simulated world, else the genre stage's label."""
    if truth is not None:
        return truth.music_genre, "true genre"
    labels = pd.read_parquet(LABELS, columns=["music_id", "genre"]).set_index("music_id")["genre"]
    missing = [m for m in dataset.music_ids if m not in labels.index]
    if missing:
        raise DataError(f"{LABELS}: music {missing[0]!r} has no genre label")
    return np.array([GENRES.index(g) for g in labels.loc[dataset.music_ids]], dtype=np.int64), "labelled genre"


def _taste(dataset: Dataset, scheme: str, video_ids: list[str]) -> np.ndarray:
    """The mean training genre distribution of these videos' uploaders (the confounder they carry)."""
    dists = dataset.uploader_dists(scheme).set_index("uploader_id")[list(GENRES)]
    uploaders = dataset.ugc.set_index("video_id").loc[video_ids, "uploader_id"]
    return dists.loc[uploaders.to_numpy()].to_numpy(dtype=np.float64).mean(axis=0)


def genre_and_cases(p: ReportParams, runs: RunsConfig, dataset: Dataset, trained: list[str]) -> None:
    scheme = dataset.info.get("intervene_scheme")
    key = f"{scheme}/diverse"
    if not scheme or key not in dataset.eval_sets:  # the declared outputs still exist, saying why they are empty
        log.info("report: the dataset has no T_diverse set; genre_share and case_study left empty")
        _write_text(OUT / "genre_share.csv", ",".join(["source", *GENRES]) + "\n")
        with atomic_path(OUT / "genre_share.png") as tmp:
            plot_genre_shares({}, GENRES, "no T_diverse set in this dataset", tmp)
        _write_text(OUT / "case_study.md", "# Case study\n\nThe dataset has no T_diverse set.\n")
        return
    features = load_features("data/features")
    truth = load_truth(TRUTH, dataset.video_ids, dataset.music_ids) if TRUTH.exists() else None
    videos = sorted(dataset.eval_sets[key].video_id)
    codes, genre_source = _genre_codes(dataset, truth)
    k = min(p.claim_k, len(dataset.music_ids))
    shares = {"uploaders' taste (training)": _taste(dataset, scheme, videos)}
    if truth is not None:
        shares[f"true top-{k}"] = genre_shares(true_top(truth.compatibility[truth.rows(videos)], k), codes, len(GENRES))
    tops, listed = {}, min(max(k, p.case_top), len(dataset.music_ids))
    genre = dataset.genre_matrix()
    for name in trained:
        models = load_runs(variant_dir(name), [scheme], runs.seeds)
        per_seed = {seed: top_music(models[(scheme, seed)], features, videos, dataset.music_ids, genre, listed,
                                    uploader_distributions(dataset, scheme, videos)) for seed in runs.seeds}
        tops[name] = per_seed[runs.seeds[0]]
        shares[name] = np.mean([genre_shares(t[:, :k], codes, len(GENRES)) for t in per_seed.values()], axis=0)
    table = pd.DataFrame([{"source": s, **dict(zip(GENRES, map(float, v)))} for s, v in shares.items()])
    with atomic_path(OUT / "genre_share.csv") as tmp:
        table.to_csv(tmp, index=False, float_format="%.6f")
    with atomic_path(OUT / "genre_share.png") as tmp:
        plot_genre_shares(shares, GENRES, f"T_diverse ({len(videos)} videos of {scheme}): {genre_source} of the "
                          f"top-{k}, mean over {len(runs.seeds)} seed(s)", tmp)

    names = {i: m for i, m in enumerate(dataset.music_ids)}
    ugc = dataset.ugc.set_index("video_id")
    lines = [f"# Case study: T_diverse of {scheme}, top-{p.case_top} music per model (seed {runs.seeds[0]})\n",
             f"Genres are the {genre_source}. The uploader's taste is its training genre distribution.\n"]
    for v in videos[:p.case_videos]:
        taste = _taste(dataset, scheme, [v])
        liked = ", ".join(f"{g} {t:.2f}" for g, t in sorted(zip(GENRES, taste), key=lambda x: -x[1])[:3])
        lines.append(f"## {v} (uploader {ugc.loc[v, 'uploader_id']}: {liked}; chosen {ugc.loc[v, 'music_id']})\n")
        lines.append("| rank | " + " | ".join([*trained, *(["truth"] if truth is not None else [])]) + " |")
        lines.append("|---|" + "---|" * (len(trained) + (truth is not None)))
        row = videos.index(v)
        columns = [tops[name][row, :p.case_top] for name in trained]
        if truth is not None:
            columns.append(true_top(truth.compatibility[truth.rows([v])], p.case_top)[0])
        for r in range(min(p.case_top, listed)):
            lines.append(f"| {r + 1} | " + " | ".join(f"{names[int(c[r])]} ({GENRES[codes[int(c[r])]]})"
                                                       for c in columns) + " |")
        lines.append("")
    _write_text(OUT / "case_study.md", "\n".join(lines))


def sweeps(p: ReportParams, summary: dict) -> None:
    inter = intervention_table(summary, p.claim_k)
    with atomic_path(OUT / "intervention.csv") as tmp:
        inter.to_csv(tmp, index=False, float_format="%.6f")
    kl = pd.read_csv(KL_SWEEP) if KL_SWEEP.exists() else None
    if kl is None:
        log.info("report: no %s (the sweep stage writes it); its panel is left empty", KL_SWEEP)
    configured = group("student").get("kl_weight")
    with atomic_path(OUT / "sweeps.png") as tmp:
        plot_sweeps(kl, inter, VARIANTS, p.claim_k, None if configured is None else float(configured), tmp)


def main() -> None:
    p = from_group(ReportParams, setup("report"), "report")
    runs = from_group(RunsConfig, group("train"), "train")
    dataset = load_dataset("data/dataset")
    variants = evaluated_variants(from_group(BaselineParams, group("baselines"), "baselines"))
    loaded = {name: json.loads(metrics_path(name).read_text()) for name in variants}
    summary = {name: m for name, m in loaded.items() if "mean" in m}
    schemes = runs.schemes_of(dataset)
    OUT.mkdir(exist_ok=True)
    _write_text(OUT / "tables.md", f"# Every variant on every test set (mean ± std over seeds {list(runs.seeds)})\n\n"
                                   f"R: weighted Recall, N: weighted NDCG, BA: bias amplification (lower is better)."
                                   f"\n\n{set_tables(summary)}")
    table = claim_table(summary, p.claim_k, len(runs.seeds))
    _write_text(OUT / "claim.md", f"# DebCM vs CMVAE (K = {p.claim_k}, schemes {schemes})\n\n{table}")
    log.info("claim table:\n%s", table)
    sweeps(p, summary)
    genre_and_cases(p, runs, dataset, list(summary))


if __name__ == "__main__":
    run(main)
