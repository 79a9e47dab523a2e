"""UWML (Wei et al., CVPR 2020, universal weighting metric learning): deterministic towers and the
polynomial loss on cosine similarities. Each informative pair's loss is a polynomial of its similarity,
so its gradient (its weight) grows with hardness: a negative's weight rises with its similarity, a
positive's with its dissimilarity; a plain hinge weighs every violating pair alike."""
from __future__ import annotations

import torch

from pipeline.errors import DataError
from pipeline.models.cmvae import Batch
from pipeline.losses import same_item_mask
from pipeline.models.registry import model_class
from pipeline.models.variants import register

from .common import EmbeddingModel, TABLE2, student_settings

ORDER = 73  # position of this file's variant in VARIANTS (pipeline/models/variants.py)

# The paper's second-order polynomials (its public code): positive a0 + a1 S + a2 S^2, negative b0 + b1 S + b2 S^2.
POSITIVE_COEFFICIENTS = (0.5, -0.7, 0.2)
NEGATIVE_COEFFICIENTS = (0.03, -0.4, 0.9)


def polynomial(s: torch.Tensor, coefficients) -> torch.Tensor:
    return sum(c * s.pow(i) for i, c in enumerate(coefficients))


def polynomial_triplet_loss(scores: torch.Tensor, exclude: torch.Tensor | None = None, margin: float = 0.05,
                            k: int = 40) -> torch.Tensor:
    """UWML's polynomial loss for each anchor (row) of a square cosine matrix, mean over anchors.

    Informative negatives: among the k most similar in-batch negatives, those with S_ij + margin > S_ii;
    each adds max(0, G_neg(S_ij)). The positive adds max(0, G_pos(S_ii)) when any negative is informative
    (S_ii - margin < max S_ij). `exclude` marks candidates that are not negatives (same music).
    """
    n = scores.shape[0]
    if scores.ndim != 2 or scores.shape[1] != n:
        raise DataError(f"polynomial_triplet_loss: scores shape {tuple(scores.shape)}, expected square (n, n)")
    invalid = torch.eye(n, dtype=torch.bool, device=scores.device)
    if exclude is not None:
        invalid = invalid | exclude
    kk = min(int(k), n - 1)
    if kk < 1:
        return scores.sum() * 0.0
    hardest, _ = scores.masked_fill(invalid, float("-inf")).topk(kk, dim=1)
    positive = scores.diagonal()
    informative = torch.isfinite(hardest) & (hardest + margin > positive.unsqueeze(1))
    neg = torch.clamp(polynomial(hardest.masked_fill(~informative, 0.0), NEGATIVE_COEFFICIENTS), min=0.0)
    neg = torch.where(informative, neg, torch.zeros_like(neg)).sum(dim=1)
    pos = torch.clamp(polynomial(positive, POSITIVE_COEFFICIENTS), min=0.0)
    pos = torch.where(informative.any(dim=1), pos, torch.zeros_like(pos))
    return (pos + neg).mean()


@model_class
class UWML(EmbeddingModel):
    """loss: gamma * (poly_v2m + alpha * poly_m2v), both directions on the cosine matrix, rows sharing a
    music never each other's negatives."""

    def objective(self, video: torch.Tensor, music: torch.Tensor,
                  music_idx: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """The named terms on unit video/music embeddings whose rows are the training pairs."""
        cfg = self.config
        scores = video @ music.t()
        same = same_item_mask(music_idx, scores.shape[0], scores.device)
        v2m = polynomial_triplet_loss(scores, same, cfg.margin, cfg.num_negatives)
        m2v = polynomial_triplet_loss(scores.t(), same.t(), cfg.margin, cfg.num_negatives)
        return {"poly_v2m": v2m, "poly_m2v": m2v, "total": cfg.gamma * (v2m + cfg.alpha * m2v)}

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self.objective(*self._pair(batch))


@register("uwml", table=TABLE2, row="UWML")
def uwml(s, p):
    """UWML (pipeline/models/cmvae_paper/), the student's hyper-parameters."""
    return student_settings(UWML, s)
