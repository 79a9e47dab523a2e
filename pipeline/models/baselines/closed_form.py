"""Base of the closed-form baselines (docs/architecture.md section 9: Random, Popularity, Ridge, CCA): fitted on
the training rows at once, no epochs, no optimiser.

The fitted standardisation and maps are buffers of the model, so a saved model carries them and load_model,
evaluation and `recommend` use it as any trained model: video_embedding / music_embedding, scored by their
dot product (the cosine models return unit vectors, so the dot product is the cosine).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from pipeline.errors import DataError, ParamsError
from pipeline.gaussian import Gaussian
from pipeline.models.cmvae import Batch, require
from pipeline.models.encoders import LOGVAR_MIN
from pipeline.models.scaling import Standardizer

Select = Callable[[nn.Module], float]  # the model as it stands -> its validation Recall (model selection)


@dataclass
class ClosedFormConfig:
    dim: int = 128  # embedding width where the model chooses it (Random: the student's latent_dim)
    use_text: bool = True  # the video side includes the caption features when the data has them

    def validate(self) -> None:
        if self.dim < 1:
            raise ParamsError(f"closed-form baseline: dim={self.dim}, expected >= 1")


class ClosedForm(nn.Module):
    """Inputs, standardisation and the common surface; subclasses implement fit and the two embeddings."""

    config_class = ClosedFormConfig

    def __init__(self, visual_dim: int, music_dim: int, text_dim: int | None = None, config=None):
        super().__init__()
        self.config = config = config or self.config_class()
        config.validate()
        self.visual_dim, self.music_dim = int(visual_dim), int(music_dim)
        self.text_dim = int(text_dim) if (text_dim and config.use_text) else None
        self.scalers = nn.ModuleDict({"visual": Standardizer(visual_dim), "music": Standardizer(music_dim)})
        if self.text_dim:
            self.scalers["text"] = Standardizer(self.text_dim)

    @property
    def video_width(self) -> int:
        return self.visual_dim + (self.text_dim or 0)

    # ---- fitting ------------------------------------------------------------------------------
    def fit(self, data, select: Select, seed: int) -> dict:
        """Fit on `data`'s training rows (a TrainData); `select` scores a candidate on validation. Returns
        what was chosen (logged into the run's summary)."""
        raise NotImplementedError

    def fit_scaling(self, data) -> None:
        """Standardisation fitted on the training rows only (TrainData.scaling_rows: each video and music once)."""
        rows = data.scaling_rows()
        self.scalers["visual"].fit(rows["visual"], "visual features")
        self.scalers["music"].fit(rows["music"], "music features")
        if "text" in self.scalers and rows.get("text") is not None and rows["text"].shape[0] > 0:
            self.scalers["text"].fit(rows["text"], "text features")

    def pair_rows(self, data) -> tuple[torch.Tensor, torch.Tensor]:
        """(standardised video features, standardised music features) of every training pair, float64."""
        videos = data.video_batch(data.video_idx)
        return (self.video_features(videos).double(),
                self.music_features({"music": data.music[data.music_idx]}).double())

    # ---- inputs -------------------------------------------------------------------------------
    def video_features(self, batch: Batch) -> torch.Tensor:
        """[visual ; text] standardised; a video without a caption has its text at the training mean (0)."""
        visual = self.scalers["visual"](require(batch, "visual", dim=self.visual_dim))
        if not self.text_dim:
            return visual
        text = self.scalers["text"](require(batch, "text", rows=visual.shape[0], dim=self.text_dim))
        mask = require(batch, "text_mask", rows=visual.shape[0]).to(text.dtype).unsqueeze(1)
        return torch.cat([visual, text * mask], dim=1)

    def music_features(self, batch: Batch) -> torch.Tensor:
        return self.scalers["music"](require(batch, "music", dim=self.music_dim))

    # ---- the common surface -------------------------------------------------------------------
    def video_embedding(self, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def music_embedding(self, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def _point(self, z: torch.Tensor) -> Gaussian:
        """A deterministic map has no posterior: the embedding as mean, the encoders' variance floor."""
        return Gaussian(z, torch.full_like(z, LOGVAR_MIN))

    def encode_video(self, batch: Batch) -> Gaussian:
        return self._point(self.video_embedding(batch))

    def encode_music(self, batch: Batch) -> Gaussian:
        return self._point(self.music_embedding(batch))

    def score(self, video_z: torch.Tensor, music_z: torch.Tensor) -> torch.Tensor:
        """Dot products of the embeddings (the cosine for the unit-vector models)."""
        return video_z @ music_z.t()

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Nothing to optimise (fit solves it): the batch's mean positive-pair score, and its negative as total."""
        video, music = self.video_embedding(batch), self.music_embedding(batch)
        if video.shape[0] != music.shape[0]:
            raise DataError(f"{type(self).__name__}.loss: {video.shape[0]} videos and {music.shape[0]} music rows, "
                            "expected one music per video")
        match = (video * music).sum(dim=1).mean()
        return {"match": match, "total": -match}


def unit(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit length (a zero row stays zero): dot products of unit rows are cosines."""
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
