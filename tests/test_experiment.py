"""Training runs (pipeline/experiment.py), the variants (pipeline/models/baselines/) and the per-scheme
evaluation (pipeline/evaluate.evaluate_runs) on the synthetic world of test_train."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pipeline.errors import DataError, ParamsError
from pipeline.evaluate import evaluate_runs, sets_of_scheme
from pipeline.experiment import (RunsConfig, evaluated_variants, load_runs, metrics_path, model_path, teacher_path,
                                 train_teachers, train_variant)
from pipeline.io import file_md5
from pipeline.models.baselines import BaselineParams, cmvae_part, variant
from pipeline.models.baselines.calibration import Calibrated
from pipeline.models.cmvae import CMVAE
from pipeline.models.debcm import DebCM, DebCMConfig
from pipeline.models.registry import load_model
from pipeline.sweep import kl_sweep, sweep_row
from pipeline.data.features import load_features
from pipeline.training.checkpoint import data_fingerprint
from pipeline.training.parallel import plan
from pipeline.training.data import build_train_data, build_union_data, union_pairs, uploader_distributions
from test_train import tiny_train, world  # noqa: F401  (module fixture of the synthetic world)

STUDENT = DebCMConfig(latent_dim=16, hidden_dims=(32,), num_negatives=10, kl_weight=0.5)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def runs(**kw) -> RunsConfig:
    # one run at a time unless a test asks for processes (spawning them costs seconds)
    return RunsConfig(seeds=(0, 1), schemes=("weak",), loop=tiny_train(epochs=2), **{"workers": 1, **kw})


ORIGINAL = ("student", "no_teacher", "cmvae", "decrs", "interaction", "interaction_content")


def test_variants_change_one_thing_each():
    built = {name: variant(name, STUDENT) for name in ORIGINAL}
    models = {name: v.build(24, 24, 12) for name, v in built.items()}
    assert built["student"].uses_teacher and not any(built[n].uses_teacher for n in ORIGINAL[1:])
    assert type(models["cmvae"]) is CMVAE and all(type(models[n]) is DebCM for n in ORIGINAL if n != "cmvae")
    assert all(built[n].kind == "neural" and not built[n].union for n in ORIGINAL)
    assert models["no_teacher"].config.kl_weight == 0 and models["no_teacher"].config.confounder_mode == "batch"
    assert models["decrs"].config.confounder_mode == "global" and models["decrs"].config.kl_weight == 0
    for name, inference in (("interaction", "backdoor"), ("interaction_content", "content")):
        cfg = models[name].config  # no_teacher but for the confounder: u^T W g(m) in place of concat
        assert dataclasses.asdict(cfg) == dataclasses.asdict(dataclasses.replace(
            models["no_teacher"].config, confounder="interaction", inference=inference))
        assert hasattr(models[name], "interaction") and not hasattr(models[name], "project")
    assert models["cmvae"].config.latent_dim == STUDENT.latent_dim  # same backbone as the student
    assert not variant("student", dataclasses.replace(STUDENT, kl_weight=0.0)).uses_teacher
    with pytest.raises(ParamsError, match="baseline 'nope'"):
        variant("nope", STUDENT)
    assert evaluated_variants(BaselineParams(variants=("linear", "cmvae"))) == ["student", "linear", "cmvae"]
    assert metrics_path("linear").as_posix() == "metrics/variants/linear.json"


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
    side_by_side = kl_sweep(feats, ds, STUDENT, runs(workers=2), [STUDENT.kl_weight, 0.0], tmp_path / "teacher")
    assert side_by_side.equals(table)  # every weight's runs in one pool of processes: the same numbers

    per_seed, per_video = evaluate_runs(load_runs(tmp_path / "a", ["weak"], [0, 1]), feats, ds, ks=(10, 25))
    assert set(per_seed) == {0, 1} and set(per_video["seed"]) == {0, 1}
    assert set(per_video["set"]) == set(sets_of_scheme(ds, "weak"))
    sets = {k.split("/")[0] for k in per_seed[0]}
    assert sets == set(sets_of_scheme(ds, "weak")) and "weak" in sets
    assert not any(s.startswith("strong") for s in sets)  # a weak-split model never scores the strong test set
    assert all(0.0 <= v <= 1.0 for v in per_seed[0].values())


def test_runs_split_the_cores_between_processes():
    assert plan(2, 0, 18) == (2, 1) and plan(8, 2, 18) == (2, 4) and plan(4, 0, 3) == (3, 1)
    assert plan(1, 0, 5) == (1, 1) and plan(2, 0, 1) == (1, 2) and plan(2, 5, 18) == (5, 1)  # as asked
    with pytest.raises(ParamsError, match="train.workers"):
        RunsConfig(workers=-1).validate()


def test_parallel_runs_are_byte_identical_to_one_after_another(world, tmp_path):  # noqa: F811
    features_dir, ds, _ = world
    feats = load_features(features_dir)
    out = {}
    for workers in (1, 2):
        root = tmp_path / f"w{workers}"
        summary = train_variant("interaction", feats, ds, STUDENT, runs(workers=workers), root / "models",
                                root / "work", live_dir=root / "live")
        teachers = train_teachers(feats, ds, cmvae_part(STUDENT), runs(workers=workers), root / "teacher", root / "tw")
        out[workers] = (summary, [file_md5(model_path(root / "models", "weak", s)) for s in (0, 1)], teachers,
                        [file_md5(teacher_path(root / "teacher", s)) for s in (0, 1)])
        assert all((root / "live" / f"weak_s{s}" / "metrics.json").exists() for s in (0, 1))
    assert out[1] == out[2]  # summaries (with the interaction diagnostics) and model bytes
    with pytest.raises(DataError, match="no teacher for seed 5"):  # a worker's error reaches the stage
        train_variant("student", feats, ds, STUDENT, RunsConfig(seeds=(5, 6), schemes=("weak",), loop=tiny_train(),
                                                                 workers=2), tmp_path / "c", tmp_path / "wc",
                      teacher_dir=tmp_path / "teacher")


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


def test_union_data_is_exactly_the_ugc_and_pgc_training_pairs(world):  # noqa: F811
    features_dir, ds, _ = world
    feats = load_features(features_dir)
    pairs = union_pairs(ds, "weak")
    split = ds.split("weak")
    ugc_train = ds.ugc[ds.ugc["video_id"].isin(split.loc[split["split"] == "train", "video_id"])]
    pgc = ds.pgc_pairs("weak")  # the weak scheme's teacher's pairs
    assert set(ds.pgc["split"]) >= {"train", "val"}
    expected = set(zip(ugc_train["video_id"], ugc_train["music_id"])) | \
        set(zip(*pgc.loc[pgc["split"] == "train", ["video_id", "music_id"]].to_numpy().T))
    assert set(zip(pairs["video_id"], pairs["music_id"])) == expected and len(pairs) == len(expected)
    assert not set(pairs["video_id"]) & set(ds.pgc.loc[ds.pgc["split"] != "train", "video_id"])  # no PGC val pair
    strong = union_pairs(ds, "strong")
    held = ds.held_out_music("strong")
    assert held and not set(strong.loc[strong["source"] == "pgc", "music_id"]) & held  # no held-out music
    ugc, union = build_train_data(feats, ds, "weak"), build_union_data(feats, ds, "weak")
    n_ugc, n_pgc = len(ugc.video_idx), int((pgc["split"] == "train").sum())
    assert len(union.video_idx) == n_ugc + n_pgc
    assert torch.equal(union.video_idx[:n_ugc], ugc.video_idx) and torch.equal(union.val_video, ugc.val_video)
    tail = pgc[pgc["split"] == "train"]
    rows = feats.video_rows(tail["video_id"].tolist())
    assert torch.equal(union.visual[union.video_idx[n_ugc:]], feats.visual[rows])  # each pair's own features
    assert [ds.music_ids[i] for i in union.music_idx[n_ugc:]] == tail["music_id"].tolist()
    assert torch.equal(union.uploader_dist[union.uploader_idx[n_ugc:]],
                       torch.tensor(ds.prior("weak"), dtype=torch.float32).expand(n_pgc, -1))  # no uploader: the prior


def test_uploader_distributions_are_what_training_reads(world):  # noqa: F811
    features_dir, ds, _ = world
    data = build_train_data(features_dir, ds, "weak")
    split = ds.split("weak")
    train_ids = split.loc[split["split"] == "train", "video_id"].tolist()
    got = uploader_distributions(ds, "weak", train_ids)
    assert np.array_equal(got, data.uploader_dist[data.uploader_idx].numpy())
    assert np.allclose(uploader_distributions(ds, "weak", ["not-a-ugc-video"]), ds.prior("weak")[None])


def one_run(**kw) -> RunsConfig:
    return RunsConfig(seeds=(0,), schemes=("weak",), loop=tiny_train(epochs=2), **kw)


def test_closed_form_and_union_variants_fit_save_and_evaluate(world, tmp_path):  # noqa: F811
    features_dir, ds, _ = world
    feats = load_features(features_dir)
    params = BaselineParams(ridge_alphas=(10.0, 1000.0))
    summary = train_variant("linear", feats, ds, STUDENT, one_run(), tmp_path / "linear", tmp_path / "w", params=params)
    assert summary["weak_s0"]["epochs_run"] == 0 and summary["weak_s0"]["fit"]["alpha"] in (10.0, 1000.0)
    model = load_model(model_path(tmp_path / "linear", "weak", 0))
    data = build_train_data(feats, ds, "weak")
    from pipeline.training.loop import validation_recall
    assert validation_recall(model, data, 25) == pytest.approx(summary["weak_s0"]["best_score"])
    per_seed, _ = evaluate_runs(load_runs(tmp_path / "linear", ["weak"], [0]), feats, ds, ks=(10, 25))
    assert 0 <= per_seed[0]["weak/full/recall@25"] <= 1
    pop = train_variant("popularity_pgc", feats, ds, STUDENT, one_run(), tmp_path / "pop", tmp_path / "w")
    pgc_train = int((ds.pgc_pairs("weak")["split"] == "train").sum())
    assert pop["weak_s0"]["fit"]["pairs"] == len(data.video_idx) + pgc_train  # counted over UGC + PGC pairs
    no_pgc = dataclasses.replace(ds, pgc=ds.pgc.iloc[:0])
    skipped = train_variant("cmvae_pgc", feats, no_pgc, STUDENT, one_run(), tmp_path / "x", tmp_path / "w")
    assert "no PGC training pairs" in skipped["skipped"] and not (tmp_path / "x").exists()


def test_calibration_trains_its_base_as_the_base_variant_and_is_the_base_at_weight_zero(world, tmp_path):  # noqa: F811
    features_dir, ds, _ = world
    feats = load_features(features_dir)
    base = train_variant("cmvae", feats, ds, STUDENT, one_run(), tmp_path / "cmvae", tmp_path / "w1")
    summary = train_variant("calibration", feats, ds, STUDENT, one_run(), tmp_path / "cal", tmp_path / "w2",
                            params=BaselineParams(calibration_weight=0.8))
    assert summary["weak_s0"]["fit"]["base"] == base["weak_s0"] and summary["weak_s0"]["fit"]["temperature"] > 0
    assert not (tmp_path / "w2").exists()  # the base's folder is temporary
    model = load_model(model_path(tmp_path / "cal", "weak", 0))
    plain = load_model(model_path(tmp_path / "cmvae", "weak", 0))
    assert isinstance(model, Calibrated) and model.config.weight == 0.8
    assert all(torch.equal(a, b) for a, b in zip(model.base.state_dict().values(), plain.state_dict().values()))
    ranks = {name: evaluate_runs({("weak", 0): m}, feats, ds, ks=(10, 25))[1]["rank_full"]
             for name, m in (("calibrated", model), ("plain", plain))}
    assert (ranks["calibrated"] != ranks["plain"]).any()  # evaluation passes each test video's uploader
    model.config.weight = 0.0
    assert (evaluate_runs({("weak", 0): model}, feats, ds, ks=(10, 25))[1]["rank_full"] == ranks["plain"]).all()


def test_distilled_variant_loads_the_teacher_and_skips_without_one(world, tmp_path):  # noqa: F811
    features_dir, ds, _ = world
    feats = load_features(features_dir)
    train_teachers(feats, ds, cmvae_part(STUDENT), one_run(), tmp_path / "teacher", tmp_path / "w")
    summary = train_variant("ips_pgc", feats, ds, STUDENT, one_run(), tmp_path / "ips", tmp_path / "w",
                            teacher_dir=tmp_path / "teacher")
    assert summary["weak_s0"]["epochs_run"] == 2
    assert load_model(model_path(tmp_path / "ips", "weak", 0)).config.distill_weight == 1.0
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "summary.json").write_text('{"skipped": "the source has no PGC pairs"}')
    skipped = train_variant("ips_pgc", feats, ds, STUDENT, one_run(), tmp_path / "y", tmp_path / "w",
                            teacher_dir=tmp_path / "none")
    assert skipped == {"skipped": "ips_pgc needs the PGC teacher: the source has no PGC pairs"}


def test_the_2x2_cells_cmvae_kl_learns_from_the_teacher_and_teacher_is_the_teacher(world, tmp_path):  # noqa: F811
    """docs/architecture.md section 10: cmvae_kl is CMVAE + the KL to the teacher with no adjustment; `teacher` is
    the PGC teacher
    itself, scored on UGC (its UGC validation Recall is the report's truth-free guard)."""
    from pipeline.training.loop import validation_recall

    features_dir, ds, _ = world
    feats = load_features(features_dir)
    train_teachers(feats, ds, cmvae_part(STUDENT), one_run(), tmp_path / "teacher", tmp_path / "w")
    summary = train_variant("cmvae_kl", feats, ds, STUDENT, one_run(), tmp_path / "kl", tmp_path / "w",
                            teacher_dir=tmp_path / "teacher")
    model = load_model(model_path(tmp_path / "kl", "weak", 0))
    assert isinstance(model, DebCM) and model.config.confounder == "none" and model.config.kl_weight == 0.5
    assert not hasattr(model, "genre_embedding") and not hasattr(model, "interaction")
    assert summary["weak_s0"]["epochs_run"] == 2
    data = build_train_data(feats, ds, "weak")
    batch = data.batch(torch.arange(8))
    v_z, m_z = model.video_embedding(batch), model.music_embedding(batch)
    assert torch.all(m_z[:, -1] == 0) and torch.allclose(model.score(v_z, m_z)[:, :], v_z @ m_z.t())
    teacher = train_variant("teacher_alone", feats, ds, STUDENT, one_run(), tmp_path / "t", tmp_path / "w",
                            teacher_dir=tmp_path / "teacher")
    copied = load_model(model_path(tmp_path / "t", "weak", 0))
    original = load_model(teacher_path(tmp_path / "teacher", 0))
    assert type(copied) is CMVAE
    assert all(torch.equal(a, b) for a, b in zip(copied.state_dict().values(), original.state_dict().values()))
    assert teacher["weak_s0"]["best_score"] == pytest.approx(validation_recall(original, data, 25))
    assert teacher["weak_s0"]["epochs_run"] == 0 and teacher["weak_s0"]["fit"] == {"teacher": "s0.pt"}


def test_every_run_records_every_criterion_and_the_sweep_keeps_each_criterions_best(world, tmp_path):  # noqa: F811
    """docs/architecture.md section 10: early stopping can watch a truth-free criterion other than the papers'
    validation Recall; the
    sweep keeps each criterion's best state so the report can price each choice against the truth."""
    from pipeline.report.guard import teacher_guard
    from pipeline.training.loop import best_by_criterion, criteria_scores

    features_dir, ds, _ = world
    feats = load_features(features_dir)
    data = build_train_data(feats, ds, "weak")
    assert set(data.val_criteria) == {"ips", "diverse"}
    assert not build_train_data(feats, ds, "weak", kind="pgc").val_criteria  # PGC videos have no uploader
    train_teachers(feats, ds, cmvae_part(STUDENT), one_run(), tmp_path / "teacher", tmp_path / "w")
    loop = dataclasses.replace(tiny_train(epochs=3), select="diverse")
    summary = train_variant("no_teacher", feats, ds, STUDENT, RunsConfig(seeds=(0,), schemes=("weak",), loop=loop),
                            tmp_path / "nt", tmp_path / "w")["weak_s0"]
    assert set(summary["selection"]) == {"val", "ips", "diverse"}
    assert summary["best_epoch"] == summary["selection"]["diverse"]["best_epoch"]
    assert summary["best_score"] == pytest.approx(summary["selection"]["diverse"]["best_score"])
    model = load_model(model_path(tmp_path / "nt", "weak", 0))
    if summary["best_epoch"] == 2:  # the last epoch's state is the model's: its scores must be those recorded
        assert criteria_scores(model, data, 25)["diverse"] == pytest.approx(summary["best_score"])
    assert best_by_criterion([{"epoch": 0, "val/recall@25": 0.3, "val_ips/recall@25": 0.5},
                              {"epoch": 1, "val/recall@25": 0.4, "val_ips/recall@25": 0.5}], 25) == {
        "val": {"best_epoch": 1, "best_score": 0.4}, "ips": {"best_epoch": 0, "best_score": 0.5}}
    table = kl_sweep(feats, ds, STUDENT, one_run(), [0.0, STUDENT.kl_weight], tmp_path / "teacher", tmp_path / "kept")
    assert {"val_recall", "val_ips_recall", "val_diverse_recall", "val_ips_recall_std"} <= set(table.columns)
    for weight in ("kl_0", "kl_0.5"):
        for criterion in ("val", "ips", "diverse"):
            kept = load_model(tmp_path / "kept" / weight / criterion / "weak_s0.pt")
            assert isinstance(kept, DebCM)
    with pytest.raises(ParamsError, match="train.loop.select"):
        dataclasses.replace(tiny_train(), select="truth").validate()
    train_variant("cmvae", feats, ds, STUDENT, one_run(), tmp_path / "models" / "baselines" / "cmvae", tmp_path / "w")
    (tmp_path / "models").joinpath("teacher").symlink_to(tmp_path / "teacher")
    guard = teacher_guard(ds, feats, tmp_path / "models", "weak", [0], 25)
    assert 0 <= guard["teacher_val"] <= 1 and 0 <= guard["reference_val"] <= 1 and guard["reference"] == "cmvae"
    # scored under every criterion, the warning's (report.guard_criterion, default diverse) named
    assert set(guard["teacher"]) == set(guard["reference_scores"]) == {"val", "ips", "diverse"}
    assert guard["criterion"] == "diverse" and guard["teacher_val"] == guard["teacher"]["diverse"]
    assert guard["reference_val"] == guard["reference_scores"]["diverse"]
    on_val = teacher_guard(ds, feats, tmp_path / "models", "weak", [0], 25, criterion="val")
    assert on_val["teacher_val"] == guard["teacher"]["val"] and on_val["teacher"] == guard["teacher"]
    assert 0 <= guard["domain_auc"]["visual"] <= 1
    assert (guard["warning"] is not None) == (guard["teacher_val"] < guard["reference_val"])
