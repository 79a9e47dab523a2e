"""Dual-VAE: a VAE per modality, each latent reconstructing its own input (self-generation), trained with
CMVAE's ranking loss on the latents. On this backbone it is CMVAE with `generation: dual` (PoE fusion and
sub-sampled training kept), i.e. the same model as the "dual" row of the generation ablation."""
from __future__ import annotations

import dataclasses

from pipeline.models.cmvae import CMVAE, CMVAEConfig


class DualVAE(CMVAE):
    """CMVAE whose latents decode their own modality; the config's `generation` is set to dual."""

    def __init__(self, visual_dim: int, music_dim: int, text_dim: int | None = None,
                 config: CMVAEConfig | None = None):
        super().__init__(visual_dim, music_dim, text_dim,
                         dataclasses.replace(config or CMVAEConfig(), generation="dual"))
