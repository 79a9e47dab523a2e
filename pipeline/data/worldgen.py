"""Write a simulated world as a source directory in the canonical layout, with its truth beside it.

```
<out>/videos.parquet music.parquet pairs.parquet summary.json
<out>/media/{music,video}/...       (render: true)
<out>/genre_corpus/<genre>/*.wav    (render: true; GTZAN layout, for the genre stage)
<out>/features/*.npy + ids          (render: false; feature-level world)
<out>/truth/                        latents, tastes, compatibility: evaluation only
```
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.data import captions as cap
from pipeline.data import world as W
from pipeline.data.labeller import noisy_genres
from pipeline.data.schema import GENRES, MUSIC_IDS_FILE, VIDEO_IDS_FILE, validate_tables
from pipeline.io import atomic_dir, atomic_path, write_ids, write_json, write_parquet

log = logging.getLogger(__name__)

TRUTH = "truth"


def video_popularity(rng: np.random.Generator, compat_of_choice: np.ndarray) -> np.ndarray:
    """Views: log-normal, higher when the chosen music fits the video (what T_matching relies on)."""
    z = (compat_of_choice - compat_of_choice.mean()) / (compat_of_choice.std() + 1e-9)
    return np.round(np.exp(6.0 + 1.2 * rng.standard_normal(len(z)) + 0.8 * z)).astype(np.int64)


def tables(p: W.WorldParams, sim: dict) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The canonical videos / music / pairs tables and the all-videos latent table (sorted by id)."""
    rng = np.random.default_rng([p.seed, 1])
    music, ugc, pgc = sim["music"], sim["ugc"].copy(), sim["pgc"].copy()
    ugc["kind"], pgc["kind"] = "ugc", "pgc"
    ugc["uploader_id"] = sim["uploader_ids"][sim["owner"]]
    pgc["uploader_id"] = sim["channel_ids"][sim["channel"]]
    ugc["music_id"] = music["music_id"].to_numpy()[sim["ugc_choice"]]
    pgc["music_id"] = music["music_id"].to_numpy()[sim["pgc_choice"]]
    n_lang = len(cap.LANGUAGES)
    up_lang = np.array(cap.LANGUAGES)[rng.integers(0, n_lang, len(sim["uploader_ids"]))]
    ch_lang = np.array(cap.LANGUAGES)[rng.integers(0, n_lang, len(sim["channel_ids"]))]
    ugc["language"] = up_lang[sim["owner"]]
    pgc["language"] = ch_lang[sim["channel"]]
    latents = pd.concat([ugc, pgc], ignore_index=True).sort_values("video_id", kind="stable")
    latents = latents.reset_index(drop=True)
    latents["text"] = cap.captions(rng, latents, latents["language"].to_numpy(), p.caption_missing)
    compat_choice = np.concatenate([
        sim["pgc_compat"][np.arange(len(pgc)), sim["pgc_choice"]],
        sim["ugc_compat"][np.arange(len(ugc)), sim["pool"][sim["ugc_choice"]]],
    ]).astype(np.float64)
    assert latents["video_id"].tolist() == pgc["video_id"].tolist() + ugc["video_id"].tolist()
    latents["popularity"] = video_popularity(rng, compat_choice)

    videos = latents[["video_id", "uploader_id", "kind"]].copy()
    videos["path"] = None if not p.render else "media/video/" + latents["video_id"] + ".mp4"
    videos["text"] = latents["text"]
    videos["popularity"] = latents["popularity"].astype("float64")
    pairs = latents[["video_id", "music_id", "kind"]].copy()
    uses = pairs[pairs["kind"] == "ugc"]["music_id"].value_counts()
    mus = music[["music_id"]].copy()
    mus["path"] = None if not p.render else "media/music/" + music["music_id"] + ".wav"
    mus["popularity"] = mus["music_id"].map(uses).fillna(0).astype("int64")
    # A feature-level world stands in for a release that ships genre labels (as TT-150k-genre does), made by a
    # labeller that errs (labeller.py); a rendered world leaves genre to the genre stage, which
    # must infer it from the audio. The true genre stays in truth/ for evaluation.
    mus["genre"] = None if p.render else noisy_genres(music, p.genre_label_noise, p.seed)
    mus["genre"] = mus["genre"].astype("object")
    return videos, mus, pairs, latents


def write_truth(out: Path, p: W.WorldParams, sim: dict, latents: pd.DataFrame) -> None:
    """Latents, tastes and compatibility of every video to every music clip (float16, sorted ids)."""
    t = out / TRUTH
    t.mkdir(parents=True)
    music = sim["music"]
    write_parquet(music, t / "music_latents.parquet")
    write_parquet(latents.drop(columns=["text"]), t / "video_latents.parquet")
    ups = pd.DataFrame({
        "uploader_id": np.concatenate([sim["uploader_ids"], sim["channel_ids"]]),
        "kind": ["ugc"] * len(sim["uploader_ids"]) + ["pgc"] * len(sim["channel_ids"]),
        "taste": list(np.vstack([sim["tastes"], sim["channel_tastes"]])),
    })
    write_parquet(ups, t / "uploaders.parquet")
    write_ids(latents["video_id"], t / VIDEO_IDS_FILE)
    write_ids(music["music_id"], t / MUSIC_IDS_FILE)
    # rows in sorted video-id order: PGC ids ("p...") sort before UGC ids ("v...")
    n_pgc = len(sim["pgc_compat"])
    with atomic_path(t / "compatibility.npy") as tmp:
        mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(len(latents), len(music)))
        mm[:n_pgc] = sim["pgc_compat"]
        for s in range(0, len(sim["ugc_compat"]), 8192):
            mm[n_pgc + s : n_pgc + s + 8192] = sim["ugc_compat"][s : s + 8192][:, sim["pool"]]
        mm.flush()
        del mm
    write_json({"params": W.params_dict(p), "genres": list(GENRES), "affinity": W.AFFINITY.tolist(),
                "scenes": list(W.SCENES)}, t / "world.json")


def summary(videos: pd.DataFrame, music: pd.DataFrame) -> dict:
    pop = music["popularity"]
    return {
        "n_music": int(len(music)), "n_ugc": int((videos["kind"] == "ugc").sum()),
        "n_pgc": int((videos["kind"] == "pgc").sum()), "n_uploaders": int(videos.loc[videos["kind"] == "ugc",
                                                                                      "uploader_id"].nunique()),
        "videos_per_music": {"min": int(pop.min()), "max": int(pop.max()), "mean": round(float(pop.mean()), 2),
                             "std": round(float(pop.std()), 2)},
        "caption_missing": round(float(videos["text"].isna().mean()), 4),
    }


def build_world(p: W.WorldParams, out: Path) -> dict:
    """Simulate, then write the source directory atomically; returns the summary."""
    log.info("simulating world: %d music, %d UGC videos, %d PGC", p.n_music, p.n_videos, p.n_pgc)
    sim = W.simulate(p)
    videos, music, pairs, latents = tables(p, sim)
    validate_tables(videos, music, pairs, where=str(out))
    with atomic_dir(out) as tmp:
        write_parquet(videos, tmp / "videos.parquet")
        write_parquet(music, tmp / "music.parquet")
        write_parquet(pairs, tmp / "pairs.parquet")
        write_truth(tmp, p, sim, latents)
        if p.render:
            _render(p, sim, latents, tmp)
        else:
            _features(p, latents, music, sim, tmp)
        info = summary(videos, music)
        write_json(info, tmp / "summary.json")
    return info


def write_not_built(out: Path, reason: str) -> dict:
    """A placeholder world (only summary.json) for a pipeline whose source is not the world; atomic."""
    info = {"built": False, "reason": reason}
    log.info("world not built: %s", reason)
    with atomic_dir(out) as tmp:
        write_json(info, tmp / "summary.json")
    return info


def _features(p: W.WorldParams, latents: pd.DataFrame, music: pd.DataFrame, sim: dict, out: Path) -> None:
    from pipeline.data.simfeatures import write_features

    f = out / "features"
    f.mkdir()
    mus_lat = sim["music"].set_index("music_id").loc[music["music_id"]].reset_index()
    mask = latents["text"].notna().to_numpy().astype(np.uint8)
    dims = {"visual": p.visual_dim, "text": p.text_dim, "audio": p.audio_dim, "smile": p.smile_dim}
    write_features(f, latents, mask, latents["language"].to_numpy(), mus_lat, dims, p.seed, p.pgc_domain_shift)
    write_ids(latents["video_id"], f / VIDEO_IDS_FILE)
    write_ids(music["music_id"], f / MUSIC_IDS_FILE)


def _render(p: W.WorldParams, sim: dict, latents: pd.DataFrame, out: Path) -> None:
    from pipeline.data.render import RenderSpec, render_all

    spec = RenderSpec(sample_rate=p.sample_rate, music_seconds=p.music_seconds, video_seconds=p.video_seconds,
                      video_fps=p.video_fps, video_size=p.video_size)
    render_all(sim["music"], latents, out / "media", spec, workers=p.workers)
    corpus = sim["corpus"]
    for genre in GENRES:
        rows = corpus[corpus["genre"] == genre]
        render_all(rows, latents.iloc[:0], out / "genre_corpus", spec, workers=p.workers,
                   music_subdir=genre)
