"""Stage `train_teacher`: a CMVAE (params group `model`, shared with the student) on the PGC pairs, one per
seed (models/teacher/s<seed>.pt); without PGC pairs, models/teacher/summary.json says why no teacher exists
(the teacher-guided variants then skip)."""
import json
import logging
from pathlib import Path

from pipeline.config import from_group
from pipeline.data.features import load_features
from pipeline.experiment import RunsConfig, train_teachers
from pipeline.io import atomic_dir
from pipeline.models.cmvae import CMVAEConfig
from pipeline.sampling.dataset import load_dataset
from pipeline.truth import forbid_truth_reads
from stages.common import group, run, setup, torch_threads

OUT, WORK, LIVE = Path("models/teacher"), Path(".cache/train/teacher"), Path("dvclive/teacher")
log = logging.getLogger("stages.train_teacher")


def main() -> None:
    cfg = from_group(CMVAEConfig, setup("model"), "model")  # the CMVAE settings the student shares
    runs = from_group(RunsConfig, group("train"), "train")
    forbid_truth_reads()  # training never sees the simulated world's truth
    torch_threads(runs.loop.threads)
    features, dataset = load_features("data/features"), load_dataset("data/dataset")
    LIVE.mkdir(parents=True, exist_ok=True)  # a declared output, even when no teacher is trained
    with atomic_dir(OUT) as tmp:
        summary = train_teachers(features, dataset, cfg, runs, tmp, WORK, LIVE)
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    log.info("teachers: %s", summary)


if __name__ == "__main__":
    run(main)
