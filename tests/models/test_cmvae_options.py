"""CMVAE's ablation options (generation, fusion, inference_text): the defaults compute exactly what CMVAE
computed before they existed, and each option changes what the CMVAE paper's ablation tables change."""
from pathlib import Path

import pytest
import torch

from pipeline.errors import ParamsError
from pipeline.gaussian import Gaussian, Mixture, kl_to_standard_normal, product_of_experts
from pipeline.models.cmvae import CMVAE, CMVAEConfig, without_text
from pipeline.models.debcm import DebCM, DebCMConfig

from model_batches import MUSIC, TEXT, VISUAL, random_batch

SMALL = dict(latent_dim=8, hidden_dims=(16,), num_negatives=5)
SAVED = Path(__file__).parent / "data" / "cmvae_defaults.pt"
# What the code before the options computed from torch.manual_seed(0), with and without text: the initial weights
# and every term and embedding of `outputs` (written by that code, a frozen copy of cmvae.py at e1c1937)
SEED0 = Path(__file__).parent / "data" / "cmvae_seed0.pt"
PRIOR = torch.tensor([0.4, 0.2, 0.2, 0.1, 0.07, 0.03])


def outputs(model, batch) -> dict[str, torch.Tensor]:
    """Training-mode terms (seeded draws), eval-mode terms and both embeddings: what the saved file holds."""
    out = {}
    model.train()
    torch.manual_seed(11)
    out.update({f"train/{k}": v.detach() for k, v in model.loss(batch).items()})
    model.eval()
    out.update({f"eval/{k}": v.detach() for k, v in model.loss(batch).items()})
    out["video_embedding"] = model.video_embedding(batch).detach()
    out["music_embedding"] = model.music_embedding(batch).detach()
    return out


def make(seed=0, **kw):
    torch.manual_seed(seed)
    return CMVAE(VISUAL, MUSIC, TEXT, CMVAEConfig(**{**SMALL, **kw}))


def test_defaults_reproduce_the_seeded_model_of_the_code_before_the_options():
    """Same seed: the initial weights equal those the pre-option code drew (exactly: the same draws), and every
    term (train mode with sampling and dropout, and eval mode) and both embeddings equal what it computed,
    with and without text. Exact on the machine that saved them; a tiny tolerance elsewhere (BLAS kernels)."""
    saved = torch.load(SEED0, weights_only=True)
    batch = random_batch()
    for key, text_dim, b in (("text", TEXT, batch),
                             ("no_text", None, {k: v for k, v in batch.items() if k not in ("text", "text_mask")})):
        torch.manual_seed(0)
        model = CMVAE(VISUAL, MUSIC, text_dim, CMVAEConfig(**SMALL))
        init = saved[key]["init"]
        assert model.state_dict().keys() == init.keys()
        assert all(torch.equal(model.state_dict()[k], v) for k, v in init.items()), key  # same init draws
        got, want = outputs(model, b), saved[key]["outputs"]
        assert got.keys() == want.keys()
        for k in want:
            assert torch.allclose(got[k], want[k], rtol=1e-6, atol=1e-7), (key, k)


def test_defaults_reproduce_the_values_saved_before_the_options():
    """Values saved by the pre-option code (commit e1c1937, one torch thread) for CMVAE and for DebCM.
    Exact on the machine that saved them; a tiny tolerance elsewhere, since BLAS kernels differ by CPU."""
    # the fixture records the torch version it was saved with (a str subclass): allow that one class
    with torch.serialization.safe_globals([torch.torch_version.TorchVersion]):
        saved = torch.load(SAVED, weights_only=True)
    batch = random_batch()
    cm = CMVAE(VISUAL, MUSIC, TEXT, CMVAEConfig(**SMALL))
    cm.load_state_dict(saved["cmvae"]["state_dict"])
    db = DebCM(VISUAL, MUSIC, TEXT, DebCMConfig(**SMALL, kl_weight=0.0, confounder_projection="linear"))
    db.load_state_dict(saved["debcm"]["state_dict"])
    db.set_prior(PRIOR)
    for model, name in ((cm, "cmvae"), (db, "debcm")):
        got, want = outputs(model, batch), saved[name]["outputs"]
        assert got.keys() == want.keys()
        for k in want:
            assert torch.allclose(got[k], want[k], rtol=1e-6, atol=1e-7), (name, k)


def test_bad_option_values_are_refused():
    for kw in ({"generation": "self"}, {"fusion": "sum"}):
        with pytest.raises(ParamsError, match=list(kw)[0]):
            CMVAEConfig(**kw).validate()


def test_generation_none_and_dual_change_what_the_latents_decode():
    batch = random_batch()
    none = make(generation="none")
    assert none.visual_decoder is None and none.music_decoder is None and none.text_decoder is None
    terms = none.eval().loss(batch)
    assert terms["recon_video"] == 0 and terms["recon_music"] == 0
    cfg = none.config
    assert torch.allclose(terms["total"], terms["kl_video"] + terms["kl_music"] + cfg.gamma * (
        terms["rank_v2m"] + cfg.alpha * terms["rank_m2v"]) + terms["sub_visual"] + terms["sub_text"])

    dual, cross = make(generation="dual").eval(), make(generation="cross").eval()
    cross.load_state_dict(dual.state_dict())  # same modules, same weights: only what decodes what differs
    z_v, z_m = dual.encode_video(batch).mu, dual.encode_music(batch).mu
    v, m, t = dual._input(batch, "visual"), dual._input(batch, "music"), dual._input(batch, "text")
    mask = batch["text_mask"]

    def mse(a, b):
        return (a - b).pow(2).mean()

    def video_from(z):  # visual + captioned text decoded from latent z
        return mse(dual.visual_decoder(z), v) + mse(dual.text_decoder(z)[mask], t[mask])

    d_terms, c_terms = dual.loss(batch), cross.loss(batch)
    assert torch.allclose(d_terms["recon_video"], video_from(z_v))  # each latent decodes its own modality
    assert torch.allclose(d_terms["recon_music"], mse(dual.music_decoder(z_m), m))
    assert torch.allclose(c_terms["recon_video"], video_from(z_m))  # cross: the other modality
    assert torch.allclose(c_terms["recon_music"], mse(dual.music_decoder(z_v), m))
    assert not torch.allclose(d_terms["recon_video"], c_terms["recon_video"])
    d_terms["total"].backward()
    assert all(p.grad is not None for p in dual.parameters())


def test_concat_fusion_is_one_joint_encoder_and_missing_text_is_an_explicit_zero():
    batch = random_batch()
    model = make(fusion="concat").eval()
    assert model.text_encoder is None and model.visual_encoder.in_dim == VISUAL + TEXT + 1
    q = model.encode_video(batch)
    v, t = model._input(batch, "visual"), model._input(batch, "text")
    has = batch["text_mask"].float().unsqueeze(1)
    hand = model.visual_encoder(torch.cat([v, t * has, has], dim=1))
    assert torch.equal(q.mu, hand.mu)
    missing = ~batch["text_mask"]
    noisy = dict(batch, text=batch["text"] + 50.0 * missing.unsqueeze(1))  # garbage where no caption
    assert torch.equal(model.encode_video(noisy).mu[missing], q.mu[missing])
    model.train()
    terms = model.loss(batch)
    assert terms["sub_visual"] > 0 and terms["sub_text"] == 0  # one encoder: only the visual-only view exists
    terms["total"].backward()
    assert all(p.grad is not None for p in model.parameters())


def test_moe_fusion_averages_experts_where_poe_weights_by_precision():
    """Table 4's difference on a hand-built pair of experts: PoE pulls the fused mean towards the confident
    expert and shrinks the variance; the mixture's mean is the plain average and its variance is wider."""
    confident = Gaussian(torch.tensor([[0.0]]), torch.log(torch.tensor([[0.01]])))
    vague = Gaussian(torch.tensor([[2.0]]), torch.log(torch.tensor([[1.0]])))
    poe = product_of_experts([confident, vague])
    moe = Mixture.uniform([confident, vague], [None, None])
    assert poe.mu.item() == pytest.approx(2.0 * 1.0 / 101.0, rel=1e-5) and poe.var.item() < 0.01
    assert moe.mu.item() == pytest.approx(1.0) and moe.moments().var.item() == pytest.approx(0.505 + 1.0)
    # a missing expert drops out of the mixture as it does out of the product
    masked = Mixture.uniform([confident, vague], [None, torch.tensor([False])])
    assert masked.mu.item() == 0.0


def test_moe_model_trains_and_its_kl_estimate_is_unbiased():
    batch = random_batch()
    model = make(fusion="moe")
    video_q = model._video_posteriors(batch, singles=False)[0]
    assert isinstance(video_q, Mixture)
    q = model.eval().encode_video(batch)
    missing = ~batch["text_mask"]
    visual = model.visual_encoder(model._input(batch, "visual"))
    assert torch.allclose(q.mu[missing], visual.mu[missing])  # no caption: the visual expert alone
    # a mixture of one expert: the single-sample KL estimate averages to the analytic KL
    single = Mixture.uniform([visual], [None])
    torch.manual_seed(0)
    draws = torch.stack([model._kl_prior(single, single.sample()) for _ in range(4000)])
    exact = kl_to_standard_normal(visual).mean()
    assert abs(draws.mean() - exact) < 4 * draws.std() / 4000 ** 0.5
    model.train()
    terms = model.loss(batch)
    assert torch.isfinite(terms["total"])
    terms["total"].backward()
    assert all(p.grad is not None for p in model.parameters())


def test_text_missing_at_test_time_uses_the_same_weights_and_ignores_text():
    """Table 5: the trained CMVAE queried with no caption. Training is unchanged (same loss, same weights)."""
    batch = random_batch()
    full, blind = make(seed=3), make(seed=3, inference_text=False)
    torch.manual_seed(1)
    a = full.loss(batch)["total"]
    torch.manual_seed(1)
    b = blind.loss(batch)["total"]
    assert torch.equal(a, b)
    full.eval(), blind.eval()
    assert torch.equal(blind.video_embedding(batch), full.video_embedding(without_text(batch, TEXT)))
    assert torch.equal(blind.video_embedding(batch), full.visual_encoder(full._input(batch, "visual")).mu)
    captioned = batch["text_mask"]
    assert not torch.allclose(blind.video_embedding(batch)[captioned], full.video_embedding(batch)[captioned])
    assert torch.equal(blind.music_embedding(batch), full.music_embedding(batch))
    # DebCM honours it too (its embedding appends the bias column to the same video mean)
    torch.manual_seed(0)
    student = DebCM(VISUAL, MUSIC, TEXT, DebCMConfig(**SMALL, kl_weight=0.0, inference_text=False)).eval()
    student.set_prior(PRIOR)
    assert torch.equal(student.video_embedding(batch)[:, :-1],
                       student.visual_encoder(student._input(batch, "visual")).mu)
