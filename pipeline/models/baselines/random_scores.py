"""Random (docs/architecture.md section 9): every (video, music) score an independent draw, the same for the same
run seed.

Model batches carry features, not ids, so each row's draw is keyed by its own feature bytes: a splitmix64
hash of the raw visual (or music) row, mixed with the seed and the embedding column, gives a uniform value
in [-1, 1). The embeddings are such vectors (width model.latent_dim), so scores are dot products of
independent random vectors: rankings at chance, identical across calls, machines and a save/load.
"""
from __future__ import annotations

import numpy as np
import torch

from pipeline.models.variants import register
from pipeline.models.baselines.closed_form import ClosedForm, ClosedFormConfig
from pipeline.models.cmvae import Batch, require
from pipeline.models.registry import model_class

ORDER = 10  # position of this file's variants in VARIANTS (pipeline/models/variants.py)

VIDEO_SALT, MUSIC_SALT = 0x5EED_0001, 0x5EED_0002


def splitmix64(z: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser (Steele et al.), element-wise on uint64 (arithmetic mod 2^64)."""
    z = z.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def row_keys(x: torch.Tensor) -> np.ndarray:
    """uint64 [N]: a hash of each row's float32 bytes (equal rows, equal keys)."""
    words = np.ascontiguousarray(x.detach().cpu().numpy().astype(np.float32)).view(np.uint32).astype(np.uint64)
    weights = splitmix64(np.arange(words.shape[1], dtype=np.uint64)) | np.uint64(1)
    with np.errstate(over="ignore"):
        return splitmix64((words * weights).sum(axis=1, dtype=np.uint64))


def random_embedding(x: torch.Tensor, seed: int, salt: int, dim: int) -> torch.Tensor:
    """[N, dim] uniform in [-1, 1): column k of row i from hash(row i) ^ hash(seed, salt, k)."""
    columns = splitmix64(np.uint64(seed) * np.uint64(1_000_003) + np.uint64(salt) * np.uint64(7919)
                         + np.arange(dim, dtype=np.uint64))
    bits = splitmix64(row_keys(x)[:, None] ^ columns[None, :])
    uniform = (bits >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
    return torch.from_numpy((2.0 * uniform - 1.0).astype(np.float32))


@model_class
class RandomScores(ClosedForm):
    """Chance-level scores, deterministic per run seed (the seed is a buffer: it survives save/load)."""

    config_class = ClosedFormConfig

    def __init__(self, visual_dim: int, music_dim: int, text_dim: int | None = None,
                 config: ClosedFormConfig | None = None):
        super().__init__(visual_dim, music_dim, text_dim, config)
        self.register_buffer("seed", torch.zeros((), dtype=torch.int64))

    def fit(self, data, select, seed: int) -> dict:
        self.seed.fill_(int(seed))
        return {"seed": int(seed)}

    def _embed(self, x: torch.Tensor, salt: int) -> torch.Tensor:
        return random_embedding(x, int(self.seed), salt, self.config.dim).to(x.device)

    def video_embedding(self, batch: Batch) -> torch.Tensor:
        return self._embed(require(batch, "visual", dim=self.visual_dim), VIDEO_SALT)

    def music_embedding(self, batch: Batch) -> torch.Tensor:
        return self._embed(require(batch, "music", dim=self.music_dim), MUSIC_SALT)


@register("random", kind="closed_form", table="every table (architecture 9)", row="Random")
def random_scores(s, p):
    """Random scores, deterministic per seed (data-independent: also the UGC + PGC row)."""
    cfg = ClosedFormConfig(dim=s.latent_dim, use_text=s.use_text)
    return lambda v, m, t: RandomScores(v, m, t, cfg)
