"""Issue 24's training-step speed-ups change no number: each fast path against the plain computation it
replaced, bit for bit, and a trained student byte for byte."""
from __future__ import annotations

import pytest
import torch

import pipeline.gaussian as gaussian
import pipeline.losses as losses
import pipeline.training.loop as loop
from pipeline.io import file_md5
from pipeline.models.debcm import DebCM, DebCMConfig
from pipeline.training.config import TrainConfig
from pipeline.training.loop import fit
from test_train import data, new_cmvae, tiny_train, world  # noqa: F401  (fixtures)


@pytest.fixture
def two_threads():
    """Two intra-op threads: the top-k worker thread runs only with more than one."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def plain_mse(pred, target):
    return (pred - target).pow(2).mean()


@pytest.mark.parametrize("shape,scale", [((37, 53), 0.37), ((64, 32), 3.0), ((1, 5), -1.5), ((300, 129), 1e-3)])
def test_mean_squared_error_matches_autograd_bit_for_bit(shape, scale):
    g = torch.Generator().manual_seed(sum(shape))
    pred0, target0 = torch.randn(shape, generator=g) * 7, torch.randn(shape, generator=g)
    results = []
    for fn in (plain_mse, losses._MeanSquaredError.apply):
        pred, target = pred0.clone().requires_grad_(), target0.clone().requires_grad_()
        value = fn(pred, target)
        (value * scale).backward()
        results.append((value, pred.grad, target.grad))
    for fast, plain in zip(results[1], results[0]):
        assert fast.dtype == plain.dtype and torch.equal(fast, plain)


def test_reconstruction_loss_keeps_its_masked_path_and_refuses_bad_shapes():
    pred, target = torch.ones(3, 2, requires_grad=True), torch.zeros(3, 2)
    assert losses.reconstruction_loss(pred, target, torch.tensor([True, False, False])).item() == 1.0
    assert losses.reconstruction_loss(pred, target, torch.tensor([False] * 3)).item() == 0.0
    with pytest.raises(losses.DataError, match="shape"):
        losses.reconstruction_loss(pred, torch.zeros(2, 2))


def test_topk_rows_returns_exactly_the_sequential_calls(two_threads):
    g = torch.Generator().manual_seed(0)
    mats = [torch.randn(200, 150, generator=g), torch.randn(90, 150, generator=g).masked_fill(
        torch.rand(90, 150, generator=g) < 0.3, float("-inf"))]
    for (v, i), m in zip(losses.topk_rows(mats, 12), mats):
        want_v, want_i = m.topk(12, dim=1)
        assert torch.equal(v, want_v) and torch.equal(i, want_i)
    pid_pool = losses._pool()
    assert losses._pool() is pid_pool  # one worker per process, made once


def test_poe_with_an_unmasked_expert_skips_only_the_absent_row_check():
    a = gaussian.Gaussian(torch.zeros(2, 3), torch.zeros(2, 3))
    b = gaussian.Gaussian(torch.ones(2, 3), torch.zeros(2, 3))
    fused = gaussian.product_of_experts([a, b], [None, torch.tensor([False, True])])
    assert torch.equal(fused.mu[0], a.mu[0]) and torch.allclose(fused.mu[1], torch.full((3,), 0.5))
    with pytest.raises(gaussian.DataError, match="row 1"):
        gaussian.product_of_experts([a, b], [torch.tensor([True, False]), torch.tensor([True, False])])


def test_sample_draws_what_randn_with_no_generator_drew():
    q = gaussian.Gaussian(torch.randn(5, 4), torch.randn(5, 4))
    torch.manual_seed(3)
    fast = gaussian.sample(q)
    torch.manual_seed(3)
    plain = q.mu + torch.randn(q.mu.shape, generator=None) * torch.exp(0.5 * q.logvar)
    assert torch.equal(fast, plain)


def _plain_paths(m) -> None:
    """Every issue-24 fast path replaced by the computation it replaced."""
    m.setattr(losses, "_MeanSquaredError", type("Plain", (), {"apply": staticmethod(plain_mse)}))
    m.setattr(losses, "topk_rows", lambda mats, k: [x.topk(k, dim=1) for x in mats])
    m.setattr(loop, "make_optimizer", lambda model, cfg: torch.optim.Adam(
        model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=False))

    def sample(q, generator=None):
        eps = torch.randn(q.mu.shape, generator=generator, device=q.mu.device, dtype=q.mu.dtype)
        return q.mu + eps * torch.exp(0.5 * q.logvar)
    m.setattr(gaussian, "sample", sample)
    import pipeline.models.cmvae as cmvae_module
    m.setattr(cmvae_module, "sample", sample)


def test_speed_paths_leave_the_trained_student_byte_identical(data, tmp_path, monkeypatch, two_threads):
    """DebCM with its teacher (sub-sampled objective, text on 70% of the videos, concat confounder), trained on
    two threads with the fast paths and with the plain ones: the same model file, the same logged losses."""
    def train(out):
        teacher = new_cmvae(seed=5)
        torch.manual_seed(0)
        student = DebCM(24, 24, 12, DebCMConfig(latent_dim=16, hidden_dims=(32,), num_negatives=10, kl_weight=1.0))
        summary = fit(student, data, tiny_train(epochs=2, threads=2), out, teacher=teacher)
        return file_md5(out / "best.pt"), [h["train/total"] for h in summary["history"]], student.state_dict()

    fast = train(tmp_path / "fast")
    with monkeypatch.context() as m:
        _plain_paths(m)
        plain = train(tmp_path / "plain")
    assert fast[0] == plain[0] and fast[1] == plain[1]
    assert all(torch.equal(fast[2][k], plain[2][k]) for k in plain[2])


def test_make_optimizer_is_adam_with_the_loop_settings():
    model = torch.nn.Linear(3, 2)
    opt = loop.make_optimizer(model, TrainConfig(lr=0.01, weight_decay=0.5))
    group = opt.param_groups[0]
    assert isinstance(opt, torch.optim.Adam) and group["lr"] == 0.01 and group["weight_decay"] == 0.5
    assert group["foreach"] is True
