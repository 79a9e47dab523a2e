"""The feature-level world's genre labeller: as accurate as `world.genre_label_noise` says, wrong the way a
real labeller is, and what the genre stage passes on while the truth metric still scores the true genre."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from pipeline.data.importers import ingest
from pipeline.data.labeller import lookalike, noisy_genres
from pipeline.data.schema import GENRES
from pipeline.data.world import WorldParams, draw_music, genre_shares
from pipeline.data.worldgen import build_world
from pipeline.genre.label import GenreConfig, label_music, score_against_truth

WORLD = WorldParams(n_music=200, n_videos=1200, n_uploaders=40, n_pgc=40, n_channels=4, render=False,
                    visual_dim=16, text_dim=8, audio_dim=8, smile_dim=8)


@pytest.fixture(scope="module")
def clips():
    return draw_music(np.random.default_rng(11), 6000, genre_shares(1.0))


@pytest.mark.parametrize("noise", [0.0, 0.1, 0.25, 0.6])
def test_accuracy_is_one_minus_the_noise(clips, noise):
    label = noisy_genres(clips, noise, seed=0)
    accuracy = (label == clips.genre.to_numpy()).mean()
    assert accuracy == 1 - round(noise * len(clips)) / len(clips)
    assert set(label) <= set(GENRES)
    assert (noisy_genres(clips, noise, seed=0) == label).all()  # seeded


def test_errors_fall_on_atypical_clips_and_toward_look_alike_genres(clips):
    label = noisy_genres(clips, 0.25, seed=0)
    own = pd.Categorical(clips.genre, categories=GENRES).codes
    got = pd.Categorical(label, categories=GENRES).codes
    wrong = got != own
    like = lookalike(clips)
    p_own = like[np.arange(len(own)), own]
    # a labeller errs on clips that sound unlike their genre: measured P(own) 0.48 on errors, 0.70 elsewhere
    assert p_own[wrong].mean() < p_own[~wrong].mean() - 0.1, (p_own[wrong].mean(), p_own[~wrong].mean())
    # ... and toward the genre the clip sounds like: the wrong label's rank among the 5 wrong genres by look-alike
    # (0 = the most alike) averages 0.48 measured, 2 if the wrong genre were drawn uniformly
    other = like[wrong].copy()
    other[np.arange(wrong.sum()), own[wrong]] = -1.0
    rank = (other > other[np.arange(wrong.sum()), got[wrong]][:, None]).sum(1)
    assert rank.mean() < 1.0, rank.mean()
    confusion = pd.crosstab(clips.genre[wrong], pd.Series(label[wrong], index=clips.index[wrong]))
    # hip-hop is mistaken for jazz or pop (its neighbours in tempo and mood), not for metal
    assert confusion.loc["hiphop"].idxmax() in ("jazz", "pop", "reggae") and confusion.loc["hiphop"].get("metal", 0) < \
        confusion.loc["hiphop"].max() / 3, confusion


def test_genre_stage_ships_the_noisy_label_and_scores_it_against_the_true_genre(tmp_path):
    """What training sees (labels.parquet, one-hot of the shipped label) is the labeller's; the genre stage's
    pool_truth metric (evaluation side) compares it with truth/music_latents.parquet's true genre."""
    build_world(WORLD, tmp_path / "world")
    ingest("world", tmp_path / "world", tmp_path / "raw")
    music = pd.read_parquet(tmp_path / "raw" / "music.parquet")
    labels, metrics, _ = label_music(music, tmp_path / "raw", GenreConfig())
    assert metrics["labeller"] == "source" and (labels.labelled_by == "source").all()
    shipped = music.set_index("music_id").genre.loc[labels.music_id]
    assert (labels.genre.to_numpy() == shipped.to_numpy()).all()
    truth = score_against_truth(labels, tmp_path / "raw" / "truth" / "music_latents.parquet")
    n = len(music)
    assert truth["accuracy"] == pytest.approx(1 - round(WORLD.genre_label_noise * n) / n)
    assert WORLD.genre_label_noise == 0.25  # the default: a labeller right 3 times in 4


def test_noise_zero_ships_the_true_genre(tmp_path):
    build_world(replace(WORLD, genre_label_noise=0.0), tmp_path / "f")
    true = pd.read_parquet(tmp_path / "f" / "truth" / "music_latents.parquet").set_index("music_id").genre
    music = pd.read_parquet(tmp_path / "f" / "music.parquet").set_index("music_id")
    assert (music.genre == true.loc[music.index]).all()
