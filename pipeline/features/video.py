"""Video-level visual features: frames at `fps` -> ImageNet CNN -> temporal mean (one vector per video).

As in the papers (frames at 3 fps, ResNet, temporal mean pooling); decoding runs in threads ahead of a
CNN that sees frames of several videos per batch, and every bad file is reported, not just the first.
"""
from __future__ import annotations

import logging
import math
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm import tqdm

from pipeline.errors import DataError, MediaError, ParamsError
from pipeline.features.backbones import BACKBONES, IMAGE_SIZE, FrameEncoder, build_backbone

log = logging.getLogger(__name__)

FAILURE_COLUMNS = ("video_id", "path", "reason")
ON_ERROR = ("fail", "skip")
MIN_COVERAGE = 0.9  # a stream whose frames end before 90% of its declared duration is truncated


@dataclass(frozen=True)
class VideoConfig:
    """The `features.video` params group."""

    fps: float = 3.0  # frames sampled per second of video (the papers: 3)
    backbone: str = "efficientnet_lite0"  # or "resnet50" (needs `weights`)
    weights: str | None = None  # local weight file; None = the file shipped in the backbone's package
    batch_frames: int = 64  # frames per CNN forward, drawn from as many videos as needed
    max_frames: int = 64  # longer videos are sampled at evenly spread timestamps instead
    device: str = "auto"  # auto | cpu | cuda | cuda:N

    def validate(self) -> None:
        if not self.fps > 0:
            raise ParamsError(f"features.video.fps: {self.fps!r}, expected > 0")
        if self.backbone not in BACKBONES:
            raise ParamsError(f"features.video.backbone: {self.backbone!r}, expected one of {BACKBONES}")
        for key in ("batch_frames", "max_frames"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise ParamsError(f"features.video.{key}: {value!r}, expected an integer >= 1")
        if not (self.device in ("auto", "cpu") or self.device.startswith("cuda")):
            raise ParamsError(f"features.video.device: {self.device!r}, expected auto, cpu, cuda or cuda:N")


class _BadMedia(Exception):
    """Why one file cannot be decoded (the path is added by the caller)."""


def fit_square(image: Image.Image, size: int) -> np.ndarray:
    """Resize policy: shorter side to `size` (bilinear, antialiased), then centre crop to size x size.

    Keeps the aspect ratio (no squashing of portrait micro-videos) and the central content, as the
    ImageNet evaluation transform does, without its extra 0.875 crop that would discard frame borders.
    """
    w, h = image.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    image = image.resize((new_w, new_h), Image.BILINEAR)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)))


def _sample_times(duration: Fraction | None, fps: Fraction, max_frames: int) -> list[Fraction]:
    """Timestamps k/fps inside the video; more than max_frames are thinned to evenly spread ones."""
    if duration is None:  # unknown length: the first max_frames timestamps
        return [k / fps for k in range(max_frames)]
    n = max(1, math.ceil(duration * fps))
    if n <= max_frames:
        return [k / fps for k in range(n)]
    keep = np.unique(np.round(np.linspace(0, n - 1, max_frames)).astype(np.int64))
    return [int(k) / fps for k in keep]


def _decode(path: str, fps: float, max_frames: int, size: int | None) -> np.ndarray:
    """Frames shown at each sampled timestamp (the last frame whose time is <= t), as uint8 RGB."""
    p = Path(path)
    if not p.exists():
        raise _BadMedia("file not found")
    if not p.is_file():
        raise _BadMedia("not a regular file")
    if p.stat().st_size == 0:
        raise _BadMedia("empty file (0 bytes)")
    fps_q = Fraction(fps).limit_denominator(1_000_000)
    try:
        with av.open(str(p), metadata_errors="ignore") as container:
            if not container.streams.video:
                raise _BadMedia(f"no video stream (container {container.format.name!r})")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"  # H.264 decoding is bit-exact whatever the threading
            tb = stream.time_base
            declared = stream.duration * tb if stream.duration and tb else None
            check_coverage = declared is not None  # the container's duration may be the audio's
            if declared is None and container.duration:
                declared = Fraction(container.duration, av.time_base)
            times = deque(_sample_times(declared, fps_q, max_frames))
            rate = stream.average_rate or stream.guessed_rate or Fraction(25)
            frames: list[np.ndarray] = []

            def emit(frame: av.VideoFrame) -> None:
                image = frame.to_image()
                frames.append(np.asarray(image) if size is None else fit_square(image, size))

            origin, prev, prev_t, prev_dur, index = None, None, Fraction(0), 1 / Fraction(rate), 0
            for frame in container.decode(stream):
                if frame.pts is not None and tb:
                    origin = frame.pts if origin is None else origin
                    t = (frame.pts - origin) * tb
                else:  # no timestamp: fall back to the frame index at the nominal rate
                    t = index / Fraction(rate)
                index += 1
                while times and prev is not None and t > times[0]:
                    emit(prev)
                    times.popleft()
                prev, prev_t = frame, t
                if frame.duration and tb:
                    prev_dur = frame.duration * tb
                if not times:
                    break
            if prev is None:
                raise _BadMedia("no decodable video frames")
            end = prev_t + prev_dur
            while times and times[0] < end:
                emit(prev)
                times.popleft()
            if times and check_coverage and end < MIN_COVERAGE * declared:
                raise _BadMedia(f"truncated: frames cover {float(end):.2f} s of the declared {float(declared):.2f} s")
    except _BadMedia:
        raise
    except (av.error.FFmpegError, OSError, ValueError, RuntimeError) as e:
        raise _BadMedia(f"cannot decode ({type(e).__name__}: {e})") from e
    if not frames:
        raise _BadMedia("no frames at the sampled timestamps")
    return np.stack(frames)


def decode_frames(path: str | os.PathLike, fps: float, max_frames: int, size: int | None = None) -> np.ndarray:
    """uint8 [T, H, W, 3] frames sampled at `fps` by timestamp (T <= max_frames); MediaError naming the file.

    With `size`, each frame is resized and centre-cropped to size x size (see `fit_square`).
    """
    try:
        return _decode(str(path), fps, max_frames, size)
    except _BadMedia as e:
        raise MediaError(f"{path}: {e}") from None


def load_backbone(cfg: VideoConfig) -> FrameEncoder:
    """The configured CNN in eval mode: uint8 frames [B, 224, 224, 3] -> pooled features [B, D]."""
    cfg.validate()
    return build_backbone(cfg.backbone, cfg.weights, cfg.device)


def _decode_one(item: tuple[str, str], cfg: VideoConfig) -> tuple[str, np.ndarray | None, str | None]:
    video_id, path = item
    try:
        return video_id, _decode(path, cfg.fps, cfg.max_frames, IMAGE_SIZE), None
    except _BadMedia as e:
        return video_id, None, str(e)


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def extract_video_features(
    paths: dict[str, str],
    cfg: VideoConfig,
    on_error: str = "fail",
    workers: int | None = None,
    backbone: FrameEncoder | None = None,
) -> tuple[list[str], np.ndarray, pd.DataFrame]:
    """(sorted ids, float32 [N, D] temporal-mean features, failures table (video_id, path, reason)).

    on_error="fail" raises one MediaError naming every bad file; "skip" leaves bad videos out of the
    matrix and lists them in the failures table. Same inputs and config give a byte-identical matrix.
    `backbone` reuses an already loaded `load_backbone(cfg)`.
    """
    if on_error not in ON_ERROR:
        raise ParamsError(f"on_error: {on_error!r}, expected one of {ON_ERROR}")
    cfg.validate()
    model = backbone if backbone is not None else load_backbone(cfg)
    device = next(model.parameters()).device
    workers = workers or max(1, min(4, _available_cpus()))
    items = sorted((str(k), str(v)) for k, v in paths.items())
    path_of = dict(items)
    if len(path_of) != len(paths):
        raise DataError(f"video features: {len(paths) - len(path_of)} id(s) collide once converted to strings")

    good_ids: list[str] = []
    sums: list[np.ndarray] = []  # float64 per-video sums of frame features (pooled at the end)
    counts: list[int] = []
    failures: list[tuple[str, str, str]] = []
    pending: list[tuple[int, np.ndarray]] = []  # (row in good_ids, frames not yet through the CNN)

    def run_cnn(final: bool) -> None:
        """Push frames through the CNN in batches of exactly batch_frames (the last may be shorter)."""
        while pending and (final or sum(len(f) for _, f in pending) >= cfg.batch_frames):
            rows, chunks, need = [], [], cfg.batch_frames
            while pending and need > 0:
                row, frames = pending[0]
                take = frames[:need]
                rows.append(np.full(len(take), row))
                chunks.append(take)
                need -= len(take)
                if len(take) == len(frames):
                    pending.pop(0)
                else:
                    pending[0] = (row, frames[len(take):])
            with torch.inference_mode():
                feats = model(torch.from_numpy(np.concatenate(chunks)).to(device)).double().cpu().numpy()
            rows = np.concatenate(rows)
            for row in np.unique(rows):  # segment sums of this batch, in frame order
                sums[row] += feats[rows == row].sum(axis=0)

    old_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, _available_cpus()))
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool, tqdm(
            total=len(items), desc="video features", unit="video"
        ) as bar:
            # Bounded look-ahead keeps at most ~2 decoded videos per worker in memory; results are
            # consumed in sorted-id order, so batches (and so the output bytes) never depend on timing.
            futures: deque = deque()
            queue = iter(items)
            for item in queue:
                futures.append(pool.submit(_decode_one, item, cfg))
                if len(futures) >= 2 * workers:
                    break
            while futures:
                video_id, frames, reason = futures.popleft().result()
                nxt = next(queue, None)
                if nxt is not None:
                    futures.append(pool.submit(_decode_one, nxt, cfg))
                if frames is None:
                    failures.append((video_id, path_of[video_id], reason))
                    log.warning("video %s (%s): %s", video_id, path_of[video_id], reason)
                elif not (failures and on_error == "fail"):  # once failing, only decode to find every bad file
                    good_ids.append(video_id)
                    sums.append(np.zeros(model.feature_dim))
                    counts.append(len(frames))
                    pending.append((len(good_ids) - 1, frames))
                    run_cnn(final=False)
                bar.update(1)
            if not (failures and on_error == "fail"):
                run_cnn(final=True)
    finally:
        torch.set_num_threads(old_threads)

    failed = pd.DataFrame(failures, columns=list(FAILURE_COLUMNS), dtype=str)
    if failures and on_error == "fail":
        listing = "\n".join(f"  {v} ({p}): {r}" for v, p, r in failures)
        raise MediaError(f"{len(failures)} of {len(items)} video(s) cannot be decoded:\n{listing}")
    features = np.zeros((len(good_ids), model.feature_dim), dtype=np.float32)
    for row, (total, n) in enumerate(zip(sums, counts)):
        features[row] = total / n  # temporal mean pooling over the sampled frames
    bad = ~np.isfinite(features).all(axis=1)
    if bad.any():
        bad_ids = [good_ids[i] for i in np.flatnonzero(bad)]
        raise DataError(f"video features: non-finite row(s) for video id(s) {bad_ids}")
    log.info("video features: %d videos, %d failed, dim %d", len(good_ids), len(failures), model.feature_dim)
    return good_ids, features, failed
