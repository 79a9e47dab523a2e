"""Truth-free selection (docs/architecture.md section 10): the criteria's weights, each criterion's choice and
regret, and the teacher
guard's domain classifier, on hand-built inputs."""
import numpy as np
import pandas as pd
import pytest

from pipeline.report.guard import domain_auc, guard_md, guard_warning, mean_scores
from pipeline.report.selection import selection_md, selection_table
from pipeline.training.data import selection_weights


def test_ips_weights_taste_driven_choices_down_and_diverse_keeps_even_uploaders():
    w = np.full(10, 0.1)
    taste = np.zeros((10, 6))
    taste[:5, 0] = 1.0  # five videos of single-genre uploaders who picked that genre: propensity 1
    taste[5:] = 1 / 6  # five of uploaders with even taste
    genre = np.zeros((10, 6))
    genre[:, 0] = 1.0
    out = selection_weights(w, taste, genre)
    assert out["ips"].sum() == pytest.approx(1.0) and out["diverse"].sum() == pytest.approx(1.0)
    assert out["ips"][5] == pytest.approx(6 * out["ips"][0])  # 1 / (1/6) against 1 / 1
    assert (out["diverse"][:5] == 0).all() and (out["diverse"][5:] > 0).all()
    clipped = selection_weights(w, np.eye(6)[[1] * 10], genre)  # propensity 0: clipped at 0.05, all equal
    np.testing.assert_allclose(clipped["ips"], 0.1)


def _sweep():
    return pd.DataFrame({"kl_weight": [0.0, 1.0, 40.0], "val_recall": [0.50, 0.48, 0.47],
                         "val_ips_recall": [0.40, 0.44, 0.43], "val_diverse_recall": [0.30, 0.31, 0.33]})


def _scored():
    rows = []
    truth = {0.0: 0.90, 1.0: 0.93, 40.0: 0.95}
    for criterion in ("val", "ips", "diverse"):
        for w, t in truth.items():
            for seed, noise in enumerate((-0.01, 0.01)):
                rows.append({"kl_weight": w, "criterion": criterion, "run": f"weak_s{seed}", "truth_ndcg": t + noise})
    return pd.DataFrame(rows)


def test_each_criterion_picks_its_argmax_and_its_regret_is_against_the_truth_best():
    table = selection_table(_sweep(), _scored()).set_index("criterion")
    assert table.loc["val", "chosen_kl_weight"] == 0.0 and table.loc["ips", "chosen_kl_weight"] == 1.0
    assert table.loc["diverse", "chosen_kl_weight"] == 40.0
    assert table.loc["val", "regret"] == pytest.approx(0.05) and table.loc["ips", "regret"] == pytest.approx(0.02)
    assert table.loc["diverse", "regret"] == pytest.approx(0.0) and table.loc["val", "best_kl_weight"] == 40.0
    assert table.loc["val", "chosen_truth_std"] == pytest.approx(np.std([-0.01, 0.01], ddof=1))
    text = selection_md(table.reset_index(), 25, 40.0)
    assert "| val | 0 | 0.5000 | 0.9000 ± 0.0141 | 40 | 0.9500 | 0.0500 |" in text
    no_truth = selection_table(_sweep(), None)
    assert "regret" not in no_truth.columns and "cannot be measured" in selection_md(no_truth, 25, None)
    assert "No sweep ran" in selection_md(selection_table(pd.DataFrame(), None), 25, None)


def test_domain_classifier_tells_a_shifted_domain_from_the_same_one():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    assert 0.4 < domain_auc(a, b) < 0.6
    assert domain_auc(a + 1.5, b) > 0.95
    assert np.isnan(domain_auc(a[:5], b))


def test_guard_says_plainly_when_the_teacher_is_worse():
    worse = {"scheme": "weak", "teacher_val": 0.28, "reference": "cmvae", "reference_val": 0.68,
             "domain_auc": {"visual": 0.97}, "warning": "⚠ the PGC teacher is worse than the UGC-only cmvae"}
    text = guard_md(worse, 25)
    assert text.splitlines()[2].startswith("⚠ the PGC teacher is worse") and "| 0.970 |" in text
    assert "at least as good" in guard_md({**worse, "warning": None}, 25)
    assert "No PGC teacher" in guard_md({}, 25)


def test_guard_warns_under_its_criterion_only_and_shows_the_others():
    """science v2: plain val warned in every cell; the warning compares under report.guard_criterion, and the
    other criteria's readings are shown, not acted on."""
    guard = {"scheme": "weak", "criterion": "diverse", "teacher": {"val": 0.59, "ips": 0.67, "diverse": 0.78},
             "reference": "cmvae", "reference_scores": {"val": 0.69, "ips": 0.75, "diverse": 0.76},
             "teacher_val": 0.78, "reference_val": 0.76, "domain_auc": {"visual": 0.48}}
    assert guard_warning(guard, 25) is None  # below on val and ips, above on diverse: silent
    below = {**guard, "criterion": "val", "teacher_val": 0.59, "reference_val": 0.69}
    assert guard_warning(below, 25).startswith("⚠ the PGC teacher is worse") and "val Recall@25 0.5900" in \
        guard_warning(below, 25)
    text = guard_md({**guard, "warning": None}, 25)
    assert "diverse Recall@25" in text and "under ips Recall@25 (not the warning's) | 0.6700 / 0.7500 |" in text
    assert guard_warning({k: v for k, v in guard.items() if k != "reference_val"}, 25) is None  # no reference ran
    assert mean_scores([{"val": 0.2, "ips": 0.4}, {"val": 0.4}]) == pytest.approx({"val": 0.3})
