"""The edges through `dvc repro`, not only the direct stage, in a throwaway copy of the repository on a folder of
real media: a failed `dvc repro ingest` keeps the last good data/raw (DVC deletes a stage's outputs before
running it unless they persist), a killed ingest's temporary folder goes with the next run, and
`media.on_error: skip` carries one bad video and one silent music from ingest to split.

The one-line refusals of hostile inputs, stage by stage, are the table of tests/test_hostile_inputs.py.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from pipeline.io import read_ids, tree_md5
from tests.fixtures.releases import write_media_folder
from tests.test_e2e import BIN, ROOT, _run, copy_repo

pytestmark = pytest.mark.slow


def _params(source_path: Path, on_error: str = "fail") -> str:
    """The committed params.yaml with a folder source at `source_path` and media.on_error set."""
    params = (ROOT / "params.yaml").read_text()
    changed = re.sub(r"(?m)^(  source: )world(\s)", r"\g<1>folder\g<2>", params, count=1)
    changed = re.sub(r"(?m)^(  path: )data/world(\s)", rf"\g<1>{source_path}\g<2>", changed, count=1)
    changed = re.sub(r"(?m)^(  on_error: )fail(\s)", rf"\g<1>{on_error}\g<2>", changed, count=1)
    assert changed.count("\n") == params.count("\n") and changed.count("folder") > params.count("folder")
    return changed


def _set_path(repo: Path, old: Path, new: Path) -> None:
    params = repo / "params.yaml"
    text = params.read_text()
    changed = re.sub(rf"(?m)^(  path: ){re.escape(str(old))}(\s)", rf"\g<1>{new}\g<2>", text, count=1)
    assert changed != text
    params.write_text(changed)


def _dvc(repo: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", BGM_LOG="WARNING")
    return subprocess.run(["dvc", *args], cwd=repo, env=env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sources") / "good"
    write_media_folder(root, n_videos=16, n_uploaders=4, n_music=6, video_frames=25, music_seconds=2.0)
    return root


# Killed inside the import, after its first file is linked into the temporary folder: what a SIGKILL (a
# closed laptop, the OOM killer) leaves, with the real importer, in the real stage.
KILLED_INGEST = """
import os, runpy, signal
import pipeline.data.importers as importers
real = importers._link
def link_then_die(src, dst):
    real(src, dst)
    os.kill(os.getpid(), signal.SIGKILL)
importers._link = link_then_die
runpy.run_module("stages.ingest", run_name="__main__")
"""


def test_failed_dvc_repro_ingest_keeps_the_last_good_raw(tmp_path, media):
    repo = copy_repo(tmp_path / "repo", _params(media))
    _run(["dvc", "repro", "ingest"], repo)
    good = tree_md5(repo / "data/raw")
    assert good and (repo / "data/raw/videos.parquet").exists()

    crafted = Path(shutil.copytree(media, tmp_path / "crafted"))  # refused at ingest (media.on_error: fail)
    (crafted / "videos/clip02.mp4").write_bytes(b"a text file named .mp4")
    _set_path(repo, media, crafted)
    r = _dvc(repo, "repro", "ingest")
    assert r.returncode != 0 and "clip02.mp4" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert tree_md5(repo / "data/raw") == good, "a failed dvc repro ingest changed data/raw"


def test_a_killed_ingest_leaves_no_temporary_folder_after_the_next_dvc_repro(tmp_path, media):
    repo = copy_repo(tmp_path / "repo", _params(media))
    _run(["dvc", "repro", "ingest"], repo)
    good = tree_md5(repo / "data/raw")
    other = Path(shutil.copytree(media, tmp_path / "other"))  # a new source, whose import is killed
    _set_path(repo, media, other)
    env = dict(os.environ, PYTHONPATH=str(repo), BGM_LOG="WARNING")
    killed = subprocess.run([sys.executable, "-c", KILLED_INGEST], cwd=repo, env=env, capture_output=True)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert list((repo / "data").glob(".raw.*.tmp")) and tree_md5(repo / "data/raw") == good
    _run(["dvc", "repro", "ingest"], repo)
    assert list((repo / "data").glob(".raw.*.tmp")) == [], "the killed run's temporary folder is still there"
    assert json.loads((repo / "data/raw/source.json").read_text())["src"] == str(other)
    assert "up to date" in _run(["dvc", "status", "ingest"], repo)


def test_media_on_error_skip_reaches_every_stage_from_ingest_to_split(tmp_path, media):
    src = Path(shutil.copytree(media, tmp_path / "mine"))
    (src / "videos/clip01.mp4").write_bytes(b"a text file named .mp4: fails ingest's header probe")
    (src / "music/song03.flac").unlink()  # passes the header probe; every decoder finds it silent
    sf.write(src / "music/song03.wav", np.zeros(2 * 22050, np.float32), 22050)
    repo = copy_repo(tmp_path / "repo", _params(src, on_error="skip"))
    _run(["dvc", "repro", "split"], repo)

    source = json.loads((repo / "data/raw/source.json").read_text())
    assert [(s["kind"], s["id"]) for s in source["media_skipped"]] == [("video", "clip01")]
    assert "clip01" not in set(pd.read_parquet(repo / "data/raw/videos.parquet")["video_id"])
    for failures in ("data/features/music/failures.parquet", "data/features/smile/failures.parquet"):
        assert pd.read_parquet(repo / failures)["music_id"].tolist() == ["song03"], failures
    rhythm = pd.read_parquet(repo / "data/features/rhythm_failures.parquet")  # the videos set to song03
    assert len(rhythm) and rhythm["path"].str.contains("song03").all(), rhythm
    genre = json.loads((repo / "metrics/genre.json").read_text())
    assert genre["labeller"] == "tags" and list(genre["media_skipped"]) == ["song03"]  # by id, not row number
    assert "song03" not in set(pd.read_parquet(repo / "data/genre/labels.parquet")["music_id"])
    music = read_ids(repo / "data/dataset/music_ids.txt")
    assert "song03" not in music and "song02" in music
    info = json.loads((repo / "data/dataset/info.json").read_text())
    assert info["dropped"]["music"] == ["song03"]
