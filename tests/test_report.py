"""Seed aggregation and the claim table (pipeline/report.py), against hand-computed values."""
import pytest

from pipeline.report import aggregate, beats, claim_table


def test_aggregate_mean_and_sample_std_over_seeds():
    out = aggregate({0: {"a": 1.0, "b": 5.0}, 1: {"a": 2.0, "b": 5.0}, 2: {"a": 6.0}})
    assert out["mean"] == {"a": pytest.approx(3.0)}  # "b" is missing for seed 2: left out, not averaged over 2
    assert out["std"]["a"] == pytest.approx(((4 + 1 + 9) / 2) ** 0.5)
    assert aggregate({7: {"a": 0.5}}) == {"mean": {"a": 0.5}, "std": {"a": 0.0}}
    assert list(aggregate({0: {"z": 1.0, "a": 2.0}})["mean"]) == ["a", "z"]


@pytest.mark.parametrize("a,sa,b,sb,higher,want", [
    (0.30, 0.01, 0.25, 0.01, True, True),    # gap 0.05 > 0.02
    (0.30, 0.03, 0.25, 0.03, True, False),   # gap 0.05 < 0.06: inside the noise
    (0.10, 0.01, 0.20, 0.01, False, True),   # lower is better (bias amplification)
    (0.20, 0.01, 0.10, 0.01, False, False),
])
def test_beats_needs_a_gap_larger_than_both_spreads(a, sa, b, sb, higher, want):
    assert beats(a, sa, b, sb, higher) is want


def test_claim_table_rows_and_verdicts():
    def summary(recall, bias, std):
        return {"mean": {"t_diverse/sampled/recall@25": recall, "truth/bias_amplification@25": bias},
                "std": {"t_diverse/sampled/recall@25": std, "truth/bias_amplification@25": std}}
    table = claim_table({"student": summary(0.5, 0.01, 0.01), "cmvae": summary(0.4, 0.011, 0.01)}, 25, 3,
                        variants=("student", "cmvae"))
    rows = {line.split(" | ")[0].strip("| ").split(" ")[0]: line for line in table.splitlines() if "@25" in line}
    assert set(rows) == {"t_diverse/sampled/recall@25", "truth/bias_amplification@25"}  # absent metrics skipped
    assert rows["t_diverse/sampled/recall@25"].endswith("| yes |")
    assert rows["truth/bias_amplification@25"].endswith("| no |")  # 0.001 lower: inside the spread
    assert "0.5000 ± 0.0100" in rows["t_diverse/sampled/recall@25"] and "3 seed(s)" in table
