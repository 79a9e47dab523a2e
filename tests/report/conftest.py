"""Hand-built per-video tables in the layout of data/eval/per_video.parquet, with planted effects."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

SETS = {"weak": 60, "t_diverse": 40, "t_matching": 40}


def per_video_table(shifts: Mapping[str, Mapping[int, float]], sets: Mapping[str, int] = SETS, ks=(10, 25),
                    bias: Mapping[str, float] | None = None, truth: bool = True, seed: int = 0) -> pd.DataFrame:
    """Rows (variant, seed, set, video). Every video has a base rank in 1..60 (full) / 1..50 (sampled) shared by
    all variants; variant v on seed s ranks it `shifts[v][s]` places better (clipped at 1) plus +-1 noise, and
    its truth NDCG@K is 0.5 + shift / 100 plus noise. `bias[v]` is v's signed bias amplification (pred_share
    - true_share, +- 0.01 noise). lambda_v: inverse of a random popularity, summing to 1 per set."""
    rng = np.random.default_rng(seed)
    frames = []
    for name, n in sets.items():
        videos = [f"{name[:2]}{i:03d}" for i in range(n)]
        base_full, base_sampled = rng.integers(1, 61, n), rng.integers(1, 51, n)
        weight = 1.0 / rng.integers(1, 20, n)
        weight /= weight.sum()
        true_share = rng.uniform(0.2, 0.6, (len(ks), n))
        for variant, per_seed in shifts.items():
            for s, shift in per_seed.items():
                noise = rng.integers(-1, 2, n)
                table = {"variant": variant, "seed": s, "set": name, "video_id": videos, "weight": weight,
                         "rank_sampled": np.clip(base_sampled - round(shift) + noise, 1, 51),
                         "rank_full": np.clip(base_full - round(shift) + noise, 1, 61)}
                if truth:
                    for i, k in enumerate(ks):
                        table[f"ndcg@{k}"] = np.clip(0.5 + shift / 100 + rng.normal(0, 0.02, n), 0, 1)
                        b = (bias or {}).get(variant, 0.0)
                        table[f"true_share@{k}"] = true_share[i]
                        table[f"pred_share@{k}"] = np.clip(true_share[i] + b + rng.normal(0, 0.01, n), 0, 1)
                frames.append(pd.DataFrame(table))
    return pd.concat(frames, ignore_index=True)
