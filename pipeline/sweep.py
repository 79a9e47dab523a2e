"""`python -m pipeline.sweep 0 1 10 40`: validation Recall@val_k of the student for each kl_weight.

Trains the student on every scheme x seed of params.yaml's `train` group for each value (temporary
folders; the teachers in models/teacher are reused) and prints one JSON line per value: the mean
validation score per scheme and overall. Validation only: the test sets are never looked at.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import tempfile
from pathlib import Path

import numpy as np

from pipeline.config import from_group, load_params
from pipeline.experiment import RunsConfig, train_variant
from pipeline.models.debcm import DebCMConfig
from pipeline.sampling.dataset import load_dataset
from pipeline.train import load_features


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kl_weights", nargs="+", type=float)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--schemes", nargs="*", default=None, help="limit to these schemes (default: train.schemes)")
    args = ap.parse_args(argv)
    logging.basicConfig(level="WARNING")
    params = load_params(args.params)
    student = from_group(DebCMConfig, params.get("student"), "student")
    runs = from_group(RunsConfig, params.get("train"), "train")
    if args.schemes:
        runs = dataclasses.replace(runs, schemes=tuple(args.schemes))
    features, dataset = load_features("data/features"), load_dataset("data/dataset")
    for weight in args.kl_weights:
        cfg = dataclasses.replace(student, kl_weight=weight)
        with tempfile.TemporaryDirectory() as tmp:
            summary = train_variant("student", features, dataset, cfg, runs, Path(tmp) / "models",
                                    Path(tmp) / "work", Path("models/teacher"))
        scores = {run: s["best_score"] for run, s in summary.items()}
        per_scheme = {scheme: round(float(np.mean([v for r, v in scores.items() if r.rsplit("_s", 1)[0] == scheme])), 4)
                      for scheme in runs.schemes_of(dataset)}
        print(json.dumps({"kl_weight": weight, "val_recall": per_scheme,
                          "mean": round(float(np.mean(list(scores.values()))), 4)}), flush=True)


if __name__ == "__main__":
    main()
