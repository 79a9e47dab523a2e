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

from pipeline.errors import PipelineError

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


def music_pool(model, features_dir: str | Path, dataset_dir: str | Path) -> Pool:
    """The dataset's UGC ranking pool embedded by the model, each clip with its genre label."""
    import faiss
    import numpy as np

    from pipeline.data.features import load_features
    from pipeline.inference import pool_embedding
    from pipeline.sampling.dataset import load_dataset

    features, dataset = load_features(features_dir), load_dataset(dataset_dir)
    pool = np.flatnonzero(dataset.pool_mask())
    music_ids = [dataset.music_ids[i] for i in pool]
    z = pool_embedding(model, features, music_ids, dataset.genre_matrix()[pool]).cpu().numpy()
    index = faiss.IndexFlatIP(z.shape[1])  # exact: the model's score is the inner product of embeddings
    index.add(np.ascontiguousarray(z, dtype=np.float32))
    labels = dataset.music.set_index("music_id")["genre"] if dataset.music is not None else \
        dataset.ugc.drop_duplicates("music_id").set_index("music_id")["genre"]
    genres = [g if isinstance(g, str) else "unlabelled" for g in labels.reindex(music_ids)]
    return Pool(music_ids, genres, index)


def video_features(paths: Sequence[str], texts: Sequence[str | None], cfg: "VideoConfig") -> dict[str, "torch.Tensor"]:
    """Visual (and caption) features of the given files with the extract stages' extractors."""
    import torch

    from pipeline.features.text import extract_text_features
    from pipeline.features.video import extract_video_features

    keys = [f"{i:06d}" for i in range(len(paths))]  # sorted order == input order
    _, visual, _ = extract_video_features(dict(zip(keys, paths)), cfg, on_error="fail")
    _, text, mask = extract_text_features(dict(zip(keys, texts)))
    return {"visual": torch.from_numpy(visual), "text": torch.from_numpy(text),
            "text_mask": torch.from_numpy(mask.astype(bool))}


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
    batch = video_features(list(paths), list(texts) if texts else [None] * len(paths), video_cfg)
    if model.text_dim is None:
        batch = {"visual": batch["visual"]}
    z = embed(model.video_embedding, batch).numpy()
    scores, idx = pool.index.search(np.ascontiguousarray(z, dtype=np.float32), top)
    return [{"video": str(p), "music": [{"music_id": pool.music_ids[j], "score": float(s), "genre": pool.genres[j]}
                                         for s, j in zip(scores[i], idx[i])]} for i, p in enumerate(paths)]
