"""Stage `sweep`: the student's validation Recall under each truth-free criterion for each `sweep.kl_weights`
-> reports/kl_sweep.csv, and each criterion's best model of every run -> models/sweep/ (the report scores them).

Everything but kl_weight comes from the `model` and `adjustment` groups (dvc.yaml tracks them, not `student`,
whose kl_weight the sweep varies itself); runs from `train` (seeds), restricted to `sweep.schemes`. Validation
sets only (pipeline/sweep.py). `dvc plots show reports/kl_sweep.csv` draws it.
"""
import dataclasses
import logging
from pathlib import Path

from pipeline.config import from_group
from pipeline.experiment import RunsConfig
from pipeline.io import atomic_dir, atomic_path
from pipeline.models.debcm import student_config
from pipeline.sampling.dataset import load_dataset
from pipeline.sweep import SweepParams, kl_sweep
from pipeline.data.features import load_features
from pipeline.truth import forbid_truth_reads
from stages.common import group, run, setup, torch_threads

OUT, MODELS = Path("reports/kl_sweep.csv"), Path("models/sweep")
log = logging.getLogger("stages.sweep")


def main() -> None:
    p = from_group(SweepParams, setup("sweep"), "sweep")
    # `model` and `adjustment`, not `student`: the sweep sets kl_weight itself (dvc.yaml tracks no student key)
    student = student_config(lambda name: None if name == "student" else group(name))
    runs = from_group(RunsConfig, group("train"), "train")
    forbid_truth_reads()  # a training stage: it never sees the simulated world's truth
    torch_threads(runs.loop.threads)
    dataset = load_dataset("data/dataset")
    present = [s for s in p.schemes if s in dataset.schemes]
    if present:
        runs = dataclasses.replace(runs, schemes=tuple(present))
    if len(present) < len(p.schemes):
        log.info("sweep: sweep.schemes %s not in the dataset (it has %s); sweeping %s", sorted(set(p.schemes) -
                 set(present)), dataset.schemes, list(runs.schemes) or "every scheme (train.schemes)")
    with atomic_dir(MODELS) as models:
        table = kl_sweep(load_features("data/features"), dataset, student, runs, p.kl_weights, Path("models/teacher"),
                         models)
    with atomic_path(OUT) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6f")
    for column in (c for c in table.columns if c.endswith("recall") and not table.empty):
        log.info("sweep: %s picks kl_weight %g", column, table.loc[table[column].idxmax(), "kl_weight"])


if __name__ == "__main__":
    run(main)
