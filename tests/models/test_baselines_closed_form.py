"""The closed-form baselines on a planted world (each video's features a fixed linear map of its music's
prototype, plus noise): Ridge and CCA recover the map, Random stays at chance and is deterministic per seed,
Popularity ranks by training counts; every fitted model survives save / load_model."""
import numpy as np
import pytest
import torch

from pipeline.metrics import ScoreMatrix, full_ranks
from pipeline.models.baselines import BaselineParams, variant
from pipeline.models.debcm import DebCMConfig
from pipeline.models.registry import load_model, model_spec
from pipeline.training.checkpoint import cpu_state, save_torch
from pipeline.training.data import TrainData
from pipeline.training.loop import validation_recall

N_MUSIC, PROTO, FV, FM = 40, 6, 20, 10
STUDENT = DebCMConfig(latent_dim=16, hidden_dims=(16,), use_text=False)
PARAMS = BaselineParams(ridge_alphas=(0.1, 10.0), cca_input_dim=16, cca_components=(2, 4, 8))


def planted(seed: int = 0, per_music: int = 10, n_test: int = 400):
    """(TrainData, test visual features, test videos' music) of the planted linear world."""
    rng = np.random.default_rng(seed)
    proto = rng.standard_normal((N_MUSIC, PROTO))
    a, b = rng.standard_normal((PROTO, FV)), rng.standard_normal((PROTO, FM))
    music = proto @ b + 0.05 * rng.standard_normal((N_MUSIC, FM))

    def videos(n):
        chosen = rng.integers(0, N_MUSIC, n)
        return proto[chosen] @ a + 0.5 * rng.standard_normal((n, FV)) + 3.0, chosen  # an offset: standardising matters

    train_music = np.repeat(np.arange(N_MUSIC), per_music)
    train_visual = proto[train_music] @ a + 0.5 * rng.standard_normal((len(train_music), FV)) + 3.0
    val_visual, val_music = videos(60)
    test_visual, test_music = videos(n_test)
    candidates = np.stack([np.r_[m, rng.choice(np.delete(np.arange(N_MUSIC), m), 10, replace=False)]
                           for m in val_music])
    n_train = len(train_music)
    f32 = lambda x: torch.tensor(x, dtype=torch.float32)  # noqa: E731
    data = TrainData(
        visual=f32(np.vstack([train_visual, val_visual])), music=f32(music),
        video_idx=torch.arange(n_train), music_idx=torch.tensor(train_music),
        uploader_idx=torch.zeros(n_train, dtype=torch.long), uploader_dist=torch.full((1, 6), 1 / 6),
        music_genre=torch.eye(6)[torch.arange(N_MUSIC) % 6], val_video=torch.arange(n_train, n_train + 60),
        val_candidates=torch.tensor(candidates), val_weight=np.full(60, 1 / 60), prior=np.full(6, 1 / 6))
    return data, f32(test_visual), test_music


def fitted(name: str, data: TrainData, seed: int = 0):
    model = variant(name, STUDENT, PARAMS).build(FV, FM, None)
    info = model.fit(data, lambda m: validation_recall(m, data, 5), seed)
    return model, info


def recall(model, data: TrainData, test_visual, test_music, k: int = 5) -> float:
    with torch.no_grad():
        scores = ScoreMatrix(video_emb=model.video_embedding({"visual": test_visual}),
                             music_emb=model.music_embedding({"music": data.music}))
        return float((full_ranks(scores, test_music) <= k).mean())


@pytest.fixture(scope="module")
def world():
    return planted()


@pytest.mark.parametrize("name", ["linear", "cca"])
def test_linear_maps_recover_a_planted_map_where_random_is_at_chance(world, name):
    data, test_visual, test_music = world
    model, info = fitted(name, data)
    chance = 5 / N_MUSIC
    assert recall(model, data, test_visual, test_music) > 0.9
    assert abs(recall(fitted("random", data)[0], data, test_visual, test_music) - chance) < 0.06
    emb = model.video_embedding({"visual": test_visual})
    assert torch.allclose(emb.norm(dim=1), torch.ones(len(emb)), atol=1e-5)  # unit vectors: dot = cosine
    if name == "cca":
        assert info["pca_widths"] == [16, 10] and info["component_cap"] == 8 and info["n_components"] in (2, 4, 8)
        assert int((model.video_map.abs().sum(dim=0) > 0).sum()) == info["n_components"]  # the rest zero
    else:
        assert info["alpha"] in (0.1, 10.0) and set(info["validation"]) == {"0.1", "10.0"}


def test_cca_caps_its_components_by_the_data():
    data, _, _ = planted(per_music=1)  # 40 pairs
    params = BaselineParams(cca_input_dim=64, cca_components=(64,))
    model = variant("cca", DebCMConfig(latent_dim=128, use_text=False), params).build(FV, FM, None)
    info = model.fit(data, lambda m: validation_recall(m, data, 5), 0)
    assert info["pca_widths"] == [FV, FM] and info["component_cap"] == FM and info["capped_by_data"]
    assert int(model.n_components) == FM and model.video_map.shape == (FV, 64)


def test_random_is_at_chance_and_deterministic_per_seed():
    data, test_visual, test_music = planted(n_test=3000)
    a, b, c = (fitted("random", data, seed)[0] for seed in (0, 0, 1))
    video = {"visual": test_visual}
    assert torch.equal(a.video_embedding(video), b.video_embedding(video))
    assert not torch.equal(a.video_embedding(video), c.video_embedding(video))
    assert torch.equal(a.video_embedding({"visual": test_visual[:7]}), a.video_embedding(video)[:7])  # per row
    with torch.no_grad():
        ranks = full_ranks(ScoreMatrix(video_emb=a.video_embedding(video), music_emb=a.music_embedding(
            {"music": data.music})), test_music)
    assert abs(ranks.mean() - (N_MUSIC + 1) / 2) < 1.0  # uniform ranks: mean 20.5, sd of the mean ~0.21
    assert abs((ranks <= 5).mean() - 5 / N_MUSIC) < 0.03


def test_popularity_ranks_by_training_counts():
    data, test_visual, _ = planted()
    counts = torch.arange(N_MUSIC) % 7  # music m used (m mod 7) times
    data.music_idx = torch.repeat_interleave(torch.arange(N_MUSIC), counts)
    data.video_idx = torch.arange(len(data.music_idx))
    model, info = fitted("popularity", data)
    assert info == {"pairs": int(counts.sum()), "music_used": int((counts > 0).sum())}
    shuffled = torch.randperm(N_MUSIC, generator=torch.Generator().manual_seed(0))
    music = model.music_embedding({"music": data.music[shuffled]})
    assert torch.equal(music[:, 0], counts[shuffled].float())  # each clip found by its features, in any order
    video = model.video_embedding({"visual": test_visual[:3]})
    scores = model.score(video, model.music_embedding({"music": data.music}))
    assert torch.equal(scores, counts.float().expand(3, -1))  # the same list for every video


@pytest.mark.parametrize("name", ["random", "popularity", "linear", "cca"])
def test_fitted_models_load_with_their_fit(world, tmp_path, name):
    data, test_visual, _ = world
    model, _ = fitted(name, data, seed=3)
    save_torch({"model": model_spec(model), "state_dict": cpu_state(model)}, tmp_path / "m.pt")
    again = load_model(tmp_path / "m.pt")
    assert type(again) is type(model)
    for side, batch in (("video_embedding", {"visual": test_visual}), ("music_embedding", {"music": data.music})):
        assert torch.equal(getattr(again, side)(batch), getattr(model, side)(batch)), side
