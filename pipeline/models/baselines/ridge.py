"""The linear map of docs/architecture.md section 9 (variants `linear`, `linear_pgc`): ridge regression from
standardised video features ([visual ; text]) to standardised music features (audio || openSMILE), fitted by
scikit-learn's Ridge on the training pairs; a video is ranked against the music by the cosine of its
predicted music vector and each music's own vector.

The L2 strength is chosen among `baselines.ridge_alphas` by validation Recall@val_k, the criterion the
neural models' early stopping uses. `linear_pgc` fits on the UGC + PGC training pairs.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from pipeline.errors import ParamsError
from pipeline.models.variants import register
from pipeline.models.baselines.closed_form import ClosedForm, unit
from pipeline.models.cmvae import Batch
from pipeline.models.registry import model_class

ORDER = 30  # position of this file's variants in VARIANTS (pipeline/models/variants.py)

log = logging.getLogger(__name__)


@dataclass
class RidgeConfig:
    alphas: tuple[float, ...] = (1.0, 10.0, 100.0, 1000.0, 10000.0)
    use_text: bool = True

    def __post_init__(self) -> None:
        self.alphas = tuple(float(a) for a in self.alphas)

    def validate(self) -> None:
        if not self.alphas or min(self.alphas) <= 0:
            raise ParamsError(f"baselines.ridge_alphas={list(self.alphas)}: expected positive values")


@model_class
class RidgeMap(ClosedForm):
    """video -> W^T x + b in the standardised music space; embeddings are unit vectors (cosine ranking)."""

    config_class = RidgeConfig

    def __init__(self, visual_dim: int, music_dim: int, text_dim: int | None = None,
                 config: RidgeConfig | None = None):
        super().__init__(visual_dim, music_dim, text_dim, config)
        self.register_buffer("weight", torch.zeros(self.video_width, self.music_dim))
        self.register_buffer("bias", torch.zeros(self.music_dim))
        self.register_buffer("alpha", torch.zeros((), dtype=torch.float64))

    def fit(self, data, select, seed: int) -> dict:
        from sklearn.linear_model import Ridge  # only when fitting: discovery imports every model module

        self.fit_scaling(data)
        x, y = (t.cpu().numpy() for t in self.pair_rows(data))
        scores, best = {}, None
        for alpha in sorted(self.config.alphas):
            fitted = Ridge(alpha=alpha, fit_intercept=True).fit(x, y)
            self.weight.copy_(torch.from_numpy(fitted.coef_.T.copy()))
            self.bias.copy_(torch.from_numpy(fitted.intercept_.copy()))
            scores[alpha] = select(self)
            if best is None or scores[alpha] > scores[best[0]]:  # ties: the smaller alpha, met first
                best = (alpha, self.weight.clone(), self.bias.clone())
        alpha, weight, bias = best
        self.weight.copy_(weight)
        self.bias.copy_(bias)
        self.alpha.fill_(alpha)
        log.info("ridge: alpha %g chosen on validation (%s)", alpha, {a: round(s, 4) for a, s in scores.items()})
        return {"alpha": alpha, "validation": {str(a): s for a, s in scores.items()}}

    def video_embedding(self, batch: Batch) -> torch.Tensor:
        return unit(self.video_features(batch) @ self.weight + self.bias)

    def music_embedding(self, batch: Batch) -> torch.Tensor:
        return unit(self.music_features(batch))


def _ridge(s, p):
    cfg = RidgeConfig(alphas=p.ridge_alphas, use_text=s.use_text)
    return lambda v, m, t: RidgeMap(v, m, t, cfg)


@register("linear", kind="closed_form", table="every table (architecture 9)", row="Ridge (linear map)")
def linear(s, p):
    """Ridge map video -> music features, cosine ranking (UGC training pairs)."""
    return _ridge(s, p)


@register("linear_pgc", kind="closed_form", data="ugc+pgc", union=True, table="every table (architecture 9)",
          row="Ridge (linear map)")
def linear_pgc(s, p):
    """Ridge map video -> music features on the UGC + PGC training pairs."""
    return _ridge(s, p)
