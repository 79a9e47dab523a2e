"""Seed aggregation and the claim table: from per-seed flat metrics to mean / std per variant, and a
markdown table that states whether DebCM beats CMVAE by more than the seed-to-seed spread."""
from __future__ import annotations

import contextlib
import re
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from pipeline.models.baselines import VARIANTS

# (metric key, higher is better) of the claim under test: T_diverse and the truth metrics
CLAIM_METRICS = (("t_diverse/sampled/recall@{k}", True), ("t_diverse/sampled/ndcg@{k}", True),
                 ("t_diverse/full/recall@{k}", True), ("t_diverse/full/ndcg@{k}", True),
                 ("t_diverse/truth/ndcg@{k}", True), ("t_diverse/truth/bias_amplification@{k}", False),
                 ("truth/ndcg@{k}", True), ("truth/bias_amplification@{k}", False))


def aggregate(per_seed: Mapping[int, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """{"mean": {key: mean over seeds}, "std": {key: sample std (ddof 1; 0 for one seed)}} for keys every
    seed has, sorted (stable JSON for `dvc metrics diff`)."""
    seeds = sorted(per_seed)
    if not seeds:
        return {"mean": {}, "std": {}}
    keys = sorted(set.intersection(*(set(per_seed[s]) for s in seeds)))
    mean, std = {}, {}
    for key in keys:
        values = np.array([per_seed[s][key] for s in seeds], dtype=np.float64)
        mean[key] = float(values.mean())
        std[key] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return {"mean": mean, "std": std}


def beats(a_mean: float, a_std: float, b_mean: float, b_std: float, higher_better: bool) -> bool:
    """Does a beat b by more than the seed spread? The gap must exceed the sum of both standard deviations
    (a gap inside either model's own seed noise is not a result)."""
    gap = (a_mean - b_mean) if higher_better else (b_mean - a_mean)
    return bool(gap > a_std + b_std)


def claim_table(summary: Mapping[str, Mapping[str, Mapping[str, float]]], k: int, n_seeds: int,
                variants: Sequence[str] = VARIANTS,
                challenger: str = "student", baseline: str = "cmvae") -> str:
    """Markdown: one row per claim metric, mean +- std of each variant, and the verdict of
    `challenger` vs `baseline`. Metrics a summary lacks (no truth on real data) are left out."""
    have = [v for v in variants if v in summary]
    head = "| metric | " + " | ".join(have) + f" | {challenger} beats {baseline} beyond the spread |"
    lines = [head, "|" + "---|" * (len(have) + 2)]
    for template, higher in CLAIM_METRICS:
        key = template.format(k=k)
        if not all(key in summary[v]["mean"] for v in have):
            continue
        cells = [f"{summary[v]['mean'][key]:.4f} ± {summary[v]['std'][key]:.4f}" for v in have]
        verdict = "n/a"
        if challenger in have and baseline in have:
            a, b = summary[challenger], summary[baseline]
            verdict = "yes" if beats(a["mean"][key], a["std"][key], b["mean"][key], b["std"][key], higher) else "no"
        arrow = "↑" if higher else "↓"
        lines.append(f"| {key} {arrow} | " + " | ".join(cells) + f" | {verdict} |")
    note = (f"\nMean ± standard deviation over {n_seeds} seed(s) (ddof 1). 'yes' when the gap in the better "
            "direction exceeds the sum of the two standard deviations.\n")
    return "\n".join(lines) + "\n" + note


# ---------------------------------------------------------------- paper-style tables

def _split_key(key: str) -> tuple[str, str, str, int] | None:
    """`<set>/<protocol>/<metric>@K` -> (set, protocol, metric, K); truth keys of a set have protocol
    "truth"; the top-level `truth/<metric>@K` is set "all", protocol "truth"."""
    head, at, k = key.rpartition("@")
    if not at or not k.isdigit():
        return None
    parts = head.split("/")
    if len(parts) == 2 and parts[0] == "truth":
        return "all", "truth", parts[1], int(k)
    if len(parts) == 3:
        return parts[0], parts[1], parts[2], int(k)
    return None


TABLE_METRICS = {"sampled": ("recall", "ndcg"), "full": ("recall", "ndcg"), "truth": ("ndcg", "bias_amplification")}
SHORT = {"recall": "R", "ndcg": "N", "bias_amplification": "BA"}


def set_tables(summary: Mapping[str, Mapping[str, Mapping[str, float]]],
               variants: Sequence[str] = VARIANTS) -> str:
    """Markdown, one table per test set and protocol as in the papers: a row per variant, columns R@K then
    N@K (truth: truth NDCG@K, then bias amplification BA@K, lower is better), mean ± std over seeds."""
    have = [v for v in variants if v in summary]
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
        prefix = "truth/" if name == "all" else f"{name}/{protocol}/"
        for v in have:
            row = []
            for m, k in columns:
                key = f"{prefix}{m}@{k}"
                mean, std = summary[v]["mean"].get(key), summary[v]["std"].get(key)
                row.append("–" if mean is None else f"{mean:.3f} ± {std:.3f}")
            out.append(f"| {v} | " + " | ".join(row) + " |")
        out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------- genre shares of the top-K

def genre_shares(top: np.ndarray, genre_codes: np.ndarray, n_genres: int) -> np.ndarray:
    """Share of each genre among all the top-K lists `top` [N, K] (indices into `genre_codes`); sums to 1."""
    top = np.asarray(top)
    if top.ndim != 2 or top.size == 0:
        raise ValueError(f"genre_shares: top must be a non-empty [N, K] array, got shape {top.shape}")
    counts = np.bincount(np.asarray(genre_codes)[top].ravel(), minlength=n_genres).astype(np.float64)
    return counts / counts.sum()


def true_top(relevance: np.ndarray, k: int) -> np.ndarray:
    """[N, k] indices of each row's k most compatible music (stable: ties keep the lower index)."""
    return np.argsort(-np.asarray(relevance, dtype=np.float64), axis=1, kind="stable")[:, :k]


@contextlib.contextmanager
def _png(path, columns: int, size: tuple[float, float]):
    """Axes (one, or a tuple of `columns`) of a new figure, written to `path` as a PNG when the block ends:
    headless (Agg), 100 dpi, and without the Software metadata, so the same numbers give the same bytes."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, axes = plt.subplots(1, columns, figsize=size, dpi=100)
    try:
        yield axes
        fig.tight_layout()
        fig.savefig(path, format="png", metadata={"Software": None})
    finally:
        plt.close(fig)


def plot_genre_shares(shares: Mapping[str, np.ndarray], genres: Sequence[str], title: str, path) -> None:
    """Grouped bar chart (one group per genre, one bar per row of `shares`) written as a PNG without
    the Software/date metadata, so that the same numbers give the same bytes."""
    names = list(shares)
    width = 0.8 / max(len(names), 1)
    x = np.arange(len(genres))
    with _png(path, 1, (8, 4)) as ax:
        for i, name in enumerate(names):
            ax.bar(x + (i - (len(names) - 1) / 2) * width, shares[name], width, label=name)
        ax.set_xticks(x, list(genres))
        ax.set_ylabel("share of the top-K lists")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8, ncols=2)


# ---------------------------------------------------------------- sweeps

def intervention_table(summary: Mapping[str, Mapping[str, Mapping[str, float]]], k: int, metric: str = "recall",
                       protocol: str = "full",
                       variants: Sequence[str] = VARIANTS) -> pd.DataFrame:
    """Test `metric@k` against the intervention ratio X (the papers' robustness figure): a row per X found in
    the summaries, a column per variant (seed mean) and `<variant>_std`."""
    have = [v for v in variants if v in summary]
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


def plot_sweeps(kl: pd.DataFrame | None, intervention: pd.DataFrame, variants: Sequence[str], k: int,
                configured_kl: float | None, path) -> None:
    """Two panels: validation Recall against the student's KL weight (symlog x: the sweep starts at 0), and
    each variant's test Recall@k against the intervention ratio X; error bars are the seed std. PNG bytes
    depend only on the numbers (no Software/date metadata)."""
    with _png(path, 2, (10, 4)) as (left, right):
        if kl is not None and len(kl):
            left.errorbar(kl["kl_weight"], kl["val_recall"], yerr=kl["val_recall_std"], marker="o", capsize=3,
                          label="student, all swept runs")
            for col in [c for c in kl.columns if c.startswith("val_") and c not in ("val_recall", "val_recall_std")]:
                left.plot(kl["kl_weight"], kl[col], marker=".", linestyle=":", label=col.removeprefix("val_"))
            if configured_kl is not None:
                left.axvline(configured_kl, color="grey", linewidth=0.8, label=f"params: {configured_kl:g}")
            left.set_xscale("symlog", linthresh=0.1)
            left.set_xlim(-0.02, float(kl["kl_weight"].max()) * 1.5 + 0.1)
            left.legend(fontsize=8)
        else:
            left.text(0.5, 0.5, "no kl sweep", ha="center", va="center", transform=left.transAxes)
        left.set_xlabel("student.kl_weight")
        left.set_ylabel("validation Recall (early-stopping score)")
        left.set_title("teacher transfer weight", fontsize=10)
        if len(intervention):
            drawn = [v for v in variants if v in intervention]
            for i, v in enumerate(drawn):  # dodged a little: variants with equal numbers stay visible
                dodge = (i - (len(drawn) - 1) / 2) * 0.004
                right.errorbar(intervention["ratio"] + dodge, intervention[v], yerr=intervention[f"{v}_std"],
                               marker="o", capsize=3, label=v)
            right.legend(fontsize=8)
        else:
            right.text(0.5, 0.5, "no intervention splits", ha="center", va="center", transform=right.transAxes)
        right.set_xlabel("intervention ratio X")
        right.set_ylabel(f"test Recall@{k} (full ranking)")
        right.set_title("robustness to the genre intervention", fontsize=10)
