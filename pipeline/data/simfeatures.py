"""Feature-level world (`world.render: false`): feature matrices drawn straight from the latents.

Each matrix is a fixed random two-layer map of the latents plus nuisance noise, so a model must learn to
see through it, as it would with CNN or audio embeddings; no media is rendered, which makes a
TT-150k-sized world cheap enough for training and evaluation benchmarks. With `world.pgc_domain_shift` > 0
PGC visual features pass through one more map (pgc.FeatureShift): professional footage looks different.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.data.latents import SCENES
from pipeline.data.pgc import FeatureShift
from pipeline.data.schema import GENRES
from pipeline.io import atomic_path

HIDDEN = 64
NOISE = 0.5  # nuisance scale relative to the signal's unit variance


def _tempo_phase(bpm: np.ndarray) -> np.ndarray:
    """Octave-invariant tempo code: doubling the tempo gives the same point on the circle."""
    angle = 2 * np.pi * np.log2(bpm)
    return np.stack([np.sin(angle), np.cos(angle)], 1)


def video_code(videos: pd.DataFrame) -> np.ndarray:
    scene = np.eye(len(SCENES))[pd.Categorical(videos["scene"], categories=SCENES).codes]
    return np.hstack([scene, videos[["energy", "valence"]].to_numpy() * 2 - 1,
                      _tempo_phase(videos["motion_tempo"].to_numpy())])


def music_code(music: pd.DataFrame) -> np.ndarray:
    genre = np.eye(len(GENRES))[pd.Categorical(music["genre"], categories=GENRES).codes]
    return np.hstack([genre, music[["energy", "valence"]].to_numpy() * 2 - 1,
                      _tempo_phase(music["tempo"].to_numpy())])


class RandomMap:
    """x -> tanh(x W1 + b1) W2, scaled so every output column has roughly unit variance."""

    def __init__(self, rng: np.random.Generator, d_in: int, d_out: int):
        self.w1 = rng.standard_normal((d_in, HIDDEN)) * 1.5 / np.sqrt(d_in)
        self.b1 = rng.standard_normal(HIDDEN) * 0.5
        self.w2 = rng.standard_normal((HIDDEN, d_out)) / np.sqrt(HIDDEN) * 2.0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.tanh(x @ self.w1 + self.b1) @ self.w2


def write_matrix(path: Path, code: np.ndarray, fmap: RandomMap, d_out: int, rng: np.random.Generator,
                 mask: np.ndarray | None = None, chunk: int = 16384, shift: FeatureShift | None = None,
                 shifted: np.ndarray | None = None) -> None:
    """Write float32 rows fmap(code) + noise chunk by chunk (a TT-150k visual matrix is 1.2 GB); rows where
    `shifted` is true then pass through `shift` (PGC footage)."""
    with atomic_path(path) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(code), d_out))
        for s in range(0, len(code), chunk):
            block = fmap(code[s : s + chunk]) + NOISE * rng.standard_normal((len(code[s : s + chunk]), d_out))
            if shift is not None:
                rows = shifted[s : s + chunk]
                block[rows] = shift(block[rows])
            if mask is not None:
                block[mask[s : s + chunk] == 0] = 0.0
            out[s : s + chunk] = block.astype(np.float32)
        out.flush()
        del out


def write_features(out_dir: Path, videos: pd.DataFrame, text_mask: np.ndarray, language: np.ndarray,
                   music: pd.DataFrame, dims: dict[str, int], seed: int, pgc_shift: float = 0.0) -> None:
    """Write the canonical precomputed matrices (schema.VIDEO_FEATURES, MUSIC_FEATURES) in id order.

    `videos` and `music` must already be sorted by id; `text_mask` is 1 where the video has a caption.
    `pgc_shift` (world.pgc_domain_shift) moves the visual features of the `kind == "pgc"` rows (captions are
    not footage: text features keep UGC's map).
    """
    rng = np.random.default_rng([seed, 7])
    vcode = video_code(videos)
    shift = FeatureShift(pgc_shift, dims["visual"], seed) if pgc_shift > 0 else None  # its own stream
    write_matrix(out_dir / "video_visual.npy", vcode, RandomMap(rng, vcode.shape[1], dims["visual"]),
                 dims["visual"], rng, shift=shift, shifted=(videos["kind"] == "pgc").to_numpy())
    # a caption names the scene and a coarse mood, in one of several languages (a nuisance)
    lang = pd.get_dummies(pd.Categorical(language)).to_numpy(dtype=float)
    mood = np.stack([videos["energy"] > 0.5, videos["valence"] > 0.5], 1).astype(float) * 2 - 1
    tcode = np.hstack([vcode[:, : len(SCENES)], mood, lang])
    write_matrix(out_dir / "video_text.npy", tcode, RandomMap(rng, tcode.shape[1], dims["text"]),
                 dims["text"], rng, mask=text_mask)
    with atomic_path(out_dir / "video_text_mask.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, text_mask.astype(np.uint8))
    mcode = music_code(music)
    write_matrix(out_dir / "music_audio.npy", mcode, RandomMap(rng, mcode.shape[1], dims["audio"]),
                 dims["audio"], rng)
    write_matrix(out_dir / "music_smile.npy", mcode, RandomMap(rng, mcode.shape[1], dims["smile"]),
                 dims["smile"], rng)
