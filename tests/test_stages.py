"""The extract_video / extract_music / extract_smile / genre / split stage scripts on tiny worlds.

A feature-level world (render: false) runs every stage in seconds (pass-through and shipped genres); the
rendered world runs the real extractors (TensorFlow and openSMILE each in its own subprocess) and is slow.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.data.importers import ingest
from pipeline.data.schema import GENRES
from pipeline.data.world import WorldParams
from pipeline.data.worldgen import build_world
from pipeline.errors import ParamsError
from pipeline.features.smile import SmilePCA
from pipeline.genre import lstm
from pipeline.genre.frames import FrameConfig, clip_frames
from pipeline.io import read_ids, write_parquet
from pipeline.sampling.dataset import load_dataset
from stages import extract_music, extract_smile, extract_video, genre, split

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(n_music=12, n_videos=60, n_uploaders=6, n_pgc=12, n_channels=2, n_corpus_per_genre=3,
            music_seconds=3, video_seconds=2, workers=1)
PARAMS = {
    "media": {"on_error": "fail"},
    "features_video": {"max_frames": 16, "device": "cpu"},
    "features_music": {"model": "MSD_vgg", "layer": "pool5", "vggish_checkpoint": None},
    "features_smile": {"fit_fraction": 0.8, "seed": 0, "workers": 1},
    "genre": {"labeller": "lstm", "corpus": "data/raw/genre_corpus", "test_fraction": 0.33, "workers": 1,
              "frames": {"seconds": 3.0}, "train": {"hidden_size": 16, "max_epochs": 8, "val_fraction": 0.5}},
    "split": {"seed": 0, "n_negatives": 5, "schemes": ["weak", "strong"], "rhythm": None},
}
TIMES: dict[str, float] = {}


def _world(root: Path, render: bool) -> Path:
    build_world(WorldParams(render=render, **TINY), root / "data/world")
    ingest("world", root / "data/world", root / "data/raw")
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    return root


def _in_subprocess(module: str, cwd: Path) -> None:
    """TensorFlow and openSMILE cannot share a process: each runs as `python -m stages.<name>`."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), BGM_LOG="WARNING")
    r = subprocess.run([sys.executable, "-m", module], cwd=cwd, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]


def _timed(name: str, fn, *args) -> None:
    start = time.perf_counter()
    fn(*args)
    TIMES[name] = time.perf_counter() - start


def _finite(path: Path, rows: int, cols: int | None = None) -> np.ndarray:
    x = np.load(path)
    assert x.dtype == np.float32 and x.shape[0] == rows and (cols is None or x.shape[1] == cols), (path, x.shape)
    assert np.isfinite(x).all(), path
    return x


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    root = _world(tmp_path_factory.mktemp("rendered"), render=True)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        _timed("extract_video", extract_video.main)
        _timed("extract_music", _in_subprocess, "stages.extract_music", root)
        _timed("extract_smile", _in_subprocess, "stages.extract_smile", root)
        _timed("genre", genre.main)
        _timed("split", split.main)
    finally:
        os.chdir(cwd)
    print("\nstage wall times on the tiny rendered world (s):", {k: round(v, 1) for k, v in TIMES.items()})
    return root


def test_fit_subset_is_a_stable_hash_share():
    ids = [f"m{i:05d}" for i in range(4000)]
    chosen = [extract_smile.in_fit_subset(m, 0, 0.8) for m in ids]
    assert chosen == [extract_smile.in_fit_subset(m, 0, 0.8) for m in ids]  # no hidden state
    assert abs(np.mean(chosen) - 0.8) < 0.03  # binomial sd ~0.006
    assert chosen != [extract_smile.in_fit_subset(m, 1, 0.8) for m in ids]  # the seed matters
    assert all(extract_smile.in_fit_subset(m, 0, 1.0) for m in ids[:50])


def test_bad_params_are_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for group, value, stage in (("features_video", {"on_error": "ignore"}, extract_video),
                                ("features_music", {"layer": "nope"}, extract_music),
                                ("features_smile", {"fit_fraction": 0}, extract_smile),
                                ("genre", {"labeller": "svm"}, genre), ("split", {"ratio": [1, 1, 1]}, split)):
        (tmp_path / "params.yaml").write_text(yaml.safe_dump({group: value}))
        with pytest.raises(ParamsError, match=group.replace("_", "[._]")):  # the libraries say features.music
            stage.main()


def test_feature_level_world_passes_through(tmp_path, monkeypatch):
    root = _world(tmp_path, render=False)
    monkeypatch.chdir(root)
    for stage in (extract_video, extract_music, extract_smile, genre, split):
        stage.main()
    for sub, names in (("video", ("video_visual", "video_text", "video_text_mask")), ("music", ("music_audio",)),
                       ("smile", ("music_smile",))):
        for name in names:  # byte-identical copies of what the source shipped
            assert (root / f"data/features/{sub}/{name}.npy").read_bytes() == (root / f"data/raw/features/{name}.npy").read_bytes()
        assert pd.read_parquet(root / f"data/features/{sub}/failures.parquet").empty
    labels = pd.read_parquet(root / "data/genre/labels.parquet")
    music = pd.read_parquet(root / "data/raw/music.parquet").sort_values("music_id")
    assert labels["genre"].tolist() == music["genre"].tolist()  # shipped labels kept, one-hot
    assert (labels[[f"p_{g}" for g in GENRES]].to_numpy().max(axis=1) == 1).all()
    ds = load_dataset(root / "data/dataset")
    assert set(ds.video_ids) <= set(read_ids(root / "data/features/video/video_ids.txt"))
    assert ds.music_ids == read_ids(root / "data/features/music/music_ids.txt")


@pytest.mark.slow
def test_extract_video(rendered):
    videos = pd.read_parquet(rendered / "data/raw/videos.parquet")
    out = rendered / "data/features/video"
    ids = read_ids(out / "video_ids.txt")
    assert ids == sorted(videos["video_id"])
    _finite(out / "video_visual.npy", len(ids), 1280)
    text = _finite(out / "video_text.npy", len(ids), 512)
    mask = np.load(out / "video_text_mask.npy")
    has_caption = videos.set_index("video_id").loc[ids, "text"].notna().to_numpy()
    assert (mask == has_caption).all() and (text[mask == 0] == 0).all()
    assert np.allclose(np.linalg.norm(text[mask == 1], axis=1), 1, atol=1e-4)
    assert pd.read_parquet(out / "failures.parquet").empty


@pytest.mark.slow
def test_extract_music_and_smile(rendered):
    music = sorted(pd.read_parquet(rendered / "data/raw/music.parquet")["music_id"])
    assert read_ids(rendered / "data/features/music/music_ids.txt") == music
    audio = _finite(rendered / "data/features/music/music_audio.npy", len(music), 128)
    assert audio.std(axis=0).max() > 0  # clips differ
    out = rendered / "data/features/smile"
    assert read_ids(out / "music_ids.txt") == music
    smile = _finite(out / "music_smile.npy", len(music), 128)
    pairs = pd.read_parquet(rendered / "data/raw/pairs.parquet")
    expected = sorted(m for m in pairs.loc[pairs["kind"] == "ugc", "music_id"].unique()
                      if extract_smile.in_fit_subset(m, 0, 0.8))
    fit = read_ids(out / "fit_ids.txt")
    assert fit == expected and len(fit) >= 2  # (the tiny pool keeps 6 music: all may fall in the 80%)
    k = SmilePCA.load(out / "smile_pca.npz").components.shape[0]
    assert k == min(128, len(fit) - 1)  # fitted on the fit set only: rank n_fit - 1
    rows = [music.index(m) for m in fit]
    assert np.abs(smile[rows, :k].mean(axis=0)).max() < 1e-3 * np.abs(smile[rows, :k]).max()  # centred on the fit set
    assert (smile[:, k:] == 0).all()


@pytest.mark.slow
def test_genre(rendered):
    labels = pd.read_parquet(rendered / "data/genre/labels.parquet")
    music = pd.read_parquet(rendered / "data/raw/music.parquet").sort_values("music_id")
    assert labels["music_id"].tolist() == music["music_id"].tolist()
    proba = labels[[f"p_{g}" for g in GENRES]].to_numpy()
    assert np.isfinite(proba).all() and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    assert labels["genre"].tolist() == [GENRES[i] for i in proba.argmax(axis=1)]
    model = lstm.load(rendered / "data/genre/model.pt")  # relabel one clip from scratch: same probabilities
    frames = clip_frames(rendered / "data/raw" / music["path"].iloc[0], FrameConfig(**model.meta["frames"]))
    assert np.allclose(lstm.predict_proba(model, frames[None])[0], proba[0], atol=1e-5)
    metrics = json.loads((rendered / "metrics/genre.json").read_text())
    assert metrics["labeller"] == "lstm" and 0 <= metrics["held_out"]["accuracy"] <= 1
    assert metrics["held_out"]["n"] == 6 and metrics["pool_truth"]["n"] == len(music)
    truth = pd.read_parquet(rendered / "data/raw/truth/music_latents.parquet").set_index("music_id")
    hits = (truth.loc[labels["music_id"], "genre"].to_numpy() == labels["genre"].to_numpy()).mean()
    assert metrics["pool_truth"]["accuracy"] == pytest.approx(hits)


@pytest.mark.slow
def test_split_drops_failed_ids(rendered, monkeypatch):
    ds = load_dataset(rendered / "data/dataset")
    assert set(ds.video_ids) <= set(read_ids(rendered / "data/features/video/video_ids.txt"))
    assert ds.music_ids == read_ids(rendered / "data/features/smile/music_ids.txt")
    assert {"weak", "strong"} <= set(ds.schemes) and ds.info["dropped"]["videos"] == []
    gone = ds.video_ids[0]
    failures = rendered / "data/features/video/failures.parquet"
    original = failures.read_bytes()
    monkeypatch.chdir(rendered)
    try:
        write_parquet(pd.DataFrame({"video_id": [gone], "path": ["x.mp4"], "reason": ["test"]}), failures)
        split.main()
        again = load_dataset(rendered / "data/dataset")
    finally:
        failures.write_bytes(original)
    assert again.video_ids == [v for v in ds.video_ids if v != gone]
    assert gone not in set(again.splits["video_id"]) and again.info["dropped"]["videos"] == [gone]


def test_e2e_params_file_has_every_params_group():
    """The CI end-to-end run uses tests/e2e/params.yaml: a group missing there fails `dvc repro` only in the slow run."""
    full = yaml.safe_load((ROOT / "params.yaml").read_text())
    tiny = yaml.safe_load((ROOT / "tests/e2e/params.yaml").read_text())
    assert sorted(tiny) == sorted(full)


# A stage may hand-list keys of its own group only (the group its script reads with setup(), or the one named
# after it); every other group it reads it lists whole. The one exception, and why:
HAND_LISTED_ELSEWHERE = {
    ("world", "ingest.source"): "the world is rendered or not by the source alone; ingest's other keys (path, "
                                "csv, genre_names) must not re-render it",
}
TRAINING_GROUPS = ("model", "adjustment", "student")  # DebCMConfig's (pipeline.models.debcm.STUDENT_GROUPS)


def _stage_params() -> dict[str, list[str]]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {name: [p for p in stage.get("params", []) if isinstance(p, str)] for name, stage in stages.items()}


def _own_groups(name: str) -> set[str]:
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][name]
    module = stage["cmd"].split("python -m ", 1)[1].split()[0]
    source = (ROOT / (module.replace(".", "/") + ".py")).read_text()
    return {name, *re.findall(r'setup\("(\w+)"\)', source)}


def test_no_stage_hand_lists_a_key_of_another_stages_group():
    """DVC re-runs a stage when a key it lists changes: a hand-listed key of another stage's group goes stale
    as soon as that group gains a key the stage reads (the sweep's 16 `student.*` keys did)."""
    for name, params in _stage_params().items():
        for p in params:
            if "." in p and p.split(".", 1)[0] not in _own_groups(name):
                assert (name, p) in HAND_LISTED_ELSEWHERE, f"dvc.yaml stage {name}: lists {p}; list its whole group"
    for (name, p) in HAND_LISTED_ELSEWHERE:
        assert p in _stage_params()[name], (name, p)  # no stale exception


@pytest.mark.parametrize("params_file", ["params.yaml", "tests/e2e/params.yaml"])
def test_student_holds_only_kl_weight_and_the_groups_split_the_student_config(params_file):
    import dataclasses

    from pipeline.models.cmvae import CMVAEConfig
    from pipeline.models.debcm import STUDENT_GROUPS, DebCMConfig, student_config

    params = yaml.safe_load((ROOT / params_file).read_text())
    assert set(params["student"]) == {"kl_weight"}
    assert "teacher" not in params  # the teacher reads `model`
    for group, keys in STUDENT_GROUPS.items():
        assert set(params[group]) <= set(keys), group
    owned = [k for keys in STUDENT_GROUPS.values() for k in keys]
    assert sorted(owned) == sorted(f.name for f in dataclasses.fields(DebCMConfig))  # each field in one group
    assert set(STUDENT_GROUPS["model"]) == {f.name for f in dataclasses.fields(CMVAEConfig)}
    cfg = student_config(params.get)
    assert cfg.kl_weight == float(params["student"]["kl_weight"]) and cfg.latent_dim == params["model"]["latent_dim"]
    if params_file == "params.yaml":  # the defaults every committed model was trained with
        assert cfg == DebCMConfig()


def test_a_key_in_the_wrong_training_group_is_an_error():
    from pipeline.models.debcm import student_config

    groups = {"model": {"latent_dim": 4}, "adjustment": {"kl_weight": 1}, "student": {}}
    with pytest.raises(ParamsError, match="'adjustment'.*kl_weight"):
        student_config(groups.get)
    with pytest.raises(ParamsError, match="'student'.*latent_dim"):
        student_config({"student": {"latent_dim": 4}}.get)


def test_every_training_stage_tracks_the_groups_it_reads_whole():
    """train_teacher: model (its CMVAE part); train_student and the matrix: model, adjustment and student
    (cmvae_kl trains with student.kl_weight, so `dvc exp run -S student.kl_weight=...` re-runs the matrix);
    the sweep: model and adjustment but not student, whose kl_weight it varies itself."""
    params = _stage_params()
    assert "model" in params["train_teacher"] and not {"adjustment", "student"} & set(params["train_teacher"])
    for name in ("train_student", "baselines"):
        assert set(TRAINING_GROUPS) <= set(params[name]), name
    assert {"model", "adjustment"} <= set(params["sweep"]) and "student" not in params["sweep"]
    for name, listed in params.items():
        assert not any(p.split(".", 1)[0] in (*TRAINING_GROUPS, "train") for p in listed if "." in p), name
    assert 'group("student")' not in (ROOT / "stages" / "sweep.py").read_text()


def test_baselines_track_the_whole_student_group_because_cmvae_kl_trains_with_its_kl_weight():
    """cmvae_kl (the 2x2's teacher-only cell) is built with student.kl_weight: the matrix must re-run when it
    changes (it did not when the stage listed every student key but kl_weight)."""
    from pipeline.models.baselines import variant
    from pipeline.models.debcm import DebCMConfig

    built = variant("cmvae_kl", DebCMConfig(latent_dim=4, hidden_dims=(8,), kl_weight=4)).build(6, 6, None)
    assert built.config.kl_weight == 4.0
    assert "student" in _stage_params()["baselines"]


def test_report_reads_no_student_params():
    """kl_weight comes from the trained student's files (pipeline.models.registry.trained_config)."""
    params = _stage_params()["report"]
    assert not any(p in TRAINING_GROUPS or p.split(".", 1)[0] in TRAINING_GROUPS for p in params)
    source = (ROOT / "stages" / "report.py").read_text()
    assert not any(f'group("{g}")' in source for g in TRAINING_GROUPS)


def test_baselines_stage_tracks_every_baselines_key_but_the_variant_list():
    """A knob of the baselines must re-run the matrix; the list itself only adds or drops items."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["baselines"]
    tracked = {p.split(".", 1)[1] for p in stage["params"] if isinstance(p, str) and p.startswith("baselines.")}
    assert tracked == set(params["baselines"]) - {"variants"} and "baselines" not in stage["params"]
    assert "models/teacher" in stage["deps"]  # the distilled variants read it


@pytest.mark.parametrize("params_file", ["params.yaml", "tests/e2e/params.yaml"])
def test_dvc_yaml_trains_evaluates_and_reports_the_variants_of_the_params(params_file):
    """The matrix and evaluate read baselines.variants; evaluate and report depend on the matrix's parent
    folder (not one entry per variant), and evaluate's per-variant tables are one folder."""
    from pipeline.config import from_group
    from pipeline.models.baselines import DEFAULT_VARIANTS, BaselineParams

    listed = from_group(BaselineParams, yaml.safe_load((ROOT / params_file).read_text())["baselines"], "baselines")
    assert listed.variants == DEFAULT_VARIANTS  # the documented default subset
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert stages["baselines"]["matrix"]["variant"] == "${baselines.variants}"
    for name in ("evaluate", "report"):
        assert {"models/student", "models/baselines"} <= set(stages[name]["deps"]), name
        assert not any(d.startswith("models/baselines/") for d in stages[name]["deps"]), name
    assert "baselines" in stages["evaluate"]["params"]  # variants; report follows evaluate's per-video table
    assert "metrics/variants" in {next(iter(m)) if isinstance(m, dict) else m for m in stages["evaluate"]["outs"]}
    assert "data/eval/per_video.parquet" in stages["report"]["deps"]  # the report's numbers, every variant's


def test_sweep_params_are_checked():
    from pipeline.config import from_group
    from stages.sweep import SweepParams

    assert from_group(SweepParams, {"kl_weights": [0, 40], "schemes": ["weak"]}, "sweep").kl_weights == (0.0, 40.0)
    assert from_group(SweepParams, {"kl_weights": []}, "sweep").kl_weights == ()  # empty: no sweep
    for bad in ([1, 1], [-1, 2]):
        with pytest.raises(ParamsError, match="sweep.kl_weights"):
            from_group(SweepParams, {"kl_weights": bad}, "sweep")


@pytest.mark.parametrize("params_file", ["params.yaml", "tests/e2e/params.yaml"])
def test_every_dotted_param_dvc_tracks_is_in_the_params_file(params_file):
    """DVC refuses to run a stage whose `group.key` param is absent from params.yaml (defaults do not count)."""
    params = yaml.safe_load((ROOT / params_file).read_text())
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    dotted = {p for st in stages.values() for p in st.get("params", []) if isinstance(p, str) and "." in p}
    missing = sorted(p for p in dotted if p.split(".", 1)[1] not in (params.get(p.split(".", 1)[0]) or {}))
    assert missing == []
