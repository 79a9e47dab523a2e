"""A pre-registered experiment's verdicts (docs/architecture.md section 10): Holm over the confirmatory tests of
the whole experiment, every cell at once, and each hypothesis's outcome as its own criteria decide.

A hypothesis is a text and its tests, committed in the experiment's config before any cell runs. A test names
a cell, a contrast ('<challenger> vs <baseline>', a row of that cell's reports/claim.json), a metric and what
the hypothesis expects: `better` (the challenger wins: verdict yes), `worse` (it loses: verdict worse) or
`not_worse` (no verdict worse). A check is a truth-free reading the hypothesis predicts (`guard_warns`: does the
teacher guard of reports/selection.json warn in that cell?), not a statistical test, so it is outside Holm.
Outcome: held (every test and check as expected), failed (none), mixed (some), incomplete (a cell missing).
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

from pipeline.errors import ParamsError
from pipeline.report.stats import ALPHA, holm

EXPECT = ("better", "worse", "not_worse")


def _cell_key(cell: Mapping) -> tuple:
    return tuple(sorted((str(k), str(v)) for k, v in cell.items()))


def check_hypotheses(hypotheses: Sequence[Mapping], cells: Sequence[Mapping]) -> None:
    """ParamsError unless every test and check names a cell of the grid and a known expectation."""
    known = {_cell_key(c) for c in cells}
    for h in hypotheses:
        if not h.get("id") or not h.get("text") or not (h.get("tests") or h.get("checks")):
            raise ParamsError(f"hypothesis {h!r}: needs id, text and tests or checks")
        for t in [*(h.get("tests") or []), *(h.get("checks") or [])]:
            if _cell_key(t.get("cell") or {}) not in known:
                raise ParamsError(f"hypothesis {h['id']}: cell {t.get('cell')} is not a cell of the grid")
        for t in h.get("tests") or []:
            if t.get("expect") not in EXPECT or " vs " not in str(t.get("contrast")) or not t.get("metric"):
                raise ParamsError(f"hypothesis {h['id']}: test {t} needs contrast 'a vs b', metric and expect in "
                                  f"{EXPECT}")


def _verdict(effect: float, p_holm: float, metric: str) -> str:
    if math.isnan(p_holm):
        return "n/a"
    if p_holm >= ALPHA:
        return "no"
    lower_is_better = "bias_amplification" in metric
    return "yes" if (effect < 0 if lower_is_better else effect > 0) else "worse"


def _passes(expect: str, verdict: str) -> bool | None:
    if verdict in ("missing", "n/a"):
        return None
    return {"better": verdict == "yes", "worse": verdict == "worse", "not_worse": verdict != "worse"}[expect]


def evaluate(hypotheses: Sequence[Mapping], cell_name, claims: Mapping[str, dict],
             selections: Mapping[str, dict]) -> tuple[list[dict], list[dict]]:
    """(tests, outcomes). `cell_name(cell)` -> the experiment name whose claim.json / selection.json are in
    `claims` / `selections`. Holm runs over every test of every hypothesis (NaN p: a degenerate or missing row,
    out of the family)."""
    tests = []
    for h in hypotheses:
        for t in h.get("tests") or []:
            name = cell_name(t["cell"])
            challenger, baseline = (s.strip() for s in str(t["contrast"]).split(" vs "))
            rows = (claims.get(name) or {}).get("verdicts", [])
            row = next((r for r in rows if r["challenger"] == challenger and r.get("baseline", "cmvae") == baseline
                        and r["metric"] == t["metric"]), None)
            p = math.nan if row is None or row.get("family") == "degenerate" or row.get("p") is None else row["p"]
            tests.append({"hypothesis": h["id"], "cell": name, "contrast": t["contrast"], "metric": t["metric"],
                          "expect": t["expect"], "missing": row is None,
                          **{k: (row or {}).get(k) for k in ("effect", "low", "high", "seeds", "videos")}, "p": p})
    # a test whose cell has not run stays in the family at p = 1 (its verdict "missing"): Holm over the planned
    # family, so a partial collection's "yes" cannot turn into "no" when the remaining cells land
    for t, p_holm in zip(tests, holm([1.0 if t["missing"] else t["p"] for t in tests])):
        t["p_holm"] = float(p_holm)
        t["verdict"] = "missing" if t["missing"] else _verdict(t["effect"], float(p_holm), t["metric"])
        t["as_expected"] = _passes(t["expect"], t["verdict"])
    outcomes = []
    for h in hypotheses:
        results = [t["as_expected"] for t in tests if t["hypothesis"] == h["id"]]
        for c in h.get("checks") or []:
            guard = (selections.get(cell_name(c["cell"])) or {}).get("guard")
            results.append(None if guard is None else bool(guard.get("warning")) == bool(c["guard_warns"]))
        if any(r is None for r in results):
            outcome = "incomplete"
        else:
            outcome = "held" if all(results) else "failed" if not any(results) else "mixed"
        outcomes.append({"id": h["id"], "text": h["text"], "outcome": outcome,
                         "as_expected": sum(bool(r) for r in results), "of": len(results)})
    return tests, outcomes


def _num(x, signed=True) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:+.4f}" if signed else f"{x:.4f}"


def hypotheses_md(hypotheses: Sequence[Mapping], tests: Sequence[dict], outcomes: Sequence[dict],
                  cell_name=str) -> str:
    n = sum(t["missing"] or not math.isnan(t["p"]) for t in tests)
    missing = sum(t["missing"] for t in tests)
    partial = (f" **Partial: {missing} of them are in cells that have not run; they count at p = 1 until they "
               "do (so no verdict here can weaken when they land), and a hypothesis with a missing test or check "
               "is incomplete.**") if missing else ""
    lines = ["## Pre-registered hypotheses\n",
             f"Holm over the {n} confirmatory tests of the whole experiment (every cell; p seed-aware, "
             "pipeline/report/stats.py). A hypothesis held when every test and check came out as it expects, "
             f"failed when none did, mixed otherwise.{partial}\n"]
    for h, o in zip(hypotheses, outcomes):
        lines += [f"### {o['id']}: {o['outcome'].upper()} ({o['as_expected']} of {o['of']} as expected)\n",
                  f"{o['text']}\n", "| cell | contrast | metric | effect | 95% CI | p | p (Holm, experiment) | verdict "
                  "| expected | as expected |", "|---|---|---|---|---|---|---|---|---|---|"]
        for t in (t for t in tests if t["hypothesis"] == h["id"]):
            mark = {True: "yes", False: "**no**", None: "–"}[t["as_expected"]]
            lines.append(f"| {t['cell']} | {t['contrast']} | {t['metric']} | {_num(t['effect'])} | "
                         f"[{_num(t['low'])}, {_num(t['high'])}] | {_num(t['p'], False)} | {_num(t['p_holm'], False)} "
                         f"| {t['verdict']} | {t['expect']} | {mark} |")
        for c in h.get("checks") or []:
            lines.append(f"| {cell_name(c['cell'])} | teacher guard | warns? | | | | | | "
                         f"{'warns' if c['guard_warns'] else 'silent'} | see the guard table |")
        lines.append("")
    return "\n".join(lines)
