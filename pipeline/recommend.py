"""Background music for new videos from a trained model: the library behind `python -m pipeline recommend`.

Each video goes through the extract stages' extractors (frames -> ImageNet CNN -> temporal mean; an optional
caption -> sentence embedding) under the given VideoConfig; the model embeds it, and the dataset's UGC
ranking pool (never PGC-only clips) is ranked by the model's score with an exact inner-product faiss index,
the structure that keeps serving fast on a large pool. Heavy modules are imported where used, so that the
command's --help answers at once.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from pipeline.errors import MediaError, PipelineError

if TYPE_CHECKING:
    import faiss
    import torch

    from pipeline.features.video import VideoConfig


@dataclasses.dataclass
class Pool:
    """The ranked music: ids, their genre labels (the genre stage's), and the model's embeddings in an index."""

    music_ids: list[str]
    genres: list[str]
    index: "faiss.Index"


def pool_dataset(dataset_dir: str | Path):
    """The built dataset's music side (ids, genre table with the pool flag; the UGC table only when an older
    dataset has no music table): all `recommend` reads of it, not its splits, uploaders or evaluation sets."""
    import pandas as pd

    from pipeline.errors import DataError
    from pipeline.io import read_ids
    from pipeline.sampling.dataset import Dataset

    d = Path(dataset_dir)
    if not (d / "music_ids.txt").exists():
        raise DataError(f"{d}: no built dataset (music_ids.txt missing); run the split stage first")
    music = pd.read_parquet(d / "music.parquet") if (d / "music.parquet").exists() else None
    ugc = pd.read_parquet(d / "ugc.parquet") if music is None else None
    return Dataset(video_ids=[], music_ids=read_ids(d / "music_ids.txt"), ugc=ugc, pgc=None, splits=None,
                   uploaders=None, priors=None, eval_sets={}, music=music)


def music_pool(model, features_dir: str | Path, dataset_dir: str | Path) -> Pool:
    """The dataset's UGC ranking pool embedded by the model, each clip with its genre label."""
    import faiss
    import numpy as np
    import torch

    from pipeline.data.features import Features, load_music_features
    from pipeline.inference import pool_embedding

    dataset = pool_dataset(dataset_dir)
    ids, matrix = load_music_features(features_dir)
    features = Features(video_ids=[], music_ids=ids, visual=torch.empty(0, 0), music=torch.from_numpy(matrix))
    pool = np.flatnonzero(dataset.pool_mask())
    music_ids = [dataset.music_ids[i] for i in pool]
    z = pool_embedding(model, features, music_ids, dataset.genre_matrix()[pool]).cpu().numpy()
    index = faiss.IndexFlatIP(z.shape[1])  # exact: the model's score is the inner product of embeddings
    index.add(np.ascontiguousarray(z, dtype=np.float32))
    labels = dataset.music.set_index("music_id")["genre"] if dataset.music is not None else \
        dataset.ugc.drop_duplicates("music_id").set_index("music_id")["genre"]
    genres = [g if isinstance(g, str) else "unlabelled" for g in labels.reindex(music_ids)]
    return Pool(music_ids, genres, index)


def video_features(paths: Sequence[str], texts: Sequence[str | None], cfg: "VideoConfig",
                   text_dim: int | None) -> dict[str, "torch.Tensor"]:
    """Visual (and caption) features of the given files with the extract stages' extractors. The caption
    encoder is loaded only when a caption is given and the model reads text (text_dim not None)."""
    import numpy as np
    import torch

    from pipeline.features.video import extract_video_features

    keys = [f"{i:06d}" for i in range(len(paths))]  # sorted order == input order
    # skip, then refuse naming the files as given: the extractor's own message would call a video by its
    # internal key and point at media.on_error, a switch of the stages that recommend does not read
    _, visual, failed = extract_video_features(dict(zip(keys, paths)), cfg, on_error="skip")
    if len(failed):
        bad = "; ".join(f"{paths[int(k)]}: {r}" for k, r in zip(failed["video_id"], failed["reason"]))
        raise MediaError(f"{len(failed)} of {len(paths)} video file(s) cannot be used (replace them): {bad}")
    out = {"visual": torch.from_numpy(visual)}
    if text_dim is None:
        return out
    if any(t is not None for t in texts):
        from pipeline.features.text import extract_text_features
        _, text, mask = extract_text_features(dict(zip(keys, texts)))
    else:  # what extract_text_features gives uncaptioned videos: zero rows, mask 0
        text, mask = np.zeros((len(paths), text_dim), dtype=np.float32), np.zeros(len(paths), dtype=np.uint8)
    return {**out, "text": torch.from_numpy(text), "text_mask": torch.from_numpy(mask.astype(bool))}


def recommend(paths: Sequence[str], model_path: str | Path, video_cfg: "VideoConfig", top: int = 10,
              texts: Sequence[str | None] | None = None, features_dir: str | Path = "data/features",
              dataset_dir: str | Path = "data/dataset") -> list[dict]:
    """For each video: {"video": path, "music": [{"music_id", "score", "genre"}, ...]} best first."""
    import numpy as np

    from pipeline.inference import embed
    from pipeline.models.registry import load_model

    for p in paths:
        if not Path(p).is_file():
            raise PipelineError(f"{p}: no such video file")
    model = load_model(model_path)
    pool = music_pool(model, features_dir, dataset_dir)
    top = min(top, len(pool.music_ids))
    batch = video_features(list(paths), list(texts) if texts else [None] * len(paths), video_cfg, model.text_dim)
    z = embed(model.video_embedding, batch).numpy()
    scores, idx = pool.index.search(np.ascontiguousarray(z, dtype=np.float32), top)
    return [{"video": str(p), "music": [{"music_id": pool.music_ids[j], "score": float(s), "genre": pool.genres[j]}
                                         for s, j in zip(scores[i], idx[i])]} for i, p in enumerate(paths)]
