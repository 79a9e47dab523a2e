"""Ranking metrics of the papers (weighted Recall@K / NDCG@K), truth metrics of the simulated world, and their
mean / std over training seeds (`aggregate`: evaluate's metrics files and the report's tables).

Conventions, fixed here for every model:
- ranks are 1-based; ties are broken pessimistically: the positive ranks after every candidate with an
  equal score (rank = number of candidates scoring >= the positive), so a constant model is not rewarded;
- lambda_v = (1 / pop(m_v)) / sum_v' (1 / pop(m_v')), with pop clipped at 1 (a music never seen in training
  counts as seen once), and weighted metrics divide by the weights' sum rather than trusting it to be 1;
- scores are computed one chunk of videos at a time: one matrix product per chunk.
"""
from __future__ import annotations

import logging
from typing import Mapping, Sequence

import numpy as np
import torch

from pipeline.errors import DataError

log = logging.getLogger(__name__)

DEFAULT_KS: tuple[int, ...] = (10, 15, 20, 25)


class ScoreMatrix:
    """Scores of N videos against M music: a full [N, M] matrix, or embeddings multiplied chunk by chunk."""

    def __init__(self, scores=None, video_emb=None, music_emb=None):
        if (scores is None) == (video_emb is None or music_emb is None):
            raise DataError("ScoreMatrix: give either scores or both video_emb and music_emb")
        self.full = _tensor(scores) if scores is not None else None
        self.video_emb = _tensor(video_emb) if video_emb is not None else None
        self.music_emb = _tensor(music_emb) if music_emb is not None else None
        if self.full is not None:
            if self.full.ndim != 2:
                raise DataError(f"scores: shape {tuple(self.full.shape)}, expected (videos, music)")
            self.shape = tuple(self.full.shape)
        else:
            if self.video_emb.ndim != 2 or self.music_emb.ndim != 2 or self.video_emb.shape[1] != self.music_emb.shape[1]:
                raise DataError(f"embeddings: video {tuple(self.video_emb.shape)} and music "
                                f"{tuple(self.music_emb.shape)} must be 2-d with the same width")
            self.shape = (self.video_emb.shape[0], self.music_emb.shape[0])
            # Finite embeddings give finite scores, so rows need no check per chunk.
            for name, e in (("video", self.video_emb), ("music", self.music_emb)):
                bad = ~torch.isfinite(e).all(dim=1)
                if bool(bad.any()):
                    raise DataError(f"{name} embeddings: row {int(torch.nonzero(bad)[0, 0])} holds NaN or inf")

    def check_rows(self, s: torch.Tensor, start: int, what: str) -> None:
        """NaN scores would compare False and silently improve ranks: refuse them (full matrices only)."""
        if self.full is not None:
            _check_finite(s, start, what)

    def rows(self, start: int, stop: int) -> torch.Tensor:
        if self.full is not None:
            return self.full[start:stop]
        return self.video_emb[start:stop] @ self.music_emb.t()


def _tensor(x) -> torch.Tensor:
    """A float tensor: float64 stays float64 (exact tests), anything else becomes float32."""
    t = torch.as_tensor(x)
    return t if t.dtype == torch.float64 else t.float()


def _as_matrix(scores) -> ScoreMatrix:
    if isinstance(scores, ScoreMatrix):
        return scores
    if isinstance(scores, tuple) and len(scores) == 2:
        return ScoreMatrix(video_emb=scores[0], music_emb=scores[1])
    return ScoreMatrix(scores=scores)


def _check_finite(s: torch.Tensor, start: int, what: str) -> None:
    bad = ~torch.isfinite(s.sum(dim=1))  # one pass: a NaN or inf anywhere in a row makes its sum non-finite
    if bool(bad.any()):
        raise DataError(f"{what}: video row {start + int(torch.nonzero(bad)[0, 0])} has a NaN or inf score")


@torch.no_grad()
def positive_ranks(scores, positive_col) -> np.ndarray:
    """1-based rank of each row's positive column among that row's columns (ties pessimistic)."""
    s = _tensor(scores)
    pos = torch.as_tensor(np.asarray(positive_col), dtype=torch.long, device=s.device)
    if s.ndim != 2 or pos.shape != (s.shape[0],):
        raise DataError(f"positive_ranks: scores {tuple(s.shape)} and positives {tuple(pos.shape)} do not match")
    if bool(((pos < 0) | (pos >= s.shape[1])).any()):
        raise DataError(f"positive_ranks: a positive column is outside [0, {s.shape[1]})")
    _check_finite(s, 0, "positive_ranks")
    target = s.gather(1, pos.unsqueeze(1))
    return (s >= target).sum(dim=1).cpu().numpy().astype(np.int64)


@torch.no_grad()
def sampled_ranks(scores, candidates, chunk_size: int = 4096) -> np.ndarray:
    """Rank of the positive among [positive + sampled negatives] (the papers' 100-negative protocol).

    `scores`: a ScoreMatrix, an (video_emb, music_emb) pair or a full [N, M] matrix; `candidates` [N, C]
    music indices with the positive in column 0 and the negatives after it.
    """
    sm = _as_matrix(scores)
    cand = torch.as_tensor(np.asarray(candidates), dtype=torch.long)
    n, m = sm.shape
    if cand.ndim != 2 or cand.shape[0] != n:
        raise DataError(f"sampled_ranks: candidates shape {tuple(cand.shape)}, expected ({n}, 1 + negatives)")
    if bool(((cand < 0) | (cand >= m)).any()):
        raise DataError(f"sampled_ranks: a candidate music index is outside [0, {m})")
    dup = (cand[:, 1:] == cand[:, :1]).any(dim=1)
    if bool(dup.any()):
        raise DataError(f"sampled_ranks: row {int(torch.nonzero(dup)[0, 0])} lists its positive among its negatives")
    out = []
    for start in range(0, n, chunk_size):
        s = sm.rows(start, start + chunk_size)
        c = cand[start:start + chunk_size].to(s.device)
        out.append(positive_ranks(s.gather(1, c), np.zeros(c.shape[0], dtype=np.int64)))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


@torch.no_grad()
def full_ranks(scores, positive, candidate_mask=None, chunk_size: int = 4096) -> np.ndarray:
    """Rank of each video's positive music among the whole pool (or the music where `candidate_mask`)."""
    sm = _as_matrix(scores)
    n, m = sm.shape
    pos = torch.as_tensor(np.asarray(positive), dtype=torch.long)
    if pos.shape != (n,) or bool(((pos < 0) | (pos >= m)).any()):
        raise DataError(f"full_ranks: positives must be {n} music indices in [0, {m})")
    mask = None
    if candidate_mask is not None:
        mask = torch.as_tensor(np.array(candidate_mask, dtype=bool))
        if mask.shape != (m,):
            raise DataError(f"full_ranks: candidate_mask shape {tuple(mask.shape)}, expected ({m},)")
        if not bool(mask[pos].all()):
            raise DataError(f"full_ranks: video row {int(torch.nonzero(~mask[pos])[0, 0])}: its positive music "
                            "is not in the candidate pool")
    log.debug("full ranking of %d videos against %d music (%s candidates)", n, m,
              "all" if mask is None else int(mask.sum()))
    out = []
    for start in range(0, n, chunk_size):
        s = sm.rows(start, start + chunk_size)
        sm.check_rows(s, start, "full_ranks")
        p = pos[start:start + chunk_size].to(s.device)
        target = s.gather(1, p.unsqueeze(1))
        beats = s >= target
        if mask is not None:
            beats &= mask.to(s.device).unsqueeze(0)
        out.append(beats.sum(dim=1, dtype=torch.int32).cpu().numpy().astype(np.int64))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def _weights(ranks: np.ndarray, weights) -> np.ndarray:
    if weights is None:
        return np.full(ranks.shape[0], 1.0 / max(ranks.shape[0], 1))
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != ranks.shape or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise DataError(f"metric weights: shape {w.shape} for {ranks.shape[0]} ranks; expected finite, "
                        "non-negative, positive sum")
    return w / w.sum()


def _ranks(ranks) -> np.ndarray:
    r = np.asarray(ranks)
    if r.ndim != 1 or (r.size and r.min() < 1):
        raise DataError("metric ranks: expected a vector of 1-based ranks")
    return r


def recall_at_k(ranks, k: int, weights=None) -> float:
    """Recall@K = sum_v lambda_v * [rank_v <= K] (one relevant music per video)."""
    r = _ranks(ranks)
    return float(np.sum(_weights(r, weights) * (r <= k)))


def ndcg_at_k(ranks, k: int, weights=None) -> float:
    """NDCG@K = sum_v lambda_v / log2(rank_v + 1) for rank_v <= K (ideal DCG is 1: one relevant music)."""
    r = _ranks(ranks)
    gain = np.where(r <= k, 1.0 / np.log2(r.astype(np.float64) + 1.0), 0.0)
    return float(np.sum(_weights(r, weights) * gain))


def ranking_metrics(ranks, ks: Sequence[int] = DEFAULT_KS, weights=None) -> dict[str, float]:
    """{'recall@K': ..., 'ndcg@K': ...} for every K, weighted by `weights` (uniform when None)."""
    out = {}
    for k in ks:
        out[f"recall@{k}"] = recall_at_k(ranks, k, weights)
        out[f"ndcg@{k}"] = ndcg_at_k(ranks, k, weights)
    return out


def _pessimistic_topk(s: torch.Tensor, rel: torch.Tensor, k: int) -> torch.Tensor:
    """Indices [n, k] of the k best-scored columns, best first; among equal scores the least relevant first."""
    width = min(k + 1, s.shape[1])
    vals, idx = s.topk(width, dim=1)
    if width > k and bool((vals[:, k] == vals[:, k - 1]).any()):
        # A tie straddles the k-th place: every column tied with the k-th must be considered.
        width = int((s >= vals[:, k - 1:k]).sum(dim=1, dtype=torch.int32).max())
        vals, idx = s.topk(width, dim=1)
    if not bool((vals[:, 1:] == vals[:, :-1]).any()):
        return idx[:, :k]  # topk is sorted by score and no ties: nothing to re-order
    order = torch.sort(rel.gather(1, idx), dim=1, stable=True).indices  # relevance ascending...
    vals, idx = vals.gather(1, order), idx.gather(1, order)
    order = torch.sort(vals, dim=1, descending=True, stable=True).indices  # ...then score descending
    return idx.gather(1, order)[:, :k]


@torch.no_grad()
def truth_per_video(scores, relevance, ks: Sequence[int] = DEFAULT_KS, music_genre=None, majority_genre=None,
                    candidate_mask=None, chunk_size: int = 2048) -> dict[str, np.ndarray]:
    """Per-video values [N] of the simulated world's truth metrics (see truth_metrics): truth_ndcg@K, and with
    genres pred_share@K and true_share@K."""
    sm = _as_matrix(scores)
    n, m = sm.shape
    if n == 0:
        raise DataError("truth_metrics: no videos")
    rel_all = _tensor(relevance)
    if tuple(rel_all.shape) != (n, m):
        raise DataError(f"truth_metrics: relevance shape {tuple(rel_all.shape)}, expected {(n, m)}")
    mask = None if candidate_mask is None else torch.as_tensor(np.array(candidate_mask, dtype=bool))
    pool = m if mask is None else int(mask.sum())
    ks = [int(k) for k in ks]
    if min(ks) < 1 or max(ks) > pool:
        raise DataError(f"truth_metrics: K values {ks} must lie in [1, {pool}] (the candidate pool)")
    genres = music_genre is not None and majority_genre is not None
    if genres:
        mg = torch.as_tensor(np.asarray(music_genre), dtype=torch.long)
        maj = torch.as_tensor(np.asarray(majority_genre), dtype=torch.long)
        if mg.shape != (m,) or maj.shape != (n,):
            raise DataError(f"truth_metrics: music_genre {tuple(mg.shape)} / majority_genre {tuple(maj.shape)}, "
                            f"expected ({m},) / ({n},)")
    kmax = max(ks)
    discount = 1.0 / torch.log2(torch.arange(kmax, dtype=torch.float64) + 2.0)
    keys = [f"truth_ndcg@{k}" for k in ks] + ([f"{w}_share@{k}" for k in ks for w in ("pred", "true")] if genres else [])
    out = {key: np.empty(n, dtype=np.float64) for key in keys}
    for start in range(0, n, chunk_size):
        s = sm.rows(start, start + chunk_size)
        sm.check_rows(s, start, "truth_metrics")
        rel = rel_all[start:start + chunk_size].to(s.device)
        if bool((rel < 0).any()) or not bool(torch.isfinite(rel).all()):
            raise DataError(f"truth_metrics: relevance rows {start}..{start + rel.shape[0] - 1} must be finite and >= 0")
        if mask is not None:
            s = s.masked_fill(~mask.to(s.device), float("-inf"))
            rel_pool = rel.masked_fill(~mask.to(s.device), float("-inf"))
        else:
            rel_pool = rel
        pred = _pessimistic_topk(s, rel, kmax)
        true = rel_pool.topk(kmax, dim=1).indices
        d = discount.to(s.device)
        dcg = torch.cumsum(rel.gather(1, pred).double() * d, dim=1)
        idcg = torch.cumsum(rel.gather(1, true).double() * d, dim=1)
        ndcg = torch.where(idcg > 0, dcg / idcg.clamp_min(1e-300), torch.zeros_like(dcg))
        stop = start + s.shape[0]
        if genres:
            target = maj[start:start + chunk_size].to(s.device).unsqueeze(1)
            in_pred = torch.cumsum((mg.to(s.device)[pred] == target).double(), dim=1)
            in_true = torch.cumsum((mg.to(s.device)[true] == target).double(), dim=1)
        for k in ks:
            out[f"truth_ndcg@{k}"][start:stop] = ndcg[:, k - 1].cpu().numpy()
            if genres:
                out[f"pred_share@{k}"][start:stop] = in_pred[:, k - 1].cpu().numpy() / k
                out[f"true_share@{k}"][start:stop] = in_true[:, k - 1].cpu().numpy() / k
    return out


def truth_metrics(scores, relevance, ks: Sequence[int] = DEFAULT_KS, music_genre=None, majority_genre=None,
                  candidate_mask=None, chunk_size: int = 2048) -> dict[str, float]:
    """Metrics against the simulated world's truth, averaged over videos (unweighted).

    truth_ndcg@K: DCG of the predicted top-K under the true graded relevance (linear gain, must be >= 0),
    over the ideal DCG of the true top-K. With `music_genre` [M] and `majority_genre` [N] (the uploader's
    majority genre of each video): pred_share@K and true_share@K, the share of the predicted / true top-K
    in that genre, and bias_amplification@K = pred_share@K - true_share@K (> 0: the model amplifies taste,
    < 0: it serves the taste less than the truth; both are distortions, so tables rank its magnitude).
    """
    per_video = truth_per_video(scores, relevance, ks, music_genre, majority_genre, candidate_mask, chunk_size)
    out = {key: float(v.mean()) for key, v in per_video.items()}
    for k in ks:
        if f"pred_share@{k}" in out:
            out[f"bias_amplification@{k}"] = out[f"pred_share@{k}"] - out[f"true_share@{k}"]
    return out


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
