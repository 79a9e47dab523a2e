"""Stage `train_teacher`: a CMVAE on the PGC pairs, one per seed (models/teacher/s<seed>.pt)."""
import json
import logging
from pathlib import Path

from pipeline.config import from_group
from pipeline.experiment import RunsConfig, train_teachers
from pipeline.io import atomic_dir
from pipeline.models.cmvae import CMVAEConfig
from pipeline.sampling.dataset import load_dataset
from pipeline.train import load_features
from pipeline.truth import forbid_truth_reads
from stages.common import group, setup

OUT, WORK, LIVE = Path("models/teacher"), Path(".cache/train/teacher"), Path("dvclive/teacher")
log = logging.getLogger("stages.train_teacher")


def main() -> None:
    cfg = from_group(CMVAEConfig, setup("teacher"), "teacher")
    runs = from_group(RunsConfig, group("train"), "train")
    forbid_truth_reads()  # training never sees the simulated world's truth
    features, dataset = load_features("data/features"), load_dataset("data/dataset")
    with atomic_dir(OUT) as tmp:
        summary = train_teachers(features, dataset, cfg, runs, tmp, WORK, LIVE)
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    log.info("teachers: %s", {k: round(v["best_score"], 4) for k, v in summary.items()})


if __name__ == "__main__":
    main()
