"""The CMVAE paper's comparison models: the common surface and save/load for each, then what makes each one
different from CMVAE, pinned on hand-built inputs where its loss or ranking departs from CMVAE's."""
import dataclasses

import numpy as np
import pytest
import torch

from pipeline.losses import bidirectional_ranking_loss, hardest_k_margin_loss
from pipeline.models.cmvae import CMVAE, CMVAEConfig, without_text
from pipeline.models.debcm import DebCMConfig
from pipeline.models.cmvae_paper.common import config_from
from pipeline.models.cmvae_paper.cevar import CEVAR, cosine_embedding_loss
from pipeline.models.cmvae_paper.cmvbr import CMVBR, intra_modal_structure_loss
from pipeline.models.cmvae_paper.cross_vae import CrossVAE
from pipeline.models.cmvae_paper.da_vae import DAVAE
from pipeline.models.cmvae_paper.dscmr import DSCMR
from pipeline.models.cmvae_paper.dual_vae import DualVAE
from pipeline.models.cmvae_paper.text_missing import text_missing_at_test
from pipeline.models.cmvae_paper.uwml import UWML, polynomial_triplet_loss
from pipeline.models.registry import build_model, classes, load_model, model_spec
from pipeline.training.config import TrainConfig
from pipeline.training.data import TrainData
from pipeline.training.loop import fit

from model_batches import GENRES, MUSIC, TEXT, VISUAL, random_batch

SMALL = dict(latent_dim=8, hidden_dims=(16,), num_negatives=5)
MODELS = [CEVAR, CMVBR, DSCMR, UWML, DualVAE, DAVAE, CrossVAE]


def make(cls, seed=0, **kw):
    """The model built the way the plumbing builds it: from a student config, its own fields at defaults
    (keyword arguments the student's config lacks set the model's own fields)."""
    student_fields = {f.name for f in dataclasses.fields(DebCMConfig)}
    student = DebCMConfig(**SMALL, **{k: v for k, v in kw.items() if k in student_fields})
    config = dataclasses.replace(config_from(student, cls.config_class),
                                 **{k: v for k, v in kw.items() if k not in student_fields})
    torch.manual_seed(seed)
    return cls(VISUAL, MUSIC, TEXT, config)


def unit(*rows):
    return torch.nn.functional.normalize(torch.tensor(rows, dtype=torch.float32), dim=1)


# ---- every model: the common surface ---------------------------------------------------------------------
@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.__name__)
def test_surface_gradients_and_dot_product_scores(cls, batch):
    model = make(cls)
    assert model.config.latent_dim == 8 and model.config.num_negatives == 5  # the student's settings
    terms = model.loss(batch)
    assert "total" in terms and all(torch.isfinite(v) and v.ndim == 0 for v in terms.values())
    terms["total"].backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing  # every parameter is trained by the objective
    model.eval()
    v, m = model.video_embedding(batch), model.music_embedding(batch)
    assert torch.equal(model.score(v, m), v @ m.t())
    assert model.encode_video(batch).mu.shape == model.encode_music(batch).mu.shape == (len(v), 8)


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.__name__)
def test_registry_round_trip_keeps_weights_config_and_scaling(cls, batch):
    assert classes()[cls.__name__] is cls  # registered by its own file's @model_class
    model = make(cls)
    model.fit_scaling(batch["visual"] * 3 + 1, batch["music"] - 2, batch["text"][batch["text_mask"]])
    model.eval()
    rebuilt = build_model(model_spec(model))
    assert type(rebuilt) is cls and rebuilt.config == model.config
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.eval()
    assert torch.equal(rebuilt.video_embedding(batch), model.video_embedding(batch))
    assert torch.equal(rebuilt.music_embedding(batch), model.music_embedding(batch))
    assert not torch.allclose(model.scalers["visual"].mean, torch.zeros(VISUAL))  # scaling is carried


@pytest.mark.parametrize("cls", [CEVAR, CMVBR, DSCMR, UWML], ids=lambda c: c.__name__)
def test_deterministic_models_drop_a_missing_caption_and_rank_by_cosine(cls, batch):
    model = make(cls).eval()
    missing = ~batch["text_mask"]
    noisy = dict(batch, text=batch["text"] + 100.0 * missing.unsqueeze(1))
    assert torch.allclose(model.video_embedding(noisy)[missing], model.video_embedding(batch)[missing])
    assert torch.allclose(model.video_embedding(batch).norm(dim=1), torch.ones(len(missing)))
    assert torch.equal(model.loss(batch)["total"], model.loss(batch)["total"])  # deterministic encoders


# ---- CEVAR -------------------------------------------------------------------------------------------------
def test_cevar_pulls_matched_pairs_to_cosine_one_even_when_the_ranking_is_already_perfect():
    """Pairs ranked perfectly by a wide margin (cos 0.8 vs 0): CMVAE's ranking loss is 0, CEVAR's cosine loss
    is 1 - 0.8 per pair; its gradient still pulls each video towards its music."""
    video = torch.tensor([[0.8, 0, 0, 0.6], [0, 0.8, 0, 0.6], [0, 0, 0.8, 0.6]], requires_grad=True)
    music = torch.eye(3, 4)
    cos = video @ music.t()
    v2m, m2v = bidirectional_ranking_loss(cos, None, margin=0.05, k=2)
    assert v2m == 0 and m2v == 0
    model = make(CEVAR)
    terms = model.objective(video, music, None)
    assert terms["cos_positive"].item() == pytest.approx(0.2) and terms["cos_negative"] == 0
    assert terms["total"].item() == pytest.approx(0.2)
    terms["total"].backward()
    assert (video.grad[:, :3].diagonal() < 0).all()  # descent raises each matched cosine


def test_cevar_pushes_mismatched_pairs_below_the_margin_and_skips_same_music_rows():
    video, music = unit([1, 0], [0.6, 0.8]), unit([1, 0], [0.6, 0.8])
    # cos(v0, m1) = cos(v1, m0) = 0.6 -> each adds 0.6 - 0.05; rows of one music are not negatives
    positive, negative = cosine_embedding_loss(video, music, None, margin=0.05)
    assert positive.item() == pytest.approx(0.0, abs=1e-6) and negative.item() == pytest.approx(0.55)
    assert cosine_embedding_loss(video, music, torch.tensor([3, 3]), 0.05)[1] == 0


def test_cevar_loss_is_its_objective_on_its_embeddings(batch):
    model = make(CEVAR).eval()
    v, m = model.video_embedding(batch), model.music_embedding(batch)
    assert torch.equal(model.loss(batch)["total"], model.objective(v, m, batch["music_idx"])["total"])


# ---- CMVBR -------------------------------------------------------------------------------------------------
def test_intra_modal_structure_loss_by_hand():
    x = torch.tensor([[0.0], [1.0], [3.0]])
    assert intra_modal_structure_loss(x, 2 * x + 5) == 0  # order of neighbours kept: nothing to pay
    y = torch.tensor([[0.0], [3.0], [1.0]])  # rows 1 and 2 swapped in the embedding
    # triplets (i, j, k = j + 1): (0, 1, 2): x says j nearer (1 < 3), y has 3 vs 1 -> pays 2;
    # (1, 2, 0): x: d12 = 2 vs d10 = 1 -> k nearer; y: d12 = 2, d10 = 3 -> pays 1;
    # (2, 0, 1): x: d20 = 3 vs d21 = 2 -> k nearer; y: d20 = 1, d21 = 2 -> pays 1. Mean over 3 triplets.
    assert intra_modal_structure_loss(x, y).item() == pytest.approx(4 / 3, abs=1e-5)


def test_cmvbr_charges_an_embedding_that_scrambles_input_neighbourhoods_where_cmvae_sees_no_difference():
    """Same embeddings (so the same cross-modal scores and the same CMVAE ranking loss) from two input sets:
    one whose neighbourhoods the embedding keeps, one it scrambles. Only CMVBR's loss tells them apart."""
    model = make(CMVBR)
    video = unit([1, 0, 0], [0.9, 0.3, 0], [0, 1, 0], [0, 0.3, 0.9])
    music = video.clone()
    kept = torch.tensor([[0.0], [0.2], [2.0], [2.5]])  # 0-1 close, 2-3 close, as in the embedding
    scrambled = torch.tensor([[0.0], [2.0], [0.2], [2.5]])  # 0 nearest to 2: the embedding disagrees
    a = model.objective(video, music, None, kept, kept)
    b = model.objective(video, music, None, scrambled, scrambled)
    assert torch.equal(a["rank_v2m"], b["rank_v2m"]) and torch.equal(a["rank_m2v"], b["rank_m2v"])
    assert a["intra_video"] == 0 and b["intra_video"] > 0
    assert b["total"] > a["total"]


# ---- DSCMR -------------------------------------------------------------------------------------------------
def test_dscmr_has_one_last_layer_shared_by_both_modalities(batch):
    model = make(DSCMR).eval()
    h_v = model.visual_encoder(model._input(batch, "visual"))
    missing = ~batch["text_mask"]
    assert torch.allclose(model.video_point(batch)[missing], model.shared(torch.relu(h_v))[missing])
    assert torch.allclose(model.music_point(batch),
                          model.shared(torch.relu(model.music_encoder(model._input(batch, "music")))))
    for point in (model.video_point, model.music_point):  # each modality alone trains the shared layer
        model.zero_grad()
        point(batch).sum().backward()
        assert model.shared.weight.grad.abs().sum() > 0


def test_dscmr_prefers_same_genre_clusters_where_cmvae_prefers_spread_pairs():
    """Four pairs, genres A A B B, every video exactly at its music (invariance 0 in both layouts).
    Spread: four orthogonal directions, CMVAE's ranking loss 0. Clustered: each genre's two pairs nearly on
    one direction, the genres opposite. CMVAE's ranking loss rises; DSCMR's discrimination term falls."""
    model = make(DSCMR)
    with torch.no_grad():  # a zero classifier: the label term reads the same (1 + 1) in both layouts
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
    labels = torch.tensor([[1.0, 0, 0, 0, 0, 0]] * 2 + [[0, 1.0, 0, 0, 0, 0]] * 2)
    spread = torch.eye(4, 8)
    clustered = unit([1, 0.1, 0, 0, 0, 0, 0, 0], [1, -0.1, 0, 0, 0, 0, 0, 0],
                     [-1, 0, 0.1, 0, 0, 0, 0, 0], [-1, 0, -0.1, 0, 0, 0, 0, 0])
    a, b = model.objective(spread, spread, labels), model.objective(clustered, clustered, labels)
    assert a["invariance"].item() == pytest.approx(0, abs=1e-5) and a["label"] == b["label"]
    assert b["total"] < a["total"]
    rank = [sum(bidirectional_ranking_loss(x @ x.t(), None, 0.05, 3)) for x in (spread, clustered)]
    assert rank[0] == 0 and rank[1] > 0


def test_dscmr_reads_the_music_genre_probabilities(batch):
    model = make(DSCMR).eval()
    shuffled = dict(batch, music_genre=batch["music_genre"].roll(1, dims=0))  # other rows share genres now
    assert not torch.equal(model.loss(batch)["discrimination"], model.loss(shuffled)["discrimination"])
    assert batch["music_genre"].shape[1] == GENRES == model.config.n_genres


# ---- UWML --------------------------------------------------------------------------------------------------
def test_uwml_weighs_a_harder_negative_more_where_the_hinge_weighs_both_alike():
    """One anchor, positive 0.75, negatives 0.70 (hard) and 0.50 (easier); margin 0.3 makes both violate.
    The hinge's gradient is 1 on each; the polynomial's is 1.8 S - 0.4: 0.86 vs 0.50."""
    scores = torch.tensor([[0.75, 0.70, 0.50], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], requires_grad=True)
    polynomial_triplet_loss(scores, None, margin=0.3, k=2).backward()
    poly = scores.grad[0].clone()
    scores.grad = None
    hardest_k_margin_loss(scores, None, margin=0.3, k=2).backward()
    hinge = scores.grad[0]
    assert hinge[1] == hinge[2] > 0
    assert poly[1].item() == pytest.approx((1.8 * 0.70 - 0.4) / 3, rel=1e-4)
    assert poly[2].item() == pytest.approx((1.8 * 0.50 - 0.4) / 3, rel=1e-4)
    assert poly[1] > 1.5 * poly[2]


def test_uwml_weighs_a_less_similar_positive_more():
    """Two anchors with the same violating negative; the positive at 0.2 gets a larger push than at 0.6."""
    scores = torch.tensor([[0.2, 0.5], [0.5, 0.6]], requires_grad=True)
    polynomial_triplet_loss(scores, None, margin=0.35, k=1).backward()
    assert scores.grad[0, 0] < scores.grad[1, 1] < 0  # descent raises both; the harder one more
    assert scores.grad[0, 0].item() == pytest.approx((0.4 * 0.2 - 0.7) / 2, rel=1e-4)


def test_uwml_ignores_uninformative_pairs():
    scores = torch.tensor([[0.9, 0.1], [0.1, 0.9]])  # every negative further than the margin below
    assert polynomial_triplet_loss(scores, None, margin=0.2, k=1) == 0


# ---- Dual-VAE, DA-VAE, Cross-VAE ---------------------------------------------------------------------------
def test_dual_vae_latents_decode_their_own_modality(batch):
    """With CMVAE's weights: CMVAE's video reconstruction reads the music (z_m decodes the video), Dual-VAE's
    does not; changing the music leaves Dual-VAE's recon_video alone and moves CMVAE's."""
    dual = make(DualVAE, generation="cross").eval()  # the student's cross is overridden
    assert dual.config.generation == "dual"
    cmvae = CMVAE(VISUAL, MUSIC, TEXT, dataclasses.replace(dual.config, generation="cross")).eval()
    cmvae.load_state_dict(dual.state_dict())
    other_music = dict(batch, music=batch["music"].flip(0) * 2.0)
    assert torch.equal(dual.loss(batch)["recon_video"], dual.loss(other_music)["recon_video"])
    assert not torch.equal(cmvae.loss(batch)["recon_video"], cmvae.loss(other_music)["recon_video"])
    other_video = dict(batch, visual=batch["visual"].flip(0) * 2.0)
    assert torch.equal(dual.loss(batch)["recon_music"], dual.loss(other_video)["recon_music"])
    assert not torch.equal(cmvae.loss(batch)["recon_music"], cmvae.loss(other_video)["recon_music"])


def test_da_vae_maximises_posterior_entropy_where_dual_vae_is_indifferent(batch):
    """Posteriors at variance 1 (logvar heads zeroed), eval mode (z = mu: the variance enters only KL and
    entropy). KL's gradient on logvar is 0 there; DA-VAE's entropy term pushes every logvar up."""
    da = make(DAVAE).eval()
    dual = DualVAE(VISUAL, MUSIC, TEXT, dataclasses.replace(da.config)).eval()
    with torch.no_grad():
        for enc in (da.visual_encoder, da.text_encoder, da.music_encoder):
            enc.logvar.weight.zero_()
            enc.logvar.bias.zero_()
    dual.load_state_dict(da.state_dict())
    a, b = da.loss(batch), dual.loss(batch)
    d = da.config.latent_dim
    assert a["entropy_music"].item() == pytest.approx(0.5 * d * (1 + torch.log(torch.tensor(2 * torch.pi)).item()))
    assert torch.allclose(a["total"], b["total"] - da.config.entropy_weight * (a["entropy_video"] + a["entropy_music"]))
    a["total"].backward()
    b["total"].backward()
    assert torch.allclose(dual.music_encoder.logvar.bias.grad, torch.zeros(d), atol=1e-6)
    assert (da.music_encoder.logvar.bias.grad < -0.1).all()


def test_cross_vae_has_no_ranking_loss_and_decodes_each_modality_from_both_latents(batch):
    """Same weights as CMVAE without sub-sampling: CMVAE's total minus Cross-VAE's is exactly CMVAE's
    ranking loss minus Cross-VAE's self-reconstruction; the self terms decode each latent's own modality."""
    cross = make(CrossVAE, subsample=False, gamma=1.0).eval()
    assert cross.config.gamma == 0.0
    cmvae = CMVAE(VISUAL, MUSIC, TEXT, dataclasses.replace(cross.config, gamma=1.0)).eval()
    cmvae.load_state_dict(cross.state_dict())
    a, b = cross.loss(batch), cmvae.loss(batch)
    assert b["rank_v2m"] > 0
    cfg = cmvae.config
    ranking = cfg.gamma * (b["rank_v2m"] + cfg.alpha * b["rank_m2v"])
    self_terms = cfg.beta * (a["recon_video_self"] + a["recon_music_self"])
    assert torch.allclose(b["total"] - a["total"], ranking - self_terms, atol=1e-5)
    z_v, z_m = cross.encode_video(batch).mu, cross.encode_music(batch).mu
    music = cross._input(batch, "music")
    assert torch.allclose(a["recon_music_self"], (cross.music_decoder(z_m) - music).pow(2).mean())
    assert torch.allclose(a["recon_music"], (cross.music_decoder(z_v) - music).pow(2).mean())  # one decoder
    assert torch.allclose(a["recon_video_self"], cross._recon_video(z_v, batch, None))
    plain = make(CrossVAE, self_reconstruction=False).loss(batch)
    assert "recon_video_self" not in plain and "recon_music_self" not in plain


# ---- the training loop and the registry ----------------------------------------------------------------------
def tiny_train_data(seed: int = 0, n_music: int = 30, n: int = 160) -> TrainData:
    """n training pairs + 40 validation videos whose features are noisy maps of their music's prototype."""
    g = torch.Generator().manual_seed(seed)
    proto = torch.randn(n_music, 6, generator=g)
    music_of = torch.randint(0, n_music, (n + 40,), generator=g)
    visual = proto[music_of] @ torch.randn(6, VISUAL, generator=g) + 0.3 * torch.randn(n + 40, VISUAL, generator=g)
    text_mask = torch.rand(n + 40, generator=g) > 0.3
    text = (proto[music_of] @ torch.randn(6, TEXT, generator=g)) * text_mask.unsqueeze(1)
    val = torch.arange(n, n + 40)
    negatives = torch.stack([torch.randperm(n_music, generator=g)[:10] for _ in range(40)])
    negatives = torch.where(negatives == music_of[val].unsqueeze(1), (negatives + 1) % n_music, negatives)
    return TrainData(visual=visual, music=proto @ torch.randn(6, MUSIC, generator=g), video_idx=torch.arange(n),
                     music_idx=music_of[:n], uploader_idx=torch.zeros(n, dtype=torch.long),
                     uploader_dist=torch.full((1, GENRES), 1 / GENRES),
                     music_genre=torch.softmax(torch.randn(n_music, GENRES, generator=g), 1), val_video=val,
                     val_candidates=torch.cat([music_of[val].unsqueeze(1), negatives], 1),
                     val_weight=np.full(40, 1 / 40), prior=np.full(GENRES, 1 / GENRES), text=text,
                     text_mask=text_mask)


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.__name__)
def test_each_model_trains_in_the_loop_and_loads_back_from_its_file(cls, tmp_path):
    data = tiny_train_data()
    model = make(cls)
    summary = fit(model, data, TrainConfig(epochs=2, threads=1, device="cpu", patience=5), tmp_path)
    assert summary["epochs_run"] == 2 and all(np.isfinite(h["train/total"]) for h in summary["history"])
    loaded = load_model(tmp_path / "best.pt")
    assert type(loaded) is cls
    assert torch.allclose(loaded.scalers["visual"].mean, data.visual[data.video_idx].mean(0), atol=1e-5)
    batch = data.video_batch(data.val_video)
    model.eval()
    assert torch.equal(loaded.video_embedding(batch), model.video_embedding(batch))


def test_text_missing_at_test_reuses_the_trained_weights_and_survives_saving(batch, tmp_path):
    torch.manual_seed(0)
    trained = CMVAE(VISUAL, MUSIC, TEXT, CMVAEConfig(**SMALL)).eval()
    trained.fit_scaling(batch["visual"] + 1, batch["music"], batch["text"][batch["text_mask"]])
    blind = text_missing_at_test(trained)
    assert blind.config.inference_text is False and trained.config.inference_text is True
    assert all(torch.equal(v, blind.state_dict()[k]) for k, v in trained.state_dict().items())
    assert torch.equal(blind.video_embedding(batch), trained.video_embedding(without_text(batch, TEXT)))
    assert torch.equal(blind.music_embedding(batch), trained.music_embedding(batch))
    torch.save({"model": model_spec(blind), "state_dict": blind.state_dict()}, tmp_path / "best.pt")
    assert torch.equal(load_model(tmp_path / "best.pt").video_embedding(batch), blind.video_embedding(batch))
