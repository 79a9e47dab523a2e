"""The report's numbers from evaluate's per-video table (pipeline/report/pervideo.py): per-video values agree
with the metrics module, seed summaries with evaluate's, pairing keeps only shared videos and seeds."""
import numpy as np
import pandas as pd
import pytest

from pipeline.errors import DataError
from pipeline.evaluate import set_metrics
from pipeline.metrics import ndcg_at_k, recall_at_k
from pipeline.report.pervideo import (MetricKey, check_table, order_variants, paired, per_seed_metrics, set_sizes,
                                      summarize, video_values, video_weights)

from .conftest import per_video_table


def test_weighted_per_video_values_are_the_metrics_evaluate_reports():
    t = per_video_table({"cmvae": {0: 0}})
    rows = t[t["set"] == "t_diverse"]
    for protocol in ("sampled", "full"):
        ranks, w = rows[f"rank_{protocol}"].to_numpy(), rows["weight"].to_numpy()
        for metric, reference in (("recall", recall_at_k), ("ndcg", ndcg_at_k)):
            key = MetricKey("t_diverse", protocol, metric, 10)
            got = np.sum(video_values(rows, key) * video_weights(rows, key)) / np.sum(video_weights(rows, key))
            assert got == pytest.approx(reference(ranks, 10, w))
    ba = MetricKey("t_diverse", "truth", "bias_amplification", 25)
    np.testing.assert_allclose(video_values(rows, ba), rows["pred_share@25"] - rows["true_share@25"])
    assert (video_weights(rows, ba) == 1).all()  # truth metrics are unweighted, as in evaluate


def test_seed_summary_equals_evaluate_set_metrics_with_the_primary_truth_alias():
    t = per_video_table({"cmvae": {0: 0, 1: 3}, "student": {0: 5, 1: 6}})
    seeds = per_seed_metrics(t, (10, 25), primary="weak")
    rows = t[(t["variant"] == "student") & (t["seed"] == 1)]
    expected = set_metrics(rows[rows["set"] == "weak"], "weak", (10, 25))
    assert {k: seeds["student"][1][k] for k in expected} == expected
    assert seeds["student"][1]["truth/ndcg@25"] == expected["weak/truth/ndcg@25"]
    summary = summarize(t, (10, 25), "weak")
    assert list(summary) == ["student", "cmvae"]
    key = "t_diverse/full/recall@10"
    values = [seeds["cmvae"][s][key] for s in (0, 1)]
    assert summary["cmvae"]["mean"][key] == pytest.approx(np.mean(values))
    assert summary["cmvae"]["std"][key] == pytest.approx(np.std(values, ddof=1))


def test_without_truth_columns_there_are_no_truth_keys():
    t = per_video_table({"cmvae": {0: 0}}, truth=False)
    assert not any("/truth/" in k for k in summarize(t, (10,), "weak")["cmvae"]["mean"])
    assert paired(t, "cmvae", "cmvae", MetricKey("weak", "truth", "ndcg", 10)) is None


def test_variant_order_is_fixed_with_unknown_names_last():
    assert order_variants(["zeta", "cmvae", "random", "student", "alpha", "ips", "cevar"]) == \
        ["student", "cmvae", "ips", "cevar", "random", "alpha", "zeta"]


def test_pairing_keeps_shared_videos_and_seeds_and_averages_nothing_yet():
    t = per_video_table({"student": {0: 5, 1: 5, 2: 5}, "cmvae": {0: 0, 1: 0}})
    t = t[~((t["variant"] == "student") & (t["video_id"] == "t_000"))]  # one video the student lacks
    p = paired(t, "student", "cmvae", MetricKey("t_diverse", "full", "recall", 25))
    assert p.seeds == (0, 1) and p.x.shape == (39, 2) and p.y.shape == (39, 2)
    assert p.weight.shape == (39,) and p.weight.sum() < 1  # lambda_v of the shared videos, not renormalised here
    assert paired(t, "student", "nobody", MetricKey("t_diverse", "full", "recall", 25)) is None
    bad = t.copy()
    bad.loc[bad["variant"] == "student", "weight"] *= 2
    with pytest.raises(DataError, match="weigh the videos of t_diverse differently"):
        paired(bad, "student", "cmvae", MetricKey("t_diverse", "full", "recall", 25))


def test_set_sizes_and_table_checks():
    t = per_video_table({"cmvae": {0: 0}}, sets={"weak": 12, "t_diverse": 5})
    assert set_sizes(t) == {"t_diverse": 5, "weak": 12}
    with pytest.raises(DataError, match=r"per_video.parquet: column 'rank_full' is missing"):
        check_table(t.drop(columns="rank_full"), "data/eval/per_video.parquet")
    with pytest.raises(DataError, match="no rows"):
        check_table(pd.DataFrame(columns=t.columns), "x.parquet")
