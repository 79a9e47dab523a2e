"""Latent variables of the simulated world: the columns the simulator writes and the renderer reads.

music latents (one row per music clip, also for the genre corpus):
    music_id str, genre str (in GENRES), tempo float (BPM), energy float in [0, 1],
    valence float in [0, 1], render_seed int64
video latents (one row per video, UGC and PGC):
    video_id str, scene str (in SCENES), energy float in [0, 1], valence float in [0, 1],
    motion_tempo float (BPM of the visual beat), render_seed int64
"""
from __future__ import annotations

from pipeline.data.schema import GENRES

SCENES: tuple[str, ...] = ("beach", "city", "party", "sport", "nature", "food")

MUSIC_LATENTS = ("music_id", "genre", "tempo", "energy", "valence", "render_seed")
VIDEO_LATENTS = ("video_id", "scene", "energy", "valence", "motion_tempo", "render_seed")

# Typical tempo range (BPM) of each genre; the world draws a clip's tempo inside its genre's range.
GENRE_TEMPO: dict[str, tuple[float, float]] = {
    "classical": (60.0, 100.0),
    "jazz": (90.0, 140.0),
    "hiphop": (80.0, 100.0),
    "reggae": (65.0, 85.0),
    "pop": (100.0, 130.0),
    "metal": (130.0, 180.0),
}
assert set(GENRE_TEMPO) == set(GENRES)
