"""DSCMR (Zhen et al., CVPR 2019, deep supervised cross-modal retrieval): modality towers ending in one
weight-shared last layer (the common space), a shared linear label classifier, and three terms: label-space
discrimination, common-space discrimination (label-similar pairs close, within and across modalities) and
modality invariance (each video and its music at the same point). Labels: this data has no class labels,
so a pair's label is its music's genre probabilities g(m) (`music_genre`), and two items' label similarity
is g_i . g_j (the chance that they share a genre; 1/0 for one-hot genres, as in the paper)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.data.schema import GENRES
from pipeline.errors import ParamsError
from pipeline.models.cmvae import Batch, CMVAEConfig, require
from pipeline.models.registry import model_class
from pipeline.models.variants import register

from .common import EmbeddingModel, TABLE2, student_settings

ORDER = 72  # position of this file's variant in VARIANTS (pipeline/models/variants.py)


@dataclass
class DSCMRConfig(CMVAEConfig):
    discrimination_weight: float = 1.0  # common-space discrimination (the paper's alpha)
    invariance_weight: float = 1.0  # modality invariance: ||u_video - u_music|| (the paper's beta)
    n_genres: int = len(GENRES)

    def validate(self) -> None:
        super().validate()
        for name in ("discrimination_weight", "invariance_weight"):
            if getattr(self, name) < 0:
                raise ParamsError(f"model.{name}={getattr(self, name)}: expected >= 0")
        if self.n_genres < 1:
            raise ParamsError(f"model.n_genres={self.n_genres}: expected >= 1")


def _row_norm(x: torch.Tensor) -> torch.Tensor:
    """Euclidean norm of each row, its gradient finite at 0."""
    return torch.sqrt(torch.clamp(x.pow(2).sum(dim=-1), min=1e-12))


def common_space_discrimination(video: torch.Tensor, music: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum over (video, video), (video, music), (music, music) of mean_ij log(1 + e^G_ij) - S_ij G_ij:
    G_ij = cos(a_i, b_j) / 2, S_ij = labels_i . labels_j (the negative log-likelihood of the label
    similarities under sigmoid(G))."""
    sim = labels @ labels.t()
    total = video.sum() * 0.0
    for a, b in ((video, video), (video, music), (music, music)):
        theta = 0.5 * F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).t()
        total = total + (F.softplus(theta) - sim * theta).mean()
    return total


def modality_invariance(video: torch.Tensor, music: torch.Tensor) -> torch.Tensor:
    """Mean over pairs of ||u_video - u_music||: matching in the common space."""
    return _row_norm(video - music).mean()


@model_class
class DSCMR(EmbeddingModel):
    """loss: label + discrimination_weight * discrimination + invariance_weight * invariance."""

    config_class = DSCMRConfig

    def __init__(self, visual_dim: int, music_dim: int, text_dim: int | None = None,
                 config: DSCMRConfig | None = None):
        super().__init__(visual_dim, music_dim, text_dim, config)
        d = self.config.latent_dim
        self.shared = nn.Linear(d, d)  # the last layer, one set of weights for both modalities
        self.classifier = nn.Linear(d, self.config.n_genres)  # label space, shared as well

    def _common(self, h: torch.Tensor) -> torch.Tensor:
        """Each tower's output through a ReLU, then the one shared layer (DSCMR's common representation)."""
        return self.shared(torch.relu(h))

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        video, music = self.video_point(batch), self.music_point(batch)
        require(batch, "music", rows=video.shape[0])
        return self.objective(video, music, require(batch, "music_genre", rows=video.shape[0],
                                                    dim=self.config.n_genres))

    def objective(self, video: torch.Tensor, music: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """The named terms on common-space points (unnormalised) of the training pairs and their labels."""
        cfg = self.config
        label = (_row_norm(self.classifier(video) - labels).mean()
                 + _row_norm(self.classifier(music) - labels).mean())
        discrimination = common_space_discrimination(video, music, labels)
        invariance = modality_invariance(video, music)
        total = label + cfg.discrimination_weight * discrimination + cfg.invariance_weight * invariance
        return {"label": label, "discrimination": discrimination, "invariance": invariance, "total": total}


@register("dscmr", table=TABLE2, row="DSCMR")
def dscmr(s, p):
    """DSCMR (pipeline/models/cmvae_paper/), the student's hyper-parameters."""
    return student_settings(DSCMR, s)
