"""CMVAE (Yi et al.): cross-modal VAE matching micro-videos (visual + optional text) to background music.

The common model surface: encode_video / encode_music -> Gaussian posteriors, video_embedding /
music_embedding -> what ranking uses at inference (mu), score -> dot products, loss -> named terms.

Batch: a dict of tensors, one row per (video, music) pair: `visual` [B, Fv], `text` [B, Ft] (zeros where
missing) with `text_mask` [B] bool, `music` [B, Fm], optional `music_idx` [B] long (rows sharing a music
are never each other's negatives). Features enter raw: the model standardises each modality with the
per-column statistics `fit_scaling` stored in it (fitted on training rows), for every caller alike.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
from torch import nn

from pipeline.errors import DataError, ParamsError
from pipeline.losses import bidirectional_ranking_loss, kl_prior_loss, reconstruction_loss
from pipeline.gaussian import Gaussian, Mixture, kl_mixture_to_standard_normal, product_of_experts, sample
from pipeline.models.encoders import Decoder, GaussianEncoder
from pipeline.models.registry import model_class
from pipeline.models.scaling import Standardizer

Batch = Mapping[str, torch.Tensor]
GENERATIONS = ("cross", "dual", "none")
FUSIONS = ("poe", "concat", "moe")


@dataclass
class CMVAEConfig:
    """CMVAE hyper-parameters; defaults are the DebCM paper's settings (CMVAE-paper values in comments)."""

    latent_dim: int = 128  # d; CMVAE paper: 512
    hidden_dims: tuple[int, ...] = (128,)  # encoder F -> hidden -> d, decoder mirrors it ([F -> d -> F])
    dropout: float = 0.2
    margin: float = 0.05  # hinge margin of the ranking loss
    num_negatives: int = 40  # k hardest in-batch negatives; CMVAE paper: 10
    alpha: float = 1.0  # weight of music->video ranking; CMVAE paper: 3
    beta: float = 1.0  # weight of cross-reconstruction (element-mean MSE); CMVAE paper: 1e5
    gamma: float = 1.0  # weight of the ranking loss
    use_text: bool = True  # fuse the text expert when the data has text features
    subsample: bool = True  # add the objective of each single video modality (sub-sampled training)
    poe_prior: bool = False  # include the N(0, I) expert in the product (see product_of_experts)
    # Ablations of the CMVAE paper (Tables 3-5); the defaults are CMVAE itself.
    generation: str = "cross"  # cross: z_m decodes the video, z_v the music; dual: each its own; none
    fusion: str = "poe"  # poe; concat: JMVAE's one encoder on [visual; text; has_text]; moe: MMVAE's mixture
    inference_text: bool = True  # False: video_embedding ignores text (text missing at test; set on a trained model)

    def __post_init__(self) -> None:
        self.hidden_dims = tuple(int(h) for h in self.hidden_dims)

    def validate(self) -> None:
        if self.latent_dim < 1 or any(h < 1 for h in self.hidden_dims):
            raise ParamsError(f"model: latent_dim {self.latent_dim} and hidden_dims {self.hidden_dims} must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ParamsError(f"model.dropout={self.dropout}: expected in [0, 1)")
        if self.num_negatives < 1:
            raise ParamsError(f"model.num_negatives={self.num_negatives}: expected >= 1")
        for name in ("margin", "alpha", "beta", "gamma"):
            if getattr(self, name) < 0:
                raise ParamsError(f"model.{name}={getattr(self, name)}: expected >= 0")
        for name, allowed in (("generation", GENERATIONS), ("fusion", FUSIONS)):
            if getattr(self, name) not in allowed:
                raise ParamsError(f"model.{name}={getattr(self, name)!r}: expected one of {allowed}")


def require(batch: Batch, key: str, rows: int | None = None, dim: int | None = None, who: str = "batch") -> torch.Tensor:
    """Fetch `batch[key]`, checking it exists and has `rows` rows and `dim` columns."""
    if key not in batch:
        raise DataError(f"{who}: missing key {key!r}; present: {sorted(batch)}")
    x = batch[key]
    if rows is not None and x.shape[0] != rows:
        raise DataError(f"{who}[{key!r}]: {x.shape[0]} rows, expected {rows} (one per video in the batch)")
    if dim is not None and (x.ndim != 2 or x.shape[1] != dim):
        raise DataError(f"{who}[{key!r}]: shape {tuple(x.shape)}, expected (batch, {dim})")
    return x


def without_text(batch: Batch, text_dim: int) -> dict[str, torch.Tensor]:
    """The batch as if no video had a caption: zero text, every text_mask False (other keys kept)."""
    n = require(batch, "visual").shape[0]
    visual = batch["visual"]
    return {**batch, "text": visual.new_zeros(n, text_dim),
            "text_mask": torch.zeros(n, dtype=torch.bool, device=visual.device)}


class _Standardised(dict):
    """A batch whose feature keys CMVAE._standardised has already standardised (CMVAE._input passes them on)."""


@model_class
class CMVAE(nn.Module):
    """Video (visual, text) and music encoders into a shared d-dim Gaussian latent, trained to rank pairs."""

    config_class = CMVAEConfig

    def __init__(self, visual_dim: int, music_dim: int, text_dim: int | None = None,
                 config: CMVAEConfig | None = None):
        super().__init__()
        self.config = config = config or CMVAEConfig()
        config.validate()
        d, hidden, p = config.latent_dim, config.hidden_dims, config.dropout
        self.visual_dim, self.music_dim = int(visual_dim), int(music_dim)
        self.text_dim = int(text_dim) if (text_dim and config.use_text) else None
        self.joint = config.fusion == "concat" and self.text_dim is not None
        if self.joint:  # JMVAE: one encoder reads [visual ; text ; has_text], missing text entering as zeros
            self.visual_encoder = GaussianEncoder(visual_dim + self.text_dim + 1, d, hidden, p)
        else:
            self.visual_encoder = GaussianEncoder(visual_dim, d, hidden, p)
        self.music_encoder = GaussianEncoder(music_dim, d, hidden, p)
        self.text_encoder = GaussianEncoder(self.text_dim, d, hidden, p) if self.text_dim and not self.joint else None
        # Cross-generation (CMVAE): the music latent decodes the video's features and vice versa; dual: each
        # latent decodes its own modality; none: no decoders.
        generate = config.generation != "none"
        self.visual_decoder = Decoder(d, visual_dim, hidden, p) if generate else None
        self.text_decoder = Decoder(d, self.text_dim, hidden, p) if self.text_dim and generate else None
        self.music_decoder = Decoder(d, music_dim, hidden, p) if generate else None
        # Per-column standardisation of each input (identity until fit_scaling); reconstruction targets too.
        self.scalers = nn.ModuleDict({"visual": Standardizer(visual_dim), "music": Standardizer(music_dim)})
        if self.text_dim:
            self.scalers["text"] = Standardizer(self.text_dim)

    def fit_scaling(self, visual: torch.Tensor, music: torch.Tensor, text: torch.Tensor | None = None) -> None:
        """Fit each modality's standardisation on TRAINING rows only (text: the rows that have a caption)."""
        self.scalers["visual"].fit(visual, "visual features")
        self.scalers["music"].fit(music, "music features")
        if "text" in self.scalers and text is not None and text.shape[0] > 0:
            self.scalers["text"].fit(text, "text features")

    def _input(self, batch: Batch, key: str, rows: int | None = None) -> torch.Tensor:
        """batch[key] checked against the model's width and standardised."""
        dims = {"visual": self.visual_dim, "music": self.music_dim, "text": self.text_dim}
        x = require(batch, key, rows=rows, dim=dims[key])
        return x if isinstance(batch, _Standardised) else self.scalers[key](x)

    def _standardised(self, batch: Batch) -> "_Standardised":
        """The batch with each modality standardised once: the objective reads the visual features up to
        three times (encoder, reconstruction target, row count), each a pass over a [B, 2048] matrix."""
        if isinstance(batch, _Standardised):
            return batch
        out = _Standardised(batch)
        for key in self.scalers:
            if key in batch and (key != "text" or self.text_dim):
                out[key] = self._input(batch, key)
        return out

    # ---- posteriors -------------------------------------------------------------------------
    def _video_experts(self, batch: Batch) -> tuple[Gaussian, Gaussian | None, torch.Tensor | None]:
        visual = self._input(batch, "visual")
        n = visual.shape[0]
        visual_q = self.visual_encoder(visual)
        if self.text_encoder is None:
            return visual_q, None, None
        text = self._input(batch, "text", rows=n)
        text_mask = require(batch, "text_mask", rows=n).bool()
        return visual_q, self.text_encoder(text), text_mask

    def _joint_posterior(self, batch: Batch, with_text: bool) -> Gaussian:
        """JMVAE fusion: q(z | [visual ; text * has_text ; has_text]); with_text=False: the visual-only view."""
        visual = self._input(batch, "visual")
        n = visual.shape[0]
        text = self._input(batch, "text", rows=n)
        has_text = require(batch, "text_mask", rows=n).bool() & with_text
        # Standardised missing text would be -mean/std, not nothing: zero it and say so in the indicator.
        has = has_text.to(visual.dtype).unsqueeze(1)
        return self.visual_encoder(torch.cat([visual, text * has, has], dim=1))

    def _fuse(self, visual_q: Gaussian, text_q: Gaussian | None,
              text_mask: torch.Tensor | None) -> Gaussian | Mixture:
        if text_q is None:
            return product_of_experts([visual_q], include_prior=self.config.poe_prior)
        if self.config.fusion == "moe":
            return Mixture.uniform([visual_q, text_q], [None, text_mask])
        return product_of_experts([visual_q, text_q], [None, text_mask], include_prior=self.config.poe_prior)

    def _video_posteriors(self, batch: Batch, singles: bool) -> tuple[Gaussian | Mixture, list]:
        """The fused video posterior and, when `singles`, the single-modality posteriors that sub-sampled
        training adds, as (posterior, rows) with rows None = every row of the batch."""
        if self.joint:
            fused = self._joint_posterior(batch, with_text=True)
            return fused, [(self._joint_posterior(batch, with_text=False), None)] if singles else []
        visual_q, text_q, text_mask = self._video_experts(batch)
        fused = self._fuse(visual_q, text_q, text_mask)
        if not singles or text_q is None:
            return fused, []
        out = [(self._fuse(visual_q, None, None), None)]
        rows = torch.nonzero(text_mask).squeeze(1)
        if rows.numel() > 0:
            out.append((self._fuse(text_q[rows], None, None), rows))
        return fused, out

    def encode_video(self, batch: Batch) -> Gaussian:
        """q(z_v | visual, text): PoE of the visual and text experts; a video without text keeps visual only.
        (fusion concat: the joint encoder's posterior; moe: the mixture's moment-matched Gaussian.)"""
        fused = self._video_posteriors(batch, singles=False)[0]
        return fused.moments() if isinstance(fused, Mixture) else fused

    def encode_music(self, batch: Batch) -> Gaussian:
        """q(z_m | music features)."""
        return self.music_encoder(self._input(batch, "music"))

    def video_embedding(self, batch: Batch) -> torch.Tensor:
        """What ranking uses for a video at inference: z_v = mu (of the visual posterior alone when
        inference_text is False: the same trained model queried as if no video had text)."""
        if not self.config.inference_text and self.text_dim:
            batch = without_text(batch, self.text_dim)
        return self.encode_video(batch).mu

    def music_embedding(self, batch: Batch) -> torch.Tensor:
        """What ranking uses for a music clip at inference: z_m = mu."""
        return self.encode_music(batch).mu

    def score(self, video_z: torch.Tensor, music_z: torch.Tensor) -> torch.Tensor:
        """Matching scores [Nv, Nm]: dot products of the embeddings (CMVAE: s(v, m) = z_v . z_m)."""
        return video_z @ music_z.t()

    # ---- hooks DebCM overrides --------------------------------------------------------------
    def _match_music(self, music_z: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The music latent used for ranking and cross-generation during training (CMVAE: z_m itself)."""
        return music_z

    def _pair_scores(self, video_z: torch.Tensor, match_z: torch.Tensor, batch: Batch,
                     rows: torch.Tensor | None) -> torch.Tensor:
        """In-batch training score matrix of the video rows against the music rows (`rows` = subset)."""
        return video_z @ match_z.t()

    # ---- objective --------------------------------------------------------------------------
    def _latent(self, q: Gaussian | Mixture) -> torch.Tensor:
        """A reparameterised sample while training; the mean at inference (z = mu)."""
        if isinstance(q, Mixture):
            return q.sample() if self.training else q.mu
        return sample(q) if self.training else q.mu

    @staticmethod
    def _kl_prior(q: Gaussian | Mixture, z: torch.Tensor) -> torch.Tensor:
        """KL(q || N(0, I)) averaged over the batch: analytic for a Gaussian, estimated at z for a mixture."""
        return kl_mixture_to_standard_normal(q, z).mean() if isinstance(q, Mixture) else kl_prior_loss(q)

    def _recon_video(self, z: torch.Tensor, batch: Batch, rows: torch.Tensor | None) -> torch.Tensor:
        """MSE of the video's visual (and, where present, text) features decoded from latent z."""
        visual = self._input(batch, "visual")
        loss = reconstruction_loss(self.visual_decoder(z), visual if rows is None else visual[rows])
        if self.text_decoder is not None:
            text = self._input(batch, "text")
            text_mask = require(batch, "text_mask", rows=visual.shape[0]).bool()
            if rows is not None:
                text, text_mask = text[rows], text_mask[rows]
            loss = loss + reconstruction_loss(self.text_decoder(z), text, text_mask)
        return loss

    # What each latent decodes: cross (CMVAE) z_v -> music and z_m -> video; dual: each its own; none.
    _VIDEO_DECODES = {"cross": ("recon_music",), "dual": ("recon_video",), "none": ()}

    def _video_decodes(self, video_z: torch.Tensor, batch: Batch, rows: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Reconstruction terms of the video latent (keys: _video_decode_keys), rows = a subset of the batch."""
        gen = self.config.generation
        if gen == "cross":
            music = self._input(batch, "music")
            return {"recon_music": reconstruction_loss(self.music_decoder(video_z),
                                                       music if rows is None else music[rows])}
        if gen == "dual":
            return {"recon_video": self._recon_video(video_z, batch, rows)}
        return {}

    def _video_decode_keys(self) -> tuple[str, ...]:
        return self._VIDEO_DECODES[self.config.generation]

    def _music_decodes(self, match_z: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        """Reconstruction terms of the music latent z_m (after any confounder step)."""
        gen = self.config.generation
        if gen == "cross":
            return {"recon_video": self._recon_video(match_z, batch, None)}
        if gen == "dual":
            return {"recon_music": reconstruction_loss(self.music_decoder(match_z), self._input(batch, "music"))}
        return {}

    def _video_side_terms(self, video_q: Gaussian | Mixture, match_z: torch.Tensor, batch: Batch,
                          rows: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Terms that depend on the video posterior: KL, both ranking halves and what z_v decodes."""
        cfg = self.config
        video_z = self._latent(video_q)
        music_idx = batch.get("music_idx")
        if rows is not None:
            match_z = match_z[rows]
            music_idx = music_idx[rows] if music_idx is not None else None
        scores = self._pair_scores(video_z, match_z, batch, rows)
        v2m, m2v = bidirectional_ranking_loss(scores, music_idx, cfg.margin, cfg.num_negatives)
        terms = {"kl_video": self._kl_prior(video_q, video_z), "rank_v2m": v2m, "rank_m2v": m2v}
        terms.update(self._video_decodes(video_z, batch, rows))
        return terms

    def _video_objective(self, t: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """KL_video + gamma * (L_v2m + alpha * L_m2v) + beta * (what z_v decodes): the terms a video
        posterior enters."""
        cfg = self.config
        objective = t["kl_video"] + cfg.gamma * (t["rank_v2m"] + cfg.alpha * t["rank_m2v"])
        for key in self._video_decode_keys():
            objective = objective + cfg.beta * t[key]
        return objective

    def _loss_terms(self, batch: Batch) -> tuple[dict[str, torch.Tensor], Gaussian, Gaussian]:
        """Every named CMVAE term plus the two posteriors (DebCM adds its teacher terms to these)."""
        batch = self._standardised(batch)
        visual = self._input(batch, "visual")
        n = visual.shape[0]
        if "music_idx" in batch:
            require(batch, "music_idx", rows=n)
        cfg = self.config
        video_q, singles = self._video_posteriors(batch, singles=cfg.subsample)
        music_q = self.encode_music(batch)
        if music_q.mu.shape[0] != n:
            raise DataError(f"batch['music']: {music_q.mu.shape[0]} rows, expected {n} (one per video)")
        match_z = self._match_music(self._latent(music_q), batch)

        terms = self._video_side_terms(video_q, match_z, batch, None)
        terms["kl_music"] = kl_prior_loss(music_q)
        music_side = self._music_decodes(match_z, batch)
        terms.update(music_side)
        zero = visual.sum() * 0.0
        for key in ("recon_video", "recon_music"):  # always logged, 0 where nothing decodes them
            terms.setdefault(key, zero)

        terms["sub_visual"] = terms["sub_text"] = zero
        # Sub-sampled training: the same objective for each single video modality (visual, then text rows).
        for key, (single, rows) in zip(("sub_visual", "sub_text"), singles):
            terms[key] = self._video_objective(self._video_side_terms(single, match_z, batch, rows))
        total = self._video_objective(terms)
        for value in music_side.values():
            total = total + cfg.beta * value
        terms["total"] = total + terms["kl_music"] + terms["sub_visual"] + terms["sub_text"]
        if isinstance(video_q, Mixture):
            video_q = video_q.moments()
        return terms, video_q, music_q

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Named loss terms (each loggable) and their weighted sum under 'total'.

        total = beta * (recon_video + recon_music) + kl_video + kl_music
                + gamma * (rank_v2m + alpha * rank_m2v) + sub_visual + sub_text
        recon_video / recon_music: MSE of the video's / the music's features, decoded from the other latent
        (generation cross), from its own latent (dual), or 0 (none).
        """
        return self._loss_terms(batch)[0]
