"""Markdown tables of reports/tables.md: the papers' layouts (CMVAE Table 2, DebCM Table 3) and one table per
test set and protocol, each cell the mean ± std over seeds, degenerate cells marked ⚠; and the intervention
sweep table (test Recall against the ratio X)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import pandas as pd

from pipeline.report.pervideo import GRADED, MetricKey, order_variants

Summary = Mapping[str, Mapping[str, Mapping[str, float]]]
NOT_PUBLISHED = "not available offline"  # the papers' own numbers: none could be read from a source reachable here
PUBLISHED_NOTE = ("'as published (their data)': the papers' numbers on TT-150k(-genre) could not be read from any "
                  "source reachable offline, so none is quoted; they would be another dataset's numbers anyway.")
DEGENERATE_NOTE = ("⚠ degenerate cell: fewer than report.min_videos test videos, or K at least half of the "
                   "candidates (a full ranking of a small pool hits almost surely); it decides nothing. "
                   "degradations.md says which sets and why.")


@dataclass(frozen=True)
class SetShape:
    """What a test set's numbers rest on: its videos, and the candidates each is ranked among."""

    videos: int
    sampled: int  # the chosen music + the sampled negatives
    full: int  # the UGC ranking pool (also what the truth metrics rank)


def degenerate(shape: SetShape, protocol: str, k: int, min_videos: int) -> str | None:
    """Why numbers of this set, protocol and K cannot be read as evidence (None: they can)."""
    reasons = []
    if shape.videos < min_videos:
        reasons.append(f"{shape.videos} test videos (< report.min_videos {min_videos})")
    candidates = shape.sampled if protocol == "sampled" else shape.full
    if 2 * k >= candidates:
        reasons.append(f"K = {k} is at least half of the {candidates} {protocol}-protocol candidates")
    return "; ".join(reasons) or None


@dataclass(frozen=True)
class Degeneracy:
    """degenerate() over a run's test sets; the top-level `truth/` keys are the primary set's."""

    shapes: Mapping[str, SetShape]
    min_videos: int
    primary: str | None = None

    def cell(self, name: str, protocol: str, k: int) -> str | None:
        shape = self.shapes.get(self.primary if name == "all" else name)
        return None if shape is None else degenerate(shape, protocol, k, self.min_videos)

    def __call__(self, key: MetricKey) -> str | None:
        return self.cell(key.set, key.protocol, key.k)

    def flagged(self, ks: Sequence[int], summary: Summary | None = None) -> dict[tuple[str, str, int], str]:
        """Every (set, protocol, K) that is degenerate, with why; with `summary`, only those it has numbers
        for (no truth metrics on real data)."""
        have = None if summary is None else {"/".join(key.split("/")[:2]) for m in summary.values()
                                             for key in m["mean"]}
        return {(s, p, k): why for s in sorted(self.shapes) for p in ("sampled", "full", GRADED) for k in ks
                if (have is None or f"{s}/{p}" in have) and (why := self.cell(s, p, k))}


NO_FLAG = Degeneracy({}, 0)


def cell(summary: Summary, variant: str, key: str, flag: str | None = None, digits: int = 3) -> str:
    mean, std = summary[variant]["mean"].get(key), summary[variant]["std"].get(key)
    if mean is None:
        return "–"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" + (" ⚠" if flag else "")


def _split_key(key: str) -> tuple[str, str, str, int] | None:
    """`<set>/<protocol>/<metric>@K` -> (set, protocol, metric, K); truth keys of a set have protocol
    "truth"; the top-level `truth/<metric>@K` is set "all", protocol "truth"."""
    head, at, k = key.rpartition("@")
    if not at or not k.isdigit():
        return None
    parts = head.split("/")
    if len(parts) == 2 and parts[0] == GRADED:
        return "all", GRADED, parts[1], int(k)
    if len(parts) == 3:
        return parts[0], parts[1], parts[2], int(k)
    return None


TABLE_METRICS = {"sampled": ("recall", "ndcg"), "full": ("recall", "ndcg"), GRADED: ("ndcg", "bias_amplification")}
SHORT = {"recall": "R", "ndcg": "N", "bias_amplification": "BA"}


def set_tables(summary: Summary, variants: Sequence[str] | None = None, flags: Degeneracy = NO_FLAG) -> str:
    """Markdown, one table per test set and protocol: a row per variant, columns R@K then N@K (truth: truth
    NDCG@K, then bias amplification BA@K, signed), mean ± std over seeds."""
    have = [v for v in (variants if variants is not None else order_variants(summary)) if v in summary]
    if not have:
        return "(no metrics)\n"
    cells: dict[tuple[str, str], dict[tuple[str, int], None]] = {}
    for key in summary[have[0]]["mean"]:
        parsed = _split_key(key)
        if parsed and parsed[2] in TABLE_METRICS.get(parsed[1], ()):
            cells.setdefault((parsed[0], parsed[1]), {})[(parsed[2], parsed[3])] = None
    protocol_order = list(TABLE_METRICS)
    out = []
    for (name, protocol) in sorted(cells, key=lambda sp: (sp[0] == "all", sp[0], protocol_order.index(sp[1]))):
        columns = sorted(cells[(name, protocol)], key=lambda mk: (TABLE_METRICS[protocol].index(mk[0]), mk[1]))
        title = "all truth metrics of the intervene scheme's test set" if name == "all" else name
        out.append(f"### {title} — {protocol}\n")
        out.append("| variant | " + " | ".join(f"{SHORT[m]}@{k}" for m, k in columns) + " |")
        out.append("|" + "---|" * (len(columns) + 1))
        prefix = f"{GRADED}/" if name == "all" else f"{name}/{protocol}/"
        for v in have:
            row = [cell(summary, v, f"{prefix}{m}@{k}", flags.cell(name, protocol, k)) for m, k in columns]
            out.append(f"| {v} | " + " | ".join(row) + " |")
        out.append("")
    return "\n".join(out)


def paper_ks(ks: Sequence[int], wanted: Sequence[int]) -> list[int]:
    """The paper's K values this run evaluated, or every evaluated K when it has none of them."""
    return [k for k in wanted if k in ks] or sorted(ks)


def cmvae_table2(summary: Summary, ks: Sequence[int], flags: Degeneracy = NO_FLAG) -> str:
    """CMVAE paper Table 2's layout: a row per model, weak then strong generalisation, Recall@10/15/20/25 under
    the papers' protocol (the chosen music among sampled negatives)."""
    schemes = [s for s in ("weak", "strong") if any(f"{s}/sampled/recall@{k}" in m["mean"]
                                                     for m in summary.values() for k in ks)]
    if not schemes:
        return "This run has no weak or strong split (the source ships its own split), so there is no Table 2.\n"
    columns = [(s, k) for s in schemes for k in paper_ks(ks, (10, 15, 20, 25))]
    out = ["| model | " + " | ".join(f"{s} R@{k}" for s, k in columns) + " | as published (their data) |",
           "|" + "---|" * (len(columns) + 2)]
    for v in order_variants(summary):
        row = [cell(summary, v, f"{s}/sampled/recall@{k}", flags.cell(s, "sampled", k)) for s, k in columns]
        out.append(f"| {v} | " + " | ".join(row) + f" | {NOT_PUBLISHED} |")
    return "\n".join(out) + "\n"


def debcm_table3(summary: Summary, ks: Sequence[int], with_pgc: Sequence[str],
                 verdicts: Mapping[tuple[str, str], str], flags: Degeneracy = NO_FLAG) -> str:
    """DebCM paper Table 3's layout: rows grouped by the data a model trained on (UGC only; UGC + PGC through
    the teacher), columns T_diverse then T_matching, Recall and NDCG @15 and @25 (sampled protocol). A cell
    the claim table judged carries its paired verdict against CMVAE in brackets."""
    sets = [s for s in ("t_diverse", "t_matching") if any(k.startswith(f"{s}/") for m in summary.values()
                                                          for k in m["mean"])]
    if not sets:
        return "This run has no T_diverse or T_matching set (degradations.md says why), so there is no Table 3.\n"
    columns = [(s, m, k) for s in sets for k in paper_ks(ks, (15, 25)) for m in ("recall", "ndcg")]
    out = ["| data | model | " + " | ".join(f"{s} {SHORT[m]}@{k}" for s, m, k in columns)
           + " | as published (their data) |", "|" + "---|" * (len(columns) + 3)]
    variants = order_variants(summary)
    groups = (("UGC only", [v for v in variants if v not in with_pgc]), ("UGC + PGC", [v for v in variants
                                                                                    if v in with_pgc]))
    for group, members in groups:
        for v in members:
            row = []
            for s, m, k in columns:
                key = f"{s}/sampled/{m}@{k}"
                judged = verdicts.get((v, key))
                row.append(cell(summary, v, key, flags.cell(s, "sampled", k)) + (f" [{judged}]" if judged else ""))
            out.append(f"| {group} | {v} | " + " | ".join(row) + f" | {NOT_PUBLISHED} |")
    return "\n".join(out) + "\n"


def intervention_table(summary: Summary, k: int, metric: str = "recall", protocol: str = "full",
                       variants: Sequence[str] | None = None) -> pd.DataFrame:
    """Test `metric@k` against the intervention ratio X (the papers' robustness figure): a row per X found in
    the summaries, a column per variant (seed mean) and `<variant>_std`."""
    have = [v for v in (variants if variants is not None else order_variants(summary)) if v in summary]
    pattern = re.compile(rf"^intervention_([0-9.]+)/{re.escape(protocol)}/{re.escape(metric)}@{k}$")
    ratios = sorted({m.group(1) for v in have for key in summary[v]["mean"] if (m := pattern.match(key))}, key=float)
    rows = []
    for x in ratios:
        row: dict[str, float] = {"ratio": float(x)}
        for v in have:
            key = f"intervention_{x}/{protocol}/{metric}@{k}"
            row[v] = summary[v]["mean"].get(key, float("nan"))
            row[f"{v}_std"] = summary[v]["std"].get(key, float("nan"))
        rows.append(row)
    return pd.DataFrame(rows, columns=["ratio", *[c for v in have for c in (v, f"{v}_std")]])


def tables_md(summary: Summary, ks: Sequence[int], seeds: Sequence[int], with_pgc: Sequence[str],
              verdicts: Mapping[tuple[str, str], str], flags: Degeneracy = NO_FLAG) -> str:
    """reports/tables.md: the two paper tables, then every set and protocol."""
    marked = any(flags.flagged(ks, summary))
    return "\n".join([
        f"# Every variant on every test set (mean ± std over seeds {list(seeds)})\n",
        "R: weighted Recall, N: weighted NDCG, BA: bias amplification (signed; its magnitude is the distortion). "
        "What this run skipped or could not do, and why: [degradations.md](degradations.md).\n",
        "## CMVAE paper, Table 2 layout: weak and strong generalisation (sampled protocol)\n",
        cmvae_table2(summary, ks, flags),
        "## DebCM paper, Table 3 layout: intervened test sets (sampled protocol)\n",
        debcm_table3(summary, ks, with_pgc, verdicts, flags),
        "[yes] / [no] / [worse]: the paired verdict against cmvae in claim.md (only at report.claim_k). "
        + PUBLISHED_NOTE + "\n",
        *([DEGENERATE_NOTE + "\n"] if marked else []),
        "## Every test set and protocol\n",
        set_tables(summary, flags=flags),
    ])

