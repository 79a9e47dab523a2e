"""DebCM student (Yi & Chen): CMVAE on UGC with backdoor adjustment for the uploader confounder, guided by
a frozen CMVAE teacher trained on PGC through an analytic KL between their posteriors.

Batch keys beyond CMVAE's: `uploader_dist` [B, 6] (the video's uploader genre distribution u_g),
`music_genre` [B, 6] (genre probabilities g(m)), `teacher_{video,music}_{mu,logvar}` [B, d].
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from torch import nn
from tqdm import tqdm

from pipeline.config import from_group
from pipeline.data.schema import GENRES
from pipeline.errors import DataError, ParamsError
from pipeline.losses import kl_transfer_loss
from pipeline.models.cmvae import CMVAE, Batch, CMVAEConfig, require
from pipeline.models.registry import model_class
from pipeline.gaussian import Gaussian

log = logging.getLogger(__name__)

CONFOUNDERS = ("concat", "interaction", "none")  # none: no adjustment (the cmvae_kl cell of the 2x2)
CONFOUNDER_MODES = ("batch", "global")
INFERENCE = ("backdoor", "content")
TEACHER_KEYS = ("teacher_video_mu", "teacher_video_logvar", "teacher_music_mu", "teacher_music_logvar")


@dataclass
class DebCMConfig(CMVAEConfig):
    """CMVAE settings plus the confounder and transfer switches: params groups `model` (the CMVAE fields, shared
    with the teacher), `adjustment` (the confounder fields) and `student` (kl_weight); see `student_config`."""

    # concat: the paper's z'_m = Linear([z_m ; z_u]); interaction: u^T W g(m); none: no adjustment at all, so
    # with kl_weight > 0 a CMVAE guided by the teacher (docs/architecture.md section 10: the teacher without the
    # adjustment)
    confounder: str = "concat"
    confounder_mode: str = "batch"  # concat z_u from the batch's uploaders (DebCM) or the training mean (DecRS)
    confounder_projection: str = "residual"  # concat: z'_m = z_m + W_u z_u + b (residual) or W [z_m ; z_u] + b
    inference: str = "backdoor"  # interaction only: marginalise u with the training mean, or drop the term
    # interaction only: W = interaction_scale * W_raw. Adam moves W_raw by about lr per step whatever the
    # gradient's size, so at scale 1 W stays ~0.02 after the few dozen steps an early-stopped run takes while
    # the taste effect it must carry is of order 1; the scale lets W learn at the pace the ranking scores do
    # (chosen on training-data diagnostics, pipeline/training/diagnostics.py, README "interaction term").
    interaction_scale: float = 100.0
    # Weight of KL(q_student || q_teacher) (sum over d, mean over batch). The paper's 40 (and its sweep
    # 5e-7..5e-2) refer to the public code's reduction, so this scale is not directly comparable.
    kl_weight: float = 40.0
    n_genres: int = len(GENRES)

    def validate(self) -> None:
        super().validate()
        for name, allowed in (("confounder", CONFOUNDERS), ("confounder_mode", CONFOUNDER_MODES),
                              ("inference", INFERENCE), ("confounder_projection", ("residual", "linear"))):
            if getattr(self, name) not in allowed:
                raise ParamsError(f"adjustment.{name}={getattr(self, name)!r}: expected one of {allowed}")
        if self.kl_weight < 0:
            raise ParamsError(f"student.kl_weight={self.kl_weight}: expected >= 0")
        if self.interaction_scale <= 0:
            raise ParamsError(f"adjustment.interaction_scale={self.interaction_scale}: expected > 0")
        if self.n_genres < 1:
            raise ParamsError(f"adjustment.n_genres={self.n_genres}: expected >= 1")


# The params groups a DebCMConfig is read from, each with the fields it owns (docs/architecture.md section 4):
# `student` only the teacher-transfer weight (the sweep varies it, so it tracks the other two groups and not
# this one), `model` the CMVAE fields the teacher reads too, `adjustment` the rest (the backdoor adjustment).
STUDENT_KEYS = ("kl_weight",)
MODEL_KEYS = tuple(f.name for f in dataclasses.fields(CMVAEConfig))
ADJUSTMENT_KEYS = tuple(f.name for f in dataclasses.fields(DebCMConfig) if f.name not in (*MODEL_KEYS, *STUDENT_KEYS))
STUDENT_GROUPS = {"student": STUDENT_KEYS, "model": MODEL_KEYS, "adjustment": ADJUSTMENT_KEYS}


def student_config(read: Callable[[str], Mapping[str, Any] | None]) -> DebCMConfig:
    """The student's DebCMConfig from the groups of STUDENT_GROUPS, `read(name)` giving each (a stage:
    stages.common.group; a loaded params file: its .get). A key in the wrong group is an error."""
    merged: dict[str, Any] = {}
    for name, keys in STUDENT_GROUPS.items():
        part = dict(read(name) or {})
        unknown = sorted(set(part) - set(keys))
        if unknown:
            raise ParamsError(f"params group {name!r}: unknown key(s) {unknown}; known: {sorted(keys)}")
        merged.update(part)
    return from_group(DebCMConfig, merged, "model/adjustment/student")


@model_class
class DebCM(CMVAE):
    """The deconfounded student. Inference embeddings carry one extra column (see music_embedding)."""

    config_class = DebCMConfig

    def __init__(self, visual_dim: int, music_dim: int, text_dim: int | None = None,
                 config: DebCMConfig | None = None):
        config = config or DebCMConfig()
        super().__init__(visual_dim, music_dim, text_dim, config)
        d, n_g = config.latent_dim, config.n_genres
        if config.confounder == "concat":
            self.genre_embedding = nn.Linear(n_g, d, bias=False)  # E_g in R^{d x N_g}: z_u = E_g u
            # z'_m = W [z_m ; z_u] + b back to d. "linear": W free (the paper's literal form); "residual": W's
            # z_m block fixed to I, z'_m = z_m + W_u z_u + b. With a free block the model can zero z_m (the
            # noisy sampled latent): every score becomes equal, which the hardest-k hinge with margin 0.05
            # rewards (k * margin per anchor, below what any informative ranking costs), so without the
            # teacher's pull the student collapsed to chance after a few epochs (README "no_teacher collapse").
            linear = config.confounder_projection == "linear"
            self.project = nn.Linear(2 * d if linear else d, d)
        elif config.confounder == "interaction":
            # W in R^{N_g x N_g}; zero start = pure content model until taste explains part of the choices.
            self.interaction = nn.Parameter(torch.zeros(n_g, n_g))
        self.register_buffer("uploader_prior", torch.full((n_g,), float("nan")))

    # ---- the confounder -------------------------------------------------------------------
    def set_prior(self, uploader_prior_mean) -> None:
        """Store the mean genre distribution over all training uploaders (used at inference)."""
        prior = torch.as_tensor(uploader_prior_mean, dtype=torch.float32).flatten()
        n_g = self.config.n_genres
        if prior.shape != (n_g,) or not bool(torch.isfinite(prior).all()) or bool((prior < 0).any()):
            raise DataError(f"uploader prior mean: got {prior.tolist()}, expected {n_g} non-negative finite floats")
        if abs(float(prior.sum()) - 1.0) > 1e-3:
            raise DataError(f"uploader prior mean: sums to {float(prior.sum()):.4f}, expected 1 (a distribution)")
        self.uploader_prior.copy_(prior.to(self.uploader_prior.device))

    def _prior(self) -> torch.Tensor:
        if bool(torch.isnan(self.uploader_prior).any()):
            raise DataError("DebCM: uploader prior mean not set; call set_prior(mean training uploader genre "
                            "distribution) before inference or confounder_mode='global' training")
        return self.uploader_prior

    def _uploader_mean(self, batch: Batch, use_prior: bool) -> torch.Tensor:
        """The confounder value shared by every music: batch mean of u (training, 'batch') or the prior."""
        if use_prior or self.config.confounder_mode == "global":
            return self._prior()
        return require(batch, "uploader_dist", dim=self.config.n_genres).mean(dim=0)

    def _deconfound(self, music_z: torch.Tensor, u_mean: torch.Tensor) -> torch.Tensor:
        """Backdoor adjustment (DebCM): z_u = E_g . mean(u); z'_m = Linear([z_m ; z_u]) (see confounder_projection)."""
        z_u = self.genre_embedding(u_mean).expand(music_z.shape[0], -1)
        if self.config.confounder_projection == "linear":
            return self.project(torch.cat([music_z, z_u], dim=1))
        return music_z + self.project(z_u)

    def _match_music(self, music_z: torch.Tensor, batch: Batch) -> torch.Tensor:
        if self.config.confounder != "concat":
            return music_z
        return self._deconfound(music_z, self._uploader_mean(batch, use_prior=not self.training))

    def _pair_scores(self, video_z, match_z, batch, rows):
        scores = video_z @ match_z.t()
        if self.config.confounder != "interaction":
            return scores
        genre = require(batch, "music_genre", dim=self.config.n_genres)
        genre = genre[rows] if rows is not None else genre
        if self.training:  # the video's own uploader: taste explains the uploader-driven part of a choice
            u = require(batch, "uploader_dist", dim=self.config.n_genres)
            u = u[rows] if rows is not None else u
            return scores + u @ self.taste_matrix() @ genre.t()
        if self.config.inference == "backdoor":  # E_u[u]^T W g(m): the same prior for every video
            return scores + (self._prior() @ self.taste_matrix() @ genre.t()).unsqueeze(0)
        return scores

    def taste_matrix(self) -> torch.Tensor:
        """W of the interaction term u^T W g(m) (interaction_scale * the trained parameter)."""
        return self.config.interaction_scale * self.interaction

    # ---- inference surface ----------------------------------------------------------------
    def video_embedding(self, batch: Batch) -> torch.Tensor:
        """[mu_v ; 1]: the constant column picks up each music's bias in music_embedding."""
        mu = super().video_embedding(batch)
        return torch.cat([mu, torch.ones_like(mu[:, :1])], dim=1)

    def music_embedding(self, batch: Batch) -> torch.Tensor:
        """[z'_m ; b_m] with the training-mean prior: z'_m deconfounded (concat) and
        b_m = prior^T W g(m) (interaction + backdoor, else 0), so a dot product gives the inference score."""
        mu = self.encode_music(batch).mu
        cfg = self.config
        match = self._deconfound(mu, self._prior()) if cfg.confounder == "concat" else mu
        bias = torch.zeros_like(mu[:, :1])
        if cfg.confounder == "interaction" and cfg.inference == "backdoor":
            genre = require(batch, "music_genre", rows=mu.shape[0], dim=cfg.n_genres)
            bias = (genre @ self.taste_matrix().t() @ self._prior()).unsqueeze(1)
        return torch.cat([match, bias], dim=1)

    def score(self, video_z: torch.Tensor, music_z: torch.Tensor) -> torch.Tensor:
        want = self.config.latent_dim + 1
        if video_z.shape[-1] != want or music_z.shape[-1] != want:
            raise DataError(f"DebCM.score: embeddings of width {video_z.shape[-1]} and {music_z.shape[-1]}, "
                            f"expected {want}; pass video_embedding()/music_embedding(), not raw posteriors")
        return video_z @ music_z.t()

    # ---- objective --------------------------------------------------------------------------
    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        """CMVAE terms (on z'_m) + kl_weight * (KL_video + KL_music) to the frozen teacher.

        KL(q_student || q_teacher), summed over latent dims and averaged over the batch; the music KL uses
        the student's z_m posterior before the confounder step (the teacher knows no uploaders).
        """
        missing = [k for k in TEACHER_KEYS if k not in batch]
        if missing and self.config.kl_weight > 0:
            raise DataError(f"DebCM batch: missing teacher posterior key(s) {missing}; compute them once with "
                            "teacher_posteriors(), or set student.kl_weight: 0")
        terms, video_q, music_q = self._loss_terms(batch)
        n = video_q.mu.shape[0]
        if missing:
            terms["kl_teacher_video"] = terms["kl_teacher_music"] = video_q.mu.sum() * 0.0
            return terms
        d = self.config.latent_dim
        teacher_video = Gaussian(require(batch, "teacher_video_mu", n, d), require(batch, "teacher_video_logvar", n, d))
        teacher_music = Gaussian(require(batch, "teacher_music_mu", n, d), require(batch, "teacher_music_logvar", n, d))
        terms["kl_teacher_video"] = kl_transfer_loss(video_q, teacher_video)
        terms["kl_teacher_music"] = kl_transfer_loss(music_q, teacher_music)
        terms["total"] = terms["total"] + self.config.kl_weight * (terms["kl_teacher_video"] + terms["kl_teacher_music"])
        return terms


@torch.no_grad()
def teacher_posteriors(teacher: CMVAE, side: str, features: Mapping[str, torch.Tensor],
                       chunk_size: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, logvar) of the frozen teacher for every row, computed once before the student trains.

    `side` is 'video' (features: visual [+ text, text_mask]) or 'music' (features: music). Runs in eval
    mode (no dropout, no sampling) in chunks; the teacher's train/eval mode is restored afterwards.
    """
    if side not in ("video", "music"):
        raise ParamsError(f"teacher_posteriors: side={side!r}, expected 'video' or 'music'")
    key = "visual" if side == "video" else "music"
    n = require(features, key, who=f"teacher {side} features").shape[0]
    if n == 0:
        raise DataError(f"teacher {side} features: no rows")
    encode = teacher.encode_video if side == "video" else teacher.encode_music
    device = next(teacher.parameters()).device
    was_training = teacher.training
    teacher.eval()
    mus, logvars = [], []
    try:
        for start in tqdm(range(0, n, chunk_size), desc=f"teacher {side} posteriors", leave=False,
                          disable=n <= 4 * chunk_size):
            chunk = {k: v[start:start + chunk_size].to(device) for k, v in features.items()}
            q = encode(chunk)
            mus.append(q.mu.cpu())
            logvars.append(q.logvar.cpu())
    finally:
        teacher.train(was_training)
    log.info("teacher posteriors for %d %s rows", n, side)
    return torch.cat(mus), torch.cat(logvars)
