"""Training runs (pipeline/experiment.py), the variants (pipeline/models/baselines.py) and the per-scheme
evaluation (pipeline/evaluate.evaluate_runs) on the synthetic world of test_train."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pipeline.errors import DataError, ParamsError
from pipeline.evaluate import evaluate_runs, sets_of_scheme
from pipeline.experiment import RunsConfig, load_runs, model_path, teacher_path, train_teachers, train_variant
from pipeline.io import file_md5
from pipeline.models.baselines import VARIANTS, cmvae_part, variant
from pipeline.models.cmvae import CMVAE
from pipeline.models.debcm import DebCM, DebCMConfig
from pipeline.sweep import kl_sweep, sweep_row
from pipeline.data.features import load_features
from pipeline.training.checkpoint import data_fingerprint
from pipeline.training.data import build_train_data
from test_train import tiny_train, world  # noqa: F401  (module fixture of the synthetic world)

STUDENT = DebCMConfig(latent_dim=16, hidden_dims=(32,), num_negatives=10, kl_weight=0.5)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def runs(**kw) -> RunsConfig:
    return RunsConfig(seeds=(0, 1), schemes=("weak",), loop=tiny_train(epochs=2), **kw)


def test_variants_change_one_thing_each():
    built = {name: variant(name, STUDENT) for name in VARIANTS}
    models = {name: v.build(24, 24, 12) for name, v in built.items()}
    assert built["student"].uses_teacher and not any(built[n].uses_teacher for n in VARIANTS[1:])
    assert type(models["cmvae"]) is CMVAE and all(isinstance(models[n], DebCM) for n in VARIANTS if n != "cmvae")
    assert models["no_teacher"].config.kl_weight == 0 and models["no_teacher"].config.confounder_mode == "batch"
    assert models["decrs"].config.confounder_mode == "global" and models["decrs"].config.kl_weight == 0
    for name, inference in (("interaction", "backdoor"), ("interaction_content", "content")):
        cfg = models[name].config  # no_teacher but for the confounder: u^T W g(m) in place of concat
        assert dataclasses.asdict(cfg) == dataclasses.asdict(dataclasses.replace(
            models["no_teacher"].config, confounder="interaction", inference=inference))
        assert hasattr(models[name], "interaction") and not hasattr(models[name], "project")
    assert models["cmvae"].config.latent_dim == STUDENT.latent_dim  # same backbone as the student
    assert not variant("student", dataclasses.replace(STUDENT, kl_weight=0.0)).uses_teacher
    with pytest.raises(ParamsError, match="baseline 'popularity'"):
        variant("popularity", STUDENT)


def test_runs_config_is_checked(world):  # noqa: F811
    ds = world[1]
    with pytest.raises(ParamsError, match="repeats a seed"):
        RunsConfig(seeds=(0, 0)).validate()
    with pytest.raises(ParamsError, match=r"\['nope'\] not in the dataset"):
        RunsConfig(schemes=("nope",)).schemes_of(ds)
    assert RunsConfig().schemes_of(ds) == ds.schemes


def test_teacher_then_student_per_seed_deterministic_and_evaluated_per_scheme(world, tmp_path):  # noqa: F811
    features_dir, ds, _ = world
    feats = load_features(features_dir)
    teachers = train_teachers(feats, ds, cmvae_part(STUDENT), runs(), tmp_path / "teacher", tmp_path / "work")
    assert set(teachers) == {"s0", "s1"} and all(teacher_path(tmp_path / "teacher", s).exists() for s in (0, 1))
    out = {}
    for attempt in ("a", "b"):
        summary = train_variant("student", feats, ds, STUDENT, runs(), tmp_path / attempt, tmp_path / "work",
                                teacher_dir=tmp_path / "teacher")
        assert set(summary) == {"weak_s0", "weak_s1"}
        out[attempt] = [file_md5(model_path(tmp_path / attempt, "weak", s)) for s in (0, 1)]
    assert out["a"] == out["b"]  # same data, params and seed: the same bytes
    assert out["a"][0] != out["a"][1]  # another seed: another model
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").rglob("last.pt"))  # no stale resume state
    with pytest.raises(DataError, match="no teacher for seed 5"):
        train_variant("student", feats, ds, STUDENT, RunsConfig(seeds=(5,), schemes=("weak",), loop=tiny_train()),
                      tmp_path / "c", tmp_path / "work", teacher_dir=tmp_path / "teacher")

    # the kl sweep retrains the same runs: its row at the student's weight is that student's validation score,
    # and at 0 the no-teacher variant's (no teacher loaded)
    table = kl_sweep(feats, ds, STUDENT, runs(), [STUDENT.kl_weight, 0.0], tmp_path / "teacher")
    assert table["kl_weight"].tolist() == [0.0, STUDENT.kl_weight]
    plain = train_variant("no_teacher", feats, ds, STUDENT, runs(), tmp_path / "nt", tmp_path / "work")
    for row, scores in ((0, plain), (1, summary)):
        best = [s["best_score"] for s in scores.values()]
        assert table["val_recall"][row] == pytest.approx(np.mean(best), abs=1e-12)
        assert table["val_weak"][row] == table["val_recall"][row]
        assert table["val_recall_std"][row] == pytest.approx(np.std(best, ddof=1), abs=1e-12)
    with pytest.raises(ParamsError, match="sweep.kl_weights"):
        kl_sweep(feats, ds, STUDENT, runs(), [1.0, 1.0], tmp_path / "teacher")

    per_seed, per_video = evaluate_runs(load_runs(tmp_path / "a", ["weak"], [0, 1]), feats, ds, ks=(10, 25))
    assert set(per_seed) == {0, 1} and set(per_video["seed"]) == {0, 1}
    assert set(per_video["set"]) == set(sets_of_scheme(ds, "weak"))
    sets = {k.split("/")[0] for k in per_seed[0]}
    assert sets == set(sets_of_scheme(ds, "weak")) and "weak" in sets
    assert not any(s.startswith("strong") for s in sets)  # a weak-split model never scores the strong test set
    assert all(0.0 <= v <= 1.0 for v in per_seed[0].values())


def test_fingerprint_changes_with_the_data(world):  # noqa: F811
    data = build_train_data(world[0], world[1], "weak")
    before = data_fingerprint(data)
    assert data_fingerprint(data) == before and data_fingerprint(data, "teacher-md5") != before
    data.music_idx = torch.flip(data.music_idx, [0])
    assert data_fingerprint(data) != before
    assert isinstance(np.frombuffer(bytes.fromhex(before), dtype=np.uint8), np.ndarray)


def test_sweep_row_mean_std_and_per_scheme():
    row = sweep_row(4, {"weak_s0": 0.2, "weak_s1": 0.4, "strong_s0": 0.6, "strong_s1": 0.6}, ["weak", "strong"])
    assert row["kl_weight"] == 4.0 and row["val_recall"] == pytest.approx(0.45)
    # the seed spread: seed 0 averages 0.4, seed 1 0.5 over the schemes (not the spread between schemes)
    assert row["val_recall_std"] == pytest.approx(np.std([0.4, 0.5], ddof=1))
    assert row["val_weak"] == pytest.approx(0.3) and row["val_strong"] == pytest.approx(0.6)
    assert sweep_row(0, {"weak_s0": 0.5}, ["weak"])["val_recall_std"] == 0.0
