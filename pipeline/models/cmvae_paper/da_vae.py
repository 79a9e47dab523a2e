"""DA-VAE: Dual-VAE (a VAE per modality with self-reconstruction, CMVAE's ranking loss on the latents)
plus entropy maximisation of the latent posteriors: total - entropy_weight * (H(q_video) + H(q_music)),
which keeps posteriors wide (against collapse) beyond what KL(q || N(0, I)) alone allows: with both terms
a posterior's variance settles at 1 + entropy_weight instead of 1."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from pipeline.errors import ParamsError
from pipeline.gaussian import entropy
from pipeline.models.cmvae import CMVAE, Batch, CMVAEConfig
from pipeline.models.registry import model_class
from pipeline.models.variants import register

from .common import TABLE2, student_settings

ORDER = 75  # position of this file's variant in VARIANTS (pipeline/models/variants.py)


@dataclass
class DAVAEConfig(CMVAEConfig):
    entropy_weight: float = 1.0  # weight of -(H(q_video) + H(q_music)), entropies summed over dims

    def validate(self) -> None:
        super().validate()
        if self.entropy_weight < 0:
            raise ParamsError(f"model.entropy_weight={self.entropy_weight}: expected >= 0")


@model_class
class DAVAE(CMVAE):
    """Self-generation (generation: dual) + ranking + entropy maximisation of the fused video and the music
    posteriors (batch means)."""

    config_class = DAVAEConfig

    def __init__(self, visual_dim: int, music_dim: int, text_dim: int | None = None,
                 config: DAVAEConfig | None = None):
        super().__init__(visual_dim, music_dim, text_dim,
                         dataclasses.replace(config or DAVAEConfig(), generation="dual"))

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        terms, video_q, music_q = self._loss_terms(batch)
        terms["entropy_video"], terms["entropy_music"] = entropy(video_q).mean(), entropy(music_q).mean()
        terms["total"] = terms["total"] - self.config.entropy_weight * (terms["entropy_video"]
                                                                        + terms["entropy_music"])
        return terms


@register("da_vae", table=TABLE2, row="DA-VAE")
def da_vae(s, p):
    """DA-VAE (pipeline/models/cmvae_paper/), the student's hyper-parameters."""
    return student_settings(DAVAE, s)
