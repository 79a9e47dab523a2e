"""A small synthetic UGC/PGC world for the sampling tests: ~600 videos, 40 music with genres, 30 uploaders
with concentrated genre tastes, long-tailed music popularity, rhythm scores."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.data.schema import GENRES

# 40 music: classical 10, jazz 8, hiphop 8, reggae 6, pop 5, metal 3.
GENRE_OF_MUSIC = ["classical"] * 10 + ["jazz"] * 8 + ["hiphop"] * 8 + ["reggae"] * 6 + ["pop"] * 5 + ["metal"] * 3


def make_world(seed: int = 7, n_videos: int = 600, n_uploaders: int = 30, n_pgc: int = 40):
    """videos, pairs, music_genres, rhythm tables in the canonical layout (ids deliberately unsorted)."""
    rng = np.random.default_rng(seed)
    n_music = len(GENRE_OF_MUSIC)
    music_ids = [f"m{i:03d}" for i in range(n_music)]
    genre_code = np.array([GENRES.index(g) for g in GENRE_OF_MUSIC])
    pop = rng.gamma(0.8, 1.0, n_music) + 0.05
    tastes = rng.dirichlet(np.full(len(GENRES), 0.5), n_uploaders)
    tastes[:3] = 1.0 / len(GENRES)  # three uploaders with a uniform taste: the most diverse
    owner = np.concatenate([np.arange(n_uploaders), rng.integers(0, n_uploaders, n_videos - n_uploaders)])
    # Every music gets 3 videos first (TT-150k's minimum), the rest follow pop(m) * taste_u(g_m).
    music = np.concatenate([np.repeat(np.arange(n_music), 3), np.zeros(n_videos - 3 * n_music, dtype=int)])
    for i in range(3 * n_music, n_videos):
        p = pop * tastes[owner[i], genre_code]
        music[i] = rng.choice(n_music, p=p / p.sum())
    video_ids = [f"v{i:04d}" for i in rng.permutation(n_videos)]
    videos = pd.DataFrame({"video_id": video_ids, "uploader_id": [f"u{o:02d}" for o in owner], "kind": "ugc",
                           "path": None, "text": None, "popularity": rng.lognormal(5, 1.5, n_videos).round()})
    pairs = pd.DataFrame({"video_id": video_ids, "music_id": [music_ids[m] for m in music], "kind": "ugc"})
    pgc_ids = [f"p{i:03d}" for i in range(n_pgc)]
    videos = pd.concat([videos, pd.DataFrame({"video_id": pgc_ids, "uploader_id": None, "kind": "pgc", "path": None,
                                              "text": None, "popularity": np.nan})], ignore_index=True)
    pairs = pd.concat([pairs, pd.DataFrame({"video_id": pgc_ids, "kind": "pgc",
                                            "music_id": [music_ids[m] for m in rng.integers(0, n_music, n_pgc)]})],
                      ignore_index=True)
    music_genres = pd.DataFrame({"music_id": music_ids, "genre": GENRE_OF_MUSIC}).iloc[rng.permutation(n_music)]
    rhythm = pd.DataFrame({"video_id": video_ids, "score": rng.random(n_videos)})
    return videos, pairs, music_genres.reset_index(drop=True), rhythm


@pytest.fixture(scope="session")
def world():
    return make_world()
