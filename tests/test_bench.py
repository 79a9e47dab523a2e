"""The speed benchmark's data has TT-150k's shape and passes the pipeline's own checks (pipeline/bench.py)."""
import json
from pathlib import Path

import numpy as np
import torch

from pipeline.bench import (MUSIC, N_MUSIC, TABLE_END, TABLE_START, TEXT, VISUAL, full_pool_eval_seconds, main,
                            readme_table, render_readme, speed_table, tt150k_data)
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


def test_readme_speed_table_is_the_rendering_of_bench_json():
    """README.md's table and reports/bench.json cannot drift: `python -m pipeline.bench --render-readme`."""
    bench = json.loads((ROOT / "reports/bench.json").read_text())
    assert bench["runs"], "reports/bench.json has no runs"
    assert readme_table(ROOT / "README.md") == speed_table(bench)


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
    assert f["epoch_seconds_median"] == round(float(np.median(f["epoch_seconds"][1:])), 2)
    assert f["validation_seconds_median"] > 0 and f["full_ranking_seconds_median"] > 0
    table = speed_table(bench)
    assert table.count("\n| ") == 1 + 2 and f"`{run['command']}`" in table  # header + one row per run
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{TABLE_START}\nold\n{TABLE_END}\nafter\n")
    render_readme(readme, bench)
    assert readme_table(readme) == table and readme.read_text().endswith(f"{TABLE_END}\nafter\n")
