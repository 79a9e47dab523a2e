"""Video-level visual features: frames at `fps` -> ImageNet CNN -> temporal mean (one vector per video).

As in the papers (frames at 3 fps, ResNet, temporal mean pooling); decoding runs in threads ahead of a
CNN that sees frames of several videos per batch, and every bad file is reported, not just the first.
Speed on CPU comes from batch shape, not precision: batches of `batch_frames` (16: a batch's activations
stay in cache) run side by side, one per core, each single-threaded, on a network whose batch norms are
folded into its convolutions (pipeline.features.backbones.fuse_for_inference).
"""
from __future__ import annotations

import logging
import math
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm import tqdm

from av.video.reformatter import VideoReformatter

from pipeline.errors import DataError, MediaError, ParamsError
from pipeline.features.backbones import BACKBONES, IMAGE_SIZE, FrameEncoder, build_backbone, resolve_device
from pipeline.features.backend import BackendConfig, run_sharded
from pipeline.features.mediacheck import BadMedia, VideoReader, check_on_error, raise_failures
from pipeline.resources import available_cpus

log = logging.getLogger(__name__)

FAILURE_COLUMNS = ("video_id", "path", "reason")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class VideoConfig:
    """The `features_video` params group."""

    fps: float = 3.0  # frames sampled per second of video (the papers: 3)
    backbone: str = "efficientnet_lite0"  # or "resnet50" (needs `weights`)
    weights: str | None = None  # local weight file; None = the file shipped in the backbone's package
    batch_frames: int = 16  # frames per CNN forward, drawn from as many videos as needed
    max_frames: int = 64  # longer videos are sampled at evenly spread timestamps instead
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # fp32, or bf16 autocast: about 1.6x faster on a CPU with bf16 units, but not the same features (default
    # world: per-video cosine to fp32 >= 0.981, probe scores within 0.005, 83% of top-10 neighbours kept);
    # auto: bf16 on a CPU with native bfloat16 (AVX512-BF16 or AMX), else fp32 (see `resolve_precision`)
    precision: str = "fp32"

    def validate(self) -> None:
        if not self.fps > 0:
            raise ParamsError(f"features_video.fps: {self.fps!r}, expected > 0")
        if self.backbone not in BACKBONES:
            raise ParamsError(f"features_video.backbone: {self.backbone!r}, expected one of {BACKBONES}")
        for key in ("batch_frames", "max_frames"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise ParamsError(f"features_video.{key}: {value!r}, expected an integer >= 1")
        if self.precision not in PRECISIONS:
            raise ParamsError(f"features_video.precision: {self.precision!r}, expected one of {PRECISIONS}")
        if not (self.device in ("auto", "cpu") or self.device.startswith("cuda")):
            raise ParamsError(f"features_video.device: {self.device!r}, expected auto, cpu, cuda or cuda:N")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX tiles), as torch reports it.

    torch has no public call for this; its private probes are guarded so that a torch without them means
    "no" (fp32, the safe choice: emulated bfloat16 is slower than fp32)."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    try:
        return any(getattr(torch.cpu, name, lambda: False)() for name in probes)
    except Exception:  # noqa: BLE001 - a probe that fails says nothing about the CPU
        return False


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """`features_video.precision` as it will run: auto is bf16 on a CPU with native bfloat16, else fp32
    (on a GPU fp32: it is fast enough there, and its features then match a CPU's fp32 run)."""
    if precision != "auto":
        return precision
    on_cpu = (device if isinstance(device, torch.device) else resolve_device(device)).type == "cpu"
    return "bf16" if on_cpu and cpu_has_native_bf16() else "fp32"


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
    """Frames shown at each sampled timestamp (the last frame whose time is <= t), as uint8 RGB.

    Every frame is decoded (the media check judges the whole file); only the sampled ones are converted,
    through one reusable colour converter (a fresh one per frame costs more than decoding the frame).
    """
    fps_q = Fraction(fps).limit_denominator(1_000_000)
    to_rgb = VideoReformatter()
    frames: list[np.ndarray] = []

    def emit(frame: av.VideoFrame) -> None:
        rgb = to_rgb.reformat(frame, format="rgb24").to_ndarray()
        frames.append(rgb if size is None else fit_square(Image.fromarray(rgb), size))

    with VideoReader(path) as video:
        times = deque(_sample_times(video.duration, fps_q, max_frames))
        prev = None
        for t, frame in video.frames():
            while times and prev is not None and t > times[0]:
                emit(prev)
                times.popleft()
            prev = frame
        while times and times[0] < video.end:  # the last frame is shown until its own end
            emit(prev)
            times.popleft()
    if not frames:
        raise BadMedia("no frames at the sampled timestamps")
    return np.stack(frames)


def decode_frames(path: str | os.PathLike, fps: float, max_frames: int, size: int | None = None) -> np.ndarray:
    """uint8 [T, H, W, 3] frames sampled at `fps` by timestamp (T <= max_frames); MediaError naming the file.

    With `size`, each frame is resized and centre-cropped to size x size (see `fit_square`).
    """
    try:
        return _decode(str(path), fps, max_frames, size)
    except BadMedia as e:
        raise MediaError(f"{path}: {e}") from None


def load_backbone(cfg: VideoConfig) -> FrameEncoder:
    """The configured CNN in eval mode: uint8 frames [B, 224, 224, 3] -> pooled features [B, D]."""
    cfg.validate()
    return build_backbone(cfg.backbone, cfg.weights, cfg.device)


def _decode_one(item: tuple[str, str], cfg: VideoConfig) -> tuple[str, np.ndarray | None, str | None]:
    video_id, path = item
    try:
        return video_id, _decode(path, cfg.fps, cfg.max_frames, IMAGE_SIZE), None
    except BadMedia as e:
        return video_id, None, str(e)


def _batches(videos, batch_frames: int):
    """(rows, frames) CNN batches of exactly batch_frames (the last may be shorter) from (row, frames) items
    in order; a video's frames may straddle batches. Fixed batches keep the output bytes fixed."""
    rows, chunks, filled = [], [], 0
    for row, frames in videos:
        while len(frames):
            take = frames[: batch_frames - filled]
            rows.append(np.full(len(take), row))
            chunks.append(take)
            filled += len(take)
            frames = frames[len(take):]
            if filled == batch_frames:
                yield np.concatenate(rows), np.concatenate(chunks)
                rows, chunks, filled = [], [], 0
    if filled:
        yield np.concatenate(rows), np.concatenate(chunks)


def _ordered(pool: ThreadPoolExecutor, fn, items, window: int):
    """fn(item) for each item on the pool, yielded in item order with at most `window` in flight."""
    futures: deque = deque()
    for item in items:
        futures.append(pool.submit(fn, item))
        if len(futures) >= window:
            yield futures.popleft().result()
    while futures:
        yield futures.popleft().result()


def extract_video_features(
    paths: dict[str, str],
    cfg: VideoConfig,
    on_error: str = "fail",
    workers: int | None = None,
    backbone: FrameEncoder | None = None,
) -> tuple[list[str], np.ndarray, pd.DataFrame]:
    """(sorted ids, float32 [N, D] temporal-mean features, failures table (video_id, path, reason)).

    on_error="fail" raises one MediaError naming every bad file; "skip" leaves bad videos out of the
    matrix and lists them in the failures table. `workers` CNN batches (default: one per core) run at
    once, each on one thread; decoding has as many threads. Same inputs and config give a byte-identical
    matrix whatever `workers`: batches are cut in sorted-id order and summed in that order.
    `backbone` reuses an already loaded `load_backbone(cfg)`.

    Long because the decoding threads, the CNN batches across videos and the failure bookkeeping share one queue.
    """
    check_on_error(on_error)
    cfg.validate()
    model = backbone if backbone is not None else load_backbone(cfg)
    device = next(model.parameters()).device
    bf16 = resolve_precision(cfg.precision, device) == "bf16"
    workers = workers or available_cpus()
    items = sorted((str(k), str(v)) for k, v in paths.items())
    path_of = dict(items)
    if len(path_of) != len(paths):
        raise DataError(f"video features: {len(paths) - len(path_of)} id(s) collide once converted to strings")

    good_ids: list[str] = []
    counts: list[int] = []
    failures: list[tuple[str, str, str]] = []
    bar = tqdm(total=len(items), desc="video features", unit="video")

    def decoded():
        """(row, frames) of each good video in sorted-id order; bad ones are recorded on the way."""
        with ThreadPoolExecutor(max_workers=workers) as pool:
            # bounded look-ahead: at most ~2 decoded videos per thread wait in memory
            for video_id, frames, reason in _ordered(pool, lambda it: _decode_one(it, cfg), items, 2 * workers):
                bar.update(1)
                if frames is None:
                    failures.append((video_id, path_of[video_id], reason))
                    log.warning("video %s (%s): %s", video_id, path_of[video_id], reason)
                elif not (failures and on_error == "fail"):  # once failing, only decode to find every bad file
                    good_ids.append(video_id)
                    counts.append(len(frames))
                    yield len(good_ids) - 1, frames

    def forward(batch):
        rows, frames = batch
        if failures and on_error == "fail":
            return rows, None
        with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            return rows, model(torch.from_numpy(frames).to(device)).double().cpu().numpy()

    sums: dict[int, np.ndarray] = {}  # float64 per-video sums of frame features (pooled at the end)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # parallel single-threaded batches beat one batch on every core (no barriers)
    try:
        with ThreadPoolExecutor(max_workers=workers) as cnn:
            for rows, feats in _ordered(cnn, forward, _batches(decoded(), cfg.batch_frames), workers + 1):
                if feats is None:
                    continue
                for row in np.unique(rows):  # segment sums of this batch, in frame order
                    sums[row] = sums.get(row, 0.0) + feats[rows == row].sum(axis=0)
    finally:
        torch.set_num_threads(old_threads)
        bar.close()

    failed = pd.DataFrame(failures, columns=list(FAILURE_COLUMNS), dtype=str)
    if failures and on_error == "fail":
        raise_failures("video features", failures, len(items), "video(s)")
    features = np.zeros((len(good_ids), model.feature_dim), dtype=np.float32)
    for row, n in enumerate(counts):
        features[row] = sums[row] / n  # temporal mean pooling over the sampled frames
    bad = ~np.isfinite(features).all(axis=1)
    if bad.any():
        bad_ids = [good_ids[i] for i in np.flatnonzero(bad)]
        raise DataError(f"video features: non-finite row(s) for video id(s) {bad_ids}")
    log.info("video features: %d videos, %d failed, dim %d", len(good_ids), len(failures), model.feature_dim)
    return good_ids, features, failed


def _video_shard(ids: list[str], paths: dict, cfg: VideoConfig, threads: int):
    """One shard of `extract_video_features` on `threads` cores (failures collected, not raised)."""
    return extract_video_features({i: paths[i] for i in ids}, cfg, on_error="skip", workers=threads)


def video_features_sharded(paths: dict, cfg: VideoConfig, on_error: str, backend: BackendConfig):
    """(sorted ids, [N, D] float32, failures) like extract_video_features, computed shard by shard on the
    chosen backend (pipeline.features.backend); with on_error 'fail' one MediaError names every bad file of
    every shard."""
    def fail(failures, total):
        raise_failures("video features", list(failures.itertuples(index=False, name=None)), total, "video(s)")

    ids, features, failures = run_sharded(_video_shard, paths, backend, "features_video", "video shards", on_error,
                                          fail, 0, cfg, backend.threads())
    if failures is None:
        failures = pd.DataFrame(columns=list(FAILURE_COLUMNS), dtype=str)
    return ids, features, failures.reset_index(drop=True)
