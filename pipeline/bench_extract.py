"""Extraction speed: `python -m pipeline.bench --extract data/raw [--videos 240] [--pairs 240] [--rounds 3]`.

Times the two media stages' work on the first videos (sorted by id) of a built data/raw, in one process,
alternating: `extract_video_features` (decode at `fps` + the CNN + temporal mean, every core) and
`rhythm_table` (optical-flow visual beats of each video, librosa beats of each music clip, their alignment).
Loading the CNN's weights and one warm-up call of each (librosa's numba kernels, the first CNN batch) happen
before the clock starts; what is timed is what a stage spends per item. Each run lands in reports/bench.json
under "extraction" (command, CPU, precision asked and run, load average), beside the training runs.
The `extract_video` stage runs with glibc malloc tunables (its `cmd` in dvc.yaml: freed CNN activations are
reused instead of page-faulted afresh each batch); run the benchmark under the same GLIBC_TUNABLES to time
what the stage does. The config records the value it ran with.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import DataError


def _inputs(raw: Path, n_videos: int, n_pairs: int):
    """(video paths of the first n_videos videos with media, the first n_pairs UGC pairs, their video and
    music paths); a DataError naming the folder when it holds no media."""
    raw = Path(raw)
    videos = pd.read_parquet(raw / "videos.parquet")
    videos = videos[videos["path"].notna()].sort_values("video_id")
    if videos.empty:
        raise DataError(f"{raw}/videos.parquet: no video has a media path; --extract needs a source with media "
                        "(the default world or ingest.source folder)")
    music = pd.read_parquet(raw / "music.parquet").set_index("music_id")
    pairs = pd.read_parquet(raw / "pairs.parquet")
    with_media = pairs["video_id"].isin(videos["video_id"]) & pairs["music_id"].isin(music.index[music["path"].notna()])
    pairs = pairs[(pairs["kind"] == "ugc") & with_media].sort_values("video_id").head(n_pairs)
    path = dict(zip(videos["video_id"], videos["path"]))
    video_paths = {v: str(raw / path[v]) for v in videos["video_id"].head(n_videos)}
    pair_videos = {v: str(raw / path[v]) for v in pairs["video_id"]}
    pair_music = {m: str(raw / music.loc[m, "path"]) for m in pairs["music_id"]}
    return video_paths, pairs, pair_videos, pair_music


def run_extraction(raw: Path, n_videos: int, n_pairs: int, rounds: int, precision: str) -> dict:
    """The "data", "config" and "figures" of one extraction benchmark run."""
    import torch

    from pipeline.features.rhythm import rhythm_table
    from pipeline.features.video import VideoConfig, extract_video_features, load_backbone, resolve_precision

    video_paths, pairs, pair_videos, pair_music = _inputs(raw, n_videos, n_pairs)
    cfg = VideoConfig(device="cpu", precision=precision)
    ran = resolve_precision(precision, "cpu")
    t = time.perf_counter()
    backbone = load_backbone(cfg)
    load_seconds = time.perf_counter() - t
    warm = dict(list(video_paths.items())[:2])
    extract_video_features(warm, cfg, backbone=backbone)
    rhythm_table(pairs.head(2), pair_videos, pair_music, workers=0, on_error="fail")
    video, rhythm, frames = [], [], 0
    for _ in range(rounds):
        t = time.perf_counter()
        ids, features, _ = extract_video_features(video_paths, cfg, backbone=backbone)
        video.append(time.perf_counter() - t)
        t = time.perf_counter()
        rhythm_table(pairs, pair_videos, pair_music, workers=0, on_error="fail")
        rhythm.append(time.perf_counter() - t)
    v_med, r_med = float(np.median(video)), float(np.median(rhythm))
    return {
        "data": {"raw": str(raw), "videos": len(ids), "pairs": int(len(pairs)),
                 "music": int(pairs["music_id"].nunique()), "feature_dim": int(features.shape[1])},
        "config": {"rounds": rounds, "precision": precision, "precision_run": ran, "fps": cfg.fps,
                   "backbone": cfg.backbone, "threads": torch.get_num_threads(),
                   "glibc_tunables": os.environ.get("GLIBC_TUNABLES", "")},
        "figures": {"backbone_load_seconds": round(load_seconds, 2),
                    "video_seconds": [round(s, 2) for s in video], "video_seconds_median": round(v_med, 2),
                    "videos_per_second": round(len(ids) / v_med, 1),
                    "rhythm_seconds": [round(s, 2) for s in rhythm], "rhythm_seconds_median": round(r_med, 2),
                    "pairs_per_second": round(len(pairs) / r_med, 1)},
    }


def extraction_table(runs: dict) -> str:
    """The extraction table of reports/performance.md: one row per run (sorted by label)."""
    lines = ["| run | data | precision (asked -> run) | extract_video, median (s) | videos/s | rhythm, median (s) "
             "| pairs/s | rounds | load avg start -> end | command |", "|---|---|---|---|---|---|---|---|---|---|"]
    for label, r in sorted(runs.items()):
        d, c, f = r["data"], r["config"], r["figures"]
        load = f"{r['load_average_start'][0]:g} -> {r['load_average_end'][0]:g}"
        lines.append(
            f"| {label} | {d['videos']} videos, {d['pairs']} UGC pairs ({d['music']} music) of {d['raw']} "
            f"| {c['precision']} -> {c['precision_run']} | {f['video_seconds_median']:g} "
            f"({', '.join(f'{s:g}' for s in f['video_seconds'])}) | **{f['videos_per_second']:g}** "
            f"| {f['rhythm_seconds_median']:g} ({', '.join(f'{s:g}' for s in f['rhythm_seconds'])}) "
            f"| **{f['pairs_per_second']:g}** | {c['rounds']} | {load} | `{r['command']}` |")
    return "\n".join(lines)
