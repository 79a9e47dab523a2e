"""Seed aggregation: from per-seed flat metrics to mean and standard deviation per key."""
from __future__ import annotations

from typing import Mapping

import numpy as np


def aggregate(per_seed: Mapping[int, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """{"mean": {key: mean over seeds}, "std": {key: sample std (ddof 1; 0 for one seed)}} for keys every
    seed has, sorted (stable JSON for `dvc metrics diff`)."""
    seeds = sorted(per_seed)
    if not seeds:
        return {"mean": {}, "std": {}}
    keys = sorted(set.intersection(*(set(per_seed[s]) for s in seeds)))
    mean, std = {}, {}
    for key in keys:
        values = np.array([per_seed[s][key] for s in seeds], dtype=np.float64)
        mean[key] = float(values.mean())
        std[key] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return {"mean": mean, "std": std}
