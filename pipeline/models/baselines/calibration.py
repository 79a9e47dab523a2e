"""DebCM-Calibration (DebCM Table 3): a post-hoc re-ranking of a trained CMVAE toward the uploader's historical
genre mix, in the spirit of Steck's calibrated recommendations (RecSys 2018) with weight lambda.

Steck builds each list greedily against KL(p || q); a greedy list is not a score, and evaluation ranks by
dot products (every model's contract), so the calibration is applied to the scores instead:

    s'(v, m) = s(v, m) + lambda * T * sum_g g(m)_g * log( p~_g(v) / q~_g(v) )

s: the base model's score; p(v): the training genre distribution of v's uploader (the video batch's
`uploader_dist`, which evaluation passes); q(v) = sum_m softmax_m(s(v, m) / T) g(m): the genre mix the base
model puts on v's ranking pool; x~ = (1 - eps) x + eps / G keeps the logs finite (eps = smoothing); T: the
standard deviation of the base scores between training videos and the pool (the scores' own scale).
What it does, exactly: with one-hot genres and eps = 0 the softmax(s' / T) genre mix is proportional to
q_g^(1 - lambda) p_g^lambda, a geometric move from the model's mix q (lambda = 0: the base ranking,
unchanged) to the uploader's p (lambda = 1), so KL(p || new mix) <= (1 - lambda) KL(p || q). The new score
is [z_v ; lambda T log(p~/q~)] . [z_m ; g(m)], a dot product of extended embeddings: the invariant holds.
`calibration` re-ranks `cmvae`, `calibration_pgc` re-ranks `cmvae_pgc` (the UGC + PGC setting's CMVAE); the
weight is `baselines.calibration_weight`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import nn

from pipeline.data.schema import GENRES
from pipeline.errors import DataError, ParamsError
from pipeline.inference import embed, eval_mode, model_device
from pipeline.models.variants import register
from pipeline.models.cmvae import Batch, require
from pipeline.models.registry import class_named, model_class

ORDER = 60  # position of this file's variants in VARIANTS (pipeline/models/variants.py)

SCALE_VIDEOS = 4096  # training videos whose scores against the pool set the temperature T (evenly spaced)


@dataclass
class CalibrationConfig:
    base_class: str = "CMVAE"  # pipeline.models.registry name of the re-ranked model
    base_config: dict = field(default_factory=dict)
    weight: float = 0.5  # lambda
    smoothing: float = 0.01  # eps
    n_pool: int = 1  # music of the ranking pool the mix q is taken over
    base_width: int = 1  # width of the base model's embeddings

    def validate(self) -> None:
        if self.weight < 0 or not 0 <= self.smoothing < 1 or self.n_pool < 1 or self.base_width < 1:
            raise ParamsError(f"calibration: weight={self.weight} >= 0, smoothing={self.smoothing} in [0, 1), "
                              f"n_pool={self.n_pool} and base_width={self.base_width} >= 1 expected")


@model_class
class Calibrated(nn.Module):
    """A trained base model and its pool (embeddings, genres), re-scored toward each uploader's genre mix."""

    config_class = CalibrationConfig

    def __init__(self, visual_dim: int, music_dim: int, text_dim: int | None = None,
                 config: CalibrationConfig | None = None):
        super().__init__()
        self.config = config = config or CalibrationConfig()
        config.validate()
        cls = class_named(config.base_class)  # a name from a file: registered classes only
        self.base = cls(visual_dim, music_dim, text_dim, cls.config_class(**config.base_config))
        self.visual_dim, self.music_dim, self.text_dim = self.base.visual_dim, self.base.music_dim, self.base.text_dim
        self.register_buffer("pool_music", torch.zeros(config.n_pool, config.base_width))
        self.register_buffer("pool_genre", torch.zeros(config.n_pool, len(GENRES)))
        self.register_buffer("temperature", torch.ones(()))

    @classmethod
    def around(cls, base: nn.Module, n_pool: int, weight: float, smoothing: float = 0.01) -> "Calibrated":
        """An (unfitted) calibration of a trained `base`, holding a copy of its weights."""
        probe = {"music": torch.zeros(1, base.music_dim), "music_genre": torch.full((1, len(GENRES)), 1 / len(GENRES))}
        with eval_mode(base), torch.no_grad():
            width = base.music_embedding({k: v.to(model_device(base)) for k, v in probe.items()}).shape[1]
        cfg = CalibrationConfig(type(base).__name__, dataclasses.asdict(base.config), weight, smoothing, n_pool, width)
        model = cls(base.visual_dim, base.music_dim, base.text_dim, cfg)
        model.base.load_state_dict(base.state_dict())
        return model.to(model_device(base))

    @torch.no_grad()
    def fit(self, data, pool: torch.Tensor) -> dict:
        """Store the pool's base embeddings and genres and the score scale T (training videos x pool).
        `data`: the base's TrainData; `pool` [M] bool: the music the evaluation ranks (Dataset.pool_mask)."""
        pool = torch.as_tensor(pool, dtype=torch.bool, device=data.music.device)
        if int(pool.sum()) != self.config.n_pool:
            raise DataError(f"calibration: pool of {int(pool.sum())} music, the model was built for "
                            f"{self.config.n_pool}")
        with eval_mode(self.base):
            music = embed(self.base.music_embedding, data.music_batch(torch.nonzero(pool).squeeze(1)))
            videos = torch.unique(data.video_idx)
            videos = videos[torch.linspace(0, len(videos) - 1, min(len(videos), SCALE_VIDEOS)).round().long()]
            scores = self.base.score(embed(self.base.video_embedding, data.video_batch(videos)), music)
        self.pool_music.copy_(music)
        self.pool_genre.copy_(data.music_genre[pool])
        self.temperature.fill_(float(scores.double().std().clamp_min(1e-6)))
        return {"temperature": float(self.temperature), "weight": self.config.weight, "pool": self.config.n_pool}

    # ---- the common surface -------------------------------------------------------------------
    def encode_video(self, batch: Batch):
        return self.base.encode_video(batch)

    def encode_music(self, batch: Batch):
        return self.base.encode_music(batch)

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The base's objective: the calibration itself has nothing to train."""
        return self.base.loss(batch)

    def genre_mix(self, base_video: torch.Tensor) -> torch.Tensor:
        """q(v) [N, G]: the genre mix of softmax(s(v, .) / T) over the pool."""
        weights = torch.softmax(self.base.score(base_video, self.pool_music) / self.temperature, dim=1)
        return weights @ self.pool_genre

    def _smooth(self, x: torch.Tensor) -> torch.Tensor:
        eps = self.config.smoothing
        return (1 - eps) * x + eps / x.shape[1]

    def video_embedding(self, batch: Batch) -> torch.Tensor:
        """[z_v ; lambda T log(p~ / q~)]."""
        z = self.base.video_embedding(batch)
        if "uploader_dist" not in batch:
            raise DataError("calibration: the video batch has no 'uploader_dist' (the uploader's training genre "
                            "distribution); pass it (pipeline.inference.video_embedding(..., uploader_dist=...))")
        target = require(batch, "uploader_dist", rows=z.shape[0], dim=len(GENRES)).to(z.dtype)
        shift = torch.log(self._smooth(target)) - torch.log(self._smooth(self.genre_mix(z)))
        return torch.cat([z, self.config.weight * self.temperature * shift], dim=1)

    def music_embedding(self, batch: Batch) -> torch.Tensor:
        """[z_m ; g(m)]."""
        z = self.base.music_embedding(batch)
        return torch.cat([z, require(batch, "music_genre", rows=z.shape[0], dim=len(GENRES)).to(z.dtype)], dim=1)

    def score(self, video_z: torch.Tensor, music_z: torch.Tensor) -> torch.Tensor:
        return video_z @ music_z.t()


@register("calibration", kind="post_hoc", base="cmvae", table="DebCM Table 3", row="DebCM-Calibration")
def calibration(s, p):
    """cmvae re-scored toward each uploader's genre mix (weight baselines.calibration_weight)."""
    return lambda base, n_pool: Calibrated.around(base, n_pool, p.calibration_weight)


@register("calibration_pgc", kind="post_hoc", base="cmvae_pgc", data="ugc+pgc", table="DebCM Table 3",
          row="DebCM-Calibration")
def calibration_pgc(s, p):
    """cmvae_pgc re-scored toward each uploader's genre mix."""
    return lambda base, n_pool: Calibrated.around(base, n_pool, p.calibration_weight)
