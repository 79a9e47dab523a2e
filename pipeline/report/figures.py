"""The report's figures: the genre mix of each variant's top-K (genre_share.png) and the sweeps (sweeps.png).
PNG bytes depend only on the numbers: headless Agg, fixed dpi, no Software/date metadata."""
from __future__ import annotations

import contextlib
from typing import Mapping, Sequence

import numpy as np
import pandas as pd


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
