"""FROZEN COPY of pipeline/models/cmvae.py as it was before the generation/fusion/inference_text options
(commit e1c1937), kept only so that test_cmvae_options.py can prove the defaults compute exactly what this
code computed. Do not edit or import it from library code.

CMVAE (Yi et al.): cross-modal VAE matching micro-videos (visual + optional text) to background music.

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
from pipeline.gaussian import Gaussian, product_of_experts, sample
from pipeline.models.encoders import Decoder, GaussianEncoder
from pipeline.models.scaling import Standardizer

Batch = Mapping[str, torch.Tensor]


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
        self.visual_encoder = GaussianEncoder(visual_dim, d, hidden, p)
        self.music_encoder = GaussianEncoder(music_dim, d, hidden, p)
        self.text_encoder = GaussianEncoder(self.text_dim, d, hidden, p) if self.text_dim else None
        # Cross-generation: the music latent decodes the video's features and vice versa.
        self.visual_decoder = Decoder(d, visual_dim, hidden, p)
        self.text_decoder = Decoder(d, self.text_dim, hidden, p) if self.text_dim else None
        self.music_decoder = Decoder(d, music_dim, hidden, p)
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
        return self.scalers[key](require(batch, key, rows=rows, dim=dims[key]))

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

    def _fuse(self, visual_q: Gaussian, text_q: Gaussian | None, text_mask: torch.Tensor | None) -> Gaussian:
        if text_q is None:
            return product_of_experts([visual_q], include_prior=self.config.poe_prior)
        return product_of_experts([visual_q, text_q], [None, text_mask], include_prior=self.config.poe_prior)

    def encode_video(self, batch: Batch) -> Gaussian:
        """q(z_v | visual, text): PoE of the visual and text experts; a video without text keeps visual only."""
        return self._fuse(*self._video_experts(batch))

    def encode_music(self, batch: Batch) -> Gaussian:
        """q(z_m | music features)."""
        return self.music_encoder(self._input(batch, "music"))

    def video_embedding(self, batch: Batch) -> torch.Tensor:
        """What ranking uses for a video at inference: z_v = mu."""
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
    def _latent(self, q: Gaussian) -> torch.Tensor:
        """A reparameterised sample while training; the mean at inference (z = mu)."""
        return sample(q) if self.training else q.mu

    def _video_side_terms(self, video_q: Gaussian, match_z: torch.Tensor, batch: Batch,
                          rows: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Terms that depend on the video posterior: KL, both ranking halves, z_v -> music reconstruction."""
        cfg = self.config
        video_z = self._latent(video_q)
        music = self._input(batch, "music")
        music_idx = batch.get("music_idx")
        if rows is not None:
            match_z, music = match_z[rows], music[rows]
            music_idx = music_idx[rows] if music_idx is not None else None
        scores = self._pair_scores(video_z, match_z, batch, rows)
        v2m, m2v = bidirectional_ranking_loss(scores, music_idx, cfg.margin, cfg.num_negatives)
        return {
            "kl_video": kl_prior_loss(video_q),
            "rank_v2m": v2m,
            "rank_m2v": m2v,
            "recon_music": reconstruction_loss(self.music_decoder(video_z), music),
        }

    def _video_objective(self, t: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """KL_video + gamma * (L_v2m + alpha * L_m2v) + beta * recon_music: the terms a video posterior enters."""
        cfg = self.config
        return t["kl_video"] + cfg.gamma * (t["rank_v2m"] + cfg.alpha * t["rank_m2v"]) + cfg.beta * t["recon_music"]

    def _loss_terms(self, batch: Batch) -> tuple[dict[str, torch.Tensor], Gaussian, Gaussian]:
        """Every named CMVAE term plus the two posteriors (DebCM adds its teacher terms to these)."""
        visual = self._input(batch, "visual")
        n = visual.shape[0]
        if "music_idx" in batch:
            require(batch, "music_idx", rows=n)
        visual_q, text_q, text_mask = self._video_experts(batch)
        video_q = self._fuse(visual_q, text_q, text_mask)
        music_q = self.encode_music(batch)
        if music_q.mu.shape[0] != n:
            raise DataError(f"batch['music']: {music_q.mu.shape[0]} rows, expected {n} (one per video)")
        match_z = self._match_music(self._latent(music_q), batch)

        terms = self._video_side_terms(video_q, match_z, batch, None)
        terms["kl_music"] = kl_prior_loss(music_q)
        # Cross-generation: z_m (after any confounder step) decodes the video's features.
        recon_video = reconstruction_loss(self.visual_decoder(match_z), visual)
        if text_q is not None:
            recon_video = recon_video + reconstruction_loss(self.text_decoder(match_z), self._input(batch, "text"),
                                                            text_mask)
        terms["recon_video"] = recon_video

        zero = visual.sum() * 0.0
        terms["sub_visual"] = terms["sub_text"] = zero
        if self.config.subsample and text_q is not None:
            # Sub-sampled training: the same objective for each single video modality.
            single_visual = self._fuse(visual_q, None, None)
            terms["sub_visual"] = self._video_objective(self._video_side_terms(single_visual, match_z, batch, None))
            rows = torch.nonzero(text_mask).squeeze(1)
            if rows.numel() > 0:
                single_text = self._fuse(text_q[rows], None, None)
                terms["sub_text"] = self._video_objective(self._video_side_terms(single_text, match_z, batch, rows))
        cfg = self.config
        terms["total"] = (self._video_objective(terms) + cfg.beta * terms["recon_video"] + terms["kl_music"]
                          + terms["sub_visual"] + terms["sub_text"])
        return terms, video_q, music_q

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Named loss terms (each loggable) and their weighted sum under 'total'.

        total = beta * (recon_video + recon_music) + kl_video + kl_music
                + gamma * (rank_v2m + alpha * rank_m2v) + sub_visual + sub_text
        """
        return self._loss_terms(batch)[0]
