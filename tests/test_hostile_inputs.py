"""What a careless or hostile user brings, one row each: the input and the one-line refusal it must get, naming
the file, the row or id, and the params key or command that fixes it (docs/architecture.md section 7).

REFUSED is the table: case, input (a builder below that runs the pipeline on it and returns the message it
printed or raised), fragments the message must hold, fragments it must not. The rows after it are inputs
that must be accepted or skipped, and every stage's one-line error. The cases that go through `dvc repro`
(a failed or killed ingest keeps the last good data/raw; media.on_error: skip from ingest to split) are in
tests/test_dvc_edges.py.
"""
from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import re
import runpy
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
import yaml

from pipeline.data.importers import ingest
from pipeline.errors import PipelineError
from tests.fixtures.releases import write_media_folder, write_release

ROOT = Path(__file__).resolve().parents[1]
STAGES = sorted(p.stem for p in (ROOT / "stages").glob("*.py") if p.stem not in ("__init__", "common"))


class Evil:
    """What the issue's attacker saved into a model file: unpickling it with a full unpickler runs a shell."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


# ------------------------------------------------------------------------------------------------ inputs

@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    """A folder source of real media: clip00..clip03 (MP4), song00..song03 (WAV/FLAC), every song used."""
    root = tmp_path_factory.mktemp("media") / "mine"
    write_media_folder(root, n_videos=4, n_uploaders=2, n_music=4, video_frames=25, music_seconds=2.0)
    return root


def _folder(media: Path, tmp: Path, bad_video: bool = False, silent_music: bool = False) -> Path:
    src = Path(shutil.copytree(media, tmp / "mine"))
    if bad_video:
        (src / "videos/clip01.mp4").write_bytes(b"this is a text file named .mp4")
    if silent_music:
        (src / "music/song03.flac").unlink()
        sf.write(src / "music/song03.wav", np.zeros(2 * 22050, np.float32), 22050)
    return src


def _message(action) -> str:
    """The one-line message of the PipelineError `action` raises."""
    with pytest.raises(PipelineError) as err:
        action()
    return str(err.value)


def _recommend(tmp: Path, *argv: str) -> str:
    """`python -m pipeline recommend ...` in `tmp` (in-process): must exit 2; its stderr."""
    from pipeline import recommend_cli

    (tmp / "params.yaml").write_text(yaml.safe_dump({"features_video": {"device": "cpu"}}))
    (tmp / "clip.mp4").write_bytes(b"never decoded: the model is refused first")
    err, cwd = io.StringIO(), os.getcwd()
    os.chdir(tmp)
    try:
        with contextlib.redirect_stderr(err):
            rc = recommend_cli.main(list(argv))
    finally:
        os.chdir(cwd)
    assert rc == 2, err.getvalue()
    return err.getvalue().strip()


def crafted_model(tmp: Path, media: Path) -> str:
    marker = tmp / "PWNED"
    torch.save({"model": {"class": "DebCM"}, "state_dict": {}, "x": Evil(marker)}, tmp / "crafted.pt")
    try:
        return _recommend(tmp, "clip.mp4", "--model", str(tmp / "crafted.pt"))
    finally:
        assert not marker.exists(), "loading the model ran its code"


def crafted_checkpoint(tmp: Path, media: Path) -> str:
    from pipeline.models.cmvae import CMVAE, CMVAEConfig
    from pipeline.training.checkpoint import try_resume

    marker = tmp / "PWNED"
    torch.save({"config": {}, "x": Evil(marker)}, tmp / "last.pt")
    model = CMVAE(4, 3, None, CMVAEConfig(latent_dim=2, hidden_dims=(4,)))
    try:
        return _message(lambda: try_resume(tmp / "last.pt", {}, model, torch.optim.Adam(model.parameters()),
                                           torch.device("cpu")))
    finally:
        assert not marker.exists(), "resuming ran the checkpoint's code"


def model_is_a_directory(tmp: Path, media: Path) -> str:
    (tmp / "models").mkdir()
    return _recommend(tmp, "clip.mp4", "--model", "models")


def model_is_not_a_model(tmp: Path, media: Path) -> str:
    (tmp / "notes.pt").write_text("a shopping list")
    return _recommend(tmp, "clip.mp4", "--model", "notes.pt")


def recommend_bad_video(tmp: Path, media: Path) -> str:
    from pipeline.features.video import VideoConfig
    from pipeline.recommend import video_features

    (tmp / "broken.mp4").write_bytes(b"not a video")
    good = str(media / "videos/clip00.mp4")
    return _message(lambda: video_features([good, str(tmp / "broken.mp4")], [None, None],
                                           VideoConfig(device="cpu", max_frames=4), None))


def empty_train_npy(tmp: Path, media: Path) -> str:
    write_release(tmp / "rel")
    np.save(tmp / "rel/train.npy", np.empty((0, 5), dtype=object), allow_pickle=True)
    return _message(lambda: ingest("tt150k", tmp / "rel", tmp / "raw"))


def no_ugc_rows(tmp: Path, media: Path) -> str:
    src = _folder(media, tmp)
    (src / "pairs.csv").write_text("video_id,uploader_id,music_id,text,kind\n")
    return _message(lambda: ingest("folder", src, tmp / "raw"))


def newline_in_an_id(tmp: Path, media: Path) -> str:
    src = _folder(media, tmp)
    shutil.copyfile(src / "videos/clip02.mp4", src / "videos/clip\n02.mp4")  # a file of that name exists
    (src / "pairs.csv").write_text((src / "pairs.csv").read_text().replace("clip02,", '"clip\n02",'))
    return _message(lambda: ingest("folder", src, tmp / "raw"))


def tab_in_an_uploader(tmp: Path, media: Path) -> str:
    src = _folder(media, tmp)
    (src / "pairs.csv").write_text((src / "pairs.csv").read_text().replace("clip03,user1", "clip03,user\t1"))
    return _message(lambda: ingest("folder", src, tmp / "raw"))


def float64_matrix(tmp: Path, media: Path) -> str:
    write_release(tmp / "rel")
    np.save(tmp / "rel/music_features.npy", np.load(tmp / "rel/music_features.npy").astype(np.float64))
    return _message(lambda: ingest("tt150k", tmp / "rel", tmp / "raw"))


def latin1_csv(tmp: Path, media: Path) -> str:
    src = _folder(media, tmp)
    (src / "pairs.csv").write_bytes((src / "pairs.csv").read_text().replace("clip number 3", "caf\u00e9 3")
                                    .encode("latin-1"))
    return _message(lambda: ingest("folder", src, tmp / "raw"))


def bad_video_at_ingest(tmp: Path, media: Path) -> str:
    src = _folder(media, tmp, bad_video=True)
    return _message(lambda: ingest("folder", src, tmp / "raw"))


def _silent_pool(tmp: Path, media: Path) -> tuple[pd.DataFrame, Path]:
    src = _folder(media, tmp, silent_music=True)
    files = sorted((src / "music").iterdir())
    return pd.DataFrame({"music_id": [f.stem for f in files], "path": [f"music/{f.name}" for f in files],
                         "genre": [None] * len(files)}), src


def silent_music_lstm(tmp: Path, media: Path) -> str:
    from pipeline.genre.label import GenreConfig, label_music

    music, src = _silent_pool(tmp, media)
    (tmp / "corpus").mkdir()  # checked before the corpus is read
    return _message(lambda: label_music(music, src, GenreConfig(labeller="lstm", corpus=str(tmp / "corpus")), "fail"))


# case | input | the message holds | the message does not hold
REFUSED = [
    ("crafted model file (recommend --model)", crafted_model, ["crafted.pt", "refused", "posix.system",
                                                              "weights_only"], []),
    ("crafted training checkpoint (resume)", crafted_checkpoint, ["last.pt", "refused"], []),
    ("--model names a directory", model_is_a_directory, ["error:", "models", "not a file"], ["Traceback"]),
    ("--model names a text file", model_is_not_a_model, ["error:", "notes.pt", "refused"], ["Traceback"]),
    ("recommend: an undecodable video", recommend_bad_video, ["broken.mp4", "1 of 2"], ["media.on_error", "000001"]),
    ("empty train.npy", empty_train_npy, ["rel/train.npy", "no rows"], []),
    ("a pairs.csv without UGC rows", no_ugc_rows, ["pairs.csv", "no UGC"], []),
    ("a newline inside an id", newline_in_an_id, ["pairs.csv row 2", "'clip\\n02'", "control character"], []),
    ("a tab inside an uploader id", tab_in_an_uploader, ["pairs.csv row 3", "uploader_id 'user\\t1'"], []),
    ("a float64 music matrix", float64_matrix, ["music_features.npy", "float64",
                                                 "np.save(", ".astype(np.float32)"], []),
    ("a latin-1 pairs.csv", latin1_csv, ["pairs.csv row 3", "not UTF-8", "iconv"], []),
    ("an undecodable video at ingest", bad_video_at_ingest, ["video clip01", "clip01.mp4", "media.on_error: skip"],
     []),
    ("a silent music in the lstm labeller", silent_music_lstm, ["song03", "silent", "media.on_error: skip"],
     ["00000003"]),
]


@pytest.mark.parametrize("case, build, says, never", REFUSED, ids=[r[0] for r in REFUSED])
def test_refused_in_one_line(case, build, says, never, tmp_path, media):
    message = build(tmp_path, media)
    assert "\n" not in message, message
    for fragment in says:
        assert fragment in message, (fragment, message)
    for fragment in never:
        assert fragment not in message, (fragment, message)


# ----------------------------------------------------------------------------------- accepted or skipped

def test_file_names_with_surrounding_spaces_match_the_stripped_csv_ids(tmp_path, media):
    src = _folder(media, tmp_path)
    (src / "videos/clip02.mp4").rename(src / "videos/ clip02 .mp4")
    (src / "pairs.csv").write_text((src / "pairs.csv").read_text().replace("clip02,", " clip02 ,"))
    ingest("folder", src, tmp_path / "raw")
    videos = pd.read_parquet(tmp_path / "raw/videos.parquet").set_index("video_id")
    assert videos.loc["clip02", "path"] == "media/video/clip02.mp4" and (tmp_path / "raw/media/video/clip02.mp4").exists()


def test_ingest_skips_a_video_failing_the_header_probe(tmp_path, media, caplog):
    src = _folder(media, tmp_path, bad_video=True)
    info = ingest("folder", src, tmp_path / "raw", on_error="skip")
    videos = pd.read_parquet(tmp_path / "raw/videos.parquet")
    pairs = pd.read_parquet(tmp_path / "raw/pairs.parquet")
    assert "clip01" not in set(videos["video_id"]) | set(pairs["video_id"]) and len(videos) == 3
    assert [s["id"] for s in info["media_skipped"]] == ["clip01"]
    assert json.loads((tmp_path / "raw/source.json").read_text())["media_skipped"][0]["kind"] == "video"
    assert any("clip01" in r.getMessage() and "skipped" in r.getMessage() for r in caplog.records)


def test_ingest_of_a_world_skips_a_video_failing_the_header_probe(tmp_path):
    from pipeline.data.world import WorldParams
    from pipeline.data.worldgen import build_world

    build_world(WorldParams(n_music=8, n_videos=16, n_uploaders=2, n_pgc=4, n_channels=2, n_corpus_per_genre=1,
                            music_seconds=2, video_seconds=2, workers=1), tmp_path / "world")
    videos = pd.read_parquet(tmp_path / "world/videos.parquet")
    bad = videos[videos["kind"] == "ugc"].iloc[0]
    (tmp_path / "world" / bad["path"]).write_bytes(b"not a video")
    with pytest.raises(PipelineError, match="media.on_error: skip"):
        ingest("world", tmp_path / "world", tmp_path / "raw")
    info = ingest("world", tmp_path / "world", tmp_path / "raw", on_error="skip")
    pairs = pd.read_parquet(tmp_path / "raw/pairs.parquet")
    assert [s["id"] for s in info["media_skipped"]] == [bad["video_id"]] and bad["video_id"] not in set(pairs["video_id"])
    assert len(pd.read_parquet(tmp_path / "raw/videos.parquet")) == len(videos) - 1


def test_the_lstm_labeller_skips_a_silent_clip_by_its_id(tmp_path, media, monkeypatch):
    from pipeline.genre import label

    seen = []

    def fake_lstm(p, corpus, pool):  # the trained LSTM, minus the training: what it is asked to label
        seen.extend(pool)
        return np.full((len(pool), 6), 1 / 6, np.float32), {}, None

    monkeypatch.setattr(label, "lstm_labeller", fake_lstm)
    monkeypatch.setattr(label, "read_corpus", lambda corpus: None)
    music, src = _silent_pool(tmp_path, media)
    (tmp_path / "corpus").mkdir()
    labels, metrics, _ = label.label_music(music, src, label.GenreConfig(labeller="lstm", corpus=str(tmp_path / "corpus")),
                                           "skip")
    assert labels["music_id"].tolist() == ["song00", "song01", "song02"] and not any("song03" in p for p in seen)
    assert list(metrics["media_skipped"]) == ["song03"] and metrics["n_labelled"] == 3


def test_unused_pgc_music_stays_out_of_the_ugc_pool(tmp_path):
    from pipeline.sampling.dataset import SplitConfig, build_dataset

    write_release(tmp_path / "rel" / "ugc", pgc="sibling", n_pgc=4, n_pgc_music=8)  # pm4..pm7: no pair uses them
    ingest("tt150k", tmp_path / "rel" / "ugc", tmp_path / "raw")
    videos, music, pairs = (pd.read_parquet(tmp_path / f"raw/{n}.parquet") for n in ("videos", "music", "pairs"))
    labels = music[["music_id"]].assign(genre="pop")
    ds = build_dataset(videos, pairs, labels, None, SplitConfig(seed=0),
                       source_split=pd.read_parquet(tmp_path / "raw/split.parquet"),
                       source_negatives=pd.read_parquet(tmp_path / "raw/negatives.parquet"))
    pool = {ds.music_ids[i] for i in np.flatnonzero(ds.pool_mask())}
    assert pool == {f"m{i:05d}" for i in range(30)}, sorted(pool - {f"m{i:05d}" for i in range(30)})


def test_the_sweep_module_entry_point_guards_the_truth(tmp_path, monkeypatch):
    from pipeline import sweep

    calls = []
    monkeypatch.setattr("pipeline.truth.forbid_truth_reads", lambda: calls.append("guard"))
    monkeypatch.setattr("pipeline.data.features.load_features", lambda d: calls.append("features"))
    monkeypatch.setattr("pipeline.sampling.dataset.load_dataset", lambda d: calls.append("dataset"))
    monkeypatch.setattr(sweep, "kl_sweep", lambda *a: pd.DataFrame(columns=["kl_weight"]))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"student": {}, "train": {}}))
    sweep.main(["0", "--params", str(tmp_path / "params.yaml")])
    assert calls and calls[0] == "guard", calls


def test_the_projects_own_model_and_checkpoint_files_load_with_weights_only(tmp_path):
    from pipeline.models.debcm import DebCM, DebCMConfig
    from pipeline.models.registry import load_model, model_spec
    from pipeline.training.checkpoint import save_checkpoint, save_torch, try_resume

    model = DebCM(5, 4, 3, DebCMConfig(latent_dim=2, hidden_dims=(4,)))
    optimizer = torch.optim.Adam(model.parameters())
    save_torch({"model": model_spec(model), "state_dict": model.state_dict(), "best_epoch": 1,
                "val_recall@10": 0.5, "config": {"lr": 0.001, "data": "abc"}}, tmp_path / "best.pt")
    loaded = load_model(tmp_path / "best.pt")
    for k, v in model.state_dict().items():  # unfitted scaling buffers are NaN
        torch.testing.assert_close(loaded.state_dict()[k], v, rtol=0, atol=0, equal_nan=True)
    state = {"epoch": 2, "best_score": 0.5, "best_epoch": 1, "best_state": model.state_dict(), "bad_evals": 0,
             "history": [{"epoch": 0, "train/total": 1.5}], "stopped": False}
    save_checkpoint(tmp_path / "last.pt", {"lr": 0.001}, model, optimizer, torch.device("cpu"), state)
    assert try_resume(tmp_path / "last.pt", {"lr": 0.001}, model, optimizer, torch.device("cpu"))["epoch"] == 2


def test_a_killed_writers_temporary_folder_goes_with_the_next_write(tmp_path):
    import subprocess

    from pipeline.io import atomic_dir

    out = tmp_path / "raw"
    killed = ("import os, signal\nfrom pipeline.io import atomic_dir\nwith atomic_dir(%r) as tmp:\n"
              "    (tmp / 'half.npy').write_bytes(b'x')\n    os.kill(os.getpid(), signal.SIGKILL)\n" % str(out))
    r = subprocess.run([sys.executable, "-c", killed], cwd=ROOT, capture_output=True)
    legacy = tmp_path / ".raw.k9x_2abc.tmp"  # what the code before the pid in the name left
    legacy.mkdir()
    assert r.returncode == -9 and len(list(tmp_path.glob(".raw.*.tmp"))) == 2
    with atomic_dir(out) as tmp:  # a live writer of the same folder keeps its own
        with atomic_dir(tmp_path / "other"):
            pass
        assert tmp.exists()
    assert list(tmp_path.glob(".raw.*.tmp")) == [] and out.is_dir()


# --------------------------------------------------------------------------- every stage: one line, exit 1

def _main_block(stage: str) -> str:
    tree = ast.parse((ROOT / "stages" / f"{stage}.py").read_text())
    blocks = [n for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)]
    return "".join(ast.unparse(s) for b in blocks for s in b.body)


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_runs_its_main_through_common_run(stage):
    assert _main_block(stage) == "run(main)", f"stages/{stage}.py: expected `run(main)` under __main__"


def _bad_params(stage: str) -> list[tuple[dict, str]]:
    """(params, what the one line must name): an unknown key in the stage's own group; media.on_error: skipp
    for the stages that read the media switch."""
    source = (ROOT / "stages" / f"{stage}.py").read_text()
    own = re.search(r'setup\("(\w+)"\)', source).group(1)
    rows = [({own: {"no_such_key": 1}}, "no_such_key")]
    if 'group("media")' in source:
        rows.append(({own: {}, "media": {"on_error": "skipp"}}, "media.on_error: 'skipp'"))
    return rows


@pytest.mark.filterwarnings("ignore:.*found in sys.modules:RuntimeWarning")  # runpy: the module is imported
@pytest.mark.parametrize("stage, params, names", [(s, p, n) for s in STAGES for p, n in _bad_params(s)],
                         ids=[f"{s}-{n.split(':')[0]}" for s in STAGES for _, n in _bad_params(s)])
def test_every_stage_prints_one_line_and_exits_nonzero_on_an_expected_error(stage, params, names, tmp_path,
                                                                           monkeypatch, capsys):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"ingest": {}, **params}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [f"stages/{stage}.py"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_module(f"stages.{stage}", run_name="__main__")
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code not in (0, None) and len(err) == 1 and err[0].startswith("error: ParamsError"), err
    assert names in err[0], err
