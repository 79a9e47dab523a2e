"""Training-data diagnostics of what a model learnt, computed on the training pairs only (never truth).

taste_diagnostics: how much of the uploader-taste-driven part of the observed choices the interaction term
u^T W g(m) explains. The empirical lift of a training choice is (g(m) - g_bar)^T log(u / prior): the log-odds
by which its uploader's training genre shares favour the chosen music's genre over the training prior
(g_bar: the popularity-weighted mean g(m)). A choice model whose added term equals that lift reproduces the
genre mix of every uploader exactly, so slope 1 means the term carries the whole taste effect the training
data shows, 0 that it carries none.
"""
from __future__ import annotations

import numpy as np
import torch

from pipeline.training.data import TrainData

EPS = 1e-3  # smoothing of the genre shares inside the log (an uploader with no video of a genre)


@torch.no_grad()
def taste_diagnostics(W: torch.Tensor, data: TrainData) -> dict[str, float]:
    """{taste_slope, taste_corr, taste_term_std, taste_lift_std} of u^T W g(m) against the empirical lift."""
    u = data.uploader_dist[data.uploader_idx].double().cpu()
    g = data.music_genre.double().cpu()
    pop = torch.bincount(data.music_idx.cpu(), minlength=g.shape[0]).double()
    g_bar = (pop / pop.sum()) @ g
    chosen = g[data.music_idx.cpu()] - g_bar
    prior = torch.as_tensor(np.asarray(data.prior, dtype=np.float64))
    lift = (chosen * torch.log((u + EPS) / (prior + EPS))).sum(dim=1)
    term = ((u @ W.detach().double().cpu()) * chosen).sum(dim=1)
    lift_c, term_c = lift - lift.mean(), term - term.mean()
    var = float((lift_c ** 2).mean())
    slope = float((lift_c * term_c).mean()) / var if var > 0 else 0.0
    denom = float(lift_c.std() * term_c.std())
    return {"taste_slope": slope, "taste_corr": float((lift_c * term_c).mean()) / denom if denom > 0 else 0.0,
            "taste_term_std": float(term.std()), "taste_lift_std": float(lift.std())}
