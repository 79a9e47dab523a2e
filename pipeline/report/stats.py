"""Paired verdicts (docs/architecture.md section 10): two variants on the same test videos and seeds.

Per video the metric is averaged over seeds; the effect is the difference of the weighted means (for bias
amplification, of their magnitudes). A paired randomisation test (scipy.stats.permutation_test, each video's
two values swapped at random) gives p, Holm's correction (statsmodels) runs over a table's comparisons, a
paired bootstrap (scipy.stats.bootstrap) gives the 95% CI, and every seed must show the effect's sign.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats

ALPHA = 0.05


def weighted_mean(values: np.ndarray, weight: np.ndarray, axis: int = -1) -> np.ndarray:
    """Sum of weight * values over `axis`, over the weights' sum (lambda_v need not sum to 1 on a subset)."""
    return np.sum(values * weight, axis=axis) / np.sum(weight, axis=axis)


def effect_of(x: np.ndarray, y: np.ndarray, weight: np.ndarray, magnitude: bool, axis: int = -1) -> np.ndarray:
    """x's weighted mean minus y's, or |x's| minus |y's| when `magnitude` (bias amplification: a smaller
    distortion in either direction is better)."""
    mx, my = weighted_mean(x, weight, axis), weighted_mean(y, weight, axis)
    return np.abs(mx) - np.abs(my) if magnitude else mx - my


@dataclass(frozen=True)
class Comparison:
    effect: float  # challenger - baseline (|challenger| - |baseline| for a magnitude)
    low: float  # bootstrap 95% CI of the effect
    high: float
    p: float  # two-sided paired randomisation test, uncorrected
    seed_effects: tuple[float, ...]  # the same effect on each seed alone
    n_videos: int

    @property
    def seeds_agreeing(self) -> int:
        """Seeds whose own effect has the pooled effect's sign (a zero agrees with nothing)."""
        sign = np.sign(self.effect)
        return int(sum(1 for e in self.seed_effects if sign != 0 and np.sign(e) == sign))

    @property
    def all_seeds_agree(self) -> bool:
        return len(self.seed_effects) > 0 and self.seeds_agreeing == len(self.seed_effects)


def compare(x: np.ndarray, y: np.ndarray, weight: np.ndarray, magnitude: bool = False, resamples: int = 9999,
            seed: int = 0) -> Comparison:
    """Challenger x against baseline y, both [videos, seeds] on the same videos, `weight` [videos].

    The randomisation test swaps each video's (x, y) pair (permutation_type="samples"); with 2^videos <=
    `resamples` scipy enumerates every swap (exact). Fewer than two videos: p and the CI are NaN.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    w = np.asarray(weight, dtype=np.float64)
    if x.ndim != 2 or x.shape != y.shape or w.shape != (x.shape[0],):
        raise ValueError(f"compare: x {x.shape}, y {y.shape} must be [videos, seeds] and weight {w.shape} [videos]")
    xm, ym = x.mean(axis=1), y.mean(axis=1)
    effect = float(effect_of(xm, ym, w, magnitude))
    per_seed = tuple(float(effect_of(x[:, s], y[:, s], w, magnitude)) for s in range(x.shape[1]))
    if x.shape[0] < 2:
        return Comparison(effect, math.nan, math.nan, math.nan, per_seed, x.shape[0])

    def statistic(a, b, axis=-1):
        return effect_of(a, b, w, magnitude, axis)

    test = stats.permutation_test((xm, ym), statistic, permutation_type="samples", vectorized=True,
                                  n_resamples=resamples, batch=1000, alternative="two-sided", axis=-1,
                                  rng=np.random.default_rng(seed))

    def resampled(a, b, wa, axis=-1):  # the weights travel with their videos
        return effect_of(a, b, wa, magnitude, axis)

    boot = stats.bootstrap((xm, ym, w), resampled, paired=True, vectorized=True, n_resamples=resamples,
                           batch=1000, method="percentile", axis=-1, rng=np.random.default_rng(seed))
    ci = boot.confidence_interval
    return Comparison(effect, float(ci.low), float(ci.high), float(test.pvalue), per_seed, x.shape[0])


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm-corrected p-values over one table's comparisons (NaN entries stay NaN and are not counted)."""
    from statsmodels.stats.multitest import multipletests  # statsmodels loads slowly; only the report needs it

    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = multipletests(p[ok], alpha=ALPHA, method="holm")[1]
    return out


def verdict(c: Comparison, p_corrected: float, lower_is_better: bool, alpha: float = ALPHA) -> str:
    """"yes": the challenger is better, the corrected p < alpha and every seed shows the same sign;
    "worse": the same evidence the other way; "no" otherwise; "n/a" when no test could run."""
    if math.isnan(p_corrected):
        return "n/a"
    if p_corrected >= alpha or not c.all_seeds_agree:
        return "no"
    better = c.effect < 0 if lower_is_better else c.effect > 0
    return "yes" if better else "worse"


def interval(x: np.ndarray, weight: np.ndarray, magnitude: bool = False, resamples: int = 9999,
             seed: int = 0) -> tuple[float, float, float]:
    """(estimate, low, high): one variant's weighted mean over videos of each video's seed-mean value (its
    magnitude for bias amplification) with a bootstrap 95% CI over videos; x [videos, seeds]."""
    xm, w = np.asarray(x, dtype=np.float64).mean(axis=1), np.asarray(weight, dtype=np.float64)

    def statistic(a, wa, axis=-1):
        m = weighted_mean(a, wa, axis)
        return np.abs(m) if magnitude else m

    estimate = float(statistic(xm, w))
    if len(xm) < 2:
        return estimate, math.nan, math.nan
    boot = stats.bootstrap((xm, w), statistic, paired=True, vectorized=True, n_resamples=resamples, batch=1000,
                           method="percentile", axis=-1, rng=np.random.default_rng(seed))
    return estimate, float(boot.confidence_interval.low), float(boot.confidence_interval.high)
