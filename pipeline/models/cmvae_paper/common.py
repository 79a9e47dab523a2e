"""Deterministic two-tower models on CMVAE's backbone (CEVAR, CMVBR, DSCMR, UWML): MLP point encoders
[F -> hidden -> d], the video's visual and text points averaged where a caption exists, inputs standardised
inside the model exactly as CMVAE does, and L2-normalised embeddings so the dot product is the cosine."""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.gaussian import Gaussian
from pipeline.models.cmvae import CMVAE, Batch, CMVAEConfig, require
from pipeline.models.encoders import LOGVAR_MIN, _mlp
from pipeline.models.scaling import Standardizer


TABLE2 = "CMVAE Table 2"  # the comparison models' table: one file each in this package


def config_from(student: CMVAEConfig, config_class: type[CMVAEConfig]) -> CMVAEConfig:
    """`config_class` with every field the student's config also has (latent size, margin, negatives, weights,
    n_genres...), the model's own fields at their defaults: baselines share the student's hyper-parameters."""
    have = {f.name for f in dataclasses.fields(student)}
    return config_class(**{f.name: getattr(student, f.name) for f in dataclasses.fields(config_class)
                           if f.name in have})


def student_settings(cls: type, student: CMVAEConfig):
    """A variant's builder: `cls` with the student's hyper-parameters (`config_from`), (v, m, t) -> model."""
    cfg = config_from(student, cls.config_class)
    return lambda v, m, t: cls(v, m, t, cfg)


class PointEncoder(nn.Module):
    """The shared backbone without the variance head: Linear -> ReLU -> Dropout per hidden layer, then d."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dims=(128,), dropout: float = 0.2):
        super().__init__()
        dims = [int(in_dim), *[int(h) for h in hidden_dims]]
        self.body = _mlp(dims, dropout)
        self.out = nn.Linear(dims[-1], int(out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))


class EmbeddingModel(nn.Module):
    """Base of the deterministic baselines; subclasses define `loss`. encode_* return a point mass
    (mu = the embedding before normalisation, logvar = LOGVAR_MIN) so the common surface holds."""

    config_class = CMVAEConfig

    def __init__(self, visual_dim: int, music_dim: int, text_dim: int | None = None,
                 config: CMVAEConfig | None = None):
        super().__init__()
        self.config = config = config or self.config_class()
        config.validate()
        d, hidden, p = config.latent_dim, config.hidden_dims, config.dropout
        self.visual_dim, self.music_dim = int(visual_dim), int(music_dim)
        self.text_dim = int(text_dim) if (text_dim and config.use_text) else None
        self.visual_encoder = PointEncoder(visual_dim, d, hidden, p)
        self.music_encoder = PointEncoder(music_dim, d, hidden, p)
        self.text_encoder = PointEncoder(self.text_dim, d, hidden, p) if self.text_dim else None
        self.scalers = nn.ModuleDict({"visual": Standardizer(visual_dim), "music": Standardizer(music_dim)})
        if self.text_dim:
            self.scalers["text"] = Standardizer(self.text_dim)

    # Standardisation is CMVAE's, unchanged (training.loop.prepare calls fit_scaling on any model).
    fit_scaling = CMVAE.fit_scaling
    _input = CMVAE._input

    def _common(self, h: torch.Tensor) -> torch.Tensor:
        """Hook after each tower (DSCMR's weight-shared last layer); identity here."""
        return h

    def video_point(self, batch: Batch) -> torch.Tensor:
        """Unnormalised video representation: the visual point, averaged with the text point where captioned
        (PoE with equal precisions; a missing caption drops out as in CMVAE)."""
        visual = self._input(batch, "visual")
        point = self.visual_encoder(visual)
        if self.text_encoder is not None:
            n = visual.shape[0]
            text = self.text_encoder(self._input(batch, "text", rows=n))
            has = require(batch, "text_mask", rows=n).bool().unsqueeze(1)
            point = torch.where(has, 0.5 * (point + text), point)
        return self._common(point)

    def music_point(self, batch: Batch) -> torch.Tensor:
        return self._common(self.music_encoder(self._input(batch, "music")))

    def encode_video(self, batch: Batch) -> Gaussian:
        point = self.video_point(batch)
        return Gaussian(point, torch.full_like(point, LOGVAR_MIN))

    def encode_music(self, batch: Batch) -> Gaussian:
        point = self.music_point(batch)
        return Gaussian(point, torch.full_like(point, LOGVAR_MIN))

    def video_embedding(self, batch: Batch) -> torch.Tensor:
        """Unit-length video representation: the dot product with music_embedding is the cosine."""
        return F.normalize(self.video_point(batch), dim=-1)

    def music_embedding(self, batch: Batch) -> torch.Tensor:
        return F.normalize(self.music_point(batch), dim=-1)

    def score(self, video_z: torch.Tensor, music_z: torch.Tensor) -> torch.Tensor:
        return video_z @ music_z.t()

    def _pair(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(unit video points, unit music points, music_idx) of a training batch, rows aligned."""
        video, music = self.video_embedding(batch), self.music_embedding(batch)
        if "music_idx" in batch:
            require(batch, "music_idx", rows=video.shape[0])
        if music.shape[0] != video.shape[0]:
            require(batch, "music", rows=video.shape[0])
        return video, music, batch.get("music_idx")
