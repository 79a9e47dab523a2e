"""The report's one source of numbers: evaluate's per-video table (variant, seed, set, video_id, weight,
rank_sampled, rank_full and, on the simulated world, ndcg@K, pred_share@K, true_share@K).

From it: each metric per video (what the paired tests compare), each seed's flat metrics (the same
`<set>/<protocol>/<metric>@K` keys evaluate writes) and their mean / std over seeds.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from pipeline.errors import DataError
from pipeline.evaluate import set_metrics
from pipeline.metrics import aggregate

# The CMVAE paper's comparison models (its Table 2; pipeline/models/cmvae_paper) and the simple baselines
# (docs/architecture.md section 9): references in every table, not debiasing methods, so never a challenger.
PAPER_BASELINES = ("cevar", "cmvbr", "dscmr", "uwml", "dual_vae", "da_vae", "cross_vae")
SIMPLE_BASELINES = ("linear", "cca", "popularity", "random")
REFERENCES = PAPER_BASELINES + SIMPLE_BASELINES
# The report's row order: the paper's model, its ablations, the debiasing alternatives, then the references.
VARIANT_ORDER = ("student", "cmvae_kl", "no_teacher", "cmvae", "teacher_alone", "decrs", "interaction",
                 "interaction_content", "ips",
                 "dual_ips", "calibration", *REFERENCES)
REQUIRED = ("variant", "seed", "set", "video_id", "weight", "rank_sampled", "rank_full")
RANKED = ("sampled", "full")  # protocols that rank the chosen music (weighted by lambda_v)
GRADED = "truth"  # the protocol scored against the world's compatibility (unweighted, as evaluate does)


def is_reference(name: str) -> bool:
    """A reference row (a paper's comparison model, an ablation, a simple baseline, plain CMVAE on any data),
    not a debiasing method: the registry's row label does not name DebCM. An unknown name is a challenger."""
    from pipeline.models.baselines import REGISTRY

    if name in REFERENCES:
        return True
    spec = REGISTRY.get(name)
    return spec is not None and not spec.row.startswith("DebCM")


def uses_pgc(name: str) -> bool:
    """Does the variant learn from PGC data (DebCM Table 3's "UGC + PGC" group)?"""
    from pipeline.models.baselines import REGISTRY

    spec = REGISTRY.get(name)
    return spec is not None and spec.data in ("ugc+pgc", "pgc")


def order_variants(names: Iterable[str]) -> list[str]:
    """Known variants in VARIANT_ORDER, then any other name alphabetically (a variant added later still shows)."""
    names = set(names)
    return [v for v in VARIANT_ORDER if v in names] + sorted(names - set(VARIANT_ORDER))


@dataclass(frozen=True)
class MetricKey:
    """One metric of one test set: `set`/`protocol`/`metric`@`k` (protocol sampled | full | truth)."""

    set: str
    protocol: str
    metric: str  # recall | ndcg | bias_amplification
    k: int

    @property
    def key(self) -> str:
        return f"{self.set}/{self.protocol}/{self.metric}@{self.k}"

    @property
    def magnitude(self) -> bool:
        """Bias amplification is signed, but both signs distort: it is compared by |value| (lower is better)."""
        return self.metric == "bias_amplification"


def check_table(per_video: pd.DataFrame, where: str | Path) -> pd.DataFrame:
    """The table with its required columns, or a DataError naming the first missing one."""
    missing = [c for c in REQUIRED if c not in per_video.columns]
    if missing:
        raise DataError(f"{where}: column {missing[0]!r} is missing; the evaluate stage writes "
                        f"{list(REQUIRED)} (re-run it)")
    if per_video.empty:
        raise DataError(f"{where}: no rows; the evaluate stage scored no variant")
    return per_video


def has_values(rows: pd.DataFrame, key: MetricKey) -> bool:
    """Does this table hold what `key` needs (truth columns exist only on the simulated world)?"""
    if key.protocol in RANKED:
        return True
    need = [f"ndcg@{key.k}"] if key.metric == "ndcg" else [f"pred_share@{key.k}", f"true_share@{key.k}"]
    return all(c in rows.columns and rows[c].notna().all() for c in need)


def video_values(rows: pd.DataFrame, key: MetricKey) -> np.ndarray:
    """Per row (video), the metric's value: Recall@K's hit [rank <= K], NDCG@K's 1/log2(rank + 1) (one
    relevant music; docs/architecture.md section 7), truth NDCG@K, or signed bias amplification."""
    if key.protocol in RANKED:
        rank = rows[f"rank_{key.protocol}"].to_numpy(dtype=np.float64)
        if key.metric == "recall":
            return (rank <= key.k).astype(np.float64)
        if key.metric == "ndcg":
            return np.where(rank <= key.k, 1.0 / np.log2(rank + 1.0), 0.0)
    elif key.protocol == GRADED and has_values(rows, key):
        if key.metric == "ndcg":
            return rows[f"ndcg@{key.k}"].to_numpy(dtype=np.float64)
        if key.metric == "bias_amplification":
            return (rows[f"pred_share@{key.k}"] - rows[f"true_share@{key.k}"]).to_numpy(dtype=np.float64)
    raise DataError(f"per-video table: no values for {key.key} (columns {sorted(rows.columns)})")


def video_weights(rows: pd.DataFrame, key: MetricKey) -> np.ndarray:
    """lambda_v for the ranking metrics (the papers' weighting); equal weights for the truth metrics, which
    evaluate averages over videos unweighted."""
    if key.protocol in RANKED:
        return rows["weight"].to_numpy(dtype=np.float64)
    return np.ones(len(rows), dtype=np.float64)


def per_seed_metrics(per_video: pd.DataFrame, ks: Sequence[int], primary: str | None
                     ) -> dict[str, dict[int, dict[str, float]]]:
    """{variant: {seed: flat metrics}} as evaluate computes them (pipeline.evaluate.set_metrics on each set),
    with `truth/<metric>@K` for the `primary` set (the intervene scheme's own test set)."""
    out: dict[str, dict[int, dict[str, float]]] = {}
    for (variant, seed, name), rows in per_video.groupby(["variant", "seed", "set"], sort=True):
        flat = set_metrics(rows.dropna(axis=1, how="all"), name, ks)
        seed_metrics = out.setdefault(str(variant), {}).setdefault(int(seed), {})
        seed_metrics.update(flat)
        if name == primary:
            prefix = f"{name}/{GRADED}/"
            seed_metrics.update({f"{GRADED}/" + k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)})
    return out


def summarize(per_video: pd.DataFrame, ks: Sequence[int], primary: str | None) -> dict[str, dict]:
    """{variant: {"mean": {key: ...}, "std": {key: ...}}} over seeds, variants in the report's order."""
    seeds = per_seed_metrics(per_video, ks, primary)
    return {v: aggregate(seeds[v]) for v in order_variants(seeds)}


@dataclass(frozen=True)
class Paired:
    """Two variants' values on the same videos and seeds: x (challenger), y (baseline) [videos, seeds]."""

    x: np.ndarray
    y: np.ndarray
    weight: np.ndarray  # [videos]
    seeds: tuple[int, ...]


def _matrix(rows: pd.DataFrame, key: MetricKey) -> pd.DataFrame:
    values = pd.DataFrame({"video_id": rows["video_id"].astype(str).to_numpy(), "seed": rows["seed"].to_numpy(),
                           "value": video_values(rows, key)})
    return values.pivot(index="video_id", columns="seed", values="value")


def _weights(rows: pd.DataFrame, key: MetricKey, seed: int) -> pd.Series:
    first = rows[rows["seed"] == seed].drop_duplicates("video_id")
    return pd.Series(video_weights(first, key), index=first["video_id"].astype(str).to_numpy())


def paired(per_video: pd.DataFrame, challenger: str, baseline: str, key: MetricKey) -> Paired | None:
    """Both variants' per-video values of `key` on the videos and seeds they share (None: nothing shared)."""
    rows = per_video[per_video["set"] == key.set]
    a, b = rows[rows["variant"] == challenger], rows[rows["variant"] == baseline]
    if a.empty or b.empty or not (has_values(a, key) and has_values(b, key)):
        return None
    xa, xb = _matrix(a, key), _matrix(b, key)
    seeds = sorted(set(xa.columns) & set(xb.columns))
    videos = sorted(set(xa.dropna(subset=seeds).index) & set(xb.dropna(subset=seeds).index))
    if not seeds or not videos:
        return None
    weight = _weights(b, key, seeds[0]).loc[videos]
    if not np.allclose(_weights(a, key, seeds[0]).loc[videos], weight, rtol=1e-9, atol=0.0):
        raise DataError(f"per-video table: {challenger} and {baseline} weigh the videos of {key.set} differently; "
                        "both must come from one dataset (re-run evaluate)")
    return Paired(xa.loc[videos, seeds].to_numpy(), xb.loc[videos, seeds].to_numpy(), weight.to_numpy(), tuple(seeds))


def set_sizes(per_video: pd.DataFrame) -> dict[str, int]:
    """Test videos per set (the most any variant and seed was scored on)."""
    counts = per_video.groupby(["set", "variant", "seed"])["video_id"].nunique()
    return {str(s): int(n) for s, n in counts.groupby(level="set").max().items()}


def variants_of(per_video: pd.DataFrame) -> list[str]:
    return order_variants(per_video["variant"].astype(str).unique())


def read_per_video(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: missing; run the evaluate stage first")
    return check_table(pd.read_parquet(path), path)

