"""The claim table (each debiasing variant against CMVAE on T_diverse, T_matching and the truth metrics,
paired verdicts with Holm over every row) and metrics/headline.json, the few numbers DVC tracks."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from pipeline.report.pervideo import GRADED, MetricKey, is_reference, order_variants, paired
from pipeline.report.stats import ALPHA, Comparison, compare, holm, verdict

log = logging.getLogger(__name__)

BASELINE = "cmvae"
INTERVENED = ("t_diverse", "t_matching")
HEADLINE_LIMIT = 16  # numbers in metrics/headline.json: `dvc exp show` stays readable


def claim_keys(k: int, sets: Sequence[str], primary: str | None) -> list[MetricKey]:
    """The claim's metrics at K: sampled and full Recall/NDCG on T_diverse and T_matching, truth NDCG and
    bias amplification on T_diverse and on the primary (intervene scheme's) test set, where present."""
    keys = [MetricKey(s, protocol, metric, k) for s in INTERVENED if s in sets
            for protocol in ("sampled", "full") for metric in ("recall", "ndcg")]
    for s in ["t_diverse", primary]:
        if s in sets:
            keys += [MetricKey(s, GRADED, "ndcg", k), MetricKey(s, GRADED, "bias_amplification", k)]
    return keys


def challengers(variants: Sequence[str], baseline: str = BASELINE) -> list[str]:
    """Every variant but the baseline and the references (the CMVAE paper's comparison models, the simple
    baselines), in the report's order: a variant added later is judged unless it is named a reference."""
    return [v for v in order_variants(variants) if v != baseline and not is_reference(v)]


@dataclass(frozen=True)
class ClaimRow:
    challenger: str
    key: MetricKey
    challenger_seeds: tuple[float, ...]  # the weighted metric on each shared seed
    baseline_seeds: tuple[float, ...]
    comparison: Comparison
    p_holm: float
    verdict: str


def _seed_means(values: np.ndarray, weight: np.ndarray) -> tuple[float, ...]:
    return tuple(float(np.sum(values[:, s] * weight) / np.sum(weight)) for s in range(values.shape[1]))


def claim_rows(per_video: pd.DataFrame, keys: Sequence[MetricKey], variants: Sequence[str],
               baseline: str = BASELINE, resamples: int = 9999, seed: int = 0) -> list[ClaimRow]:
    """Each challenger against `baseline` on each key the two share; Holm runs over all the rows."""
    found = []
    for name in challengers(variants, baseline):
        for key in keys:
            pair = paired(per_video, name, baseline, key)
            if pair is not None:
                c = compare(pair.x, pair.y, pair.weight, key.magnitude, resamples, seed)
                found.append((name, key, pair, c))
    corrected = holm([c.p for *_, c in found])
    return [ClaimRow(name, key, _seed_means(pair.x, pair.weight), _seed_means(pair.y, pair.weight), c, float(p),
                     verdict(c, float(p), lower_is_better=key.magnitude))
            for (name, key, pair, c), p in zip(found, corrected)]


def _mean_std(values: Sequence[float]) -> str:
    v = np.asarray(values, dtype=np.float64)
    std = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    return f"{v.mean():.4f} ± {std:.4f}"


def _num(x: float, signed: bool = True) -> str:
    return "–" if math.isnan(x) else (f"{x:+.4f}" if signed else f"{x:.4f}")


def _p(p: float) -> str:
    return "–" if math.isnan(p) else ("< 0.0001" if p < 1e-4 else f"{p:.4f}")


def _label(key: MetricKey) -> str:
    if key.magnitude:
        return f"{key.key} (|·| ↓)"
    return f"{key.key} ↑"


def claim_table(rows: Sequence[ClaimRow], baseline: str = BASELINE,
                flag: Callable[[MetricKey], str | None] = lambda key: None) -> str:
    """Markdown: a section per challenger; columns challenger and baseline (mean ± std over seeds), effect,
    95% CI, Holm-corrected p, seeds agreeing, verdict. `flag(key)` names why a set is degenerate (marked ⚠)."""
    if not rows:
        return f"No variant shares a claim metric with {baseline} in this run.\n"
    out = []
    for name in dict.fromkeys(r.challenger for r in rows):
        out += [f"### {name} vs {baseline}\n",
                f"| metric | {name} | {baseline} | effect | 95% CI | p (Holm) | seeds agree | videos | verdict |",
                "|---|---|---|---|---|---|---|---|---|"]
        for r in (r for r in rows if r.challenger == name):
            c = r.comparison
            mark = " ⚠" if flag(r.key) else ""
            out.append(f"| {_label(r.key)}{mark} | {_mean_std(r.challenger_seeds)} | {_mean_std(r.baseline_seeds)} "
                       f"| {_num(c.effect)} | [{_num(c.low)}, {_num(c.high)}] | {_p(r.p_holm)} "
                       f"| {c.seeds_agreeing}/{len(c.seed_effects)} | {c.n_videos} | {r.verdict} |")
        out.append("")
    n_seeds = max(len(r.comparison.seed_effects) for r in rows)
    out.append(
        f"Mean ± standard deviation over {n_seeds} seed(s) (ddof 1) of each variant's metric on the videos both "
        f"variants were scored on. Effect: challenger − {baseline} of the weighted mean over videos of each "
        "video's seed-mean value (Recall/NDCG weighted by lambda_v, truth metrics unweighted as in evaluate); for "
        "bias amplification, which is signed and shown signed, the effect is |challenger| − |baseline| (serving "
        "the uploaders' taste less than the truth is a distortion too), so below 0 is better. p: two-sided paired "
        "randomisation test (scipy.stats.permutation_test, each video's two values swapped), Holm-corrected "
        f"over all {len(rows)} rows of this file (statsmodels). 95% CI: paired bootstrap over videos (percentile). "
        "Seeds agree: seeds whose own effect has the pooled effect's sign. Verdict 'yes' only when the challenger "
        f"is better, p (Holm) < {ALPHA} and every seed agrees; 'worse' for the same evidence the other way; else "
        "'no'.\n")
    if any(flag(r.key) for r in rows):
        out.append("⚠ degenerate set (too few test videos, or K at least half the candidates): its numbers and "
                   "verdicts decide nothing; see degradations.md.\n")
    return "\n".join(out)


def headline(summary: Mapping[str, Mapping[str, Mapping[str, float]]], k: int, sets: Sequence[str],
             primary: str | None, limit: int = HEADLINE_LIMIT) -> dict[str, dict[str, float]]:
    """metrics/headline.json: the claim's key numbers. For the student and CMVAE: full-ranking Recall@K and
    NDCG@K on T_diverse (the primary test set when there is no T_diverse), truth NDCG@K and |bias
    amplification|@K on the primary test set; for every other variant its full Recall@K there, while the
    file stays within `limit` numbers (later variants in the report's order are left out, with a log line)."""
    where = "t_diverse" if "t_diverse" in sets else primary
    core = {f"{where}/full/recall@{k}": None, f"{where}/full/ndcg@{k}": None,
            f"{primary}/{GRADED}/ndcg@{k}": None, f"{primary}/{GRADED}/abs_bias_amplification@{k}": None}
    out: dict[str, dict[str, float]] = {}
    count = 0
    for name in order_variants(summary):
        mean = summary[name].get("mean", {})
        wanted = core if name in ("student", BASELINE) else {f"{where}/full/recall@{k}": None}
        row = {}
        for key in wanted:
            signed = key.replace("abs_bias_amplification", "bias_amplification")
            if signed in mean:
                row[key] = abs(mean[signed]) if signed != key else mean[key]
        if count + len(row) > limit:
            log.warning("headline: %s left out (metrics/headline.json holds at most %d numbers)", name, limit)
            continue
        if row:
            out[name] = row
            count += len(row)
    return out
