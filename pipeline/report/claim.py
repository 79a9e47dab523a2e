"""The claim table (the pre-registered contrasts, e.g. student vs cmvae_kl for the adjustment, and every other
debiasing variant against CMVAE, on T_diverse, T_matching and the truth metrics; seed-aware paired verdicts
with Holm over the confirmatory family) and metrics/headline.json, the few numbers DVC tracks."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from pipeline.report.pervideo import GRADED, MetricKey, is_reference, order_variants, paired
from pipeline.errors import ParamsError
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


# What each pre-registered contrast tests (docs/architecture.md section 10: a claim about what debiases names the
# contrast that tests it).
CONTRAST_MEANING = {
    ("student", "cmvae"): "the whole method (adjustment and teacher) against plain CMVAE",
    ("student", "cmvae_kl"): "the backdoor adjustment, given the teacher",
    ("cmvae_kl", "cmvae"): "the teacher, without the adjustment",
    ("student", "no_teacher"): "the teacher, given the adjustment",
    ("no_teacher", "cmvae"): "the adjustment, without the teacher",
    ("student", "linear_pgc"): "the method against a ridge map on UGC + PGC",
    ("student", "teacher_alone"): "the student against its teacher alone",
}
FAMILIES = ("confirmatory", "exploratory", "degenerate")


@dataclass(frozen=True)
class Contrast:
    challenger: str
    baseline: str

    @property
    def label(self) -> str:
        return f"{self.challenger} vs {self.baseline}"


def parse_contrast(text: str, where: str = "report.contrasts") -> Contrast:
    """'a vs b' -> Contrast(a, b)."""
    parts = [p.strip() for p in str(text).split(" vs ")]
    if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
        raise ParamsError(f"{where}: {text!r}, expected '<challenger> vs <baseline>' (two different variants)")
    return Contrast(*parts)


def confirmatory_key(key: MetricKey, patterns: Sequence[str], primary: str | None) -> bool:
    """Is `key` one of the pre-registered metrics ('<set>/<protocol>/<metric>', set 'primary' = the intervene
    scheme's own test set)?"""
    for pattern in patterns:
        parts = str(pattern).split("/")
        if len(parts) != 3:
            raise ParamsError(f"report.confirmatory: {pattern!r}, expected '<set>/<protocol>/<metric>'")
        s = primary if parts[0] == "primary" else parts[0]
        if (s, parts[1], parts[2]) == (key.set, key.protocol, key.metric):
            return True
    return False


@dataclass(frozen=True)
class ClaimRow:
    challenger: str
    key: MetricKey
    challenger_seeds: tuple[float, ...]  # the weighted metric on each shared seed
    baseline_seeds: tuple[float, ...]
    comparison: Comparison
    p_holm: float  # NaN outside the confirmatory family
    verdict: str
    baseline: str = BASELINE
    family: str = "confirmatory"  # confirmatory (Holm over these) | exploratory (uncorrected) | degenerate (n/a)


def _seed_means(values: np.ndarray, weight: np.ndarray) -> tuple[float, ...]:
    return tuple(float(np.sum(values[:, s] * weight) / np.sum(weight)) for s in range(values.shape[1]))


def _planned(variants: Sequence[str], contrasts: Sequence[Contrast], baseline: str) -> list[Contrast]:
    """The pre-registered contrasts whose variants both ran, then every other challenger against `baseline`."""
    have = set(variants)
    out = [c for c in contrasts if c.challenger in have and c.baseline in have]
    out += [Contrast(name, baseline) for name in challengers(variants, baseline)
            if Contrast(name, baseline) not in out and baseline in have]
    return out


def claim_rows(per_video: pd.DataFrame, keys: Sequence[MetricKey], variants: Sequence[str],
               baseline: str = BASELINE, resamples: int = 9999, seed: int = 0,
               contrasts: Sequence[Contrast] | None = None, confirmatory: Sequence[str] | None = None,
               primary: str | None = None, flag: Callable[[MetricKey], str | None] = lambda key: None
               ) -> list[ClaimRow]:
    """Each planned contrast on each key the two variants share (seed-aware paired tests, stats.compare).

    The family (docs/architecture.md section 10): the pre-registered `contrasts` on the `confirmatory` metrics,
    on sets that are not
    degenerate (`flag`); Holm runs over it alone. Other rows are exploratory (uncorrected p, labelled) or
    degenerate ("n/a", out of every family). contrasts=None: every challenger against `baseline`, all
    confirmatory (the table as it was before contrasts were named)."""
    planned = _planned(variants, contrasts or [], baseline) if contrasts is not None else \
        [Contrast(name, baseline) for name in challengers(variants, baseline)]
    found = []
    for contrast in planned:
        for key in keys:
            pair = paired(per_video, contrast.challenger, contrast.baseline, key)
            if pair is None:
                continue
            c = compare(pair.x, pair.y, pair.weight, key.magnitude, resamples, seed)
            if flag(key):
                family = "degenerate"
            elif contrasts is None or (contrast in contrasts and confirmatory_key(key, confirmatory or [], primary)):
                family = "confirmatory"
            else:
                family = "exploratory"
            found.append((contrast, key, pair, c, family))
    confirmed = [i for i, f in enumerate(found) if f[4] == "confirmatory"]
    corrected = dict(zip(confirmed, holm([found[i][3].p for i in confirmed])))
    rows = []
    for i, (contrast, key, pair, c, family) in enumerate(found):
        p = corrected.get(i, math.nan)
        if family == "confirmatory":
            judged = verdict(c, float(p), lower_is_better=key.magnitude)
        elif family == "exploratory":
            judged = verdict(c, c.p, lower_is_better=key.magnitude)
        else:
            judged = "n/a"
        rows.append(ClaimRow(contrast.challenger, key, _seed_means(pair.x, pair.weight),
                             _seed_means(pair.y, pair.weight), c, float(p), judged, contrast.baseline, family))
    return rows


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


def _shown_verdict(r: ClaimRow) -> str:
    return {"confirmatory": r.verdict, "exploratory": f"({r.verdict}, exploratory)", "degenerate": "n/a"}[r.family]


def claim_table(rows: Sequence[ClaimRow], baseline: str = BASELINE,
                flag: Callable[[MetricKey], str | None] = lambda key: None) -> str:
    """Markdown: a section per contrast; columns challenger and baseline (mean ± std over seeds), effect,
    seed-aware 95% CI, p (Holm over the confirmatory family; raw p for exploratory rows), the video-level CI
    beside it, seeds agreeing, videos, family, verdict. `flag(key)` names why a set is degenerate (⚠)."""
    if not rows:
        return f"No variant shares a claim metric with {baseline} in this run.\n"
    out = []
    for pair in dict.fromkeys((r.challenger, r.baseline) for r in rows):
        name, base = pair
        meaning = CONTRAST_MEANING.get(pair)
        out += [f"### {name} vs {base}" + (f": {meaning}" if meaning else "") + "\n",
                f"| metric | {name} | {base} | effect | 95% CI (seeds + videos) | p | video-level CI | seeds agree "
                "| videos | family | verdict |",
                "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in (r for r in rows if (r.challenger, r.baseline) == pair):
            c = r.comparison
            mark = " ⚠" if flag(r.key) or r.family == "degenerate" else ""
            p = r.p_holm if r.family == "confirmatory" else c.p
            out.append(f"| {_label(r.key)}{mark} | {_mean_std(r.challenger_seeds)} | {_mean_std(r.baseline_seeds)} "
                       f"| {_num(c.effect)} | [{_num(c.low)}, {_num(c.high)}] | {_p(p)} "
                       f"| [{_num(c.video_low)}, {_num(c.video_high)}] "
                       f"| {c.seeds_agreeing}/{len(c.seed_effects)} | {c.n_videos} | {r.family} | {_shown_verdict(r)} |")
        out.append("")
    n_seeds = max(len(r.comparison.seed_effects) for r in rows)
    n_family = sum(r.family == "confirmatory" for r in rows)
    out.append(
        f"Mean ± standard deviation over {n_seeds} seed(s) (ddof 1) of each variant's metric on the videos both "
        "variants were scored on. Effect: challenger − baseline of the weighted mean over videos of each video's "
        "seed-mean value (Recall/NDCG weighted by lambda_v, truth metrics unweighted as in evaluate); for bias "
        "amplification, which is signed and shown signed, the effect is |challenger| − |baseline| (serving the "
        "uploaders' taste less than the truth is a distortion too), so below 0 is better. 95% CI and p are "
        "seed-aware (pipeline/report/stats.py): the standard error adds the spread of the seeds' own effects "
        "(training noise) to a paired bootstrap over test videos, against Student's t (Welch-Satterthwaite df); "
        "one seed cannot decide (n/a). The video-level CI (bootstrap over videos of seed means) ignores the "
        f"seeds and is shown for comparison only. p of a confirmatory row is Holm-corrected over the {n_family} "
        "confirmatory rows of this file (the pre-registered contrasts, report.contrasts, on the pre-registered "
        "metrics, report.confirmatory); exploratory rows show their uncorrected p and a bracketed verdict that "
        "decides nothing; a degenerate set's rows are n/a and in no family. Verdict 'yes' when the challenger is "
        f"better and p < {ALPHA}; 'worse' for the same evidence the other way; else 'no'.\n")
    if any(flag(r.key) or r.family == "degenerate" for r in rows):
        out.append("⚠ degenerate set (too few test videos, or K at least half the candidates): its numbers "
                   "decide nothing and it gets no verdict; see degradations.md.\n")
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
