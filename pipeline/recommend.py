"""`python -m pipeline recommend VIDEO [VIDEO ...]`: background music for new videos from a trained model.

Each video goes through the same extractors as the pipeline (frames -> ImageNet CNN -> temporal mean; an
optional caption -> sentence embedding), the model embeds it, and the music pool (the dataset's music, its
features from data/features) is ranked by the model's score with an exact inner-product faiss index, the
structure that keeps serving fast on a large pool.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from pipeline.config import load_params
from pipeline.errors import PipelineError

if TYPE_CHECKING:
    import faiss
    import torch

# faiss, torch, pandas and the training code are imported where they are used, so that
# `python -m pipeline recommend --help` answers without loading them (seconds).

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Pool:
    """The ranked music: ids, their genre labels, and the model's music embeddings in a faiss index."""

    music_ids: list[str]
    genres: list[str]
    index: faiss.Index


def music_pool(model, features_dir: str | Path, dataset_dir: str | Path) -> Pool:
    import faiss
    import numpy as np
    import torch

    from pipeline.sampling.dataset import load_dataset
    from pipeline.train import embed, load_features, music_genre_matrix

    features, dataset = load_features(features_dir), load_dataset(dataset_dir)
    rows = features.music_rows(dataset.music_ids, "dataset music")
    genre = torch.as_tensor(music_genre_matrix(dataset), dtype=torch.float32)
    z = embed(model.music_embedding, {"music": features.music[rows], "music_genre": genre}).numpy()
    index = faiss.IndexFlatIP(z.shape[1])  # exact: the model's score is the inner product of embeddings
    index.add(np.ascontiguousarray(z, dtype=np.float32))
    labels = dataset.ugc.drop_duplicates("music_id").set_index("music_id")["genre"]
    return Pool(list(dataset.music_ids), [str(labels.get(m, "unknown")) for m in dataset.music_ids], index)


def video_features(paths: Sequence[str], texts: Sequence[str | None], video_params: dict) -> dict[str, torch.Tensor]:
    """Visual (and caption) features of the given files, with the extract stages' extractors and params."""
    import torch

    from pipeline.features.text import extract_text_features
    from pipeline.features.video import VideoConfig, extract_video_features

    known = {f.name for f in dataclasses.fields(VideoConfig)}
    cfg = VideoConfig(**{k: v for k, v in (video_params or {}).items() if k in known})
    keys = [f"{i:06d}" for i in range(len(paths))]  # sorted order == input order
    ids, visual, _ = extract_video_features(dict(zip(keys, paths)), cfg, on_error="fail")
    _, text, mask = extract_text_features(dict(zip(keys, texts)))
    return {"visual": torch.from_numpy(visual), "text": torch.from_numpy(text),
            "text_mask": torch.from_numpy(mask.astype(bool))}


def recommend(paths: Sequence[str], model_path: str | Path, top: int = 10, texts: Sequence[str | None] | None = None,
              features_dir: str | Path = "data/features", dataset_dir: str | Path = "data/dataset",
              params_file: str | Path = "params.yaml") -> list[dict]:
    """For each video: {"video": path, "music": [{"music_id", "score", "genre"}, ...]} best first."""
    import numpy as np

    from pipeline.train import embed, load_model

    for p in paths:
        if not Path(p).is_file():
            raise PipelineError(f"{p}: no such video file")
    model = load_model(model_path)
    pool = music_pool(model, features_dir, dataset_dir)
    top = min(top, len(pool.music_ids))
    params = load_params(params_file) if Path(params_file).exists() else {}
    batch = video_features(list(paths), list(texts) if texts else [None] * len(paths), params.get("features_video"))
    if model.text_dim is None:
        batch = {"visual": batch["visual"]}
    z = embed(model.video_embedding, batch).numpy()
    scores, idx = pool.index.search(np.ascontiguousarray(z, dtype=np.float32), top)
    return [{"video": str(p), "music": [{"music_id": pool.music_ids[j], "score": float(s), "genre": pool.genres[j]}
                                         for s, j in zip(scores[i], idx[i])]} for i, p in enumerate(paths)]


def default_model() -> Path:
    """The student of the dataset's intervene scheme (its T_diverse / T_matching model), first seed."""
    info = json.loads(Path("data/dataset/info.json").read_text()) if Path("data/dataset/info.json").exists() else {}
    seeds = (load_params("params.yaml").get("train") or {}).get("seeds") or [0]
    return Path("models/student") / f"{info.get('intervene_scheme', 'weak')}_s{seeds[0]}.pt"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline recommend", description=__doc__.splitlines()[0])
    ap.add_argument("videos", nargs="+", help="video files (any container PyAV decodes)")
    ap.add_argument("--top", type=int, default=10, help="music per video (default 10)")
    ap.add_argument("--model", type=Path, default=None, help="a trained model (default: the student of "
                    "the intervene scheme, first seed)")
    ap.add_argument("--text", action="append", default=None, help="a caption, once per video in order")
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    args = ap.parse_args(argv)
    logging.basicConfig(level="WARNING", format="%(name)s: %(message)s")
    if args.top < 1:
        ap.error("--top must be >= 1")
    if args.text is not None and len(args.text) != len(args.videos):
        ap.error(f"--text given {len(args.text)} time(s) for {len(args.videos)} video(s)")
    try:
        out = recommend(args.videos, args.model or default_model(), args.top, args.text)
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        import pandas as pd

        for item in out:
            print(item["video"])
            table = pd.DataFrame(item["music"])
            table.index = range(1, len(table) + 1)
            print(table.to_string(float_format=lambda x: f"{x:.4f}"))
    return 0
