"""Cross-VAE: a VAE per modality aligned by reconstruction alone, with no ranking loss (gamma = 0): each
decoder reconstructs its modality from the other modality's latent (cross) and from its own (self). The
decoders are shared between the two paths, so z_v and z_m must agree for both to decode well; that is what
makes their dot product rank anything. `self_reconstruction: false` leaves cross-reconstruction alone,
which gives z_v and z_m no reason to share coordinates (kept to show it, see the report)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from pipeline.losses import reconstruction_loss
from pipeline.models.cmvae import CMVAE, Batch, CMVAEConfig
from pipeline.models.registry import model_class
from pipeline.models.variants import register

from .common import TABLE2, student_settings

ORDER = 76  # position of this file's variant in VARIANTS (pipeline/models/variants.py)


@dataclass
class CrossVAEConfig(CMVAEConfig):
    self_reconstruction: bool = True  # each decoder also reads its own modality's latent


@model_class
class CrossVAE(CMVAE):
    """CMVAE with generation cross, no ranking loss (gamma forced to 0), plus self-reconstruction terms
    recon_video_self (z_v -> video) and recon_music_self (z_m -> music), weighted by beta."""

    config_class = CrossVAEConfig

    def __init__(self, visual_dim: int, music_dim: int, text_dim: int | None = None,
                 config: CrossVAEConfig | None = None):
        config = dataclasses.replace(config or CrossVAEConfig(), generation="cross", gamma=0.0)
        super().__init__(visual_dim, music_dim, text_dim, config)

    def _video_decodes(self, video_z, batch: Batch, rows) -> dict[str, torch.Tensor]:
        out = super()._video_decodes(video_z, batch, rows)
        if self.config.self_reconstruction:
            out["recon_video_self"] = self._recon_video(video_z, batch, rows)
        return out

    def _video_decode_keys(self) -> tuple[str, ...]:
        keys = super()._video_decode_keys()
        return (*keys, "recon_video_self") if self.config.self_reconstruction else keys

    def _music_decodes(self, match_z, batch: Batch) -> dict[str, torch.Tensor]:
        out = super()._music_decodes(match_z, batch)
        if self.config.self_reconstruction:
            out["recon_music_self"] = reconstruction_loss(self.music_decoder(match_z), self._input(batch, "music"))
        return out


@register("cross_vae", table=TABLE2, row="Cross-VAE")
def cross_vae(s, p):
    """Cross-VAE (pipeline/models/cmvae_paper/), the student's hyper-parameters."""
    return student_settings(CrossVAE, s)
