"""Paired verdicts (pipeline/report/stats.py) on hand-built arrays: planted effects are found, no effect is
not, the error includes the spread of the seeds, Holm is Holm, bias amplification is judged by its magnitude."""
import math

import numpy as np
import pytest

from scipy import stats

from pipeline.report.stats import compare, effect_of, holm, interval, verdict


def _videos(n=50, seeds=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.2, 0.6, (n, 1)) + rng.normal(0, 0.05, (n, seeds)), rng.uniform(0.5, 2.0, n)


def test_a_planted_effect_is_found_with_its_size_and_a_ci_around_it():
    y, w = _videos()
    x = y + 0.1 + np.random.default_rng(1).normal(0, 0.05, y.shape)
    c = compare(x, y, w, resamples=999)
    assert c.effect == pytest.approx(np.sum(w * (x.mean(1) - y.mean(1))) / w.sum())
    assert c.p < 0.01 and c.low < c.effect < c.high and c.low > 0.05 and c.high < 0.15
    assert c.all_seeds_agree and c.seeds_agreeing == 3 and c.n_videos == 50
    assert verdict(c, c.p, lower_is_better=False) == "yes"
    assert verdict(c, c.p, lower_is_better=True) == "worse"  # the same evidence, read for a lower-is-better metric


def test_no_effect_gives_a_large_p_and_no():
    y, w = _videos()
    same = compare(y, y.copy(), w, resamples=999)
    assert same.effect == 0.0 and same.p == pytest.approx(1.0) and verdict(same, same.p, False) == "no"
    x = y + np.random.default_rng(2).normal(0, 0.05, y.shape)  # noise, no shift
    c = compare(x, y, w, resamples=999)
    assert c.p > 0.05 and c.low < 0 < c.high
    assert verdict(c, c.p, lower_is_better=False) == "no"


def test_seed_variance_widens_the_interval_the_audits_case():
    """Per-seed effects 0.0274, 0.0247, 0.0084 on many videos (the default world's one 'yes' before, issue 20):
    the video-level test calls it certain, the seed-aware one gives the paired t-test over seeds."""
    rng = np.random.default_rng(4)
    y = rng.uniform(0.3, 0.9, (4000, 1)) + rng.normal(0, 0.01, (4000, 3))
    x = y + np.array([0.0274, 0.0247, 0.0084]) + rng.normal(0, 0.002, y.shape)
    c = compare(x, y, np.ones(4000), resamples=999)
    assert c.video_p < 0.01 and c.video_low > 0.01  # the old interval excluded 0 by far
    t = stats.ttest_1samp(c.seed_effects, 0.0)
    assert c.p == pytest.approx(t.pvalue, rel=0.05) and 0.05 < c.p < 0.15
    assert c.low < 0 < c.high and c.high - c.low > 5 * (c.video_high - c.video_low)
    assert c.df == pytest.approx(2, abs=0.1) and c.se_seeds > c.se_videos
    assert verdict(c, c.p, lower_is_better=False) == "no"


def test_five_consistent_seeds_pass_and_one_seed_cannot_decide():
    y, w = _videos(seeds=5)
    x = y + np.array([0.05, 0.06, 0.055, 0.045, 0.052]) + np.random.default_rng(5).normal(0, 0.01, y.shape)
    c = compare(x, y, w, resamples=999)
    assert c.p < 0.001 and c.low > 0.03 and verdict(c, c.p, lower_is_better=False) == "yes"
    one = compare(x[:, :1], y[:, :1], w, resamples=999)
    assert math.isnan(one.p) and math.isnan(one.low) and not math.isnan(one.video_p)
    assert verdict(one, one.p, lower_is_better=False) == "n/a"


def test_few_videos_keep_the_video_error():
    """Identical seeds (no training noise) on 8 videos: the interval is the video bootstrap's, not zero."""
    rng = np.random.default_rng(6)
    base = rng.uniform(0, 1, (8, 1))
    y = np.repeat(base, 5, axis=1)
    x = y + rng.normal(0.05, 0.2, (8, 1))
    c = compare(x, y, np.ones(8), resamples=999)
    assert c.se_seeds == pytest.approx(0.0, abs=1e-12) and c.se_videos > 0.03
    assert c.high - c.low >= 0.9 * (c.video_high - c.video_low)
    assert c.df == pytest.approx(7, abs=0.01)


def test_a_seed_with_the_other_sign_does_not_veto_a_clear_effect():
    y, w = _videos(n=300, seeds=6)
    x = y + np.array([0.08, 0.07, 0.09, 0.08, 0.075, -0.005])
    c = compare(x, y, w, resamples=999)
    assert not c.all_seeds_agree and c.seeds_agreeing == 5
    assert c.p < 0.05 and verdict(c, c.p, lower_is_better=False) == "yes"


def test_the_statistic_is_weighted_by_lambda():
    x = np.array([[1.0], [0.0], [0.0], [0.0]])
    y = np.zeros((4, 1))
    w = np.array([3.0, 1.0, 1.0, 1.0])
    assert compare(x, y, w, resamples=99).effect == pytest.approx(0.5)  # 3 / 6, not the unweighted 1 / 4


def test_holm_not_bonferroni_and_nan_kept_out():
    np.testing.assert_allclose(holm([0.01, 0.02, 0.03, 0.04]), [0.04, 0.06, 0.06, 0.06])  # Bonferroni: .04 .08 .12 .16
    out = holm([0.01, float("nan"), 0.04])
    assert math.isnan(out[1]) and out[0] == pytest.approx(0.02) and out[2] == pytest.approx(0.04)
    c = compare(np.ones((30, 2)), np.zeros((30, 2)), np.ones(30), resamples=99)
    assert verdict(c, 0.06, lower_is_better=False) == "no"  # corrected above alpha: no, whatever the raw p


def test_bias_amplification_is_judged_by_its_magnitude():
    y, w = _videos()
    rng = np.random.default_rng(3)
    base = 0.10 + rng.normal(0, 0.01, y.shape)  # the baseline over-serves the taste by 10 points
    under = -0.02 + rng.normal(0, 0.01, y.shape)  # serves it 2 points less than the truth: smaller distortion
    over = -0.25 + rng.normal(0, 0.01, y.shape)  # 25 points less: signed it looks "lower", in magnitude worse
    smaller = compare(under, base, w, magnitude=True, resamples=999)
    wmean = lambda a: np.sum(w * a.mean(1)) / w.sum()  # noqa: E731
    assert smaller.effect == pytest.approx(abs(wmean(under)) - abs(wmean(base)))
    assert smaller.effect < 0 and verdict(smaller, smaller.p, lower_is_better=True) == "yes"
    larger = compare(over, base, w, magnitude=True, resamples=999)
    assert larger.effect > 0 and verdict(larger, larger.p, lower_is_better=True) == "worse"
    signed = compare(over, base, w, magnitude=False, resamples=999)
    assert signed.effect < 0  # what a signed comparison would have called an improvement
    assert effect_of(np.array([-0.3]), np.array([0.1]), np.ones(1), magnitude=True) == pytest.approx(0.2)


def test_few_videos_cannot_be_significant_and_one_video_is_no_test():
    x, y, w = np.ones((3, 2)), np.zeros((3, 2)), np.ones(3)
    c = compare(x, y, w, resamples=999)  # 2^3 swaps enumerated: the smallest two-sided p is 2/8
    assert c.p == pytest.approx(0.25) and verdict(c, c.p, False) == "no"
    one = compare(np.ones((1, 2)), np.zeros((1, 2)), np.ones(1))
    assert math.isnan(one.p) and math.isnan(one.low) and verdict(one, one.p, False) == "n/a"


def test_results_are_reproducible_and_shapes_checked():
    y, w = _videos()
    x = y + 0.01
    assert compare(x, y, w, resamples=199, seed=5) == compare(x, y, w, resamples=199, seed=5)
    with pytest.raises(ValueError, match="videos, seeds"):
        compare(x[:, 0], y[:, 0], w)


def test_a_variants_interval_includes_its_seed_spread():
    rng = np.random.default_rng(7)
    x = rng.uniform(0.4, 0.6, (3000, 1)) + np.array([0.0, 0.02, -0.02, 0.01, -0.01]) + rng.normal(0, 0.01, (3000, 5))
    est, low, high = interval(x, np.ones(3000), resamples=999)
    seed_means = x.mean(axis=0)
    half = stats.t.ppf(0.975, 4) * seed_means.std(ddof=1) / np.sqrt(5)
    assert est == pytest.approx(x.mean()) and (high - low) / 2 == pytest.approx(half, rel=0.1)
