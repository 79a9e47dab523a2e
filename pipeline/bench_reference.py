"""A plain reference matcher of the student's shape, timed beside it by `python -m pipeline.bench`.

What a competent hand-written loop of the same task costs on the same data: a video encoder (visual features
with the caption's, zeros where a video has none) and a music encoder to diagonal Gaussians of size d,
cross-reconstruction (z_m decodes the video's features, z_v the music's), KL to N(0, I), the bidirectional
hardest-k margin ranking loss on the in-batch score matrix (rows sharing a music are not negatives), Adam,
the whole training set held as tensors and gathered by index. No teacher, no product of experts, no
sub-sampled objectives and no confounder: the student does that work on top, so the ratio of the two epochs
says what the student's extra terms and the pipeline's loop cost, not what the matrix products cost.
"""
from __future__ import annotations

import time

import torch
from torch import nn

D, HIDDEN, DROPOUT, MARGIN, K, LR, WEIGHT_DECAY = 128, 128, 0.2, 0.05, 40, 1e-3, 1e-3


def _encoder(in_dim: int) -> nn.Module:
    return nn.Sequential(nn.Linear(in_dim, HIDDEN), nn.ReLU(), nn.Dropout(DROPOUT), nn.Linear(HIDDEN, 2 * D))


def _decoder(out_dim: int) -> nn.Module:
    return nn.Sequential(nn.Linear(D, HIDDEN), nn.ReLU(), nn.Dropout(DROPOUT), nn.Linear(HIDDEN, out_dim))


def hardest_k_hinge(scores: torch.Tensor, same: torch.Tensor, k: int = K, margin: float = MARGIN) -> torch.Tensor:
    """Mean over rows of the hinge against each row's k highest-scoring valid negatives (positive: diagonal)."""
    negatives = scores.masked_fill(same, float("-inf"))
    hardest = negatives.topk(min(k, scores.shape[1] - 1), dim=1).values
    return torch.clamp(margin - scores.diagonal().unsqueeze(1) + hardest, min=0.0).sum(dim=1).mean()


class ReferenceMatcher(nn.Module):
    """Two Gaussian encoders, two cross decoders; `loss` is the whole objective of one batch."""

    def __init__(self, video_dim: int, music_dim: int):
        super().__init__()
        self.video_encoder, self.music_encoder = _encoder(video_dim), _encoder(music_dim)
        self.video_decoder, self.music_decoder = _decoder(video_dim), _decoder(music_dim)

    @staticmethod
    def _sample(stats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = stats.chunk(2, dim=1)
        logvar = logvar.clamp(-12.0, 8.0)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1).mean()
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar), kl

    def loss(self, video: torch.Tensor, music: torch.Tensor, music_idx: torch.Tensor) -> torch.Tensor:
        z_v, kl_v = self._sample(self.video_encoder(video))
        z_m, kl_m = self._sample(self.music_encoder(music))
        recon = (nn.functional.mse_loss(self.video_decoder(z_m), video)
                 + nn.functional.mse_loss(self.music_decoder(z_v), music))
        scores = z_v @ z_m.t()
        same = music_idx.unsqueeze(0) == music_idx.unsqueeze(1)
        return recon + kl_v + kl_m + hardest_k_hinge(scores, same) + hardest_k_hinge(scores.t(), same)


class ReferenceRun:
    """The reference model, its optimiser and the run's tensors (standardised per batch, as the student's)."""

    def __init__(self, data, seed: int = 0):
        device = data.video_idx.device
        self.data = data
        rows = torch.unique(data.video_idx)
        video = self._video(rows[::max(1, rows.shape[0] // 20_000)])  # statistics from <= 20k rows: no big copy
        self.video_mean, self.video_std = video.mean(dim=0), video.std(dim=0).clamp(min=1e-6)
        music = data.music[torch.unique(data.music_idx)]
        self.music_mean, self.music_std = music.mean(dim=0), music.std(dim=0).clamp(min=1e-6)
        torch.manual_seed(seed)
        self.model = ReferenceMatcher(video.shape[1], data.music.shape[1]).to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
        self.seed = seed

    def _video(self, rows: torch.Tensor) -> torch.Tensor:
        d = self.data
        if d.text is None:
            return d.visual[rows]
        return torch.cat([d.visual[rows], d.text[rows] * d.text_mask[rows].unsqueeze(1)], dim=1)

    def epoch(self, epoch: int, batch_size: int = 1024) -> float:
        """One pass over the training pairs in a seeded order; returns its wall seconds."""
        d = self.data
        start = time.perf_counter()
        self.model.train()
        order = torch.randperm(d.video_idx.shape[0], generator=torch.Generator().manual_seed(self.seed + epoch))
        order = order.to(d.video_idx.device)
        for first in range(0, order.shape[0], batch_size):
            sel = order[first:first + batch_size]
            m = d.music_idx[sel]
            video = (self._video(d.video_idx[sel]) - self.video_mean) / self.video_std
            music = (d.music[m] - self.music_mean) / self.music_std
            loss = self.model.loss(video, music, m)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        if d.video_idx.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start
