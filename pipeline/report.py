"""Seed aggregation and the claim table: from per-seed flat metrics to mean / std per variant, and a
markdown table that states whether DebCM beats CMVAE by more than the seed-to-seed spread."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

# (metric key, higher is better) of the claim under test: T_diverse and the truth metrics
CLAIM_METRICS = (("t_diverse/sampled/recall@{k}", True), ("t_diverse/sampled/ndcg@{k}", True),
                 ("t_diverse/full/recall@{k}", True), ("t_diverse/full/ndcg@{k}", True),
                 ("t_diverse/truth/ndcg@{k}", True), ("t_diverse/truth/bias_amplification@{k}", False),
                 ("truth/ndcg@{k}", True), ("truth/bias_amplification@{k}", False))


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


def beats(a_mean: float, a_std: float, b_mean: float, b_std: float, higher_better: bool) -> bool:
    """Does a beat b by more than the seed spread? The gap must exceed the sum of both standard deviations
    (a gap inside either model's own seed noise is not a result)."""
    gap = (a_mean - b_mean) if higher_better else (b_mean - a_mean)
    return bool(gap > a_std + b_std)


def claim_table(summary: Mapping[str, Mapping[str, Mapping[str, float]]], k: int, n_seeds: int,
                variants: Sequence[str] = ("student", "no_teacher", "decrs", "cmvae"),
                challenger: str = "student", baseline: str = "cmvae") -> str:
    """Markdown: one row per claim metric, mean +- std of each variant, and the verdict of
    `challenger` vs `baseline`. Metrics a summary lacks (no truth on real data) are left out."""
    have = [v for v in variants if v in summary]
    head = "| metric | " + " | ".join(have) + f" | {challenger} beats {baseline} beyond the spread |"
    lines = [head, "|" + "---|" * (len(have) + 2)]
    for template, higher in CLAIM_METRICS:
        key = template.format(k=k)
        if not all(key in summary[v]["mean"] for v in have):
            continue
        cells = [f"{summary[v]['mean'][key]:.4f} ± {summary[v]['std'][key]:.4f}" for v in have]
        verdict = "n/a"
        if challenger in have and baseline in have:
            a, b = summary[challenger], summary[baseline]
            verdict = "yes" if beats(a["mean"][key], a["std"][key], b["mean"][key], b["std"][key], higher) else "no"
        arrow = "↑" if higher else "↓"
        lines.append(f"| {key} {arrow} | " + " | ".join(cells) + f" | {verdict} |")
    note = (f"\nMean ± standard deviation over {n_seeds} seed(s) (ddof 1). 'yes' when the gap in the better "
            "direction exceeds the sum of the two standard deviations.\n")
    return "\n".join(lines) + "\n" + note
