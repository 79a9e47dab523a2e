"""Training runs one after another vs side by side, on a built workspace (reports/performance.md "Speed targets").

    PYTHONPATH=. python tools/bench_parallel_runs.py [WORKSPACE]   (default: .; needs data/features, data/dataset)

Trains `no_teacher` on the weak and strong schemes x seeds 0, 1, 2 three ways, timed in turn: one run at a
time on 2 threads (the old default), two processes of 1 thread (train.workers 0 on 2 cores), one run at a
time on 1 thread; prints each wall time and whether every model's weights equal the side-by-side ones.
"""
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from pipeline.config import from_group
from pipeline.data.features import load_features
from pipeline.experiment import RunsConfig, train_variant
from pipeline.models.debcm import student_config
from pipeline.models.registry import load_model
from pipeline.sampling.dataset import load_dataset

if __name__ == "__main__":  # the worker processes import this file: keep the work under the guard
    root = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    params = yaml.safe_load((root / "params.yaml").read_text())
    student = student_config(params.get)  # groups model, adjustment and student
    features, dataset = load_features(root / "data/features"), load_dataset(root / "data/dataset")
    weights = {}
    for label, workers, threads in (("one at a time, 2 threads", 1, 2), ("side by side, 2 x 1 thread", 0, 2),
                                    ("one at a time, 1 thread", 1, 1)):
        runs = from_group(RunsConfig, {**params["train"], "schemes": ["weak", "strong"], "workers": workers,
                                       "loop": {**params["train"]["loop"], "threads": threads}}, "train")
        with tempfile.TemporaryDirectory() as work:
            start = time.perf_counter()
            summary = train_variant("no_teacher", features, dataset, student, runs, Path(work) / "models",
                                    Path(work) / "runs", None, Path(work) / "live")
            seconds = time.perf_counter() - start
            weights[label] = {r: load_model(Path(work) / "models" / f"{r}.pt").state_dict() for r in summary}
        print(f"{label}: {seconds:.1f} s", flush=True)
    ref = weights["side by side, 2 x 1 thread"]
    for label, w in weights.items():
        same = all(torch.equal(w[r][k], ref[r][k]) for r in ref for k in ref[r])
        print(f"{label}: weights equal to side by side: {same}")
