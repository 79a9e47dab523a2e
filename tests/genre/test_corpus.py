import logging
import shutil

import numpy as np
import pytest
import soundfile as sf

from pipeline.data.schema import GENRES
from pipeline.errors import DataError, ParamsError
from pipeline.genre.corpus import read_corpus

from .conftest import SR, synth_clip, write_corpus


@pytest.fixture
def small(tmp_path):
    """Two half-second clips per genre."""
    return write_corpus(tmp_path / "corpus", per_class=2, seed=0, seconds=0.5)


def test_reads_every_clip_sorted_by_path(train_corpus):
    table = read_corpus(train_corpus, min_per_class=8)
    assert list(table.columns) == ["path", "genre"]
    assert len(table) == 8 * len(GENRES)
    assert table["path"].tolist() == sorted(table["path"])
    assert table["genre"].value_counts().to_dict() == {g: 8 for g in GENRES}
    # the label is the folder name
    assert all(p.split("/")[-2] == g for p, g in zip(table["path"], table["genre"]))


def test_gtzan_extra_genres_and_non_audio_files_are_skipped(small, caplog):
    (small / "blues").mkdir()
    sf.write(small / "blues" / "blues.00000.wav", synth_clip("jazz", np.random.default_rng(0), 0.5), SR)
    (small / "input.mf").write_text("a GTZAN list file at the root\n")
    (small / "jazz" / "notes.txt").write_text("not audio")
    sf.write(small / "pop" / "pop.extra.au", synth_clip("pop", np.random.default_rng(1), 0.5), SR)
    sf.write(small / "pop" / "pop.extra2.mp3", synth_clip("pop", np.random.default_rng(2), 0.5), SR)
    with caplog.at_level(logging.WARNING, logger="pipeline.genre.corpus"):
        table = read_corpus(small)
    assert "blues" in caplog.text and "ignored" in caplog.text
    assert not table["path"].str.contains("blues|notes.txt").any()
    assert table["genre"].value_counts()["pop"] == 4  # .au and .mp3 count as clips
    assert len(table) == 2 * len(GENRES) + 2


def test_label_subset_ignores_other_genre_folders(small, caplog):
    with caplog.at_level(logging.WARNING, logger="pipeline.genre.corpus"):
        table = read_corpus(small, labels=["jazz", "classical"])
    assert set(table["genre"]) == {"classical", "jazz"} and len(table) == 4
    assert "not in the label set" in caplog.text


def test_missing_root(tmp_path):
    with pytest.raises(DataError, match="nowhere.*does not exist"):
        read_corpus(tmp_path / "nowhere")


def test_missing_genre_folder(small):
    shutil.rmtree(small / "metal")
    with pytest.raises(DataError, match=r"metal: missing genre folder"):
        read_corpus(small)
    assert len(read_corpus(small, labels=[g for g in GENRES if g != "metal"])) == 10


def test_empty_genre_folder(small):
    for clip in (small / "reggae").iterdir():
        clip.unlink()
    (small / "reggae" / "readme.txt").write_text("no audio here")
    with pytest.raises(DataError, match=r"reggae: no audio clips"):
        read_corpus(small)


def test_too_few_clips_per_class(small):
    (small / "hiphop" / "hiphop.00001.wav").unlink()
    with pytest.raises(DataError, match=r"hiphop: 1 clip\(s\), expected at least min_per_class=2"):
        read_corpus(small, min_per_class=2)


def test_unknown_folder_name(small):
    (small / "hip-hop").mkdir()
    with pytest.raises(DataError, match=r"hip-hop.*not a known genre"):
        read_corpus(small)


@pytest.mark.parametrize(
    "content, message",
    [(b"", "empty file"), (b"RIFF not really a wave file" * 10, "unreadable audio")],
)
def test_bad_audio_file_is_named(small, content, message):
    (small / "jazz" / "jazz.00054.wav").write_bytes(content)
    with pytest.raises(DataError, match=rf"jazz\.00054\.wav: {message}"):
        read_corpus(small)


def test_audio_file_without_samples(small):
    sf.write(small / "pop" / "pop.silent.wav", np.zeros(0, dtype=np.float32), SR)
    with pytest.raises(DataError, match=r"pop\.silent\.wav: audio file holds no samples"):
        read_corpus(small)


def test_bad_params(small):
    with pytest.raises(ParamsError, match="techno"):
        read_corpus(small, labels=["techno"])
    with pytest.raises(ParamsError, match="min_per_class"):
        read_corpus(small, min_per_class=0)
