"""Captions of simulated videos: templates in four languages that mention the scene and the mood."""
from __future__ import annotations

import numpy as np
import pandas as pd

LANGUAGES = ("en", "es", "fr", "zh")

SCENE_WORDS = {
    "en": {"beach": "at the beach", "city": "in the city", "party": "party night", "sport": "game day",
           "nature": "out in nature", "food": "cooking dinner"},
    "es": {"beach": "en la playa", "city": "en la ciudad", "party": "noche de fiesta", "sport": "día de partido",
           "nature": "en la naturaleza", "food": "cocinando la cena"},
    "fr": {"beach": "à la plage", "city": "en ville", "party": "soirée entre amis", "sport": "jour de match",
           "nature": "dans la nature", "food": "on cuisine ce soir"},
    "zh": {"beach": "在海边", "city": "城市街头", "party": "派对之夜", "sport": "比赛日",
           "nature": "走进大自然", "food": "做晚饭"},
}
# mood words indexed by (energy high?, valence high?)
MOOD_WORDS = {
    "en": {(0, 0): "quiet and a bit sad", (0, 1): "calm and happy", (1, 0): "intense and dark",
           (1, 1): "so much fun and energy"},
    "es": {(0, 0): "tranquilo y un poco triste", (0, 1): "tranquilo y feliz", (1, 0): "intenso y oscuro",
           (1, 1): "mucha diversión y energía"},
    "fr": {(0, 0): "calme et un peu triste", (0, 1): "calme et heureux", (1, 0): "intense et sombre",
           (1, 1): "plein d'énergie et de joie"},
    "zh": {(0, 0): "安静又有点伤感", (0, 1): "平静而快乐", (1, 0): "紧张又阴郁", (1, 1): "超级开心充满活力"},
}
TAGS = ("#vlog", "#fyp", "#daily", "#weekend", "#friends", "")


def captions(rng: np.random.Generator, videos: pd.DataFrame, language: np.ndarray, missing: float) -> list:
    """One caption per video in the video's language, or None (a share `missing` has no caption)."""
    out: list[str | None] = []
    absent = rng.random(len(videos)) < missing
    tag = rng.integers(0, len(TAGS), len(videos))
    for i, row in enumerate(videos.itertuples(index=False)):
        if absent[i]:
            out.append(None)
            continue
        lang = language[i]
        mood = MOOD_WORDS[lang][(int(row.energy > 0.5), int(row.valence > 0.5))]
        text = f"{SCENE_WORDS[lang][row.scene]}, {mood} {TAGS[tag[i]]}".strip()
        out.append(text)
    return out
