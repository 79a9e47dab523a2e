"""Caption features: real multilingual embeddings, and missing captions recorded as a mask."""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import DataError, ParamsError
from pipeline.features.text import MODEL_FILES, TEXT_DIM, extract_text_features, packaged_model_dir

# Three meanings, each in English, Spanish and Chinese.
CAPTIONS = {
    "beach_en": "a dog runs along the beach at sunset",
    "beach_es": "un perro corre por la playa al atardecer",
    "beach_zh": "日落时一只狗沿着海滩奔跑",
    "market_en": "the stock market fell sharply today",
    "market_es": "la bolsa cayó bruscamente hoy",
    "market_zh": "今天股市大幅下跌",
    "party_en": "a party with loud music and dancing all night",
    "party_es": "una fiesta con música alta y baile toda la noche",
    "party_zh": "一个有大声音乐和通宵跳舞的派对",
}


def test_same_meaning_across_languages_is_closer_than_other_meanings():
    ids, features, mask = extract_text_features(CAPTIONS)
    assert ids == sorted(CAPTIONS)
    assert features.shape == (9, TEXT_DIM) and features.dtype == np.float32
    assert mask.dtype == np.uint8 and mask.tolist() == [1] * 9
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-5)
    cosine = features @ features.T
    topic = np.array([i.split("_")[0] for i in ids])
    same = topic[:, None] == topic[None, :]
    off_diagonal = ~np.eye(len(ids), dtype=bool)
    # every translation pair beats every unrelated pair, and by a wide margin on average
    assert cosine[same & off_diagonal].min() > cosine[~same].max()
    assert cosine[same & off_diagonal].mean() - cosine[~same].mean() > 0.4


def test_missing_captions_are_masked_not_embedded():
    texts = {"b": "   ", "a": "a cat sleeps on the sofa", "c": None, "d": float("nan"), "e": "", "f": pd.NA}
    ids, features, mask = extract_text_features(texts)
    assert ids == ["a", "b", "c", "d", "e", "f"]
    assert mask.tolist() == [1, 0, 0, 0, 0, 0]
    assert not features[1:].any()  # "ignore where mask is 0": zero rows, flagged by the mask
    assert np.isfinite(features).all()
    # a caption embeds the same alone, with surrounding whitespace, or in a batch with missing ones
    alone = extract_text_features({"x": "  a cat sleeps on the sofa\n"})[1][0]
    np.testing.assert_allclose(features[0], alone, atol=1e-6)


def test_batching_does_not_change_embeddings():
    full = extract_text_features(CAPTIONS)[1]
    small = extract_text_features(CAPTIONS, batch_size=2)[1]
    np.testing.assert_allclose(full, small, atol=1e-5)
    again = extract_text_features(CAPTIONS)[1]
    assert full.tobytes() == again.tobytes()


def test_model_from_a_local_directory(tmp_path):
    for name in MODEL_FILES:
        shutil.copy(packaged_model_dir() / name, tmp_path / name)
    local = extract_text_features({"a": "hola mundo"}, model_dir=str(tmp_path))[1]
    packaged = extract_text_features({"a": "hola mundo"})[1]
    np.testing.assert_array_equal(local, packaged)
    (tmp_path / "weights.npz").unlink()
    with pytest.raises(ParamsError, match="weights.npz does not exist"):
        extract_text_features({"a": "x"}, model_dir=str(tmp_path))


def test_bad_input_names_the_video():
    with pytest.raises(DataError, match="caption of video 'v7': expected a string or None, got int"):
        extract_text_features({"v7": 42})
    ids, features, mask = extract_text_features({})
    assert ids == [] and features.shape == (0, TEXT_DIM) and mask.shape == (0,)
