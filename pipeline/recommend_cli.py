"""`python -m pipeline recommend VIDEO [VIDEO ...]`: the command line of pipeline.recommend.

Like a stage, the command reads its settings from the repository's params file (the `features_video` group,
so new videos get exactly the pipeline's features; `train.seeds` for the default model) and the built
dataset's info.json (which scheme the default student comes from); the library takes them as arguments.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

from pipeline.errors import ParamsError, PipelineError

# Before torch loads OpenMP (it reads this once): idle threads sleep instead of spinning. A short command run
# beside other jobs otherwise has each thread spin for the other one; on the 2-core machine under load 10
# that took 3.4-4.9 s of CPU per run instead of 2.9 (README "Speed at TT-150k size").
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

DATASET_INFO = Path("data/dataset/info.json")
RAW = Path("data/raw")  # the music files the --html page plays (music.parquet's paths)


def video_config(params: dict, params_file: Path):
    """The VideoConfig of the `features_video` group; its backend/on_error keys belong to the stage only."""
    from pipeline.config import from_group
    from pipeline.features.video import VideoConfig

    group = dict(params.get("features_video") or {})
    stage_only = {"on_error", "backend", "ray_address", "shard_size", "threads_per_task"}
    return from_group(VideoConfig, {k: v for k, v in group.items() if k not in stage_only},
                      f"{params_file}: features_video")


def default_model(params: dict) -> Path:
    """The student of the dataset's intervene scheme (the scheme T_diverse and T_matching are drawn from:
    `split.intervene_scheme`, recorded in data/dataset/info.json), first training seed."""
    if not DATASET_INFO.exists():
        raise PipelineError(f"{DATASET_INFO}: missing; run `dvc repro` first or pass --model")
    scheme = json.loads(DATASET_INFO.read_text())["intervene_scheme"]
    seeds = (params.get("train") or {}).get("seeds") or [0]
    return Path("models/student") / f"{scheme}_s{seeds[0]}.pt"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline recommend",
                                 description="Rank the dataset's music for new video files with a trained model.")
    ap.add_argument("videos", nargs="+", help="video files (any container PyAV decodes)")
    ap.add_argument("--top", type=int, default=10, help="music per video (default 10)")
    ap.add_argument("--model", type=Path, default=None, help="a trained model (default: the student of "
                    "the intervene scheme, first seed)")
    ap.add_argument("--text", action="append", default=None, help="a caption, once per video in order")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default params.yaml)")
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    ap.add_argument("--html", type=Path, default=None, help="also write an offline page that plays each video "
                    "beside its music (links relative to the page)")
    args = ap.parse_args(argv)
    logging.basicConfig(level="WARNING", format="%(name)s: %(message)s")
    if args.top < 1:
        ap.error("--top must be >= 1")
    if args.text is not None and len(args.text) != len(args.videos):
        ap.error(f"--text given {len(args.text)} time(s) for {len(args.videos)} video(s)")
    try:
        from pipeline.config import load_params
        from pipeline.recommend import recommend

        if not args.params.exists():
            raise ParamsError(f"{args.params}: no params file; run from the repository root or pass --params")
        params = load_params(args.params)
        model = args.model or default_model(params)
        out = recommend(args.videos, model, video_config(params, args.params), args.top, args.text)
        if args.html is not None:
            from pipeline.report.page import recommend_page
            recommend_page(out, args.html, RAW, str(model))
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for item in out:
            print(item["video"])
            for rank, m in enumerate(item["music"], 1):
                print(f"{rank:4d}  {m['music_id']}  {m['score']:.4f}  {m['genre']}")
    return 0
