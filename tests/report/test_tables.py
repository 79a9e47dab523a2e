"""Seed aggregation, the report's tables and figures (pipeline/report/{seeds,tables,figures,cases}.py),
against hand-computed values."""
import hashlib

import numpy as np
import pandas as pd
import pytest

from pipeline.metrics import aggregate
from pipeline.report.cases import genre_shares, true_top
from pipeline.report.figures import plot_genre_shares, plot_sweeps
from pipeline.report.tables import (Degeneracy, SetShape, cmvae_table2, debcm_table3, degenerate,
                                    intervention_table, set_tables)


def test_aggregate_mean_and_sample_std_over_seeds():
    out = aggregate({0: {"a": 1.0, "b": 5.0}, 1: {"a": 2.0, "b": 5.0}, 2: {"a": 6.0}})
    assert out["mean"] == {"a": pytest.approx(3.0)}  # "b" is missing for seed 2: left out, not averaged over 2
    assert out["std"]["a"] == pytest.approx(((4 + 1 + 9) / 2) ** 0.5)
    assert aggregate({7: {"a": 0.5}}) == {"mean": {"a": 0.5}, "std": {"a": 0.0}}
    assert list(aggregate({0: {"z": 1.0, "a": 2.0}})["mean"]) == ["a", "z"]


def _summary(scale):
    keys = {"weak/sampled/recall@10": 0.2, "weak/sampled/recall@25": 0.4, "weak/sampled/ndcg@10": 0.1,
            "weak/full/recall@10": 0.15, "weak/truth/ndcg@10": 0.8, "weak/truth/bias_amplification@10": 0.05,
            "weak/truth/pred_share@10": 0.6, "truth/ndcg@10": 0.7, "t_diverse/full/ndcg@25": 0.3}
    return {"mean": {k: v * scale for k, v in keys.items()}, "std": {k: 0.01 for k in keys}}


def test_set_tables_one_table_per_set_and_protocol_in_paper_order():
    text = set_tables({"cmvae": _summary(0.5), "student": _summary(1.0)}, variants=("student", "cmvae"))
    titles = [line for line in text.splitlines() if line.startswith("### ")]
    assert titles == ["### t_diverse — full", "### weak — sampled", "### weak — full", "### weak — truth",
                      "### all truth metrics of the intervene scheme's test set — truth"]
    weak_sampled = text.split("### weak — sampled")[1].split("###")[0]
    assert "| variant | R@10 | R@25 | N@10 |" in weak_sampled  # recall columns before NDCG, K ascending
    assert "| student | 0.200 ± 0.010 | 0.400 ± 0.010 | 0.100 ± 0.010 |" in weak_sampled
    assert weak_sampled.index("| student") < weak_sampled.index("| cmvae")  # the order asked for
    weak_truth = text.split("### weak — truth")[1].split("###")[0]
    assert "| variant | N@10 | BA@10 |" in weak_truth and "pred_share" not in text  # helper metrics left out
    assert set_tables({}) == "(no metrics)\n"
    assert "| other |" in set_tables({"student": _summary(1.0), "other": _summary(1.0)})  # unknown variants: last
    partial = set_tables({"student": _summary(1.0), "cmvae": {"mean": {}, "std": {}}}, variants=("student", "cmvae"))
    assert "| cmvae | – |" in partial  # a metric a variant lacks shows as a dash, not as a zero


def test_degenerate_sets_are_named_and_their_cells_marked():
    small_pool = SetShape(videos=100, sampled=101, full=36)
    assert degenerate(small_pool, "full", 25, 30) == "K = 25 is at least half of the 36 full-protocol candidates"
    assert degenerate(small_pool, "full", 15, 30) is None and degenerate(small_pool, "sampled", 25, 30) is None
    assert "21 test videos (< report.min_videos 30)" in degenerate(SetShape(21, 101, 500), "sampled", 10, 30)
    flags = Degeneracy({"weak": small_pool, "t_diverse": SetShape(21, 101, 36)}, 30, primary="weak")
    assert set(flags.flagged([10, 25])) == {("weak", "full", 25), ("weak", "truth", 25), ("t_diverse", "sampled", 10),
                                            ("t_diverse", "sampled", 25), ("t_diverse", "full", 10),
                                            ("t_diverse", "full", 25), ("t_diverse", "truth", 10),
                                            ("t_diverse", "truth", 25)}
    assert set(flags.flagged([10, 25], {"v": {"mean": {"weak/full/recall@10": 0.1}}})) == {("weak", "full", 25)}
    text = set_tables({"student": _summary(1.0)}, flags=flags)
    weak_full = text.split("### weak — full")[1].split("###")[0]
    assert "| student | 0.150 ± 0.010 |" in weak_full  # R@10 of a 36-music pool: readable
    assert "0.300 ± 0.010 ⚠" in text.split("### t_diverse — full")[1].split("###")[0]
    assert "0.700 ± 0.010 |" in text.split("intervene scheme's test set — truth")[1]  # truth/ndcg@10: K=10 fine


def _paper_summary(variants):
    keys = {f"{s}/sampled/{m}@{k}": 0.1 * (i + 1) for i, s in enumerate(("weak", "strong", "t_diverse", "t_matching"))
            for m in ("recall", "ndcg") for k in (10, 15, 20, 25)}
    return {v: {"mean": {k: x + j / 100 for k, x in keys.items()}, "std": {k: 0.01 for k in keys}}
            for j, v in enumerate(variants)}


def test_cmvae_table2_layout_weak_then_strong_recall_at_the_papers_ks():
    text = cmvae_table2(_paper_summary(["cmvae", "student"]), ks=(10, 15, 20, 25, 50))
    lines = text.splitlines()
    assert lines[0] == ("| model | weak R@10 | weak R@15 | weak R@20 | weak R@25 | strong R@10 | strong R@15 | "
                        "strong R@20 | strong R@25 | as published (their data) |")
    assert lines[2].startswith("| student | 0.110 ± 0.010 |") and lines[3].startswith("| cmvae | 0.100 ± 0.010 |")
    assert all(line.endswith("| not available offline |") for line in lines[2:])  # no invented paper numbers
    assert "no weak or strong split" in cmvae_table2({"student": {"mean": {}, "std": {}}}, ks=(10,))


def test_debcm_table3_groups_rows_by_data_and_tags_judged_cells():
    summary = _paper_summary(["student", "decrs", "cmvae"])
    verdicts = {("student", "t_diverse/sampled/recall@25"): "yes", ("decrs", "t_diverse/sampled/recall@25"): "no"}
    text = debcm_table3(summary, (10, 15, 25), with_pgc=["student"], verdicts=verdicts)
    lines = text.splitlines()
    assert lines[0] == ("| data | model | t_diverse R@15 | t_diverse N@15 | t_diverse R@25 | t_diverse N@25 | "
                        "t_matching R@15 | t_matching N@15 | t_matching R@25 | t_matching N@25 | "
                        "as published (their data) |")
    assert [line.split(" | ")[:2] for line in lines[2:]] == [["| UGC only", "cmvae"], ["| UGC only", "decrs"],
                                                            ["| UGC + PGC", "student"]]
    assert "0.300 ± 0.010 [yes]" in lines[4] and "0.310 ± 0.010 [no]" in lines[3] and "[" not in lines[2][:60]
    assert "no T_diverse or T_matching" in debcm_table3({"cmvae": {"mean": {}, "std": {}}}, (25,), [], {})


def test_genre_shares_count_every_list_entry():
    codes = np.array([0, 0, 1, 2])  # music 0, 1: genre 0; music 2: genre 1; music 3: genre 2
    top = np.array([[0, 1], [2, 3]])
    np.testing.assert_allclose(genre_shares(top, codes, 4), [0.5, 0.25, 0.25, 0.0])
    with pytest.raises(ValueError, match="non-empty"):
        genre_shares(np.zeros((0, 2), dtype=int), codes, 4)


def test_true_top_ranks_by_compatibility_with_stable_ties():
    rel = np.array([[0.1, 0.9, 0.5, 0.9], [1.0, 0.0, 0.0, 0.0]], dtype=np.float16)
    np.testing.assert_array_equal(true_top(rel, 3), [[1, 3, 2], [0, 1, 2]])


def test_genre_share_png_same_numbers_same_bytes(tmp_path):
    shares = {"truth": np.array([0.5, 0.5, 0.0]), "student": np.array([0.2, 0.3, 0.5])}
    digests = []
    for name in ("a.png", "b.png"):
        plot_genre_shares(shares, ["x", "y", "z"], "title", tmp_path / name)
        digests.append(hashlib.md5((tmp_path / name).read_bytes()).hexdigest())
    assert digests[0] == digests[1]
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"matplotlib" not in (tmp_path / "a.png").read_bytes()  # no Software/version metadata
    plot_genre_shares({**shares, "student": np.array([0.3, 0.3, 0.4])}, ["x", "y", "z"], "title", tmp_path / "c.png")
    assert hashlib.md5((tmp_path / "c.png").read_bytes()).hexdigest() != digests[0]


def test_intervention_table_orders_ratios_numerically_with_a_column_per_variant():
    def summary(offset):
        mean = {f"intervention_{x}/full/recall@25": float(x) + offset for x in ("0.8", "0.5", "0.65")}
        mean["intervention_0.5/sampled/recall@25"] = 9.0  # another protocol: ignored
        mean["intervention_0.5/full/recall@10"] = 9.0  # another K: ignored
        return {"mean": mean, "std": {k: 0.01 for k in mean}}
    table = intervention_table({"student": summary(0.0), "cmvae": summary(0.1)}, 25)
    assert list(table.columns) == ["ratio", "student", "student_std", "cmvae", "cmvae_std"]
    assert table["ratio"].tolist() == [0.5, 0.65, 0.8]
    assert table["cmvae"].tolist() == pytest.approx([0.6, 0.75, 0.9])
    assert intervention_table({"student": {"mean": {}, "std": {}}}, 25).empty


def test_sweeps_png_same_numbers_same_bytes(tmp_path):
    kl = pd.DataFrame({"kl_weight": [0.0, 1.0, 40.0], "val_recall": [0.5, 0.55, 0.6],
                       "val_recall_std": [0.01, 0.02, 0.03], "val_weak": [0.5, 0.5, 0.6]})
    inter = pd.DataFrame({"ratio": [0.5, 0.8], "student": [0.3, 0.2], "student_std": [0.01, 0.02]})
    plot_sweeps(kl, inter, ["student", "cmvae"], 25, 40.0, tmp_path / "a.png")
    plot_sweeps(kl, inter, ["student", "cmvae"], 25, 40.0, tmp_path / "b.png")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    plot_sweeps(None, inter.iloc[:0], ["student"], 25, None, tmp_path / "empty.png")  # nothing swept: still a figure
    assert (tmp_path / "empty.png").read_bytes()[:4] == b"\x89PNG"
