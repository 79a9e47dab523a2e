"""DebCM student: teacher transfer sign, the concat confounder's inference property, the interaction variant."""
import pytest
import torch

from pipeline.config import from_group
from pipeline.errors import DataError, ParamsError
from pipeline.models.cmvae import CMVAE, CMVAEConfig
from pipeline.models.debcm import DebCM, DebCMConfig, teacher_posteriors
from pipeline.gaussian import kl_gaussians

from model_batches import MUSIC, TEXT, VISUAL

SMALL = dict(latent_dim=8, hidden_dims=(16,), num_negatives=5)
PRIOR = torch.tensor([0.4, 0.2, 0.2, 0.1, 0.07, 0.03])
OTHER_PRIOR = torch.tensor([0.02, 0.03, 0.05, 0.1, 0.3, 0.5])


def student(seed=0, **kw):
    torch.manual_seed(seed)
    model = DebCM(VISUAL, MUSIC, TEXT, DebCMConfig(**{**SMALL, **kw}))
    model.set_prior(PRIOR)
    return model


def with_teacher(batch, seed=1):
    torch.manual_seed(seed)
    teacher = CMVAE(VISUAL, MUSIC, TEXT, CMVAEConfig(**SMALL))
    video = {k: batch[k] for k in ("visual", "text", "text_mask")}
    vm, vl = teacher_posteriors(teacher, "video", video, chunk_size=5)
    mm, ml = teacher_posteriors(teacher, "music", {"music": batch["music"]}, chunk_size=7)
    return dict(batch, teacher_video_mu=vm, teacher_video_logvar=vl, teacher_music_mu=mm, teacher_music_logvar=ml)


@pytest.mark.parametrize("confounder,mode", [("concat", "batch"), ("concat", "global"),
                                             ("interaction", "batch")])
def test_forward_backward_gives_every_finite_term(batch, confounder, mode):
    full = with_teacher(batch)
    model = student(confounder=confounder, confounder_mode=mode, kl_weight=2.0)
    terms = model.loss(full)
    assert {"kl_teacher_video", "kl_teacher_music", "rank_v2m", "rank_m2v", "sub_text", "total"} <= set(terms)
    assert all(torch.isfinite(v) and v.ndim == 0 for v in terms.values())
    base = {k: v for k, v in terms.items() if not k.startswith("kl_teacher")}
    torch.manual_seed(0)
    terms["total"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # total = CMVAE total + kl_weight * (video KL + music KL)
    plain = DebCM(VISUAL, MUSIC, TEXT, DebCMConfig(**SMALL, confounder=confounder, confounder_mode=mode, kl_weight=0))
    plain.load_state_dict(model.state_dict())
    torch.manual_seed(3)
    t_plain = plain.loss(batch)
    torch.manual_seed(3)
    t_full = model.loss(full)
    assert torch.allclose(t_full["total"], t_plain["total"] + 2.0 * (t_full["kl_teacher_video"] + t_full["kl_teacher_music"]))
    assert set(base) - {"total"} <= set(t_plain)


def test_teacher_kl_is_student_to_teacher_and_pulls_the_student_in(batch):
    full = with_teacher(batch)
    model = student(dropout=0.0).eval()  # eval: deterministic posteriors, the KL is the only thing optimised
    q_v, q_m = model.encode_video(full), model.encode_music(full)
    terms = model.loss(full)
    t_v = kl_gaussians(q_v, type(q_v)(full["teacher_video_mu"], full["teacher_video_logvar"])).mean()
    assert torch.allclose(terms["kl_teacher_video"], t_v)
    assert torch.allclose(terms["kl_teacher_music"],
                          kl_gaussians(q_m, type(q_m)(full["teacher_music_mu"], full["teacher_music_logvar"])).mean())
    gap0 = (q_v.mu - full["teacher_video_mu"]).norm() + (q_m.mu - full["teacher_music_mu"]).norm()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    history = []
    for _ in range(15):
        opt.zero_grad()
        t = model.loss(full)
        kl = t["kl_teacher_video"] + t["kl_teacher_music"]
        kl.backward()
        opt.step()
        history.append(kl.item())
    assert history[-1] < 0.5 * history[0] and all(b <= a + 1e-6 for a, b in zip(history, history[1:]))
    q_v, q_m = model.encode_video(full), model.encode_music(full)
    gap = (q_v.mu - full["teacher_video_mu"]).norm() + (q_m.mu - full["teacher_music_mu"]).norm()
    assert gap < gap0  # minimising brings the student towards the teacher (the public code's sign pushed away)


def test_concat_confounder_cannot_change_a_videos_ranking_at_inference(batch):
    model = student(confounder="concat").eval()
    video = model.video_embedding(batch)
    first = model.score(video, model.music_embedding(batch))
    model.set_prior(OTHER_PRIOR)
    second = model.score(video, model.music_embedding(batch))
    shift = first - second
    assert shift.abs().max() > 1e-3  # the prior does move the scores...
    assert torch.allclose(shift, shift[:, :1].expand_as(shift), atol=1e-5)  # ...by one constant per video
    assert torch.equal(first.argsort(dim=1), second.argsort(dim=1))


def test_concat_batch_confounder_cancels_in_the_video_to_music_half(batch):
    model = student(confounder="concat", confounder_mode="batch", kl_weight=0.0)
    torch.manual_seed(9)
    a = model.loss(batch)
    other = dict(batch, uploader_dist=torch.roll(torch.eye(6), 2, dims=1)[torch.arange(len(batch["visual"])) % 6] * 0.9 + 0.1 / 6)
    torch.manual_seed(9)
    b = model.loss(other)
    assert torch.allclose(a["rank_v2m"], b["rank_v2m"], atol=1e-5)
    assert not torch.allclose(a["rank_m2v"], b["rank_m2v"])
    glob = student(confounder="concat", confounder_mode="global", kl_weight=0.0)
    torch.manual_seed(9)
    c = glob.loss(batch)
    torch.manual_seed(9)
    d = glob.loss(other)
    assert torch.equal(c["total"], d["total"])  # DecRS-style: the batch's uploaders are never read


def test_interaction_backdoor_can_change_rankings_and_content_drops_the_term(batch):
    model = student(confounder="interaction", inference="backdoor").eval()
    with torch.no_grad():
        model.interaction.copy_(torch.randn(6, 6, generator=torch.Generator().manual_seed(0)) * 0.03)
    video, music = model.video_embedding(batch), model.music_embedding(batch)
    scores = model.score(video, music)
    mu_v, mu_m = model.encode_video(batch).mu, model.encode_music(batch).mu
    hand = mu_v @ mu_m.t() + (PRIOR @ model.taste_matrix() @ batch["music_genre"].t()).unsqueeze(0)
    assert torch.allclose(scores, hand, atol=1e-5)
    model.set_prior(OTHER_PRIOR)
    moved = model.score(video, model.music_embedding(batch))
    assert not torch.equal(scores.argsort(dim=1), moved.argsort(dim=1))
    model.config.inference = "content"
    content = model.score(video, model.music_embedding(batch))
    assert torch.allclose(content, mu_v @ mu_m.t(), atol=1e-6)
    # training uses each video's own uploader: u_v^T W g(m_j) enters the in-batch scores
    model.train()
    s = model._pair_scores(mu_v, mu_m, batch, None)
    assert torch.allclose(s - mu_v @ mu_m.t(), batch["uploader_dist"] @ model.taste_matrix() @ batch["music_genre"].t(),
                          atol=1e-5)


def test_prior_and_surface_errors(batch):
    torch.manual_seed(0)
    model = DebCM(VISUAL, MUSIC, TEXT, DebCMConfig(**SMALL)).eval()
    with pytest.raises(DataError, match="set_prior"):
        model.music_embedding(batch)
    with pytest.raises(DataError, match="sums to"):
        model.set_prior(torch.ones(6))
    with pytest.raises(DataError, match="6 non-negative"):
        model.set_prior(torch.ones(5) / 5)
    model.set_prior(PRIOR)
    state = model.state_dict()
    assert torch.equal(state["uploader_prior"], PRIOR)  # the prior travels with the checkpoint
    with pytest.raises(DataError, match="video_embedding"):
        model.score(model.encode_video(batch).mu, model.encode_music(batch).mu)
    with pytest.raises(DataError, match="teacher posterior"):
        student(kl_weight=1.0).loss(batch)
    terms = student(kl_weight=0.0).loss(batch)
    assert terms["kl_teacher_video"] == 0 and torch.isfinite(terms["total"])
    with pytest.raises(ParamsError, match="confounder"):
        from_group(DebCMConfig, {"confounder": "sum"}, "student")
    assert DebCMConfig().kl_weight == 40.0


def test_teacher_posteriors_are_chunked_eval_mode_and_restore_the_mode(batch):
    torch.manual_seed(1)
    teacher = CMVAE(VISUAL, MUSIC, TEXT, CMVAEConfig(**SMALL))
    teacher.train()
    video = {k: batch[k] for k in ("visual", "text", "text_mask")}
    mu, logvar = teacher_posteriors(teacher, "video", video, chunk_size=5)
    assert teacher.training
    teacher.eval()
    whole = teacher.encode_video(video)
    assert torch.allclose(mu, whole.mu, atol=1e-6) and torch.allclose(logvar, whole.logvar, atol=1e-6)
    assert not mu.requires_grad
    with pytest.raises(ParamsError, match="side"):
        teacher_posteriors(teacher, "uploader", video)


def test_student_loss_is_deterministic_given_the_seed(batch):
    full = with_teacher(batch)
    model = student(confounder="interaction")
    torch.manual_seed(4)
    a = model.loss(full)
    torch.manual_seed(4)
    b = model.loss(full)
    assert all(torch.equal(a[k], b[k]) for k in a)


def taste_driven_batch(n: int = 96, seed: int = 0) -> dict[str, torch.Tensor]:
    """Choices made by taste alone: each uploader mostly likes one genre and picks music of it; the video and
    music features carry no genre, so only u^T W g(m) can explain the choices."""
    g = torch.Generator().manual_seed(seed)
    liked = torch.randint(0, 6, (n,), generator=g)
    uploader = torch.full((n, 6), 0.04).scatter_(1, liked.unsqueeze(1), 0.8)
    return {"visual": torch.randn(n, VISUAL, generator=g), "text": torch.zeros(n, TEXT),
            "text_mask": torch.zeros(n, dtype=torch.bool), "music": torch.randn(n, MUSIC, generator=g),
            "music_genre": torch.eye(6)[liked], "uploader_dist": uploader}


def learned_taste(steps: int, lr: float, scale: float) -> float:
    """Mean diagonal minus mean off-diagonal of W after training on taste-driven choices."""
    batch = taste_driven_batch()
    model = student(confounder="interaction", kl_weight=0.0, subsample=False, interaction_scale=scale).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for step in range(steps):
        torch.manual_seed(step)
        opt.zero_grad()
        model.loss(batch)["total"].backward()
        opt.step()
    w = model.taste_matrix().detach()
    off = ~torch.eye(len(w), dtype=torch.bool)
    return float(w.diagonal().mean() - w[off].mean())


def test_interaction_term_learns_the_taste_that_drives_choices():
    """W starts at zero; on choices driven by taste it grows a positive diagonal (an uploader's liked genre
    scores higher). Adam moves each raw entry by about lr per step, so at interaction_scale 1 the gap grows
    by at most about 2 lr per step: 20 steps at lr 1e-3 (what an early-stopped run takes) give ~0.04 and the
    term ranks as nothing; W = scale * W_raw at the default scale 100 learns it in those same 20 steps."""
    assert 0 < learned_taste(steps=20, lr=1e-3, scale=1.0) < 0.05
    assert learned_taste(steps=20, lr=1e-3, scale=DebCMConfig().interaction_scale) > 1.0


def test_taste_diagnostics_slope_is_one_for_the_empirical_lift_and_zero_without_a_term():
    """The diagnostic judges W on training pairs: W = log-lift structure gives slope ~1, W = 0 gives 0."""
    import numpy as np

    from pipeline.training.data import TrainData
    from pipeline.training.diagnostics import taste_diagnostics

    rng = np.random.default_rng(0)
    n_u, n_m, n = 40, 30, 4000
    taste = rng.dirichlet(np.full(6, 0.5), n_u)
    genre = np.eye(6)[rng.integers(0, 6, n_m)]
    owner = rng.integers(0, n_u, n)
    music = np.array([rng.choice(n_m, p=(genre @ taste[o]) / (genre @ taste[o]).sum()) for o in owner])
    shares = np.zeros((n_u, 6))
    np.add.at(shares, owner, genre[music])
    shares /= shares.sum(axis=1, keepdims=True)
    prior = genre[music].mean(axis=0)
    data = TrainData(visual=torch.zeros(n, 1), music=torch.zeros(n_m, 1), video_idx=torch.arange(n),
                     music_idx=torch.tensor(music), uploader_idx=torch.tensor(owner),
                     uploader_dist=torch.tensor(shares, dtype=torch.float32),
                     music_genre=torch.tensor(genre, dtype=torch.float32), val_video=torch.zeros(0, dtype=torch.long),
                     val_candidates=torch.zeros(0, 2, dtype=torch.long), val_weight=np.zeros(0), prior=prior)
    assert taste_diagnostics(torch.zeros(6, 6), data)["taste_slope"] == 0.0
    # u^T W g ~ log u_g - log prior_g for one-hot u at the corners; a diagonal W = a * I scales it: the
    # slope is then positive and grows with a, and the correlation is high
    small, big = (taste_diagnostics(a * torch.eye(6), data) for a in (0.5, 5.0))
    assert 0 < small["taste_slope"] < big["taste_slope"] and big["taste_corr"] > 0.5


def test_interaction_scale_multiplies_w():
    cfg = DebCMConfig(latent_dim=4, hidden_dims=(8,), confounder="interaction", interaction_scale=30.0)
    model = DebCM(5, 4, None, cfg)
    with torch.no_grad():
        model.interaction.fill_(0.01)
    assert torch.allclose(model.taste_matrix(), torch.full((6, 6), 0.3))
    with pytest.raises(ParamsError, match="interaction_scale"):
        DebCMConfig(interaction_scale=0.0).validate()
