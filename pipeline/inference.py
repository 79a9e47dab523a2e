"""Inference embeddings through the common model surface: what evaluation, reports and `recommend` rank with.

Every model exposes video_embedding / music_embedding (its inference-time vectors, e.g. z = mu) and scores a
video against a music clip by their dot product; these helpers run them in eval mode, in chunks.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from pipeline.data.features import Features
from pipeline.errors import DataError


@torch.no_grad()
def embed(fn: Callable, batch: Mapping[str, torch.Tensor], chunk: int = 8192) -> torch.Tensor:
    """Inference embeddings (model.video_embedding / music_embedding) of every row, in chunks."""
    n = next(iter(batch.values())).shape[0]
    return torch.cat([fn({k: v[s:s + chunk] for k, v in batch.items()}) for s in range(0, n, chunk)])


@contextlib.contextmanager
def eval_mode(model):
    """The model in eval mode (no dropout, posterior means) for the block, its own mode restored after."""
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def model_device(model) -> torch.device:
    """The device of a model's first parameter (or buffer: the closed-form models have only buffers); cpu for
    a model with neither. The one such helper (the calibration re-ranking uses it too)."""
    first = next(iter(model.parameters()), None)
    if first is None:
        first = next(iter(model.buffers()), None)
    return first.device if first is not None else torch.device("cpu")


def pool_embedding(model, features: Features, music_ids: Sequence[str], music_genre: np.ndarray) -> torch.Tensor:
    """Inference embedding of each music clip of `music_ids` (rows in that order), on the model's device;
    `music_genre` [M, G] are the genre probabilities g(m) that DebCM's music side reads."""
    device = model_device(model)
    rows = features.music_rows(music_ids, "pool music")
    return embed(model.music_embedding, {"music": features.music[rows].to(device),
                                         "music_genre": torch.as_tensor(music_genre, dtype=torch.float32,
                                                                        device=device)})


def video_embedding(model, features: Features, video_ids: Sequence[str], what: str,
                    uploader_dist: np.ndarray | None = None) -> torch.Tensor:
    """Inference embedding of these videos (PoE of visual and, where present, text) on the model's device.
    `uploader_dist` [N, G]: each video's uploader genre distribution, for models that read it at inference
    (the calibration baseline); the others ignore the key."""
    device = model_device(model)
    rows = features.video_rows(list(video_ids), what)
    batch = features.video_batch(rows)
    if uploader_dist is not None:
        batch["uploader_dist"] = torch.as_tensor(np.asarray(uploader_dist), dtype=torch.float32)
    return embed(model.video_embedding, {k: v.to(device) for k, v in batch.items()})


@torch.no_grad()
def top_music(model, features: Features, video_ids: Sequence[str], music_ids: Sequence[str],
              music_genre: np.ndarray, k: int, uploader_dist: np.ndarray | None = None,
              with_scores: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """[N, k] indices into `music_ids` of each video's k best-scored music, best first (ties: lower index);
    with_scores: also their [N, k] scores."""
    if not 0 < k <= len(music_ids):
        raise DataError(f"top_music: k={k}, expected 1..{len(music_ids)} (the pool size)")
    with eval_mode(model):
        scores = model.score(video_embedding(model, features, video_ids, "top_music videos", uploader_dist),
                             pool_embedding(model, features, music_ids, music_genre))
        ranked = torch.sort(scores, dim=1, descending=True, stable=True)
    order = ranked.indices[:, :k].cpu().numpy().astype(np.int64)
    return (order, ranked.values[:, :k].cpu().numpy().astype(np.float64)) if with_scores else order
