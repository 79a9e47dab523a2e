"""Per-frame audio features for the genre LSTM: 13 MFCC, spectral centroid, 12 chroma, 7 spectral contrast.

Every clip is cut or looped to the same number of seconds, so a corpus is one [N, T, 33] float32 array.
Standardisation statistics are fitted on training clips only and travel with the model (lstm.py).
"""
from __future__ import annotations

import logging
import multiprocessing
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import librosa
import numpy as np
from tqdm import tqdm

from pipeline import numba_cache
from pipeline.errors import DataError, ParamsError
from pipeline.resources import available_cpus

log = logging.getLogger(__name__)

N_MFCC = 13
N_CHROMA = 12
N_CONTRAST_BANDS = 6  # spectral_contrast returns n_bands + 1 rows (the last is the residual band above)
FEATURE_NAMES: tuple[str, ...] = (
    tuple(f"mfcc_{i}" for i in range(N_MFCC))
    + ("spectral_centroid",)
    + tuple(f"chroma_{i}" for i in range(N_CHROMA))
    + tuple(f"contrast_{i}" for i in range(N_CONTRAST_BANDS + 1))
)
N_FEATURES = len(FEATURE_NAMES)  # 33


@dataclass(frozen=True)
class FrameConfig:
    """Framing of a clip; stored with the model so labelling uses exactly the training features."""

    sample_rate: int = 22050
    hop_length: int = 512
    n_fft: int = 2048
    seconds: float = 10.0  # clips are centre-cropped or looped to this length

    def validate(self) -> None:
        if self.sample_rate < 8000:
            raise ParamsError(f"genre.frames.sample_rate must be >= 8000, got {self.sample_rate}")
        if not 0 < self.hop_length <= self.n_fft:
            raise ParamsError(f"genre.frames.hop_length must be in (0, n_fft={self.n_fft}], got {self.hop_length}")
        if self.seconds * self.sample_rate < self.n_fft:
            raise ParamsError(f"genre.frames.seconds={self.seconds} is shorter than one FFT window")

    @property
    def n_samples(self) -> int:
        return int(round(self.seconds * self.sample_rate))

    @property
    def n_frames(self) -> int:
        # librosa frames are centred (center=True): one frame per hop plus the one at sample 0.
        return 1 + self.n_samples // self.hop_length


def fit_length(y: np.ndarray, n_samples: int) -> np.ndarray:
    """Centre-crop a longer signal; loop a shorter one (silence padding would teach that short clips are quiet)."""
    if len(y) == 0:
        raise ValueError("empty signal")
    if len(y) >= n_samples:
        start = (len(y) - n_samples) // 2
        return y[start:start + n_samples]
    return np.resize(y, n_samples)  # repeats y cyclically


def signal_frames(y: np.ndarray, cfg: FrameConfig) -> np.ndarray:
    """[T, 33] float32 features of a mono signal at cfg.sample_rate (already the fixed length, or fitted here)."""
    y = fit_length(np.asarray(y, dtype=np.float32), cfg.n_samples)
    magnitude = np.abs(librosa.stft(y, n_fft=cfg.n_fft, hop_length=cfg.hop_length))
    power = magnitude ** 2
    sr = cfg.sample_rate
    mel_db = librosa.power_to_db(librosa.feature.melspectrogram(S=power, sr=sr))
    mfcc = librosa.feature.mfcc(S=mel_db, n_mfcc=N_MFCC)
    centroid = librosa.feature.spectral_centroid(S=magnitude, sr=sr)
    # tuning fixed at A440: a per-clip tuning estimate would move chroma bins between clips of one genre
    chroma = librosa.feature.chroma_stft(S=power, sr=sr, n_chroma=N_CHROMA, tuning=0.0)
    contrast = librosa.feature.spectral_contrast(S=magnitude, sr=sr, n_bands=N_CONTRAST_BANDS)
    features = np.concatenate([mfcc, centroid, chroma, contrast], axis=0).T.astype(np.float32)
    if features.shape != (cfg.n_frames, N_FEATURES):
        raise AssertionError(f"frame features of shape {features.shape}, expected {(cfg.n_frames, N_FEATURES)}")
    return features


def clip_frames(path: str | Path, cfg: FrameConfig) -> np.ndarray:
    """[T, 33] float32 features of one audio file, decoded to mono at cfg.sample_rate."""
    path = str(path)
    try:
        duration = librosa.get_duration(path=path)
        # Decode only the centre window of a long file (full songs would waste decoding time), with a
        # half-second margin each side so that resampling edges and rounding never shorten the crop.
        offset = max(0.0, (duration - cfg.seconds) / 2 - 0.5)
        y, _ = librosa.load(path, sr=cfg.sample_rate, mono=True, offset=offset, duration=cfg.seconds + 1.0)
    except Exception as err:  # soundfile and audioread raise many types for corrupt input
        raise DataError(f"{path}: cannot decode audio ({err})") from err
    if len(y) == 0:
        raise DataError(f"{path}: decoded to no samples; expected a non-empty clip")
    features = signal_frames(y, cfg)
    if not np.isfinite(features).all():
        raise DataError(f"{path}: frame features hold NaN or inf")
    return features


def _clip_frames_job(job: tuple[str, FrameConfig]) -> np.ndarray:
    return clip_frames(*job)


def _pool_context():
    """fork where the OS has it: workers inherit the imported librosa instead of re-importing the caller's
    __main__ (spawn costs seconds per worker and needs an `if __name__ == "__main__"` guard). Workers only
    run numpy/scipy/librosa, never torch, so a parent's torch thread pool does not matter to them."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def corpus_frames(
    paths: Sequence[str | Path], cfg: FrameConfig, workers: int = 0, progress: bool = True
) -> tuple[list[str], np.ndarray]:
    """Features of many files on a process pool (`workers`, 0: every core): (sorted paths, [N, T, 33] float32).

    Sorting makes the row order independent of how the caller listed the files; `imap` keeps results in
    submission order, so the output does not depend on which worker finished first.
    """
    paths = sorted(str(p) for p in paths)
    if len(set(paths)) != len(paths):
        raise DataError("genre frames: the same file is listed twice")
    out = np.empty((len(paths), cfg.n_frames, N_FEATURES), dtype=np.float32)
    if workers < 0:
        raise ParamsError(f"genre frames: workers must be >= 0 (0: every core), got {workers}")
    workers = min(workers or available_cpus(), max(len(paths), 1))
    jobs = [(p, cfg) for p in paths]
    bar = tqdm(total=len(paths), desc="genre frames", unit="clip", disable=not progress)
    if workers == 1:
        for i, job in enumerate(jobs):
            out[i] = _clip_frames_job(job)
            bar.update()
    else:
        numba_cache.warm()  # compile librosa's numba cache here, not in several workers at once
        with _pool_context().Pool(workers) as pool:
            for i, features in enumerate(pool.imap(_clip_frames_job, jobs, chunksize=4)):
                out[i] = features
                bar.update()
    bar.close()
    log.info("genre frames: %d clips x %d frames x %d features (%d workers)", *out.shape, workers)
    return paths, out


@dataclass(frozen=True)
class Standardizer:
    """Per-feature mean and standard deviation over every frame of the training clips."""

    mean: np.ndarray  # [33] float32
    std: np.ndarray  # [33] float32, >= a floor so constant features do not blow up

    @classmethod
    def fit(cls, frames: np.ndarray, floor: float = 1e-6) -> "Standardizer":
        check_frames(frames, "genre standardiser fit")
        flat = frames.reshape(-1, frames.shape[-1]).astype(np.float64)
        std = np.maximum(flat.std(axis=0), floor)
        return cls(mean=flat.mean(axis=0).astype(np.float32), std=std.astype(np.float32))

    def transform(self, frames: np.ndarray) -> np.ndarray:
        return ((frames - self.mean) / self.std).astype(np.float32)


def check_frames(frames: np.ndarray, where: str, n_features: int = N_FEATURES) -> None:
    """A frame tensor [N, T, F]: 3-d, the expected feature width, finite, at least one clip."""
    if not isinstance(frames, np.ndarray) or frames.ndim != 3:
        raise DataError(f"{where}: expected frames of shape [clips, frames, {n_features}], got {np.shape(frames)}")
    if frames.shape[2] != n_features:
        raise DataError(f"{where}: {frames.shape[2]} features per frame, expected {n_features}")
    if frames.shape[0] == 0 or frames.shape[1] == 0:
        raise DataError(f"{where}: no clips or no frames (shape {frames.shape})")
    finite = np.isfinite(frames).all(axis=(1, 2))
    if not finite.all():
        raise DataError(f"{where}: clip {int(np.flatnonzero(~finite)[0])} holds NaN or inf")
