"""Linear probes on matrices whose answer is known (pipeline/features/linear_probe.py)."""
import numpy as np
import pandas as pd
import pytest

from pipeline.errors import DataError, ParamsError
from pipeline.features.linear_probe import ProbeConfig, probe_features

GENRES = ["jazz", "pop", "metal"]


def tables(rng, n_music=90, n_videos=120):
    music = pd.DataFrame({"music_id": [f"m{i}" for i in range(n_music)], "genre": [GENRES[i % 3] for i in range(n_music)],
                          "energy": rng.random(n_music), "valence": rng.random(n_music)})
    videos = pd.DataFrame({"video_id": [f"v{i}" for i in range(n_videos)], "scene": [f"s{i % 4}" for i in range(n_videos)],
                           "energy": rng.random(n_videos), "valence": rng.random(n_videos)})
    return music, videos


def test_informative_features_beat_chance_and_noise_does_not():
    rng = np.random.default_rng(0)
    music, videos = tables(rng)
    onehot = pd.get_dummies(music["genre"]).to_numpy(float)
    informative = np.c_[onehot, music["energy"], music["valence"]] + 0.05 * rng.standard_normal((90, 5))
    vid = np.c_[pd.get_dummies(videos["scene"]).to_numpy(float), videos["energy"], videos["valence"]]
    # rows in another order than the tables: the probe must align by id
    order = rng.permutation(90)
    mats = {"music_good": (informative[order], [f"m{i}" for i in order]),
            "music_noise": (rng.standard_normal((90, 5)), music["music_id"].tolist()),
            "video_visual": (vid + 0.05 * rng.standard_normal(vid.shape), videos["video_id"].tolist())}
    out = probe_features(mats, music, videos, ProbeConfig())
    assert out["music_good/genre"]["accuracy"] > 0.95 and out["music_good/genre"]["chance"] == pytest.approx(1 / 3)
    assert out["music_good/energy"]["r2"] > 0.9 and out["video_visual/valence"]["r2"] > 0.9
    assert out["video_visual/scene"]["accuracy"] > 0.95
    assert out["music_noise/genre"]["accuracy"] < 0.6 and out["music_noise/energy"]["r2"] < 0.1


def test_unknown_ids_and_bad_config_are_refused():
    rng = np.random.default_rng(1)
    music, videos = tables(rng)
    with pytest.raises(DataError, match="'m999' has no latent"):
        probe_features({"music_x": (np.zeros((1, 2)), ["m999"])}, music, videos, ProbeConfig())
    with pytest.raises(ParamsError, match="probe.folds"):
        probe_features({}, music, videos, ProbeConfig(folds=1))
