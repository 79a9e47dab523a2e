"""The speed benchmark's data has TT-150k's shape and passes the pipeline's own checks (pipeline/bench.py)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.bench import (MUSIC, N_MUSIC, TABLE_END, TABLE_START, TEXT, VISUAL, full_pool_eval_seconds, main,
                            page_table, render_page, speed_table, tt150k_data)
from pipeline.sampling.dataset import SplitConfig, build_dataset, load_dataset, save_dataset
from pipeline.models.cmvae import CMVAE, CMVAEConfig
from pipeline.training.loop import validation_recall

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_data_is_well_formed_and_evaluable():
    data = tt150k_data(n_videos=2_000)
    assert data.visual.shape == (2_000, VISUAL) and data.text.shape == (2_000, TEXT)
    assert data.music.shape == (N_MUSIC, MUSIC) and data.video_idx.shape == (1_600,)
    cand = data.val_candidates.numpy()
    assert cand.shape == (200, 101) and not (cand[:, 1:] == cand[:, :1]).any()  # the positive is never a negative
    torch.manual_seed(0)
    model = CMVAE(VISUAL, MUSIC, TEXT, CMVAEConfig(latent_dim=8, hidden_dims=(16,)))
    assert 0.0 <= validation_recall(model, data, 25) <= 1.0
    assert full_pool_eval_seconds(model, data, n_test=500) > 0
    np.testing.assert_array_equal(tt150k_data(n_videos=2_000).music_idx, data.music_idx)  # seeded


def test_performance_page_speed_table_is_the_rendering_of_bench_json():
    """reports/performance.md's table and reports/bench.json cannot drift: `python -m pipeline.bench --render`."""
    bench = json.loads((ROOT / "reports/bench.json").read_text())
    assert bench["runs"], "reports/bench.json has no runs"
    assert page_table(ROOT / "reports/performance.md") == speed_table(bench)


def test_bench_times_a_built_dataset_and_records_the_run(tmp_path):
    from test_train import SPLIT, synthetic_world, write_features

    videos, pairs, genres, rhythm, feats, mask = synthetic_world()
    write_features(feats, mask, videos["video_id"].tolist(), genres["music_id"].tolist(), tmp_path / "features")
    save_dataset(build_dataset(videos, pairs, genres, rhythm, SplitConfig(**SPLIT)), tmp_path / "dataset")
    out = tmp_path / "bench.json"
    argv = ["--features", str(tmp_path / "features"), "--dataset", str(tmp_path / "dataset"), "--epochs", "3",
            "--threads", "1", "--out", str(out)]
    threads = torch.get_num_threads()
    try:
        main(argv + ["--label", "first"])
        main(argv + ["--label", "again"])
        main(argv + ["--label", "first"])  # the same label replaces its run
    finally:
        torch.set_num_threads(threads)
    bench = json.loads(out.read_text())
    assert sorted(bench["runs"]) == ["again", "first"]
    run = bench["runs"]["again"]
    assert run["command"].endswith("python -m pipeline.bench " + " ".join(argv + ["--label", "again"]))
    assert run["machine"]["threads"] == 1 and run["machine"]["torch"] == torch.__version__
    assert run["machine"]["cpu"] and len(run["load_average_start"]) == len(run["load_average_end"]) == 3
    assert run["data"]["source"] == "dataset" and run["data"]["train_pairs"] == int(
        (load_dataset(tmp_path / "dataset").split("weak")["split"] == "train").sum())
    f = run["figures"]
    assert len(f["epoch_seconds"]) == len(f["epoch_cpu_seconds"]) == 3
    # the median of the unrounded times, rounded: within 0.01 of the median of the rounded ones
    assert f["epoch_seconds_median"] == pytest.approx(float(np.median(f["epoch_seconds"][1:])), abs=0.0101)
    assert f["validation_seconds_median"] > 0 and f["full_ranking_seconds_median"] > 0
    # the plain reference loop ran after each student epoch, and the ratio is of the two medians
    assert len(f["reference_epoch_seconds"]) == 3 and f["reference_epoch_seconds_median"] > 0
    assert f["student_to_reference"] == pytest.approx(
        f["epoch_seconds_median"] / f["reference_epoch_seconds_median"], rel=0.05)
    # the matrix-product floor of one step: its products alone, a positive rate, scaled to the epoch's steps
    assert f["matmuls_per_step"] > 10 and f["gflop_per_step"] > 0 and f["matmul_gflops"] > 0
    assert f["matmul_floor_epoch_seconds"] == pytest.approx(
        f["matmul_seconds_per_step"] * run["config"]["steps_per_epoch"], rel=0.05, abs=0.011)
    table = speed_table(bench)
    assert table.count("\n| ") == 1 + 2 and f"`{run['command']}`" in table  # header + one row per run
    page = tmp_path / "performance.md"
    page.write_text(f"intro\n{TABLE_START}\nold\n{TABLE_END}\nafter\n")
    render_page(page, bench)
    assert page_table(page) == table and page.read_text().endswith(f"{TABLE_END}\nafter\n")


def _tiny_raw(root: Path) -> Path:
    """A data/raw with 3 rendered videos, 2 music clips, 3 UGC pairs and one PGC pair."""
    import pandas as pd

    from pipeline.data.render import RenderSpec, render_music_clip, render_video_clip

    spec = RenderSpec(video_seconds=1.5, music_seconds=2.0)
    (root / "media/video").mkdir(parents=True)
    (root / "media/music").mkdir(parents=True)
    for i in range(3):
        render_video_clip(dict(video_id=f"v{i}", scene="beach", energy=0.5, valence=0.5, motion_tempo=100.0 + 20 * i,
                               render_seed=i), root / f"media/video/v{i}.mp4", spec)
    for i in range(2):
        render_music_clip(dict(music_id=f"m{i}", genre="pop", tempo=110.0, energy=0.5, valence=0.5, render_seed=i),
                          root / f"media/music/m{i}.wav", spec)
    pd.DataFrame({"video_id": ["v0", "v1", "v2"], "path": [f"media/video/v{i}.mp4" for i in range(3)],
                  "kind": ["ugc", "ugc", "pgc"]}).to_parquet(root / "videos.parquet")
    pd.DataFrame({"music_id": ["m0", "m1"], "path": ["media/music/m0.wav", "media/music/m1.wav"]}).to_parquet(
        root / "music.parquet")
    pd.DataFrame({"video_id": ["v0", "v1", "v2"], "music_id": ["m0", "m1", "m0"],
                  "kind": ["ugc", "ugc", "pgc"]}).to_parquet(root / "pairs.parquet")
    return root


def test_extraction_bench_times_both_media_stages_and_renders(tmp_path):
    raw = _tiny_raw(tmp_path / "raw")
    out = tmp_path / "bench.json"
    argv = ["--extract", str(raw), "--videos", "2", "--pairs", "5", "--rounds", "1", "--precision", "fp32",
            "--threads", "1", "--out", str(out)]
    threads = torch.get_num_threads()
    try:
        main(argv)
    finally:
        torch.set_num_threads(threads)
    run = json.loads(out.read_text())["extraction"]["extract-fp32"]
    assert run["command"].endswith("python -m pipeline.bench " + " ".join(argv))
    assert run["data"] == {"raw": str(raw), "videos": 2, "pairs": 2, "music": 2, "feature_dim": 1280}  # UGC only
    f = run["figures"]
    assert len(f["video_seconds"]) == len(f["rhythm_seconds"]) == 1 and min(f["video_seconds"]) > 0
    assert f["videos_per_second"] == pytest.approx(2 / f["video_seconds_median"], rel=0.25)  # both rounded
    assert run["config"]["precision_run"] == "fp32"
    table = speed_table({"runs": {}, "extraction": {"extract-fp32": run}})
    assert "Extraction" in table and f"`{run['command']}`" in table
    with pytest.raises(SystemExit):
        main(["--precision", "auto", "--out", str(out)])  # auto is for extraction only


def test_extraction_bench_needs_media(tmp_path):
    import pandas as pd

    from pipeline.bench_extract import run_extraction
    from pipeline.errors import DataError

    (tmp_path / "raw").mkdir()
    pd.DataFrame({"video_id": ["v0"], "path": [None], "kind": ["ugc"]}).to_parquet(tmp_path / "raw/videos.parquet")
    with pytest.raises(DataError, match="videos.parquet: no video has a media path"):
        run_extraction(tmp_path / "raw", 2, 2, 1, "fp32")
