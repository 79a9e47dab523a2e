"""CEVAR (Suris et al., 2018, cross-modal embeddings for video and audio retrieval): two deterministic
towers trained with the cosine embedding loss: each matched pair is pulled to cosine 1, each mismatched
in-batch pair pushed below cosine `margin`. Pointwise targets, no ranking of a positive against negatives,
no VAE. (The original also regularised with YouTube-8M class labels, which this data does not have.)"""
from __future__ import annotations

import torch

from pipeline.losses import same_item_mask
from pipeline.models.cmvae import Batch
from pipeline.models.registry import model_class
from pipeline.models.variants import register

from .common import EmbeddingModel, TABLE2, student_settings

ORDER = 70  # position of this file's variant in VARIANTS (pipeline/models/variants.py)


def cosine_embedding_loss(video: torch.Tensor, music: torch.Tensor, music_idx: torch.Tensor | None,
                          margin: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(positive, negative) halves on unit vectors: mean over rows of 1 - cos(v_i, m_i), and mean over the
    in-batch mismatched pairs (rows not sharing a music) of max(0, cos(v_i, m_j) - margin)."""
    cos = video @ music.t()
    positive = (1.0 - cos.diagonal()).mean()
    negative_pairs = ~same_item_mask(music_idx, cos.shape[0], cos.device)
    if not bool(negative_pairs.any()):
        return positive, cos.sum() * 0.0
    return positive, torch.clamp(cos[negative_pairs] - margin, min=0.0).mean()


@model_class
class CEVAR(EmbeddingModel):
    """loss: cos_positive + cos_negative (unweighted, as torch's CosineEmbeddingLoss averages both kinds)."""

    def objective(self, video: torch.Tensor, music: torch.Tensor,
                  music_idx: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """The named terms on unit video/music embeddings whose rows are the training pairs."""
        positive, negative = cosine_embedding_loss(video, music, music_idx, self.config.margin)
        return {"cos_positive": positive, "cos_negative": negative, "total": positive + negative}

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self.objective(*self._pair(batch))


@register("cevar", table=TABLE2, row="CEVAR")
def cevar(s, p):
    """CEVAR (pipeline/models/cmvae_paper/), the student's hyper-parameters."""
    return student_settings(CEVAR, s)
