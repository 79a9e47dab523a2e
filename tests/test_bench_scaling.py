"""The bench's plain reference loop (pipeline/bench_reference.py) and the scaling curves
(pipeline/bench_scaling.py): the reference computes the loss it claims, the curves' points, exponents and files."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from pipeline.bench import reference_figures, tt150k_data
from pipeline.bench_reference import ReferenceRun, hardest_k_hinge
from pipeline.bench_scaling import exponents, growth_exponent, ranking_point, train_point, write_outputs
from pipeline.losses import hardest_k_margin_loss, same_item_mask


def test_reference_hinge_is_the_pipelines_hardest_k_loss():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(50, 50, generator=g)
    music = torch.randint(0, 12, (50,), generator=g)
    same = same_item_mask(music, 50)
    for k in (1, 5, 49):
        assert torch.allclose(hardest_k_hinge(scores, same, k, 0.1), hardest_k_margin_loss(scores, same, 0.1, k))
        assert torch.allclose(hardest_k_hinge(scores.t(), same, k, 0.1), hardest_k_margin_loss(scores.t(), same, 0.1, k))


def test_reference_run_trains_on_the_run_tensors():
    data = tt150k_data(n_videos=1500, visual_dim=64)
    run = ReferenceRun(data)
    before = [p.detach().clone() for p in run.model.parameters()]
    assert run.epoch(0, batch_size=256) > 0
    assert all(not torch.equal(a, b) for a, b in zip(before, run.model.parameters()))
    assert run.model.video_encoder[0].in_features == 64 + data.text.shape[1]  # visual with the caption's features


def test_reference_figures_are_medians_after_the_first_epoch():
    assert reference_figures([10.0, 4.0, 6.0], [5.0, 2.0, 3.0]) == {
        "reference_epoch_seconds": [5.0, 2.0, 3.0], "reference_epoch_seconds_median": 2.5, "student_to_reference": 2.0}
    assert reference_figures([1.0, 2.0], []) == {}


def test_growth_exponent_is_the_log_log_slope():
    sizes = [1e3, 1e4, 1e5]
    assert growth_exponent(sizes, [3 * s ** 1.5 for s in sizes]) == pytest.approx(1.5, abs=1e-3)
    rows = [{"curve": "a", "size": s, "seconds": 2 * s, "peak_rss_gib": 5.0} for s in sizes]
    assert exponents(rows) == {"a/seconds": pytest.approx(1.0, abs=1e-3), "a/peak_rss_gib": pytest.approx(0.0, abs=1e-3)}


def test_points_and_outputs(tmp_path):
    point = train_point(1500, 2, 1)
    assert point["curve"] == "train_epoch" and point["size"] == 1500 and point["repeats"] == 1
    assert point["seconds"] > 0 and point["peak_rss_gib"] > point["data_gib"] > 0
    ranking = ranking_point(200, 1, 1, n_videos=300)
    assert [r["curve"] for r in ranking] == ["eval_torch", "eval_faiss"] and all(r["seconds"] > 0 for r in ranking)
    bigger = [{**point, "size": 3000, "seconds": point["seconds"] * 2}, *[{**r, "size": 400} for r in ranking]]
    summary = write_outputs(tmp_path, [point, *ranking, *bigger], {"command": "test"})
    assert summary["growth_exponents"]["train_epoch/seconds"] == pytest.approx(1.0, abs=1e-3)
    assert set(summary["growth_exponents"]) >= {"eval_torch/seconds", "eval_faiss/seconds"}
    rows = list(csv.DictReader((tmp_path / "scaling.csv").open()))
    assert len(rows) == 6 and rows[0]["curve"] == "train_epoch" and float(rows[0]["seconds"]) == point["seconds"]
    assert json.loads((tmp_path / "scaling.json").read_text())["command"] == "test"
    assert (tmp_path / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.isfinite(list(summary["growth_exponents"].values())).all()
