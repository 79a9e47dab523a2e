"""The feature-level world's genre labeller: the g(m) a release ships comes from a classifier that
errs, not from the true genre, so the pipeline's backdoor adjustment sees labels as noisy as a real one's.

A real labeller on short clips is right 60-80% of the time and confuses genres that sound alike (hip-hop and
pop, jazz and classical). This one mislabels exactly round(noise * n) clips: the least typical of their genre
more often, and each toward the genre its tempo and mood resemble. The true genre stays in truth/ (evaluation).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.data.latents import GENRE_TEMPO
from pipeline.data.schema import GENRES
from pipeline.data.world import GENRE_PROFILE

# How far (in the world's own spreads: energy 0.15, valence 0.2 around the genre profile; tempo in octaves
# from the middle of the genre's range) a clip may sit from a genre and still sound like it.
SPREAD = np.array([0.15, 0.2, 0.25])
TYPICAL_FLOOR = 0.05  # a perfectly typical clip can still be mislabelled, just less often
STREAM = 4  # the labeller's own random stream (seeded with the world seed): the world's draws are untouched


def lookalike(music: pd.DataFrame) -> np.ndarray:
    """[n, genres] how much each clip sounds like each genre: softmax of minus half the squared distance of
    (energy, valence, log2 tempo) to the genre's profile, in units of SPREAD."""
    x = np.stack([music["energy"], music["valence"], np.log2(music["tempo"].to_numpy(float))], 1)
    centre = np.array([[*GENRE_PROFILE[g], np.log2(np.mean(GENRE_TEMPO[g]))] for g in GENRES])
    d2 = ((((x[:, None, :] - centre[None]) / SPREAD) ** 2).sum(-1))
    logit = -0.5 * d2
    prob = np.exp(logit - logit.max(1, keepdims=True))
    return prob / prob.sum(1, keepdims=True)


def noisy_genres(music: pd.DataFrame, noise: float, seed: int) -> np.ndarray:
    """The labeller's genre per row of `music` (latents: genre, energy, valence, tempo): exactly
    round(noise * n) rows wrong, chosen with weight 1 - P(own genre) + TYPICAL_FLOOR, each relabelled to
    another genre drawn by `lookalike`. noise 0 returns the true genres and draws nothing."""
    true = music["genre"].to_numpy(dtype=object)
    n_wrong = int(round(noise * len(music)))
    if n_wrong == 0:
        return true.copy()
    rng = np.random.default_rng([seed, STREAM])
    own = pd.Categorical(true, categories=GENRES).codes
    like = lookalike(music)
    weight = 1.0 - like[np.arange(len(own)), own] + TYPICAL_FLOOR
    wrong = np.sort(rng.choice(len(own), n_wrong, replace=False, p=weight / weight.sum()))
    other = np.maximum(like[wrong], 1e-12)  # a clip far from every other genre still gets one of them
    other[np.arange(n_wrong), own[wrong]] = 0.0
    # inverse CDF on the unnormalised sums: the own genre's interval is empty to the bit, wherever it sits
    cdf = np.cumsum(other, 1)
    label = ((rng.random(n_wrong) * cdf[:, -1])[:, None] >= cdf[:, :-1]).sum(1)
    out = true.copy()
    out[wrong] = np.array(GENRES, dtype=object)[label]
    return out
