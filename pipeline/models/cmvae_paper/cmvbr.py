"""CMVBR (Hong et al., 2018, content-based video-music retrieval with a soft intra-modal structure
constraint, "CBVMR"): deterministic towers, CMVAE's bidirectional hardest-k ranking loss on cosine scores,
plus an intra-modal term per modality that keeps the order of in-batch neighbours of the input space: if
x_j is nearer to x_i than x_k is, the embedding should keep y_j nearer to y_i than y_k."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from pipeline.errors import ParamsError
from pipeline.losses import bidirectional_ranking_loss
from pipeline.models.cmvae import Batch, CMVAEConfig
from pipeline.models.registry import model_class
from pipeline.models.variants import register

from .common import EmbeddingModel, TABLE2, student_settings

ORDER = 71  # position of this file's variant in VARIANTS (pipeline/models/variants.py)


@dataclass
class CMVBRConfig(CMVAEConfig):
    intra_weight: float = 1.0  # weight of the two intra-modal structure terms (video and music)

    def validate(self) -> None:
        super().validate()
        if self.intra_weight < 0:
            raise ParamsError(f"model.intra_weight={self.intra_weight}: expected >= 0")


def _squared_distances(x: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances [n, n] from the Gram matrix: no [n, n, F] intermediate (F is 2048 for
    ResNet video features, n the batch of 1024)."""
    norms = x.pow(2).sum(dim=1)
    return torch.clamp(norms.unsqueeze(1) + norms.unsqueeze(0) - 2.0 * x @ x.t(), min=0.0)


def intra_modal_structure_loss(inputs: torch.Tensor, embedded: torch.Tensor) -> torch.Tensor:
    """Soft structure constraint on the triplets (anchor i, j, k = j + 1 mod n) of a batch, all distinct:
    max(0, sign(dx_ik - dx_ij) * (dy_ij - dy_ik)) averaged, dx in the input space, dy in the embedding.
    Only the input-space order enters (its sign), not the distances themselves; ties add nothing."""
    n = inputs.shape[0]
    if n < 3:
        return embedded.sum() * 0.0
    with torch.no_grad():
        dx = _squared_distances(inputs)  # the order is all that is used: squares suffice
        order = torch.sign(dx.roll(-1, dims=1) - dx)  # +1: j nearer than k to anchor i in the input space
        idx = torch.arange(n, device=inputs.device)
        j, k = idx.unsqueeze(0).expand(n, n), (idx.unsqueeze(0) + 1).expand(n, n) % n
        valid = (j != idx.unsqueeze(1)) & (k != idx.unsqueeze(1))
    dy = torch.sqrt(torch.clamp(_squared_distances(embedded), min=1e-12))  # clamp: finite gradient at 0
    violation = torch.clamp(order * (dy - dy.roll(-1, dims=1)), min=0.0)
    return violation[valid].mean()


@model_class
class CMVBR(EmbeddingModel):
    """loss: gamma * (rank_v2m + alpha * rank_m2v) + intra_weight * (intra_video + intra_music); the
    video's input space is its standardised visual features, the music's its standardised audio features."""

    config_class = CMVBRConfig

    def objective(self, video: torch.Tensor, music: torch.Tensor, music_idx: torch.Tensor | None,
                  visual_input: torch.Tensor, music_input: torch.Tensor) -> dict[str, torch.Tensor]:
        """The named terms on unit embeddings of the training pairs and the standardised inputs they came from."""
        cfg = self.config
        v2m, m2v = bidirectional_ranking_loss(video @ music.t(), music_idx, cfg.margin, cfg.num_negatives)
        intra_video = intra_modal_structure_loss(visual_input, video)
        intra_music = intra_modal_structure_loss(music_input, music)
        total = cfg.gamma * (v2m + cfg.alpha * m2v) + cfg.intra_weight * (intra_video + intra_music)
        return {"rank_v2m": v2m, "rank_m2v": m2v, "intra_video": intra_video, "intra_music": intra_music,
                "total": total}

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self.objective(*self._pair(batch), self._input(batch, "visual"), self._input(batch, "music"))


@register("cmvbr", table=TABLE2, row="CMVBR")
def cmvbr(s, p):
    """CMVBR (pipeline/models/cmvae_paper/), the student's hyper-parameters."""
    return student_settings(CMVBR, s)
