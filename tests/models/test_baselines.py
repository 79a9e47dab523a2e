"""The baselines registry and what makes each neural / post-hoc baseline differ from CMVAE (hand-built batches):
IPS and dual-IPS pair weights, label distillation from the teacher, the calibration re-ranking."""
import dataclasses
import pkgutil

import pytest
import torch

import pipeline.models.baselines as baselines
from pipeline.errors import DataError, ParamsError
from pipeline.losses import bidirectional_ranking_loss, hardest_k_margin_loss
from pipeline.models.baselines import BASELINES, DEFAULT_VARIANTS, REGISTRY, VARIANTS, BaselineParams, variant
from pipeline.models.baselines.calibration import Calibrated
from pipeline.models.baselines.debias import (DebiasedCMVAE, DebiasedCMVAEConfig, DebiasedDebCM, distillation_loss,
                                              propensity_weights)
from pipeline.models.cmvae import CMVAE, CMVAEConfig
from pipeline.models.debcm import DebCMConfig
from pipeline.models.registry import classes, load_model, model_spec
from pipeline.training.checkpoint import cpu_state, save_torch

from model_batches import MUSIC, TEXT, VISUAL, random_batch

SMALL = dict(latent_dim=8, hidden_dims=(16,), num_negatives=5, subsample=False)
STUDENT = DebCMConfig(**SMALL)
PRIOR = torch.tensor([0.4, 0.2, 0.2, 0.1, 0.07, 0.03])


def built(name: str, params: BaselineParams | None = None, seed: int = 0):
    torch.manual_seed(seed)
    return variant(name, STUDENT, params).build(VISUAL, MUSIC, TEXT)


def same_weights(model, like):
    """`model` with the weights of `like` (the parameters both have)."""
    own = model.state_dict()
    own.update({k: v for k, v in like.state_dict().items() if k in own})
    model.load_state_dict(own)
    return model


def test_every_module_of_the_package_is_discovered_and_registers():
    here = {m.name for m in pkgutil.iter_modules(baselines.__path__)} - {"__main__", "closed_form"}
    # every file of the package but the shared base registers variants, and nothing lists them
    assert {s.make.__module__.rsplit(".", 1)[1] for s in REGISTRY.values()
            if s.make.__module__.startswith(baselines.__name__ + ".")} == here
    assert VARIANTS[:6] == ("student", "no_teacher", "cmvae", "decrs", "interaction", "interaction_content")
    assert BASELINES == VARIANTS[1:] and set(DEFAULT_VARIANTS) <= set(BASELINES)


def test_every_variant_builds_a_registered_class_with_its_metadata():
    for name, spec in REGISTRY.items():
        assert spec.kind in baselines.KINDS and spec.data in baselines.SETTINGS and spec.table and spec.row, name
        v = variant(name, STUDENT)
        if spec.kind == "post_hoc":
            assert REGISTRY[spec.base].kind == "neural"
            model = v.build(built(spec.base), 4)
        else:
            model = v.build(VISUAL, MUSIC, TEXT)
        assert classes()[type(model).__name__] is type(model), name  # load_model can rebuild it
        assert v.union == (spec.union and spec.data == "ugc+pgc")
    # the UGC + PGC column: non-debiased rows train on the union, debiased ones distil from the teacher
    assert {n for n, s in REGISTRY.items() if s.union} == {"cmvae_pgc", "popularity_pgc", "linear_pgc", "cca_pgc"}
    teacher = {n for n in VARIANTS if variant(n, STUDENT).uses_teacher}
    assert teacher == {"student", "cmvae_kl", "teacher_alone", "ips_pgc", "dual_ips_pgc", "decrs_pgc"}
    assert not variant("ips_pgc", STUDENT, BaselineParams(distill_weight=0.0)).uses_teacher


def test_baseline_params_are_checked():
    with pytest.raises(ParamsError, match="baselines.variants.*'nope'"):
        BaselineParams(variants=("cmvae", "nope")).validate()
    with pytest.raises(ParamsError, match="own stage"):
        BaselineParams(variants=("student",)).validate()
    with pytest.raises(ParamsError, match="repeats"):
        BaselineParams(variants=("cmvae", "cmvae")).validate()
    with pytest.raises(ParamsError, match="propensity_clip"):
        BaselineParams(propensity_clip=0).validate()
    BaselineParams(variants=BASELINES).validate()


# ---- the ranking-loss hook --------------------------------------------------------------------

def test_weighted_hinge_is_the_weighted_mean_of_each_anchors_loss():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(7, 7, generator=g, dtype=torch.float64)
    w = torch.rand(7, generator=g, dtype=torch.float64) + 0.1
    per_anchor = torch.stack([hardest_k_margin_loss(scores, None, 0.3, 3, torch.eye(7, dtype=torch.float64)[i])
                              for i in range(7)])
    assert torch.allclose(hardest_k_margin_loss(scores, None, 0.3, 3, w), (w * per_anchor).sum() / w.sum())
    assert torch.equal(hardest_k_margin_loss(scores, None, 0.3, 3), per_anchor.mean())  # no weights: CMVAE's mean


# ---- IPS and dual IPS ---------------------------------------------------------------------------

def genre_batch(n: int = 24, seed: int = 0) -> dict[str, torch.Tensor]:
    """Every uploader puts 0.9 of its choices on genre 0 (the majority); rows alternate genre 0 and 1 music."""
    batch = random_batch(n, seed, n_music=n)
    batch["music_idx"] = torch.arange(n)
    batch["music_genre"] = torch.eye(6)[torch.arange(n) % 2]
    batch["uploader_dist"] = torch.tensor([0.9, 0.02, 0.02, 0.02, 0.02, 0.02]).repeat(n, 1)
    return batch


def test_ips_down_weights_majority_genre_pairs_and_reweights_the_ranking_loss():
    batch = genre_batch()
    ips, cmvae = built("ips").eval(), built("cmvae").eval()  # eval: z = mu, the scores are reproducible
    same_weights(cmvae, ips)
    w = ips.pair_weights(batch)
    assert torch.allclose(w[0::2], torch.full((12,), 1 / 0.9)) and torch.allclose(w[1::2], torch.full((12,), 1 / 0.05))
    assert (w[0::2] < w[1::2]).all()  # 0.02 clipped at propensity_clip 0.05: weight 20, not 50
    t_ips, t_plain = ips.loss(batch), cmvae.loss(batch)
    scores = ips.encode_video(batch).mu @ ips.encode_music(batch).mu.t()
    v2m, m2v = bidirectional_ranking_loss(scores, batch["music_idx"], 0.05, 5, w)
    assert torch.allclose(t_ips["rank_v2m"], v2m) and torch.allclose(t_ips["rank_m2v"], m2v)
    assert not torch.allclose(t_ips["rank_v2m"], t_plain["rank_v2m"])
    gap = (t_ips["rank_v2m"] - t_plain["rank_v2m"]) + (t_ips["rank_m2v"] - t_plain["rank_m2v"])  # gamma = alpha = 1
    assert torch.allclose(t_ips["total"], t_plain["total"] + gap, atol=1e-6)
    for key in ("recon_music", "recon_video", "kl_video", "kl_music"):  # only the ranking is reweighted
        assert torch.equal(t_ips[key], t_plain[key])


def test_without_propensity_the_debiased_model_is_cmvae_bit_for_bit(batch):
    cfg = DebiasedCMVAEConfig(**{**SMALL, "subsample": True})
    torch.manual_seed(0)
    plain_cfg = CMVAEConfig(**{**SMALL, "subsample": True})
    debiased, cmvae = DebiasedCMVAE(VISUAL, MUSIC, TEXT, cfg), CMVAE(VISUAL, MUSIC, TEXT, plain_cfg)
    same_weights(cmvae, debiased)
    torch.manual_seed(5)
    a = debiased.loss(batch)
    torch.manual_seed(5)
    b = cmvae.loss(batch)
    assert all(torch.equal(a[k], b[k]) for k in b) and a["distill"] == 0


def test_dual_ips_also_divides_by_the_genres_global_share():
    batch = genre_batch()
    batch["uploader_dist"] = torch.full((24, 6), 0.3)  # equal uploader-side propensity for every pair
    dual = built("dual_ips").eval()
    with pytest.raises(DataError, match="set_prior"):
        dual.pair_weights(batch)
    dual.set_prior(PRIOR)
    w_dual, w_ips = dual.pair_weights(batch), propensity_weights(batch["uploader_dist"], batch["music_genre"], 0.05)
    assert torch.allclose(w_ips, torch.full((24,), 1 / 0.3))  # the uploader side alone cannot tell them apart
    assert torch.allclose(w_dual[0::2], torch.full((12,), 1 / (0.3 * 0.4)))  # genre 0: global share 0.4
    assert torch.allclose(w_dual[1::2], torch.full((12,), 1 / (0.3 * 0.2)))  # genre 1: 0.2, up-weighted
    ips = same_weights(built("ips").eval(), dual)
    assert not torch.allclose(dual.loss(batch)["rank_v2m"], ips.loss(batch)["rank_v2m"])


# ---- label distillation -------------------------------------------------------------------------

def test_distillation_term_is_zero_iff_the_rows_match_up_to_a_constant():
    s = torch.randn(5, 5, generator=torch.Generator().manual_seed(1))
    assert distillation_loss(s, s, 1.0) == pytest.approx(0.0, abs=1e-7)
    assert distillation_loss(s, s + torch.arange(5.0).unsqueeze(1), 2.0) == pytest.approx(0.0, abs=1e-6)
    assert distillation_loss(s, s.flip(1), 1.0) > 0.05


def with_teacher(batch, video_mu, music_mu):
    return dict(batch, teacher_video_mu=video_mu.detach(), teacher_video_logvar=torch.zeros_like(video_mu),
                teacher_music_mu=music_mu.detach(), teacher_music_logvar=torch.zeros_like(music_mu))


def gradients(model, batch) -> torch.Tensor:
    model.zero_grad()
    model.loss(batch)["total"].backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def test_distillation_is_zero_for_the_students_own_scores_and_moves_the_gradient_otherwise(batch):
    params = BaselineParams(distill_weight=3.0)
    model = built("ips_pgc", params).eval()  # eval: scores = mu_v . mu_m, the student's in-batch matrix
    plain = same_weights(built("ips").eval(), model)
    with pytest.raises(DataError, match="teacher"):
        model.loss(batch)
    # the fused (visual + text) posterior: a teacher equal to it leaves nothing to distil
    own = with_teacher(batch, model.encode_video(batch).mu, model.encode_music(batch).mu)
    assert model.loss(own)["distill"].item() == pytest.approx(0.0, abs=1e-6)
    assert torch.allclose(gradients(model, own), gradients(plain, own), atol=1e-6)
    g = torch.Generator().manual_seed(3)
    other = with_teacher(batch, torch.randn(24, 8, generator=g), torch.randn(24, 8, generator=g))
    terms = model.loss(other)
    scores = model.encode_video(batch).mu @ model.encode_music(batch).mu.t()
    teacher = other["teacher_video_mu"] @ other["teacher_music_mu"].t()
    assert torch.allclose(terms["distill"], distillation_loss(scores, teacher, 1.0), atol=1e-6)
    assert torch.allclose(terms["total"], plain.loss(other)["total"] + 3.0 * terms["distill"], atol=1e-5)
    assert not torch.allclose(gradients(model, other), gradients(plain, other), atol=1e-4)


def test_decrs_pgc_is_decrs_plus_distillation(batch):
    model = built("decrs_pgc")
    assert isinstance(model, DebiasedDebCM) and model.config.confounder_mode == "global"
    assert model.config.kl_weight == 0 and model.config.distill_weight == 1.0
    model.set_prior(PRIOR)
    model.eval()
    g = torch.Generator().manual_seed(4)
    terms = model.loss(with_teacher(batch, torch.randn(24, 8, generator=g), torch.randn(24, 8, generator=g)))
    assert terms["distill"].item() > 0 and torch.isfinite(terms["total"])


# ---- calibration ----------------------------------------------------------------------------

def calibrated(weight: float, smoothing: float = 0.0, n_pool: int = 12):
    """A calibrated CMVAE over a pool of 12 music, genres one-hot (0, 1, ..., 5, 0, 1, ...)."""
    base = built("cmvae").eval()
    model = Calibrated.around(base, n_pool, weight, smoothing).eval()
    pool = random_batch(n_pool, seed=7, n_music=n_pool)
    pool_batch = {"music": pool["music"], "music_genre": torch.eye(6)[torch.arange(n_pool) % 6]}
    with torch.no_grad():
        model.pool_music.copy_(base.music_embedding(pool_batch))
    model.pool_genre.copy_(pool_batch["music_genre"])
    model.temperature.fill_(0.5)
    return model, base, pool_batch


def test_calibration_is_the_base_ranking_at_weight_zero(batch):
    model, base, pool = calibrated(0.0, smoothing=0.01)
    videos = dict(batch, uploader_dist=genre_batch()["uploader_dist"])
    s = model.score(model.video_embedding(videos), model.music_embedding(pool))
    s_base = base.score(base.video_embedding(videos), base.music_embedding(pool))
    assert torch.allclose(s, s_base, atol=1e-6) and torch.equal(s.argsort(dim=1), s_base.argsort(dim=1))
    with pytest.raises(DataError, match="uploader_dist"):
        model.video_embedding({k: v for k, v in batch.items() if k != "uploader_dist"})


def kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return (p * (p / q).log()).sum(dim=1)


@pytest.mark.parametrize("weight", [0.25, 0.5, 1.0])
def test_calibration_moves_the_genre_mix_geometrically_toward_the_uploaders(batch, weight):
    """Documented amount: the softmax(s'/T) mix over the pool is q^(1 - lambda) p^lambda, normalised, so
    KL(p || mix) <= (1 - lambda) KL(p || q)."""
    model, base, pool = calibrated(weight)
    target = torch.tensor([0.05, 0.1, 0.15, 0.2, 0.2, 0.3]).repeat(24, 1)
    videos = dict(batch, uploader_dist=target)
    mix = torch.softmax(model.score(model.video_embedding(videos), model.music_embedding(pool)) / 0.5, dim=1) \
        @ pool["music_genre"]
    q = model.genre_mix(base.video_embedding(videos))
    expected = q ** (1 - weight) * target ** weight
    assert torch.allclose(mix, expected / expected.sum(dim=1, keepdim=True), atol=1e-5)
    assert (kl(target, mix) <= (1 - weight) * kl(target, q) + 1e-5).all() and (kl(target, q) > 0.01).all()


def test_calibrated_model_saves_and_loads_with_its_base(tmp_path, batch):
    model, _, pool = calibrated(0.5, smoothing=0.01)
    save_torch({"model": model_spec(model), "state_dict": cpu_state(model)}, tmp_path / "m.pt")
    again = load_model(tmp_path / "m.pt")
    videos = dict(batch, uploader_dist=genre_batch()["uploader_dist"])
    assert torch.equal(again.video_embedding(videos), model.video_embedding(videos))
    assert torch.equal(again.music_embedding(pool), model.music_embedding(pool))
    assert dataclasses.asdict(again.base.config) == dataclasses.asdict(model.base.config)
