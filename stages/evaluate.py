"""Stage `evaluate`: every variant (student, baselines) on every test set of its own scheme, every K, sampled
and full ranking, and on the simulated world the truth metrics; mean and std over the training seeds.

Writes metrics/<variant>.json ({"mean": {...}, "std": {...}}, flat keys `<set>/<protocol>/<metric>@K`),
plots/<metric>/<set>_<protocol>.csv (K vs the seed-mean metric, one column per variant: one plot per
file for `dvc plots`), reports/seeds.json (every seed's metrics) and
reports/claim.md (the DebCM-vs-CMVAE table).
"""
import logging
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import from_group
from pipeline.evaluate import evaluate_runs, load_truth, write_plots
from pipeline.experiment import RunsConfig, load_runs
from pipeline.io import atomic_path, write_json
from pipeline.models.baselines import VARIANTS
from pipeline.report import aggregate, claim_table
from pipeline.sampling.dataset import load_dataset
from pipeline.train import load_features
from pipeline.errors import ParamsError
from stages.common import group, setup

TRUTH = Path("data/raw/truth")
log = logging.getLogger("stages.evaluate")


@dataclass
class EvaluateParams:
    ks: tuple[int, ...] = (10, 15, 20, 25)
    claim_k: int = 25  # the K of reports/claim.md

    def __post_init__(self) -> None:
        self.ks = tuple(int(k) for k in self.ks)

    def validate(self) -> None:
        if not self.ks or min(self.ks) < 1:
            raise ParamsError(f"evaluate.ks: {list(self.ks)}, expected positive integers")
        if self.claim_k not in self.ks:
            raise ParamsError(f"evaluate.claim_k: {self.claim_k} is not one of evaluate.ks {list(self.ks)}")


def model_dir(name: str) -> Path:
    return Path("models") / name if name == "student" else Path("models/baselines") / name


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
        models = load_runs(model_dir(name), schemes, runs.seeds)
        per_seed = evaluate_runs(models, features, dataset, truth, p.ks)
        seeds[name] = {str(s): m for s, m in sorted(per_seed.items())}
        summary[name] = aggregate(per_seed)
        write_json(summary[name], Path("metrics") / f"{name}.json")
    write_plots({name: summary[name]["mean"] for name in VARIANTS}, "plots")
    write_json(seeds, Path("reports/seeds.json"))
    table = claim_table(summary, p.claim_k, len(runs.seeds))
    with atomic_path(Path("reports/claim.md")) as tmp:
        tmp.write_text(f"# DebCM vs CMVAE (K = {p.claim_k}, schemes {schemes})\n\n{table}")
    log.info("claim table:\n%s", table)


if __name__ == "__main__":
    main()
