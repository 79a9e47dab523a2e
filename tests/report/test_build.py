"""The report stage's work end to end on a small synthetic world (pipeline/report/build.py): evaluate's real
per-video table of two untrained variants in, every report file out, byte-identical on a second run."""
import json
import shutil

import pandas as pd
import pytest
import torch

from pipeline.errors import ParamsError
from pipeline.evaluate import evaluate_runs
from pipeline.io import write_json, write_parquet
from pipeline.models.cmvae import CMVAE, CMVAEConfig
from pipeline.models.registry import model_spec
from pipeline.report.build import ReportParams, ReportPaths, check_claim_k, write_report
from pipeline.sampling.dataset import SplitConfig, build_dataset, save_dataset
from pipeline.training.checkpoint import save_torch
from pipeline.data.features import load_features

from test_train import SPLIT, synthetic_world, write_features

OUTPUTS = ("claim.md", "tables.md", "degradations.md", "case_study.md", "genre_share.csv", "genre_share.png",
           "intervention.csv", "sweeps.png", "index.html")


@pytest.fixture(scope="module")
def stage_dir(tmp_path_factory):
    """data/ and models/ as the stages leave them: dataset, features, genre labels, two variants' models on the
    weak scheme (seeds 0, 1), the teacher skipped, and evaluate's per-video table."""
    root = tmp_path_factory.mktemp("stage")
    videos, pairs, genres, rhythm, feats, mask = synthetic_world()
    write_features(feats, mask, videos["video_id"].tolist(), genres["music_id"].tolist(), root / "data/features")
    ds = build_dataset(videos, pairs, genres, rhythm, SplitConfig(**{**SPLIT, "schemes": ("weak",)}))
    save_dataset(ds, root / "data/dataset")
    write_parquet(genres, root / "data/genre/labels.parquet")
    features, tables = load_features(root / "data/features"), []
    for offset, (name, folder) in enumerate((("student", "student"), ("cmvae", "baselines/cmvae"))):
        models = {}
        for seed in (0, 1):
            torch.manual_seed(10 * offset + seed)
            models[("weak", seed)] = CMVAE(24, 24, 12, CMVAEConfig(latent_dim=16, hidden_dims=(32,))).eval()
            save_torch({"model": model_spec(models[("weak", seed)]), "state_dict": models[("weak", seed)].state_dict()},
                       root / "models" / folder / f"weak_s{seed}.pt")
        write_json({"weak_s0": {}, "weak_s1": {}}, root / "models" / folder / "summary.json")
        tables.append(evaluate_runs(models, features, ds, None, (10, 25))[1].assign(variant=name))
    write_json({"skipped": "the source has no PGC pairs (test)"}, root / "models/teacher/summary.json")
    write_parquet(pd.concat(tables, ignore_index=True), root / "data/eval/per_video.parquet")
    return root


def _paths(root, out):
    return ReportPaths(per_video=root / "data/eval/per_video.parquet", dataset=root / "data/dataset",
                       raw=root / "data/raw", features=root / "data/features",
                       labels=root / "data/genre/labels.parquet",
                       genre_metrics=root / "metrics/genre.json", models=root / "models",
                       kl_sweep=root / "reports/kl_sweep.csv", out=out, headline=out / "headline.json")


def test_every_output_written_and_byte_identical_on_a_second_run(stage_dir, tmp_path):
    p = ReportParams(claim_k=25, resamples=199, min_videos=31)  # T_diverse holds 30 videos
    for out in ("a", "b"):
        write_report(p, _paths(stage_dir, tmp_path / out), (10, 25), 40.0)
    for name in (*OUTPUTS, "headline.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    head = json.loads((tmp_path / "a/headline.json").read_text())
    assert set(head) == {"student", "cmvae"} and sum(map(len, head.values())) == 4  # no truth on this source
    assert set(head["student"]) == {"t_diverse/full/recall@25", "t_diverse/full/ndcg@25"}
    claim = (tmp_path / "a/claim.md").read_text()
    assert "### student vs cmvae" in claim and "| t_matching/full/ndcg@25 ↑" in claim and "/truth/" not in claim
    tables = (tmp_path / "a/tables.md").read_text()
    assert "| UGC + PGC | student |" in tables and "| model | weak R@10 | weak R@25 |" in tables
    assert "⚠" in tables
    degraded = (tmp_path / "a/degradations.md").read_text()
    assert "**teacher skipped**: the source has no PGC pairs (test)" in degraded
    assert "**t_diverse — full** ⚠" in degraded
    assert "| rank | student | cmvae |" in (tmp_path / "a/case_study.md").read_text()
    page = (tmp_path / "a/index.html").read_text()  # this source has no media: ids, and the page says why
    assert "<h4>student</h4>" in page and "<h4>uploader&#x27;s choice</h4>" in page and "<audio" not in page
    assert "ships no media files" in page and "<th>verdict</th>" in page and "src='genre_share.png'" in page
    shares = pd.read_csv(tmp_path / "a/genre_share.csv")
    assert shares["source"].tolist() == ["uploaders' taste (training)", "student", "cmvae"]


def test_a_skipped_variant_is_left_out_of_the_model_outputs(stage_dir, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(stage_dir, root)
    write_json({"skipped": "student needs the PGC teacher"}, root / "models/student/summary.json")
    per_video = pd.read_parquet(root / "data/eval/per_video.parquet")
    write_parquet(per_video[per_video["variant"] == "cmvae"], root / "data/eval/per_video.parquet")
    write_report(ReportParams(resamples=199), _paths(root, tmp_path / "out"), (10, 25), 40.0)
    assert "| rank | cmvae |" in (tmp_path / "out/case_study.md").read_text()
    assert "No variant shares a claim metric with cmvae" in (tmp_path / "out/claim.md").read_text()
    assert "**student skipped**: student needs the PGC teacher" in (tmp_path / "out/degradations.md").read_text()


def test_claim_k_must_be_an_evaluated_k():
    check_claim_k(25, (10, 25))
    with pytest.raises(ParamsError, match=r"report.claim_k: 20 is not one of evaluate.ks \[10, 25\]"):
        check_claim_k(20, (10, 25))
