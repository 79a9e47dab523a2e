"""Stage `train_student` (and, with --variant, one item of the `baselines` matrix stage): a UGC model per split
scheme and seed, models/<variant>/<scheme>_s<seed>.pt. See pipeline/models/baselines/ for the variants."""
import argparse
import json
import logging
from pathlib import Path

from pipeline.config import from_group
from pipeline.data.features import load_features
from pipeline.experiment import RunsConfig, train_variant, variant_dir
from pipeline.io import atomic_dir
from pipeline.models.baselines import VARIANTS, BaselineParams, variant
from pipeline.models.debcm import student_config
from pipeline.sampling.dataset import load_dataset
from pipeline.truth import forbid_truth_reads
from stages.common import group, run, setup, torch_threads

log = logging.getLogger("stages.train_student")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--variant", default="student", choices=VARIANTS)
    args = ap.parse_args(argv)
    setup("student")
    student = student_config(group)  # groups student, model and adjustment
    # the student reads no `baselines` key (its stage does not track the group)
    params = BaselineParams() if args.variant == "student" else from_group(BaselineParams, group("baselines"),
                                                                            "baselines")
    runs = from_group(RunsConfig, group("train"), "train")
    forbid_truth_reads()  # training never sees the simulated world's truth
    torch_threads(runs.loop.threads)
    features, dataset = load_features("data/features"), load_dataset("data/dataset")
    out, live = variant_dir(args.variant), Path("dvclive") / args.variant
    teacher = Path("models/teacher") if variant(args.variant, student, params).uses_teacher else None
    live.mkdir(parents=True, exist_ok=True)  # a declared output, even when the variant is skipped
    with atomic_dir(out) as tmp:
        summary = train_variant(args.variant, features, dataset, student, runs, tmp,
                                Path(".cache/train") / args.variant, teacher, live, params)
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    log.info("%s: %s", args.variant,
             summary.get("skipped") or {k: round(v["best_score"], 4) for k, v in summary.items()})


if __name__ == "__main__":
    run(main)
