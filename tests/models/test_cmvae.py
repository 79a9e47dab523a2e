"""CMVAE: forward/backward, PoE text masking, determinism, inference surface, learning on a tiny batch."""
import pytest
import torch

from pipeline.config import from_group
from pipeline.errors import DataError, ParamsError
from pipeline.models.cmvae import CMVAE, CMVAEConfig
from pipeline.models.encoders import Decoder, GaussianEncoder
from pipeline.gaussian import product_of_experts

from model_batches import MUSIC, TEXT, VISUAL

TERMS = {"recon_video", "recon_music", "kl_video", "kl_music", "rank_v2m", "rank_m2v",
         "sub_visual", "sub_text", "total"}
SMALL = dict(latent_dim=8, hidden_dims=(16,), num_negatives=5)


def make(seed=0, **kw):
    torch.manual_seed(seed)
    return CMVAE(VISUAL, MUSIC, TEXT, CMVAEConfig(**{**SMALL, **kw}))


def test_paper_defaults_and_params_group():
    cfg = CMVAEConfig()
    assert (cfg.latent_dim, cfg.dropout, cfg.margin, cfg.num_negatives) == (128, 0.2, 0.05, 40)
    assert (cfg.alpha, cfg.beta, cfg.gamma) == (1.0, 1.0, 1.0)
    cfg = from_group(CMVAEConfig, {"hidden_dims": [64, 32], "alpha": 3}, "teacher")
    assert cfg.hidden_dims == (64, 32)
    with pytest.raises(ParamsError, match="dropout"):
        from_group(CMVAEConfig, {"dropout": 1.5}, "teacher")


def test_forward_backward_gives_every_finite_term(batch):
    model = make()
    terms = model.loss(batch)
    assert set(terms) == TERMS
    assert all(torch.isfinite(v) and v.ndim == 0 for v in terms.values())
    assert terms["sub_text"] > 0 and terms["rank_v2m"] > 0
    terms["total"].backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values()), \
        [n for n, g in grads.items() if g is None]
    cfg = model.config
    expected = (cfg.beta * (terms["recon_video"] + terms["recon_music"]) + terms["kl_video"] + terms["kl_music"]
                + cfg.gamma * (terms["rank_v2m"] + cfg.alpha * terms["rank_m2v"])
                + terms["sub_visual"] + terms["sub_text"])
    assert torch.allclose(terms["total"], expected)


def test_loss_is_deterministic_given_the_seed(batch):
    torch.manual_seed(5)
    a = CMVAE(VISUAL, MUSIC, TEXT, CMVAEConfig(**SMALL)).loss(batch)
    torch.manual_seed(5)
    b = CMVAE(VISUAL, MUSIC, TEXT, CMVAEConfig(**SMALL)).loss(batch)
    assert all(torch.equal(a[k], b[k]) for k in TERMS)
    model = make(1)
    torch.manual_seed(6)
    c = model.loss(batch)
    torch.manual_seed(7)  # same weights, another draw of dropout and reparameterisation noise
    d = model.loss(batch)
    assert not torch.equal(c["total"], d["total"])


def test_video_without_text_keeps_its_visual_posterior(batch):
    model = make().eval()
    fused = model.encode_video(batch)
    visual = model.visual_encoder(batch["visual"])
    text = model.text_encoder(batch["text"])
    missing, present = ~batch["text_mask"], batch["text_mask"]
    assert torch.allclose(fused.mu[missing], visual.mu[missing])
    assert torch.allclose(fused.logvar[missing], visual.logvar[missing])
    hand = product_of_experts([visual[present], text[present]])
    assert torch.allclose(fused.mu[present], hand.mu) and torch.allclose(fused.logvar[present], hand.logvar)
    # the fused variance is below both experts' where text is present (precisions add)
    assert (fused.logvar[present] < visual.logvar[present]).all()
    noisy = dict(batch, text=batch["text"] + 100.0 * missing.unsqueeze(1))
    assert torch.allclose(model.encode_video(noisy).mu[missing], fused.mu[missing])


def test_inference_uses_the_mean_and_dot_products(batch):
    model = make().eval()
    v, m = model.video_embedding(batch), model.music_embedding(batch)
    assert torch.equal(v, model.encode_video(batch).mu) and torch.equal(m, model.encode_music(batch).mu)
    s = model.score(v, m)
    assert s.shape == (len(v), len(m))
    assert torch.allclose(s[2, 5], (v[2] * m[5]).sum())
    assert torch.equal(model.loss(batch)["total"], model.loss(batch)["total"])  # eval: no noise


def test_model_without_text_and_without_subsampling(batch):
    torch.manual_seed(0)
    model = CMVAE(VISUAL, MUSIC, None, CMVAEConfig(**SMALL))
    terms = model.loss({k: v for k, v in batch.items() if k not in ("text", "text_mask")})
    assert terms["sub_visual"] == 0 and terms["sub_text"] == 0 and torch.isfinite(terms["total"])
    terms = make(subsample=False).loss(batch)
    assert terms["sub_visual"] == 0 and terms["sub_text"] == 0


def test_bad_batches_name_the_key(batch):
    model = make()
    with pytest.raises(DataError, match="'text_mask'"):
        model.loss({k: v for k, v in batch.items() if k != "text_mask"})
    with pytest.raises(DataError, match="'visual'.*expected \\(batch, 20\\)"):
        model.loss(dict(batch, visual=batch["visual"][:, :5]))
    with pytest.raises(DataError, match="'music_idx'"):
        model.loss(dict(batch, music_idx=batch["music_idx"][:3]))


def test_encoder_and_decoder_shapes_and_dropout():
    torch.manual_seed(0)
    enc, dec = GaussianEncoder(7, 4, (6, 5), dropout=0.5), Decoder(4, 7, (6, 5), dropout=0.5)
    x = torch.randn(3, 7)
    q = enc(x)
    assert q.mu.shape == q.logvar.shape == (3, 4) and dec(q.mu).shape == (3, 7)
    assert [m.out_features for m in dec.modules() if isinstance(m, torch.nn.Linear)] == [5, 6, 7]  # mirrored
    enc.eval()
    assert torch.equal(enc(x).mu, enc(x).mu)
    enc.train()
    assert not torch.equal(enc(x).mu, enc(x).mu)
    with pytest.raises(DataError, match="expected \\(batch, 7\\)"):
        enc(torch.randn(3, 6))


def test_training_steps_learn_the_tiny_batch(batch):
    model = make(dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.eval()
    before = model.loss(batch)
    model.train()
    totals = []
    for step in range(100):
        torch.manual_seed(step)
        opt.zero_grad()
        terms = model.loss(batch)
        terms["total"].backward()
        opt.step()
        totals.append(terms["total"].item())
    model.eval()
    after = model.loss(batch)
    assert sum(totals[-10:]) < 0.5 * sum(totals[:10])  # the training objective falls
    # ranking at inference (z = mu) improves; the KL terms may grow as posteriors leave the prior
    assert after["rank_v2m"] + after["rank_m2v"] < 0.5 * (before["rank_v2m"] + before["rank_m2v"])
