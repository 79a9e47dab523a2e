"""The claim table and metrics/headline.json (pipeline/report/claim.py) on hand-built per-video tables, and
that dvc.yaml declares the headline as the pipeline's metric."""
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.report.claim import HEADLINE_LIMIT, challengers, claim_keys, claim_rows, claim_table, headline
from pipeline.report.pervideo import summarize
from pipeline.report.stats import holm
from pipeline.report.tables import Degeneracy, SetShape

from .conftest import per_video_table

ROOT = Path(__file__).resolve().parents[2]
KEYS = claim_keys(25, ["weak", "t_diverse", "t_matching"], "weak")


@pytest.fixture(scope="module")
def rows():
    return claim_rows(_five_seeds(), KEYS, ["decrs", "popularity", "cmvae", "student"], resamples=999)


def _five_seeds():
    return per_video_table({"student": {0: 15, 1: 12, 2: 14, 3: 13, 4: 15}, "cmvae": dict.fromkeys(range(5), 0),
                            "decrs": {0: 0, 1: 1, 2: -1, 3: 0, 4: 1}, "popularity": dict.fromkeys(range(5), -9),
                            "cmvae_kl": {0: 14, 1: 13, 2: 15, 3: 12, 4: 14}},
                           bias={"student": -0.02, "cmvae": 0.05, "decrs": 0.10, "cmvae_kl": -0.02})


def test_claim_keys_cover_both_intervened_sets_and_the_truth_metrics():
    assert [k.key for k in KEYS] == [
        "t_diverse/sampled/recall@25", "t_diverse/sampled/ndcg@25", "t_diverse/full/recall@25",
        "t_diverse/full/ndcg@25", "t_matching/sampled/recall@25", "t_matching/sampled/ndcg@25",
        "t_matching/full/recall@25", "t_matching/full/ndcg@25", "t_diverse/truth/ndcg@25",
        "t_diverse/truth/bias_amplification@25", "weak/truth/ndcg@25", "weak/truth/bias_amplification@25"]
    assert [k.key for k in claim_keys(10, ["source"], "source")] == ["source/truth/ndcg@10",
                                                                     "source/truth/bias_amplification@10"]


def test_every_debiasing_variant_is_a_challenger_but_not_the_references():
    assert challengers(["random", "cmvae", "ips", "student", "linear", "decrs", "new_idea", "dscmr", "cross_vae"]) == \
        ["student", "decrs", "ips", "new_idea"]


def test_planted_effect_found_null_variant_not_and_holm_over_every_row(rows):
    assert [r.challenger for r in rows] == ["student"] * 12 + ["decrs"] * 12
    student = {r.key.key: r for r in rows if r.challenger == "student"}
    decrs = {r.key.key: r for r in rows if r.challenger == "decrs"}
    assert student["t_diverse/full/ndcg@25"].verdict == "yes"
    assert student["weak/truth/ndcg@25"].verdict == "yes"
    assert student["t_diverse/truth/bias_amplification@25"].comparison.effect < 0  # |-0.02| < |0.05|
    assert all(decrs[k].verdict == "no" for k in decrs if "bias" not in k)
    assert decrs["weak/truth/bias_amplification@25"].verdict == "worse"  # |0.10| > |0.05|
    raw = [r.comparison.p for r in rows]
    np.testing.assert_allclose([r.p_holm for r in rows], holm(raw))  # one correction over both challengers
    assert all(r.p_holm >= r.comparison.p for r in rows)
    assert max(len(r.challenger_seeds) for r in rows) == 5
    assert {r.family for r in rows} == {"confirmatory"}  # no contrasts named: every row, as before


def test_claim_table_columns_marks_and_note(rows):
    flag = Degeneracy({"weak": SetShape(60, 101, 36), "t_diverse": SetShape(40, 101, 200),
                       "t_matching": SetShape(40, 101, 200)}, 30, "weak")
    text = claim_table(rows, flag=flag)
    assert "### student vs cmvae" in text and "### decrs vs cmvae" in text and "popularity" not in text
    assert ("| metric | student | cmvae | effect | 95% CI (seeds + videos) | p | video-level CI | seeds agree | videos "
            "| family | verdict |") in text
    line = next(ln for ln in text.splitlines() if ln.startswith("| t_diverse/full/ndcg@25 ↑ |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[-1] == "yes" and cells[-4] == "5/5" and cells[-3] == "40" and cells[3].startswith("+")
    assert "| weak/truth/bias_amplification@25 (|·| ↓) ⚠ |" in text  # K = 25 of a 36-music pool: degenerate
    assert "| t_diverse/truth/bias_amplification@25 (|·| ↓) |" in text
    assert "Holm-corrected over the 24 confirmatory rows" in text and "⚠ degenerate set" in text
    assert claim_table([]).startswith("No variant shares")


def _summary(variants):
    t = per_video_table({v: {0: i, 1: i} for i, v in enumerate(variants)}, bias={v: -0.03 for v in variants})
    return summarize(t, (10, 25), "weak")


def test_headline_is_small_and_holds_the_claims_key_numbers():
    many = ["student", "no_teacher", "cmvae", "decrs", "interaction", "interaction_content", "ips", "dual_ips",
            "calibration", "linear", "popularity", "random", "zz_new", "zz_newer"]
    summary = _summary(many)
    out = headline(summary, 25, ["weak", "t_diverse", "t_matching"], "weak")
    assert sum(len(v) for v in out.values()) <= HEADLINE_LIMIT == 16
    assert set(out["student"]) == set(out["cmvae"]) == {"t_diverse/full/recall@25", "t_diverse/full/ndcg@25",
                                                         "weak/truth/ndcg@25",
                                                         "weak/truth/abs_bias_amplification@25"}
    assert out["student"]["weak/truth/abs_bias_amplification@25"] == pytest.approx(
        abs(summary["student"]["mean"]["weak/truth/bias_amplification@25"]))
    assert out["ips"] == {"t_diverse/full/recall@25": summary["ips"]["mean"]["t_diverse/full/recall@25"]}
    assert "zz_newer" not in out  # past the limit: left out, in the report's order
    without = headline(_summary(["student", "cmvae"]), 25, ["weak"], "weak")
    assert set(without["cmvae"]) == {"weak/full/recall@25", "weak/full/ndcg@25", "weak/truth/ndcg@25",
                                     "weak/truth/abs_bias_amplification@25"}


def test_dvc_declares_the_headline_as_the_metric_and_no_per_variant_table():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    declared = {next(iter(m)) if isinstance(m, dict) else m
                for stage in dvc["stages"].values() for m in stage.get("metrics", [])}
    declared |= set(dvc.get("metrics", []))
    assert declared <= {"metrics/headline.json", "metrics/genre.json", "metrics/features.json"}
    report = dvc["stages"]["report"]
    assert {"metrics/headline.json": {"cache": False}} in report["metrics"]
    assert "data/eval/per_video.parquet" in report["deps"] and "data/dataset" in report["deps"]
    assert not any(d.startswith("metrics/") and d != "metrics/genre.json" for d in report["deps"])


def test_claim_json_gives_each_variant_an_interval_and_every_verdict(rows):
    from pipeline.report.summary import claim_json

    out = claim_json(_five_seeds(), KEYS, ["student", "cmvae"], rows, resamples=999, seed=0)
    cell = out["variants"]["student"]["t_diverse/full/recall@25"]
    assert cell["low"] <= cell["value"] <= cell["high"] and cell["videos"] > 0
    ba = out["variants"]["cmvae"]["t_diverse/truth/abs_bias_amplification@25"]
    assert ba["value"] == pytest.approx(0.05, abs=0.01) and ba["low"] <= ba["value"] <= ba["high"]  # planted +0.05
    assert len(out["verdicts"]) == len(rows) and {v["verdict"] for v in out["verdicts"]} <= {"yes", "no", "worse", "n/a"}
    first = out["verdicts"][0]
    assert first["family"] == "confirmatory" and first["baseline"] == "cmvae" and len(first["seed_effects"]) == 5
    assert first["p"] <= first["p_holm"] and first["video_low"] is not None


def test_named_contrasts_form_the_family_and_the_rest_is_exploratory():
    """docs/architecture.md section 10: Holm over the pre-registered contrasts on the pre-registered metrics alone;
    another
    challenger against CMVAE is exploratory (uncorrected, bracketed); a degenerate set is n/a, in no family."""
    from pipeline.report.claim import Contrast

    flag = Degeneracy({"weak": SetShape(60, 101, 200), "t_diverse": SetShape(20, 101, 200),
                       "t_matching": SetShape(40, 101, 200)}, 30, "weak")  # 20 T_diverse videos < 30
    contrasts = [Contrast("student", "cmvae_kl"), Contrast("cmvae_kl", "cmvae")]
    rows = claim_rows(_five_seeds(), KEYS, ["decrs", "popularity", "cmvae", "student", "cmvae_kl"], resamples=999,
                      contrasts=contrasts, confirmatory=["primary/truth/ndcg", "t_diverse/truth/ndcg",
                                                         "t_matching/full/recall"], primary="weak", flag=flag)
    pairs = list(dict.fromkeys((r.challenger, r.baseline) for r in rows))
    assert pairs == [("student", "cmvae_kl"), ("cmvae_kl", "cmvae"), ("student", "cmvae"), ("decrs", "cmvae")]
    family = {(r.challenger, r.baseline, r.key.key): r for r in rows}
    confirmed = [r for r in rows if r.family == "confirmatory"]
    assert {(r.challenger, r.key.key) for r in confirmed} == {
        (c, k) for c in ("student", "cmvae_kl") for k in ("weak/truth/ndcg@25", "t_matching/full/recall@25")}
    np.testing.assert_allclose([r.p_holm for r in confirmed], holm([r.comparison.p for r in confirmed]))
    assert family[("cmvae_kl", "cmvae", "weak/truth/ndcg@25")].verdict == "yes"  # the teacher's contrast
    assert family[("student", "cmvae_kl", "weak/truth/ndcg@25")].verdict == "no"  # planted: no adjustment effect
    degenerate = family[("cmvae_kl", "cmvae", "t_diverse/truth/ndcg@25")]
    assert degenerate.family == "degenerate" and degenerate.verdict == "n/a" and np.isnan(degenerate.p_holm)
    explored = family[("student", "cmvae", "weak/truth/ndcg@25")]
    assert explored.family == "exploratory" and np.isnan(explored.p_holm) and explored.verdict == "yes"
    text = claim_table(rows, flag=flag)
    assert "### student vs cmvae_kl: the backdoor adjustment, given the teacher" in text
    assert "(yes, exploratory)" in text and "over the 4 confirmatory rows" in text


def test_contrast_and_metric_params_are_checked():
    from pipeline.errors import ParamsError
    from pipeline.report.claim import Contrast, parse_contrast

    assert parse_contrast(" student vs  cmvae_kl") == Contrast("student", "cmvae_kl")
    for bad in ("student", "student vs student", "a vs b vs c"):
        with pytest.raises(ParamsError, match="report.contrasts"):
            parse_contrast(bad)
