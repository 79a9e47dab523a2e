"""A pre-registered experiment's verdicts (pipeline/report/hypotheses.py, pipeline/science.py): named grid axes,
Holm over every test of the experiment at once, and each hypothesis's outcome as its own criteria decide."""
import math
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import ParamsError
from pipeline.report.hypotheses import check_hypotheses, evaluate, hypotheses_md
from pipeline.report.stats import holm
from pipeline.science import load_grid, queue_commands

ROOT = Path(__file__).resolve().parents[2]
B4 = {"world.preference_exponent": 4, "pgc": "clean"}
SHIFT = {"world.preference_exponent": 4, "pgc": "shifted"}


def _name(cell):
    return f"b{cell['world.preference_exponent']}-{cell['pgc']}"


def _row(challenger, baseline, metric, effect, p, family="confirmatory"):
    return {"challenger": challenger, "baseline": baseline, "metric": metric, "effect": effect, "low": effect - 0.01,
            "high": effect + 0.01, "p": p, "family": family, "seeds": 5, "videos": 500}


HYPOTHESES = [
    {"id": "H1", "text": "student beats cmvae", "tests": [
        {"cell": B4, "contrast": "student vs cmvae", "metric": "weak/truth/ndcg@25", "expect": "better"},
        {"cell": B4, "contrast": "student vs cmvae", "metric": "weak/truth/bias_amplification@25", "expect": "better"}]},
    {"id": "H5", "text": "shifted PGC hurts", "tests": [
        {"cell": SHIFT, "contrast": "student vs cmvae", "metric": "weak/truth/ndcg@25", "expect": "worse"}],
     "checks": [{"cell": SHIFT, "guard_warns": True}]},
    {"id": "H7", "text": "costs nothing", "tests": [
        {"cell": SHIFT, "contrast": "student vs cmvae", "metric": "t_diverse/full/recall@25", "expect": "not_worse"}]},
]
CLAIMS = {"b4-clean": {"verdicts": [_row("student", "cmvae", "weak/truth/ndcg@25", 0.05, 0.001),
                                    _row("student", "cmvae", "weak/truth/bias_amplification@25", -0.01, 0.04)]},
          "b4-shifted": {"verdicts": [_row("student", "cmvae", "weak/truth/ndcg@25", -0.2, 0.0001),
                                      _row("student", "cmvae", "t_diverse/full/recall@25", 0.0, 0.9)]},
          "b0-clean": {"verdicts": [_row("student", "cmvae", "t_diverse/full/recall@25", 0.0, 0.5, "degenerate")]}}


def test_holm_runs_over_the_whole_experiment_and_outcomes_follow_the_pre_registered_expectations():
    tests, outcomes = evaluate(HYPOTHESES, _name, CLAIMS, {"b4-shifted": {"guard": {"warning": "⚠ teacher worse"}}})
    np.testing.assert_allclose([t["p_holm"] for t in tests], holm([0.001, 0.04, 0.0001, 0.9]))
    assert [t["verdict"] for t in tests] == ["yes", "no", "worse", "no"]  # 0.04 * 2 = 0.08 after Holm: no
    assert {o["id"]: o["outcome"] for o in outcomes} == {"H1": "mixed", "H5": "held", "H7": "held"}
    b0 = [{**HYPOTHESES[2], "tests": [{**HYPOTHESES[2]["tests"][0], "cell": {**SHIFT, "pgc": "clean",
                                                                             "world.preference_exponent": 0}}]}]
    degenerate = evaluate(b0, _name, CLAIMS, {})
    assert math.isnan(degenerate[0][0]["p_holm"]) and degenerate[0][0]["verdict"] == "n/a"  # out of the family
    assert degenerate[1][0]["outcome"] == "incomplete"
    silent = evaluate(HYPOTHESES[1:2], _name, CLAIMS, {"b4-shifted": {"guard": {"warning": None}}})[1]
    assert silent[0]["outcome"] == "mixed" and silent[0]["as_expected"] == 1 and silent[0]["of"] == 2
    missing = evaluate(HYPOTHESES[:1], _name, {}, {})[1]
    assert missing[0]["outcome"] == "incomplete"
    text = hypotheses_md(HYPOTHESES, tests, outcomes)
    assert "### H1: MIXED (1 of 2 as expected)" in text and "### H5: HELD" in text and "Holm over the 4 " in text


def test_a_hypothesis_must_name_a_cell_of_the_grid_and_a_known_expectation():
    cells = [B4, SHIFT]
    check_hypotheses(HYPOTHESES, cells)
    with pytest.raises(ParamsError, match="not a cell"):
        check_hypotheses([{**HYPOTHESES[0], "tests": [{**HYPOTHESES[0]["tests"][0], "cell": {"pgc": "x"}}]}], cells)
    with pytest.raises(ParamsError, match="expect"):
        check_hypotheses([{**HYPOTHESES[0], "tests": [{**HYPOTHESES[0]["tests"][0], "expect": "significant"}]}], cells)


def test_the_committed_v2_grid_has_six_named_cells_and_a_family_of_fourteen_tests():
    grid = load_grid(ROOT / "configs" / "science_v2.yaml")
    names = [grid.cell_name(c) for c in grid.cells()]
    assert len(names) == 6 and "science_v2-b4-pgcshifted" in names
    commands = {c[5]: c for c in queue_commands(grid)}
    shifted = commands["science_v2-b4-pgcshifted"]
    assert "world.pgc_domain_shift=1.0" in shifted and "world.preference_exponent=4" in shifted
    assert not any("pgc_taste" in s for s in commands["science_v2-b0-pgcclean"])  # clean: the knobs stay 0
    assert "train.seeds=[0, 1, 2, 3, 4]" in shifted and all("\n" not in s for s in shifted)
    assert sum(len(h.get("tests") or []) for h in grid.hypotheses) == 14
    assert load_grid(ROOT / "configs" / "science.yaml").hypotheses == []  # the v1 grid still loads


def test_the_v3_replication_differs_from_v2_only_in_the_world_seed_the_guard_criterion_and_one_contrast():
    """v3 must replicate v2: the same cells and settings on a new world, and every v3 test's contrast is one its
    cells' claim tables compute (report.contrasts)."""
    v2, v3 = load_grid(ROOT / "configs" / "science_v2.yaml"), load_grid(ROOT / "configs" / "science_v3.yaml")
    assert v3.axes == v2.axes and v3.metrics == v2.metrics
    changed = {k for k in v2.fixed.keys() | v3.fixed.keys() if v2.fixed.get(k) != v3.fixed.get(k)}
    assert changed == {"world.seed", "report.guard_criterion", "report.contrasts"}
    assert v3.fixed["world.seed"] != v2.fixed.get("world.seed", 0)
    contrasts = set(v3.fixed["report.contrasts"])
    assert all(t["contrast"] in contrasts for h in v3.hypotheses for t in h.get("tests") or [])
    assert [c["guard_warns"] for h in v3.hypotheses for c in h.get("checks") or []].count(False) == 1


def test_only_finished_experiments_are_collected():
    """A queued or running experiment is listed by `dvc exp show` under its queue commit, whose reports are the
    baseline's: collecting it would report the baseline's numbers as the cell's."""
    from pipeline.science import finished

    shown = [{"experiments": [
        {"executor": {"state": "running"}, "revs": [{"name": "run", "rev": "a"}]},
        {"executor": {"state": "queued"}, "revs": [{"name": "wait", "rev": "b"}]},
        {"executor": {"state": "success"}, "revs": [{"name": "done", "rev": "c"}]},
        {"executor": None, "revs": [{"name": "older", "rev": "d"}]},
        {"executor": {"state": "failed"}, "revs": [{"name": "broke", "rev": "e"}]}]}]
    assert finished(shown) == {"done": "c", "older": "d"}


def test_a_partial_collection_counts_the_missing_cells_tests_at_p_one():
    """Cells still running: their tests stay in the Holm family at p = 1, so a verdict reached on part of the
    grid cannot weaken when the rest lands, and the report says it is partial."""
    some = {k: v for k, v in CLAIMS.items() if k != "b4-shifted"}
    tests, outcomes = evaluate(HYPOTHESES, _name, some, {})
    full = evaluate(HYPOTHESES, _name, CLAIMS, {})[0]
    np.testing.assert_allclose([t["p_holm"] for t in tests], holm([0.001, 0.04, 1.0, 1.0]))
    assert all(p <= q for p, q in zip([t["p_holm"] for t in full], [t["p_holm"] for t in tests]))
    assert [t["verdict"] for t in tests] == ["yes", "no", "missing", "missing"]
    text = hypotheses_md(HYPOTHESES, tests, outcomes)
    assert "Holm over the 4 " in text and "**Partial: 2 of them" in text
    assert "Partial" not in hypotheses_md(HYPOTHESES, *evaluate(HYPOTHESES, _name, CLAIMS, {}))
