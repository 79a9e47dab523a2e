"""Rhythm matching for T_matching (CMT-style): visual beats from optical flow against music beats from audio.

A video's visual beats are the peaks of its Farneback flow-magnitude envelope (or, with `motion: diff`, of
its frame-difference envelope); a music clip's beats come from librosa's beat tracker. The matching score
rewards tempi equal up to an octave and beats that line up.
"""
from __future__ import annotations

import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import cv2
import librosa
import numpy as np
import pandas as pd
import scipy.ndimage
import scipy.signal
from av.video.reformatter import VideoReformatter
from tqdm import tqdm

from pipeline import numba_cache
from pipeline.errors import DataError, MediaError, ParamsError
from pipeline.features.mediacheck import (MIN_SECONDS, BadMedia, VideoReader, check_on_error,
                                          raise_failures, read_audio)
from pipeline.resources import available_cpus

log = logging.getLogger(__name__)

FAILURE_COLUMNS = ("video_id", "path", "reason")
TABLE_COLUMNS = ("video_id", "music_id", "score", "tempo_agreement", "beat_alignment", "video_tempo",
                 "music_tempo", "n_visual_beats", "n_music_beats")

MIN_BPM, MAX_BPM = 40.0, 240.0  # tempo search range for visual beats (the music range is librosa's)
# Optical flow runs on frames whose shorter side is at most FLOW_SIZE, with a FLOW_WINDOW-pixel averaging
# window (about the share of the frame 15 px is at 128) and FLOW_ITERATIONS per pyramid level. At 64 px and
# 2 iterations rather than 128 px and 3, Farneback costs a sixth; on the default world the visual tempo is
# within 4% of the rendered one for 97.7% of the videos (128 px: 97.3%; within an octave 99.7% for both)
# and the pair scores' rank correlation with 128 px is 0.995. 48 px is faster still but misplaces beats
# (test_visual_beats_fall_on_rendered_beats fails there).
FLOW_SIZE = 64
FLOW_WINDOW = 9
FLOW_ITERATIONS = 2
SMOOTH_SAMPLES = 1.0  # Gaussian smoothing (envelope samples) before the autocorrelation
TEMPO_SIGMA = 0.06  # octaves: width of the tempo-agreement Gaussian (0.06 octave ~ 4%)
BEAT_TOLERANCE = 0.08  # seconds: a visual beat "hits" a music beat this close (a 15-fps frame is 67 ms)
TEMPO_WEIGHT = 0.7  # share of tempo agreement in the score; the rest is beat alignment
# `motion: diff` measures motion as the mean absolute grey-level change between consecutive frames instead of
# optical flow (about 1/100 of Farneback's cost per frame pair). On the default world's 1,500 UGC pairs, at
# frame_size 32, its scores' Spearman correlation with the flow scores is 0.9899 and the stage needs 2.8x
# less CPU (reports/performance.md, 2026-12-07): just under the 0.99 asked of a default, so it is an option.
MOTIONS = ("flow", "diff")


@dataclass(frozen=True)
class RhythmConfig:
    """The `rhythm.score` params group (defaults above; a stage builds it with config.from_group)."""

    tempo_sigma: float = TEMPO_SIGMA
    beat_tolerance: float = BEAT_TOLERANCE
    tempo_weight: float = TEMPO_WEIGHT
    max_seconds: float | None = None  # analyse at most this much of each video (None = all)
    motion: str = "flow"  # flow: Farneback optical flow (CMT); diff: mean absolute frame difference
    frame_size: int = FLOW_SIZE  # shorter side (px) of the grey frames motion is measured on

    def validate(self) -> None:
        if not self.tempo_sigma > 0:
            raise ParamsError(f"rhythm.score.tempo_sigma: {self.tempo_sigma!r}, expected > 0")
        if not self.beat_tolerance > 0:
            raise ParamsError(f"rhythm.score.beat_tolerance: {self.beat_tolerance!r}, expected > 0")
        if not 0.0 <= self.tempo_weight <= 1.0:
            raise ParamsError(f"rhythm.score.tempo_weight: {self.tempo_weight!r}, expected in [0, 1]")
        if self.motion not in MOTIONS:
            raise ParamsError(f"rhythm.score.motion: {self.motion!r}, expected one of {MOTIONS}")
        if not isinstance(self.frame_size, int) or self.frame_size < 16:
            raise ParamsError(f"rhythm.score.frame_size: {self.frame_size!r}, expected an integer >= 16 (pixels)")
        if self.max_seconds is not None and not self.max_seconds >= MIN_SECONDS:
            raise ParamsError(f"rhythm.score.max_seconds: {self.max_seconds!r}, expected >= {MIN_SECONDS:g} "
                              "(the media check's minimum duration) or null")


# ---------------------------------------------------------------- periodicity

def _parabolic(y: np.ndarray, i: int) -> float:
    """Sub-sample position of the peak at index i from a parabola through its neighbours."""
    a, b, c = y[i - 1], y[i], y[i + 1]
    den = a - 2.0 * b + c
    return float(i) if den >= 0 else i + 0.5 * (a - c) / den


def envelope_period(env: np.ndarray, lo_lag: float, hi_lag: float, _detrended: bool = False) -> tuple[float, float]:
    """(period in samples, clarity in [0, 1]) of a pulse envelope by autocorrelation; (nan, 0) if none.

    Octave handling: of the autocorrelation peaks in [lo_lag, hi_lag], the shortest whose height reaches 70%
    of the tallest is the beat (a multiple of the period peaks as high, a sub-multiple does not peak at all).
    Precision: the k-th multiple of the period is also a peak, located k times more precisely in periods, so
    the period is the least-squares slope through the origin of the refined peak lags (lag_k = k * period).
    """
    x = np.asarray(env, float)
    # compress, then cap at the 90th percentile: a few scene cuts' flow spikes must not outweigh the beats
    x = np.log1p(x / (np.median(x) + 1e-9))
    x = np.minimum(x, np.quantile(x, 0.9))
    x = x - x.mean()
    # a pulse 1-2 samples wide on a grid that is not a multiple of the period lands on alternating spacings
    # (5, 5, 6, ... for 5.3); smoothing by a sample blurs that jitter so the true period still peaks
    x = scipy.ndimage.gaussian_filter1d(x, SMOOTH_SAMPLES, mode="nearest") if SMOOTH_SAMPLES else x
    n = len(x)
    if n < 4 or not np.any(x):
        return float("nan"), 0.0
    ac = np.correlate(x, x, "full")[n - 1:] / (n - np.arange(n))  # unbiased: mean product per overlap
    ac = ac / ac[0]
    last = min(int(np.ceil(hi_lag)) + 1, n - 2)  # at least two overlapping samples at every lag used
    peaks = [i for i in range(max(1, int(np.floor(lo_lag))), last + 1)
             if ac[i] > 0 and ac[i] >= ac[i - 1] and ac[i] >= ac[i + 1] and lo_lag <= _parabolic(ac, i) <= hi_lag]
    if not peaks and not _detrended:  # slow drifts of the motion level can swamp long lags: high-pass, retry
        slow = scipy.ndimage.uniform_filter1d(np.asarray(env, float), max(3, int(round(1.5 * hi_lag))), mode="nearest")
        return envelope_period(np.maximum(np.asarray(env, float) - slow, 0.0), lo_lag, hi_lag, _detrended=True)
    if not peaks:
        return float("nan"), 0.0
    top = max(ac[i] for i in peaks)
    first = next(i for i in peaks if ac[i] >= 0.7 * top)
    for k in (3, 2):  # a period off the sample grid can peak higher at the multiple that lands on it (3 x 5.3)
        long_lag = _parabolic(ac, first)
        sub = [i for i in peaks if abs(k * _parabolic(ac, i) - long_lag) <= 1.0 and ac[i] >= 0.5 * ac[first]]
        if sub:
            first = sub[0]
            break
    period = _parabolic(ac, first)
    ks, lags = [1.0], [period]
    for k in range(2, 9):  # refine with the multiples that still overlap at least a third of the envelope
        guess = k * period
        if guess + 1 >= (2 * n) / 3:
            break
        i = int(round(guess))
        i = max(range(i - 1, i + 2), key=lambda j: ac[j])  # the local maximum next to the guess
        if 0 < i < n - 1 and ac[i] >= ac[i - 1] and ac[i] >= ac[i + 1] and ac[i] > 0.3 * ac[first]:
            ks.append(float(k))
            lags.append(_parabolic(ac, i))
    ks, lags = np.array(ks), np.array(lags)
    period = float((ks * lags).sum() / (ks * ks).sum())
    return period, float(np.clip(ac[first], 0.0, 1.0))


# ---------------------------------------------------------------- video

def _gray_frames(path: str, max_seconds: float | None, size: int = FLOW_SIZE) -> tuple[list[np.ndarray], float]:
    """Grayscale frames (shorter side <= size) and the stream's frame rate; MediaError naming the file.

    FFmpeg converts and downscales in one pass, through one reusable converter per file.
    """
    frames: list[np.ndarray] = []
    to_gray = VideoReformatter()
    try:
        with VideoReader(path) as video:
            fps = float(video.rate)
            limit = None if max_seconds is None else int(np.ceil(max_seconds * fps))
            for _, frame in video.frames():  # every frame is decoded: the media check judges the whole file
                if limit is not None and len(frames) >= limit:
                    continue
                scale = min(1.0, size / min(frame.width, frame.height))  # flow in comparable units
                frames.append(to_gray.reformat(frame, format="gray", width=round(frame.width * scale),
                                               height=round(frame.height * scale),
                                               interpolation="AREA").to_ndarray())
    except BadMedia as e:
        raise MediaError(f"{path}: {e}") from None
    return frames, fps


def flow_envelope(frames: list[np.ndarray]) -> np.ndarray:
    """Mean Farneback optical-flow magnitude (pixels/frame) of each consecutive frame pair (CMT's visual motion)."""
    env = np.empty(len(frames) - 1)
    for i, (a, b) in enumerate(zip(frames[:-1], frames[1:])):
        flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, FLOW_WINDOW, FLOW_ITERATIONS, 5, 1.2, 0)
        env[i] = float(np.sqrt((flow.astype(np.float64) ** 2).sum(-1)).mean())
    return env


def diff_envelope(frames: list[np.ndarray]) -> np.ndarray:
    """Mean absolute grey-level difference (0-255) of each consecutive frame pair: motion without flow."""
    stack = np.stack(frames).astype(np.int16)
    return np.abs(np.diff(stack, axis=0)).mean(axis=(1, 2), dtype=np.float64)


def visual_beats(path, max_seconds: float | None = None, motion: str = "flow", size: int = FLOW_SIZE) -> dict:
    """Visual rhythm of one video: motion envelope, fps, tempo (BPM), beat times (s) and envelope statistics.

    Envelope sample i is the motion from frame i to i+1 (`motion`: flow or diff, on frames whose shorter
    side is at most `size`), so a peak there is a beat shown at frame i+1.
    """
    frames, fps = _gray_frames(str(path), max_seconds, size)
    env = (diff_envelope if motion == "diff" else flow_envelope)(frames)
    period, clarity = envelope_period(env, 60.0 * fps / MAX_BPM, 60.0 * fps / MIN_BPM)
    tempo = 60.0 * fps / period if np.isfinite(period) else 0.0
    # peaks: at least half a beat apart, standing out of the local motion by a quarter of its spread
    distance = max(1, int(0.5 * period)) if np.isfinite(period) else 1
    idx, _ = scipy.signal.find_peaks(env, distance=distance, prominence=0.25 * (env.std() + 1e-12))
    times = (idx + 1) / fps
    ibi = np.diff(times)
    return {
        "envelope": env.astype(np.float32), "fps": fps, "duration": len(frames) / fps, "tempo": float(tempo),
        "beat_times": times.astype(np.float64),
        "stats": {"n_beats": int(len(times)), "pulse_clarity": clarity, "flow_mean": float(env.mean()),
                  "flow_std": float(env.std()),
                  "beat_regularity": float(ibi.std() / ibi.mean()) if len(ibi) > 1 else float("nan")},
    }


# ---------------------------------------------------------------- music

def music_beats(path, sr: int = 22050) -> dict:
    """Musical rhythm of one clip: onset envelope, tempo (BPM), beat times (s), onset rate (onsets/s).

    librosa's tempo is quantised to whole onset-envelope lags (~2-5% steps); when the tracker returns a
    steady beat, the tempo is refined as the least-squares slope of beat time against beat index.
    """
    try:
        y = read_audio(path, sr)
    except BadMedia as e:
        raise MediaError(f"{path}: {e}") from None
    hop = 512
    onset_env = librosa.onset.onset_strength(y=y, sr=sr, hop_length=hop)
    coarse, beat_frames = librosa.beat.beat_track(onset_envelope=onset_env, sr=sr, hop_length=hop)
    coarse = float(np.atleast_1d(coarse)[0])
    times = librosa.frames_to_time(beat_frames, sr=sr, hop_length=hop)
    tempo = coarse
    if len(times) >= 4:
        slope = np.polyfit(np.arange(len(times)), times, 1)[0]
        if slope > 0 and abs(60.0 / slope / coarse - 1.0) < 0.1:  # same metrical level, finer estimate
            tempo = 60.0 / slope
    onsets = librosa.onset.onset_detect(onset_envelope=onset_env, sr=sr, hop_length=hop)
    duration = len(y) / sr
    return {"onset_envelope": onset_env.astype(np.float32), "frame_rate": sr / hop, "duration": duration,
            "tempo": float(tempo), "tempo_librosa": coarse, "beat_times": np.asarray(times, np.float64),
            "onset_rate": float(len(onsets) / duration)}


# ---------------------------------------------------------------- matching

def tempo_agreement(video_tempo: float, music_tempo: float, sigma: float = TEMPO_SIGMA) -> float:
    """exp(-d^2 / 2 sigma^2), d = |log2(v/m) - round(log2(v/m))|: octave distance to the nearest 2^k ratio."""
    if not (video_tempo > 0 and music_tempo > 0):
        return 0.0
    r = np.log2(video_tempo / music_tempo)
    d = r - np.round(r)
    return float(np.exp(-d * d / (2.0 * sigma * sigma)))


def beat_alignment(visual_times: np.ndarray, music_times: np.ndarray, video_tempo: float, music_tempo: float,
                   tolerance: float = BEAT_TOLERANCE) -> float:
    """Best-offset hit rate: the largest share of visual beats within `tolerance` of a music beat over offsets.

    The music is compared at the metrical level nearest the visual tempo: when the video pulses 2^k times as
    fast (k > 0), each beat interval is split into 2^k. The video may be laid on the music at any offset, so
    the best of a 10-ms grid over one (subdivided) beat period counts (CMT's beat hit rate, offset-free).
    """
    v, m = np.asarray(visual_times, float), np.sort(np.asarray(music_times, float))
    if len(v) == 0 or len(m) < 2:
        return 0.0
    if video_tempo > 0 and music_tempo > 0:
        k = int(np.round(np.log2(video_tempo / music_tempo)))
        if k > 0:
            steps = 2 ** min(k, 3)
            frac = np.arange(steps) / steps
            m = (m[:-1, None] + np.diff(m)[:, None] * frac).ravel()
            m = np.append(m, np.sort(np.asarray(music_times, float))[-1])
    period = float(np.median(np.diff(m)))
    m = np.concatenate([[m[0] - period], m, [m[-1] + period]])  # trackers often skip the first and last beat
    t = v[None, :] + np.arange(-period / 2, period / 2, 0.01)[:, None]  # [offsets, visual beats]
    j = np.clip(np.searchsorted(m, t), 1, len(m) - 1)
    gap = np.minimum(np.abs(t - m[j - 1]), np.abs(t - m[j]))
    inside = (t >= m[0] - tolerance) & (t <= m[-1] + tolerance)  # a beat past the music's end is a miss
    return float(((gap <= tolerance) & inside).mean(axis=1).max())


def matching_score(vb: dict, mb: dict, cfg: RhythmConfig | None = None) -> float:
    """score = w * tempo_agreement + (1 - w) * beat_alignment, in [0, 1] (w = cfg.tempo_weight).

    tempo_agreement = exp(-d^2 / 2 sigma^2) with d the octave distance of the tempo ratio to the nearest power
    of two; beat_alignment = best-offset share of visual beats within a tolerance of a music beat.
    """
    return _score_parts(vb, mb, cfg or RhythmConfig())[0]


def _score_parts(vb: dict, mb: dict, cfg: RhythmConfig) -> tuple[float, float, float]:
    """(score, tempo agreement, beat alignment) of one video-music pair."""
    t = tempo_agreement(vb["tempo"], mb["tempo"], cfg.tempo_sigma)
    a = beat_alignment(vb["beat_times"], mb["beat_times"], vb["tempo"], mb["tempo"], cfg.beat_tolerance)
    return cfg.tempo_weight * t + (1.0 - cfg.tempo_weight) * a, t, a


# ---------------------------------------------------------------- batch table

def _analyse(task: tuple) -> tuple[str, str, dict | None, str | None]:
    """Worker: the beats of one file, or the reason it failed as text (it crosses the process boundary).

    task: (kind, id, path, max_seconds[, motion, frame size]); the last three matter for videos only."""
    kind, rid, path, max_seconds, *motion = task
    try:
        if kind == "video":
            out = visual_beats(path, max_seconds, *motion)
            out.pop("envelope")  # the table needs only beats and tempo; keep the pipe light
        else:
            out = music_beats(path)
            out.pop("onset_envelope")
        return kind, rid, out, None
    except MediaError as e:
        return kind, rid, None, str(e).removeprefix(f"{path}: ")
    except Exception as e:  # noqa: BLE001 - any analysis failure becomes a reported bad file, on one line
        return kind, rid, None, " ".join(f"{type(e).__name__}: {e}".split())


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core already; OpenCV's own threads would oversubscribe


def _run_tasks(tasks: list, workers: int) -> list:
    bar = dict(total=len(tasks), desc="rhythm", unit="file")
    if workers <= 1:
        return [_analyse(t) for t in tqdm(tasks, **bar)]
    numba_cache.warm()  # workers then only read librosa's numba cache (see pipeline.numba_cache)
    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_init_worker) as pool:
            return list(tqdm(pool.map(_analyse, tasks, chunksize=max(1, min(8, len(tasks) // (4 * workers)))),
                             **bar))
    except BrokenProcessPool as e:  # a worker died (out of memory, a crashing decoder)
        raise MediaError(f"rhythm: a worker process died ({e}); rerun with workers=1 to find the file") from e


def rhythm_table(pairs: pd.DataFrame, video_paths: dict, music_paths: dict, workers: int = 0,
                 on_error: str = "fail", cfg: RhythmConfig | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per (video_id, music_id) pair with TABLE_COLUMNS sorted by ids, failures (video_id, path, reason)).

    Each video and each music clip is analysed once, however many pairs it is in, on `workers` processes
    (0 = every core). on_error="fail" raises one MediaError naming every bad file; "skip" drops the pairs
    of a bad file and lists them as failures (a bad music clip gives one failure row per video paired with it).
    """
    cfg = cfg or RhythmConfig()
    cfg.validate()
    check_on_error(on_error)
    missing = [c for c in ("video_id", "music_id") if c not in pairs.columns]
    if missing:
        raise DataError(f"rhythm pairs: missing column(s) {missing}; expected video_id, music_id")
    pairs = pairs[["video_id", "music_id"]].astype(str).drop_duplicates()
    video_paths = {str(k): str(v) for k, v in video_paths.items()}
    music_paths = {str(k): str(v) for k, v in music_paths.items()}
    for col, known in (("video_id", video_paths), ("music_id", music_paths)):
        unknown = ~pairs[col].isin(known.keys())
        if unknown.any():
            i = int(np.flatnonzero(unknown.to_numpy())[0])
            raise DataError(f"rhythm pairs row {pairs.index[i]}: {col} {pairs[col].iloc[i]!r} has no media path "
                            f"({int(unknown.sum())} such row(s))")
    tasks = ([("video", v, video_paths[v], cfg.max_seconds, cfg.motion, cfg.frame_size)
              for v in sorted(pairs["video_id"].unique())]
             + [("music", m, music_paths[m], None) for m in sorted(pairs["music_id"].unique())])
    workers = max(1, min(workers or available_cpus(), len(tasks)))
    log.info("rhythm: %d pairs, %d files on %d process(es)", len(pairs), len(tasks), workers)
    beats: dict[tuple[str, str], dict] = {}
    bad: dict[tuple[str, str], str] = {}
    for kind, rid, out, reason in _run_tasks(tasks, workers):
        if out is None:
            bad[kind, rid] = reason
            log.warning("rhythm: %s %s (%s): %s", kind, rid, (video_paths if kind == "video" else music_paths)[rid],
                        reason)
        else:
            beats[kind, rid] = out
    if bad and on_error == "fail":
        paths = {"video": video_paths, "music": music_paths}
        raise_failures("rhythm", [(f"{kind} {rid}", paths[kind][rid], reason) for (kind, rid), reason in bad.items()],
                       len(tasks), "media file(s)")

    rows, failures = [], []
    for video_id, music_id in sorted(pairs.itertuples(index=False, name=None)):
        if ("video", video_id) in bad:
            failures.append((video_id, video_paths[video_id], bad["video", video_id]))
            continue
        if ("music", music_id) in bad:
            failures.append((video_id, music_paths[music_id], f"music {music_id}: {bad['music', music_id]}"))
            continue
        vb, mb = beats["video", video_id], beats["music", music_id]
        rows.append((video_id, music_id, *_score_parts(vb, mb, cfg),
                     vb["tempo"], mb["tempo"], len(vb["beat_times"]), len(mb["beat_times"])))
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS)).astype(
        {"n_visual_beats": "int64", "n_music_beats": "int64"})
    failures = pd.DataFrame(sorted(set(failures)), columns=list(FAILURE_COLUMNS))
    return table, failures
