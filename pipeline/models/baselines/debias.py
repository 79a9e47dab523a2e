"""The debiasing baselines of DebCM Table 3 on the CMVAE backbone: IPS, dual IPS, and (UGC + PGC column)
their teacher-guided versions through label distillation, and DecRS guided the same way.

IPS (ips). Each training pair (v, m) of uploader u gets the weight 1 / p, p = max(clip, sum_g u_g g(m)_g):
the uploader's share of the music's genre (u: its training genre distribution, g(m): the music's genre
probabilities), clipped at `baselines.propensity_clip`. A pair in the uploader's majority genre has a large
propensity, so it counts less. Both ranking halves use the pair's weight for its anchor and are normalised
by the batch's weight sum (self-normalised IPS: sum_i w_i L_i / sum_i w_i), so the loss keeps CMVAE's
scale; reconstruction and KL terms are unweighted. Without weights the ranking loss is CMVAE's, bit for bit.

Dual IPS (dual_ips, DebCM-DU). Also the music side's propensity, the global share of the music's genre among
the training choices (q(m) = sum_g prior_g g(m)_g, prior = the mean training uploader distribution, which
the training loop passes to set_prior): w = 1 / (max(clip, p) * max(clip, q(m))).

Label distillation (the `_pgc` debiased rows). The frozen PGC teacher's scores are imputed as soft labels
for the batch: with t_ij = mu_t(v_i) . mu_t(m_j) (the teacher's inference scores) and s_ij the student's
training scores of the same in-batch matrix (the one its ranking loss reads),
    distill = (1/B) sum_i KL( softmax_j(t_ij / T) || softmax_j(s_ij / T) ),   T = baselines.distill_temperature
and total = (the model's own loss on the observed pairs) + baselines.distill_weight * distill. The term is 0
exactly when the student's in-batch scores equal the teacher's (up to a constant per row).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pipeline.data.schema import GENRES
from pipeline.errors import DataError, ParamsError
from pipeline.losses import bidirectional_ranking_loss
from pipeline.models.variants import cmvae_part, register
from pipeline.models.cmvae import CMVAE, CMVAEConfig, require
from pipeline.models.debcm import DebCM, DebCMConfig
from pipeline.models.registry import model_class

ORDER = 50  # position of this file's variants in VARIANTS (pipeline/models/variants.py)

PROPENSITIES = ("none", "uploader", "dual")
TABLE = "DebCM Table 3"


@dataclass
class DebiasFields:
    """The knobs these baselines add to their backbone's config (from the `baselines` params group)."""

    propensity: str = "none"  # none | uploader (IPS) | dual (uploader and music side)
    propensity_clip: float = 0.05
    distill_weight: float = 0.0
    distill_temperature: float = 1.0

    def validate(self) -> None:
        super().validate()
        if self.propensity not in PROPENSITIES:
            raise ParamsError(f"debias propensity {self.propensity!r}: expected one of {PROPENSITIES}")
        if not 0 < self.propensity_clip <= 1 or self.distill_weight < 0 or self.distill_temperature <= 0:
            raise ParamsError(f"baselines.propensity_clip={self.propensity_clip} (0, 1], distill_weight="
                              f"{self.distill_weight} >= 0, distill_temperature={self.distill_temperature} > 0")


@dataclass
class DebiasedCMVAEConfig(DebiasFields, CMVAEConfig):
    pass


@dataclass
class DebiasedDebCMConfig(DebiasFields, DebCMConfig):
    pass


def propensity_weights(uploader_dist: torch.Tensor, music_genre: torch.Tensor, clip: float,
                       genre_prior: torch.Tensor | None = None) -> torch.Tensor:
    """[B] inverse propensities of the pairs: 1 / max(clip, u . g(m)), times 1 / max(clip, prior . g(m)) when
    `genre_prior` is given (dual)."""
    p = (uploader_dist * music_genre).sum(dim=1).clamp_min(clip)
    if genre_prior is not None:
        p = p * (music_genre @ genre_prior).clamp_min(clip)
    return 1.0 / p


def distillation_loss(student_scores: torch.Tensor, teacher_scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """(1/B) sum_i KL(softmax(t_i / T) || softmax(s_i / T)) over the rows of two [B, B] score matrices."""
    if student_scores.shape != teacher_scores.shape:
        raise DataError(f"distillation: student scores {tuple(student_scores.shape)} and teacher scores "
                        f"{tuple(teacher_scores.shape)} differ")
    target = F.log_softmax(teacher_scores.detach() / temperature, dim=1)
    return F.kl_div(F.log_softmax(student_scores / temperature, dim=1), target, log_target=True,
                    reduction="batchmean")


class DebiasMixin:
    """IPS weights in the ranking loss and label distillation, on top of CMVAE's or DebCM's objective."""

    def _init_debias(self) -> None:
        self._scores = self._main_scores = None
        if not hasattr(self, "uploader_prior"):  # DebCM has it already (its inference prior: the same vector)
            self.register_buffer("uploader_prior", torch.full((len(GENRES),), float("nan")))

    def set_prior(self, uploader_prior_mean) -> None:
        """The mean training uploader distribution (= the genre share of the training choices)."""
        prior = torch.as_tensor(uploader_prior_mean, dtype=torch.float32).flatten()
        if prior.shape != self.uploader_prior.shape or not bool(torch.isfinite(prior).all()):
            raise DataError(f"uploader prior mean: got {prior.tolist()}, expected {len(GENRES)} finite floats")
        self.uploader_prior.copy_(prior.to(self.uploader_prior.device))

    def pair_weights(self, batch, rows: torch.Tensor | None = None) -> torch.Tensor | None:
        cfg = self.config
        if cfg.propensity == "none":
            return None
        prior = None
        if cfg.propensity == "dual":
            if bool(torch.isnan(self.uploader_prior).any()):
                raise DataError("dual IPS: the genre prior is not set; call set_prior(mean training uploader "
                                "distribution) before training")
            prior = self.uploader_prior
        w = propensity_weights(require(batch, "uploader_dist", dim=len(GENRES)),
                               require(batch, "music_genre", dim=len(GENRES)), cfg.propensity_clip, prior)
        return w if rows is None else w[rows]

    def _pair_scores(self, video_z, match_z, batch, rows):
        self._scores = super()._pair_scores(video_z, match_z, batch, rows)  # what the ranking loss just read
        return self._scores

    def _video_side_terms(self, video_q, match_z, batch, rows):
        # CMVAE sums its total from these terms after this returns, so reweighted halves enter every total
        terms = super()._video_side_terms(video_q, match_z, batch, rows)
        scores, self._scores = self._scores, None
        if rows is None and self._main_scores is None:  # the first full-batch call: the fused video posterior
            self._main_scores = scores
        weights = self.pair_weights(batch, rows)
        if weights is not None:
            music_idx = batch.get("music_idx")
            music_idx = music_idx[rows] if (music_idx is not None and rows is not None) else music_idx
            cfg = self.config
            terms["rank_v2m"], terms["rank_m2v"] = bidirectional_ranking_loss(scores, music_idx, cfg.margin,
                                                                               cfg.num_negatives, weights)
        return terms

    def loss(self, batch):
        self._main_scores = None
        terms = super().loss(batch)
        scores, self._main_scores = self._main_scores, None
        cfg = self.config
        terms["distill"] = scores.sum() * 0.0
        if cfg.distill_weight > 0:
            n = scores.shape[0]
            video = require(batch, "teacher_video_mu", rows=n, who="distillation batch (needs the PGC teacher)")
            music = require(batch, "teacher_music_mu", rows=n, dim=video.shape[1], who="distillation batch")
            terms["distill"] = distillation_loss(scores, video @ music.t(), cfg.distill_temperature)
            terms["total"] = terms["total"] + cfg.distill_weight * terms["distill"]
        return terms


@model_class
class DebiasedCMVAE(DebiasMixin, CMVAE):
    """CMVAE with IPS pair weights and/or label distillation from the PGC teacher."""

    config_class = DebiasedCMVAEConfig

    def __init__(self, visual_dim: int, music_dim: int, text_dim: int | None = None,
                 config: DebiasedCMVAEConfig | None = None):
        super().__init__(visual_dim, music_dim, text_dim, config or DebiasedCMVAEConfig())
        self._init_debias()


@model_class
class DebiasedDebCM(DebiasMixin, DebCM):
    """DebCM (here: DecRS's global confounder) with label distillation from the PGC teacher."""

    config_class = DebiasedDebCMConfig

    def __init__(self, visual_dim: int, music_dim: int, text_dim: int | None = None,
                 config: DebiasedDebCMConfig | None = None):
        super().__init__(visual_dim, music_dim, text_dim, config or DebiasedDebCMConfig())
        self._init_debias()

    set_prior = DebCM.set_prior  # DebCM's check (a distribution) and buffer


def _distilled(p) -> bool:
    return p.distill_weight > 0


def _cmvae(s, p, propensity: str, distill: bool):
    cfg = DebiasedCMVAEConfig(**dataclasses.asdict(cmvae_part(s)), propensity=propensity,
                              propensity_clip=p.propensity_clip, distill_weight=p.distill_weight if distill else 0.0,
                              distill_temperature=p.distill_temperature)
    return lambda v, m, t: DebiasedCMVAE(v, m, t, cfg)


@register("ips", table=TABLE, row="DebCM-IPS")
def ips(s, p):
    """CMVAE, ranking pairs weighted by 1 / the uploader's share of the music's genre."""
    return _cmvae(s, p, "uploader", distill=False)


@register("dual_ips", table=TABLE, row="DebCM-DU")
def dual_ips(s, p):
    """CMVAE, ranking pairs weighted by 1 / (uploader-side propensity * the genre's global share)."""
    return _cmvae(s, p, "dual", distill=False)


@register("ips_pgc", table=TABLE, row="DebCM-IPS", data="ugc+pgc", teacher=lambda s, p: _distilled(p))
def ips_pgc(s, p):
    """IPS on UGC + label distillation from the PGC teacher."""
    return _cmvae(s, p, "uploader", distill=True)


@register("dual_ips_pgc", table=TABLE, row="DebCM-DU", data="ugc+pgc", teacher=lambda s, p: _distilled(p))
def dual_ips_pgc(s, p):
    """Dual IPS on UGC + label distillation from the PGC teacher."""
    return _cmvae(s, p, "dual", distill=True)


@register("decrs_pgc", table=TABLE, row="DebCM-DecRS", data="ugc+pgc", teacher=lambda s, p: _distilled(p))
def decrs_pgc(s, p):
    """DecRS (global-average confounder, no KL) on UGC + label distillation from the PGC teacher."""
    base = dataclasses.asdict(dataclasses.replace(s, kl_weight=0.0, confounder_mode="global"))
    cfg = DebiasedDebCMConfig(**base, distill_weight=p.distill_weight, distill_temperature=p.distill_temperature)
    return lambda v, m, t: DebiasedDebCM(v, m, t, cfg)
