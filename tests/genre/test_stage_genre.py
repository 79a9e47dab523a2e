"""pipeline/genre/label.py: a corpus too small for the held-out split is refused before any audio is decoded."""
import pandas as pd
import pytest

from pipeline.data.schema import GENRES
from pipeline.errors import DataError
from pipeline.genre.label import GenreConfig, lstm_labeller


@pytest.mark.parametrize("per_genre", [1, 2])
def test_too_small_corpus_is_a_data_error_naming_the_corpus(per_genre):
    corpus = pd.DataFrame({"path": [f"/nowhere/{g}/{i}.wav" for g in GENRES for i in range(per_genre)],
                           "genre": [g for g in GENRES for _ in range(per_genre)]})
    p = GenreConfig(corpus="my/gtzan")
    with pytest.raises(DataError, match=r"my/gtzan: \d+ clips in 6 genres are too few"):
        lstm_labeller(p, corpus, [])  # the paths do not exist: the check must come before decoding
