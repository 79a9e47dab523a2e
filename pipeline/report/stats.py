"""Paired verdicts whose error includes training variance (docs/architecture.md section 10).

Two variants are compared on the same test videos and seeds. The effect is the difference of their weighted
means over videos of each video's seed-mean value (for bias amplification: of their magnitudes). Its error has
two parts, and the verdict's test uses both:

- between seeds: each seed's own effect d_s varies with the training run (initialisation, batch order);
  its variance over seeds, s_d^2 / S, is the training noise of the mean over S seeds;
- between videos: a paired bootstrap over test videos (scipy.stats.bootstrap, the weights travel with
  their videos) of the seed-mean effect gives the test set's sampling error se_v^2.

SE^2 = s_d^2 / S + se_v^2, with Welch-Satterthwaite degrees of freedom; p is two-sided from Student's t
(scipy.stats.t) and the 95% CI is effect +- t * SE. With 5 seeds and thousands of videos the seed term
dominates and this is the paired t-test over seeds; with few videos the video term does. One seed cannot
measure training variance: p and the CI are NaN and the verdict "n/a". The video-level randomisation test
(scipy.stats.permutation_test over videos of the seed means) is also run; when it is exact (2^videos <=
resamples: every swap enumerated) the reported p is the larger of the two, so a handful of videos cannot
pass on a zero bootstrap spread (3 videos can never give p < 0.25, however alike they are). With more videos
its Monte Carlo floor (2 / (resamples + 1)) would only cap p, so it is shown beside, with its CI, not used.
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
    low: float  # seed-aware 95% CI of the effect (seeds and videos)
    high: float
    p: float  # seed-aware two-sided p, uncorrected
    seed_effects: tuple[float, ...]  # the same effect on each seed alone
    n_videos: int
    se_seeds: float = math.nan  # s_d / sqrt(S): the training-noise part of the standard error
    se_videos: float = math.nan  # bootstrap standard error over test videos
    df: float = math.nan  # Welch-Satterthwaite degrees of freedom of the t reference
    video_low: float = math.nan  # the video-level bootstrap CI and randomisation p (seeds averaged first)
    video_high: float = math.nan
    video_p: float = math.nan

    @property
    def seeds_agreeing(self) -> int:
        """Seeds whose own effect has the pooled effect's sign (a zero agrees with nothing)."""
        sign = np.sign(self.effect)
        return int(sum(1 for e in self.seed_effects if sign != 0 and np.sign(e) == sign))

    @property
    def all_seeds_agree(self) -> bool:
        return len(self.seed_effects) > 0 and self.seeds_agreeing == len(self.seed_effects)


def combine(estimate: float, seed_values: Sequence[float], se_videos: float, n_videos: int
            ) -> tuple[float, float, float, float, float]:
    """(p, low, high, se_seeds, df): the two-level t reference of `estimate` (module docstring). `seed_values`
    are the per-seed estimates (their spread is the training noise), `se_videos` the bootstrap standard error
    over `n_videos` test videos; fewer than two seeds give NaNs."""
    s = np.asarray(seed_values, dtype=np.float64)
    n_seeds = len(s)
    if n_seeds < 2 or not math.isfinite(se_videos):
        return math.nan, math.nan, math.nan, math.nan, math.nan
    a = float(s.var(ddof=1)) / n_seeds  # between seeds
    b = float(se_videos) ** 2  # between videos
    se = math.sqrt(a + b)
    if se == 0.0:  # identical on every seed and video: no uncertainty at all
        p = 1.0 if estimate == 0 else 0.0
        return p, estimate, estimate, 0.0, math.inf
    # Welch-Satterthwaite: ~ n_seeds - 1 when the seeds dominate, ~ n_videos - 1 when the videos do
    df = (a + b) ** 2 / ((a * a) / (n_seeds - 1) + (b * b) / max(n_videos - 1, 1))
    p = float(2 * stats.t.sf(abs(estimate) / se, df))
    half = float(stats.t.ppf(1 - ALPHA / 2, df)) * se
    return p, estimate - half, estimate + half, math.sqrt(a), df


def compare(x: np.ndarray, y: np.ndarray, weight: np.ndarray, magnitude: bool = False, resamples: int = 9999,
            seed: int = 0) -> Comparison:
    """Challenger x against baseline y, both [videos, seeds] on the same videos and seeds, `weight` [videos].

    Fewer than two videos: everything but the effects is NaN. The video-level randomisation test swaps each
    video's (x, y) pair of seed means (with 2^videos <= `resamples` scipy enumerates every swap: exact).
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
    se_v = float(boot.standard_error)
    p, low, high, se_s, df = combine(effect, per_seed, se_v, x.shape[0])
    ci = boot.confidence_interval
    if math.isfinite(p) and 2 ** x.shape[0] <= resamples:  # the randomisation test was exact
        p = max(p, float(test.pvalue))
    return Comparison(effect, low, high, p, per_seed, x.shape[0], se_s, se_v, df, float(ci.low), float(ci.high),
                      float(test.pvalue))


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm-corrected p-values over one family of comparisons (NaN entries stay NaN and are not counted)."""
    from statsmodels.stats.multitest import multipletests  # statsmodels loads slowly; only the report needs it

    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = multipletests(p[ok], alpha=ALPHA, method="holm")[1]
    return out


def verdict(c: Comparison, p_corrected: float, lower_is_better: bool, alpha: float = ALPHA) -> str:
    """"yes": the challenger is better and the corrected seed-aware p < alpha; "worse": the same evidence the
    other way; "no" otherwise; "n/a" when no test could run (one seed, one video).

    No per-seed sign rule: the seed-aware test already holds the effect to the spread of the seeds' own
    effects, and a rule on top turns one seed's rounding-sized effect into a flipped verdict (docs/architecture.md
    section 10:
    verdicts must survive another machine). `seeds_agreeing` is still reported beside it."""
    if math.isnan(p_corrected) or math.isnan(c.p):
        return "n/a"
    if p_corrected >= alpha:
        return "no"
    better = c.effect < 0 if lower_is_better else c.effect > 0
    return "yes" if better else "worse"


def interval(x: np.ndarray, weight: np.ndarray, magnitude: bool = False, resamples: int = 9999,
             seed: int = 0) -> tuple[float, float, float]:
    """(estimate, low, high): one variant's weighted mean over videos of each video's seed-mean value (its
    magnitude for bias amplification) with a seed-aware 95% CI (the seeds' own estimates and a bootstrap over
    videos, combined as in `combine`); x [videos, seeds]. One seed: the video bootstrap alone."""
    x = np.asarray(x, dtype=np.float64)
    xm, w = x.mean(axis=1), np.asarray(weight, dtype=np.float64)

    def statistic(a, wa, axis=-1):
        m = weighted_mean(a, wa, axis)
        return np.abs(m) if magnitude else m

    estimate = float(statistic(xm, w))
    if len(xm) < 2:
        return estimate, math.nan, math.nan
    boot = stats.bootstrap((xm, w), statistic, paired=True, vectorized=True, n_resamples=resamples, batch=1000,
                           method="percentile", axis=-1, rng=np.random.default_rng(seed))
    if x.shape[1] < 2:
        return estimate, float(boot.confidence_interval.low), float(boot.confidence_interval.high)
    per_seed = [float(statistic(x[:, s], w)) for s in range(x.shape[1])]
    _, low, high, _, _ = combine(estimate, per_seed, float(boot.standard_error), len(xm))
    return estimate, low, high
