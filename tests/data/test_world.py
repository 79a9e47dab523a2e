"""The simulated world: its statistics, its confounding, determinism, and truth isolation."""
from __future__ import annotations

import ast
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.config import from_group
from pipeline.data.schema import GENRES
from pipeline.data.latents import SCENES
from pipeline.data.world import (AFFINITY, GENRE_PROFILE, WorldParams, couple_to_taste, draw_video_noise, genre_shares,
                                 suited_scenes, video_table)
from pipeline.data.worldgen import build_world
from pipeline.errors import ParamsError
from pipeline.io import read_ids, tree_md5

ROOT = Path(__file__).resolve().parents[2]
SMALL = WorldParams(n_music=120, n_videos=3000, n_uploaders=60, n_pgc=800, n_channels=10, render=False,
                    visual_dim=32, text_dim=16, audio_dim=16, smile_dim=16)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("w") / "world"
    info = build_world(SMALL, out)
    return out, info


def _truth(out: Path):
    t = out / "truth"
    compat = np.load(t / "compatibility.npy").astype(np.float64)
    vids = read_ids(t / "video_ids.txt")
    music = pd.read_parquet(t / "music_latents.parquet")
    lat = pd.read_parquet(t / "video_latents.parquet").set_index("video_id").loc[vids]
    ups = pd.read_parquet(t / "uploaders.parquet").set_index("uploader_id")
    return compat, lat, music, ups


def test_tables_and_statistics(world):
    out, info = world
    videos = pd.read_parquet(out / "videos.parquet")
    music = pd.read_parquet(out / "music.parquet")
    pairs = pd.read_parquet(out / "pairs.parquet")
    assert len(pairs) == len(videos) == SMALL.n_videos + SMALL.n_pgc
    ugc_uses = pairs[pairs.kind == "ugc"].music_id.value_counts()
    assert ugc_uses.min() >= SMALL.min_videos_per_music  # TT-150k-style filter held
    assert (music.set_index("music_id").popularity == ugc_uses.reindex(music.music_id).fillna(0).values).all()
    # captions: a share missing, several languages present
    missing = videos.text.isna().mean()
    assert abs(missing - SMALL.caption_missing) < 0.04
    texts = videos.text.dropna()
    assert texts.str.contains("beach|city|party").any() and texts.str.contains("playa|ciudad").any()
    assert texts.str.contains("海边|城市").any()
    # genres skewed like TT-150k: classical the most common, every genre present
    counts = music.genre.value_counts()
    assert set(counts.index) == set(GENRES) and counts.idxmax() == "classical"
    assert info["n_ugc"] == SMALL.n_videos


def test_feature_level_world_matrices(world):
    out, _ = world
    f = out / "features"
    vids, mids = read_ids(f / "video_ids.txt"), read_ids(f / "music_ids.txt")
    assert vids == sorted(vids) and mids == sorted(mids)
    visual, text, mask = (np.load(f / n) for n in ("video_visual.npy", "video_text.npy", "video_text_mask.npy"))
    assert visual.shape == (len(vids), 32) and visual.dtype == np.float32 and np.isfinite(visual).all()
    assert (text[mask == 0] == 0).all() and (np.abs(text[mask == 1]).sum(1) > 0).all()
    audio = np.load(f / "music_audio.npy")
    assert audio.shape == (len(mids), 16)


def _pref_gap(compat, lat, music, ups, kind, p):
    """Per video: pi_u(g_chosen) minus its expectation under the same choice model without taste (b=0)."""
    rows = np.flatnonzero((lat.kind == kind).to_numpy())
    genre_idx = pd.Categorical(music.genre, categories=GENRES).codes
    m_index = {m: i for i, m in enumerate(music.music_id)}
    base = p.popularity_exponent * np.log(music.pop_weight.to_numpy()) if kind == "ugc" else 0.0
    logits = compat[rows] / p.temperature + base
    prob = np.exp(logits - logits.max(1, keepdims=True))
    prob /= prob.sum(1, keepdims=True)
    taste = np.stack(ups.loc[lat.uploader_id.to_numpy()[rows], "taste"].to_numpy())[:, genre_idx]
    expected = (prob * taste).sum(1)
    chosen = np.array([m_index[m] for m in lat.music_id.to_numpy()[rows]])
    observed = taste[np.arange(len(rows)), chosen]
    gap = observed - expected
    return gap.mean() / (gap.std(ddof=1) / np.sqrt(len(gap)))


def test_ugc_choices_follow_taste_beyond_compatibility_and_pgc_do_not(world):
    out, _ = world
    compat, lat, music, ups = _truth(out)
    z_ugc = _pref_gap(compat, lat, music, ups, "ugc", SMALL)
    z_pgc = _pref_gap(compat, lat, music, ups, "pgc", SMALL)
    # measured at seeds 0, 1, 2: z_ugc 50, 52, 45; z_pgc 0.2, -0.1, -1.3 (b = 2 is the only cause of the gap)
    assert z_ugc > 20, z_ugc
    assert abs(z_pgc) < 3.5, z_pgc


def test_without_confounder_ugc_shows_no_taste_gap(tmp_path):
    p = replace(SMALL, preference_exponent=0.0, n_videos=1500, n_pgc=50)
    build_world(p, tmp_path / "w")
    compat, lat, music, ups = _truth(tmp_path / "w")
    assert abs(_pref_gap(compat, lat, music, ups, "ugc", p)) < 3.5


def _content_taste_z(lat, ups, kind):
    """z-scores of how far videos' latents follow their uploader's taste pi_u, beyond what the scene explains.

    scene: sum_g pi_u(g) A[s_v, g] minus its mean over the six scenes (its expectation when the scene is
    uniform, as uncoupled). energy, valence: within-scene correlation of the video's value with its uploader's
    taste profile sum_g pi_u(g) GENRE_PROFILE[g], as z = r * sqrt(n)."""
    lat = lat[lat.kind == kind]
    taste = np.stack(ups.loc[lat.uploader_id.to_numpy(), "taste"].to_numpy())
    aff = taste @ AFFINITY.T  # [videos, scenes]
    scene_idx = pd.Categorical(lat.scene, categories=SCENES).codes
    gap = aff[np.arange(len(lat)), scene_idx] - aff.mean(1)
    z = {"scene": gap.mean() / (gap.std(ddof=1) / np.sqrt(len(gap)))}
    for j, latent in enumerate(("energy", "valence")):
        target = taste @ np.array([GENRE_PROFILE[g][j] for g in GENRES])
        frame = pd.DataFrame({"x": lat[latent].to_numpy(), "t": target, "s": scene_idx})
        within = frame[["x", "t"]] - frame.groupby("s")[["x", "t"]].transform("mean")
        z[latent] = np.corrcoef(within.x, within.t)[0, 1] * np.sqrt(len(frame))
    return z


@pytest.fixture(scope="module")
def coupled_world(tmp_path_factory):
    out = tmp_path_factory.mktemp("w") / "coupled"
    build_world(replace(SMALL, content_coupling=1.0), out)
    return out


def test_coupled_ugc_content_follows_taste_and_pgc_and_uncoupled_do_not(world, coupled_world):
    _, lat0, _, ups0 = _truth(world[0])
    _, lat1, _, ups1 = _truth(coupled_world)
    uncoupled, coupled = _content_taste_z(lat0, ups0, "ugc"), _content_taste_z(lat1, ups1, "ugc")
    pgc = _content_taste_z(lat1, ups1, "pgc")
    # measured at seeds 0, 1, 2 (c = 1): scene z 19.8, 24.0, 25.1, energy 15.7, 15.5, 10.2, valence 6.7, 6.6, 3.7;
    # UGC at c = 0: |z| <= 1.5; PGC at c = 1: |z| <= 2.1 (PGC is never coupled)
    assert coupled["scene"] > 10 and coupled["energy"] > 5 and coupled["valence"] > 3, coupled
    assert max(abs(v) for v in uncoupled.values()) < 3.5, uncoupled
    assert max(abs(v) for v in pgc.values()) < 3.5, pgc


def test_coupling_keeps_the_main_streams_draws(world, coupled_world):
    """Uploaders, their tastes and every video's own randomness are the same at c = 0 and c = 1 (what is drawn
    after the UGC choices, PGC included, differs: coupled videos choose other music, which uses other numbers)."""
    ups0 = pd.read_parquet(world[0] / "truth" / "uploaders.parquet")
    ups1 = pd.read_parquet(coupled_world / "truth" / "uploaders.parquet")
    ugc_ups = ups0.kind == "ugc"
    assert (ups0.uploader_id == ups1.uploader_id).all()
    assert np.array_equal(np.stack(ups0.taste[ugc_ups]), np.stack(ups1.taste[ugc_ups]))
    lat0 = pd.read_parquet(world[0] / "truth" / "video_latents.parquet").set_index("video_id")
    lat1 = pd.read_parquet(coupled_world / "truth" / "video_latents.parquet").set_index("video_id")
    ugc = lat0.kind == "ugc"
    assert (lat0.render_seed[ugc] == lat1.render_seed[ugc]).all()
    assert (lat0.uploader_id[ugc] == lat1.uploader_id[ugc]).all()
    changed = (lat0.scene != lat1.scene)[ugc].mean()
    assert 0.2 < changed < 0.6, changed  # c = 1: w = 1/2 of the scene law moves to the taste's scenes
    world_json = [json.loads((w / "truth" / "world.json").read_text())["params"] for w in (world[0], coupled_world)]
    assert "content_coupling" not in world_json[0] and world_json[1]["content_coupling"] == 1.0


def test_uncoupled_world_is_the_world_from_before_the_coupling(world):
    """A digest of choices and latents of SMALL (c = 0), taken with the code before `content_coupling` existed:
    the knob at 0 draws nothing extra from the main stream. (Latents rounded to 1e-9, so a CPU's last-bit
    difference in exp does not matter; every file's md5 also matched on this machine.)"""
    out = world[0]
    pairs = pd.read_parquet(out / "pairs.parquet")
    lat = pd.read_parquet(out / "truth" / "video_latents.parquet")
    text = (pairs[["video_id", "music_id"]].to_csv(index=False)
            + lat[["video_id", "scene"]].assign(e=lat.energy.round(9), v=lat.valence.round(9)).to_csv(index=False))
    assert hashlib.md5(text.encode()).hexdigest() == "028559e1d0bed34e2bb922f103308528"


def test_couple_to_taste_is_continuous_at_zero():
    rng = np.random.default_rng(3)
    noise = draw_video_noise(rng, 4000)
    taste = rng.dirichlet(np.full(len(GENRES), 0.3), 4000)
    tiny, mood = couple_to_taste(noise, taste, 1e-9, np.random.default_rng(4))
    assert (tiny["scene_idx"] == noise["scene_idx"]).all()
    pd.testing.assert_frame_equal(video_table(tiny, "v", mood), video_table(noise, "v"), atol=1e-8)
    for c in (1.0, 1e6):  # the scene law is the documented mixture (scene shares within 3 standard errors)
        coupled, mood = couple_to_taste(noise, taste, c, np.random.default_rng(4))
        w = c / (1 + c)
        expected = ((1 - w) / len(SCENES) + w * suited_scenes(taste)).mean(0)
        observed = np.bincount(coupled["scene_idx"], minlength=len(SCENES)) / len(taste)
        assert np.all(np.abs(observed - expected) < 3 * np.sqrt(expected * (1 - expected) / len(taste))), c
    assert np.allclose(mood, taste @ np.array([GENRE_PROFILE[g] for g in GENRES]), atol=1e-5)


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    p = replace(SMALL, n_music=30, n_videos=300, n_pgc=40)
    build_world(p, tmp_path / "a")
    build_world(p, tmp_path / "b")
    build_world(replace(p, seed=7), tmp_path / "c")
    a, b, c = (tree_md5(tmp_path / x) for x in "abc")
    assert a == b
    assert a["pairs.parquet"] != c["pairs.parquet"]


def test_rendered_world_is_deterministic_and_real(tmp_path):
    p = WorldParams(n_music=8, n_videos=30, n_uploaders=4, n_pgc=6, n_channels=2, n_corpus_per_genre=1,
                    music_seconds=2.0, video_seconds=1.0, workers=1)
    build_world(p, tmp_path / "a")
    build_world(p, tmp_path / "b")
    a, b = tree_md5(tmp_path / "a"), tree_md5(tmp_path / "b")
    assert a == b
    videos = pd.read_parquet(tmp_path / "a" / "videos.parquet")
    assert all((tmp_path / "a" / v).exists() for v in videos.path)
    assert sum(k.startswith("genre_corpus/") for k in a) == len(GENRES)
    import av

    with av.open(str(tmp_path / "a" / videos.path.iloc[0])) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        assert sum(1 for _ in c.decode(video=0)) == 15


def test_stage_builds_nothing_when_the_source_is_not_the_world(tmp_path):
    # a world this size would take hours: the stage must not even start it
    (tmp_path / "params.yaml").write_text("world: {n_music: 100000, n_videos: 100000000}\ningest: {source: tt150k}\n")
    out = tmp_path / "data" / "world"
    out.mkdir(parents=True)
    (out / "videos.parquet").write_text("a stale world")
    env = {**os.environ, "BGM_PARAMS": str(tmp_path / "params.yaml"), "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "stages.world", "--out", str(out)], capture_output=True, text=True,
                       cwd=ROOT, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.parent.iterdir()) == ["world"]  # swapped in whole, no temporaries left
    assert [p.name for p in out.iterdir()] == ["summary.json"]
    assert json.loads((out / "summary.json").read_text()) == {
        "built": False, "reason": "ingest.source is 'tt150k', not 'world'"}
    assert "world not built" in r.stderr  # logged, not printed
    import yaml

    assert "ingest.source" in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["world"]["params"]


def test_params_are_checked():
    with pytest.raises(ParamsError, match="unknown key"):
        from_group(WorldParams, {"n_musics": 3}, "world")
    with pytest.raises(ParamsError, match="temperature"):
        from_group(WorldParams, {"temperature": 0}, "world")
    p = from_group(WorldParams, {"compatibility": {"tempo": 0.0}}, "world")
    assert p.compatibility.tempo == 0.0
    assert abs(genre_shares(1.0).sum() - 1) < 1e-12 and np.allclose(genre_shares(0.0), 1 / 6)


# --- truth isolation -------------------------------------------------------------------------------
# Only these modules may name the truth directory: the world writes it, ingest carries it, evaluation
# (and the genre stage's accuracy-against-truth metric) read it.
TRUTH_READERS = {"pipeline/truth.py", "pipeline/data/worldgen.py", "pipeline/data/importers.py", "pipeline/data/importcommon.py",
                 "pipeline/evaluate.py", "stages/evaluate.py", "stages/report.py", "stages/genre.py",
                 "pipeline/report/pervideo.py", "stages/probe.py",  # pervideo.py only names the truth metrics' protocol
                 # the report prices the sweep's truth-free choices against the truth; build.py names the
                 # confirmatory truth metrics (report.confirmatory)
                 "pipeline/report/selection.py", "pipeline/report/build.py"}
TRAINING = ("pipeline/training", "pipeline/models", "pipeline/losses.py", "pipeline/experiment.py",
            "stages/train_teacher.py", "stages/train_student.py")


def _sources():
    for base in ("pipeline", "stages"):
        for f in sorted((ROOT / base).rglob("*.py")):
            yield f.relative_to(ROOT).as_posix(), f.read_text()


def test_only_evaluation_modules_name_the_truth():
    offenders = [rel for rel, text in _sources() if rel not in TRUTH_READERS
                 and any(isinstance(n, ast.Constant) and isinstance(n.value, str) and "truth" in n.value.split("/")
                         for n in ast.walk(ast.parse(text)))]
    assert offenders == []


def test_training_code_does_not_import_truth_readers():
    readers = {r.removesuffix(".py").replace("/", ".") for r in TRUTH_READERS}
    readers.discard("pipeline.truth")  # the guard (forbid_truth_reads) that training stages install
    for rel, text in _sources():
        if not rel.startswith(TRAINING):
            continue
        for node in ast.walk(ast.parse(text)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n in readers for n in names), (rel, names)


def test_dvc_training_stages_do_not_depend_on_truth():
    import yaml

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, st in stages.items():
        if name.startswith("train") or name == "baselines":  # baselines: the matrix of UGC variants
            deps = [str(d) for d in st.get("deps", [])]
            # a `truth` folder anywhere is data they must not see; pipeline/truth.py is the guard they install
            assert not any(d.rstrip("/") in ("data/raw", "data/world") or "truth" in Path(d).parts for d in deps), name


def test_guard_blocks_truth_reads_in_a_training_process(tmp_path):
    (tmp_path / "truth").mkdir()
    (tmp_path / "truth" / "compatibility.npy").write_bytes(b"x")
    (tmp_path / "ok.txt").write_text("fine")
    code = (
        "import sys\nfrom pipeline.truth import forbid_truth_reads\nforbid_truth_reads()\n"
        f"print(open({str(tmp_path / 'ok.txt')!r}).read())\n"
        f"open({str(tmp_path / 'truth' / 'compatibility.npy')!r})\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode != 0 and "fine" in r.stdout
    assert "must not read the world's truth" in r.stderr
