"""Stage `evaluate`: every variant (student, baselines) on every test set of its own scheme, every K, sampled
and full ranking, and on the simulated world the truth metrics; mean and std over the training seeds.

The variants: the student and `baselines.variants` (the `baselines` matrix). Writes
metrics/variants/<variant>.json ({"mean": {...}, "std": {...}}, flat keys `<set>/<protocol>/<metric>@K`; a
variant its training stage skipped gets {"skipped": reason}), plots/<metric>/<set>_<protocol>.csv (K vs the
seed-mean metric, one column per variant), reports/seeds.json (every seed's metrics) and
data/eval/per_video.parquet (every test video's ranks and truth metrics per variant and seed: what the
report's paired tests compare). The work is pipeline/evaluate.py's `evaluate_variants`.
"""
import logging
from pathlib import Path

from pipeline.config import from_group
from pipeline.data.features import load_features
from pipeline.evaluate import EvaluateParams, evaluate_variants, load_truth, write_plots
from pipeline.experiment import RunsConfig, evaluated_variants, metrics_dir, metrics_path
from pipeline.io import atomic_dir, write_json, write_parquet
from pipeline.models.baselines import BaselineParams
from pipeline.sampling.dataset import load_dataset
from stages.common import group, run, setup, torch_threads

TRUTH = Path("data/raw/truth")
PER_VIDEO = Path("data/eval/per_video.parquet")
log = logging.getLogger("stages.evaluate")


def main() -> None:
    p = from_group(EvaluateParams, setup("evaluate"), "evaluate")
    runs = from_group(RunsConfig, group("train"), "train")
    variants = evaluated_variants(from_group(BaselineParams, group("baselines"), "baselines"))
    torch_threads(runs.loop.threads)
    features, dataset = load_features("data/features"), load_dataset("data/dataset")
    truth = load_truth(TRUTH, dataset.video_ids, dataset.music_ids) if TRUTH.exists() else None
    if truth is None:
        log.info("%s: absent (not a simulated world); truth metrics skipped", TRUTH)
    schemes = runs.schemes_of(dataset)
    summary, seeds, per_video = evaluate_variants(variants, schemes, runs.seeds, features, dataset, truth, p.ks)
    with atomic_dir(metrics_dir()) as tmp:  # the whole folder: a variant dropped from the list leaves no file
        for name, metrics in summary.items():
            write_json(metrics, tmp / metrics_path(name).name)
    write_plots({name: s["mean"] for name, s in summary.items() if "mean" in s}, "plots")
    write_json(seeds, Path("reports/seeds.json"))
    write_parquet(per_video, PER_VIDEO)
    log.info("evaluate: %d variants x %d schemes x %d seeds -> metrics/, plots/, reports/seeds.json, %s",
             len(seeds), len(schemes), len(runs.seeds), PER_VIDEO)


if __name__ == "__main__":
    run(main)
