"""Stage `evaluate`: every variant (student, baselines) on every test set of its own scheme, every K, sampled
and full ranking, and on the simulated world the truth metrics; mean and std over the training seeds.

Writes metrics/<variant>.json ({"mean": {...}, "std": {...}}, flat keys `<set>/<protocol>/<metric>@K`),
plots/<metric>/<set>_<protocol>.csv (K vs the seed-mean metric, one column per variant: one plot per
file for `dvc plots`) and reports/seeds.json (every seed's metrics); the `report` stage turns these into
tables, the claim table and figures.
"""
import logging
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import from_group
from pipeline.evaluate import evaluate_runs, load_truth, write_plots
from pipeline.experiment import RunsConfig, load_runs, variant_dir
from pipeline.io import write_json
from pipeline.models.baselines import VARIANTS
from pipeline.report import aggregate
from pipeline.sampling.dataset import load_dataset
from pipeline.train import load_features
from pipeline.errors import ParamsError
from stages.common import group, setup

TRUTH = Path("data/raw/truth")
log = logging.getLogger("stages.evaluate")


@dataclass
class EvaluateParams:
    ks: tuple[int, ...] = (10, 15, 20, 25)

    def __post_init__(self) -> None:
        self.ks = tuple(int(k) for k in self.ks)

    def validate(self) -> None:
        if not self.ks or min(self.ks) < 1:
            raise ParamsError(f"evaluate.ks: {list(self.ks)}, expected positive integers")


def main() -> None:
    p = from_group(EvaluateParams, setup("evaluate"), "evaluate")
    runs = from_group(RunsConfig, group("train"), "train")
    features, dataset = load_features("data/features"), load_dataset("data/dataset")
    truth = None
    if TRUTH.exists():  # a simulated world: score against the true compatibility too
        truth = load_truth(TRUTH, dataset.video_ids, dataset.music_ids)
    else:
        log.info("%s: absent (not a simulated world); truth metrics skipped", TRUTH)
    schemes = runs.schemes_of(dataset)
    summary, seeds = {}, {}
    for name in VARIANTS:
        models = load_runs(variant_dir(name), schemes, runs.seeds)
        per_seed = evaluate_runs(models, features, dataset, truth, p.ks)
        seeds[name] = {str(s): m for s, m in sorted(per_seed.items())}
        summary[name] = aggregate(per_seed)
        write_json(summary[name], Path("metrics") / f"{name}.json")
    write_plots({name: summary[name]["mean"] for name in VARIANTS}, "plots")
    write_json(seeds, Path("reports/seeds.json"))
    log.info("evaluate: %d variants x %d schemes x %d seeds -> metrics/, plots/, reports/seeds.json",
             len(VARIANTS), len(schemes), len(runs.seeds))


if __name__ == "__main__":
    main()
