"""A second genre labeller: musicnn tag probabilities -> the six TT-150k-genre genres, by a fixed tag table.

It needs no labelled corpus, so it cross-checks the LSTM; but the tag vocabularies cover only some of our
genres, and the ones they cannot name are reported as `unmappable` instead of being guessed.
"""
from __future__ import annotations

import functools
import importlib.util
import logging
from dataclasses import dataclass

import numpy as np

from pipeline.data.schema import GENRES
from pipeline.errors import DataError, ParamsError

log = logging.getLogger(__name__)

# Output order of musicnn's taggers (musicnn/configuration.py, MSD_LABELS and MTT_LABELS): the top-50 tags of
# the Million Song Dataset (MSD_musicnn, MSD_musicnn_big, MSD_vgg) and of MagnaTagATune (MTT_musicnn, MTT_vgg).
MSD_TAGS: tuple[str, ...] = (
    "rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s", "alternative rock",
    "jazz", "beautiful", "metal", "chillout", "male vocalists", "classic rock", "soul", "indie rock", "Mellow",
    "electronica", "80s", "folk", "90s", "chill", "instrumental", "punk", "oldies", "blues", "hard rock",
    "ambient", "acoustic", "experimental", "female vocalist", "guitar", "Hip-Hop", "70s", "party", "country",
    "easy listening", "sexy", "catchy", "funk", "electro", "heavy metal", "Progressive rock", "60s", "rnb",
    "indie pop", "sad", "House", "happy",
)
MTT_TAGS: tuple[str, ...] = (
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast", "piano",
    "ambient", "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male", "singing", "vocals",
    "no vocals", "harpsichord", "loud", "quiet", "flute", "woman", "male vocal", "no vocal", "pop", "soft",
    "sitar", "solo", "man", "classic", "choir", "voice", "new age", "dance", "male voice", "female vocal",
    "beats", "harp", "cello", "no voice", "weird", "country", "metal", "female voice", "choral",
)
VOCABULARIES: dict[str, tuple[str, ...]] = {"msd": MSD_TAGS, "mtt": MTT_TAGS}
MODEL_VOCABULARY: dict[str, str] = {
    "MSD_musicnn": "msd", "MSD_musicnn_big": "msd", "MSD_vgg": "msd", "MTT_musicnn": "mtt", "MTT_vgg": "mtt",
}

# Tag -> genre. Only tags that name one of our genres or a sub-genre/form of it are mapped; mood, era,
# instrument and voice tags say nothing reliable about genre and are left out.
#   msd: 'rnb' goes to hiphop (charts and TikTok's own categories group hip-hop with R&B);
#        no MSD top-50 tag names classical or reggae.
#   mtt: 'classic' is MagnaTagATune's synonym of classical; opera, choral, choir and harpsichord are
#        classical forms/instruments in that (Magnatune) catalogue; no MTT top-50 tag names jazz, hiphop
#        or reggae.
TAG_TO_GENRE: dict[str, dict[str, str]] = {
    "msd": {
        "jazz": "jazz",
        "Hip-Hop": "hiphop", "rnb": "hiphop",
        "pop": "pop", "indie pop": "pop",
        "metal": "metal", "heavy metal": "metal",
    },
    "mtt": {
        "classical": "classical", "classic": "classical", "opera": "classical", "choral": "classical",
        "choir": "classical", "harpsichord": "classical",
        "pop": "pop",
        "metal": "metal",
    },
}


def vocabulary_name(name: str) -> str:
    """'msd' or 'mtt' from a vocabulary name or a musicnn model name (e.g. 'MSD_vgg')."""
    key = MODEL_VOCABULARY.get(name, name.lower())
    if key not in VOCABULARIES:
        raise ParamsError(f"unknown tag vocabulary {name!r}; expected one of {sorted(VOCABULARIES)} "
                          f"or a musicnn model {sorted(MODEL_VOCABULARY)}")
    check_against_musicnn()
    return key


@functools.lru_cache(maxsize=1)
def check_against_musicnn() -> bool:
    """Compare the constants with musicnn's own lists when musicnn is installed (True: verified)."""
    if importlib.util.find_spec("musicnn") is None:
        log.debug("musicnn not installed: using the built-in MSD/MTT tag lists")
        return False
    from musicnn import configuration  # plain constants; does not import TensorFlow

    for key, theirs in (("msd", configuration.MSD_LABELS), ("mtt", configuration.MTT_LABELS)):
        if tuple(theirs) != VOCABULARIES[key]:
            raise DataError(f"musicnn.configuration {key.upper()}_LABELS differs from pipeline.genre.tags "
                            f"{key.upper()}_TAGS; the tag order of the installed musicnn is not the one mapped here")
    return True


def mapping_matrix(vocabulary: str) -> np.ndarray:
    """[n_tags, 6] 0/1 matrix: M[t, g] = 1 when tag t maps to genre g."""
    key = vocabulary_name(vocabulary)
    tags = VOCABULARIES[key]
    matrix = np.zeros((len(tags), len(GENRES)), dtype=np.float64)
    for tag, genre in TAG_TO_GENRE[key].items():
        matrix[tags.index(tag), GENRES.index(genre)] = 1.0
    return matrix


def unmappable_genres(vocabulary: str) -> tuple[str, ...]:
    """Genres no tag of the vocabulary maps to: their probability is always 0 from this labeller."""
    covered = mapping_matrix(vocabulary).any(axis=0)
    return tuple(g for g, c in zip(GENRES, covered) if not c)


@dataclass(frozen=True)
class TagGenres:
    proba: np.ndarray  # [N, 6] float32, rows sum to 1 over the mappable genres, 0 on unmappable ones
    evidence: np.ndarray  # [N] float32 sum of genre scores before renormalising; 0: no mapped tag fired
    unmappable: tuple[str, ...]  # genres this vocabulary cannot name (always probability 0)


def tags_to_genres(tag_proba: np.ndarray, vocabulary: str = "msd") -> TagGenres:
    """Genre probabilities from musicnn tag probabilities [N, n_tags] (columns in the vocabulary's order).

    musicnn's outputs are independent sigmoids, so a genre's score is the noisy-OR of its tags,
    s_g = 1 - prod_{t -> g} (1 - p_t) (the chance that at least one of them applies; unlike a sum it does
    not favour genres with more tags), then s is renormalised over the mappable genres. A clip on which no
    mapped tag fires (all s_g = 0) gets the uniform distribution over the mappable genres and evidence 0.
    """
    key = vocabulary_name(vocabulary)
    n_tags = len(VOCABULARIES[key])
    tag_proba = np.asarray(tag_proba, dtype=np.float64)
    if tag_proba.ndim != 2:
        raise DataError(f"musicnn tag probabilities: expected a matrix [clips, {n_tags}], got shape {tag_proba.shape}")
    if tag_proba.shape[1] != n_tags:
        raise DataError(f"musicnn tag probabilities: width {tag_proba.shape[1]} does not match the {key.upper()} "
                        f"vocabulary ({n_tags} tags); expected one column per tag in musicnn's output order")
    valid = np.isfinite(tag_proba).all(axis=1) & ((tag_proba >= 0) & (tag_proba <= 1)).all(axis=1)
    if not valid.all():
        raise DataError(f"musicnn tag probabilities row {int(np.flatnonzero(~valid)[0])}: "
                        "values must be finite probabilities in [0, 1]")
    matrix = mapping_matrix(key)
    # noisy-OR via logs: log prod (1 - p) = sum log(1 - p) over the genre's tags
    log_none = np.log1p(-np.minimum(tag_proba, 1 - 1e-12)) @ matrix
    scores = np.where(matrix.any(axis=0), -np.expm1(log_none), 0.0)
    evidence = scores.sum(axis=1)
    mappable = matrix.any(axis=0).astype(np.float64)
    uniform = mappable / mappable.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        proba = np.where(evidence[:, None] > 0, scores / evidence[:, None], uniform)
    return TagGenres(proba.astype(np.float32), evidence.astype(np.float32), unmappable_genres(key))
