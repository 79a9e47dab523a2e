"""End to end: `dvc repro` on a tiny params file in a fresh copy of the repository."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(args, cwd, **kw):
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", BGM_LOG="WARNING")
    r = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, **kw)
    assert r.returncode == 0, f"{args} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout + r.stderr


def copy_repo(dst: Path, params: str) -> Path:
    """The tracked files (and uncommitted edits to them) copied into a new git repository, with `params` as its
    params.yaml and no dvc.lock, committed (dvclive needs a commit to start)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for f in files:
        if (ROOT / f).is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dst / f)
    (dst / "params.yaml").write_text(params)
    (dst / "dvc.lock").unlink(missing_ok=True)
    _run(["git", "init", "-q"], dst)
    _run(["git", "-c", "user.name=ci", "-c", "user.email=ci@example.invalid", "add", "-A"], dst)
    _run(["git", "-c", "user.name=ci", "-c", "user.email=ci@example.invalid", "commit", "-qm", "e2e"], dst)
    return dst


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return copy_repo(tmp_path_factory.mktemp("e2e") / "repo", (ROOT / "tests/e2e/params.yaml").read_text())


@pytest.mark.slow
def test_dvc_repro_runs_then_is_up_to_date(repo, tmp_path):
    _run(["dvc", "repro"], repo)
    for path in ("data/raw/videos.parquet", "data/raw/music.parquet", "data/raw/pairs.parquet",
                 "data/features/video/video_visual.npy", "data/features/music/music_audio.npy",
                 "data/features/smile/music_smile.npy", "data/features/rhythm.parquet",
                 "data/genre/labels.parquet", "metrics/genre.json", "data/dataset",
                 "data/raw/truth/compatibility.npy", "data/raw/source.json",
                 "models/teacher/s1.pt", "models/student/weak_s0.pt", "models/student/strong_s1.pt",
                 "models/baselines/cmvae/weak_s1.pt", "models/baselines/cmvae_kl/strong_s0.pt",
                 "models/baselines/no_teacher/weak_s0.pt", "models/baselines/teacher_alone/weak_s0.pt",
                 "models/baselines/linear_pgc/strong_s1.pt", "models/sweep/kl_40/diverse/weak_s1.pt",
                 "models/baselines/random/weak_s0.pt", "models/baselines/popularity/strong_s1.pt",
                 "models/baselines/linear/weak_s1.pt", "models/baselines/cca/strong_s0.pt",
                 "plots/recall/weak_full.csv", "plots/ndcg/truth.csv",
                 "reports/claim.md", "reports/tables.md", "reports/genre_share.csv", "reports/genre_share.png",
                 "reports/case_study.md", "reports/seeds.json", "reports/kl_sweep.csv", "reports/intervention.csv",
                 "reports/sweeps.png", "reports/degradations.md", "metrics/headline.json", "reports/index.html",
                 "reports/selection.md", "reports/selection.json"):
        assert (repo / path).exists(), path
    shares = (repo / "reports/genre_share.csv").read_text().splitlines()
    assert shares[0].startswith("source,") and any(line.startswith("student,") for line in shares)
    assert "| rank | student |" in (repo / "reports/case_study.md").read_text()
    sweep = pd.read_csv(repo / "reports/kl_sweep.csv")
    assert sweep["kl_weight"].tolist() == [0.0, 40.0] and sweep["val_recall"].between(0, 1).all()
    assert sweep[["val_ips_recall", "val_diverse_recall"]].stack().between(0, 1).all()
    metrics = json.loads((repo / "metrics/variants/student.json").read_text())
    assert {"weak/full/recall@2", "strong/sampled/ndcg@1", "truth/ndcg@2"} <= set(metrics["mean"])
    assert set(metrics["mean"]) == set(metrics["std"])
    shown = _run(["dvc", "metrics", "show"], repo)
    assert "metrics/headline.json" in shown and "metrics/variants" not in shown  # the per-variant tables are outs
    assert all((repo / f"metrics/variants/{n}.json").exists()
               for n in ("cmvae", "cmvae_kl", "teacher_alone", "linear", "linear_pgc", "cca"))
    claim = json.loads((repo / "reports/claim.json").read_text())["verdicts"]
    assert {"confirmatory", "exploratory"} <= {v["family"] for v in claim}  # report.contrasts name the family
    assert any(v["challenger"] == "student" and v["baseline"] == "cmvae_kl" for v in claim)
    assert "| val |" in (repo / "reports/selection.md").read_text()  # each criterion's kl_weight and regret
    _recommend_ranks_the_pool_and_refuses_bad_videos(repo)
    _pages_play_offline(repo, tmp_path)
    out = _run(["dvc", "repro"], repo)
    assert "up to date" in out and "Running stage" not in out
    out = _run(["dvc", "status"], repo)
    assert "up to date" in out


def _recommend_ranks_the_pool_and_refuses_bad_videos(repo):
    video = "data/raw/" + pd.read_parquet(repo / "data/raw/videos.parquet")["path"].iloc[0]
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    r = subprocess.run([sys.executable, "-m", "pipeline", "recommend", video, "--top", "3", "--json"], cwd=repo,
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout)  # progress bars go to stderr: stdout is the JSON alone
    music = json.loads((repo / "data/dataset/info.json").read_text())["n_music"]
    assert len(result) == 1 and len(result[0]["music"]) == min(3, music)
    scores = [m["score"] for m in result[0]["music"]]
    assert scores == sorted(scores, reverse=True) and len({m["music_id"] for m in result[0]["music"]}) == len(scores)
    (repo / "broken.mp4").write_bytes(b"not a video")
    r = subprocess.run([sys.executable, "-m", "pipeline", "recommend", "broken.mp4"], cwd=repo, env=env,
                       capture_output=True, text=True)
    assert r.returncode != 0 and "broken.mp4" in r.stderr and "Traceback" not in r.stderr


def _pages_play_offline(repo: Path, shots: Path) -> None:
    """reports/index.html and `recommend --html` as a user opens them: every video and song loads in Chromium
    with the network off (screenshots in `shots`)."""
    from chromium import visit_offline

    video = "data/raw/" + pd.read_parquet(repo / "data/raw/videos.parquet")["path"].iloc[0]
    _run([sys.executable, "-m", "pipeline", "recommend", video, "--top", "3", "--html", str(shots / "rec.html")], repo)
    for page, videos, songs in ((repo / "reports/index.html", 2, 2 * 3), (shots / "rec.html", 1, 3)):
        seen = visit_offline(page, shots / page.stem, shots / f"{page.stem}.png", timeout=120)
        assert seen["errors"] == [] and seen["requests"] == [], (page, seen)
        kinds = [m["width"] is not None for m in seen["players"]]
        assert sum(kinds) >= videos and len(kinds) - sum(kinds) >= songs, (page, seen["players"])
        assert all(m["ready"] >= 1 and m["duration"] > 0 for m in seen["players"]), (page, seen["players"])
        assert seen["decoded"], page


@pytest.mark.slow
def test_dvc_exp_run_with_another_seed(repo):
    _run(["git", "-c", "user.name=ci", "-c", "user.email=ci@example.invalid", "add", "dvc.lock"], repo)
    _run(["git", "-c", "user.name=ci", "-c", "user.email=ci@example.invalid", "commit", "-qm", "lock"], repo)
    out = _run(["dvc", "exp", "run", "-S", "world.seed=7"], repo)
    assert "Running stage 'world'" in out


@pytest.mark.slow
def test_dvc_exp_run_kl_weight_then_metrics_diff(repo):
    """`dvc exp run -S student.kl_weight=...` retrains only the student and re-evaluates; the diff lists it."""
    _run(["git", "-c", "user.name=ci", "-c", "user.email=ci@example.invalid", "add", "-A"], repo)
    _run(["git", "-c", "user.name=ci", "-c", "user.email=ci@example.invalid", "commit", "-qm", "lock", "--allow-empty"],
         repo)
    out = _run(["dvc", "exp", "run", "-S", "student.kl_weight=40"], repo)
    assert "Running stage 'train_student'" in out and "Running stage 'evaluate'" in out
    assert "Running stage 'world'" not in out and "Running stage 'train_teacher'" not in out
    diff = _run(["dvc", "exp", "diff"], repo) + _run(["dvc", "params", "diff"], repo)
    assert "student.kl_weight" in diff and "metrics/headline.json" in diff
    # the evaluate plots and the student's dvclive curves, at HEAD and in the workspace (both in DVC's cache)
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    r = subprocess.run(["dvc", "plots", "diff", "HEAD", "--json"], cwd=repo, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    plots = json.loads(r.stdout)
    assert not plots.get("errors"), plots["errors"]
    for name in ("plots/recall/weak_full.csv", "plots/ndcg/truth.csv"):
        assert set(plots["data"][name][0]["revisions"]) == {"HEAD", "workspace"}, name
    assert any(name.startswith("dvclive/student/weak_s0/plots/metrics") for name in plots["data"])
