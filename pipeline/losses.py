"""Pure loss functions of CMVAE/DebCM: hardest-k margin ranking, cross-reconstruction and KL terms.

The models call these; each is a plain tensor function so tests can compare it with a brute-force loop.
Reductions (one place, so loss weights mean the same thing everywhere): ranking sums the hinge over the k
chosen negatives and averages over anchors; reconstruction is the element-wise mean squared error; every KL
is summed over latent dims and averaged over the batch.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

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
    n = scores.shape[0]
    if scores.ndim != 2 or scores.shape[1] != n:
        raise DataError(f"bidirectional_ranking_loss: scores shape {tuple(scores.shape)}, expected square (n, n)")
    if k < 1:
        raise DataError(f"bidirectional_ranking_loss: k={k}, expected >= 1")
    kk = min(int(k), n - 1)
    if kk < 1:
        zero = scores.sum() * 0.0
        return zero, zero.clone()
    if weights is not None:  # per-pair weights (IPS): the two plain halves, weighted per anchor
        same = same_item_mask(music_idx, n, scores.device)
        return (hardest_k_margin_loss(scores, same, margin, k, weights),
                hardest_k_margin_loss(scores.t(), same.t(), margin, k, weights))
    invalid = same_item_mask(music_idx, n, scores.device)  # symmetric, diagonal included: serves both directions
    return _BidirectionalHinge.apply(scores, invalid, float(margin), kk)


class _BidirectionalHinge(torch.autograd.Function):
    """hardest_k_margin_loss of scores and of scores.t() in one pass, with a sparse hand-written backward.

    The same values and bit-identical gradients as the two autograd graphs (tests/test_losses.py), whose
    backward built and summed several dense [n, n] tensors per direction, one of them transposed (a slow
    strided add on CPU); here the k chosen entries of each row and column are scattered into one gradient.
    """

    @staticmethod
    def forward(ctx, scores, invalid, margin, kk):
        negatives = scores.detach().masked_fill(invalid, float("-inf"))
        positive = scores.detach().diagonal().unsqueeze(1)
        losses, saved = [], []
        # rows: video -> music; columns: music -> video (a contiguous copy: topk along a strided dim is ~40% slower)
        views = (negatives, negatives.t().contiguous())
        for view, (hardest, idx) in zip(views, topk_rows(views, kk)):
            pre = margin - positive + hardest
            finite = torch.isfinite(hardest)
            hinge = torch.where(finite, torch.clamp(pre, min=0.0), torch.zeros_like(pre))
            losses.append(hinge.sum(dim=1).mean())
            saved += [idx, finite & (pre >= 0.0)]  # clamp passes the gradient where pre >= 0
        ctx.save_for_backward(*saved)
        ctx.mark_non_differentiable(invalid)
        return losses[0], losses[1]

    @staticmethod
    def backward(ctx, grad_v2m, grad_m2v):
        idx_r, active_r, idx_c, active_c = ctx.saved_tensors
        n = idx_r.shape[0]
        rows = torch.arange(n, device=idx_r.device).unsqueeze(1)
        grad = torch.zeros(n * n, dtype=grad_v2m.dtype, device=grad_v2m.device)
        diagonal = torch.zeros(n, dtype=grad_v2m.dtype, device=grad_v2m.device)
        for g, idx, active, flat in ((grad_v2m, idx_r, active_r, rows * n + idx_r),
                                     (grad_m2v, idx_c, active_c, idx_c * n + rows)):
            per_hinge = torch.where(active, (g / n).expand(active.shape), torch.zeros_like(g))
            grad.scatter_add_(0, flat.reshape(-1), per_hinge.reshape(-1))
            diagonal = diagonal + -per_hinge.sum(dim=1)
        grad = grad.view(n, n)
        grad.diagonal().copy_(diagonal)
        return grad, None, None, None


def reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, row_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Element-wise mean squared error over the rows kept by `row_mask` (CMVAE cross-reconstruction)."""
    if pred.shape != target.shape:
        raise DataError(f"reconstruction_loss: prediction shape {tuple(pred.shape)} != target {tuple(target.shape)}")
    if row_mask is None:
        return _MeanSquaredError.apply(pred, target)
    sq = (pred - target).pow(2)
    keep = row_mask.bool()
    if not bool(keep.any()):
        return pred.sum() * 0.0
    return sq[keep].mean()


class _MeanSquaredError(torch.autograd.Function):
    """(pred - target).pow(2).mean() with the same value and bit-identical gradients as autograd's graph of
    those three ops (tests/test_losses.py), in two passes over the [B, F] matrices instead of five.

    Autograd's backward materialises grad / N, copies diff (pow's diff^1), doubles it and multiplies the two:
    (g / N) * (2 * diff). Doubling is exact in floating point, so diff * (2 * (g / N)) rounds once, to the same
    value, in one pass. The reconstruction of TT-150k's 2048-d visual features is the largest tensor of a step.
    """

    @staticmethod
    def forward(ctx, pred, target):
        diff = pred - target
        ctx.save_for_backward(diff)
        return diff.pow(2).mean()

    @staticmethod
    def backward(ctx, grad):
        (diff,) = ctx.saved_tensors
        scale = grad / diff.numel() * 2.0  # a 0-d tensor: g / N as autograd rounds it, then doubled (exact)
        grad_pred = diff * scale
        return grad_pred, (-grad_pred if ctx.needs_input_grad[1] else None)


_POOL: tuple[int, ThreadPoolExecutor] | None = None


def _pool() -> ThreadPoolExecutor:
    """One worker thread per process (re-made after a fork: a forked child has no threads)."""
    global _POOL
    if _POOL is None or _POOL[0] != os.getpid():
        _POOL = (os.getpid(), ThreadPoolExecutor(1, thread_name_prefix="topk"))
    return _POOL[1]


def topk_rows(matrices, k: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """[(values, indices)] of `m.topk(k, dim=1)` for each matrix, the same tensors as one call each.

    torch's CPU topk runs each call on one core (a [1024, 1024] call with k = 40 took 3.5 ms of a 125-ms
    TT-150k step, six calls per step); with more than one torch thread the second matrix's rows are
    selected on a worker thread while this one does the first (topk releases the GIL). Rows are independent,
    so the values and indices are exactly those of the sequential calls.
    """
    if len(matrices) < 2 or torch.get_num_threads() < 2 or any(m.device.type != "cpu" for m in matrices):
        return [m.topk(k, dim=1) for m in matrices]
    later = [_pool().submit(torch.topk, m, k, 1) for m in matrices[1:]]
    first = matrices[0].topk(k, dim=1)
    return [first, *(f.result() for f in later)]


def kl_prior_loss(q: Gaussian) -> torch.Tensor:
    """KL(q || N(0, I)), summed over latent dims, mean over the batch (the VAE prior term)."""
    return kl_to_standard_normal(q).mean()


def kl_transfer_loss(student: Gaussian, teacher: Gaussian) -> torch.Tensor:
    """KL(q_student || q_teacher), summed over latent dims, mean over the batch (DebCM teacher transfer).

    The direction the public code intends: mode-seeking, the student is penalised for mass where the
    teacher has none. The teacher is frozen, so its posterior is detached here.
    """
    return kl_gaussians(student, teacher.detach()).mean()
