"""Read a genre-labelled audio corpus in GTZAN layout, `<root>/<genre>/<clip>.wav|au|mp3`, and validate it.

The corpus trains the genre LSTM, so a silently missing class or an unreadable clip would skew every genre
label downstream: each such problem is a DataError naming the folder or file.

GTZAN genre folders and the six genres of TT-150k-genre (schema.GENRES):

    GTZAN folder   ours
    classical   -> classical
    jazz        -> jazz
    hiphop      -> hiphop
    reggae      -> reggae
    pop         -> pop
    metal       -> metal
    blues, country, disco, rock -> ignored, with a logged warning (no counterpart among our six)
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

import pandas as pd
import soundfile as sf

from pipeline.data.schema import GENRES
from pipeline.errors import DataError, ParamsError

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".au", ".mp3")

# GTZAN's ten folder names -> our genre, or None where GTZAN has a genre we do not label.
GTZAN_TO_GENRE: dict[str, str | None] = {
    "blues": None,
    "classical": "classical",
    "country": None,
    "disco": None,
    "hiphop": "hiphop",
    "jazz": "jazz",
    "metal": "metal",
    "pop": "pop",
    "reggae": "reggae",
    "rock": None,
}


def check_labels(labels: Iterable[str]) -> tuple[str, ...]:
    """The label set, in GENRES order: a non-empty subset of GENRES without repeats."""
    labels = list(labels)
    unknown = [g for g in labels if g not in GENRES]
    if unknown:
        raise ParamsError(f"genre labels {unknown} are not genres of TT-150k-genre {GENRES}")
    if not labels or len(set(labels)) != len(labels):
        raise ParamsError(f"genre labels must be a non-empty list without repeats, got {labels}")
    return tuple(g for g in GENRES if g in labels)


def check_audio(path: Path) -> None:
    """Raise DataError unless `path` is a non-empty audio file that a decoder can open and that holds samples."""
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes); expected an audio clip")
    try:
        info = sf.info(str(path))
        frames = info.frames
    except (RuntimeError, sf.LibsndfileError) as err:
        frames = _probe_with_av(path, err)
    if frames <= 0:
        raise DataError(f"{path}: audio file holds no samples; expected a non-empty clip")


def _probe_with_av(path: Path, first_error: Exception) -> int:
    """Fallback for files libsndfile cannot open (some .au/.mp3 encodings): decode the first audio packet."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise DataError(f"{path}: no audio stream; expected an audio clip")
            for frame in container.decode(audio=0):
                if frame.samples > 0:
                    return frame.samples
        return 0
    except DataError:
        raise
    except Exception as err:  # PyAV raises many error types for corrupt input
        raise DataError(f"{path}: unreadable audio ({first_error}; {err})") from err


def read_corpus(
    root: str | Path,
    labels: Iterable[str] = GENRES,
    min_per_class: int = 1,
) -> pd.DataFrame:
    """Every clip of the labelled corpus as a table (path, genre), sorted by path.

    `labels` is the label set to train on, a subset of GENRES: each of its genres must have a folder with at
    least `min_per_class` readable clips. Folders of GTZAN genres we do not label, and of our genres outside
    `labels`, are skipped with a warning; any other folder name is an error (likely a typo that would
    silently drop a class). Files at the root, hidden entries and non-audio files inside a genre folder
    (e.g. GTZAN's `.mf` lists) are skipped.
    """
    root = Path(root)
    labels = check_labels(labels)
    if min_per_class < 1:
        raise ParamsError(f"genre corpus min_per_class must be >= 1, got {min_per_class}")
    if not root.is_dir():
        raise DataError(f"{root}: genre corpus root folder does not exist; expected <root>/<genre>/<clip>.wav")
    folders = {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")}
    known = set(GENRES) | set(GTZAN_TO_GENRE)
    for name in folders:
        if name not in known:
            raise DataError(
                f"{root / name}: folder name {name!r} is not a known genre; expected one of {GENRES} "
                f"(or a GTZAN genre, which is ignored: {sorted(k for k, v in GTZAN_TO_GENRE.items() if v is None)})"
            )
        if name not in labels:
            why = "a GTZAN genre with no counterpart among ours" if name not in GENRES else "not in the label set"
            log.warning("%s: ignored (%s; labels %s)", root / name, why, labels)
    rows = []
    for genre in labels:
        folder = root / genre
        if genre not in folders:
            raise DataError(f"{folder}: missing genre folder; every genre of the label set {labels} must be present")
        clips = [
            p for p in sorted(folder.iterdir())
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in AUDIO_EXTENSIONS
        ]
        if not clips:
            raise DataError(
                f"{folder}: no audio clips ({'/'.join(AUDIO_EXTENSIONS)}); expected at least {min_per_class}"
            )
        if len(clips) < min_per_class:
            raise DataError(f"{folder}: {len(clips)} clip(s), expected at least min_per_class={min_per_class}")
        for clip in clips:
            check_audio(clip)
            rows.append((str(clip), genre))
    table = pd.DataFrame(rows, columns=["path", "genre"]).sort_values("path", kind="stable").reset_index(drop=True)
    log.info("genre corpus %s: %d clips, %s", root, len(table), table["genre"].value_counts().to_dict())
    return table
