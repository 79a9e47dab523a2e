"""Synthetic genre corpora: one distinct, seeded signal family per genre, written as real audio files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.data.schema import GENRES

SR = 22050


def _clicks(n: int, bpm: float, offset_beats: float, burst: np.ndarray) -> np.ndarray:
    out = np.zeros(n)
    period = 60.0 / bpm * SR
    start = offset_beats * period
    while start + len(burst) < n:
        i = int(start)
        out[i:i + len(burst)] += burst
        start += period
    return out


def synth_clip(genre: str, rng: np.random.Generator, seconds: float = 2.0) -> np.ndarray:
    """A mono float32 clip whose timbre, pitch range and rhythm depend on the genre, jittered per clip."""
    n = int(seconds * SR)
    t = np.arange(n) / SR
    decay = np.exp(-np.arange(int(0.08 * SR)) / (0.015 * SR))
    noise_burst = rng.standard_normal(len(decay)) * decay
    if genre == "classical":  # sustained major triad, no percussion
        root = rng.uniform(200, 300)
        swell = 0.6 + 0.4 * np.sin(np.pi * t / seconds)
        y = sum(np.sin(2 * np.pi * root * r * t) for r in (1.0, 1.26, 1.5)) * 0.2 * swell
    elif genre == "jazz":  # seventh chord in a low-mid register, soft swung hi-hat
        root = rng.uniform(120, 180)
        y = sum(np.sin(2 * np.pi * root * r * t) for r in (1.0, 1.19, 1.5, 1.78)) * 0.15
        y += 0.1 * _clicks(n, rng.uniform(120, 140), 0.66, np.diff(noise_burst, prepend=0))
    elif genre == "hiphop":  # deep kick and sub bass
        bpm = rng.uniform(85, 95)
        k = np.arange(len(decay) * 3)
        kick = np.sin(2 * np.pi * 55 * k / SR) * np.exp(-k / (0.05 * SR))
        y = 0.8 * _clicks(n, bpm, 0.0, kick) + 0.2 * np.sin(2 * np.pi * rng.uniform(40, 60) * t)
    elif genre == "reggae":  # off-beat chord stabs
        root = rng.uniform(300, 400)
        stab_t = np.arange(int(0.1 * SR)) / SR
        stab = sum(np.sin(2 * np.pi * root * r * stab_t) for r in (1.0, 1.26, 1.5)) * np.exp(-stab_t / 0.04)
        y = 0.3 * _clicks(n, rng.uniform(70, 80), 0.5, stab)
    elif genre == "pop":  # four-on-the-floor clicks and a bright melody
        melody = 0.3 * np.sin(2 * np.pi * rng.uniform(600, 900) * t)
        y = melody + 0.4 * _clicks(n, rng.uniform(110, 125), 0.0, noise_burst)
    elif genre == "metal":  # distorted sawtooth power chord and fast noise bursts
        f = rng.uniform(80, 120)
        saw = 2 * ((f * t) % 1.0) - 1 + 2 * ((1.5 * f * t) % 1.0) - 1
        y = 0.6 * np.tanh(4 * saw) + 0.3 * _clicks(n, rng.uniform(150, 170), 0.0, noise_burst)
    else:
        raise ValueError(genre)
    y = y + 0.01 * rng.standard_normal(n)
    return (0.9 * y / np.max(np.abs(y))).astype(np.float32)


def write_corpus(root: Path, per_class: int, seed: int, genres=GENRES, seconds: float = 2.0) -> Path:
    """<root>/<genre>/<genre>.NNNNN.wav, like GTZAN."""
    rng = np.random.default_rng(seed)
    for genre in genres:
        (root / genre).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            sf.write(root / genre / f"{genre}.{i:05d}.wav", synth_clip(genre, rng, seconds), SR)
    return root


@pytest.fixture(scope="session")
def train_corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("genre_train"), per_class=8, seed=1)


@pytest.fixture(scope="session")
def test_corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("genre_test"), per_class=4, seed=2)
