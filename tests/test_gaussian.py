"""Gaussian maths against hand-computed values and Monte-Carlo estimates."""
import math

import pytest
import torch

from pipeline.errors import DataError
from pipeline.gaussian import Gaussian, kl_gaussians, kl_to_standard_normal, product_of_experts, sample


def g(mu, var):
    mu = torch.tensor(mu, dtype=torch.float64)
    return Gaussian(mu, torch.log(torch.tensor(var, dtype=torch.float64)))


def test_poe_matches_hand_computed_values():
    # expert 1: N(1, 1) (precision 1); expert 2: N(3, 0.5) (precision 2)
    a, b = g([[1.0], [1.0]], [[1.0], [1.0]]), g([[3.0], [3.0]], [[0.5], [0.5]])
    fused = product_of_experts([a, b], [None, torch.tensor([True, False])])
    # row 0: var = 1 / (1 + 2) = 1/3, mu = (1*1 + 3*2) / 3 = 7/3; row 1: expert 2 masked out -> expert 1
    assert torch.allclose(fused.var, torch.tensor([[1 / 3], [1.0]], dtype=torch.float64))
    assert torch.allclose(fused.mu, torch.tensor([[7 / 3], [1.0]], dtype=torch.float64))
    with_prior = product_of_experts([a, b], include_prior=True)
    # prior N(0, 1) adds precision 1 and mean 0: var = 1/4, mu = 7/4
    assert torch.allclose(with_prior.var, torch.full((2, 1), 0.25, dtype=torch.float64))
    assert torch.allclose(with_prior.mu, torch.full((2, 1), 1.75, dtype=torch.float64))


def test_poe_single_expert_is_identity_and_all_masked_is_an_error():
    a = g([[0.3, -2.0]], [[0.7, 2.5]])
    same = product_of_experts([a])
    assert torch.allclose(same.mu, a.mu) and torch.allclose(same.logvar, a.logvar)
    with pytest.raises(DataError, match="row 0"):
        product_of_experts([a], [torch.tensor([False])])


def test_poe_masked_expert_gets_no_gradient_and_extreme_values_stay_finite():
    a = Gaussian(torch.zeros(2, 3, requires_grad=True), torch.zeros(2, 3))
    b = Gaussian(torch.ones(2, 3, requires_grad=True), torch.full((2, 3), -30.0))
    fused = product_of_experts([a, b], [None, torch.tensor([False, True])])
    fused.mu.sum().backward()
    assert torch.isfinite(fused.mu).all() and torch.isfinite(fused.logvar).all()
    assert b.mu.grad[0].abs().sum() == 0 and b.mu.grad[1].abs().sum() > 0
    assert torch.allclose(fused.mu[1], torch.ones(3), atol=1e-6)  # a precision e^30 expert dominates


def test_kl_matches_monte_carlo_within_standard_error():
    torch.manual_seed(0)
    q, p = g([[0.5, -1.0, 2.0]], [[0.3, 1.5, 0.8]]), g([[0.0, 0.4, 1.0]], [[1.2, 0.5, 2.0]])
    n = 200_000
    z = q.mu + torch.randn(n, 3, dtype=torch.float64) * q.var.sqrt()

    def log_density(x, d):
        return (-0.5 * ((x - d.mu) ** 2 / d.var + d.logvar + math.log(2 * math.pi))).sum(dim=1)

    terms = log_density(z, q) - log_density(z, p)
    mc, se = terms.mean().item(), terms.std().item() / math.sqrt(n)
    analytic = kl_gaussians(q, p).item()
    assert abs(analytic - mc) < 4 * se
    assert analytic > 0.1  # the case is not trivially zero


def test_kl_to_standard_normal_is_the_special_case_and_kl_of_self_is_zero():
    q = g([[0.5, -1.0], [0.0, 0.0]], [[0.3, 1.5], [1.0, 1.0]])
    std = g([[0.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]])
    assert torch.allclose(kl_to_standard_normal(q), kl_gaussians(q, std))
    assert kl_to_standard_normal(q)[1].item() == 0.0
    assert torch.allclose(kl_gaussians(q, q), torch.zeros(2, dtype=torch.float64))
    # hand value, row 0: 0.5 * sum(mu^2 + var - 1 - log var)
    hand = 0.5 * ((0.25 + 0.3 - 1 - math.log(0.3)) + (1.0 + 1.5 - 1 - math.log(1.5)))
    assert kl_to_standard_normal(q)[0].item() == pytest.approx(hand)


def test_sample_is_reparameterised_with_the_right_moments():
    mu = torch.tensor([[1.0, -2.0]], requires_grad=True)
    logvar = torch.log(torch.tensor([[0.25, 4.0]])).requires_grad_()
    q = Gaussian(mu.expand(50_000, 2), logvar.expand(50_000, 2))
    z = sample(q, torch.Generator().manual_seed(1))
    assert torch.allclose(z.mean(0), mu[0], atol=0.03)
    assert torch.allclose(z.var(0), torch.tensor([0.25, 4.0]), rtol=0.03)
    z.sum().backward()
    assert mu.grad is not None and logvar.grad is not None
    again = sample(q, torch.Generator().manual_seed(1))
    assert torch.equal(z, again)
