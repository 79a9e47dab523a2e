"""reports/claim.json: the claim's numbers in machine-readable form, for whatever compares runs (the
pre-registered science grid reads one per experiment): each variant's value with a seed-aware 95% CI on
every claim metric, and every paired comparison with its raw p, family and verdict."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from pipeline.report.claim import ClaimRow
from pipeline.report.pervideo import MetricKey, has_values, video_values, video_weights
from pipeline.report.stats import interval


def variant_intervals(per_video: pd.DataFrame, keys: Sequence[MetricKey], variants: Sequence[str],
                      resamples: int, seed: int) -> dict[str, dict[str, dict[str, float]]]:
    """{variant: {metric key: {value, low, high}}} (bias amplification: its magnitude, `abs_` in the key)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name in variants:
        rows = per_video[per_video["variant"] == name]
        for key in keys:
            sub = rows[rows["set"] == key.set]
            if sub.empty or not has_values(sub, key):
                continue
            table = pd.DataFrame({"video_id": sub["video_id"].astype(str).to_numpy(), "seed": sub["seed"].to_numpy(),
                                  "value": video_values(sub, key)}).pivot(index="video_id", columns="seed",
                                                                          values="value").dropna()
            first = sub[sub["seed"] == sub["seed"].min()].drop_duplicates("video_id")
            weight = pd.Series(video_weights(first, key), index=first["video_id"].astype(str)).loc[table.index]
            value, low, high = interval(table.to_numpy(), weight.to_numpy(), key.magnitude, resamples, seed)
            label = key.key.replace("bias_amplification", "abs_bias_amplification") if key.magnitude else key.key
            out.setdefault(name, {})[label] = {"value": value, "low": low, "high": high, "videos": int(len(table))}
    return out


def claim_json(per_video: pd.DataFrame, keys: Sequence[MetricKey], variants: Sequence[str],
               rows: Sequence[ClaimRow], resamples: int, seed: int) -> dict:
    def clean(x: float) -> float | None:
        return float(x) if np.isfinite(x) else None

    verdicts = [{"challenger": r.challenger, "baseline": r.baseline, "metric": r.key.key, "family": r.family,
                 "effect": clean(r.comparison.effect), "low": clean(r.comparison.low),
                 "high": clean(r.comparison.high), "p": clean(r.comparison.p), "p_holm": clean(r.p_holm),
                 "video_low": clean(r.comparison.video_low), "video_high": clean(r.comparison.video_high),
                 "video_p": clean(r.comparison.video_p), "se_seeds": clean(r.comparison.se_seeds),
                 "se_videos": clean(r.comparison.se_videos), "df": clean(r.comparison.df),
                 "seed_effects": [clean(e) for e in r.comparison.seed_effects],
                 "seeds_agreeing": r.comparison.seeds_agreeing, "seeds": len(r.comparison.seed_effects),
                 "videos": r.comparison.n_videos, "verdict": r.verdict} for r in rows]
    return {"variants": variant_intervals(per_video, keys, variants, resamples, seed), "verdicts": verdicts}
