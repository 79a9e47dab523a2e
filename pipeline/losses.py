"""Pure loss functions of CMVAE/DebCM: hardest-k margin ranking, cross-reconstruction and KL terms.

The models call these; each is a plain tensor function so tests can compare it with a brute-force loop.
Reductions (one place, so loss weights mean the same thing everywhere): ranking sums the hinge over the k
chosen negatives and averages over anchors; reconstruction is the element-wise mean squared error; every KL
is summed over latent dims and averaged over the batch.
"""
from __future__ import annotations

import torch

from pipeline.errors import DataError
from pipeline.gaussian import Gaussian, kl_gaussians, kl_to_standard_normal


def same_item_mask(item_idx: torch.Tensor | None, n: int, device=None) -> torch.Tensor:
    """[n, n] bool: True where rows i and j share an item (always on the diagonal).

    Rows of the same music may repeat in a batch; such a pair is another positive, not a negative.
    """
    if item_idx is None:
        return torch.eye(n, dtype=torch.bool, device=device)
    if item_idx.shape != (n,):
        raise DataError(f"same_item_mask: item index shape {tuple(item_idx.shape)}, expected ({n},)")
    return item_idx.unsqueeze(0) == item_idx.unsqueeze(1)


def hardest_k_margin_loss(scores: torch.Tensor, exclude: torch.Tensor | None = None,
                          margin: float = 0.05, k: int = 40, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Hinge ranking loss of each anchor (row) against its k hardest in-batch negatives.

    `scores[i, j]` scores anchor i against candidate j; the positive of anchor i is `scores[i, i]`.
    `exclude[i, j]` True removes candidate j from anchor i's negatives (the diagonal is always excluded).
    Loss_i = sum over the k negatives j with the HIGHEST score s_ij of max(0, margin - s_ii + s_ij)
    (CMVAE ranking loss; the public code took the k with the largest s_ii - s_ij, i.e. the easiest).
    Anchors with fewer than k valid negatives use all they have. Returns the mean over anchors, or with
    `weights` [n] (one per anchor, e.g. inverse propensities) the weighted mean sum_i w_i Loss_i / sum_i w_i;
    None keeps the plain mean (CMVAE's loss, bit for bit).
    """
    n = scores.shape[0]
    if scores.ndim != 2 or scores.shape[1] != n:
        raise DataError(f"hardest_k_margin_loss: scores shape {tuple(scores.shape)}, expected square (n, n)")
    if k < 1:
        raise DataError(f"hardest_k_margin_loss: k={k}, expected >= 1")
    invalid = torch.eye(n, dtype=torch.bool, device=scores.device)
    if exclude is not None:
        if exclude.shape != (n, n):
            raise DataError(f"hardest_k_margin_loss: exclude shape {tuple(exclude.shape)}, expected ({n}, {n})")
        invalid = invalid | exclude
    kk = min(int(k), n - 1)
    if kk < 1:
        return scores.sum() * 0.0
    negatives = scores.masked_fill(invalid, float("-inf"))
    hardest, _ = negatives.topk(kk, dim=1)  # highest-scoring negatives = largest hinge
    positive = scores.diagonal().unsqueeze(1)
    hinge = torch.clamp(margin - positive + hardest, min=0.0)
    hinge = torch.where(torch.isfinite(hardest), hinge, torch.zeros_like(hinge))
    if weights is None:
        return hinge.sum(dim=1).mean()
    if weights.shape != (n,):
        raise DataError(f"hardest_k_margin_loss: weights shape {tuple(weights.shape)}, expected ({n},)")
    return (hinge.sum(dim=1) * weights).sum() / weights.sum()


def bidirectional_ranking_loss(scores: torch.Tensor, music_idx: torch.Tensor | None = None,
                               margin: float = 0.05, k: int = 40,
                               weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(video->music, music->video) hardest-k hinge losses on an in-batch score matrix.

    `scores[i, j]` scores video i against the music of row j; row i's own music is the positive.
    video->music ranks each video's music against other rows' music; music->video ranks each music's
    video against other rows' videos (the transpose). Pairs sharing a music (`music_idx`) are never negatives.
    The caller weights the second by alpha (CMVAE: L_rank = L_v2m + alpha * L_m2v). `weights` [n]: one per
    pair (row i = video i with its music i), the anchor weight of both halves (IPS baselines).
    """
    same = same_item_mask(music_idx, scores.shape[0], scores.device)
    v2m = hardest_k_margin_loss(scores, same, margin, k, weights)
    m2v = hardest_k_margin_loss(scores.t(), same.t(), margin, k, weights)
    return v2m, m2v


def reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, row_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Element-wise mean squared error over the rows kept by `row_mask` (CMVAE cross-reconstruction)."""
    if pred.shape != target.shape:
        raise DataError(f"reconstruction_loss: prediction shape {tuple(pred.shape)} != target {tuple(target.shape)}")
    sq = (pred - target).pow(2)
    if row_mask is None:
        return sq.mean()
    keep = row_mask.bool()
    if not bool(keep.any()):
        return pred.sum() * 0.0
    return sq[keep].mean()


def kl_prior_loss(q: Gaussian) -> torch.Tensor:
    """KL(q || N(0, I)), summed over latent dims, mean over the batch (the VAE prior term)."""
    return kl_to_standard_normal(q).mean()


def kl_transfer_loss(student: Gaussian, teacher: Gaussian) -> torch.Tensor:
    """KL(q_student || q_teacher), summed over latent dims, mean over the batch (DebCM teacher transfer).

    The direction the public code intends: mode-seeking, the student is penalised for mass where the
    teacher has none. The teacher is frozen, so its posterior is detached here.
    """
    return kl_gaussians(student, teacher.detach()).mean()
