"""Evaluation: metric keys, values against brute force, truth metrics with an oracle and a taste-only model,
truth loading, the plots CSV, and that training code never reads the truth."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_train import SPLIT, synthetic_world, write_features
from torch import nn

from pipeline.data.schema import GENRES
from pipeline.errors import DataError
from pipeline.evaluate import evaluate_model, load_truth, plot_tables, set_metrics, write_plots
from pipeline.inference import top_music
from pipeline.io import write_ids, write_parquet
from pipeline.models.cmvae import CMVAE, CMVAEConfig
from pipeline.models.debcm import DebCM, DebCMConfig
from pipeline.sampling.dataset import SplitConfig, build_dataset
from pipeline.data.features import Features, load_features

KS = (10, 15, 20, 25)
SETS = ("weak", "strong", "intervention_0.5", "t_diverse", "t_matching")


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(features_dir, dataset, raw tables) of test_train's synthetic world."""
    videos, pairs, genres, rhythm, feats, mask = synthetic_world()
    out = tmp_path_factory.mktemp("features")
    write_features(feats, mask, videos["video_id"].tolist(), genres["music_id"].tolist(), out)
    return out, build_dataset(videos, pairs, genres, rhythm, SplitConfig(**SPLIT)), (videos, pairs, genres)


class Lookup(nn.Module):
    """Scores straight from the features: video embedding = visual row, music embedding = music row."""

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))

    def video_embedding(self, batch):
        return batch["visual"]

    def music_embedding(self, batch):
        return batch["music"]

    def score(self, video_z, music_z):
        return video_z @ music_z.t()


@pytest.fixture(scope="module")
def truth_dir(world, tmp_path_factory):
    """A truth folder like worldgen writes: PGC + UGC rows, music columns in shuffled id order, float16
    compatibilities that are distinct within a row (k / 64), true genres and tastes."""
    _, ds, (videos, _, genres) = world
    rng = np.random.default_rng(11)
    d = tmp_path_factory.mktemp("truth")
    video_ids = sorted(videos["video_id"])
    music_ids = list(rng.permutation(sorted(genres["music_id"])))
    compat = np.stack([rng.permutation(len(music_ids)) / 64.0 for _ in video_ids]).astype(np.float16)
    np.save(d / "compatibility.npy", compat)
    write_ids(video_ids, d / "video_ids.txt")
    write_ids(music_ids, d / "music_ids.txt")
    write_parquet(genres.sample(frac=1.0, random_state=1), d / "music_latents.parquet")
    ups = sorted(videos["uploader_id"].dropna().unique())
    write_parquet(pd.DataFrame({"uploader_id": ups, "taste": list(rng.dirichlet(np.ones(6), len(ups)))}),
                  d / "uploaders.parquet")
    return d, compat, video_ids, music_ids


def brute_force(scores: np.ndarray, positive: np.ndarray, candidates: np.ndarray | None, weight: np.ndarray):
    """Weighted recall/NDCG@K by explicit loops (ties pessimistic)."""
    out = {}
    ranks = []
    for i in range(len(positive)):
        pool = candidates[i] if candidates is not None else np.arange(scores.shape[1])
        ranks.append(sum(scores[i, j] >= scores[i, positive[i]] for j in pool))
    ranks = np.array(ranks)
    for k in KS:
        out[f"recall@{k}"] = float(sum(w for w, r in zip(weight, ranks) if r <= k) / weight.sum())
        out[f"ndcg@{k}"] = float(sum(w / np.log2(r + 1) for w, r in zip(weight, ranks) if r <= k) / weight.sum())
    return out


def test_keys_and_values_match_brute_force(world):
    features_dir, ds, _ = world
    feats = load_features(features_dir)
    torch.manual_seed(0)
    model = CMVAE(24, 24, 12, CMVAEConfig(latent_dim=8, hidden_dims=(16,)))
    metrics, _ = evaluate_model(model, feats, ds, ks=KS)
    expected = {f"{s}/{p}/{m}@{k}" for s in SETS for p in ("sampled", "full") for m in ("recall", "ndcg") for k in KS}
    assert set(metrics) == expected
    assert all(0.0 <= v <= 1.0 for v in metrics.values())
    model.eval()
    with torch.no_grad():
        music_z = model.music_embedding({"music": feats.music[feats.music_rows(ds.music_ids)]}).numpy()
        for name, key in (("strong", "strong/test"), ("t_diverse", "weak/diverse")):
            es = ds.eval_sets[key]
            video_z = model.video_embedding(feats.video_batch(feats.video_rows(list(es.video_id)))).numpy()
            scores = video_z @ music_z.T
            cand = np.concatenate([es.positive[:, None], es.negatives], axis=1)
            for protocol, c in (("sampled", cand), ("full", None)):
                for metric, value in brute_force(scores, es.positive, c, es.weight).items():
                    assert metrics[f"{name}/{protocol}/{metric}"] == pytest.approx(value, abs=1e-9), (name, metric)
    # DebCM ranks with its inference embeddings ([z'_m ; b_m], the prior set): same keys, valid values.
    torch.manual_seed(0)
    student = DebCM(24, 24, 12, DebCMConfig(latent_dim=8, hidden_dims=(16,), confounder="interaction"))
    with torch.no_grad():
        student.interaction.copy_(torch.randn(6, 6))
    student.set_prior(np.array(ds.prior("weak")))
    debcm, _ = evaluate_model(student, feats, ds, ks=KS)
    assert set(debcm) == expected and all(0.0 <= v <= 1.0 for v in debcm.values())
    only, per_video = evaluate_model(model, feats, ds, ks=(10,), sets=["weak"])
    # the per-video table is what the metrics are: recomputing them from it gives the same numbers
    assert set(per_video["set"]) == {"weak"} and len(per_video) == len(ds.eval_sets["weak/test"].video_id)
    assert set_metrics(per_video, "weak", (10,)) == only
    assert set(only) == {"weak/sampled/recall@10", "weak/sampled/ndcg@10", "weak/full/recall@10", "weak/full/ndcg@10"}
    assert only["weak/full/recall@10"] == metrics["weak/full/recall@10"]
    with pytest.raises(DataError, match="not in the dataset"):
        evaluate_model(model, feats, ds, sets=["t_nowhere"])


def test_load_truth_selects_and_reorders(world, truth_dir):
    _, ds, (_, _, genres) = world
    d, compat, video_ids, music_ids = truth_dir
    truth = load_truth(d, ds.video_ids, ds.music_ids)
    assert truth.compatibility.shape == (len(ds.video_ids), len(ds.music_ids))
    for v in (ds.video_ids[0], ds.video_ids[-1], ds.video_ids[333]):
        for m in (ds.music_ids[0], ds.music_ids[77]):
            got = truth.compatibility[ds.video_ids.index(v), ds.music_ids.index(m)]
            assert got == compat[video_ids.index(v), music_ids.index(m)]
    genre_of = genres.set_index("music_id")["genre"]
    assert [GENRES[g] for g in truth.music_genre] == [genre_of[m] for m in ds.music_ids]
    with pytest.raises(DataError, match="'nobody'"):
        load_truth(d, ["nobody"], ds.music_ids)
    with pytest.raises(DataError, match="compatibility.npy: missing"):
        load_truth(d / "absent", ds.video_ids, ds.music_ids)


def oracle_features(ds, truth, columns: np.ndarray) -> Features:
    """Video 'features' = its truth row (or any per-video vector), music 'features' = one-hot columns."""
    return Features(ds.video_ids, ds.music_ids, torch.from_numpy(np.ascontiguousarray(columns, dtype=np.float32)),
                    torch.eye(len(ds.music_ids)))


def test_truth_metrics_oracle_and_taste_model(world, truth_dir):
    _, ds, _ = world
    truth = load_truth(truth_dir[0], ds.video_ids, ds.music_ids)
    oracle, _ = evaluate_model(Lookup(), oracle_features(ds, truth, truth.compatibility.astype(np.float32)), ds, truth)
    for k in KS:  # ranking by the truth itself: perfect true NDCG, no amplification
        assert oracle[f"truth/ndcg@{k}"] == pytest.approx(1.0)
        assert oracle[f"truth/bias_amplification@{k}"] == pytest.approx(0.0, abs=1e-12)
        assert oracle[f"t_diverse/truth/ndcg@{k}"] == pytest.approx(1.0)
    assert oracle["truth/ndcg@10"] == oracle["weak/truth/ndcg@10"]  # primary = the scheme T_* came from

    # A taste-only model: score = 1 for music in the uploader's majority genre (training dist), tie-broken by
    # a small content term. Every genre has 30 music >= 25, so its top-K lies wholly in the majority genre.
    dists = ds.uploader_dists("weak").set_index("uploader_id")
    uploader = ds.ugc.set_index("video_id").loc[ds.video_ids, "uploader_id"]
    major = dists.loc[uploader, list(GENRES)].to_numpy().argmax(axis=1)
    in_major = (truth.music_genre[None, :] == major[:, None]).astype(np.float32)
    scores = in_major + 1e-3 * truth.compatibility.astype(np.float32)
    taste, _ = evaluate_model(Lookup(), oracle_features(ds, truth, scores), ds, truth, ks=(10, 25))
    es = ds.eval_sets["weak/test"]
    rows = [ds.video_ids.index(v) for v in es.video_id]
    for k in (10, 25):
        true_top = np.argsort(-truth.compatibility[rows].astype(np.float64), axis=1, kind="stable")[:, :k]
        true_share = np.mean([(truth.music_genre[t] == major[r]).mean() for t, r in zip(true_top, rows)])
        assert taste[f"truth/pred_share@{k}"] == pytest.approx(1.0)
        assert taste[f"truth/true_share@{k}"] == pytest.approx(true_share)
        assert taste[f"truth/bias_amplification@{k}"] == pytest.approx(1.0 - true_share)
        assert taste[f"truth/ndcg@{k}"] < 1.0


def test_top_music_is_the_argsort_of_the_scores_evaluate_ranks_by(world):
    features_dir, ds, _ = world
    feats = load_features(features_dir)
    torch.manual_seed(0)
    model = CMVAE(24, 24, 12, CMVAEConfig(latent_dim=8, hidden_dims=(16,)))
    videos = sorted(ds.eval_sets["weak/diverse"].video_id)
    genre = ds.genre_matrix()
    top = top_music(model, feats, videos, ds.music_ids, genre, 7)
    assert model.training  # restored after scoring in eval mode
    model.eval()
    with torch.no_grad():
        music_z = model.music_embedding({"music": feats.music[feats.music_rows(ds.music_ids)]}).numpy()
        video_z = model.video_embedding(feats.video_batch(feats.video_rows(videos))).numpy()
    scores = video_z @ music_z.T
    assert top.shape == (len(videos), 7) and top.dtype == np.int64
    np.testing.assert_array_equal(top, np.argsort(-scores, axis=1, kind="stable")[:, :7])
    model.train()
    same, score = top_music(model, feats, videos, ds.music_ids, genre, 7, with_scores=True)  # the page's scores
    np.testing.assert_array_equal(same, top)
    np.testing.assert_allclose(score, np.take_along_axis(scores, top, axis=1), rtol=1e-5, atol=1e-6)
    # ties keep the lower music index: a model that scores every music the same lists 0, 1, 2, ...
    flat = Features(ds.video_ids, ds.music_ids, torch.ones(len(ds.video_ids), 3), torch.ones(len(ds.music_ids), 3))
    np.testing.assert_array_equal(top_music(Lookup(), flat, videos[:2], ds.music_ids, genre, 4), [[0, 1, 2, 3]] * 2)
    with pytest.raises(DataError, match="pool size"):
        top_music(model, feats, videos, ds.music_ids, genre, len(ds.music_ids) + 1)


def test_plots_one_file_per_set_and_protocol_with_a_column_per_model(world, tmp_path):
    features_dir, ds, _ = world
    torch.manual_seed(0)
    model = CMVAE(24, 24, 12, CMVAEConfig(latent_dim=8, hidden_dims=(16,)))
    metrics, _ = evaluate_model(model, load_features(features_dir), ds, ks=KS)
    other = {key: value / 2 for key, value in metrics.items()}
    extra = {"truth/ndcg@10": 0.5, "truth/bias_amplification@10": 0.1, "truth/pred_share@10": 0.3}
    paths = write_plots({"student": {**metrics, **extra}, "cmvae": other}, tmp_path / "plots")
    names = sorted(str(p.relative_to(tmp_path / "plots")) for p in paths)
    assert len(names) == len(SETS) * 2 * 2 + 2  # recall, ndcg x sets x protocols, and the two truth files
    assert "recall/strong_full.csv" in names and "ndcg/t_diverse_sampled.csv" in names
    assert "ndcg/truth.csv" in names and "bias_amplification/truth.csv" in names
    assert not any("pred_share" in n for n in names)
    table = pd.read_csv(tmp_path / "plots/recall/strong_full.csv")
    assert list(table.columns) == ["k", "student", "cmvae"] and table["k"].tolist() == sorted(KS)
    row = table[table["k"] == 15].iloc[0]
    assert row["student"] == pytest.approx(metrics["strong/full/recall@15"], abs=1e-6)
    assert row["cmvae"] == pytest.approx(metrics["strong/full/recall@15"] / 2, abs=1e-6)
    truth = pd.read_csv(tmp_path / "plots/ndcg/truth.csv")
    assert truth["student"].tolist() == [0.5] and truth["cmvae"].isna().all()  # a metric a model lacks: empty
    reordered = {"student": dict(reversed(list(metrics.items()))), "cmvae": other}
    assert all(a.equals(b) for a, b in zip(plot_tables({"student": metrics, "cmvae": other}).values(),
                                             plot_tables(reordered).values()))
    with pytest.raises(DataError, match="no <set>"):
        write_plots({"student": {"truth/pred_share@10": 0.5}}, tmp_path / "empty")


def test_training_code_never_reads_truth():
    root = Path(__file__).resolve().parents[1] / "pipeline"
    training = [*sorted((root / "training").rglob("*.py")), root / "losses.py", *sorted((root / "models").rglob("*.py")),
                *sorted((root / "sampling").rglob("*.py"))]
    for path in training:
        text = path.read_text()
        for needle in ("compatibility.npy", "music_latents", "truth/", "load_truth", "from pipeline.evaluate",
                       "import pipeline.evaluate", "from pipeline import evaluate"):
            assert needle not in text, f"{path} mentions {needle!r}: only pipeline/evaluate.py may read the truth"
