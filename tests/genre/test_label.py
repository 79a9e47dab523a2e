"""pipeline/genre/label.py: who labels each music clip (source, LSTM, tags, uniform), and what it costs to ask."""
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.data.importers import ingest
from pipeline.data.schema import GENRES
from pipeline.errors import DataError, ParamsError
from pipeline.genre import label
from pipeline.genre.label import PROBA_COLUMNS, GenreConfig, label_music, plan
from tests.fixtures.releases import write_release


def _music(shipped: int, with_audio: int, bare: int) -> pd.DataFrame:
    """`shipped` clips with a genre, `with_audio` unlabelled clips with a file, `bare` with neither."""
    n = shipped + with_audio + bare
    return pd.DataFrame({
        "music_id": [f"m{i:02d}" for i in range(n)],
        "path": [None] * shipped + [f"media/music/m{i:02d}.wav" for i in range(shipped, shipped + with_audio)]
        + [None] * bare,
        "genre": [GENRES[i % 6] for i in range(shipped)] + [None] * (with_audio + bare),
    })


def _fake(name, calls):
    """A labeller saying reggae for every clip: the LSTM's form (p, corpus, paths) or the tags' (p, {id: path},
    on_error), which also returns the ids it labelled and its failures."""
    def labeller(p, *args):
        pool = args[0] if name == "tags" else args[-1]
        calls.append((name, list(pool.values()) if name == "tags" else pool))
        proba = np.zeros((len(pool), len(GENRES)), np.float32)
        proba[:, GENRES.index("reggae")] = 1.0
        return (sorted(pool), proba, {"fake": name}, None, []) if name == "tags" else (proba, {"fake": name}, None)
    return labeller


@pytest.fixture
def no_corpus_reads(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("the corpus was read")
    monkeypatch.setattr(label, "read_corpus", refuse)


def test_shipped_and_uniform_need_no_labeller_corpus_or_audio(tmp_path, no_corpus_reads):
    music = _music(shipped=5, with_audio=0, bare=3)  # e.g. a release whose PGC music has no genre
    labels, metrics, model = label_music(music, tmp_path, GenreConfig(labeller="lstm", corpus=str(tmp_path / "no")))
    assert model is None and labels["labelled_by"].tolist() == ["source"] * 5 + ["uniform"] * 3
    assert labels["genre"].isin(GENRES).all() and labels["genre"].tolist()[:5] == list(music["genre"][:5])
    proba = labels[PROBA_COLUMNS].to_numpy()
    np.testing.assert_array_equal(proba[5:], np.full((3, 6), 1 / 6, np.float32))
    assert labels["genre"].tolist()[5:] == [GENRES[0]] * 3  # argmax of a tie: the first genre
    assert {k: metrics[k] for k in ("labeller", "n_music", "n_shipped", "n_labelled", "n_uniform")} == \
        {"labeller": "uniform", "n_music": 8, "n_shipped": 5, "n_labelled": 0, "n_uniform": 3}
    assert "3 with neither a shipped genre nor audio get the uniform g(m)" in metrics["reason"]
    all_shipped = label_music(_music(4, 0, 0), tmp_path, GenreConfig())[1]
    assert all_shipped["labeller"] == "source" and all_shipped["n_uniform"] == 0


def test_tags_never_reads_the_corpus(tmp_path, monkeypatch, no_corpus_reads):
    calls = []
    monkeypatch.setattr(label, "tags_labeller", _fake("tags", calls))
    music = _music(shipped=2, with_audio=3, bare=1)
    labels, metrics, _ = label_music(music, tmp_path, GenreConfig(labeller="tags", corpus=str(tmp_path / "no")))
    assert calls == [("tags", [str(tmp_path / f"media/music/m{i:02d}.wav") for i in (2, 3, 4)])]
    assert labels["labelled_by"].tolist() == ["source"] * 2 + ["tags"] * 3 + ["uniform"]
    assert labels["genre"].tolist()[2:5] == ["reggae"] * 3
    assert (metrics["labeller"], metrics["n_labelled"], metrics["n_uniform"], metrics["fake"]) == ("tags", 3, 1, "tags")


def test_auto_uses_the_lstm_with_a_corpus_and_tags_without(tmp_path, monkeypatch, train_corpus):
    calls = []
    monkeypatch.setattr(label, "tags_labeller", _fake("tags", calls))
    monkeypatch.setattr(label, "lstm_labeller", _fake("lstm", calls))
    monkeypatch.setattr(label, "check_audio", lambda *a, **k: [])  # the clips are names only
    music = _music(shipped=1, with_audio=2, bare=0)
    _, with_corpus, _ = label_music(music, tmp_path, GenreConfig(corpus=str(train_corpus)))
    _, without, _ = label_music(music, tmp_path, GenreConfig(corpus=str(tmp_path / "none")))
    assert [c[0] for c in calls] == ["lstm", "tags"]
    assert with_corpus["labeller"] == "lstm" and without["labeller"] == "tags"
    assert "no genre corpus at" in without["reason"] and "genre.corpus" in without["reason"]


def test_lstm_without_its_corpus_names_the_params(tmp_path, no_corpus_reads):
    with pytest.raises(DataError, match=r"gtzan: no genre corpus folder; genre.labeller: lstm .*genre.corpus"):
        plan(_music(1, 1, 0), GenreConfig(labeller="lstm", corpus=str(tmp_path / "gtzan")))
    assert plan(_music(1, 0, 1), GenreConfig(labeller="lstm", corpus=str(tmp_path / "gtzan"))).labeller is None
    with pytest.raises(ParamsError, match="genre.labeller"):
        GenreConfig(labeller="svm").validate()


def test_genre_stage_on_a_release_without_genres_or_audio(tmp_path, monkeypatch):
    """stages/genre.py end to end on an imported foreign release whose codes name no genre."""
    from stages import genre

    write_release(tmp_path / "rel", pgc="child")
    ingest("tt150k", tmp_path / "rel", tmp_path / "data/raw", genre_names=[None])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"genre": {"labeller": "auto"}, "media": {"on_error": "fail"}}))
    monkeypatch.chdir(tmp_path)
    genre.main()
    labels = pd.read_parquet(tmp_path / "data/genre/labels.parquet")
    metrics = json.loads((tmp_path / "metrics/genre.json").read_text())
    assert len(labels) == 38 and (labels["labelled_by"] == "uniform").all() and labels["genre"].isin(GENRES).all()
    assert metrics["n_uniform"] == 38 and metrics["n_shipped"] == 0 and metrics["labeller"] == "uniform"
    assert not (tmp_path / "data/genre/model.pt").exists()
