"""Dual-VAE: a VAE per modality, each latent reconstructing its own input (self-generation), trained with
CMVAE's ranking loss on the latents. On this backbone it is CMVAE with `generation: dual` (PoE fusion and
sub-sampled training kept), i.e. the same model as the "dual" row of the generation ablation."""
from __future__ import annotations

import dataclasses

from pipeline.models.cmvae import CMVAE, CMVAEConfig
from pipeline.models.registry import model_class
from pipeline.models.variants import register

from .common import TABLE2, student_settings

ORDER = 74  # position of this file's variant in VARIANTS (pipeline/models/variants.py)


@model_class
class DualVAE(CMVAE):
    """CMVAE whose latents decode their own modality; the config's `generation` is set to dual."""

    def __init__(self, visual_dim: int, music_dim: int, text_dim: int | None = None,
                 config: CMVAEConfig | None = None):
        super().__init__(visual_dim, music_dim, text_dim,
                         dataclasses.replace(config or CMVAEConfig(), generation="dual"))


@register("dual_vae", table=TABLE2, row="Dual-VAE")
def dual_vae(s, p):
    """Dual-VAE (pipeline/models/cmvae_paper/), the student's hyper-parameters."""
    return student_settings(DualVAE, s)
